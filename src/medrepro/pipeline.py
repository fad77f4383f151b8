"""One function per workflow step: files in, files out.

``workflow/scripts/*.py`` call these with the paths and parameters Snakemake
gives them; tests call them directly.  Each step writes its outputs atomically.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

from . import datasets
from .convert import convert_manifest
from .data import ImageTable, build_augmentation
from .evaluation import classification_metrics, prediction_table, report_table
from .figures import confusion_matrix_figure, contact_sheet_figure, learning_curves_figure, save_figure
from .io import atomic_dir, atomic_path, read_csv, write_csv, write_json, write_text
from .models import build_model, summary
from .splits import make_split
from .tables import write_table
from .training import TrainConfig, class_weights, fit, predict_proba

log = logging.getLogger("medrepro")


@contextlib.contextmanager
def logging_to(path: str | os.PathLike | None):
    """Send stderr (progress bars, messages) and logging to ``path`` for the step's duration."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as fh:
        old = sys.stderr
        sys.stderr = fh
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield
        except BaseException:
            import traceback

            traceback.print_exc(file=fh)
            raise
        finally:
            root.removeHandler(handler)
            sys.stderr = old


def scale_note(scale: str) -> str:
    return ("demo scale: synthetic stand-in data, reduced sizes and epochs; not the paper's data"
            if scale == "demo" else "full scale: the paper's settings")


# ----------------------------------------------------------------------------- acquire
def synthesize(dataset: str, out_dir: str | Path, params: dict, seed: int, threads: int = 1) -> None:
    """Write the synthetic stand-in of ``dataset`` into ``out_dir`` (built aside, then moved in)."""
    with atomic_dir(out_dir) as tmp:
        datasets.get(dataset).synthesize(tmp, seed, threads=threads, **params)
        write_json(tmp / "SYNTHETIC.json", {"dataset": dataset, "seed": seed, "params": params,
                                            "note": "synthetic stand-in written by medrepro in the real layout"})


# ----------------------------------------------------------------------------- ingest / convert
def ingest(dataset: str, raw_root: str | Path, manifest_out, rejected_out, threads: int = 1) -> pd.DataFrame:
    res = datasets.get(dataset).ingest(raw_root, threads=threads)
    manifest = res.manifest
    if manifest.empty:
        raise ValueError(f"{raw_root}: no image of {dataset} could be read; see {rejected_out}")
    write_csv(manifest_out, manifest)
    write_csv(rejected_out, res.rejections)
    print(f"{dataset}: {len(manifest)} images, {len(res.rejections)} rejected "
          f"(labels: {manifest['label'].value_counts().to_dict()})", file=sys.stderr)
    return manifest


def convert(manifest_in, images_dir, manifest_out, rejected_out, channels: int = 1, max_side: int | None = 1024,
            threads: int = 1) -> pd.DataFrame:
    manifest = read_csv(manifest_in)
    conv, rejected = convert_manifest(manifest, images_dir, channels, max_side, threads)
    write_csv(manifest_out, conv)
    write_csv(rejected_out, rejected)
    print(f"converted {len(conv)} images, {len(rejected)} rejected", file=sys.stderr)
    return conv


def contact_sheet(converted_manifest, dataset: str, out_stem, per_class: int = 6, style: dict | None = None,
                  scale: str = "demo", seed: int = 0) -> None:
    df = read_csv(converted_manifest)
    fig = contact_sheet_figure(df, f"{dataset}: {len(df)} images", per_class=per_class, seed=seed)
    save_figure(fig, out_stem, style, note=scale_note(scale))


# ----------------------------------------------------------------------------- split
def class_table(df: pd.DataFrame, classes: list[dict]) -> pd.DataFrame:
    """Keep rows whose dataset label belongs to a configured class; add ``class`` and ``target``."""
    mapping = {}
    for k, c in enumerate(classes):
        for lab in c["labels"]:
            if lab in mapping:
                raise ValueError(f"dataset label {lab!r} is mapped to two classes")
            mapping[lab] = (k, c["name"])
    known = df["label"].isin(mapping)
    out = df.loc[known].copy()
    out["target"] = out["label"].map(lambda v: mapping[v][0])
    out["class"] = out["label"].map(lambda v: mapping[v][1])
    return out


