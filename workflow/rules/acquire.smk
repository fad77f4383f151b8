"""Raw data: synthetic stand-ins (demo) or downloads (login node, internet); 'local' needs no rule."""


rule synthesize:
    """Write the synthetic stand-in of a dataset in its real on-disk layout."""
    output:
        directory(f"{RESULTS}/raw/{{dataset}}"),
    wildcard_constraints:
        dataset=one_of(datasets_with("synthetic")),
    params:
        synthetic=lambda wc: config["datasets"][wc.dataset]["synthetic"],
        seed=config["seed"],
    threads: config["threads"]
    priority: detector_chain
    log:
        f"{RESULTS}/logs/synthesize/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/synthesize/{{dataset}}.tsv"
    conda:
        ENV
    script:
        "../scripts/synthesize.py"


rule download:
    """Fetch a real dataset (Kaggle API, pinned version; or URLs with MD5 checks, retries and
    resume) into its raw folder, with a SHA-256 manifest that ingest checks on later runs."""
    output:
        raw=directory(f"{RESULTS}/raw/{{dataset}}"),
        checksums=f"{RESULTS}/raw/{{dataset}}.sha256",
    wildcard_constraints:
        dataset=one_of(datasets_with("download")),
    params:
        spec=lambda wc: config["datasets"][wc.dataset]["download"],
    localrule: True
    priority: detector_chain
    log:
        f"{RESULTS}/logs/download/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/{{dataset}}.tsv"
    conda:
        ENV
    script:
        "../scripts/download.py"
