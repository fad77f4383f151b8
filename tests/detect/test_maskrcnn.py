"""Mask R-CNN backends on real synthetic RSNA files: data, training/resume, predictions, evaluation."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from medrepro import datasets, prepare
from medrepro.convert import convert_manifest
from medrepro.detect import detectron2_backend
from medrepro.detect import steps as detect_steps
from medrepro.detect.annotation import decode
from medrepro.detect.dataset import DetectionSet
from medrepro.detect.torchvision_backend import load_detector, train_detector
from medrepro.specs import ModelSpec, from_plain, run_spec

from ..conftest import REPO, demo_config


def _experiment(name="mr_exp2", **train) -> dict:
    e = copy.deepcopy(demo_config()["experiments"][name])
    e["model"]["input_size"] = [64, 64]
    e["subset"] = {"per_class": {"healthy": 6, "pneumonia": 6}, "seed": 0}
    e["split"]["fractions"] = {"train": 0.5, "val": 0.25, "test": 0.25}
    e["train"].update(epochs=2, steps_per_epoch=2, batch_size=2, **train)
    return e


@pytest.fixture(scope="module")
def rsna(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna")
    datasets.rsna.synthesize(root / "raw", 5, n_train=20, positive_fraction=0.6, image_size=256, difficulty=0.0)
    res = datasets.rsna.ingest(root / "raw")
    conv, _ = convert_manifest(res.manifest, root / "png", 1, 128)
    conv.to_csv(root / "conv.csv", index=False)
    e = _experiment()
    prepare.split(root / "conv.csv", e, root / "split.csv", root / "audit.json")
    detect_steps.annotate(root / "split.csv", e["detect"]["mask_shape"], root / "ann")
    return root


def _coco(root, split):
    return json.loads((root / "ann" / f"{split}.json").read_text())


def test_training_images_and_targets_line_up(rsna):
    coco = _coco(rsna, "train")
    ds = DetectionSet(coco, 64, "global", [{"name": "Affine", "params": {"rotate": [-20, 20], "p": 1.0}},
                                           {"name": "HorizontalFlip", "params": {"p": 0.5}}], seed=3)
    n_pos = 0
    for i in range(len(ds)):
        img, t = ds[i]
        assert img.shape == (3, 64, 64) and 0 <= img.min() and img.max() <= 1
        for box, m in zip(t["boxes"], t["masks"]):
            ys, xs = np.nonzero(m.numpy())
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # the mask's own box
            n_pos += 1
    assert n_pos > 0
    only = DetectionSet(coco, 64, classes=["pneumonia"])
    assert 0 < len(only) < len(ds) and all(len(m) for m in only.masks)


def test_resumed_training_equals_uninterrupted(rsna, tmp_path):
    e = _experiment(warmup_iterations=3)  # the warm-up spans the interruption: the schedule resumes
    tr, va = _coco(rsna, "train"), _coco(rsna, "val")
    e = run_spec(e)
    full, hist_full, _ = train_detector(tr, va, e, None, None)
    ck = tmp_path / "ck.pt"
    train_detector(tr, va, e, None, None, checkpoint=ck, stop_after=1)
    assert torch.load(ck, weights_only=False)["epoch"] == 0
    resumed, hist, _ = train_detector(tr, va, e, None, None, checkpoint=ck)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert hist["loss"].tolist() == hist_full["loss"].tolist() and len(hist) == 2
    assert hist["lr"].tolist() == hist_full["lr"].tolist()
    # linear warm-up: iteration i (from 0) runs at lr * min(1, (i + 1) / 3); the history's lr is
    # that of each epoch's last iteration (iterations 1 and 3 of 2 x 2)
    assert hist["lr"].tolist() == [e.train.lr * (2 / 3), e.train.lr]  # exactly: the configured lr after it


def test_predictions_and_evaluation(rsna, tmp_path):
    e = _experiment()
    out = tmp_path / "exp"
    detect_steps.train(rsna / "ann", e, out / "model.pt", out / "history.csv", out / "summary.csv",
                          out / "ck.pt")
    assert not (out / "ck.pt").exists()  # removed after a finished run
    summary = pd.read_csv(out / "summary.csv")
    layers = summary[~summary["layer"].str.startswith("runtime: ")]
    assert layers["initialisation"].str.contains("random").all()
    assert set(summary["layer"]) >= {"runtime: device", "runtime: torch"}  # what trained it
    detect_steps.predict(rsna / "ann", out / "model.pt", e, out / "pred.json", out / "pred_val.json")
    res = json.loads((out / "pred.json").read_text())
    assert {r["image_id"] for r in json.loads((out / "pred_val.json").read_text())} <= {
        im["id"] for im in _coco(rsna, "val")["images"]}
    test = _coco(rsna, "test")
    sizes = {im["id"]: (im["height"], im["width"]) for im in test["images"]}
    for r in res:  # masks at the PNG's size, boxes in its pixels
        assert decode(r["segmentation"]).shape == sizes[r["image_id"]]
        assert 0 <= r["bbox"][0] <= sizes[r["image_id"]][1] and r["score"] >= e["model"]["detector"]["min_score"]
    m = detect_steps.evaluate(rsna / "ann", out / "pred.json", out / "history.csv", e, out / "m.json",
                                 out / "per_image.csv", results_val=out / "pred_val.json")
    assert m["test_images"]["total"] == len(test["images"])
    assert m["score_threshold"] == m["score_threshold_choice"]["max_f1_val"]  # the demo's rule
    assert m["run"]["train_images"] == len(_coco(rsna, "train")["images"])


def test_ground_truth_as_predictions_scores_perfectly(rsna, tmp_path):
    """The evaluation chain on results equal to the annotations: every metric at its best."""
    gt = _coco(rsna, "test")
    res = [{"image_id": a["image_id"], "category_id": 1, "segmentation": a["segmentation"], "bbox": a["bbox"],
            "score": 0.99} for a in gt["annotations"]]
    (tmp_path / "r.json").write_text(json.dumps(res))
    pd.DataFrame([{"epoch": 1, "iterations": 2, "seconds": 1.0, "loss": 1.0}]).to_csv(tmp_path / "h.csv")
    (tmp_path / "v.json").write_text(json.dumps(_as_results(_coco(rsna, "val"), 0.99)))
    m = detect_steps.evaluate(rsna / "ann", tmp_path / "r.json", tmp_path / "h.csv", _experiment(),
                                 tmp_path / "m.json", tmp_path / "p.csv", results_val=tmp_path / "v.json")
    assert m["opacity"]["recall"] == 1 and m["opacity"]["precision"] == 1 and m["iou_mean"] == pytest.approx(1)
    assert m["image"]["accuracy"] == 1 and m["rsna"]["score"] == pytest.approx(1)
    assert m["coco"]["segm"]["AP"] == pytest.approx(1) and m["coco"]["bbox"]["AP"] == pytest.approx(1)
    per = pd.read_csv(tmp_path / "p.csv")
    assert set(per.loc[per["n_true"] == 0, "image_class"]) <= {"TN"}


def _as_results(coco, score, decoys=0.0):
    """The annotations of ``coco`` as detections of ``score``; with ``decoys``, a 4x4 detection in
    each image's corner (touching no opacity) of that score."""
    from medrepro.detect.annotation import encode

    res = [{"image_id": a["image_id"], "category_id": 1, "segmentation": a["segmentation"], "bbox": a["bbox"],
            "score": score} for a in coco["annotations"]]
    for im in coco["images"] if decoys else []:
        m = np.zeros((im["height"], im["width"]), np.uint8)
        m[:4, :4] = 1
        res.append({"image_id": im["id"], "category_id": 1, "segmentation": encode(m), "bbox": [0, 0, 4, 4],
                    "score": decoys})
    return res


