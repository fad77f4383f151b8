"""Backbone features, computed once per dataset, backbone and input size and shared by every
experiment that trains a head on the same frozen backbone without augmentation."""


rule features:
    input:
        unpack(features_inputs),
    output:
        f"{RESULTS}/features/{{dataset}}/{{key}}.pt",
    log:
        f"{RESULTS}/logs/features/{{dataset}}/{{key}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/features/{{dataset}}/{{key}}.tsv"
    priority: chain_priority
    conda:
        ENV
    threads: 1
    resources:
        gpu=lambda wc: dataset_gpus(wc.dataset),
    params:
        model=lambda wc: canonical(FEATURE_SPECS[(wc.dataset, wc.key)]),
        seed=config["backbone_seed"],
        train=lambda wc: features_device(wc.dataset),
    script:
        "../scripts/features.py"


rule download_weights:
    """torchvision's ImageNet weights of a backbone set to 'imagenet' under `weights:` (needs internet)."""
    output:
        f"{RESULTS}/weights/{{backbone}}.pth",
    log:
        f"{RESULTS}/logs/download_weights/{{backbone}}.log",
    wildcard_constraints:
        backbone=one_of(DOWNLOADED_WEIGHTS),
    localrule: True
    conda:
        ENV
    script:
        "../scripts/download_weights.py"
