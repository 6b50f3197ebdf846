"""Data identity: the tokenizer and the val shards are the ones the shards' record names.

The record lies beside the data: `manifest.json` in the shard folder (written by
golf_jax.data.prepare and the default corpus: the tokenizer's and every shard's sha256),
or `download.json` two folders up (golf_jax.data.download's layout,
OUT/datasets/fineweb10B_<variant>/: the hub's sha256 or git blob id of every file). Another
tokenizer of the same size would count other bytes per token, and a rewritten val shard
would score, both silently; each is one line naming the file instead.

A repository tool (golf_jax/submission/modules.py NOT_PACKED): the training and evaluate commands check
the data before they compile; a packed submission runs on data checked so.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from golf_jax.data.shards import sha256_file
from golf_jax.core.errors import UserError


def git_blob_id(path: Path) -> str:
    """The git object id of a file's content: what the hub records for files not in LFS."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_of(data_dir: Path) -> tuple[Path, dict] | None:
    """(record file, {"tokenizer": hash entry or None, "val": {shard name: hash entry}}) of the
    shards in `data_dir`, or None where no record lies beside them. A hash entry is
    {"sha256": ...} and/or {"blob_id": ...}, plus "name"."""
    manifest, downloaded = data_dir / "manifest.json", data_dir.parent.parent / "download.json"
    path = manifest if manifest.is_file() else downloaded if downloaded.is_file() else None
    if path is None:
        return None
    try:
        raw = json.loads(path.read_text())
        if "files" in raw:  # download.json: {path under its folder: {"sha256" (LFS files), "blob_id"}}
            files = {(path.parent / name).resolve(): {**e, "name": name} for name, e in raw["files"].items()}
            mine = {p.name: e for p, e in files.items() if p.parent == data_dir.resolve()}
            tokenizers = [e for p, e in files.items() if p.suffix == ".model"]
            tokenizer = tokenizers[0] if len(tokenizers) == 1 else None
        else:  # manifest.json
            built = raw.get("tokenizer")
            tokenizer = {**built, "name": built.get("path") or built.get("file")} if isinstance(built, dict) else None
            shards = ((raw.get("splits") or {}).get("val") or {}).get("shards") or []
            mine = {s["name"]: s for s in shards}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: unreadable record of the data ({type(e).__name__}: {e}); restore it (rerun "
                        "golf_jax.data.prepare or golf_jax.data.download)") from e
    val = {n: e for n, e in mine.items() if n.startswith("fineweb_val_") and not n.startswith("fineweb_val_bytes")}
    return path, {"tokenizer": tokenizer if tokenizer and ("sha256" in tokenizer or "blob_id" in tokenizer) else None,
                  "val": val}


def matches(path: Path, entry: dict) -> tuple[bool, str]:
    """(does `path` hold the recorded bytes?, the recorded hash, shortened)."""
    if entry.get("sha256"):
        return sha256_file(path) == entry["sha256"], f"sha256 {entry['sha256'][:12]}..."
    return git_blob_id(path) == entry["blob_id"], f"git blob id {entry['blob_id'][:12]}..."


def check(data_dir: Path, tokenizer_path: Path) -> str:
    """Raise a UserError where the tokenizer or a val shard is not what the record says; returns
    what was checked (for the log)."""
    found = record_of(Path(data_dir))
    if found is None:
        return f"no manifest.json or download.json beside {data_dir}: tokenizer and val shards not checked"
    path, record = found
    tok = record["tokenizer"]
    if tok is not None:
        ok, want = matches(Path(tokenizer_path), tok)
        if not ok:
            raise UserError(f"data.tokenizer={tokenizer_path} is not the tokenizer the shards in {data_dir} were "
                            f"built with ({tok['name']}, {want} in {path.name}); pass that one")
    unrecorded = [f.name for f in sorted(Path(data_dir).glob("fineweb_val_*.bin"))
                  if not f.name.startswith("fineweb_val_bytes") and f.name not in record["val"]]
    if record["val"] and unrecorded:
        raise UserError(f"{Path(data_dir) / unrecorded[0]}: a val shard that {path} does not record; remove it, or "
                        "rebuild the shards (golf_jax.data.prepare)")
    for name, entry in sorted(record["val"].items()):
        shard = Path(data_dir) / name
        if shard.is_file():
            ok, want = matches(shard, entry)
            if not ok:
                raise UserError(f"{shard}: not the val shard recorded in {path} ({want}): it was changed or "
                                "damaged since; rebuild it (golf_jax.data.prepare) or fetch it again "
                                "(golf_jax.data.download)")
    return f"tokenizer and {len(record['val'])} val shards match {path}"
