"""Build Parameter Golf shards from text: `python -m golf_jax.data.prepare`.

Follows the upstream export convention (docs/reference-notes.md#shard-format): each document becomes
[BOS=1] + sp.encode(text), no EOS; documents are taken in file order (never shuffled),
concatenated and cut into shards of --shard_tokens tokens, so a document may straddle
two shards. Output names are fineweb_{val,train}_%06d.bin, plus manifest.json with the
input / tokenizer / shard sha256s, written last (a build without it is incomplete), and
doc_hashes_{val,train}.npy, a hash per document: a --train document that is also a --val
one is refused (how many, in which file; golf_jax/data/disjoint.py).

Inputs: `.jsonl` (one JSON object per line, field "text"; blank lines skipped) and
`.txt` (the whole file is ONE document, e.g. a book), either optionally `.xz`.
--max_docs caps the documents of each split.

--caseops builds the SP8192 record's CaseOps shards (golf_jax/data/caseops.py): every
document is case-transformed before encoding, the tokenizer must hold the operators at
ids 4-7 (--train_tokenizer trains one on the transformed --train documents, written to
--tokenizer), and the val split gets a byte sidecar fineweb_val_bytes_%06d.bin, parallel
to the val shards, that bpb divides by instead of the byte look-up tables.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, TextIO

import numpy as np

from golf_jax.data import caseops, disjoint
from golf_jax.data.shards import HEADER_WORDS, MAGIC, VERSION, ShardError, sha256_file
from golf_jax.data.tokenizer import load_tokenizer
from golf_jax.core.progress import progress

BOS_ID = 1
ENCODE_BATCH = 256  # documents per sp.encode call
MB = 10**6  # the progress's unit of input


def write_shard(path: str | os.PathLike, tokens: Sequence[int] | np.ndarray) -> None:
    """Write one shard atomically (temp file + rename), so readers never see half a file."""
    path = Path(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ShardError(f"{path}: tokens must be a 1-D array, got shape {arr.shape}")
    if arr.size and arr.dtype != np.uint16:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ShardError(f"{path}: tokens must be integers, got dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= 2**16:
            raise ShardError(
                f"{path}: token ids must fit in uint16 (0..65535), got range [{lo}, {hi}]; "
                "use a tokenizer with at most 65536 pieces"
            )
    if arr.size >= 2**31:
        raise ShardError(
            f"{path}: {arr.size} tokens do not fit the int32 header; use smaller shards"
        )
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, arr.size
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(arr.astype("<u2", copy=False).tobytes())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _open_text(path: Path) -> tuple[BinaryIO, TextIO]:
    """(the file, its text): the file's position says how far the reading got (compressed bytes for .xz)."""
    raw = open(path, "rb")
    text = lzma.open(raw, "rt", encoding="utf-8") if path.suffix == ".xz" else io.TextIOWrapper(raw, encoding="utf-8")
    return raw, text


def iter_documents(path: str | os.PathLike) -> Iterator[str]:
    """Documents of one input file, in file order (see the module docstring)."""
    return (text for text, _ in read_documents(path))


def _lines(f, path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file; bytes that are not UTF-8 name the file."""
    lineno = 0
    try:
        for lineno, line in enumerate(f, 1):
            yield lineno, line
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{lineno + 1}: not UTF-8 text ({e}); pass a .jsonl or .txt file (optionally .xz)") from e


def read_documents(path: str | os.PathLike) -> Iterator[tuple[str, int]]:
    """(document, bytes of the file read so far): iter_documents with the position for a progress bar."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input {path} does not exist; check the --train/--val paths")
    kind = path.name[: -len(".xz")] if path.name.endswith(".xz") else path.name
    if kind.endswith(".jsonl"):
        raw, f = _open_text(path)
        with raw, f:
            for lineno, line in _lines(f, path):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(
                        f"{path}:{lineno}: expected a JSON object with a string field "
                        f"'text' ({e}); fix the line or drop it from the input"
                    ) from e
                if not isinstance(text, str):
                    raise ValueError(f"{path}:{lineno}: field 'text' is not a string")
                yield text, raw.tell()
    elif kind.endswith(".txt"):
        raw, f = _open_text(path)
        with raw, f:
            yield f.read(), raw.tell()
    else:
        raise ValueError(
            f"input {path}: unsupported type; use .jsonl or .txt (optionally .xz-compressed)"
        )


def encode_documents(sp: Any, texts: Sequence[str]) -> list[np.ndarray]:
    """[BOS] + encode(text) per document, as int32 arrays (batched for speed)."""
    out = []
    for ids in sp.encode(list(texts), out_type=int):
        doc = np.empty(len(ids) + 1, dtype=np.int32)
        doc[0] = BOS_ID
        doc[1:] = ids
        out.append(doc)
    return out


