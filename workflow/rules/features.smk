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
    """A backbone's weights set to 'imagenet' (torchvision's, .pth) or 'keras' (the Keras
    application's, .h5) under `weights:` (needs internet, or Keras' cache folder)."""
    output:
        f"{RESULTS}/weights/{{backbone}}.{{fmt}}",
    log:
        f"{RESULTS}/logs/download_weights/{{backbone}}.{{fmt}}.log",
    wildcard_constraints:
        backbone=one_of(DOWNLOADED_WEIGHTS),
        fmt="pth|h5",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/download_weights.py"
