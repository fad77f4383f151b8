"""The CPU settings of classifier training, measured on the demo's own models in one run.

* memory format: each demo classifier's training step (cnn_kermany, cnn_pediatric) and each
  backbone's forward pass at its demo input size (the feature cache, study stage 3), plus the
  fine-tuning step of study stage 4 (VGG-16, second half trainable), contiguous (NCHW) against
  channels-last (``train.channels_last``);
* optimizer: Adam steps of a study head on cached features (ResNet-50 flattened, the largest
  head of stage 1) with torch's per-tensor loop, ``foreach`` and ``fused`` (what
  :func:`medrepro.classify.training.fit` uses).

Variants alternate, one untimed step first, median of ``--repeats``; ``--threads 1`` is what each
demo job runs with.  ``--tiny`` shrinks the batch and the backbones' inputs (the suite's smoke run;
timings meaningless).

    python bench/cpu_training.py [--threads 1] [--batch 32] [--repeats 3] [--steps 3]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from medrepro.classify.models import build_backbone, build_model
from medrepro.config import load_config
from medrepro.plan import study_run_spec
from medrepro.specs import model_spec

REPO = Path(__file__).resolve().parents[1]


def timed(step, steps: int) -> float:
    step()  # untimed: first-call allocations and kernel selection
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def frozen(cfg: dict, backbone: str, size: list) -> dict:
    """A frozen backbone's model block at ``size``, as tk_* experiments give it (global average pooling)."""
    return {**cfg["experiments"]["tk_resnet50"]["model"], "backbone": backbone, "input_size": size}


def layout_cases(cfg: dict, batch: int, tiny: bool):
    """(name, model, input, train?) for the demo's convolutional models."""
    exps, tm = cfg["experiments"], cfg["studies"]["tm_TC"]
    size = (lambda s: [min(s[0], 32), min(s[1], 32)]) if tiny else (lambda s: list(s))
    for name in ("cnn_kermany", "cnn_pediatric"):
        m = exps[name]["model"]  # at its demo size in --tiny too (64 px, cheap; 32 px is too small for it)
        torch.manual_seed(0)
        model = build_model(model_spec(m), None)
        yield f"{name} training step", model, torch.rand(batch, m["channels"], *m["input_size"]), True
    backbones = [("vgg19", exps["tk_vgg19"]["model"]["input_size"]),
                 ("resnet50", exps["tk_resnet50"]["model"]["input_size"]),
                 ("efficientnet_b4", exps["tk_efficientnet_b4"]["model"]["input_size"]),
                 ("inception_v3", exps["tk_inception_v3"]["model"]["input_size"]),
                 ("vgg16", tm["backbones"]["vgg16"]["input_size"])]
    for b, s in backbones:
        s = [max(75, size(s)[0])] * 2 if b == "inception_v3" else size(s)
        bb = build_backbone(model_spec(frozen(cfg, b, s))).eval()
        yield f"{b} forward ({s[0]} px)", bb, torch.rand(batch, 3, *s), False
    s = size(tm["backbones"]["vgg16"]["input_size"])
    bb = build_backbone(model_spec(frozen(cfg, "vgg16", s)))
    bb.unfreeze_last(0.5, "keras")
    bb.frozen = False
    yield f"vgg16 fine-tuning step ({s[0]} px, second half)", bb, torch.rand(batch, 3, *s), True


def layout_row(name, model, x, train: bool, steps: int, repeats: int) -> dict:
    def make(cl: bool):
        m = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        xx = x.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)

        def step():
            if train:
                m.train()
                m.zero_grad(set_to_none=True)
                m(xx).float().sum().backward()
            else:
                with torch.inference_mode():
                    m(xx)
        return step

    times = {False: [], True: []}
    for _ in range(repeats):
        for cl in (False, True):
            times[cl].append(timed(make(cl), steps))
    a, b = statistics.median(times[False]), statistics.median(times[True])
    return {"measure": name, "baseline_s": a, "variant_s": b, "variant": "channels-last", "ratio": b / a,
            "images_per_s": len(x) / b}


def optimizer_rows(cfg: dict, batch: int, steps: int, repeats: int, tiny: bool) -> list[dict]:
    tm = cfg["studies"]["tm_TC"]
    spec = study_run_spec(tm, "resnet50")["model"]
    with torch.device("meta"):
        dim = build_backbone(model_spec(spec)).dim
    dim = 256 if tiny else dim
    x, y = torch.randn(batch, dim), torch.randint(0, 3, (batch,))
    times: dict[str, list] = {"per-tensor": [], "foreach": [], "fused": []}
    kws = {"per-tensor": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    for _ in range(repeats):
        for k, kw in kws.items():
            torch.manual_seed(0)
            head = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, 3))
            opt = torch.optim.Adam(head.parameters(), lr=1e-3, eps=1e-7, **kw)

            def step():
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(head(x), y).backward()
                opt.step()
            times[k].append(timed(step, steps * 10))
    base = statistics.median(times["per-tensor"])
    return [{"measure": f"Adam step, study head on {dim} ResNet-50 features", "baseline_s": base,
             "variant_s": statistics.median(times[k]), "variant": k, "ratio": statistics.median(times[k]) / base,
             "images_per_s": batch / statistics.median(times[k])} for k in ("foreach", "fused")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="small sizes, one repeat (smoke run)")
    a = ap.parse_args()
    if a.tiny:
        a.batch, a.repeats, a.steps = 4, 1, 1
    torch.set_num_threads(a.threads)
    cfg = load_config(REPO / "config")
    rows = [layout_row(*case, a.steps, a.repeats) for case in layout_cases(cfg, a.batch, a.tiny)]
    rows += optimizer_rows(cfg, a.batch, a.steps, a.repeats, a.tiny)
    print(f"torch {torch.__version__}, {a.threads} thread(s), batch {a.batch}, median of {a.repeats}")
    print("| measure | variant | baseline s/step | variant s/step | variant / baseline |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['measure']} | {r['variant']} | {r['baseline_s']:.4f} | {r['variant_s']:.4f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