def test_max_f1_val_threshold_is_chosen_on_validation_and_applied_to_test(rsna, tmp_path):
    """Validation: every opacity found at score 0.2, a corner decoy in every image at 0.1, so F1 is 1
    from 0.15 to 0.2 and the higher, 0.2, is chosen; the test detections (0.2) all count, where a
    fixed 0.5 counts none."""
    (tmp_path / "val.json").write_text(json.dumps(_as_results(_coco(rsna, "val"), 0.2, decoys=0.1)))
    (tmp_path / "test.json").write_text(json.dumps(_as_results(_coco(rsna, "test"), 0.2)))
    pd.DataFrame([{"epoch": 1, "iterations": 2, "seconds": 1.0, "loss": 1.0}]).to_csv(tmp_path / "h.csv")
    e = _experiment()
    e["detect"]["score_threshold"] = "max_f1_val"
    m = detect_steps.evaluate(rsna / "ann", tmp_path / "test.json", tmp_path / "h.csv", e, tmp_path / "m.json",
                                 tmp_path / "p.csv", results_val=tmp_path / "val.json")
    choice = m["score_threshold_choice"]
    assert m["score_threshold"] == 0.2 and choice["rule"] == "max_f1_val" and choice["max_f1_val"] == 0.2
    sweep = {r["score_threshold"]: r for r in choice["val_sweep"]}
    assert sweep[0.1]["precision"] < 1 and sweep[0.15]["f1"] == 1 and sweep[0.25]["recall"] == 0
    assert m["opacity"]["recall"] == 1 and m["rsna"]["score_threshold"] == 0.2
    e["detect"]["score_threshold"] = 0.5  # fixed: nothing counts, and the record says what validation picks
    m = detect_steps.evaluate(rsna / "ann", tmp_path / "test.json", tmp_path / "h.csv", e, tmp_path / "m.json",
                                 tmp_path / "p.csv", results_val=tmp_path / "val.json")
    assert m["opacity"]["recall"] == 0 and m["score_threshold_choice"] == {**choice, "rule": "fixed", "value": 0.5}


