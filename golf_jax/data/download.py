"""Fetch the challenge's cached FineWeb shards and tokenizer from the Hugging Face Hub:
`python -m golf_jax.data.download --variant=sp1024 --train_shards=80 [--out=DIR]`.

The dataset repositories and layout of upstream `data/cached_challenge_fineweb.py`: under
the remote root `datasets/`, `manifest.json` gives each variant's shard counts and
tokenizer files, the shards are `datasets/fineweb10B_<variant>/fineweb_{val,train}_%06d.bin`
and the tokenizers `tokenizers/...`; they land under --out with the root stripped, as
upstream's `data/`. sp1024 comes from willdepueoai/parameter-golf (the challenge's own
export), sp8192 from kevclark/parameter-golf (the SP8192 records' data, PR #1394).

Everything is read at one commit (the revision is resolved first), so the manifest, the
hub's metadata and the files agree, and `download.json` records which. The transfers are
`huggingface_hub.hf_hub_download`'s (its cache; a transfer cut mid-file continues from what
it had written, with a Range request; Xet where the hub offers it). hf_hub_download checks sizes only, so each
file is checked here against the hub's metadata (paths-info: size, and the LFS sha256 or
the git blob id); a copy that does not match is deleted and fetched once more, then
refused. Shard headers are checked with golf_jax/data/shards.py and the tokenizer's
vocabulary with golf_jax/data/tokenizer.py. A rerun verifies what is there and fetches
only what is missing or wrong. Never packed (golf_jax/submission/modules.py NOT_PACKED).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from absl import flags

from golf_jax.core import cli
from golf_jax.core.errors import UserError
from golf_jax.data.identity import git_blob_id
from golf_jax.data.shards import ShardError, read_header, sha256_file
from golf_jax.data.tokenizer import load_tokenizer
from golf_jax.core.paths import cache_dir

VARIANTS = {"sp1024": ("willdepueoai/parameter-golf", 1024), "sp8192": ("kevclark/parameter-golf", 8192)}
REMOTE_ROOT = "datasets"  # upstream MATCHED_FINEWEB_REMOTE_ROOT_PREFIX
DEFAULT_ENDPOINT = "https://huggingface.co"
PATHS_PER_REQUEST = 100  # paths-info requests are kept small


class DownloadError(RuntimeError):
    """The hub, the manifest or a downloaded file is not what the download needs."""


@dataclass(frozen=True)
class Network:
    """How long to wait for the hub, and how often to try again: a server that accepts the
    connection but never answers ends the download within tries × (connect + read) + backoff."""

    connect_timeout: float = 10.0  # seconds to connect (--connect_timeout)
    read_timeout: float = 15.0  # seconds without a byte from the server (--read_timeout)
    tries: int = 3  # attempts per request (--tries), 2 s, 4 s, ... apart
    backoff: float = 2.0

    def call(self, what: str, endpoint_: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), tried again after a network error; the last error as a DownloadError
        naming the endpoint and the settings."""
        for attempt in range(1, self.tries + 1):
            try:
                return fn(*args, **kwargs)
            except DownloadError:
                raise
            except Exception as e:  # noqa: BLE001 (httpx's, huggingface_hub's and OSError's errors alike)
                if _not_network(e) or attempt == self.tries:
                    raise DownloadError(
                        f"{what} from {endpoint_} failed after {attempt} tr{'y' if attempt == 1 else 'ies'} "
                        f"({type(e).__name__}: {' '.join(str(e).split())[:300]}); check the network and HF_ENDPOINT, "
                        f"or raise --connect_timeout ({self.connect_timeout:g} s), --read_timeout "
                        f"({self.read_timeout:g} s) or --tries ({self.tries})") from e
                wait = self.backoff * 2 ** (attempt - 1)
                print(f"{what}: {type(e).__name__} from {endpoint_}; trying again in {wait:g} s "
                      f"({attempt}/{self.tries})", file=sys.stderr, flush=True)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def install(self) -> None:
        """Give huggingface_hub's HTTP client and downloads these timeouts (its API calls have none)."""
        from huggingface_hub import constants, set_client_factory
        from huggingface_hub.utils import _http

        bounds = {"connect": self.connect_timeout, "read": self.read_timeout, "write": self.read_timeout,
                  "pool": self.read_timeout}

        def bounded(request) -> None:  # a call made with timeout=None (most of HfApi's) gets these too
            given = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {k: given.get(k) or v for k, v in bounds.items()}

        def client():
            c = _http.default_client_factory()
            c.event_hooks["request"] = [*c.event_hooks["request"], bounded]
            return c

        set_client_factory(client)
        constants.HF_HUB_DOWNLOAD_TIMEOUT = self.read_timeout
        constants.HF_HUB_ETAG_TIMEOUT = self.read_timeout


def _not_network(e: BaseException) -> bool:
    """An error that trying again cannot fix: the hub answered (a 4xx status: no such repository, file or
    revision), or our own (a ValueError, a KeyError)."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(status, int):
        return 400 <= status < 500 and status not in (408, 429)
    return isinstance(e, (ValueError, KeyError, TypeError, AttributeError)) and not isinstance(e, OSError)


@dataclass(frozen=True)
class HubFile:
    """A file of the repository at the pinned commit, as the hub's paths-info describes it."""

    path: str
    size: int
    blob_id: str  # git object id of the file (of its LFS pointer for LFS files)
    sha256: str | None  # LFS files: sha256 of the content


