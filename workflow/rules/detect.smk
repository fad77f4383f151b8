"""Detection experiments (task: detect): split -> COCO/VIA annotations -> Mask R-CNN training
(a GPU job on a cluster) -> COCO results on the test split -> the paper's, RSNA's and COCO metrics.
"""


rule annotate:
    input:
        split=f"{RESULTS}/experiments/{{experiment}}/split.csv",
    output:
        expand(
            f"{RESULTS}/experiments/{{{{experiment}}}}/annotations/{{kind}}.json",
            kind=["train", "val", "test", "via_train", "via_val", "via_test"],
        ),
    log:
        f"{RESULTS}/logs/annotate/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/annotate/{{experiment}}.tsv"
    wildcard_constraints:
        experiment=one_of(DETECT),
    priority: chain_priority
    localrule: True
    conda:
        ENV
    params:
        mask_shape=lambda wc: config["experiments"][wc.experiment]["detect"][
            "mask_shape"
        ],
        out_dir=lambda wc: f"{RESULTS}/experiments/{wc.experiment}/annotations",
    script:
        "../scripts/annotate.py"


rule train_detector:
    input:
        unpack(detector_inputs),
    output:
        model=f"{RESULTS}/experiments/{{experiment}}/model.pt",
        history=f"{RESULTS}/experiments/{{experiment}}/history.csv",
        summary=f"{RESULTS}/experiments/{{experiment}}/model_summary.csv",
    log:
        f"{RESULTS}/logs/train/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}.tsv"
    wildcard_constraints:
        experiment=one_of(DETECT),
    priority: 10  # the longest chain of the demo: start it first
    conda:
        detector_env
    threads: 1
    resources:
        gpu=lambda wc: config["experiments"][wc.experiment]["train"]["gpus"],
    params:
        experiment=lambda wc: step_params(wc.experiment, "train"),
        annotations=lambda wc: f"{RESULTS}/experiments/{wc.experiment}/annotations",
        checkpoint=lambda wc: f"{RESULTS}/experiments/{wc.experiment}/checkpoint.pt",
    script:
        "../scripts/train_detector.py"


rule predict_detector:
    input:
        unpack(detector_inputs),
        model=f"{RESULTS}/experiments/{{experiment}}/model.pt",
    output:
        test=f"{RESULTS}/experiments/{{experiment}}/predictions.json",
        val=f"{RESULTS}/experiments/{{experiment}}/predictions_val.json",
    log:
        f"{RESULTS}/logs/predict/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{experiment}}.tsv"
    wildcard_constraints:
        experiment=one_of(DETECT),
    conda:
        detector_env
    threads: 1
    resources:
        gpu=lambda wc: config["experiments"][wc.experiment]["train"]["gpus"],
    params:
        experiment=lambda wc: step_params(wc.experiment, "predict"),
        annotations=lambda wc: f"{RESULTS}/experiments/{wc.experiment}/annotations",
    script:
        "../scripts/predict_detector.py"


rule evaluate_detector:
    input:
        unpack(detector_inputs),
        results=f"{RESULTS}/experiments/{{experiment}}/predictions.json",
        results_val=f"{RESULTS}/experiments/{{experiment}}/predictions_val.json",
        history=f"{RESULTS}/experiments/{{experiment}}/history.csv",
        summary=f"{RESULTS}/experiments/{{experiment}}/model_summary.csv",
        split=f"{RESULTS}/experiments/{{experiment}}/split.csv",
    output:
        metrics=f"{RESULTS}/experiments/{{experiment}}/metrics.json",
        per_image=f"{RESULTS}/experiments/{{experiment}}/per_image.csv",
    log:
        f"{RESULTS}/logs/evaluate/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{experiment}}.tsv"
    wildcard_constraints:
        experiment=one_of(DETECT),
    conda:
        ENV
    params:
        experiment=lambda wc: step_params(wc.experiment, "evaluate"),
        bootstrap=canonical(config["bootstrap"]),
        annotations=lambda wc: f"{RESULTS}/experiments/{wc.experiment}/annotations",
    script:
        "../scripts/evaluate_detector.py"
