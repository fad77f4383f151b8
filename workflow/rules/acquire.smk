"""Raw data: synthetic stand-ins (demo) or downloads (login node, internet); 'local' needs no rule."""


rule synthesize:
    """Write the synthetic stand-in of a dataset in its real on-disk layout (after the stand-ins
    whose pictures it copies, `synthetic.copies`)."""
    input:
        unpack(copied_stand_ins),
    output:
        directory(f"{RESULTS}/raw/{{dataset}}"),
    log:
        f"{RESULTS}/logs/synthesize/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/synthesize/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=one_of(datasets_with("synthetic")),
    priority: chain_priority
    conda:
        ENV
    threads: config["threads"]
    params:
        synthetic=lambda wc: canonical(config["datasets"][wc.dataset]["synthetic"]),
        seed=config["seed"],
    script:
        "../scripts/synthesize.py"


rule download:
    """Fetch a real dataset (Kaggle API, pinned version; or URLs with MD5 checks, retries and
    resume) into its raw folder, with a SHA-256 manifest that ingest checks on later runs.
    """
    output:
        raw=directory(f"{RESULTS}/raw/{{dataset}}"),
        checksums=f"{RESULTS}/raw/{{dataset}}.sha256",
    log:
        f"{RESULTS}/logs/download/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/{{dataset}}.tsv"
    wildcard_constraints:
        dataset=one_of(datasets_with("download")),
    priority: chain_priority
    localrule: True
    conda:
        ENV
    params:
        spec=lambda wc: canonical(config["datasets"][wc.dataset]["download"]),
    script:
        "../scripts/download.py"
