"""Project-level promises: env pins, tables in three formats, downloads checked, the difficulty knob."""
from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medrepro.download import DownloadError, fetch_dataset
from medrepro.synth.phantoms import brain_mri, chest_radiograph
from medrepro.tables import write_table

from .conftest import REPO


def test_pyproject_ranges_admit_the_exact_pins_of_constraints_and_the_conda_env():
    """pyproject.toml gives compatible ranges (a library user is not forced onto one patch
    release); constraints.txt pins every installed package, direct and indirect, of the package
    and all its extras; envs/medrepro.yaml lists the closure of the package and its download
    extra at the same pins; every pin lies in its range."""
    from packaging.requirements import Requirement

    from medrepro.licences import closure

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(extras) == {"slurm", "download", "jpeg-lossless", "test"}
    norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()  # noqa: E731
    constraints = {norm(k): v for k, v in (line.strip().split("==") for line in
                                           (REPO / "constraints.txt").read_text().splitlines() if "==" in line)}
    reqs = [Requirement(r) for r in project["dependencies"] + [r for rs in extras.values() for r in rs]]
    for r in reqs:
        assert not any(sp.operator == "==" for sp in r.specifier), f"{r}: a range, the pin is in constraints.txt"
        assert norm(r.name) in constraints, f"{r.name} is not pinned in constraints.txt"
        assert r.specifier.contains(constraints[norm(r.name)]), f"{r.name}=={constraints[norm(r.name)]} not in {r}"
    # complete: every package the installed closure holds (setuptools through torch), and nothing else
    assert constraints == closure("medrepro", tuple(extras))
    env = yaml.safe_load((REPO / "envs" / "medrepro.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = {norm(n): v for n, v in (p.split("==") for p in pip)}
    # the env runs the rules (snakemake itself runs outside it) and the download rule (kaggle)
    assert env_pins == closure("medrepro", ("download",), without=("snakemake",))


def test_required_dependencies_are_permissive_but_the_noted_ones_and_gpl_is_an_extra():
    """medrepro is MIT: no required dependency, direct or not, is GPL or proprietary unless
    licences.NOTED says why; the GPL-3.0 JPEG decoder comes only with the jpeg-lossless extra."""
    from medrepro.licences import OPTIONAL_GPL, closure, is_copyleft_or_proprietary, licence, noted, table

    base = closure("medrepro")
    assert "pylibjpeg-libjpeg" not in base and "pylibjpeg-libjpeg" in closure("medrepro", ("jpeg-lossless",))
    unexplained = {n: licence(n) for n in base if is_copyleft_or_proprietary(licence(n)) and not noted(n)}
    assert unexplained == {}
    assert is_copyleft_or_proprietary(licence("pylibjpeg-libjpeg"))
    assert OPTIONAL_GPL == {"pylibjpeg-libjpeg": "jpeg-lossless"}
    assert not any(licence(n) == "not stated" for n in base)
    assert "pylibjpeg-libjpeg" in table(("jpeg-lossless",)) and "pylibjpeg-libjpeg" not in table()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"   # an SPDX string (PEP 639), not the deprecated table


@pytest.mark.slow
def test_constraints_install_into_a_fresh_venv_without_resolving_and_pip_check_passes(tmp_path):
    """constraints.txt alone (``--no-deps``) gives a consistent environment: ``pip check`` finds
    every requirement of every package met.  Without the jpeg-lossless extra a JPEG DICOM that
    needs the GPL decoder is rejected with the extra named."""
    import venv

    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    pip = lambda *a: subprocess.run([py, "-m", "pip", "--disable-pip-version-check", *a],  # noqa: E731
                                    capture_output=True, text=True)
    try:
        done = pip("install", "--no-deps", "-r", str(REPO / "constraints.txt"))
        assert done.returncode == 0, done.stderr[-3000:]
        project = tmp_path / "project"
        shutil.copytree(REPO / "src" / "medrepro", project / "src" / "medrepro",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for f in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy(REPO / f, project / f)
        done = pip("install", "--no-deps", "--no-build-isolation", str(project))
        assert done.returncode == 0, done.stderr[-3000:]
        done = pip("check")
        assert done.returncode == 0, done.stdout + done.stderr
        assert pip("uninstall", "-y", "pylibjpeg-libjpeg").returncode == 0
        script = (
            "import pydicom.data, sys\n"
            "from medrepro.dicom import DicomError, read_dicom\n"
            "path = pydicom.data.get_testdata_file('SC_rgb_jpeg_gdcm.dcm')\n"
            "try:\n    read_dicom(path)\nexcept DicomError as e:\n    print(e)\n    sys.exit(0)\n"
            "sys.exit('read without the decoder')\n")
        done = subprocess.run([py, "-c", script], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "jpeg-lossless" in done.stdout, done.stdout
    finally:
        shutil.rmtree(env, ignore_errors=True)


def test_tables_three_formats(tmp_path):
    df = pd.DataFrame({"class": ["a_b", "c"], "precision": [0.5, None], "support": [3, 4]})
    paths = write_table(df, tmp_path / "t", caption="Caption", note="demo scale")
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"]
    assert pd.read_csv(paths[0]).shape == (2, 3)
    md = paths[1].read_text()
    assert "| a_b     |       0.500 |" in md and "_demo scale_" in md
    tex = paths[2].read_text()
    assert "\\begin{tabular}" in tex and "a\\_b" in tex and "Caption (demo scale)" in tex
    # captions name papers and experiments (transfer_kermany, tk_resnet50_l2): escaped for LaTeX too
    tex = write_table(df, tmp_path / "u", caption="transfer_kermany: 5% & more")[2].read_text()
    assert "\\caption{transfer\\_kermany: 5\\% \\& more}" in tex


def test_download_checks_md5_and_unpacks(http_root, tmp_path):
    root, url = http_root
    with zipfile.ZipFile(root / "a.zip", "w") as z:
        z.writestr("1.mat", b"x" * 100)
    (root / "README.txt").write_text("hello")
    md5 = hashlib.md5((root / "a.zip").read_bytes()).hexdigest()
    out = tmp_path / "raw"
    fetch_dataset({"kind": "urls", "files": [{"url": f"{url}/a.zip", "md5": md5},
                                             {"url": f"{url}/README.txt"}]}, out)
    assert (out / "a.zip").is_file() and (out / "README.txt").read_text() == "hello"
    out2 = tmp_path / "raw2"
    fetch_dataset({"kind": "urls", "files": [{"url": f"{url}/a.zip", "unpack": True}]}, out2)
    assert (out2 / "1.mat").read_bytes() == b"x" * 100 and not (out2 / "a.zip").exists()
    # a wrong checksum or a missing file fails, naming the URL, and leaves no output folder
    out3 = tmp_path / "raw3"
    with pytest.raises(DownloadError, match=r"a.zip: MD5 does not match, expected 0{32}"):
        fetch_dataset({"kind": "urls", "files": [{"url": f"{url}/a.zip", "md5": "0" * 32}]}, out3)
    with pytest.raises(DownloadError, match="cannot download .*/missing.zip"):
        fetch_dataset({"kind": "urls", "files": [{"url": f"{url}/missing.zip"}]}, out3)
    assert not out3.exists() and not list(tmp_path.glob(".raw3.*"))


def _lesion_contrast(difficulty, n=6):
    diffs = []
    for s in range(n):
        a = chest_radiograph(np.random.default_rng(s), 128, 128, "lobar", difficulty, n_opacities=1)
        b = chest_radiograph(np.random.default_rng(s), 128, 128, "none", difficulty)
        x, y, w, h = map(int, a.boxes[0])
        diffs.append(a.image[y:y + h, x:x + w].mean() - b.image[y:y + h, x:x + w].mean())
    return float(np.mean(diffs))


def test_difficulty_knob_weakens_the_signal():
    easy, mid, hard = _lesion_contrast(0.0), _lesion_contrast(0.5), _lesion_contrast(1.0)
    assert easy > mid > hard > 0
    with pytest.raises(ValueError, match="difficulty"):
        chest_radiograph(np.random.default_rng(0), 32, 32, "none", 1.5)


def test_brain_tumour_sites_are_class_typical():
    """Pituitary tumours sit near the midline below the centre; meningiomas near the skull."""
    def centre(cls, s):
        m = brain_mri(np.random.default_rng(s), 96, cls, 0.0).mask
        ys, xs = np.nonzero(m)
        return ys.mean() / 95, xs.mean() / 95
    pit = np.array([centre("pituitary", s) for s in range(8)])
    men = np.array([centre("meningioma", s) for s in range(8)])
    assert np.abs(pit[:, 1] - 0.5).max() < 0.08 and (pit[:, 0] > 0.55).all()
    dist = lambda c: np.hypot((c[:, 0] - 0.5) / 0.43, (c[:, 1] - 0.5) / 0.36)  # noqa: E731
    assert dist(men).mean() > dist(pit).mean()


def test_every_output_kind_in_the_schema_is_implemented():
    from medrepro.publish.outputs import OUTPUTS

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    outputs = schema["properties"]["papers"]["additionalProperties"]["properties"]["outputs"]
    assert set(outputs["items"]["properties"]["kind"]["enum"]) == set(OUTPUTS)


def test_every_third_party_import_of_the_package_and_rules_is_declared():
    """A module the package or a rule script imports must come from a declared dependency
    (or an extra): a fresh `make demo` installs only those (markdown-it-py once came only with
    the test extra's rich, and the HTML report failed on a fresh clone)."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()  # noqa: E731
    extras = project["optional-dependencies"]
    core = {norm(Requirement(r).name) for r in project["dependencies"]}
    extra = {norm(Requirement(r).name) for e, rs in extras.items() if e != "test" for r in rs}
    dev = {norm(Requirement(r).name) for r in extras["test"]}   # e.g. keras, to regenerate keras_layers.json
    dists = packages_distributions()
    optional = {"detectron2"}   # not on PyPI: documented beside the extras, imported only when chosen

    def imports(tree, in_function=False):
        for node in ast.iter_child_nodes(tree):
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(node, ast.Import):
                yield from ((a.name, in_function) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield node.module, in_function
            yield from imports(node, inner)

    missing = []
    files = list((REPO / "src" / "medrepro").rglob("*.py")) + list((REPO / "workflow" / "scripts").glob("*.py"))
    for py in files:
        for name, deferred in imports(ast.parse(py.read_text())):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ("medrepro", "snakemake") or top in optional:
                continue
            owners = {norm(d) for d in dists.get(top, [])}
            if not owners & (core | extra | (dev if deferred else set())):
                missing.append(f"{py.relative_to(REPO)}: {top} (from {sorted(owners) or 'nothing installed'})")
    assert missing == [], missing


def _wheel(folder: Path) -> Path:
    """A one-module wheel (the format of PEP 427, written with zipfile): something to install
    without a network or a build."""
    name, version = "medrepro_install_probe", "1.0"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    digest = lambda t: base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b"=").decode()  # noqa: E731
    record = "".join(f"{p},sha256={digest(t)},{len(t.encode())}\n" for p, t in files.items()) + f"{info}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, t in {**files, f"{info}/RECORD": record}.items():
            z.writestr(p, t)
    return path


@pytest.mark.parametrize("uv_version, installer", [(None, "uv"), ("0.0.0", "pip")])
def test_make_install_uses_uv_and_falls_back_to_pip_where_uv_cannot_install(tmp_path, uv_version, installer):
    """`make install` (the recipe behind `make demo` and `make test`) installs with the pinned uv,
    bytecode compiled; where uv cannot be had (here a uv release that does not exist) it says so
    and pip installs the same thing, so a machine whose index only pip knows still gets its venv."""
    wheel = _wheel(tmp_path)
    venv = tmp_path / "venv"
    over = [f"UV_VERSION={uv_version}"] if uv_version else []
    done = subprocess.run(["make", "-C", str(REPO), "install", f"VENV={venv}", f"SPEC={wheel}", *over],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"installed with {installer}" in done.stdout
    assert ("uv could not install" in done.stderr) == (installer == "pip")
    site = next(venv.glob("lib/python*/site-packages"))
    assert (site / "medrepro_install_probe-1.0.dist-info" / "INSTALLER").read_text().strip() == installer
    assert list((site / "__pycache__").glob("medrepro_install_probe.*.pyc")), "bytecode not compiled"
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import medrepro_install_probe as m; print(m.VALUE)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "42"
    shutil.rmtree(venv)


def test_every_install_recipe_of_the_makefile_is_valid_shell(tmp_path):
    """The recipes of `make demo`, `make test` and `make install EXTRAS=a,b` as make would run them
    (`make -n`, nothing run) parse as shell: a comma in an install spec once reached $(call)
    unprotected, which split it and left `make test` a shell syntax error."""
    venv = tmp_path / "venv"
    for target, extra in ((f"{venv}/bin/.medrepro-test-installed", []), ("install", ["EXTRAS=slurm,download"])):
        plan = subprocess.run(["make", "-n", "-C", str(REPO), target, f"VENV={venv}", *extra],
                              capture_output=True, text=True)
        assert plan.returncode == 0, plan.stderr
        assert plan.stdout.count("uv pip install") >= 1 and "-c constraints.txt" in plan.stdout
        for line in plan.stdout.splitlines():
            if line.startswith("make"):   # make's own "Entering directory" lines
                continue
            check = subprocess.run(["sh", "-n", "-c", line], capture_output=True, text=True)
            assert check.returncode == 0, f"{line}\n{check.stderr}"
    assert '".[slurm,download]"' in plan.stdout
