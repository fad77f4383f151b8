"""Each paper's tables (CSV/MD/TeX) and figures (PNG/PDF), the audit of its published tables'
arithmetic, and the reproduction report.

Regenerate figures for publication (new style in config) without retraining:
    snakemake --cores all --forcerun publish_paper
"""


rule publish_paper:
    input:
        unpack(paper_inputs),
    output:
        report(
            directory(f"{RESULTS}/papers/{{paper}}"),
            patterns=["{section}/{name}.png", "{section}/{name}.csv"],
            caption="../report/output.rst",
            category="{paper}",
            subcategory="{section}",
        ),
    log:
        f"{RESULTS}/logs/publish/{{paper}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/publish/{{paper}}.tsv"
    localrule: True
    conda:
        ENV
    params:
        paper=lambda wc: canonical(
            {
                **config["papers"][wc.paper],
                "departures": resolved_departures(config, wc.paper),
            }
        ),
        style=canonical(config["figures"]),
        scale=config["scale"],
        captions=lambda wc: paper_captions(wc.paper),
        verdict=canonical(config["verdict"]),
    script:
        "../scripts/publish_paper.py"


rule audit_paper:
    input:
        published=lambda wc: config["papers"][wc.paper]["published"],
    output:
        report(
            directory(f"{RESULTS}/audit/{{paper}}"),
            patterns=["{name}.csv"],
            caption="../report/audit.rst",
            category="audits",
            subcategory="published tables",
        ),
    log:
        f"{RESULTS}/logs/audit/{{paper}}.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/audit_paper.py"


rule checklists:
    """Each paper's TRIPOD+AI and CLAIM 2024 items: what the paper reported, what these outputs give."""
    input:
        checklists="config/checklists.yaml",
        papers=[c for c in CHECKLISTS.values()],
        outputs=expand(f"{RESULTS}/papers/{{paper}}", paper=list(config["papers"]))
        + [f"{RESULTS}/leakage/audit"]
        + ([f"{RESULTS}/inflation"] if INFLATION else []),
    output:
        report(
            directory(f"{RESULTS}/checklists"),
            patterns=["{name}.csv"],
            caption="../report/checklists.rst",
            category="audits",
            subcategory="reporting checklists",
        ),
    log:
        f"{RESULTS}/logs/checklists.log",
    localrule: True
    conda:
        ENV
    params:
        papers=CHECKLISTS,
        scale=config["scale"],
    script:
        "../scripts/checklists.py"


rule report:
    input:
        papers=expand(f"{RESULTS}/papers/{{paper}}", paper=list(config["papers"])),
        audits=expand(f"{RESULTS}/audit/{{paper}}", paper=list(config["papers"])),
        leakage=f"{RESULTS}/leakage/audit",
        repeats=[f"{RESULTS}/repeats"] if config["repeats"]["seeds"] else [],
        inflation=[f"{RESULTS}/inflation"] if INFLATION else [],
        probes=expand(f"{RESULTS}/probe/{{dataset}}", dataset=probe_datasets(config)),
        checklists=[f"{RESULTS}/checklists"] if CHECKLISTS else [],
    output:
        f"{RESULTS}/report.md",
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    localrule: True
    conda:
        ENV
    params:
        papers=config["papers"],
        scale=config["scale"],
        probes=probe_papers(),
    script:
        "../scripts/report.py"


# One named target per paper: `snakemake --configfile config/full.yaml cnn_kermany` plans only
# that paper's jobs (and downloads only its datasets).
for _paper in config["papers"]:

    rule:
        name:
            _paper
        default_target: False
        input:
            f"{RESULTS}/papers/{_paper}",
        localrule: True


rule html_report:
    """report.md and every paper's tables and figures as linked HTML pages (html/index.html)."""
    input:
        report=f"{RESULTS}/report.md",
        papers=expand(f"{RESULTS}/papers/{{paper}}", paper=list(config["papers"])),
    output:
        directory(f"{RESULTS}/html"),
    log:
        f"{RESULTS}/logs/html_report.log",
    localrule: True
    conda:
        ENV
    params:
        papers=list(config["papers"]),
    script:
        "../scripts/html_report.py"


rule seed_repeats:
    """Headline metrics of the experiments in `repeats`, over their seed repeats."""
    input:
        [f for files in repeat_runs().values() for f in files],
    output:
        report(
            directory(f"{RESULTS}/repeats"),
            patterns=["{name}.csv"],
            caption="../report/repeats.rst",
            category="audits",
            subcategory="seed variation",
        ),
    log:
        f"{RESULTS}/logs/repeats.log",
    localrule: True
    conda:
        ENV
    params:
        runs=repeat_runs(),
        headlines=repeat_headlines(),
        scale=config["scale"],
    script:
        "../scripts/seed_repeats.py"
