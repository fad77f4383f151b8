"""Provenance: git state of a real repository, config digests, the training runtime from a model
summary, and where tables and figures carry it."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402

from medrepro import provenance  # noqa: E402
from medrepro.accel import Accel, summary_rows  # noqa: E402
from medrepro.figures import save_figure  # noqa: E402
from medrepro.tables import write_table  # noqa: E402


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def test_git_state_names_the_commit_and_uncommitted_changes(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("one")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    provenance.git_state.cache_clear()
    assert provenance.git_state(str(tmp_path)) == {"commit": _git(tmp_path, "rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "a.txt").write_text("two")
    (tmp_path / "untracked.txt").write_text("results are not the code")
    provenance.git_state.cache_clear()
    assert provenance.git_state(str(tmp_path))["dirty"] is True
    provenance.git_state.cache_clear()
    (tmp_path / "plain").mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "plain" / ".git")], check=True)  # no work tree
    assert provenance.git_state(str(tmp_path / "plain")) == {"commit": None, "dirty": None}
    provenance.git_state.cache_clear()


def test_config_digest_is_canonical_json():
    a, b = {"x": 1, "y": [1, 2]}, {"y": [1, 2], "x": 1}
    expected = hashlib.sha256(b'{"x": 1, "y": [1, 2]}').hexdigest()[:16]
    assert provenance.config_sha256(a) == provenance.config_sha256(b) == expected
    assert provenance.config_sha256({"x": 2, "y": [1, 2]}) != expected


def test_record_takes_the_training_runtime_from_the_model_summary(tmp_path):
    rows = summary_rows(Accel(torch.device("cpu"), amp=True))
    pd.DataFrame([{"layer": "dense", "output_shape": "(4,)", "params": 8, "trainable": 8}] + rows).to_csv(
        tmp_path / "s.csv", index=False)
    trained = provenance.runtime_from_summary(tmp_path / "s.csv")
    assert trained["device"] == "cpu" and trained["amp"] == "True" and trained["gpu"] is None
    assert trained["threads"] == str(torch.get_num_threads())
    assert trained["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and trained["cpu"]
    rec = provenance.record({"a": 1}, trained)
    json.dumps(rec)  # JSON as it is
    assert rec["trained_on"] == trained and rec["config_sha256"] == provenance.config_sha256({"a": 1})
    assert rec["versions"]["torch"] == torch.__version__ and rec["threads"] == torch.get_num_threads()
    import PIL

    assert rec["versions"]["pillow"] == PIL.__version__  # the image decoder (JPEG DICOMs and files)
    assert provenance.runtime_from_summary(tmp_path / "missing.csv") is None


def test_tables_and_figures_carry_the_provenance_line(tmp_path):
    line = provenance.short(provenance.record({"a": 1}))
    assert "config " + provenance.config_sha256({"a": 1}) in line
    write_table(pd.DataFrame({"x": [1.0]}), tmp_path / "t", "caption", note="demo", provenance=line)
    assert line in (tmp_path / "t.md").read_text()
    assert (tmp_path / "t.tex").read_text().startswith(f"% {line}\n")
    assert list(pd.read_csv(tmp_path / "t.csv").columns) == ["x"]  # the CSV stays plain data
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    save_figure(fig, tmp_path / "f", {"formats": ["png", "pdf"]}, "demo", line)
    assert Image.open(tmp_path / "f.png").text["Software"] == line
    assert b"/Creator (medrepro commit " in (tmp_path / "f.pdf").read_bytes()


def test_a_step_without_torch_records_its_build_versions_without_importing_it():
    """Evaluation and publishing never touch torch: their provenance names torch's build (as the
    training step's does) without paying for the import, and says no torch thread pool ran."""
    code = ("import json, sys; from medrepro import provenance; r = provenance.record({'a': 1}); "
            "print(json.dumps({'torch_loaded': 'torch' in sys.modules, 'record': r}))")
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                     .stdout.strip().splitlines()[-1])
    assert out["torch_loaded"] is False
    rec = out["record"]
    assert rec["versions"]["torch"] == torch.__version__ and rec["versions"]["torchvision"] == torchvision.__version__
    assert rec["device"] == "cpu" and rec["gpu"] is None and rec["threads"] is None


def test_a_papers_style_is_set_before_its_first_figure_is_drawn(tmp_path):
    """Publishing sets the configured style when it starts, so the first figure is drawn with it
    (it used to be applied on saving, after the first figure had taken the defaults); lines cycle
    through the Okabe-Ito colours, which no colour-vision deficiency merges."""
    from medrepro.figures import OKABE_ITO
    from medrepro.publish.outputs import Context

    plt.rcdefaults()
    Context("p", {}, {}, {"font_size": 13, "dpi": 50, "formats": ["png"]}, "", tmp_path)
    fig, ax = plt.subplots()
    title, label = ax.set_title("t"), ax.set_xlabel("x")
    (line,) = ax.plot([0, 1])
    assert title.get_fontsize() == 14 and label.get_fontsize() == 13
    assert ax.xaxis.get_ticklabels()[0].get_fontsize() == 13
    assert line.get_color().lower() == OKABE_ITO[0].lower()
    assert plt.rcParams["pdf.fonttype"] == 42  # TrueType embedded, text stays text in the PDF
    plt.close(fig)


def test_learning_curve_titles_name_the_experiment(tmp_path):
    """A paper with several models (transfer_kermany) gets one learning-curve figure per model, each
    titled with its experiment (they shared one title naming none)."""
    from medrepro.publish.outputs import Context, _learning_curves
    from medrepro.specs import output_spec

    hist = tmp_path / "history.csv"
    pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "val_loss": [1.0, 0.6]}).to_csv(hist, index=False)
    titles = []

    class Drawn(Context):
        def figure(self, fig, name):
            titles.append(fig.get_suptitle())
            plt.close(fig)
            return []

    for e in ("tk_resnet50", "tk_vgg19"):
        _learning_curves(Drawn("transfer_kermany", {"history": hist}, {}, None, "", tmp_path, experiment=e),
                         output_spec({"kind": "learning_curves", "name": "x", "metrics": ["loss"]}))
    _learning_curves(Drawn("cnn_kermany", {"history": hist}, {}, None, "", tmp_path, experiment="cnn_kermany"),
                     output_spec({"kind": "learning_curves", "name": "x", "metrics": ["loss"]}))
    assert titles == ["transfer_kermany, tk_resnet50: learning curves", "transfer_kermany, tk_vgg19: learning curves",
                      "cnn_kermany: learning curves"]
