"""Per-group compression (#1855): the L1 row sort, exact round trips, reported bytes."""

from __future__ import annotations

import numpy as np
import pytest

from golf_jax.config import base_config
from golf_jax.quant import compress, container, export, lowrank, pergroup
from golf_jax.quant.container import ContainerError, QuantTensor


def _ref_similarity_sort_l1(matrix: np.ndarray) -> np.ndarray:
    """Direct transcription of the reference's _similarity_sort_l1 (float32 distances)."""
    n = matrix.shape[0]
    used = np.zeros(n, dtype=bool)
    order, used[0], cur = [0], True, matrix[0].astype(np.float32)
    for _ in range(n - 1):
        dists = np.sum(np.abs(matrix[~used].astype(np.float32) - cur), axis=1)
        best = np.where(~used)[0][np.argmin(dists)]
        order.append(best)
        used[best] = True
        cur = matrix[best].astype(np.float32)
    return np.array(order)


def test_similarity_order_matches_the_reference():
    rng = np.random.default_rng(0)
    for rows, cols, hi in ((50, 7, 1), (64, 16, 31), (33, 5, 2)):  # small ranges: many ties
        q = rng.integers(-hi, hi + 1, (rows, cols)).astype(np.int8)
        q[5] = q[9] = q[20]  # exact duplicates
        np.testing.assert_array_equal(pergroup.similarity_order(q), _ref_similarity_sort_l1(q))
    assert pergroup.similarity_order(np.zeros((0, 3), np.int8)).size == 0


def _tensors(seed: int = 0, layers: int = 3) -> dict[str, QuantTensor]:
    """Codes with row structure (noisy copies of a few prototypes, shuffled) so that sorting pays."""
    rng = np.random.default_rng(seed)

    def codes(rows, cols, clip=31):
        protos = rng.normal(0, 6, (8, cols))
        x = protos[rng.integers(0, 8, rows)] + rng.normal(0, 1.5, (rows, cols))
        return np.clip(np.rint(x), -clip, clip).astype(np.int8)

    def scales(n):
        return rng.uniform(0.01, 0.1, n).astype(np.float16)

    out = {"tok_emb/embedding": QuantTensor("int7", codes(256, 64, 63), scales(256))}
    for i in range(layers):
        for name, (r, c) in {"attn/c_q/kernel": (64, 64), "attn/c_k/kernel": (128, 32),
                             "mlp/fc/kernel": (256, 64), "mlp/proj/kernel": (64, 256)}.items():
            out[f"blocks_{i}/{name}"] = QuantTensor("int6", codes(r, c), scales(r))
        out[f"blocks_{i}/attn/attn_gate_w"] = QuantTensor("int8", codes(4, 12, 127), scales(4))
        out[f"blocks_{i}/attn_scale"] = container.passthrough(rng.standard_normal(64).astype(np.float32), "fp16")
    a = lowrank.quantize_asym(rng.standard_normal((256, 4)), 2, 1024)
    b = lowrank.quantize_asym(rng.standard_normal((4, 64)), 4, 64)
    out["blocks_0/mlp/fc/kernel"].lqer = (a, b)
    return out


def _assert_same(got: dict[str, QuantTensor], want: dict[str, QuantTensor]) -> None:
    assert list(got) == list(want)
    for name, w in want.items():
        g = got[name]
        assert g.kind == w.kind and g.shape == w.shape, name
        np.testing.assert_array_equal(g.data, w.data.astype(g.data.dtype), err_msg=name)
        if w.scale is not None:
            np.testing.assert_array_equal(g.scale, w.scale, err_msg=name)
        assert (g.lqer is None) == (w.lqer is None), name
        for fg, fw in zip(g.lqer or (), w.lqer or ()):
            np.testing.assert_array_equal(fg.q, fw.q)
            np.testing.assert_array_equal(fg.scale, fw.scale)


