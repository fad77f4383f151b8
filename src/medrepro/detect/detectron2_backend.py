"""Mask R-CNN through detectron2 (``model.detector.backend: detectron2``).

Runs where detectron2 is installed (``envs/detectron2.yaml``, conda-forge's build; it is not
on PyPI).  It shares everything but the model with the torchvision backend: images and masks
come from the same COCO JSON through :class:`medrepro.detect.dataset.DetectionSet` (resize,
equalisation, albumentations augmentation), and predictions are written as the same COCO
results list, so evaluation and the paper's outputs do not know which backend ran.

The model is detectron2's ``mask_rcnn_R_50_FPN_3x`` configuration with the experiment's
depth, normalisation, anchors, RPN/ROI sampling, solver (SGD, momentum, warm-up, gradient
clipping, AMP on GPU) and input size.  The run ends with a weights file; as with the
torchvision backend, a run given a checkpoint path saves it every epoch and a rerun (a SLURM
retry after a time limit or preemption) resumes from it.
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..io import write_csv
from ..specs import RunSpec, as_plain, run_spec
from .annotation import encode
from .dataset import LOSS_KEYS, DetectionSet, annotations_digest, resume_fingerprint

DEPTH = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}
# detectron2 loss names -> torchvision's, so both backends write the same history columns
LOSS_NAMES = {"loss_cls": "loss_classifier", "loss_box_reg": "loss_box_reg", "loss_mask": "loss_mask",
              "loss_rpn_cls": "loss_objectness", "loss_rpn_loc": "loss_rpn_box_reg"}


def available() -> bool:
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


def config(spec: RunSpec, weights: str | None = None, device: str | None = None):
    """The detectron2 ``CfgNode`` of a detection run."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    d, t = spec.model.detector, spec.train
    size = spec.model.input_size[0]
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.RESNETS.DEPTH = DEPTH[d.backbone]
    if DEPTH[d.backbone] < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN" if d.norm == "batchnorm" else "FrozenBN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 5 - d.trainable_layers
    stages = [f"res{k}" for k in range(2, d.last_stage + 1)]  # res5 is not built when the pyramid stops at res4
    cfg.MODEL.RESNETS.OUT_FEATURES, cfg.MODEL.FPN.IN_FEATURES = stages, list(stages)
    cfg.MODEL.ROI_HEADS.IN_FEATURES = [f"p{k}" for k in range(2, d.last_stage + 1)]
    cfg.MODEL.RPN.IN_FEATURES = [f"p{k}" for k in range(2, d.last_stage + 2)]  # and the max-pooled level
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[int(a)] for a in d.anchor_sizes]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = d.rpn_pre_nms_top_n
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = d.rpn_post_nms_top_n
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = d.rpn_batch_size_per_image
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = d.roi_batch_size_per_image
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    cfg.MODEL.FPN.OUT_CHANNELS = d.fpn_channels
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = d.box_head_size
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = len(d.mask_head_layers)  # detectron2's convs share one width
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = max(d.mask_head_layers)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = d.min_score
    cfg.TEST.DETECTIONS_PER_IMAGE = d.max_detections
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]  # torchvision's ImageNet statistics, 0-255 scale
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (size,), size
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = size, size
    cfg.SOLVER.IMS_PER_BATCH = t.batch_size
    cfg.SOLVER.BASE_LR = t.lr
    cfg.SOLVER.MOMENTUM = t.momentum
    cfg.SOLVER.WEIGHT_DECAY = t.weight_decay
    cfg.SOLVER.MAX_ITER = t.epochs * t.steps_per_epoch
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = t.warmup_iterations
    # detectron2's own clipping ("norm") clips each parameter tensor on its own; the torchvision
    # backend (and Matterport's Keras Mask R-CNN, clipnorm) clip the norm of all gradients
    # together: train() wraps the optimizer with clip_whole_model instead
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    from ..accel import from_train

    accel = from_train(t, channels_last=False)  # stops when the job asked for GPUs and has none (unless allow_cpu)
    cfg.MODEL.DEVICE = device or str(accel.device)
    cfg.SOLVER.AMP.ENABLED = accel.amp and cfg.MODEL.DEVICE.startswith("cuda")
    cfg.MODEL.WEIGHTS = str(weights or "")
    cfg.SEED = int(t.seed)
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def build(cfg, spec: RunSpec):
    """detectron2's model of ``cfg``; with ``last_stage`` 4, the pyramid's max-pooled level reads its
    last level (p4), as torchvision's does (detectron2's LastLevelMaxPool names p5 whatever the stages)."""
    from detectron2.modeling import build_model

    model = build_model(cfg)
    model.backbone.top_block.in_feature = f"p{spec.model.detector.last_stage}"
    return model