def endpoint() -> str:
    """HF_ENDPOINT, read at call time (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def mismatch(local: Path, remote: HubFile) -> str | None:
    """None when `local` holds exactly the hub's bytes of `remote`, else what differs."""
    if not local.is_file():
        return "no file"
    size = local.stat().st_size
    if size != remote.size:
        return f"{size:,} bytes where the hub has {remote.size:,}"
    kind, want = ("sha256", remote.sha256) if remote.sha256 else ("git blob id", remote.blob_id)
    got = sha256_file(local) if remote.sha256 else git_blob_id(local)
    return None if got == want else f"{kind} {got} where the hub has {want}"


def plan(manifest: dict, variant: str, train_shards: int, root: str = REMOTE_ROOT) -> list[str]:
    """Repository paths to fetch: every val shard, the first `train_shards` train shards, the tokenizer."""
    name = f"fineweb10B_{variant}"
    entry = next((d for d in manifest.get("datasets", []) if d.get("name") == name), None)
    if entry is None:
        have = [d.get("name") for d in manifest.get("datasets", [])]
        raise DownloadError(f"{root}/manifest.json has no dataset {name} (it has {have}); pass the --repo_id that "
                            f"holds {variant}")
    stats = entry.get("stats") or {}
    n_train, n_val = int(stats.get("files_train", 0)), int(stats.get("files_val", 0))
    if not 0 <= train_shards <= n_train:
        raise DownloadError(f"--train_shards={train_shards}: {name} has {n_train} train shards; ask for 0..{n_train}")
    tok = next((t for t in manifest.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name")), None)
    files = [tok[k] for k in ("model_path", "vocab_path", "path") if tok and tok.get(k)]
    if not files:
        raise DownloadError(f"{root}/manifest.json names no tokenizer files for {name} "
                            f"(tokenizer {entry.get('tokenizer_name')!r})")
    prefix = f"{root}/datasets/{name}"
    return ([f"{prefix}/fineweb_val_{i:06d}.bin" for i in range(n_val)]
            + [f"{prefix}/fineweb_train_{i:06d}.bin" for i in range(train_shards)]
            + [f"{root}/{f}" for f in files])


def local_path(out: Path, remote: str, root: str = REMOTE_ROOT) -> Path:
    """datasets/datasets/X/f.bin -> OUT/datasets/X/f.bin (upstream's data/ layout)."""
    return out.joinpath(*Path(remote).relative_to(root).parts)


class Hub:
    """One repository at one commit: its metadata and its files, through huggingface_hub."""

    def __init__(self, repo_id: str, revision: str, cache: str | None, net: Network = Network()) -> None:
        try:
            from huggingface_hub import HfApi
        except ImportError as e:
            raise ImportError("golf_jax.data.download needs huggingface_hub: pip install -e '.[tools]'") from e

        self.repo_id, self.cache, self.endpoint, self.net = repo_id, cache, endpoint(), net
        net.install()
        self.api = HfApi(endpoint=self.endpoint)
        try:
            self.commit = net.call(f"dataset {repo_id}@{revision}", self.endpoint, self.api.dataset_info, repo_id,
                                   revision=revision).sha
        except DownloadError as e:
            raise DownloadError(f"{e}; check --repo_id and --revision too") from e.__cause__
        if not self.commit:
            raise DownloadError(f"{self.endpoint} gave no commit for {repo_id}@{revision}")

    def describe(self, paths: Sequence[str]) -> dict[str, HubFile]:
        """{path: HubFile} from the hub's paths-info; a path the hub does not have is an error."""
        found: dict[str, HubFile] = {}
        for i in range(0, len(paths), PATHS_PER_REQUEST):
            for f in self.net.call("paths-info", self.endpoint, self.api.get_paths_info, self.repo_id,
                                   list(paths[i:i + PATHS_PER_REQUEST]), repo_type="dataset", revision=self.commit):
                if hasattr(f, "blob_id"):  # a RepoFile (folders have a tree_id)
                    found[f.path] = HubFile(f.path, int(f.size), f.blob_id, f.lfs.sha256 if f.lfs else None)
        missing = [p for p in paths if p not in found]
        if missing:
            raise DownloadError(f"{self.repo_id}@{self.commit[:12]} has no {missing[0]} ({len(missing)} files "
                                "missing); the manifest and the repository disagree")
        return found

    def fetch(self, remote: HubFile, dest: Path) -> str:
        """Put the verified bytes of `remote` at `dest`: "present" (already there) or "fetched"."""
        if mismatch(dest, remote) is None:
            return "present"
        from huggingface_hub import hf_hub_download

        for attempt in range(2):
            cached = Path(self.net.call(remote.path, self.endpoint, hf_hub_download, self.repo_id, remote.path,
                                        repo_type="dataset", revision=self.commit, cache_dir=self.cache,
                                        endpoint=self.endpoint, etag_timeout=self.net.read_timeout))
            why = mismatch(cached, remote)
            if why is None:
                break
            blob = cached.resolve()
            cached.unlink(missing_ok=True)  # never reuse a copy that does not match: the snapshot link and its blob
            blob.unlink(missing_ok=True)
        else:
            raise DownloadError(f"{remote.path}: the downloaded copy has {why}, on both attempts (deleted); "
                                f"the hub's file or the connection to {self.endpoint} is corrupt, rerun later")
        place(cached.resolve(), dest)
        return "fetched"


def place(src: Path, dest: Path) -> None:
    """Hard-link (else copy) `src` to `dest` via a temp name, so `dest` is never half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def check(path: Path, vocab_size: int) -> None:
    """A shard's header against its size; a tokenizer model's vocabulary against the variant's."""
    if path.suffix == ".bin":
        read_header(path)
    elif path.suffix == ".model":
        load_tokenizer(path, vocab_size)


def download(variant: str, train_shards: int, out: Path, repo_id: str | None = None, revision: str = "main",
             cache: str | None = None, log=print, net: Network = Network()) -> dict:
    """Fetch and verify a variant into `out`; returns what download.json records."""
    default_repo, vocab_size = VARIANTS[variant]
    hub = Hub(repo_id or default_repo, revision, cache, net)
    log(f"{hub.repo_id}@{hub.commit} from {hub.endpoint}")
    manifest_path = f"{REMOTE_ROOT}/manifest.json"
    hub.fetch(hub.describe([manifest_path])[manifest_path], local_path(out, manifest_path))
    manifest = json.loads(local_path(out, manifest_path).read_text(encoding="utf-8"))
    paths = plan(manifest, variant, train_shards)
    files = hub.describe(paths)
    for i, p in enumerate(paths):
        dest = local_path(out, p)
        status = hub.fetch(files[p], dest)
        check(dest, vocab_size)
        log(f"[{i + 1}/{len(paths)}] {dest}: {status}, {files[p].size:,} B verified")
    record = {"repo_id": hub.repo_id, "revision": revision, "commit": hub.commit, "endpoint": hub.endpoint,
              "variant": variant, "train_shards": train_shards,
              "files": {str(local_path(out, p).relative_to(out)): {"size": files[p].size, "sha256": files[p].sha256,
                                                                  "blob_id": files[p].blob_id} for p in paths}}
    (out / "download.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


FLAGS = cli.flag_values()
_VARIANT = flags.DEFINE_enum("variant", "sp1024", sorted(VARIANTS), "The tokenizer variant.", flag_values=FLAGS)
_TRAIN_SHARDS = flags.DEFINE_integer("train_shards", 80, "The first N train shards (upstream default 80).",
                                     flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Destination (default: build/challenge_data).", flag_values=FLAGS)
_REPO_ID = flags.DEFINE_string("repo_id", None, "Dataset repository (default: the variant's, see above).",
                               flag_values=FLAGS)
_REVISION = flags.DEFINE_string("revision", "main", "Branch, tag or commit of the repository.", flag_values=FLAGS)
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "huggingface_hub cache (default: its own, HF_HUB_CACHE).",
                                 flag_values=FLAGS)
_CONNECT_TIMEOUT = flags.DEFINE_float("connect_timeout", Network.connect_timeout, "Seconds to connect.",
                                      flag_values=FLAGS)
_READ_TIMEOUT = flags.DEFINE_float("read_timeout", Network.read_timeout, "Seconds to wait for the server's next "
                                   "bytes.", flag_values=FLAGS)
_TRIES = flags.DEFINE_integer("tries", Network.tries, "Attempts per request, with backoff.", flag_values=FLAGS)


def _main(args: list[str]) -> int:
    cli.positionals(args)
    connect, read, tries = _CONNECT_TIMEOUT.value, _READ_TIMEOUT.value, _TRIES.value
    if not (0 < connect < float("inf") and 0 < read < float("inf") and tries >= 1):
        raise UserError("--connect_timeout and --read_timeout take seconds > 0, --tries a count >= 1")
    out = Path(_OUT.value) if _OUT.value else cache_dir() / "challenge_data"
    if _TRAIN_SHARDS.value < 0:
        raise UserError(f"--train_shards={_TRAIN_SHARDS.value}: use 0 or more")
    try:
        from golf_jax.core.outputs import check_output

        check_output(out, "--out", folder=True)  # before the network
        net = Network(connect, read, tries)
        record = download(_VARIANT.value, _TRAIN_SHARDS.value, out, _REPO_ID.value, _REVISION.value,
                          _CACHE_DIR.value, net=net)
    except UserError:
        raise
    except (DownloadError, ShardError, ValueError, OSError) as e:
        raise UserError(str(e)) from e
    data_dir = out / "datasets" / f"fineweb10B_{_VARIANT.value}"
    model = next((f" --config.data.tokenizer={out / f}" for f in record["files"] if f.endswith(".model")), "")
    print(f"ready: --config.data.source=dir --config.data.dir={data_dir}{model}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
