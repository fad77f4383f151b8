"""Fetch a real dataset into its raw folder (run on a machine with internet: a login node).

Two kinds, set under ``datasets.<name>.download`` in config:

``urls``
    a list of files, each ``{url, name?, md5?, unpack?}`` (figshare's brain tumour set):
    fetched through pooch, which checks the published MD5 and retries a failed transfer
    (``retries``); a transfer cut off half-way resumes from where it stopped (HTTP Range)
    rather than starting again.  Finished files wait in ``<raw>.downloads/``, so one failed
    file does not cost the others.  Zips are unpacked when ``unpack`` is true (the brain
    tumour zips stay zipped: the reader reads them as they are).
``kaggle_dataset`` / ``kaggle_competition``
    the official ``kaggle`` command (``pip install -e ".[download]"``; kaggle 2.x downloads a
    public dataset without a login, a competition needs Kaggle credentials and its rules
    accepted; ``medrepro doctor`` says what each dataset needs); datasets are pinned to
    ``version``; the command's progress goes to the rule's log as it comes.  Its zip is written
    to ``<raw>.downloads/``, which survives a failed or killed run, so the next run resumes it:
    kaggle 2.x continues a partial file with an HTTP Range request when its ``.kaggle-partial``
    marker matches the server's ETag (a 3.9 GB competition archive does not start again).

Every zip is unpacked only after each member is checked to stay inside the folder (no
absolute paths, no ``..``, no links).  When complete, ``<raw>.sha256`` (one line per raw file,
``sha256sum`` format) is written beside the raw folder; :func:`verify_checksums` checks the
raw files against it on later runs.  The download is assembled in a temporary sibling folder
and moved into place only when complete, so an interrupted download never looks finished.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from .io import atomic_dir, atomic_path


class DownloadError(RuntimeError):
    pass


def _digest(path: str | Path, algo: str) -> str:
    """The file's hex digest, by pooch (which checks downloads the same way)."""
    import pooch

    return pooch.file_hash(str(path), alg=algo)


class ResumingDownloader:
    """A pooch downloader that keeps the partial file (``<dest>.part``) across attempts and
    asks the server for the rest (HTTP Range), so a cut-off transfer resumes."""

    def __init__(self, part: Path, timeout: float = 60.0, progress: bool = True):
        self.part, self.timeout, self.progress = part, timeout, progress

    def __call__(self, url: str, output_file, pooch_obj=None, check_only: bool = False):
        import requests

        have = self.part.stat().st_size if self.part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as resp:
            if resp.status_code == 416:  # nothing left to fetch: the part file is complete
                pass
            else:
                resp.raise_for_status()
                if have and resp.status_code != 206:  # the server ignored Range: start again
                    have = 0
                total = int(resp.headers.get("Content-Length") or 0) + have or None
                with open(self.part, "ab" if have else "wb") as out, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=self.part.name[:-5],
                             file=sys.stderr, mininterval=5, disable=not self.progress) as bar:
                    for block in resp.iter_content(1 << 16):
                        out.write(block)
                        bar.update(len(block))
                if total and self.part.stat().st_size < total:
                    raise requests.exceptions.ChunkedEncodingError(
                        f"{url}: connection closed after {self.part.stat().st_size} of {total} bytes")
        shutil.copyfile(self.part, output_file)
        self.part.unlink()


