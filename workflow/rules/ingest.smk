"""Raw files -> one manifest per dataset, plus what could not be read and why."""


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        manifest=f"{RESULTS}/manifests/{{dataset}}.csv",
        rejected=f"{RESULTS}/manifests/{{dataset}}.rejected.csv",
    log:
        f"{RESULTS}/logs/ingest/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{dataset}}.tsv"
    priority: chain_priority
    conda:
        ENV
    threads: config["threads"]
    script:
        "../scripts/ingest.py"
