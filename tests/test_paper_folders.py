"""A paper in one folder: config/papers/<paper>/ holds its runs and block (runs.yaml), its own
full-scale settings (full.yaml) and its published numbers (published.yaml), and the config is
composed from them as the Snakefile composes it."""
from __future__ import annotations

import yaml

from medrepro.config import compose_config, paper_files

from .conftest import REPO, demo_config

CONFIG = REPO / "config"
FOLDERS = sorted(p for p in (CONFIG / "papers").iterdir() if p.is_dir())


def read(path):
    return yaml.safe_load(path.read_text()) or {}


def test_each_paper_folder_holds_only_its_own_paper():
    assert [f.name for f in FOLDERS] == sorted(demo_config()["papers"]) and len(FOLDERS) >= 5
    for folder in FOLDERS:
        paper = folder.name
        runs = read(folder / "runs.yaml")
        assert set(runs) <= {"experiments", "studies", "papers"} and list(runs["papers"]) == [paper]
        block = runs["papers"][paper]
        names = [*runs.get("experiments", {}), *runs.get("studies", {})]
        assert sorted(names) == sorted(block["experiments"]), paper
        assert all(r["paper"] == paper for part in ("experiments", "studies") for r in runs.get(part, {}).values())
        assert block["published"] == f"config/papers/{paper}/published.yaml" and (folder / "published.yaml").is_file()
        for overlay in ("full", "smoke", "tiny"):  # the paper's own settings and quick-run sizes: its own runs only
            over = read(folder / f"{overlay}.yaml") if (folder / f"{overlay}.yaml").is_file() else {}
            assert set(over) <= {"experiments", "studies"}, (paper, overlay)
            assert all(set(over.get(part, {})) <= set(runs.get(part, {})) for part in ("experiments", "studies")), \
                (paper, overlay)
    for top in ("config.yaml", "full.yaml", "smoke.yaml"):
        assert not {"papers"} & set(read(CONFIG / top)), top


def test_full_settings_come_from_the_paper_folders_and_an_overlay_still_wins(tmp_path):
    demo, full = demo_config(), demo_config("full.yaml")
    assert demo["paper_settings"] == "demo" and full["paper_settings"] == "full"
    assert paper_files(CONFIG, {"paper_settings": "demo"}) == [f / "runs.yaml" for f in FOLDERS]
    assert paper_files(CONFIG, full)[len(FOLDERS):] == [f / "full.yaml" for f in FOLDERS]
    # cnn_kermany's own settings (its full.yaml): 150 px and 25 epochs; the demo's: 64 px and 8
    assert full["experiments"]["cnn_kermany"]["model"]["input_size"] == [150, 150]
    assert demo["experiments"]["cnn_kermany"]["model"]["input_size"] == [64, 64]
    # a --configfile is laid over every file, the paper folders' included (as Snakemake does)
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({"experiments": {"cnn_kermany": {"train": {"epochs": 3}}}}))
    cfg = compose_config(CONFIG, [CONFIG / "full.yaml", over])
    assert cfg["experiments"]["cnn_kermany"]["train"]["epochs"] == 3
    assert cfg["experiments"]["cnn_kermany"]["model"]["input_size"] == [150, 150]
    # and one that switches a demo run to the papers' settings alone
    switch = tmp_path / "switch.yaml"
    switch.write_text("paper_settings: full\n")
    assert compose_config(CONFIG, [switch])["studies"]["tm_TC"]["batch_sizes"] == [32, 64, 128, 256]


def test_every_setting_a_paper_states_is_followed_in_full_or_named_in_its_departures():
    """config/full.yaml does what each paper did; where it does not, the paper's departures name the
    key. Each paper lists the settings it states (``stated``: key, value, where the paper says it)."""
    import copy

    from medrepro.departures import unnamed_departures

    from .conftest import demo_config

    full = demo_config("full.yaml")
    assert all(len(block["stated"]) >= 3 for block in full["papers"].values())
    assert unnamed_departures(full) == []
    # a setting changed without a departure is found, named by key and paper
    changed = copy.deepcopy(full)
    changed["studies"]["tm_TC"]["fine_tune"]["lr"] = 1e-4
    assert unnamed_departures(changed) == [
        "papers.transfer_multidataset: studies.tm_TC.fine_tune.lr is 0.0001 here, the paper states 1e-05 "
        "(stage 4: learning rate 1e-5), and no departure names it"]
    # ... and one that a departure names is not
    changed["papers"]["transfer_multidataset"]["departures"].append(
        {"topic": "t", "paper": "p", "here": "h", "why": "w", "touches": "x", "setting": "studies.tm_TC.fine_tune.lr"})
    assert unnamed_departures(changed) == []
    # the demo departs on purpose (sizes, epochs, weights), and says so: its differences are many
    assert len(unnamed_departures(demo_config())) > 5


def test_run_sizes_lay_each_folders_quick_run_sizes_last_and_a_wrong_value_is_named():
    """``run_sizes: smoke`` (config/smoke.yaml) and ``tiny`` (the test suite's run) lay each folder's
    smoke.yaml or tiny.yaml over its runs, after full.yaml; a folder without one keeps its sizes; a
    value that is neither stops with the key and the values it takes."""
    import pytest

    from medrepro.config import ConfigError

    files = paper_files(CONFIG, {"paper_settings": "full", "run_sizes": "smoke"})
    assert files[-len(FOLDERS):] == [f / "smoke.yaml" for f in FOLDERS if (f / "smoke.yaml").is_file()]
    assert files.index(FOLDERS[0] / "full.yaml") < files.index(FOLDERS[0] / "smoke.yaml")
    smoke = demo_config("full.yaml", "smoke.yaml")
    assert smoke["experiments"]["mr_exp1"]["train"]["steps_per_epoch"] == 1  # maskrcnn_opacity/smoke.yaml
    assert smoke["experiments"]["mr_exp1"]["model"]["input_size"] == [1024, 1024]  # the paper's, from full.yaml
    with pytest.raises(ConfigError, match=r"run_sizes: 'huge'; expected one of \[None, 'smoke', 'tiny'\]"):
        paper_files(CONFIG, {"run_sizes": "huge"})