def fetch_url(url: str, dest: str | Path, md5: str | None = None, retries: int = 3, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through pooch (MD5 checked when given, ``retries`` extra
    attempts, cut-off transfers resumed); a file already there with the right MD5 is kept."""
    import pooch

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fetcher = pooch.create(path=dest.parent, base_url="", registry={dest.name: f"md5:{md5.lower()}" if md5 else None},
                           urls={dest.name: url}, retry_if_failed=retries)
    try:
        fetcher.fetch(dest.name, downloader=ResumingDownloader(dest.with_name(dest.name + ".part"), timeout))
    except ValueError as exc:  # pooch: hash mismatch
        dest.unlink(missing_ok=True)
        raise DownloadError(f"{url}: MD5 does not match, expected {md5} (corrupt or changed download; {exc})") from exc
    except Exception as exc:  # noqa: BLE001 - requests' and the OS's errors, after pooch's retries
        raise DownloadError(f"cannot download {url} after {retries + 1} attempt(s): {exc}") from exc
    return dest


def safe_extract(archive: str | Path, into: str | Path) -> list[Path]:
    """Unpack a zip into ``into``, refusing members that would land outside it (absolute
    paths, ``..``) and symbolic links; returns the files written."""
    into = Path(into).resolve()
    out = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = PurePosixPath(info.filename.replace("\\", "/"))
            target = (into / name).resolve()
            if name.is_absolute() or ".." in name.parts or not target.is_relative_to(into):
                raise DownloadError(f"{archive}: member {info.filename!r} would be written outside {into}; "
                                    "refusing to unpack this archive")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DownloadError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to unpack "
                                    "this archive")
        for info in zf.infolist():
            zf.extract(info, into)
            if not info.is_dir():
                out.append(into / info.filename)
    return out


def kaggle_command(path: str | None = None) -> str | None:
    """The ``kaggle`` command of this Python's environment (beside ``sys.executable``: a venv's
    scripts need not be on PATH), else the first on ``path`` (default: PATH)."""
    here = Path(sys.executable).with_name("kaggle")
    if path is None and here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("kaggle", path=path)


def _kaggle(kind: str, slug: str, into: Path, cache: Path, version: int | None = None) -> None:
    """Run the kaggle command into ``cache`` (kept across runs: kaggle resumes its partial zip
    there) and unpack what it downloaded into ``into``."""
    exe = kaggle_command()
    if exe is None:
        raise DownloadError("the 'kaggle' command is not installed: pip install -e \".[download]\" (or use "
                            "envs/medrepro.yaml); `medrepro doctor` says which credentials each dataset needs "
                            "(https://www.kaggle.com/docs/api)")
    if kind == "kaggle_dataset":
        if version is None:
            print(f"warning: {slug}: no download.version set; downloading Kaggle's latest version, which may differ "
                  "from the papers' (<raw>.sha256 records what came)", file=sys.stderr)
        ref = f"{slug}/{version}" if version else slug
        sub = ["datasets", "download", "-d", ref]
    else:
        sub = ["competitions", "download", "-c", slug]
    cache.mkdir(parents=True, exist_ok=True)
    partial = sorted(p.name for p in cache.glob("*.kaggle-partial"))
    if partial:
        print(f"{cache}: resuming the partial download of an earlier run ({', '.join(partial)})", file=sys.stderr)
    print(f"kaggle {' '.join(sub)} -p {cache}", file=sys.stderr, flush=True)
    proc = subprocess.Popen([exe, *sub, "-p", str(cache)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    tail = []
    for line in proc.stdout:  # progress as it comes, into the rule's log
        sys.stderr.write(line)
        sys.stderr.flush()
        tail = (tail + [line.strip()])[-5:]
    if proc.wait() != 0:
        raise DownloadError(f"kaggle {' '.join(sub)} failed (exit {proc.returncode}): {' | '.join(tail)} "
                            f"(what came is kept in {cache}: the next run resumes it)")
    got = sorted(p for p in cache.iterdir() if p.is_file() and not p.name.endswith(".kaggle-partial"))
    if not got:
        raise DownloadError(f"kaggle {' '.join(sub)} wrote nothing into {cache}")
    for f in got:
        if zipfile.is_zipfile(f):
            safe_extract(f, into)
        else:  # a single file Kaggle serves unzipped
            shutil.copyfile(f, into / f.name)


def write_checksums(root: str | Path, out: str | Path) -> int:
    """A SHA-256 manifest (``sha256sum`` format) of every file under ``root`` (paths relative to it, sorted).

    The ``sha256sum`` format (``sha256sum -c`` checks it) and a progress bar, rather than pooch's
    ``make_registry`` (one space between hash and name, no progress on a 30,000-file folder);
    the hashes are pooch's."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    with atomic_path(out) as tmp:
        with open(tmp, "w") as fh:
            for p in tqdm(files, desc="sha256", file=sys.stderr, mininterval=5):
                fh.write(f"{_digest(p, 'sha256')}  {p.relative_to(root).as_posix()}\n")
    return len(files)


