"""`python -m golf_jax.data.download` against a local stand-in for the Hugging Face Hub.

The server on 127.0.0.1 answers the calls huggingface_hub makes for the download: the
revision (GET /api/datasets/{repo}/revision/{rev}), paths-info (POST .../paths-info/{rev})
and the files (HEAD / GET /datasets/{repo}/resolve/{rev}/{path}, with Range). It can cut
a transfer halfway (once) and serve corrupted bytes, to test the resume and the hashes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from golf_jax.data import download
from golf_jax.data.shards import read_shard
from golf_jax.data.prepare import write_shard

REPO = "someone/parameter-golf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub(ThreadingHTTPServer):
    """files: {repo path: bytes}; lfs: the paths stored in LFS; cut / corrupt: fault injection."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes], lfs: set[str]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.lfs = files, lfs
        self.cut: set[str] = set()  # the first GET of these stops 1,000 bytes short of the end
        self.corrupt: dict[str, int] = {}  # path -> how many more GETs serve a flipped byte
        self.stall: set[str] = set()  # a GET of these gets no answer for 3 s, then a closed connection
        self.requests: list[tuple[str, str, str | None]] = []  # (method, repo path or api, Range)

    def info(self, path: str) -> dict:
        data = self.files[path]
        entry = {"type": "file", "path": path, "size": len(data), "oid": _blob_id(data)}
        if path in self.lfs:
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeHub

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _file(self, head: bool):
        prefix = f"/datasets/{REPO}/resolve/{COMMIT}/"
        path = urllib.parse.unquote(self.path.split("?")[0])
        if not path.startswith(prefix) or path[len(prefix):] not in self.server.files:
            return self._send(404, b"{}", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, head)
        name = path[len(prefix):]
        data = self.server.files[name]
        info = self.server.info(name)
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{info["lfs"]["oid"] if "lfs" in info else info["oid"]}"',
                   "Accept-Ranges": "bytes"}
        self.server.requests.append((self.command, name, self.headers.get("Range")))
        if head:
            return self._send(200, data, headers, head=True)
        if name in self.server.stall:
            time.sleep(3)
            self.close_connection = True
            return
        if self.server.corrupt.get(name, 0) > 0:
            self.server.corrupt[name] -= 1
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if name in self.server.cut:
            self.server.cut.discard(name)
            self.send_response(status)
            for k, v in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[:-1000])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, body, headers)

    def do_HEAD(self):
        self._file(head=True)

    def do_GET(self):
        if self.path.startswith(f"/api/datasets/{REPO}/revision/"):
            self.server.requests.append(("GET", "revision", None))
            return self._send(200, json.dumps({"id": REPO, "sha": COMMIT}).encode(),
                              {"Content-Type": "application/json"})
        self._file(head=False)

    def do_POST(self):
        if not self.path.startswith(f"/api/datasets/{REPO}/paths-info/{COMMIT}"):
            return self._send(404, b"{}")
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.server.requests.append(("POST", "paths-info", None))
        body = [self.server.info(p) for p in form.get("paths", []) if p in self.server.files]
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


MANIFEST = {
    "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
                  "stats": {"files_train": 3, "files_val": 1}}],
    "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model",
                    "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"}],
}
SHARDS = "datasets/datasets/fineweb10B_sp1024"


@pytest.fixture
def hub(shared_data, tmp_path, monkeypatch):
    """A FakeHub with an sp1024 export (1 val + 3 train shards, the real tokenizer) behind HF_ENDPOINT.

    Train shard 1 is 13 MB: huggingface_hub writes in 10 MB chunks, so a transfer cut
    after the first chunk has something to resume from.
    """
    files = {"datasets/manifest.json": json.dumps(MANIFEST).encode()}
    rng = np.random.default_rng(0)
    for name, n in (("fineweb_val_000000.bin", 3000), ("fineweb_train_000000.bin", 3000),
                    ("fineweb_train_000001.bin", 6_500_000), ("fineweb_train_000002.bin", 3000)):
        write_shard(tmp_path / name, rng.integers(0, 1024, n))
        files[f"{SHARDS}/{name}"] = (tmp_path / name).read_bytes()
    for suffix in ("model", "vocab"):
        files[f"datasets/tokenizers/fineweb_1024_bpe.{suffix}"] = \
            (shared_data / "tokenizers" / f"fineweb_1024_bpe.{suffix}").read_bytes()
    server = FakeHub(files, lfs={p for p in files if p.endswith((".bin", ".model"))})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    yield server
    server.shutdown()
    server.server_close()


def _argv(tmp_path, shards: int = 2) -> list[str]:
    return ["--variant", "sp1024", "--train_shards", str(shards), "--repo_id", REPO, "--out", str(tmp_path / "data"),
            "--cache_dir", str(tmp_path / "hfcache")]