def test_max_f1_val_without_validation_opacities_is_an_error(rsna, tmp_path):
    empty = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "opacity"}]}
    ann = tmp_path / "ann"
    ann.mkdir()
    for s in ("test", "val"):
        (ann / f"{s}.json").write_text(json.dumps(empty if s == "val" else _coco(rsna, "test")))
    (tmp_path / "r.json").write_text("[]")
    pd.DataFrame([{"epoch": 1, "iterations": 2, "seconds": 1.0, "loss": 1.0}]).to_csv(tmp_path / "h.csv")
    e = _experiment()
    e["detect"]["score_threshold"] = "max_f1_val"
    with pytest.raises(ValueError, match="validation split has no opacity"):
        detect_steps.evaluate(ann, tmp_path / "r.json", tmp_path / "h.csv", e, tmp_path / "m.json",
                                 tmp_path / "p.csv", results_val=tmp_path / "r.json")


def test_saved_model_reloads(rsna, tmp_path):
    e = _experiment()
    model, _, _ = train_detector(_coco(rsna, "train"), _coco(rsna, "val"), run_spec(e), tmp_path / "m.pt", None)
    again = load_detector(tmp_path / "m.pt")
    x = [torch.rand(3, 64, 64)]
    model.eval()
    with torch.no_grad():
        a, b = model(x)[0], again(x)[0]
    assert torch.equal(a["boxes"], b["boxes"])


@pytest.mark.skipif(not detectron2_backend.available(), reason="detectron2 is not installed (envs/detectron2.yaml)")
def test_detectron2_backend_writes_the_same_formats(rsna, tmp_path):
    e = _experiment()
    e["model"]["detector"]["backend"] = "detectron2"
    out = tmp_path / "d2"
    detect_steps.train(rsna / "ann", e, out / "model.pt", out / "history.csv", out / "summary.csv")
    hist = pd.read_csv(out / "history.csv")
    assert len(hist) == 2 and {"loss_classifier", "loss_mask", "loss_objectness"} <= set(hist.columns)
    detect_steps.predict(rsna / "ann", out / "model.pt", e, out / "pred.json", out / "pred_val.json")
    res = json.loads((out / "pred.json").read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in _coco(rsna, "test")["images"]}
    for r in res:
        assert decode(r["segmentation"]).shape == sizes[r["image_id"]] and len(r["bbox"]) == 4
    m = detect_steps.evaluate(rsna / "ann", out / "pred.json", out / "history.csv", e, out / "m.json",
                                 out / "p.csv", results_val=out / "pred_val.json")
    assert m["run"]["backend"] == "detectron2"