def test_round_trip_is_exact_and_bytes_are_reported():
    tensors = _tensors()
    raw = container.pack(tensors, "int8")
    blob = pergroup.encode(raw, "brotli")
    assert pergroup.decode(blob) == raw
    _assert_same(pergroup.deserialize(blob), tensors)
    sizes = pergroup.stream_bytes(blob)
    assert sizes["header"] + sum(sizes["groups"].values()) + sizes["orders"] + sizes["rest"] == len(blob)
    assert set(sizes["groups"]) == {"tok_emb/embedding", "attn/c_q/kernel", "attn/c_k/kernel", "mlp/fc/kernel",
                                   "mlp/proj/kernel"}  # the 4×12 gates stay in the rest
    # any stored order decodes exactly (export reuses the unpruned orders for its pruning probes)
    stale = {n: o[::-1].copy() for n, o in pergroup.row_orders(raw).items()}
    assert pergroup.decode(pergroup.encode(raw, "brotli", stale)) == raw
    # the L1 sort pays on row-structured codes; both beat brotli on the whole container
    unsorted = pergroup.encode(raw, "brotli", {n: np.arange(len(o)) for n, o in stale.items()})
    plain = compress.compress(raw, "brotli")
    print(f"pergroup sorted {len(blob)} B, unsorted {len(unsorted)} B, brotli {len(plain)} B")
    assert len(blob) < len(unsorted) < len(plain)
    # plain GOLFJAX1 blobs pass through deserialize; the container reader names the per-group reader
    _assert_same(pergroup.deserialize(container.serialize(tensors)), tensors)
    with pytest.raises(ContainerError, match="golf_jax.quant.export.read_tensors"):
        container.deserialize(blob)
    _assert_same(export.read_tensors(blob), tensors)
    with pytest.raises(ValueError, match="not a permutation"):
        pergroup.encode(raw, "brotli", {"tok_emb/embedding": np.zeros(256, np.int64)})


@pytest.mark.parametrize("cut", [10, -5])
def test_truncated_or_corrupted(cut):
    blob = pergroup.serialize(_tensors(layers=1))
    with pytest.raises(ContainerError):
        pergroup.deserialize(blob[:cut] if cut > 0 else blob[:cut])
    bad = bytearray(blob)
    bad[-3] ^= 0xFF  # inside the rest stream
    with pytest.raises(ContainerError):
        pergroup.deserialize(bytes(bad))


def test_zpaq_codec():
    pytest.importorskip("zpaq")
    tensors = _tensors(layers=1)
    blob = pergroup.serialize(tensors, "zpaq")
    assert pergroup.stream_bytes(blob)["codec"] == "zpaq"
    _assert_same(pergroup.deserialize(blob), tensors)


def test_export_with_pergroup_compression(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "PASSTHROUGH_MAX_NUMEL", 1024)
    rng = np.random.default_rng(1)
    params = {f"blocks_{i}": {"mlp": {"fc": {"kernel": (0.1 * rng.standard_t(5, (64, 256))).astype(np.float32)}},
                              "attn_scale": np.ones(64, np.float32)} for i in range(2)}
    params["tok_emb"] = {"embedding": (0.05 * rng.standard_normal((128, 64))).astype(np.float32)}
    labels = {k: {"mlp": {"fc": {"kernel": "muon"}}, "attn_scale": "scalar"} for k in params if k != "tok_emb"}
    labels["tok_emb"] = {"embedding": "embed"}
    c = base_config()
    c.export.format, c.export.compressor, c.export.lqer_rank = "rtn_int6", "pergroup_brotli", 4
    info = export.export_artifact(params, labels, c, tmp_path, 0)
    rep = info.report["pergroup_bytes"]
    assert rep["total"] == info.weight_bytes and rep["codec"] == "brotli" and info.report["int6_storage"] == "int8"
    tensors, _ = export.quantize_int6(export.named_arrays(params), export.flat_labels(labels), c.export, None)
    want = container.dequantize_all(tensors)
    loaded = export.load_artifact(info.path, params)
    np.testing.assert_array_equal(loaded["blocks_1"]["mlp"]["fc"]["kernel"], want["blocks_1/mlp/fc/kernel"].T)
    np.testing.assert_array_equal(loaded["tok_emb"]["embedding"], want["tok_emb/embedding"])
    for kw, msg in [(dict(compressor="pergroup_brotli", format="int8_zlib"), "needs export.format"),
                    (dict(compressor="pergroup_brotli", format="rtn_int6", int6_storage="packed6"),
                     "export.int6_storage='auto'"),
                    (dict(compressor="xz"), "export.compressor='xz'")]:
        cc = base_config()
        for k, v in kw.items():
            setattr(cc.export, k, v)
        with pytest.raises(ValueError, match=msg):
            export.check_config(cc.export)