def split(converted_manifest, experiment: dict, split_out, audit_out) -> pd.DataFrame:
    df = read_csv(converted_manifest)
    table = class_table(df, experiment["classes"])
    missing = [lab for c in experiment["classes"] for lab in c["labels"] if lab not in set(df["label"])]
    s = experiment["split"]
    out, audit = make_split(table, fractions=s["fractions"], seed=s["seed"], keep_source=s["keep_source"],
                            group_by=s["group_by"], stratify_by="class", overlap_policy=s["overlap"])
    audit["left_out_by_class_filter"] = int(len(df) - len(table))
    audit["configured_labels_absent"] = missing
    cols = ["image_id", "png", "label", "class", "target", "patient_id", "source_split", "split", "boxes", "mask_png"]
    write_csv(split_out, out[cols])
    write_json(audit_out, audit)
    return out


# ----------------------------------------------------------------------------- classify
def _datasets_for(split_table: pd.DataFrame, experiment: dict, augment: bool):
    m = experiment["model"]
    size, ch = tuple(m["input_size"]), int(m["channels"])
    tr = split_table[split_table["split"] == "train"]
    va = split_table[split_table["split"] == "val"]
    aug = build_augmentation(experiment.get("augment"), experiment["train"]["seed"]) if augment else None
    return ImageTable(tr, size, ch, aug), ImageTable(va, size, ch)


def n_outputs(experiment: dict) -> int:
    return 1 if experiment["model"]["output"] == "sigmoid" else len(experiment["classes"])


def train(split_csv, experiment: dict, model_out, history_out, checkpoint=None, summary_out=None) -> None:
    table = read_csv(split_csv)
    for s in ("train", "val"):
        if not (table["split"] == s).any():
            raise ValueError(f"{split_csv}: the {s} split is empty; check the experiment's split config")
    t = experiment["train"]
    torch.manual_seed(t["seed"])
    model = build_model(experiment["model"], n_outputs(experiment))
    train_ds, val_ds = _datasets_for(table, experiment, augment=True)
    weights = class_weights(train_ds.targets, len(experiment["classes"])) if t["class_weights"] == "balanced" else None
    cfg = TrainConfig(epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"], optimizer=t["optimizer"],
                      weight_decay=t["weight_decay"], early_stopping=t["early_stopping"], reduce_lr=t["reduce_lr"],
                      class_weights=weights, seed=t["seed"], device=t["device"], num_workers=t["num_workers"],
                      amp=t["amp"])
    print(f"training on {len(train_ds)} images, validating on {len(val_ds)}; class weights {weights}",
          file=sys.stderr)
    fingerprint = hashlib.sha256(json.dumps(experiment, sort_keys=True).encode() + Path(split_csv).read_bytes()
                                 ).hexdigest()
    model, history = fit(model, train_ds, val_ds, cfg, checkpoint=checkpoint, fingerprint=fingerprint)
    with atomic_path(model_out) as tmp:
        torch.save({"state_dict": model.cpu().state_dict(), "model": experiment["model"],
                    "classes": [c["name"] for c in experiment["classes"]]}, tmp)
    write_csv(history_out, history)
    if summary_out:
        m = experiment["model"]
        write_csv(summary_out, pd.DataFrame(summary(model, (int(m["channels"]), *m["input_size"]))))
    if checkpoint:  # only an interrupted run needs it
        Path(checkpoint).unlink(missing_ok=True)


def load_model(path) -> tuple[torch.nn.Module, list[str]]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(ck["model"])
    model.load_state_dict(ck["state_dict"])
    return model, ck["classes"]


def predict(split_csv, model_path, experiment: dict, predictions_out) -> pd.DataFrame:
    table = read_csv(split_csv)
    model, classes = load_model(model_path)
    m = experiment["model"]
    frames = []
    for s in ("train", "val", "test"):
        part = table[table["split"] == s]
        if part.empty:
            continue
        ds = ImageTable(part, tuple(m["input_size"]), int(m["channels"]))
        proba = predict_proba(model, ds, device=experiment["train"]["device"])
        frames.append(prediction_table(part["image_id"], part["target"].astype(int), proba, classes, s,
                                       experiment["threshold"]))
    pred = pd.concat(frames, ignore_index=True)
    write_csv(predictions_out, pred)
    return pred


def evaluate(predictions_csv, history_csv, experiment: dict, metrics_out) -> dict:
    pred = pd.read_csv(predictions_csv, dtype={"image_id": str})
    names = [c["name"] for c in experiment["classes"]]
    out: dict = {}
    for s in ("train", "val", "test"):
        part = pred[pred["split"] == s]
        if len(part):
            out[s] = classification_metrics(part, names)
    hist = pd.read_csv(history_csv)
    out["train"] = {**out.get("train", {}), "last": hist.iloc[-1].to_dict(),
                    "best": hist.loc[hist["val_loss"].idxmin()].to_dict(), "epochs_run": int(len(hist))}
    write_json(metrics_out, out)
    return out


