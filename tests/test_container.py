"""GOLFJAX1 container and the compressors: exact round trips and clear errors."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from golf_jax.quant.compress import (
    CompressionError,
    byte_shuffle,
    byte_unshuffle,
    compress,
    decompress,
    method_of,
)
from golf_jax.quant.container import (
    ContainerError,
    QuantTensor,
    dequantize_all,
    deserialize,
    int6_storage_of,
    pack,
    pack6,
    passthrough,
    serialize,
    unpack,
    unpack6,
)

COMPRESSORS = [None, "lzma", "brotli", "zstd"]


def _tensors(seed: int = 0) -> dict[str, QuantTensor]:
    rng = np.random.default_rng(seed)

    def scales(n):
        return rng.uniform(0.01, 0.1, n).astype(np.float16)

    int6 = np.clip(np.rint(rng.normal(0, 5, (24, 37))), -32, 31).astype(np.int8)
    int6[0, :4] = [-32, 31, -31, 0]
    fp16 = rng.standard_normal((3, 4, 5)).astype(np.float16)
    fp16.reshape(-1)[:3] = [np.inf, -np.inf, np.nan]
    return {
        "blocks.0.attn.c_q.weight": QuantTensor("int6", int6, scales(24)),
        "tok_emb.weight": QuantTensor("int8", rng.integers(-128, 128, (16, 8), dtype=np.int8), scales(16), "bfloat16"),
        "ve.embed.weight": QuantTensor("int7", rng.integers(-64, 64, (5, 7), dtype=np.int8), scales(5), "bfloat16"),
        "skip_weights": passthrough(fp16.astype(np.float32), "fp16"),
        "scalar": passthrough(np.float32(0.1234567), "fp32"),
        "q_gain": passthrough(rng.standard_normal(6).astype(np.float32), "fp32"),
        "bf16": passthrough(rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16), "bf16raw"),
        "empty": QuantTensor("int6", np.zeros((0, 4), np.int8), np.zeros(0, np.float16)),
    }


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def _assert_same(got: dict[str, QuantTensor], want: dict[str, QuantTensor]) -> None:
    assert list(got) == list(want)
    for name, w in want.items():
        g = got[name]
        assert (g.kind, g.shape, g.orig_dtype) == (w.kind, w.shape, w.orig_dtype), name
        assert g.data.dtype == w.data.dtype and _bits(g.data) == _bits(w.data), name
        if w.scale is None:
            assert g.scale is None
        else:
            assert g.scale.dtype == np.float16 and _bits(g.scale) == _bits(w.scale), name


@pytest.mark.parametrize("storage", ["int8", "packed6", "auto"])
@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_roundtrip_every_kind_and_compressor(storage, compressor):
    tensors = _tensors()
    blob = serialize(tensors, int6_storage=storage, compressor=compressor)
    assert (blob[:8] == b"GOLFJAX1") == (compressor is None)
    if compressor is not None:
        assert method_of(blob) == compressor
    if storage != "auto":
        assert int6_storage_of(blob) == storage
    _assert_same(deserialize(blob), tensors)


def test_dequantize_all():
    tensors = _tensors()
    out = dequantize_all(deserialize(serialize(tensors, compressor="zstd")))
    t = tensors["tok_emb.weight"]
    want = (t.data.astype(np.float32) * t.scale.astype(np.float32)[:, None]).astype(ml_dtypes.bfloat16)
    assert out["tok_emb.weight"].dtype == ml_dtypes.bfloat16
    assert _bits(out["tok_emb.weight"]) == _bits(want)
    q = tensors["blocks.0.attn.c_q.weight"]
    np.testing.assert_array_equal(out["blocks.0.attn.c_q.weight"], q.data * q.scale.astype(np.float32)[:, None])
    assert out["skip_weights"].dtype == np.float32 and out["scalar"].shape == ()
    raw = dequantize_all(tensors, cast=False)
    assert raw["skip_weights"].dtype == np.float16


def test_auto_keeps_the_smaller_layout():
    rng = np.random.default_rng(1)
    q = np.clip(np.rint(rng.normal(0, 5, (256, 512))), -31, 31).astype(np.int8)
    t = {"w": QuantTensor("int6", q, np.full(256, 0.03, np.float16))}
    for comp in ("lzma", "zstd"):
        sizes = {s: len(serialize(t, s, comp)) for s in ("int8", "packed6")}
        auto = serialize(t, "auto", comp)
        assert len(auto) == min(sizes.values())
        assert int6_storage_of(auto) == min(sizes, key=sizes.get)


def test_pack6_identity_on_all_values():
    vals = np.arange(-32, 32, dtype=np.int8)
    for n in range(0, 70):
        v = np.resize(np.roll(vals, n), n).astype(np.int8)
        buf = pack6(v)
        assert len(buf) == 3 * ((n + 3) // 4)
        np.testing.assert_array_equal(unpack6(buf, n), v)
    perm = np.random.default_rng(2).permutation(np.repeat(vals, 17)).astype(np.int8)
    np.testing.assert_array_equal(unpack6(pack6(perm), perm.size), perm)


def test_pack6_bit_layout():
    # word = 1 | 2<<6 | 3<<12 | (-1 & 63)<<18 = 0xFC3081, little-endian.
    assert pack6(np.array([1, 2, 3, -1], np.int8)) == bytes([0x81, 0x30, 0xFC])
    with pytest.raises(ValueError, match=r"\[-32, 31\]"):
        pack6(np.array([32], np.int8))


def test_invalid_tensors_are_rejected():
    with pytest.raises(ValueError, match="int6 values must lie"):
        serialize({"w": QuantTensor("int6", np.full((2, 2), 40, np.int8), np.ones(2, np.float16))})
    with pytest.raises(ValueError, match="scales"):
        serialize({"w": QuantTensor("int8", np.zeros((2, 2), np.int8), None)})
    with pytest.raises(ValueError, match="passthrough"):
        serialize({"w": QuantTensor("fp16", np.zeros(3, np.float32))})
    with pytest.raises(ValueError, match="unknown kind"):
        serialize({"w": QuantTensor("int4", np.zeros(3, np.int8))})


@pytest.mark.parametrize("compressor", ["lzma", "brotli", "zstd"])
def test_truncated_or_corrupted_compressed_blob(compressor):
    blob = serialize(_tensors(), "int8", compressor)
    with pytest.raises(ValueError, match="truncated or corrupted"):
        deserialize(blob[: len(blob) // 2])
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(ValueError, match="corrupted|malformed"):
        deserialize(bytes(bad))


def test_truncated_or_corrupted_raw_container():
    raw = pack(_tensors())
    with pytest.raises(ContainerError, match="truncated or corrupted"):
        unpack(raw[:-5])
    with pytest.raises(ContainerError, match="truncated or corrupted"):
        unpack(raw[:30])
    bad = bytearray(raw)
    bad[-10] ^= 0x01
    with pytest.raises(ContainerError, match="payload truncated or corrupted"):
        unpack(bytes(bad))
    with pytest.raises(ContainerError, match="not a GOLFJAX1"):
        unpack(b"NOTJAX01" + raw[8:])
    with pytest.raises(CompressionError, match="not a golf_jax compressed stream"):
        deserialize(b"\x09garbage")


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_byte_shuffle(stride):
    assert byte_shuffle(bytes([0, 1, 2, 3, 4]), 2) == bytes([0, 2, 4, 1, 3])
    for n in range(0, 13):
        data = bytes(range(100, 100 + n))
        assert byte_unshuffle(byte_shuffle(data, stride), stride) == data


@pytest.mark.parametrize("method", ["none", "lzma", "brotli", "zstd"])
def test_compress_roundtrip_is_self_describing(method):
    data = np.random.default_rng(3).integers(0, 8, 10001, dtype=np.uint8).tobytes()
    for shuffle in (None, 1, 2):
        blob = compress(data, method, shuffle=shuffle)
        assert method_of(blob) == method
        assert decompress(blob) == data
    with pytest.raises(ValueError, match="unknown compression method"):
        compress(data, "gzip")
