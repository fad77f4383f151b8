"""Paths and input functions shared by the rules (no logic beyond naming files)."""

RESULTS = config["results"]
ENV = "../../envs/medrepro.yaml"
FIGURE_FORMATS = config["figures"]["formats"]


def datasets_with(source):
    return [n for n, d in config["datasets"].items() if d.get("source", "synthetic") == source]


def one_of(names):
    """A wildcard pattern matching exactly ``names`` (and nothing when empty)."""
    return "|".join(names) if names else "(?!x)x"


def raw_root(wildcards):
    d = config["datasets"][wildcards.dataset]
    return d["path"] if d["source"] == "local" else f"{RESULTS}/raw/{wildcards.dataset}"


def experiment_dataset(wildcards):
    exp = config["experiments"][wildcards.experiment]
    return f"{RESULTS}/converted/{exp['dataset']}/manifest.csv"


def features_file(experiment):
    exp = config["experiments"][experiment]
    return f"{RESULTS}/features/{exp['dataset']}/{feature_key(exp)}.pt"


# (dataset, key) -> the model config whose backbone makes those features
FEATURE_SPECS = {
    (e["dataset"], feature_key(e)): e["model"] for e in config["experiments"].values() if uses_feature_cache(e)
}


def experiment_inputs(extra):
    """Input function: the split (plus ``extra`` files of the experiment) and, for a frozen
    backbone without augmentation, its cached features."""

    def inputs(wildcards):
        d = {"split": f"{RESULTS}/experiments/{wildcards.experiment}/split.csv"}
        d.update({k: v.format(results=RESULTS, experiment=wildcards.experiment) for k, v in extra.items()})
        exp = config["experiments"][wildcards.experiment]
        if uses_feature_cache(exp):
            d["features"] = features_file(wildcards.experiment)
        elif exp["model"].get("arch") == "transfer" and weights_file(exp["model"]["backbone"]):
            d["weights"] = weights_file(exp["model"]["backbone"])
        return d

    return inputs


def weights_file(backbone):
    """The weights file of a backbone: a local path, the download target for 'imagenet', or None."""
    w = config["weights"].get(backbone)
    return f"{RESULTS}/weights/{backbone}.pth" if w == "imagenet" else w


def backbone_weights(wildcards):
    m = config["experiments"][wildcards.experiment]["model"]
    return weights_file(m.get("backbone")) if m.get("arch") == "transfer" else None


def features_inputs(wildcards):
    d = {"manifest": f"{RESULTS}/converted/{wildcards.dataset}/manifest.csv"}
    w = weights_file(FEATURE_SPECS[(wildcards.dataset, wildcards.key)]["backbone"])
    if w:
        d["weights"] = w
    return d


def paper_inputs(wildcards):
    exps = config["papers"][wildcards.paper]["experiments"]
    out = {}
    for e in exps:
        for kind in ("metrics.json", "history.csv", "model_summary.csv", "split.csv", "predictions.csv"):
            out[f"{e}__{kind.split('.')[0]}"] = f"{RESULTS}/experiments/{e}/{kind}"
    return out


def contact_sheets():
    return expand(f"{RESULTS}/figures/contact_sheets/{{dataset}}.{{fmt}}", dataset=list(config["datasets"]),
                  fmt=FIGURE_FORMATS)


def all_targets():
    return (
        expand(f"{RESULTS}/manifests/{{dataset}}.csv", dataset=list(config["datasets"]))
        + contact_sheets()
        + expand(f"{RESULTS}/papers/{{paper}}", paper=list(config["papers"]))
        + [f"{RESULTS}/report.md"]
    )


wildcard_constraints:
    dataset=one_of(list(config["datasets"])),
    experiment=one_of(list(config["experiments"])),
    paper=one_of(list(config["papers"])),
    key="[A-Za-z0-9_]+",
