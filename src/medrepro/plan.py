"""What a run of the workflow reads, named from the validated config: the runs, datasets and
weights behind each paper (``snakemake <paper>`` plans exactly these; tests/test_plan.py checks
it against Snakemake's own plan)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Needs:
    """The runs (experiments and studies, by name), datasets and ``weights:`` entries of some papers."""

    papers: tuple[str, ...]
    runs: dict = field(default_factory=dict)
    datasets: frozenset = frozenset()
    weights: frozenset = frozenset()


def run_weights(run: Mapping) -> set[str]:
    """The ``weights:`` entries a run reads: a transfer model's backbone, a detector's pretrained
    weights, every stage-1 candidate of a study."""
    if "backbones" in run:  # a study: stage 1 extracts features with each candidate
        return set(run["backbones"])
    model = run.get("model", {})
    if model.get("arch") == "transfer":
        return {model["backbone"]}
    pre = model.get("detector", {}).get("pretrained")
    return {pre} if pre else set()


def needs(cfg: Mapping, papers: Iterable[str] | None = None) -> Needs:
    """What ``papers`` (default: all of them, with every dataset, as the default target does) read."""
    every = papers is None
    papers = tuple(cfg["papers"]) if every else tuple(papers)
    unknown = [p for p in papers if p not in cfg["papers"]]
    if unknown:
        raise KeyError(f"not a paper of this config: {', '.join(unknown)} (papers: {', '.join(cfg['papers'])})")
    everything = {**cfg.get("experiments", {}), **cfg.get("studies", {})}
    runs = {name: everything[name] for p in papers for name in cfg["papers"][p]["experiments"]}
    datasets = set(cfg["datasets"]) if every else {r["dataset"] for r in runs.values()}
    weights = set().union(*(run_weights(r) for r in runs.values())) if runs else set()
    return Needs(papers, runs, frozenset(datasets), frozenset(weights & set(cfg.get("weights", {}))))


def inflation_inputs(cfg: Mapping, results: str) -> dict[str, dict]:
    """Each leakage-inflation pair of a validated config (``inflation``; its runs are experiments
    with ``inflation_of``) with what rule ``inflation`` reads of it: its paper, dataset, model in
    words, class names, and per arm the files under ``results`` (predictions, split, split audit)."""
    from .config import inflation_pairs

    out = {}
    for name, arms in inflation_pairs(cfg["experiments"]).items():
        e = cfg["experiments"][arms["image"]]
        out[name] = {
            "paper": e["paper"], "dataset": e["dataset"],
            "model": f"{e['model'].get('backbone') or e['model']['arch']}, batch {e['train']['batch_size']}",
            "classes": [c["name"] for c in e["classes"]],
            "arms": {arm: {k: f"{results}/experiments/{run}/{f}" for k, f in
                           (("predictions", "predictions.csv"), ("split", "split.csv"), ("audit", "split_audit.json"))}
                     for arm, run in arms.items()},
        }
    return out


def probe_datasets(cfg: Mapping) -> list[str]:
    """The datasets of ``source_probe`` that the config has (rule source_probe runs for each)."""
    return [d for d in cfg["source_probe"]["datasets"] if d in cfg["datasets"]]


def probed_datasets(cfg: Mapping) -> dict[str, list[str]]:
    """Paper -> the datasets of ``source_probe`` that its experiments or studies use (the report
    prints each probe in those papers' sections)."""
    probed = probe_datasets(cfg)
    runs = list(cfg.get("experiments", {}).values()) + list(cfg.get("studies", {}).values())
    return {p: [d for d in probed if any(r["paper"] == p and r["dataset"] == d for r in runs)] for p in cfg["papers"]}