def clip_whole_model(opt: torch.optim.Optimizer, max_norm: float) -> torch.optim.Optimizer:
    """Make ``opt.step`` first clip the norm of all its parameters' gradients together, as
    ``torch.nn.utils.clip_grad_norm_`` over the whole model (detectron2's projects do the same
    for their ``full_model`` clip type: a subclass of the optimizer's class whose ``step`` clips,
    so ``step`` stays a method, as torch's learning-rate schedulers require).  Under AMP the scaler
    unscales before ``step``."""
    base = type(opt)

    class FullModelClipping(base):
        def step(self, *args, **kwargs):
            torch.nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g["params"]], max_norm)
            return super().step(*args, **kwargs)

    FullModelClipping.__name__ = f"FullModelClipping{base.__name__}"
    opt.__class__ = FullModelClipping
    return opt


def _item(ds: DetectionSet, i: int) -> dict:
    """detectron2's input dict of one training image: uint8 CHW 0-255 and its instances."""
    from detectron2.structures import BitMasks, Boxes, Instances

    img, tgt = ds[i]
    inst = Instances(tuple(img.shape[1:]))
    inst.gt_boxes = Boxes(tgt["boxes"])
    inst.gt_classes = torch.zeros(len(tgt["boxes"]), dtype=torch.int64)
    inst.gt_masks = BitMasks(tgt["masks"].bool())
    return {"image": (img * 255).round().to(torch.uint8), "instances": inst,
            "height": img.shape[1], "width": img.shape[2]}


def train(annotations_dir, spec: RunSpec, model_out, history_out, summary_out, checkpoint=None,
          weights: str | None = None, stop_after: int | None = None) -> None:
    """Train on ``annotations_dir``'s ``train.json``; writes the model, its history and summary.
    With ``checkpoint``, the model, optimizer, learning-rate schedule, AMP scale and history are
    saved after every epoch and a rerun resumes from them when the run's spec, weights and
    annotations are those of the checkpoint (:func:`medrepro.detect.dataset.resume_fingerprint`);
    each epoch reseeds torch's generator, so a resumed run ends with the uninterrupted one's
    weights.  ``stop_after`` ends after that many epochs (to test resuming)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.engine import AMPTrainer, SimpleTrainer, hooks
    from detectron2.solver import build_lr_scheduler, build_optimizer

    from .. import checkpoint as ckpt
    from ..accel import deterministic_setting, epoch_seed, from_train, seed_everything

    t, d = spec.train, spec.detect
    size = spec.model.input_size[0]
    accel = from_train(t, channels_last=False)
    seed_everything(t.seed, deterministic_setting(t.deterministic, accel, roi_align=True))
    coco = json.loads((Path(annotations_dir) / "train.json").read_text())
    ds = DetectionSet(coco, size, d.equalization, spec.augment, t.seed,
                      list(d.train_classes) if d.train_classes else None)
    cfg = config(spec, weights)
    model = build(cfg, spec)
    note = "random initialisation (no pretrained weights configured)"
    if weights:
        DetectionCheckpointer(model).load(str(weights))
        note = f"weights {Path(weights).name} (detectron2 checkpoint loader)"
    opt = build_optimizer(cfg, model)
    if t.clip_grad_norm:
        clip_whole_model(opt, float(t.clip_grad_norm))
    sched = build_lr_scheduler(cfg, opt)
    steps, batch = t.steps_per_epoch, t.batch_size
    fp = resume_fingerprint(spec, weights, annotations_digest(annotations_dir))
    state = ckpt.resume(checkpoint, fp, "detectron2", model=model)  # the trainer holds optimizer, schedule, scaler
    rows, start = state.history, state.epoch

    def loader():
        for epoch in itertools.count(start):
            torch.manual_seed(epoch_seed(t.seed, epoch))  # the heads' sampling: the same on a resumed run
            ds.set_epoch_seed(epoch_seed(t.seed, epoch))
            gen = torch.Generator().manual_seed(epoch_seed(t.seed, epoch))
            for idx in ckpt.epoch_batches(len(ds), steps, batch, gen):
                yield [_item(ds, i) for i in idx]

    trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, loader(), opt)
    trainer.register_hooks([hooks.LRScheduler(optimizer=opt, scheduler=sched),
                            _history_hook(steps, opt, rows, checkpoint, fp)])
    if state.extra.get("trainer"):
        trainer.load_state_dict(state.extra["trainer"])
    end = t.epochs if stop_after is None else min(t.epochs, start + stop_after)
    trainer.train(start * steps, end * steps)
    ckpt.save_model(model_out, model, as_plain(spec.model), note, backend="detectron2", experiment=spec.as_dict())
    write_csv(history_out, pd.DataFrame(rows))
    write_csv(summary_out, _summary(model, spec, note))
    if end == t.epochs:
        ckpt.finish(checkpoint)


def _summary(model, spec: RunSpec, note: str) -> pd.DataFrame:
    """The model summary: one row, its parameters and what initialised them."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return pd.DataFrame([{"layer": "total", "type": f"detectron2 GeneralizedRCNN "
                          f"(R-{DEPTH[spec.model.detector.backbone]}-FPN)",
                          "params": params, "trainable": trainable, "initialisation": note}])


