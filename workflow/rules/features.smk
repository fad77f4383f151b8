"""Backbone features, computed once per dataset, backbone and input size and shared by every
experiment that trains a head on the same frozen backbone without augmentation."""


rule features:
    input:
        manifest=f"{RESULTS}/converted/{{dataset}}/manifest.csv",
    output:
        f"{RESULTS}/features/{{dataset}}/{{key}}.pt",
    params:
        model=lambda wc: FEATURE_SPECS[(wc.dataset, wc.key)],
        weights=lambda wc: config["weights"].get(FEATURE_SPECS[(wc.dataset, wc.key)]["backbone"]),
        seed=config["backbone_seed"],
    threads: 2
    resources:
        gpu=lambda wc: max(
            e["train"]["gpus"] for e in config["experiments"].values() if e["dataset"] == wc.dataset
        ),
    log:
        f"{RESULTS}/logs/features/{{dataset}}/{{key}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/features/{{dataset}}/{{key}}.tsv"
    conda:
        ENV
    script:
        "../scripts/features.py"