@pytest.mark.skipif(not detectron2_backend.available(), reason="detectron2 is not installed (envs/detectron2.yaml)")
def test_detectron2_resumed_training_equals_uninterrupted(rsna, tmp_path):
    e = _experiment(lr=0.01, warmup_iterations=3)  # the warm-up spans the interruption: the schedule resumes
    e["model"]["detector"]["backend"] = "detectron2"
    spec = run_spec(e)

    def run(name, annotations=rsna / "ann", **kw):
        out = tmp_path / name
        detectron2_backend.train(annotations, spec, out / "model.pt", out / "history.csv", out / "summary.csv", **kw)
        return torch.load(out / "model.pt", weights_only=False)["model"], pd.read_csv(out / "history.csv")

    full, hist_full = run("full")
    ck = tmp_path / "ck.pt"
    run("part", checkpoint=ck, stop_after=1)
    saved = torch.load(ck, weights_only=False)
    assert saved["epoch"] == 0 and saved["engine"] == "detectron2" and len(saved["history"]) == 1
    trainer = saved["extra"]["trainer"]
    assert "optimizer" in trainer and "LRScheduler" in trainer["hooks"]
    resumed, hist = run("resumed", checkpoint=ck)
    for (k, a), b in zip(full.items(), resumed.values()):
        assert torch.equal(a, b), k
    assert hist["loss"].tolist() == hist_full["loss"].tolist() and hist["lr"].tolist() == hist_full["lr"].tolist()
    assert len(hist) == 2 and not ck.exists()  # a finished run removes its checkpoint
    # a checkpoint written on other annotations is not resumed
    run("part2", checkpoint=ck, stop_after=1)
    other = tmp_path / "ann_other"
    other.mkdir()
    for f in ("train", "val", "test"):
        coco = _coco(rsna, f)
        if f == "train":
            coco["images"] = coco["images"][1:]
        (other / f"{f}.json").write_text(json.dumps(coco))
    fresh, _ = run("other_fresh", annotations=other)
    assert ck.exists()
    trained, _ = run("other_ck", annotations=other, checkpoint=ck)  # trained from the start, not resumed
    for (k, a), b in zip(fresh.items(), trained.values()):
        assert torch.equal(a, b), k


def test_full_config_model_is_torchvisions_maskrcnn_resnet50_fpn(tmp_path):
    """full.yaml's detector has the architecture of torchvision's maskrcnn_resnet50_fpn, so its COCO
    weights load (class-specific heads of another shape are skipped and reported)."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from medrepro.config import load_config
    from medrepro.detect.torchvision_backend import build_maskrcnn, load_weights

    cfg = load_config(REPO / "config", [REPO / "config" / "full.yaml"])
    spec = run_spec(cfg["experiments"]["mr_exp1"]).model
    ours = build_maskrcnn(spec).state_dict()
    ref = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    # without weights torchvision builds trainable BatchNorm; with COCO weights (and here) it is frozen
    theirs = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(ours) == set(theirs)
    differ = {k for k in ours if ours[k].shape != theirs[k].shape}
    assert differ and all("predictor" in k for k in differ)  # 2 classes here, 91 in COCO
    torch.save(theirs, tmp_path / "coco.pth")
    model = build_maskrcnn(spec)
    note = load_weights(model, tmp_path / "coco.pth")
    assert f"({len(ours) - len(differ)} of {len(ours)} tensors)" in note
    assert torch.equal(model.state_dict()["backbone.body.layer4.2.conv3.weight"],
                       theirs["backbone.body.layer4.2.conv3.weight"])



def _trains_one_step(model) -> None:
    """One training step of ``model`` on a 64-px image with one opacity: finite losses, a backward pass."""
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 12:40] = 1
    losses = model.train()([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[12.0, 10.0, 40.0, 30.0]]),
                                                     "labels": torch.tensor([1]), "masks": masks}])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


def test_fpn_channels_narrow_the_pyramid_and_everything_that_reads_it():
    """``fpn_channels`` sets every pyramid level's width; the RPN head, the box head's input
    (channels x 7 x 7) and the mask head's first convolution follow, and the model trains."""
    from medrepro.config import load_config
    from medrepro.detect.torchvision_backend import build_maskrcnn

    cfg = load_config(REPO / "config")
    m = copy.deepcopy(cfg["experiments"]["mr_exp1"]["model"])
    m["input_size"] = [64, 64]
    m["detector"].update(fpn_channels=32, box_head_size=64)
    model = build_maskrcnn(from_plain(ModelSpec, m))
    feats = model.backbone(torch.zeros(1, 3, 64, 64))
    assert {v.shape[1] for v in feats.values()} == {32} and len(feats) == m["detector"]["last_stage"]
    assert model.rpn.head.conv[0][0].in_channels == 32
    assert model.roi_heads.box_head.fc6.in_features == 32 * 7 * 7
    assert model.roi_heads.mask_head[0][0].in_channels == 32
    _trains_one_step(model)
    wide = build_maskrcnn(from_plain(ModelSpec, m | {"detector": {**m["detector"], "fpn_channels": 256}}))
    assert wide.backbone.out_channels == 256 and type(wide.backbone.fpn) is type(model.backbone.fpn)

