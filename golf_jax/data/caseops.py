"""CaseOps: the lossless case transform of the SP8192 record tokenizer, and its byte sidecar.

The records of #1738 onwards (`lossless_caps_caseops_v1`) lowercase ASCII words before
tokenizing and put the case back as four private-use operator characters, so that
"The", "THE" and "the" share subwords. The transform works on maximal runs of ASCII
letters A-Z/a-z (digits, non-ASCII letters and everything else break a run and pass
through unchanged):

* a lowercase run stays as it is;
* a TitleCase run (first letter upper, rest lower; a lone capital such as "I" too)
  becomes TITLE + the run lowercased;
* an ALLCAPS run of two or more letters becomes ALLCAPS + the run lowercased;
* any other run (mixed case) becomes TITLE if its first letter is upper, then the run
  lowercased with CAPNEXT before each later letter that was upper ("iPhone" →
  "i" CAPNEXT "phone", "McDonald" → TITLE "mc" CAPNEXT "donald");
* a literal operator character in the input is escaped as ESC + the character.

The byte sidecar gives bpb its denominator on CaseOps shards: per token, the UTF-8
bytes of the ORIGINAL text that the token's surface stands for (operators 0, a letter
after an operator 1, BOS 0), so that bpb stays bits per byte of the untransformed text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from golf_jax.data.tokenizer import CASEOPS_OPERATOR_IDS as OPERATOR_IDS, CASEOPS_OPERATORS as OPERATORS
from golf_jax.data.tokenizer import is_caseops_tokenizer  # noqa: F401 (lives there so runs need not pack this module)

TRANSFORM = "lossless_caps_caseops_v1"
TITLE, ALLCAPS, CAPNEXT, ESC = OPERATORS  # U+E001..U+E004, ids 4..7 of a CaseOps tokenizer, in this order
_NAMES = {TITLE: "TITLE (U+E001)", ALLCAPS: "ALLCAPS (U+E002)", CAPNEXT: "CAPNEXT (U+E003)", ESC: "ESC (U+E004)"}
_OP_BYTES = len(TITLE.encode("utf-8"))  # 3: what an acting operator adds to a surface's UTF-8 length

# A maximal ASCII-letter run that holds a capital (leftmost matching starts it at the run's
# first letter, the greedy tail ends it at the last), or one literal operator to escape.
_ENCODE_RE = re.compile("[A-Za-z]*[A-Z][A-Za-z]*|[\ue001-\ue004]")
_OPS_RE = re.compile("[\ue001-\ue004]")


class CaseOpsError(ValueError):
    """A transformed string in which an operator stands where the encoder never puts one."""


def _encode_match(m: re.Match) -> str:
    word = m.group()
    if word in OPERATORS:
        return ESC + word
    lower = word.lower()
    if len(word) >= 2 and word.isupper():
        return ALLCAPS + lower
    if word[1:].islower() or len(word) == 1:  # the match holds a capital: here it is the first letter
        return TITLE + lower
    head = TITLE + lower[0] if word[0].isupper() else lower[0]
    return head + "".join(CAPNEXT + c if o.isupper() else c for o, c in zip(word[1:], lower[1:]))


def encode(text: str) -> str:
    """The CaseOps transform of `text` (see the module docstring)."""
    return _ENCODE_RE.sub(_encode_match, text)


def _is_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def decode(text: str) -> str:
    """Invert `encode`; raises CaseOpsError (position, what was wrong) on a misplaced operator.

    The same state machine as the reference's decoder, so it accepts exactly what the
    reference accepts: every output of `encode`, and a few spellings `encode` never
    writes (CAPNEXT on a word's first letter reads as a capital, an upper-case letter
    in the input stays upper). Positions are indices into `text`.
    """
    if _OPS_RE.search(text) is None:
        return text
    out: list[str] = []
    escape_at = -1  # position of a pending ESC
    mode, mode_at = "", -1  # a pending TITLE / ALLCAPS and its position
    capnext_at = -1  # position of a pending CAPNEXT
    allcaps = False  # inside a word that ALLCAPS started
    in_word = False  # the last output character was an ASCII letter

    def fail(msg: str) -> CaseOpsError:
        return CaseOpsError(f"CaseOps decode: {msg}; the text was not written by caseops.encode")

    for i, ch in enumerate(text):
        if escape_at >= 0:
            if mode and not _is_letter(ch):
                raise fail(f"ESC at position {escape_at} escapes {ch!r}, but the {_NAMES[mode]} at position "
                           f"{mode_at} needs an ASCII letter")
            out.append(ch)
            escape_at = -1
            in_word = _is_letter(ch)
            allcaps = allcaps and in_word
            continue
        if ch == ESC:
            escape_at = i
        elif ch == TITLE or ch == ALLCAPS:
            if mode:
                raise fail(f"{_NAMES[ch]} at position {i} follows the {_NAMES[mode]} at position {mode_at} "
                           "with no letter between them")
            if in_word:
                raise fail(f"{_NAMES[ch]} at position {i} stands inside a word (after {text[i - 1]!r}); it may "
                           "only start one")
            if capnext_at >= 0:
                raise fail(f"{_NAMES[ch]} at position {i} follows the CAPNEXT at position {capnext_at}, which "
                           "must be followed by a letter")
            mode, mode_at = ch, i
        elif ch == CAPNEXT:
            if capnext_at >= 0:
                raise fail(f"CAPNEXT at position {i} follows the CAPNEXT at position {capnext_at}")
            capnext_at = i
        elif _is_letter(ch):
            if not in_word:  # a word starts
                out.append(ch.upper() if mode or capnext_at >= 0 else ch)
                allcaps = mode == ALLCAPS
                mode, capnext_at, in_word = "", -1, True
                continue
            if mode:  # only reachable through an escaped letter, which the encoder never writes
                raise fail(f"the {_NAMES[mode]} at position {mode_at} reaches the middle of a word "
                           f"(letter {ch!r} at position {i})")
            out.append(ch.upper() if allcaps or capnext_at >= 0 else ch)
            capnext_at = -1
        else:
            if mode or capnext_at >= 0:
                op, at = (mode, mode_at) if mode else (CAPNEXT, capnext_at)
                raise fail(f"the {_NAMES[op]} at position {at} is followed by {ch!r} at position {i}, not by "
                           "an ASCII letter")
            out.append(ch)
            in_word = allcaps = False
    if escape_at >= 0:
        raise fail(f"the ESC at position {escape_at} ends the text")
    if mode or capnext_at >= 0:
        op, at = (mode, mode_at) if mode else (CAPNEXT, capnext_at)
        raise fail(f"the {_NAMES[op]} at position {at} ends the text")
    return "".join(out)


def surface_original_bytes(surfaces: Iterable[str]) -> np.ndarray:
    """Per piece, the UTF-8 bytes of the original text that its surface stands for (uint16).

    `surfaces` are one document's SentencePiece piece surfaces in order (the input text
    each piece covers). An acting operator adds 0, an escaped operator character its 3
    bytes, anything else its UTF-8 length: a lowercased letter is one byte, as the
    capital it stands for. Agrees with the reference's surface_piece_original_byte_counts
    on every output of `encode`. Text that SentencePiece's normalizer drops (leading and
    trailing whitespace of a document) has no surface and so no bytes.
    """
    counts = []
    escaped = False  # an acting ESC is waiting for the character it escapes
    for s in surfaces:
        n = len(s.encode("utf-8"))
        if escaped or _OPS_RE.search(s) is not None:
            for ch in s:
                if escaped:  # the escaped character is original text: its bytes count
                    escaped = False
                elif ch in OPERATORS:
                    n -= _OP_BYTES
                    escaped = ch == ESC
        counts.append(n)
    if escaped:
        raise CaseOpsError("CaseOps bytes: the document ends with an ESC that escapes nothing; the text was "
                           "not written by caseops.encode")
    return np.asarray(counts, dtype=np.uint16)


# SentencePiece settings of the record tokenizer (fineweb_8192_bpe_lossless_caps_caseops_v1_reserved:
# the same trainer call as the official SP1024/SP8192, plus the operators as user-defined
# symbols right after pad 0, BOS 1, EOS 2, unk 3, so they hold ids 4-7; byte pieces follow).
TRAINER_SETTINGS = dict(
    model_type="bpe", character_coverage=0.999, byte_fallback=True, split_digits=True,
    normalization_rule_name="nmt_nfkc", add_dummy_prefix=False, pad_id=0, bos_id=1, eos_id=2, unk_id=3,
    hard_vocab_limit=False, user_defined_symbols=list(OPERATORS),
)


def train_tokenizer(texts: Iterable[str], model_path: str | os.PathLike, vocab_size: int,
                    max_docs: int | None = None, num_threads: int | None = None) -> Path:
    """Train a CaseOps SentencePiece BPE on the transformed documents; returns the .model path.

    Documents are cleaned as the reference's exporter does (NUL → space, stripped, empty
    ones skipped) and given whole; unlike the reference (SentencePiece's default
    4,192-byte limit silently drops longer documents) no document is dropped.
    """
    import sentencepiece as spm

    model_path = Path(model_path)
    if model_path.suffix != ".model":
        raise ValueError(f"--tokenizer {model_path}: a trained tokenizer is written as PREFIX.model; give a "
                         "path ending in .model")
    model_path.parent.mkdir(parents=True, exist_ok=True)
    docs = (encode(t.replace("\x00", " ").strip()) for t in islice(texts, max_docs) if t.strip())
    spm.SentencePieceTrainer.train(
        sentence_iterator=docs, model_prefix=str(model_path.with_suffix("")), vocab_size=int(vocab_size),
        max_sentence_length=1 << 30, num_threads=num_threads or os.cpu_count() or 1, minloglevel=2,
        **TRAINER_SETTINGS)
    return model_path


def check_tokenizer(sp: Any, path: str | os.PathLike) -> None:
    """A CaseOps tokenizer must hold the operators at ids 4-7 and BOS at 1, as the record's does."""
    if not is_caseops_tokenizer(sp):
        got = [sp.id_to_piece(i) for i in OPERATOR_IDS if i < int(sp.vocab_size())]
        raise ValueError(f"tokenizer {path} is not a CaseOps tokenizer: ids 4-7 hold {got!r}, not the operators "
                         "U+E001-U+E004; train one with --train_tokenizer, or drop --caseops")
    if int(sp.bos_id()) != 1:
        raise ValueError(f"tokenizer {path} has BOS id {sp.bos_id()}, not 1; CaseOps shards put BOS=1 before "
                         "every document")


def _encode_protos(sp: Any, texts: list[str]) -> list:
    """SentencePieceText messages (pieces with id and surface); the spelling moved in 0.2.2."""
    try:
        return sp.encode(texts, out_type="immutable_proto")  # sentencepiece <= 0.2.1
    except ValueError:
        return sp.encode(texts, out_type="proto")  # >= 0.2.2 (needs protobuf, which orbax brings)


def encode_with_bytes(sp: Any, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per document: the token ids of encode(text) (int32) and each token's original bytes (uint16).

    The ids are what sp.encode gives; the bytes come from the pieces' surfaces (the
    transformed text each piece covers), as the reference's prepare_caseops_data.py does.
    """
    out = []
    for proto in _encode_protos(sp, [encode(t) for t in texts]):
        pieces = proto.pieces
        ids = np.fromiter((p.id for p in pieces), dtype=np.int32, count=len(pieces))
        out.append((ids, surface_original_bytes([p.surface for p in pieces])))
    return out