def verify_checksums(root: str | Path, sums: str | Path) -> None:
    """Check the raw files under ``root`` against ``sums``; name every missing, changed or new file."""
    root, problems = Path(root), []
    listed = {}
    for n, line in enumerate(Path(sums).read_text().splitlines(), 1):
        digest, _, rel = line.partition("  ")
        if not rel:
            raise DownloadError(f"{sums}, line {n}: expected '<sha256>  <path>', found {line!r}")
        listed[rel] = digest
    for rel, digest in listed.items():
        p = root / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif _digest(p, "sha256") != digest:
            problems.append(f"{rel}: SHA-256 differs from the one recorded at download")
    extra = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    problems += [f"{rel}: not in {Path(sums).name}" for rel in extra if rel not in listed]
    if problems:
        raise DownloadError(f"{root}: the raw files are not the ones downloaded ({len(problems)} problem(s)): "
                            + "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else ""))


def fetch_dataset(spec: dict, out_dir: str | Path, checksums: str | Path | None = None) -> Path:
    """Download what ``spec`` describes into ``out_dir`` (replaced only on success) and write
    its SHA-256 manifest to ``checksums`` (default: ``<out_dir>.sha256``)."""
    out_dir = Path(out_dir)
    cache = out_dir.with_name(out_dir.name + ".downloads")  # finished files survive a failed run
    with atomic_dir(out_dir) as tmp:
        kind = spec.get("kind")
        if kind == "urls":
            files = spec.get("files") or []
            if not files:
                raise DownloadError("download.files is empty: list the URLs to fetch")
            for f in files:
                name = f.get("name") or Path(unquote(urlparse(f["url"]).path)).name
                if not name:
                    raise DownloadError(f"cannot tell a file name from {f['url']}: set 'name'")
                path = fetch_url(f["url"], cache / name, f.get("md5"), retries=spec.get("retries", 3))
                if f.get("unpack"):
                    safe_extract(path, tmp)
                else:
                    shutil.copyfile(path, tmp / name)
        elif kind in ("kaggle_dataset", "kaggle_competition"):
            if not spec.get("slug"):
                raise DownloadError(f"download.slug is required for kind {kind}")
            _kaggle(kind, spec["slug"], tmp, cache, spec.get("version"))
        else:
            raise DownloadError(f"download.kind {kind!r}; expected urls, kaggle_dataset or kaggle_competition")
        n = write_checksums(tmp, checksums or out_dir.with_name(out_dir.name + ".sha256"))
        print(f"{n} raw files, SHA-256 recorded", file=sys.stderr)
    shutil.rmtree(cache, ignore_errors=True)
    return out_dir


def torchvision_weights_url(backbone: str) -> str:
    """The URL of torchvision's ``IMAGENET1K_V1`` weights of ``backbone`` (the original
    ImageNet training, the closest to the Keras applications' weights); for a detection
    model (``maskrcnn_resnet50_fpn``) its ``COCO_V1`` weights."""
    import torchvision

    w = torchvision.models.get_model_weights(backbone)
    return (w.IMAGENET1K_V1 if hasattr(w, "IMAGENET1K_V1") else w.COCO_V1).url


def fetch_torchvision_weights(backbone: str, dest: str | Path, url: str | None = None) -> Path:
    """Download torchvision's ImageNet weights of ``backbone`` to ``dest``.

    torchvision names its files ``<name>-<first hex digits of the SHA-256>.pth``; that prefix
    (parsed by ``torch.hub.HASH_REGEX``) is checked, as ``torch.hub`` does.  The transfer goes
    through :func:`fetch_url` rather than ``torch.hub.download_url_to_file``, which neither
    retries nor resumes.
    """
    import torch.hub

    url = url or torchvision_weights_url(backbone)
    m = torch.hub.HASH_REGEX.search(Path(unquote(urlparse(url).path)).name)
    if m is None:
        raise DownloadError(f"{url}: the file name carries no SHA-256 prefix (<name>-<hash>.pth) to check it by")
    prefix = m.group(1)
    path = fetch_url(url, Path(dest).with_name(f".{Path(dest).name}.download"))
    h = _digest(path, "sha256")
    if not h.startswith(prefix):
        path.unlink()
        raise DownloadError(f"{url}: SHA-256 {h[:8]}... does not start with {prefix} (corrupt download)")
    os.replace(path, dest)
    return Path(dest)


def keras_cache_dirs() -> list[Path]:
    """Where Keras keeps the weights it downloaded: ``$KERAS_HOME/models`` and ``~/.keras/models``
    (``keras.utils.get_file``'s cache folder)."""
    dirs = [Path(os.environ["KERAS_HOME"]) / "models"] if os.environ.get("KERAS_HOME") else []
    return dirs + [Path.home() / ".keras" / "models"]


def fetch_keras_weights(backbone: str, dest: str | Path, url: str | None = None, md5: str | None = None,
                        cache_dirs: list[Path] | None = None) -> Path:
    """The Keras application's ImageNet weights of ``backbone`` (``include_top=False``: the
    ``*_notop.h5`` file ``keras.applications`` downloads) at ``dest``, with the MD5 Keras checks.

    A copy already in Keras' cache folder (:func:`keras_cache_dirs`) with that MD5 is copied
    instead of downloading it again; otherwise it comes from Keras' own location (through
    :func:`fetch_url`: retried, resumed, checked)."""
    from .backbones import KERAS_WEIGHTS

    if backbone not in KERAS_WEIGHTS:
        raise DownloadError(f"no Keras application weights for {backbone!r}; Keras has {sorted(KERAS_WEIGHTS)}")
    default_url, default_md5 = KERAS_WEIGHTS[backbone]
    url, md5 = url or default_url, (md5 or default_md5).lower()
    dest = Path(dest)
    name = Path(unquote(urlparse(url).path)).name
    for folder in keras_cache_dirs() if cache_dirs is None else cache_dirs:
        cached = Path(folder) / name
        if cached.is_file():
            if _digest(cached, "md5") == md5:
                print(f"{backbone}: Keras' cached {cached} (MD5 {md5})", file=sys.stderr)
                with atomic_path(dest) as tmp:
                    shutil.copyfile(cached, tmp)
                return dest
            print(f"{backbone}: {cached} has another MD5 than Keras' {md5}: not used", file=sys.stderr)
    path = fetch_url(url, dest.with_name(f".{dest.name}.download"), md5=md5)
    os.replace(path, dest)
    return dest
