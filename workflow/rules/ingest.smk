"""Raw files -> one manifest per dataset, plus what could not be read and why."""


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        manifest=f"{RESULTS}/manifests/{{dataset}}.csv",
        rejected=f"{RESULTS}/manifests/{{dataset}}.rejected.csv",
    threads: config["threads"]
    priority: detector_chain
    log:
        f"{RESULTS}/logs/ingest/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{dataset}}.tsv"
    conda:
        ENV
    script:
        "../scripts/ingest.py"
