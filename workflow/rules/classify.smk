"""Classifier training (a GPU job on a cluster), prediction on every split, evaluation."""


rule train:
    input:
        unpack(experiment_inputs({})),
    output:
        model=f"{RESULTS}/experiments/{{experiment}}/model.pt",
        history=f"{RESULTS}/experiments/{{experiment}}/history.csv",
        summary=f"{RESULTS}/experiments/{{experiment}}/model_summary.csv",
    log:
        f"{RESULTS}/logs/train/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}.tsv"
    wildcard_constraints:
        experiment=one_of(CLASSIFY),
    conda:
        ENV
    threads: 1
    resources:
        gpu=lambda wc: config["experiments"][wc.experiment]["train"]["gpus"],
    params:
        experiment=lambda wc: step_params(wc.experiment, "train"),
        checkpoint=lambda wc: f"{RESULTS}/experiments/{wc.experiment}/checkpoint.pt",
        weights=backbone_weights,
        backbone_seed=config["backbone_seed"],
    script:
        "../scripts/train.py"


rule predict:
    input:
        unpack(
            experiment_inputs({"model": "{results}/experiments/{experiment}/model.pt"})
        ),
    output:
        f"{RESULTS}/experiments/{{experiment}}/predictions.csv",
    log:
        f"{RESULTS}/logs/predict/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{experiment}}.tsv"
    wildcard_constraints:
        experiment=one_of(CLASSIFY),
    conda:
        ENV
    threads: 1
    resources:
        gpu=lambda wc: min(1, config["experiments"][wc.experiment]["train"]["gpus"]),  # inference: one
    params:
        experiment=lambda wc: step_params(wc.experiment, "predict"),
    script:
        "../scripts/predict.py"


rule evaluate:
    input:
        predictions=f"{RESULTS}/experiments/{{experiment}}/predictions.csv",
        history=f"{RESULTS}/experiments/{{experiment}}/history.csv",
        summary=f"{RESULTS}/experiments/{{experiment}}/model_summary.csv",
        split=f"{RESULTS}/experiments/{{experiment}}/split.csv",
    output:
        f"{RESULTS}/experiments/{{experiment}}/metrics.json",
    log:
        f"{RESULTS}/logs/evaluate/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{experiment}}.tsv"
    wildcard_constraints:
        experiment=one_of(CLASSIFY),
    localrule: True
    conda:
        ENV
    params:
        experiment=lambda wc: step_params(wc.experiment, "evaluate"),
        bootstrap=canonical(config["bootstrap"]),
    script:
        "../scripts/evaluate.py"
