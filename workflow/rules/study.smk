"""Staged studies (studies: in config; transfer_multidataset): split -> stage 1 (every backbone x
batch size on cached features; a checkpoint, its selection plans stage 2) -> stage 2 (learning
rates) -> stage 3 (augmentation) and stage 4 (fine-tuning) -> one metrics.json per study.
"""


rule study_split:
    input:
        manifest=lambda wc: PLAN.manifest(STUDIES[wc.study]["dataset"]),
    output:
        split=f"{RESULTS}/studies/{{study}}/split.csv",
        audit=f"{RESULTS}/studies/{{study}}/split_audit.json",
    log:
        f"{RESULTS}/logs/study_split/{{study}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/study_split/{{study}}.tsv"
    priority: chain_priority
    localrule: True
    conda:
        ENV
    params:
        experiment=lambda wc: split_params(STUDIES[wc.study]),
    script:
        "../scripts/split.py"


checkpoint study_stage1:
    input:
        unpack(study_feature_files),
        split=f"{RESULTS}/studies/{{study}}/split.csv",
    output:
        runs=f"{RESULTS}/studies/{{study}}/stage1/runs.csv",
        history=f"{RESULTS}/studies/{{study}}/stage1/history.csv",
        run_predictions=f"{RESULTS}/studies/{{study}}/stage1/run_predictions.csv",
        selection=f"{RESULTS}/studies/{{study}}/stage1/selection.json",
    log:
        f"{RESULTS}/logs/study/{{study}}/stage1.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/{{study}}/stage1.tsv"
    priority: chain_priority
    conda:
        ENV
    threads: 1
    resources:
        gpu=lambda wc: STUDIES[wc.study]["train"]["gpus"],
    params:
        stage=1,
        study=lambda wc: study_stage_params(wc.study, 1),
        backbones=lambda wc: list(STUDIES[wc.study]["backbones"]),
    script:
        "../scripts/study_stage.py"


rule study_stage2:
    input:
        unpack(
            study_stage_inputs(
                {"selection": "stage1/selection.json"}, features=True, weights=False
            )
        ),
    output:
        runs=f"{RESULTS}/studies/{{study}}/stage2/runs.csv",
        history=f"{RESULTS}/studies/{{study}}/stage2/history.csv",
        run_predictions=f"{RESULTS}/studies/{{study}}/stage2/run_predictions.csv",
        selection=f"{RESULTS}/studies/{{study}}/stage2/selection.json",
        predictions=f"{RESULTS}/studies/{{study}}/stage2/predictions.csv",
        model=f"{RESULTS}/studies/{{study}}/stage2/model.pt",
    log:
        f"{RESULTS}/logs/study/{{study}}/stage2.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/{{study}}/stage2.tsv"
    priority: chain_priority
    conda:
        ENV
    threads: 1
    resources:
        gpu=lambda wc: STUDIES[wc.study]["train"]["gpus"],
    params:
        stage=2,
        study=lambda wc: study_stage_params(wc.study, 2),
    script:
        "../scripts/study_stage.py"


rule study_stage3:
    input:
        unpack(
            study_stage_inputs({"selection": "stage2/selection.json"}, features=True)
        ),
    output:
        runs=f"{RESULTS}/studies/{{study}}/stage3/runs.csv",
        history=f"{RESULTS}/studies/{{study}}/stage3/history.csv",
        predictions=f"{RESULTS}/studies/{{study}}/stage3/predictions.csv",
        model=f"{RESULTS}/studies/{{study}}/stage3/model.pt",
    log:
        f"{RESULTS}/logs/study/{{study}}/stage3.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/{{study}}/stage3.tsv"
    priority: chain_priority
    conda:
        ENV
    threads: 1
    resources:
        gpu=lambda wc: STUDIES[wc.study]["train"]["gpus"],
    params:
        stage=3,
        study=lambda wc: study_stage_params(wc.study, 3),
        backbone_seed=config["backbone_seed"],
    script:
        "../scripts/study_stage.py"


rule study_stage4:
    input:
        unpack(study_stage_inputs({"model": "stage2/model.pt"}, fine_tune=True)),
    output:
        runs=f"{RESULTS}/studies/{{study}}/stage4/runs.csv",
        history=f"{RESULTS}/studies/{{study}}/stage4/history.csv",
        predictions=f"{RESULTS}/studies/{{study}}/stage4/predictions.csv",
        parameters=f"{RESULTS}/studies/{{study}}/stage4/parameters.json",
    log:
        f"{RESULTS}/logs/study/{{study}}/stage4.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/{{study}}/stage4.tsv"
    priority: chain_priority
    conda:
        ENV
    threads: 1
    resources:
        gpu=lambda wc: STUDIES[wc.study]["train"]["gpus"],
    params:
        stage=4,
        study=lambda wc: study_stage_params(wc.study, 4),
        backbone_seed=config["backbone_seed"],
    script:
        "../scripts/study_stage.py"


rule study_summary:
    input:
        split=f"{RESULTS}/studies/{{study}}/split.csv",
        runs=expand(
            f"{RESULTS}/studies/{{{{study}}}}/stage{{k}}/runs.csv", k=[1, 2, 3, 4]
        ),
        predictions=expand(
            f"{RESULTS}/studies/{{{{study}}}}/stage{{k}}/predictions.csv", k=[2, 3, 4]
        ),
        run_predictions=expand(
            f"{RESULTS}/studies/{{{{study}}}}/stage{{k}}/run_predictions.csv", k=[1, 2]
        ),
    output:
        f"{RESULTS}/studies/{{study}}/metrics.json",
    log:
        f"{RESULTS}/logs/study/{{study}}/summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/study/{{study}}/summary.tsv"
    priority: chain_priority
    localrule: True
    conda:
        ENV
    params:
        study=lambda wc: canonical(STUDIES[wc.study]),
        bootstrap=canonical(config["bootstrap"]),
    script:
        "../scripts/study_summary.py"
