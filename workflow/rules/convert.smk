"""Manifest -> normalised PNGs (parallel inside the rule) and a contact sheet per dataset."""


rule convert:
    input:
        manifest=f"{RESULTS}/manifests/{{dataset}}.csv",
    output:
        images=directory(f"{RESULTS}/converted/{{dataset}}/images"),
        manifest=f"{RESULTS}/converted/{{dataset}}/manifest.csv",
        rejected=f"{RESULTS}/converted/{{dataset}}/rejected.csv",
    log:
        f"{RESULTS}/logs/convert/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/convert/{{dataset}}.tsv"
    priority: chain_priority
    conda:
        ENV
    threads: config["threads"]
    params:
        convert=lambda wc: canonical(config["datasets"][wc.dataset]["convert"]),
    script:
        "../scripts/convert.py"


rule contact_sheet:
    input:
        manifest=f"{RESULTS}/converted/{{dataset}}/manifest.csv",
    output:
        expand(
            f"{RESULTS}/figures/contact_sheets/{{{{dataset}}}}.{{fmt}}",
            fmt=FIGURE_FORMATS,
        ),
    log:
        f"{RESULTS}/logs/contact_sheet/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/contact_sheet/{{dataset}}.tsv"
    localrule: True
    conda:
        ENV
    params:
        per_class=config["contact_sheet"]["per_class"],
        style=canonical(config["figures"]),
        scale=config["scale"],
        seed=config["seed"],
    script:
        "../scripts/contact_sheet.py"
