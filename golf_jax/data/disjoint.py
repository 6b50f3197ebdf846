"""Train and validation are disjoint: no document is in both (a model trained on val text scores well on it).

`python -m golf_jax.data.prepare` hashes every document it writes (its token ids, BOS
included: blake2b, 8 bytes) into doc_hashes_{val,train}.npy beside the shards, named with
their sha256 in manifest.json, and refuses a --train document that is also a --val one.
`check(data_dir)` verifies a shard folder from those files; without them (shards built
elsewhere, the generated corpus) it hashes the documents of the shards themselves, split
at BOS, when they are small enough to read here. The run records the result in data.json;
the audit's "train/val disjoint" check and `golf_jax.records` read it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from golf_jax.data import shards
from golf_jax.data.shards import sha256_file

BOS_ID = 1
HASH_FILE = "doc_hashes_{split}.npy"
SCAN_LIMIT_TOKENS = 200_000_000  # shards without recorded hashes are hashed here up to this size


def doc_hash(doc: np.ndarray) -> int:
    """A document's hash: blake2b (8 bytes) of its uint16 token ids, BOS included."""
    return int.from_bytes(hashlib.blake2b(np.asarray(doc, "<u2").tobytes(), digest_size=8).digest(), "little")


class DocHashes:
    """The hashes of one split's documents as they are written; `forbid`: another split's,
    which this one may not repeat (train against val). Overlaps are counted per input file."""

    def __init__(self, forbid: np.ndarray | None = None, inputs=()) -> None:
        self.hashes: list[int] = []
        self.forbid = set() if forbid is None else set(forbid.tolist())
        self.inputs = [str(p) for p in inputs]
        self.ends = np.cumsum([Path(p).stat().st_size for p in inputs]) if inputs else np.zeros(0)
        self.overlaps: dict[str, int] = {}

    def add(self, doc: np.ndarray, input_pos: int = 0) -> None:
        h = doc_hash(doc)
        self.hashes.append(h)
        if h in self.forbid:
            k = min(int(np.searchsorted(self.ends, input_pos, side="left")), max(len(self.inputs) - 1, 0))
            name = self.inputs[k] if self.inputs else "?"
            self.overlaps[name] = self.overlaps.get(name, 0) + 1

    def array(self) -> np.ndarray:
        return np.asarray(self.hashes, np.uint64)

    def write(self, out_dir: Path, split: str) -> dict:
        path = Path(out_dir) / HASH_FILE.format(split=split)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, self.array())
        tmp.replace(path)
        return {"file": path.name, "sha256": sha256_file(path), "docs": len(self.hashes),
                "hash": "blake2b-64 of the document's uint16 token ids, BOS included"}


def overlap_error(overlaps: dict[str, int]) -> str:
    n = sum(overlaps.values())
    where = ", ".join(f"{k} ({v:,})" for k, v in overlaps.items())
    return (f"{n:,} --train document(s) are also --val documents (in {where}): a model trained on them is scored "
            "on its own training text. Remove them from --train, or give other --val text")


def _recorded(data_dir: Path, manifest: dict, split: str) -> np.ndarray | None:
    rec = (manifest.get("splits", {}).get(split) or {}).get("doc_hashes")
    if not rec:
        return None
    path = data_dir / rec["file"]
    if not path.is_file() or sha256_file(path) != rec["sha256"]:
        raise ValueError(f"{path}: missing or not the file manifest.json names (sha256); rebuild the shards with "
                         "python -m golf_jax.data.prepare")
    return np.load(path)


def _scanned(data_dir: Path, split: str) -> np.ndarray | None:
    try:
        files = shards.shard_files(str(data_dir / f"fineweb_{split}_*.bin"))
    except shards.ShardError:
        return None
    if sum(f.stat().st_size for f in files) // 2 > SCAN_LIMIT_TOKENS:
        return None
    tokens = np.concatenate([shards.read_shard(f) for f in files])
    starts = np.flatnonzero(tokens == BOS_ID)
    bounds = np.append(starts, len(tokens))
    return np.asarray([doc_hash(tokens[a:b]) for a, b in zip(bounds[:-1], bounds[1:])], np.uint64)


def check(data_dir: str | Path) -> dict:
    """{"status": "disjoint" | "overlap" | "unknown", "overlap": documents in both, "val_docs",
    "train_docs", "from": "manifest" | "shards", "why"} for a shard folder."""
    data_dir = Path(data_dir)
    mpath = data_dir / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.is_file() else {}
    hashes, source = {}, "manifest"
    for split in ("val", "train"):
        h = _recorded(data_dir, manifest, split)
        if h is None:
            h, source = _scanned(data_dir, split), "shards"
        hashes[split] = h
    if hashes["val"] is None or hashes["train"] is None:
        return {"status": "unknown", "overlap": None, "from": None,
                "why": f"{data_dir}: no per-document hashes recorded (manifest.json) and the shards are too large "
                       "to hash here, or a split is missing"}
    both = np.intersect1d(hashes["val"], hashes["train"])
    in_val = int(np.isin(hashes["val"], both).sum())
    return {"status": "overlap" if in_val else "disjoint", "overlap": in_val, "val_docs": len(hashes["val"]),
            "train_docs": len(hashes["train"]), "from": source,
            "why": f"{in_val:,} of {len(hashes['val']):,} val documents are also train documents" if in_val else
                   f"none of {len(hashes['val']):,} val documents is among {len(hashes['train']):,} train documents"}