def _history_hook(steps: int, opt, rows: list, checkpoint, fp: str):
    """A detectron2 hook: per epoch of ``steps`` iterations, the mean of each loss term appended to
    ``rows`` and, with ``checkpoint``, the state saved (after the LRScheduler hook, registered
    first, stepped the schedule; the trainer's state holds the optimizer, schedule and AMP's
    scaler)."""
    from detectron2.engine import HookBase

    from .. import checkpoint as ckpt

    class History(HookBase):
        def before_train(self):
            self.t0, self.sums = time.time(), dict.fromkeys(LOSS_NAMES, 0.0)

        def after_step(self):
            s = self.trainer.storage
            for k in LOSS_NAMES:
                self.sums[k] += float(s.history(k).latest())
            it = self.trainer.iter + 1
            if it % steps:
                return
            row = {"epoch": it // steps, **{LOSS_NAMES[k]: v / steps for k, v in self.sums.items()}}
            row["loss"] = sum(row[k] for k in LOSS_KEYS)
            row.update(val_loss=float("nan"), lr=opt.param_groups[0]["lr"], seconds=time.time() - self.t0,
                       iterations=it)
            rows.append(row)
            print(f"epoch {row['epoch']}: loss {row['loss']:.4f} ({row['seconds']:.0f} s)", file=sys.stderr)
            if checkpoint:
                ckpt.save(checkpoint, fp, "detectron2", row["epoch"] - 1, rows, self.trainer.model,
                          trainer=self.trainer.state_dict())
            self.t0, self.sums = time.time(), dict.fromkeys(LOSS_NAMES, 0.0)

    return History()


def load(model_path):
    """A trained detectron2 model (inference mode) from the file :func:`train` wrote."""
    ck = torch.load(model_path, map_location="cpu", weights_only=False)
    spec = run_spec(ck["experiment"])
    model = build(config(spec), spec)
    model.load_state_dict(ck["model"])
    return model.eval()


def predict(model_path, coco: dict, spec: RunSpec, batch: int = 4) -> list[dict]:
    return predict_with(load(model_path), coco, spec, batch)


def predict_with(model, coco: dict, spec: RunSpec, batch: int = 4) -> list[dict]:
    """COCO results of ``model`` (a detectron2 GeneralizedRCNN in inference mode) on ``coco``'s images."""
    model.eval()
    size = spec.model.input_size[0]
    ds = DetectionSet(coco, size, spec.detect.equalization)
    info = {im["id"]: im for im in coco["images"]}
    out = []
    with torch.no_grad():
        for k in range(0, len(ds), batch):
            idx = list(range(k, min(k + batch, len(ds))))
            inputs = [{"image": (ds[i][0] * 255).round().to(torch.uint8), "height": info[ds.ids[i]]["height"],
                       "width": info[ds.ids[i]]["width"]} for i in idx]
            for i, r in zip(idx, model(inputs)):
                inst = r["instances"].to("cpu")
                for j in range(len(inst)):
                    x0, y0, x1, y1 = inst.pred_boxes.tensor[j].tolist()
                    out.append({"image_id": ds.ids[i], "category_id": 1, "score": round(float(inst.scores[j]), 5),
                                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                                "segmentation": encode(inst.pred_masks[j].numpy().astype(np.uint8))})
    return out