# ----------------------------------------------------------------------------- publish
def lookup(tree, dotted: str):
    """``lookup(d, 'a.b.c')`` -> d['a']['b']['c'] (None when absent).  Keys may contain '-'."""
    cur = tree
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, dict) and part.isdigit() and int(part) in cur:
            cur = cur[int(part)]
        else:
            return None
    return cur


def comparison_table(metrics: dict, published: dict, compare: list[dict]) -> pd.DataFrame:
    rows = []
    for c in compare:
        rep, pub = lookup(metrics, c["reproduced"]), lookup(published, c["published"])
        rep = float(rep) if isinstance(rep, (int, float)) else None
        pub = float(pub) if isinstance(pub, (int, float)) else None
        rows.append({"metric": c["metric"], "published": pub, "reproduced": rep,
                     "difference": (rep - pub) if rep is not None and pub is not None else None})
    return pd.DataFrame(rows, columns=["metric", "published", "reproduced", "difference"])


def publish_classification_paper(paper: str, paper_cfg: dict, experiments: dict, inputs: dict, out_dir,
                                 style: dict | None = None, scale: str = "demo") -> list[Path]:
    """Tables and figures of a classification paper.

    ``inputs`` maps experiment -> {"metrics": path, "history": path, "model_summary": path}.
    Writes, per experiment (prefixed by its name when the paper has several):
    ``tables/classification_report``, ``tables/model_summary``, ``figures/confusion_matrix``,
    ``figures/learning_curves``; and ``tables/comparison`` (published vs reproduced).
    """
    out_dir = Path(out_dir)
    note = scale_note(scale)
    published = yaml.safe_load(Path(paper_cfg["published"]).read_text())
    labels = paper_cfg.get("class_labels", {})
    written: list[Path] = []
    comparisons = []
    with atomic_dir(out_dir) as tmp:
        several = len(paper_cfg["experiments"]) > 1
        for exp in paper_cfg["experiments"]:
            pre = f"{exp}_" if several else ""
            metrics = json.loads(Path(inputs[exp]["metrics"]).read_text())
            history = pd.read_csv(inputs[exp]["history"])
            test = metrics["test"]
            written += write_table(report_table(test, labels), tmp / "tables" / f"{pre}classification_report",
                                   caption=f"{paper}: classification report on the test split", note=note)
            written += write_table(pd.read_csv(inputs[exp]["model_summary"]), tmp / "tables" / f"{pre}model_summary",
                                   caption=f"{paper}: model summary", note=note)
            names = [labels.get(n, n) for n in test["class_names"]]
            written += save_figure(confusion_matrix_figure(test["confusion_matrix"], names,
                                                           f"{paper}: confusion matrix (test)"),
                                   tmp / "figures" / f"{pre}confusion_matrix", style, note)
            written += save_figure(learning_curves_figure(history, f"{paper}: learning curves"),
                                   tmp / "figures" / f"{pre}learning_curves", style, note)
            comp = comparison_table(metrics, published, paper_cfg.get("compare", []))
            comp.insert(0, "experiment", exp)
            comparisons.append(comp)
        comp = pd.concat(comparisons, ignore_index=True)
        written += write_table(comp, tmp / "tables" / "comparison",
                               caption=f"{paper}: published vs reproduced", note=note)
        write_text(tmp / "inconsistencies.md", "# Inconsistencies in the published paper\n\n" + "".join(
            f"- {x}\n" for x in published.get("inconsistencies", [])) + (
            f"\n{published['note']}\n" if published.get("note") else ""))
        written = [out_dir / p.relative_to(tmp) for p in written]
    return written


def report(papers: dict, paper_dirs: dict, out_md, scale: str = "demo") -> None:
    """The reproduction report: every paper's comparison table and where its outputs are."""
    lines = ["# medrepro reproduction report", "", f"_{scale_note(scale)}_", ""]
    for name, cfg in papers.items():
        d = Path(paper_dirs[name])
        lines += [f"## {name}: {cfg.get('title', '')}", ""]
        comp = d / "tables" / "comparison.md"
        if comp.is_file():
            lines += [comp.read_text(), ""]
        inc = d / "inconsistencies.md"
        if inc.is_file():
            lines += [inc.read_text().replace("# Inconsistencies", "### Inconsistencies"), ""]
        files = sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file())
        lines += ["Outputs: " + ", ".join(f"`{p}`" for p in files), ""]
    write_text(out_md, "\n".join(lines))
