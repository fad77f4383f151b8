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