def test_last_stage_four_builds_the_pyramid_on_c2_c4_without_the_fifth_stage():
    """``last_stage: 4``: torchvision's ResNet stops after layer3 (C4), the pyramid has C2-C4 and the
    max-pooled level (one anchor size each), the RoI heads read C2-C4, and the model trains;
    ``last_stage: 5`` is torchvision's C2-C5 pyramid with five levels."""
    from medrepro.config import load_config
    from medrepro.detect.torchvision_backend import build_maskrcnn

    cfg = load_config(REPO / "config")
    m = copy.deepcopy(cfg["experiments"]["mr_exp1"]["model"])
    m["input_size"] = [64, 64]
    m["detector"].update(last_stage=4, anchor_sizes=[8, 16, 32, 64])
    model = build_maskrcnn(from_plain(ModelSpec, m))
    names = {n.split(".")[0] for n, _ in model.backbone.body.named_parameters()}
    assert "layer3" in names and "layer4" not in names
    feats = model.backbone(torch.zeros(1, 3, 64, 64))
    assert [tuple(v.shape[-2:]) for v in feats.values()] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert model.rpn.anchor_generator.num_anchors_per_location() == [3] * 4
    roi_levels = [k for k in feats if k in model.roi_heads.box_roi_pool.featmap_names]
    assert roi_levels == ["0", "1", "2"]  # every level but the max-pooled one
    _trains_one_step(model)
    full = build_maskrcnn(from_plain(ModelSpec, m | {"detector": {**m["detector"], "last_stage": 5,
                                                                  "anchor_sizes": [8, 16, 32, 64, 128]}}))
    assert len(full.backbone(torch.zeros(1, 3, 64, 64))) == 5
    assert sum(p.numel() for p in full.parameters()) > 2 * sum(p.numel() for p in model.parameters())


def test_detectron2_backend_clips_the_whole_models_gradient_norm_as_the_torchvision_backend():
    """detectron2's CLIP_TYPE 'norm' clips each tensor on its own; the backend clips them together."""
    from medrepro.detect.detectron2_backend import clip_whole_model

    def grads():
        a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
        a.grad, b.grad = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.0, 12.0])  # norms 5 and 12, total 13
        return a, b

    a, b = grads()
    opt = clip_whole_model(torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0), 6.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)  # as detectron2's hook builds (a plain
    opt.step()  # function as `step` broke the scheduler's patching of it)
    sched.step()
    ref_a, ref_b = grads()
    torch.nn.utils.clip_grad_norm_([ref_a, ref_b], 6.5)  # the torchvision backend's call
    assert torch.allclose(a, -ref_a.grad) and torch.allclose(b, -ref_b.grad)
    assert torch.allclose(a, torch.tensor([-1.5, 0.0, -2.0]), atol=1e-5)  # scaled by 6.5 / 13 together
