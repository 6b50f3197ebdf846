"""CaseOps (docs/reference-notes.md#caseops): the lossless case transform, prepare --caseops, and the val byte sidecar in bpb."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from golf_jax.data import caseops, prepare, shards, source
from golf_jax.data.caseops import ALLCAPS, CAPNEXT, ESC, TITLE, CaseOpsError
from golf_jax.data.prepare import Options, build, iter_documents
from golf_jax.data.tokenizer import ByteLUT, build_byte_luts, target_bytes
from golf_jax.core.paths import REPO_ROOT

# Written by hand from the rules (maximal ASCII-letter runs; see golf_jax/data/caseops.py).
GOLDEN = [
    ("the cat", "the cat"),
    ("The NASA Launch", f"{TITLE}the {ALLCAPS}nasa {TITLE}launch"),
    ("I", f"{TITLE}i"),  # a lone capital is TitleCase, never ALLCAPS (that needs two letters)
    ("A b", f"{TITLE}a b"),
    ("iPhone", f"i{CAPNEXT}phone"),
    ("McDonald", f"{TITLE}mc{CAPNEXT}donald"),
    ("ABc", f"{TITLE}a{CAPNEXT}bc"),
    ("aBC", f"a{CAPNEXT}b{CAPNEXT}c"),
    ("A1B", f"{TITLE}a1{TITLE}b"),  # a digit ends a run
    ("COVID19 x", f"{ALLCAPS}covid19 x"),
    ("ÉCOLE", f"É{ALLCAPS}cole"),  # non-ASCII letters are not part of a run and keep their case
    ("STRAßE", f"{ALLCAPS}straß{TITLE}e"),
    (f"a{TITLE}b", f"a{ESC}{TITLE}b"),  # literal operators are escaped
    (f"{ESC}{ESC}", f"{ESC}{ESC}{ESC}{ESC}"),
    ("\ue000X", f"\ue000{TITLE}x"),  # the v1 sentinel is ordinary text here
    ("", ""),
]


@pytest.mark.parametrize("text,want", GOLDEN)
def test_golden_encodings(text, want):
    assert caseops.encode(text) == want
    assert caseops.decode(want) == text


def test_roundtrip_random_unicode():
    rng = np.random.default_rng(0)
    alphabet = [*"abcxyzABCXYZ0129 ,.-'\n\t", "é", "É", "ß", "Ω", "日", "\U0001F600", "\ue000", *caseops.OPERATORS]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 40))))
        enc = caseops.encode(text)
        assert caseops.decode(enc) == text
        assert not any("A" <= c <= "Z" for c in enc)
        # the surfaces of any split of the encoding credit exactly the original UTF-8 bytes
        cuts = np.sort(rng.integers(0, len(enc) + 1, size=3))
        parts = [enc[a:b] for a, b in zip([0, *cuts], [*cuts, len(enc)])]
        assert int(caseops.surface_original_bytes(parts).sum()) == len(text.encode("utf-8"))


@pytest.mark.shared_data
def test_roundtrip_fineweb_200(shared_data):
    docs = list(iter_documents(shared_data / "text" / "fineweb_val_200.jsonl"))
    enc = [caseops.encode(d) for d in docs]
    assert sum(e != d for e, d in zip(enc, docs)) > 190  # real text has capitals
    assert [caseops.decode(e) for e in enc] == docs


@pytest.mark.parametrize("text,message", [
    (TITLE, "TITLE (U+E001) at position 0 ends the text"),
    (f"{TITLE}1", "TITLE (U+E001) at position 0 is followed by '1' at position 1"),
    (f"ab{TITLE}c", "TITLE (U+E001) at position 2 stands inside a word"),
    (f"{TITLE}{ALLCAPS}a", "ALLCAPS (U+E002) at position 1 follows the TITLE (U+E001) at position 0"),
    (f"a{CAPNEXT}{CAPNEXT}b", "CAPNEXT at position 2 follows the CAPNEXT at position 1"),
    (f"{CAPNEXT}{TITLE}a", "TITLE (U+E001) at position 1 follows the CAPNEXT at position 0"),
    (f"a {CAPNEXT} b", "CAPNEXT (U+E003) at position 2 is followed by ' ' at position 3"),
    (f"ab{ESC}", "ESC at position 2 ends the text"),
    (f"{ALLCAPS}{ESC}1", "ESC at position 1 escapes '1', but the ALLCAPS (U+E002) at position 0 needs"),
    (f"{TITLE}{ESC}ab", "TITLE (U+E001) at position 0 reaches the middle of a word (letter 'b' at position 3)"),
])
def test_decoder_rejects_misplaced_operators(text, message):
    with pytest.raises(CaseOpsError, match="CaseOps decode: ") as info:
        caseops.decode(text)
    assert isinstance(info.value, ValueError) and message in str(info.value)


def test_surface_bytes_hand_example():
    # "Hello world", a literal TITLE and "é" as SentencePiece might cut them
    surfaces = [TITLE, "hello", " world", " ", ESC, TITLE, "", "é"]
    assert caseops.surface_original_bytes(surfaces).tolist() == [0, 5, 6, 1, 0, 3, 0, 2]
    with pytest.raises(CaseOpsError, match="ends with an ESC"):
        caseops.surface_original_bytes(["a", ESC])


# ---- prepare --caseops ---------------------------------------------------------------------

EDGE_DOC = f"The NASA iPhone, McDonald's ÉCOLE: I said {TITLE} and {ESC} literally; 3D x"


def _small_docs(shared_data, n: int, skip: int = 0) -> list[str]:
    docs = [d for d in iter_documents(shared_data / "text" / "fineweb_val_200.jsonl") if len(d) < 4000]
    return docs[skip: skip + n]


def _jsonl(path, docs):
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


@pytest.fixture(scope="module")
def caseops_build(shared_data, tmp_path_factory):
    """A tiny CaseOps tokenizer (400 pieces) trained by the CLI on 12 FineWeb docs, and CaseOps shards
    of 6 other docs plus an edge-case doc as val (cut into 1,500-token shards)."""
    tmp = tmp_path_factory.mktemp("caseops")
    train_docs, val_docs = _small_docs(shared_data, 12), [*_small_docs(shared_data, 6, skip=12), EDGE_DOC]
    out, tok = tmp / "shards", tmp / "tok" / "caseops.model"
    res = subprocess.run([sys.executable, "-m", "golf_jax.data.prepare", "--caseops", "--train_tokenizer",
                          "--tokenizer", tok, "--vocab_size", "400", "--val", _jsonl(tmp / "val.jsonl", val_docs),
                          "--train", _jsonl(tmp / "train.jsonl", train_docs), "--out", out, "--shard_tokens", "1500"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return out, tok, val_docs, train_docs, spm.SentencePieceProcessor(model_file=str(tok))


@pytest.mark.shared_data
def test_prepare_caseops_shards_and_sidecar(caseops_build):
    out, tok, val_docs, train_docs, sp = caseops_build
    assert [sp.id_to_piece(i) for i in range(8)] == ["<pad>", "<s>", "</s>", "<unk>", *caseops.OPERATORS]
    assert sp.is_control(1) and sp.is_byte(8)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["text_transform"] == "lossless_caps_caseops_v1"
    assert manifest["tokenizer"]["trained"]["vocab_size"] == sp.vocab_size()

    def stream(docs):
        return np.concatenate([[1] + sp.encode(caseops.encode(d)) for d in docs])

    names = [s["name"] for s in manifest["splits"]["val"]["shards"]]
    side_names = [s["name"] for s in manifest["splits"]["val"]["byte_sidecar"]["shards"]]
    assert len(names) > 1 and side_names == [str(shards.sidecar_name(n)) for n in names]
    assert [shards.read_header(out / a) for a in names] == [shards.read_header(out / b) for b in side_names]
    tokens = shards.load_tokens(str(out / "fineweb_val_*.bin"))  # the glob leaves the sidecar out
    np.testing.assert_array_equal(tokens, stream(val_docs))
    np.testing.assert_array_equal(shards.load_tokens(str(out / "fineweb_train_*.bin")), stream(train_docs))
    assert not list(out.glob("fineweb_train_bytes_*"))
    sidecar = shards.load_byte_sidecar(str(out / "fineweb_val_*.bin"))

    # The key invariant: per document, the sidecar credits exactly its original UTF-8 bytes (BOS 0).
    starts = np.flatnonzero(tokens == 1)
    assert len(starts) == len(val_docs) and np.all(sidecar[starts] == 0)
    per_doc = np.add.reduceat(sidecar.astype(np.int64), starts)
    assert per_doc.tolist() == [len(d.encode("utf-8")) for d in val_docs]
    side = manifest["splits"]["val"]["byte_sidecar"]
    assert side["bytes"] == side["text_bytes"] == sum(len(d.encode("utf-8")) for d in val_docs)
    # operators credit 0, except the two escaped literals of EDGE_DOC (3 bytes each)
    ops = np.isin(tokens, caseops.OPERATOR_IDS)
    assert ops.sum() > 100 and sorted(sidecar[ops][sidecar[ops] > 0].tolist()) == [3, 3]


@pytest.mark.shared_data
def test_prepare_caseops_errors(shared_data, caseops_build, tmp_path):
    out, tok, val_docs, *_ = caseops_build
    val = _jsonl(tmp_path / "v.jsonl", val_docs[:1])
    with pytest.raises(ValueError, match="not a CaseOps tokenizer.*--train_tokenizer"):
        build(shared_data / "tokenizers" / "fineweb_1024_bpe.model", [val], [], tmp_path / "a",
              Options(1000, caseops_text=True))
    with pytest.raises(ValueError, match="is a CaseOps tokenizer.*pass --caseops"):
        build(tok, [val], [], tmp_path / "b", Options(1000))
    with pytest.raises(ValueError, match="add --caseops"):
        build(tmp_path / "new.model", [val], [val], tmp_path / "c", Options(1000, train_tokenizer=True))
    with pytest.raises(FileExistsError, match="--overwrite"):
        build(tok, [val], [val], tmp_path / "d", Options(1000, caseops_text=True, train_tokenizer=True))
    # a CaseOps tokenizer's LUT would count operators as text: without a sidecar, loading val refuses
    (tmp_path / "e").mkdir()
    prepare.write_shard(tmp_path / "e" / "fineweb_val_000000.bin", np.array([1, 4, 300], np.uint16))
    with pytest.raises(ValueError, match="no val byte sidecar"):
        source.val_byte_lut(spm.SentencePieceProcessor(model_file=str(tok)), 400, tmp_path / "e", np.zeros(3))


def test_sidecar_files_are_checked(tmp_path):
    for i, n in enumerate((10, 7)):
        prepare.write_shard(tmp_path / f"fineweb_val_{i:06d}.bin", np.arange(n) + 100 * i)
        prepare.write_shard(tmp_path / f"fineweb_val_bytes_{i:06d}.bin", np.full(n, i + 1))
    pattern = str(tmp_path / "fineweb_val_*.bin")
    np.testing.assert_array_equal(shards.load_validation_tokens(pattern, 4), np.r_[np.arange(10), 100 + np.arange(7)])
    np.testing.assert_array_equal(shards.load_byte_sidecar(pattern), [1] * 10 + [2] * 7)
    prepare.write_shard(tmp_path / "fineweb_val_bytes_000001.bin", np.ones(6, np.uint16))
    with pytest.raises(shards.ShardError, match="fineweb_val_bytes_000001.bin: 6 byte entries, but "
                                               "fineweb_val_000001.bin holds 7 tokens"):
        shards.load_byte_sidecar(pattern)
    (tmp_path / "fineweb_val_bytes_000000.bin").unlink()
    with pytest.raises(shards.ShardError, match="fineweb_val_bytes_000000.bin: this byte sidecar is missing"):
        shards.load_byte_sidecar(pattern)


def test_target_bytes_reads_the_sidecar_at_the_target_position():
    lut = ByteLUT(np.array([0, 5, 5]), np.zeros(3, bool), np.array([True, False, False]), np.array([0, 3, 1, 4]))
    prev, tgt = np.array([1, 2, 1]), np.array([2, 1, 2])
    np.testing.assert_array_equal(target_bytes(lut, prev, tgt, target_index=np.array([0, 1, 2])), [3, 1, 4])
    with pytest.raises(ValueError, match="target_index"):
        target_bytes(lut, prev, tgt)


# ---- bpb through the real eval path ---------------------------------------------------------

@pytest.mark.shared_data
def test_sidecar_bpb_equals_lut_bpb_on_lowercase_text(shared_data, caseops_build, tmp_path):
    """Without capitals CaseOps changes nothing, so the sidecar must credit what the LUT does: every
    stage (plain round trip, sliding windows via the harness) and the audit's slice, after the
    eval.max_tokens cut, give the same bytes and the same bpb either way."""
    import jax

    from golf_jax.core import mesh as mesh_lib
    from golf_jax import model as model_lib
    from golf_jax.audit import procedure
    from golf_jax.config import base_config
    from golf_jax.eval import stages
    from golf_jax.pipeline import load_data

    _, tok, *_ = caseops_build
    sp = spm.SentencePieceProcessor(model_file=str(tok))
    V = sp.vocab_size()
    # lowercase ASCII with single spaces: nothing for the normalizer to drop or rewrite
    docs = [" ".join(d.lower().encode("ascii", "ignore").decode().split()) for d in _small_docs(shared_data, 8, 20)]
    out = tmp_path / "lower"
    build(tok, [_jsonl(tmp_path / "low.jsonl", docs)], [], out, Options(1000, caseops_text=True))
    prepare.write_shard(out / "fineweb_train_000000.bin", np.ones(10, np.uint16))  # data.json lists train shards

    cfg = base_config()
    cfg.data.source, cfg.data.dir, cfg.data.tokenizer = "dir", str(out), str(tok)
    m = cfg.model
    m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.compute_dtype = V, 2, 64, 4, 2, "float32"
    cfg.train.seq_len, cfg.eval.max_tokens, cfg.eval.batch_tokens = 128, 2000, 16 * 128
    cfg.eval.stages, cfg.eval.sliding.stride = "roundtrip,sliding", 64
    data = load_data(cfg)
    assert data.lut.source == "sidecar" and len(data.val_tokens) == len(data.lut.sidecar) == 15 * 128 + 1
    lut = build_byte_luts(sp, V)
    t = np.arange(len(data.val_tokens) - 1)
    np.testing.assert_array_equal(target_bytes(data.lut, data.val_tokens[:-1], data.val_tokens[1:], target_index=t),
                                  target_bytes(lut, data.val_tokens[:-1], data.val_tokens[1:]))

    mesh = mesh_lib.make_mesh()
    model = model_lib.build_model(m)
    params = jax.device_get(model.init(jax.random.PRNGKey(0), np.zeros((1, 128), np.int32))["params"])
    quiet = lambda *a, **k: None  # noqa: E731
    with_sidecar = stages.run_stages(cfg, model, params, stages.Val(data.val_tokens, data.lut), mesh, log=quiet)
    with_lut = stages.run_stages(cfg, model, params, stages.Val(data.val_tokens, lut), mesh, log=quiet)
    for name in ("roundtrip", "sliding"):
        a, b = with_sidecar[name], with_lut[name]
        assert a.bytes == b.bytes == int(target_bytes(lut, data.val_tokens[:-1], data.val_tokens[1:]).sum())
        assert a.val_loss == b.val_loss and a.val_bpb == b.val_bpb

    cfg.audit.source = "val"
    piece = procedure.data_slice(cfg, 128)
    assert piece.lut.source == "sidecar"
    np.testing.assert_array_equal(piece.lut.sidecar, data.lut.sidecar[: len(piece.tokens)])


@pytest.mark.shared_data
def test_official_sp8192_without_caseops(shared_data, tmp_path):
    """The SP8192 tokenizer of the #1394 lineage builds plain shards (no sidecar) and counts bytes by its LUT."""
    import unicodedata

    model = shared_data / "tokenizers" / "fineweb_8192_bpe.model"
    docs = [" ".join(unicodedata.normalize("NFKC", d).split()) for d in _small_docs(shared_data, 5)]
    manifest = build(model, [_jsonl(tmp_path / "v.jsonl", docs)], [], tmp_path / "sp8192", Options(100_000))
    assert manifest["tokenizer"]["vocab_size"] == 8192 and manifest["text_transform"] == "identity"
    assert "byte_sidecar" not in manifest["splits"]["val"] and not list((tmp_path / "sp8192").glob("*_bytes_*"))
    tokens = shards.load_tokens(str(tmp_path / "sp8192" / "fineweb_val_*.bin"), vocab_size=8192)
    assert tokens.max() > 1024
    sp = spm.SentencePieceProcessor(model_file=str(model))
    lut = source.val_byte_lut(sp, 8192, tmp_path / "sp8192", tokens)
    assert lut.source == "lut" and lut.size == 8192
    assert int(target_bytes(lut, tokens[:-1], tokens[1:]).sum()) == sum(len(d.encode("utf-8")) for d in docs)
