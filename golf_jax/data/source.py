"""Where a run's data comes from: the shard folder, the tokenizer, and the val stream."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from golf_jax.data import shards
from golf_jax.data.shards import sha256_file
from golf_jax.data.tokenizer import ByteLUT, build_byte_luts, is_caseops_tokenizer
from golf_jax.core.errors import UserError


# data.source: "default" is the corpus the project generates (golf_jax/data/synthetic.py), so a fresh
# clone runs; "dir" reads the shards in data.dir with the tokenizer data.tokenizer.
SOURCES = ("default", "dir")


def check_source(cfg) -> None:
    """data.source is one of SOURCES (pipeline.check_config, and resolve_data in a packed run)."""
    if cfg.data.source not in SOURCES:
        raise UserError(f"data.source={cfg.data.source!r}: use one of {', '.join(map(repr, SOURCES))}")


def resolve_data(cfg) -> tuple[Path, Path]:
    """The shard directory and tokenizer of the run, absolute (building the default corpus if asked)."""
    check_source(cfg)
    if cfg.data.source == "default":  # imported on its branch only: golf_jax/submission/modules.py GATES
        from golf_jax.data.synthetic import ensure_default_corpus

        corpus = ensure_default_corpus()
        if corpus.vocab_size != cfg.model.vocab_size:
            raise UserError(
                f"the default corpus has vocab {corpus.vocab_size} but model.vocab_size="
                f"{cfg.model.vocab_size}; pass --config.model.vocab_size={corpus.vocab_size}"
            )
        return corpus.data_dir.resolve(), corpus.tokenizer_path.resolve()
    if not cfg.data.dir or not cfg.data.tokenizer:
        raise UserError("data.source='dir' needs data.dir (shard folder) and data.tokenizer (.model file)")
    return Path(cfg.data.dir).resolve(), Path(cfg.data.tokenizer).resolve()


def absolute_paths(cfg):
    """A copy of cfg with data.dir and data.tokenizer absolute, resolved from the working
    directory as the run reads them (so a run dir's config.json finds the data from anywhere)."""
    cfg = cfg.copy_and_resolve_references()
    for key in ("dir", "tokenizer"):
        if cfg.data[key]:
            cfg.data[key] = str(Path(cfg.data[key]).resolve())
    return cfg


def load_val(cfg, data_dir: Path, seq_len: int) -> np.ndarray:
    """The val stream cut to whole eval sequences (+1), capped at eval.max_tokens."""
    return shards.load_validation_tokens(str(Path(data_dir) / "fineweb_val_*.bin"), seq_len, cfg.model.vocab_size,
                                         cfg.eval.max_tokens or None)


def val_byte_lut(sp, vocab_size: int, data_dir: Path, val_tokens: np.ndarray) -> ByteLUT:
    """How val bytes are counted: the tokenizer's LUT, with the byte sidecar when one lies
    beside the val shards (fineweb_val_bytes_*.bin, CaseOps), cut as `val_tokens` (a prefix
    of the val stream). A CaseOps tokenizer without a sidecar is an error: its LUT would
    count each case operator as 3 bytes of text."""
    lut = build_byte_luts(sp, vocab_size)
    sidecar = shards.load_byte_sidecar(str(Path(data_dir) / "fineweb_val_*.bin"))
    if sidecar is None:
        if is_caseops_tokenizer(sp):
            raise UserError(f"{data_dir}: the tokenizer is a CaseOps tokenizer but there is no val byte sidecar "
                             "(fineweb_val_bytes_*.bin); build the shards with `python -m golf_jax.data.prepare "
                             "--caseops`")
        return lut
    return dataclasses.replace(lut, sidecar=sidecar[: len(val_tokens)])


def loader_seed_rule(cfg) -> str:
    """What seeds the training loader's order, so data.json says whether `seed` moves it."""
    if cfg.data.loader == "shuffled":
        from golf_jax.data import shuffled

        return shuffled.seed_rule(cfg.seed, cfg.compat.loader_rank_seed)
    if cfg.data.loader == "coprime":
        return "PCG64(FNV hash of the sorted shard paths); independent of seed"
    return "none: shards in sorted order; independent of seed"


def describe_data(cfg, data_dir: Path, tokenizer_path: Path, val_tokens: int, val_bytes: str = "lut") -> dict:
    """What fixes the data order: the shards (names, sizes, hashes), tokenizer and loader."""
    train = shards.shard_files(str(data_dir / "fineweb_train_*.bin"))
    return {
        "data_dir": str(data_dir),
        "tokenizer": str(tokenizer_path),
        "tokenizer_sha256": sha256_file(tokenizer_path),
        "loader": cfg.data.loader,
        "loader_seed": loader_seed_rule(cfg),
        "train_shards": [{"name": f.name, "bytes": f.stat().st_size} for f in train],
        "manifest_sha256": sha256_file(data_dir / "manifest.json") if (data_dir / "manifest.json").exists() else None,
        "val_tokens_used": val_tokens,
        "val_bytes": val_bytes,  # "sidecar" (fineweb_val_bytes_*.bin) or "lut" (the tokenizer's byte tables)
        "seed": cfg.seed,
    }
