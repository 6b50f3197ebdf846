"""Byte LUTs, target byte counts and bpb, checked against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from golf_jax.data.tokenizer import ByteLUT, build_byte_luts, load_tokenizer, target_bytes
from golf_jax.eval.bpb import BpbAccumulator, bits_per_byte

# A hand-made 5-token table: 0,1 boundaries; 2 = "▁abc"; 3 = "xy"; 4 = "▁q".
HAND_LUT = ByteLUT(
    np.array([0, 0, 3, 2, 1], dtype=np.int16),
    np.array([False, False, True, False, True]),
    np.array([True, True, False, False, False]),
)


def test_target_bytes_hand_example():
    prev = np.array([1, 2, 3, 4])
    tgt = np.array([2, 4, 2, 1])
    # 2 after a boundary: 3; 4 after text: 1+1; 2 after text: 3+1; boundary target: 0.
    np.testing.assert_array_equal(target_bytes(HAND_LUT, prev, tgt), [3, 2, 4, 0])


def test_bpb_hand_example():
    acc = BpbAccumulator("unit")
    acc.add(6.0, 3, 5)
    acc.add(np.float32(4.0), np.int64(1), 4)
    # ΣNLL = 10 nats, 4 tokens, 9 bytes: loss 2.5; bpb = 10 / (9 ln 2) = 1.6029944898766.
    assert acc.val_loss == 2.5
    assert acc.val_bpb == pytest.approx(1.6029944898766, rel=1e-12)
    assert acc.tokens_per_byte == pytest.approx(4 / 9)
    assert bits_per_byte(10.0, 9) == pytest.approx(1.6029944898766, rel=1e-12)
    other = BpbAccumulator("unit")
    other.add(1.5, 2, 3)  # merged sums: 11.5 nats over 12 bytes -> 1.3825827475186
    assert acc.merge(other).val_bpb == pytest.approx(1.3825827475186, rel=1e-12)
    assert acc.token_count == 6


def test_bpb_errors():
    acc = BpbAccumulator("int6_sliding")
    with pytest.raises(ValueError, match="int6_sliding.*not finite"):
        acc.add(float("nan"), 4, 10)
    acc.add(1.0, 1, 0)
    with pytest.raises(ValueError, match="int6_sliding: byte count is 0"):
        _ = acc.val_bpb
    with pytest.raises(ValueError, match="no tokens"):
        _ = BpbAccumulator().val_loss
    with pytest.raises(ValueError):
        bits_per_byte(1.0, 0)
    with pytest.raises(ValueError):
        bits_per_byte(math.inf, 3)


@pytest.mark.shared_data
def test_load_tokenizer_errors(shared_data, tmp_path):
    model = shared_data / "tokenizers" / "fineweb_1024_bpe.model"
    assert load_tokenizer(model, 1024).vocab_size() == 1024
    with pytest.raises(ValueError) as info:
        load_tokenizer(model, 8192)
    text = str(info.value)
    assert "1024" in text and "8192" in text and "model.vocab_size" in text
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.model", 1024)
    (tmp_path / "junk.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(ValueError, match="could not be loaded"):
        load_tokenizer(tmp_path / "junk.model", 1024)


@pytest.mark.shared_data
def test_sp1024_luts(shared_data):
    sp = load_tokenizer(shared_data / "tokenizers" / "fineweb_1024_bpe.model", 1024)
    lut = build_byte_luts(sp, 1024)
    assert lut.base_bytes.dtype == np.int16 and lut.size == 1024
    # Specials: <pad> <s> </s> <unk> are boundaries with 0 bytes.
    assert lut.is_boundary[:4].all() and not lut.is_boundary[4:].any()
    assert (lut.base_bytes[:4] == 0).all() and not lut.has_leading_space[:4].any()
    # Byte-fallback pieces 4..259 count one byte, no space flag.
    assert (lut.base_bytes[4:260] == 1).all() and not lut.has_leading_space[4:260].any()
    # The lone "▁" (id 939): a space flag and 0 base bytes; "▁the" (267): 3 + flag.
    assert lut.has_leading_space[939] and lut.base_bytes[939] == 0
    assert lut.has_leading_space[267] and lut.base_bytes[267] == 3
    assert int(lut.has_leading_space.sum()) == 325  # docs/reference-notes.md#shared-data-facts
    # A table wider than the tokenizer: extra ids are boundaries with 0 bytes.
    wide = build_byte_luts(sp, 1100)
    assert wide.size == 1100 and wide.is_boundary[1024:].all() and wide.base_bytes[1024:].sum() == 0

    # Hand-checked encoding: "Hello world, the café." is 23 UTF-8 bytes.
    ids = sp.encode("Hello world, the café.")
    assert ids == [981, 465, 943, 458, 401, 962, 267, 274, 942, 956, 199, 173, 960]
    toks = np.array([1] + ids)
    got = target_bytes(lut, toks[:-1], toks[1:])
    # H ell o ▁wor ld , ▁the ▁c a f <0xC3> <0xA9> .
    np.testing.assert_array_equal(got, [1, 3, 1, 4, 2, 1, 4, 2, 1, 1, 1, 1, 1])
    # "▁the" right after BOS gets no space byte; after text it does.
    after_bos = target_bytes(lut, np.array([1, 267]), np.array([267, 290]))
    np.testing.assert_array_equal(after_bos, [3, 4])


@pytest.mark.shared_data
def test_fineweb200_tokens_per_byte(shared_data):
    from golf_jax.data.prepare import encode_documents, iter_documents

    sp = load_tokenizer(shared_data / "tokenizers" / "fineweb_1024_bpe.model", 1024)
    lut = build_byte_luts(sp, 1024)
    docs = list(iter_documents(shared_data / "text" / "fineweb_val_200.jsonl"))
    stream = np.concatenate(encode_documents(sp, docs))
    assert len(docs) == 200 and stream.size == 628_457  # docs/reference-notes.md#shared-data-facts
    nbytes = int(target_bytes(lut, stream[:-1], stream[1:]).sum())
    assert nbytes == 1_489_418
    assert abs((stream.size - 1) / nbytes - 0.42195) < 5e-5
