"""Converted manifest -> an experiment's seeded, stratified, patient-grouped split and its audit."""


rule split:
    input:
        manifest=experiment_dataset,
    output:
        split=f"{RESULTS}/experiments/{{experiment}}/split.csv",
        audit=f"{RESULTS}/experiments/{{experiment}}/split_audit.json",
    log:
        f"{RESULTS}/logs/split/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/split/{{experiment}}.tsv"
    priority: chain_priority
    localrule: True
    conda:
        ENV
    params:
        experiment=lambda wc: split_params(config["experiments"][wc.experiment]),
    script:
        "../scripts/split.py"