class ShardWriter:
    """Accumulates a split's token stream and writes fixed-size shards as they fill."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int) -> None:
        if shard_tokens <= 0:
            raise ValueError(f"--shard_tokens must be positive, got {shard_tokens}")
        self.out_dir, self.split, self.shard_tokens = Path(out_dir), split, shard_tokens
        self.buf = np.empty(shard_tokens, dtype=np.uint16)
        self.fill = 0
        self.docs = 0
        self.tokens = 0
        self.shards: list[dict[str, Any]] = []

    def add(self, doc: np.ndarray) -> None:
        if doc.size and (int(doc.min()) < 0 or int(doc.max()) >= 2**16):
            raise ValueError(f"{self.split}: token ids do not fit uint16 shards")
        self.docs += 1
        self.tokens += int(doc.size)
        pos = 0
        while pos < doc.size:
            k = min(self.shard_tokens - self.fill, doc.size - pos)
            self.buf[self.fill : self.fill + k] = doc[pos : pos + k]
            self.fill += k
            pos += k
            if self.fill == self.shard_tokens:
                self._flush()

    def _flush(self) -> None:
        if self.fill == 0:
            return
        name = f"fineweb_{self.split}_{len(self.shards):06d}.bin"
        write_shard(self.out_dir / name, self.buf[: self.fill])
        self.shards.append(
            {"name": name, "tokens": self.fill, "sha256": sha256_file(self.out_dir / name)}
        )
        self.fill = 0

    def close(self) -> dict[str, Any]:
        self._flush()
        return {"docs": self.docs, "tokens": self.tokens, "shards": self.shards}


class Options(NamedTuple):
    """How `build` makes shards: the prepare command's flags besides its inputs and output (the
    module docstring); `caseops_text` is --caseops."""

    shard_tokens: int = 100_000_000
    vocab_size: int | None = None
    max_docs: int | None = None
    overwrite: bool = False
    caseops_text: bool = False
    train_tokenizer: bool = False
    tokenizer_docs: int | None = None


def write_split(sp: Any, docs: Iterable[tuple[str, int]], out_dir: Path, split: str, options: Options,
                total_bytes: int = 0, hashes: disjoint.DocHashes | None = None,
                log_every_s: float = 10.0) -> dict[str, Any]:
    """Encode documents in order and shard them, with a progress bar (golf_jax/core/progress.py).

    `docs`: (text, input bytes read so far) as _chain_docs yields them, of `total_bytes`
    in all; the progress counts those bytes (in whole MB), or documents when `max_docs` caps them.
    `caseops_text`: transform each document first; for the val split, also write the
    byte sidecar (BOS 0, then each token's original bytes), cut into shards exactly as
    the tokens are. `hashes` records each document's hash (and counts those it forbids).
    """
    shard_tokens, _, max_docs, _, caseops_text, _, _ = options
    writer = ShardWriter(out_dir, split, shard_tokens)
    sidecar = ShardWriter(out_dir, f"{split}_bytes", shard_tokens) if caseops_text and split == "val" else None
    t0 = time.time()
    batch: list[str] = []
    where: list[int] = []  # each batched document's input position (which file it came from)
    chars = 0
    credited = text_bytes = 0  # the sidecar's total, and the documents' UTF-8 bytes

    def drain() -> None:
        nonlocal chars, credited, text_bytes
        if sidecar is not None:
            for (ids, nbytes), text, at in zip(caseops.encode_with_bytes(sp, batch), batch, where):
                doc = np.concatenate([[BOS_ID], ids]).astype(np.int32)
                writer.add(doc)
                if hashes is not None:
                    hashes.add(doc, at)
                sidecar.add(np.concatenate([[0], nbytes]).astype(np.int32))
                credited += int(nbytes.sum(dtype=np.int64))
                text_bytes += len(text.encode("utf-8"))
        else:
            for doc, at in zip(encode_documents(sp, [caseops.encode(t) for t in batch] if caseops_text else batch),
                               where):
                writer.add(doc)
                if hashes is not None:
                    hashes.add(doc, at)
        batch.clear()
        where.clear()
        chars = 0

    by_docs = max_docs is not None
    done = 0  # what the progress has counted: documents or MB of input
    with progress(f"[prepare] {split}", "docs" if by_docs else "MB", max_docs if by_docs else -(-total_bytes // MB),
                  every=log_every_s) as bar:
        for text, pos in docs:
            if by_docs and writer.docs + len(batch) >= max_docs:
                break
            batch.append(text)
            where.append(pos)
            chars += len(text)
            if len(batch) >= ENCODE_BATCH or chars > (8 << 20):
                drain()
                now = writer.docs if by_docs else pos // MB
                bar.update(now - done)
                done = now
        drain()
    stats = writer.close()
    if sidecar is not None:
        side = sidecar.close()
        # text_bytes - bytes: what SentencePiece's normalizer drops (a document's edge whitespace).
        stats["byte_sidecar"] = {"shards": side["shards"], "bytes": credited, "text_bytes": text_bytes}
        print(f"[prepare] {split}: byte sidecar credits {credited:,} of the documents' {text_bytes:,} "
              "UTF-8 bytes", flush=True)
    print(f"[prepare] {split}: done, {stats['docs']} docs, {stats['tokens']:,} tokens, "
          f"{len(stats['shards'])} shards in {time.time() - t0:.1f}s", flush=True)
    return stats


def _chain_docs(paths: Sequence[Path]) -> Iterator[tuple[str, int]]:
    """(document, bytes of all the inputs read so far)."""
    before = 0
    for p in paths:
        for text, pos in read_documents(p):
            yield text, before + pos
        before += Path(p).stat().st_size


def build(tokenizer: Path, val: Sequence[Path], train: Sequence[Path], out: Path,
          options: Options = Options()) -> dict[str, Any]:
    """Build val and train shards plus manifest.json in `out`; returns the manifest."""
    import sentencepiece as spm

    shard_tokens, vocab_size, max_docs, overwrite, caseops_text, train_tokenizer, tokenizer_docs = options

    tokenizer = Path(tokenizer)
    trained = None
    if train_tokenizer:
        trained = _train_tokenizer(tokenizer, train, vocab_size or 8192, tokenizer_docs, caseops_text, overwrite)
        vocab_size = trained["vocab_size"]
    if vocab_size is None:
        if not tokenizer.is_file():
            raise ValueError(f"tokenizer model {tokenizer} does not exist")
        try:
            vocab_size = int(spm.SentencePieceProcessor(model_file=str(tokenizer)).vocab_size())
        except (RuntimeError, OSError) as e:  # a .vocab, a text file, a damaged model
            hint = f" (the .model beside it: {tokenizer.with_suffix('.model')})" if tokenizer.suffix == ".vocab" else ""
            raise ValueError(f"--tokenizer={tokenizer} is not a SentencePiece .model file ({e}); pass the "
                             f".model{hint}") from e
    sp = load_tokenizer(tokenizer, vocab_size)
    if vocab_size > 2**16:
        raise ValueError(f"vocab size {vocab_size} does not fit uint16 shards")
    if caseops_text:
        caseops.check_tokenizer(sp, tokenizer)
    elif caseops.is_caseops_tokenizer(sp):
        raise ValueError(f"tokenizer {tokenizer} is a CaseOps tokenizer (operators at ids 4-7); pass --caseops "
                         "so that the text is transformed and the val byte sidecar written")
    for p in [*val, *train]:
        if not Path(p).is_file():
            raise FileNotFoundError(f"input {p} does not exist; check the --train/--val paths")
    if shard_tokens < 1:
        raise ValueError(f"--shard_tokens={shard_tokens}: use a count >= 1")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out={out} is a file; pass the folder to write the shards into")
    stale = (sorted(out.glob("fineweb_*.bin")) + sorted(out.glob("manifest.json"))
             + sorted(out.glob("doc_hashes_*.npy"))) if out.is_dir() else []
    if stale and not overwrite:
        raise FileExistsError(
            f"{out} already holds shards or a manifest ({stale[0].name}, ...); pass "
            "--overwrite to replace them or choose another --out"
        )
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for f in stale:
        f.unlink()
    manifest: dict[str, Any] = {
        "format": {"magic": MAGIC, "version": VERSION, "dtype": "uint16", "header_bytes": 1024},
        "convention": {"bos_id": BOS_ID, "append_eos": False, "shuffled": False},
        "tokenizer": {"path": str(tokenizer), "sha256": sha256_file(tokenizer),
                      "vocab_size": vocab_size, **({"trained": trained} if trained else {})},
        "text_transform": caseops.TRANSFORM if caseops_text else "identity",
        "shard_tokens": shard_tokens,
        "max_docs_per_split": max_docs,
        "splits": {},
    }
    try:
        val_hashes = None
        for split, paths in (("val", val), ("train", train)):
            if not paths:
                continue
            inputs = [{"path": str(p), "sha256": sha256_file(p)} for p in paths]
            hashes = disjoint.DocHashes(val_hashes, paths)  # train may not repeat a val document
            stats = write_split(sp, _chain_docs([Path(p) for p in paths]), out, split, options,
                                total_bytes=sum(Path(p).stat().st_size for p in paths), hashes=hashes)
            if not stats["docs"]:
                raise ValueError(f"--{split} {' '.join(map(str, paths))}: no documents (empty input); pass files "
                                 "that hold the split's text")
            if hashes.overlaps:
                raise ValueError(disjoint.overlap_error(hashes.overlaps))
            manifest["splits"][split] = {"inputs": inputs, **stats, "doc_hashes": hashes.write(out, split)}
            val_hashes = hashes.array() if split == "val" else val_hashes
        tmp = out / ".manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, out / "manifest.json")
    except BaseException:  # a failed build leaves nothing behind: a rerun starts as this one did
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for f in [*out.glob("fineweb_*.bin"), *out.glob("doc_hashes_*.npy"), out / ".manifest.json.tmp"]:
                f.unlink(missing_ok=True)
        raise
    return manifest


def _train_tokenizer(path: Path, train: Sequence[Path], vocab_size: int, max_docs: int | None,
                     caseops_text: bool, overwrite: bool) -> dict[str, Any]:
    """--train_tokenizer: a CaseOps BPE from the first `max_docs` --train documents, at `path`."""
    import sentencepiece as spm

    if not caseops_text:
        raise ValueError("--train_tokenizer trains a CaseOps tokenizer; add --caseops (or give a trained "
                         "--tokenizer without --train_tokenizer)")
    if not train:
        raise ValueError("--train_tokenizer learns from the --train documents; give at least one --train input")
    if path.exists() and not overwrite:
        raise FileExistsError(f"tokenizer {path} already exists; pass --overwrite to retrain it, or drop "
                              "--train_tokenizer to use it as it is")
    for p in train:
        if not Path(p).is_file():
            raise FileNotFoundError(f"input {p} does not exist; check the --train paths")
    t0 = time.time()
    caseops.train_tokenizer((t for t, _ in _chain_docs([Path(p) for p in train])), path, vocab_size, max_docs)
    got = int(spm.SentencePieceProcessor(model_file=str(path)).vocab_size())
    print(f"[prepare] tokenizer: trained {path} ({got} pieces) in {time.time() - t0:.1f}s", flush=True)
    if got != vocab_size:
        print(f"[prepare] tokenizer: asked for {vocab_size} pieces, the text gave {got}", flush=True)
    return {"vocab_size": got, "requested_vocab_size": vocab_size, "docs": max_docs,
            "settings": dict(caseops.TRAINER_SETTINGS)}


def main(argv: Sequence[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:].
    Its flags and cli are made here, not at import: this module is packed with the default corpus's
    generator (golf_jax/data/synthetic.py), its command line is not."""
    from absl import flags

    from golf_jax.core import cli
    from golf_jax.core.errors import UserError

    fv = cli.flag_values()
    define = dict(flag_values=fv)
    tokenizer = cli.required(flags.DEFINE_string("tokenizer", None, "SentencePiece .model.", **define),
                             "the SentencePiece .model, --tokenizer=PATH.model")
    val = flags.DEFINE_multi_string("val", [], "A validation input (repeat the flag for more).", **define)
    train = flags.DEFINE_multi_string("train", [], "A training input (repeat the flag for more).", **define)
    out = cli.required(flags.DEFINE_string("out", None, "Output directory.", **define),
                       "the folder to write the shards into, --out=DIR")
    shard_tokens = flags.DEFINE_integer("shard_tokens", 100_000_000, "Tokens per shard (upstream: 100,000,000).",
                                        **define)
    vocab_size = flags.DEFINE_integer("vocab_size", None, "Expected tokenizer vocab size (checked; default: the "
                                      "model's); with --train_tokenizer, the size to train (default 8192).", **define)
    max_docs = flags.DEFINE_integer("max_docs", None, "Cap on documents per split.", **define)
    overwrite = flags.DEFINE_bool("overwrite", False, "Replace existing shards in --out.", **define)
    caseops_text = flags.DEFINE_bool("caseops", False, "CaseOps shards: transform the text, write the val byte "
                                     "sidecar.", **define)
    train_tokenizer = flags.DEFINE_bool("train_tokenizer", False, "Train a CaseOps tokenizer on the --train "
                                        "documents and write it to --tokenizer.", **define)
    tokenizer_docs = flags.DEFINE_integer("tokenizer_docs", None, "With --train_tokenizer: train on the first N "
                                          "--train documents (default all).", **define)

    def prepare(args: list[str]) -> None:
        if args:
            raise UserError(f"unexpected argument(s) {args}: pass each input with a flag of its own, "
                            f"--val=FILE or --train=FILE (repeat the flag for more)")
        if not val.value and not train.value:
            raise UserError("give at least one --val=FILE or --train=FILE input")
        try:
            build(Path(tokenizer.value), [Path(v) for v in val.value], [Path(t) for t in train.value],
                  Path(out.value), Options(shard_tokens.value, vocab_size.value, max_docs.value, overwrite.value,
                                           caseops_text.value, train_tokenizer.value, tokenizer_docs.value))
        except (ValueError, OSError) as e:
            raise UserError(str(e)) from e

    return cli.run(prepare, fv, None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
