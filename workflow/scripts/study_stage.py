"""Adapter: rules study_stage1..4 -> medrepro.study.stages.stage1..4 (the rule's ``stage`` param says which)."""
from pathlib import Path

import torch

from medrepro.io import logging_to
from medrepro.study import stages

with logging_to(snakemake.log[0]):
    torch.set_num_threads(max(1, snakemake.threads))
    i, p, out = snakemake.input, snakemake.params, Path(snakemake.output.runs).parent
    stage = p.stage
    if stage == 1:
        stages.stage1(i.split, {b: i[b] for b in p.backbones}, p.study, out)
    elif stage == 2:
        stages.stage2(i.split, i.features, i.selection, p.study, out)
    elif stage == 3:
        stages.stage3(i.split, i.selection, p.study, out, i.get("weights"), p.backbone_seed, i.features)
    else:
        stages.stage4(i.split, i.model, p.study, out, i.get("weights"), p.backbone_seed,
                      stage3=(i.runs2, i.model3, i.runs3) if "model3" in i.keys() else None)
