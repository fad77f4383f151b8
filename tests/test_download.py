"""Downloads a user can trust, against a real HTTP server on loopback serving archives the tests
make: a good one, a corrupt one, one cut off half-way (resumed), a malicious one; the SHA-256
manifest; and the real kaggle command against kaggle.com's API on loopback (behind an HTTPS proxy):
its version pin, its progress, a download killed half-way and resumed."""
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


class KaggleHandler(http.server.BaseHTTPRequestHandler):
    """kaggle.com as the real ``kaggle`` command meets it, behind an HTTPS proxy on loopback:
    ``CONNECT`` is answered with TLS under a certificate the test makes (for api.kaggle.com and
    storage.googleapis.com); the API's POSTs get dataset metadata (``{}``) and, for the download,
    a redirect to the archive's signed storage URL, which serves the zip with the ETag,
    Last-Modified and ``Accept-Ranges`` kaggle 2.x resumes by.  With ``stall`` set, the zip asked
    for without a Range stops after ``stall`` bytes and hangs (a transfer the run is killed in)."""

    protocol_version = "HTTP/1.1"
    ctx = payload = None
    stall: int | None = None
    calls: list = []
    release = threading.Event()

    def do_CONNECT(self):  # noqa: N802 - http.server's name
        self.send_response(200, "Connection Established")
        self.end_headers()
        type(self)(self.ctx.wrap_socket(self.connection, server_side=True), self.client_address, self.server)
        self.close_connection = True

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).calls.append((self.path.rsplit("/", 1)[-1], body.decode(), None))
        if self.path.endswith("/DownloadDataset"):
            self.send_response(302)
            self.send_header("Location", "https://storage.googleapis.com/kaggle-data-sets/17810/23812/bundle/"
                                         "archive.zip?X-Goog-Signature=0123")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(200, b"{}", "application/json")

    def do_GET(self):  # noqa: N802 - the signed storage URL
        rng = self.headers.get("Range")
        type(self).calls.append(("storage", self.path, rng))
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        data = self.payload[start:]
        self.send_response(206 if rng else 200)
        for k, v in (("Content-Type", "application/zip"), ("Content-Length", len(data)), ("Accept-Ranges", "bytes"),
                     ("ETag", '"v2"'), ("Last-Modified", "Mon, 02 Nov 2026 10:00:00 GMT")):
            self.send_header(k, str(v))
        self.end_headers()
        if self.stall and not rng:
            self.wfile.write(data[: self.stall])
            self.wfile.flush()
            self.release.wait(60)
            self.close_connection = True
            return
        self.wfile.write(data)

    def _send(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def kaggle_com(tmp_path, monkeypatch):
    """The real kaggle command (the download extra), talking to :class:`KaggleHandler`."""
    import shutil
    import ssl
    import subprocess

    from medrepro.download import kaggle_command

    if kaggle_command() is None or shutil.which("openssl") is None:
        pytest.skip("needs the kaggle command (pip install -e '.[download]') and openssl")
    tls = tmp_path / "tls"
    tls.mkdir()
    names = "subjectAltName=DNS:api.kaggle.com,DNS:storage.googleapis.com"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=api.kaggle.com", "-addext", names, "-keyout", str(tls / "key.pem"), "-out",
                    str(tls / "cert.pem")], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls / "cert.pem", tls / "key.pem")

    class Handler(KaggleHandler):
        calls, release = [], threading.Event()

    Handler.ctx = ctx
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    home = tmp_path / "home"
    home.mkdir()
    for k in [k for k in os.environ if k.startswith("KAGGLE_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(home))  # no credentials: kaggle 2.x downloads public datasets without a login
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls / "cert.pem"))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    yield Handler
    Handler.release.set()
    httpd.shutdown()


KERMANY_SPEC = {"kind": "kaggle_dataset", "slug": "paultimothymooney/chest-xray-pneumonia", "version": 2}


def test_the_kaggle_command_downloads_the_pinned_version_and_its_progress_reaches_the_log(kaggle_com, tmp_path):
    payload = tmp_path / "payload.zip"
    _zip(payload, {"chest_xray/train/NORMAL/IM-0001-0001.jpeg": b"jpeg"})
    kaggle_com.payload = payload.read_bytes()
    log = tmp_path / "log.txt"
    from medrepro.io import logging_to

    with logging_to(log):
        fetch_dataset(KERMANY_SPEC, tmp_path / "raw")
    want = '{"ownerSlug": "paultimothymooney", "datasetSlug": "chest-xray-pneumonia", "datasetVersionNumber": 2}'
    assert ("DownloadDataset", want, None) in kaggle_com.calls
    text = log.read_text()
    assert "kaggle datasets download -d paultimothymooney/chest-xray-pneumonia/2" in text
    assert "Downloading chest-xray-pneumonia.zip" in text  # the command's own output
    assert (tmp_path / "raw" / "chest_xray" / "train" / "NORMAL" / "IM-0001-0001.jpeg").read_bytes() == b"jpeg"
    assert not list((tmp_path / "raw").glob("*.zip")) and not (tmp_path / "raw.downloads").exists()
    assert "chest_xray/train/NORMAL/IM-0001-0001.jpeg" in (tmp_path / "raw.sha256").read_text()


def test_a_kaggle_download_killed_half_way_resumes_where_it_stopped(kaggle_com, tmp_path):
    """The run is killed (as a job at its time limit would be) after the first MiB of a 3 MiB zip;
    the next run asks kaggle.com for the rest only (HTTP Range from the partial file's size)."""
    import signal
    import subprocess
    import sys
    import time

    payload = tmp_path / "payload.zip"
    files = {f"chest_xray/test/PNEUMONIA/person{i}_virus_{i}.jpeg": os.urandom(1 << 20) for i in range(3)}
    with zipfile.ZipFile(payload, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    kaggle_com.payload, kaggle_com.stall = payload.read_bytes(), 3 << 19  # 1.5 MiB, then nothing
    code = (f"from medrepro.download import fetch_dataset; fetch_dataset({KERMANY_SPEC!r}, {str(tmp_path / 'raw')!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    part = tmp_path / "raw.downloads" / "chest-xray-pneumonia.zip"
    deadline = time.monotonic() + 120
    while not (part.is_file() and part.stat().st_size >= 1 << 20) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kaggle_com.release.set()
    have = part.stat().st_size
    assert have >= 1 << 20 and not (tmp_path / "raw").exists()  # nothing looks finished

    fetch_dataset(KERMANY_SPEC, tmp_path / "raw")
    assert kaggle_com.calls[-1][0] == "storage" and kaggle_com.calls[-1][2] == f"bytes={have}-"
    for name, data in files.items():
        assert (tmp_path / "raw" / name).read_bytes() == data, name
    verify_checksums(tmp_path / "raw", tmp_path / "raw.sha256")
    assert not (tmp_path / "raw.downloads").exists()


def test_missing_kaggle_command_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # an environment without the download extra
    with pytest.raises(DownloadError, match=r'pip install -e "\.\[download\]"'):
        fetch_dataset({"kind": "kaggle_competition", "slug": "rsna-pneumonia-detection-challenge"}, tmp_path / "raw")