def test_download_verifies_resumes_a_cut_transfer_and_reruns_from_what_is_there(hub, tmp_path, capsys):
    hub.cut.add(f"{SHARDS}/fineweb_train_000001.bin")
    assert download.main(_argv(tmp_path)) == 0
    out = tmp_path / "data"
    wanted = [f"{SHARDS}/fineweb_val_000000.bin", f"{SHARDS}/fineweb_train_000000.bin",
              f"{SHARDS}/fineweb_train_000001.bin", "datasets/tokenizers/fineweb_1024_bpe.model",
              "datasets/tokenizers/fineweb_1024_bpe.vocab", "datasets/manifest.json"]
    for p in wanted:  # upstream's data/ layout: the remote root stripped
        assert (out / p.removeprefix("datasets/")).read_bytes() == hub.files[p], p
    assert not (out / "datasets/fineweb10B_sp1024/fineweb_train_000002.bin").exists()  # --train_shards 2
    assert read_shard(out / "datasets/fineweb10B_sp1024/fineweb_train_000001.bin").size == 6_500_000
    # The cut transfer was continued from what had been written, by a Range request.
    gets = [r[2] for r in hub.requests if r[:2] == ("GET", f"{SHARDS}/fineweb_train_000001.bin")]
    assert len(gets) == 2 and gets[0] is None and 0 < int(gets[1].removeprefix("bytes=").rstrip("-")) < 13_000_000
    record = json.loads((out / "download.json").read_text())
    assert record["commit"] == COMMIT and record["endpoint"] == download.endpoint()
    assert record["files"]["datasets/fineweb10B_sp1024/fineweb_val_000000.bin"]["sha256"] == \
        hashlib.sha256(hub.files[f"{SHARDS}/fineweb_val_000000.bin"]).hexdigest()
    assert f"--config.data.dir={out / 'datasets/fineweb10B_sp1024'}" in capsys.readouterr().out

    # A rerun re-verifies and fetches nothing; a file cut short at the destination (a new file:
    # the downloaded one is a hard link to the cache's blob) comes back whole from the cache.
    shard = out / "datasets/fineweb10B_sp1024/fineweb_train_000000.bin"
    data = shard.read_bytes()
    shard.unlink()
    shard.write_bytes(data[:1500])
    hub.requests.clear()
    assert download.main(_argv(tmp_path)) == 0
    assert shard.read_bytes() == hub.files[f"{SHARDS}/fineweb_train_000000.bin"]
    assert not [r for r in hub.requests if r[0] == "GET" and r[1] not in ("revision",)]


def test_download_refuses_a_corrupted_file_after_one_retry(hub, tmp_path, capsys):
    bad, flaky = f"{SHARDS}/fineweb_train_000001.bin", f"{SHARDS}/fineweb_train_000000.bin"
    hub.corrupt[flaky] = 1  # once: the second download is good
    hub.corrupt[bad] = 99  # always
    assert download.main(_argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"{bad}: the downloaded copy has sha256" in err and hashlib.sha256(hub.files[bad]).hexdigest() in err
    out = tmp_path / "data/datasets/fineweb10B_sp1024"
    assert (out / "fineweb_train_000000.bin").read_bytes() == hub.files[flaky]  # re-fetched and verified
    assert not (out / "fineweb_train_000001.bin").exists()
    blobs = list((tmp_path / "hfcache").rglob("blobs/*"))  # the bad copy is not kept in the cache either
    assert all(b.read_bytes() != hub.files[bad][:-1] + bytes([hub.files[bad][-1] ^ 0xFF]) for b in blobs)


def test_plan_follows_the_manifest_and_names_what_is_wrong():
    paths = download.plan(MANIFEST, "sp1024", 2)
    assert paths == [f"{SHARDS}/fineweb_val_000000.bin", f"{SHARDS}/fineweb_train_000000.bin",
                     f"{SHARDS}/fineweb_train_000001.bin", "datasets/tokenizers/fineweb_1024_bpe.model",
                     "datasets/tokenizers/fineweb_1024_bpe.vocab"]
    with pytest.raises(download.DownloadError, match="has 3 train shards"):
        download.plan(MANIFEST, "sp1024", 4)
    with pytest.raises(download.DownloadError, match="no dataset fineweb10B_sp8192"):
        download.plan(MANIFEST, "sp8192", 1)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_blob_id_is_gits(tmp_path):
    f = tmp_path / "x.json"
    f.write_bytes(b'{"a": 1}\n')
    want = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert download.git_blob_id(f) == want
    remote = download.HubFile("x.json", f.stat().st_size, want, None)
    assert download.mismatch(f, remote) is None
    assert "git blob id" in download.mismatch(f, download.HubFile("x.json", remote.size, "0" * 40, None))
    assert "bytes where the hub has" in download.mismatch(f, download.HubFile("x.json", 3, want, None))


@pytest.mark.parametrize("stalls", ["revision", "file"])
def test_a_server_that_never_answers_fails_fast_naming_the_endpoint_and_the_settings(hub, tmp_path, capsys,
                                                                                     monkeypatch, stalls):
    """A server that accepts the connection and then says nothing: tried --tries times, each bounded by
    --read_timeout, then one line naming the endpoint and the settings to change."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel accepts the connections; nobody ever answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    if stalls == "revision":
        monkeypatch.setenv("HF_ENDPOINT", url)
    else:  # the metadata answers, then a file's transfer stalls
        hub.stall.add(f"{SHARDS}/fineweb_val_000000.bin")
        url = "127.0.0.1"
    t0 = time.monotonic()
    try:
        rc = download.main(_argv(tmp_path) + ["--read_timeout", "0.5", "--connect_timeout", "0.5", "--tries", "2"])
    finally:
        silent.close()
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - t0 < 30
    (line,) = [x for x in err.splitlines() if x.startswith("error: ")]
    assert "failed after 2 tries" in line and "--read_timeout (0.5 s)" in line and "--tries (2)" in line
    assert url in line
    assert "; trying again in 2 s (1/2)" in err  # the backoff
