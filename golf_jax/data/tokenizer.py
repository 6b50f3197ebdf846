"""SentencePiece loading and the byte look-up tables behind val_bpb.

bpb divides the NLL by a byte count derived from the token ids alone (reference
docs/reference-notes.md#byte-luts), not from the raw text: the tokenizer normalises whitespace, so the text
does not round-trip. These tables reproduce the reference byte accounting exactly.

CaseOps shards (golf_jax/data/caseops.py) come with a byte sidecar instead: per val
token, the bytes of the original text it stands for. A ByteLUT that carries one
credits those bytes, position by position, in place of the tables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from golf_jax.core.errors import UserError

_SPACE = "\u2581"  # SentencePiece's "▁" word-boundary marker
# CaseOps (golf_jax/data/caseops.py): TITLE, ALLCAPS, CAPNEXT, ESC and the ids a CaseOps tokenizer holds them at
CASEOPS_OPERATORS = ("\ue001", "\ue002", "\ue003", "\ue004")
CASEOPS_OPERATOR_IDS = (4, 5, 6, 7)


def is_caseops_tokenizer(sp: Any) -> bool:
    """Whether ids 4-7 hold the four CaseOps operators (a tokenizer caseops.train_tokenizer trained).
    Here rather than in caseops.py, so that a run need not pack the case transform."""
    n = int(sp.vocab_size())
    return n > max(CASEOPS_OPERATOR_IDS) and [sp.id_to_piece(i) for i in CASEOPS_OPERATOR_IDS] == list(
        CASEOPS_OPERATORS)


def load_tokenizer(path: str | os.PathLike, vocab_size: int) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model and check it matches model.vocab_size."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"tokenizer model {path} does not exist; pass the .model file the shards were "
            "built with (e.g. ../shared/data/tokenizers/fineweb_1024_bpe.model)"
        )
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as e:
        raise UserError(
            f"tokenizer model {path} could not be loaded ({e}); it must be a SentencePiece "
            ".model file"
        ) from e
    if int(sp.vocab_size()) != int(vocab_size):
        raise UserError(
            f"tokenizer {path} has {sp.vocab_size()} pieces but model.vocab_size is "
            f"{vocab_size}; set --config.model.vocab_size={sp.vocab_size()} or use the "
            f"tokenizer with {vocab_size} pieces"
        )
    return sp


@dataclass(frozen=True)
class ByteLUT:
    """Per-token byte tables (size T = max(sp vocab, model vocab)), or a val byte sidecar.

    Every stage counts bytes on the host, per batch. `sidecar`, when set, holds the bytes
    of each token of the one val stream this LUT is used with (cut exactly as that
    stream), and `target_bytes` reads it instead of the tables.
    """

    base_bytes: Any  # int16 [T]: UTF-8 bytes of the piece without its leading "▁"
    has_leading_space: Any  # bool [T]: the piece starts with "▁"
    is_boundary: Any  # bool [T]: control / unknown / unused ids (BOS etc.)
    sidecar: Any = None  # uint16 [N] parallel to the val tokens (fineweb_val_bytes_*.bin), or None

    @property
    def size(self) -> int:
        return int(self.base_bytes.shape[0])

    @property
    def source(self) -> str:
        """Where val bytes come from: "sidecar" or "lut" (logged and written to data.json)."""
        return "lut" if self.sidecar is None else "sidecar"


def build_byte_luts(sp: spm.SentencePieceProcessor, vocab_size: int) -> ByteLUT:
    """docs/reference-notes.md#byte-luts: boundaries keep 0 bytes, byte pieces 1, "▁" adds a space flag."""
    sp_vocab = int(sp.vocab_size())
    table = max(sp_vocab, int(vocab_size))
    base = np.zeros(table, dtype=np.int16)
    lead = np.zeros(table, dtype=np.bool_)
    boundary = np.ones(table, dtype=np.bool_)
    for i in range(sp_vocab):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(_SPACE):
            lead[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteLUT(base, lead, boundary)


def target_bytes(lut: ByteLUT, prev_ids: Any, target_ids: Any, target_index: Any = None) -> np.ndarray:
    """Bytes credited to each target y given the token x before it (docs/reference-notes.md#byte-luts).

    bytes = base_bytes[y] + (has_leading_space[y] and not is_boundary[x]); int32.
    With a sidecar: bytes = sidecar[t + 1] for target index t (the target is val[t + 1]),
    as #1738 credits bytes[target position]; callers pass `target_index` for that.
    """
    if lut.sidecar is not None:
        if target_index is None:
            raise ValueError("target_bytes: this ByteLUT carries a val byte sidecar, so the targets' positions "
                             "(target_index) are needed")
        return np.asarray(lut.sidecar)[np.asarray(target_index) + 1].astype(np.int32)
    base = np.asarray(lut.base_bytes)[target_ids].astype(np.int32)
    lead = np.asarray(lut.has_leading_space)[target_ids]
    after_text = ~np.asarray(lut.is_boundary)[prev_ids]
    return base + (lead & after_text).astype(np.int32)
