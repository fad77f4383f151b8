"""Downloads a user can trust, against a real HTTP server on loopback serving archives the tests
make: a good one, a corrupt one, one cut off half-way (resumed), a malicious one; the SHA-256
manifest; the kaggle command's progress and version pin."""
from __future__ import annotations

import hashlib
import http.server
import os
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from medrepro.download import DownloadError, fetch_dataset, fetch_url, safe_extract, verify_checksums


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; the first request for a name listed in
    ``cut`` sends only half the body and closes, as a dropped connection would."""

    cut: set = set()
    requests: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        type(self).requests.append((path.name, rng))
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if path.name in type(self).cut:
            type(self).cut.discard(path.name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Handler(RangeHandler):
        cut, requests = set(), []

        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", Handler
    httpd.shutdown()


def _zip(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_good_files_md5_checked_and_sha256_manifest_written(server, tmp_path):
    root, url, _ = server
    md5 = _zip(root / "brainTumorDataPublic_1-766.zip", {"1.mat": os.urandom(5000)})
    (root / "README.txt").write_text("figshare 1512427")
    out = tmp_path / "raw" / "brain_tumor"
    fetch_dataset({"kind": "urls", "files": [{"url": f"{url}/brainTumorDataPublic_1-766.zip", "md5": md5},
                                             {"url": f"{url}/README.txt"}]}, out)
    name = "brainTumorDataPublic_1-766.zip"
    assert (out / name).read_bytes() == (root / name).read_bytes()
    sums = tmp_path / "raw" / "brain_tumor.sha256"
    lines = sums.read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["README.txt", "brainTumorDataPublic_1-766.zip"]
    digest = hashlib.sha256((out / "README.txt").read_bytes()).hexdigest()
    assert f"{digest}  README.txt" in lines
    verify_checksums(out, sums)
    # a raw file changed, removed or added later is named
    (out / "README.txt").write_text("edited")
    (out / "extra.txt").write_text("new")
    with pytest.raises(DownloadError, match=r"README.txt: SHA-256 differs.*extra.txt: not in"):
        verify_checksums(out, sums)


def test_corrupt_download_is_refused_and_named(server, tmp_path):
    root, url, _ = server
    _zip(root / "a.zip", {"1.mat": b"x" * 100})
    with pytest.raises(DownloadError, match=r"a.zip: MD5 does not match, expected 0{32}"):
        fetch_dataset({"kind": "urls", "files": [{"url": f"{url}/a.zip", "md5": "0" * 32}]}, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    with pytest.raises(DownloadError, match=r"cannot download .*/missing.zip after 2 attempt"):
        fetch_dataset({"kind": "urls", "retries": 1, "files": [{"url": f"{url}/missing.zip"}]}, tmp_path / "raw")


def test_cut_off_transfer_resumes_where_it_stopped(server, tmp_path):
    root, url, handler = server
    data = os.urandom(200_000)
    (root / "big.bin").write_bytes(data)
    handler.cut.add("big.bin")
    dest = fetch_url(f"{url}/big.bin", tmp_path / "big.bin", md5=hashlib.md5(data).hexdigest(), retries=2)
    assert dest.read_bytes() == data
    assert handler.requests[0] == ("big.bin", None)
    name, rng = handler.requests[1]  # the second attempt asked only for the rest
    assert name == "big.bin" and rng.startswith("bytes=") and 0 < int(rng[6:-1]) <= 100_000
    assert not (tmp_path / "big.bin.part").exists()


def test_one_failed_file_keeps_the_others(server, tmp_path):
    root, url, handler = server
    (root / "one.bin").write_bytes(b"1" * 1000)
    spec = {"kind": "urls", "retries": 0, "files": [{"url": f"{url}/one.bin"}, {"url": f"{url}/two.bin"}]}
    with pytest.raises(DownloadError, match="two.bin"):
        fetch_dataset(spec, tmp_path / "raw")
    (root / "two.bin").write_bytes(b"2" * 1000)
    fetch_dataset(spec, tmp_path / "raw")
    assert [r for r in handler.requests if r[0] == "one.bin"] == [("one.bin", None)]  # not fetched twice


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_archives_writing_outside_the_folder_are_refused(tmp_path, member):
    z = tmp_path / "bad.zip"
    _zip(z, {"ok.txt": b"fine", member: b"evil"})
    with pytest.raises(DownloadError, match="outside"):
        safe_extract(z, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "ok.txt").exists()  # nothing unpacked


def test_archive_with_a_link_is_refused(tmp_path):
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DownloadError, match="symbolic link"):
        safe_extract(z, tmp_path / "out")


def test_kaggle_progress_is_streamed_and_the_version_pinned(tmp_path, monkeypatch):
    """The kaggle command (here a stand-in script on PATH: the real one needs kaggle.com) is
    called with the pinned version, its output reaches the log as it comes, its zips unpack."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    payload = tmp_path / "payload.zip"
    _zip(payload, {"chest_xray/train/NORMAL/IM-0001-0001.jpeg": b"jpeg"})
    kaggle = bin_dir / "kaggle"
    kaggle.write_text(f"""#!/bin/sh
echo "$@" > {tmp_path}/args
echo "Downloading chest-xray-pneumonia.zip"
echo "100%|##########| 2.29G/2.29G"
out=""; while [ $# -gt 0 ]; do [ "$1" = "-p" ] && out="$2"; shift; done
cp {payload} "$out/chest-xray-pneumonia.zip"
""")
    kaggle.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    log = tmp_path / "log.txt"
    from medrepro.io import logging_to

    with logging_to(log):
        fetch_dataset({"kind": "kaggle_dataset", "slug": "paultimothymooney/chest-xray-pneumonia", "version": 2},
                      tmp_path / "raw")
    assert (tmp_path / "args").read_text().split()[:4] == ["datasets", "download", "-d",
                                                            "paultimothymooney/chest-xray-pneumonia/2"]
    assert "100%|##########| 2.29G/2.29G" in log.read_text()
    assert (tmp_path / "raw" / "chest_xray" / "train" / "NORMAL" / "IM-0001-0001.jpeg").read_bytes() == b"jpeg"
    assert not list((tmp_path / "raw").glob("*.zip"))
    assert "chest_xray/train/NORMAL/IM-0001-0001.jpeg" in (tmp_path / "raw.sha256").read_text()


def test_missing_kaggle_command_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DownloadError, match=r'pip install -e "\.\[download\]"'):
        fetch_dataset({"kind": "kaggle_competition", "slug": "rsna-pneumonia-detection-challenge"}, tmp_path / "raw")
