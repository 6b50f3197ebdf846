"""The attention paths of golf_jax.model.layers.causal_attention agree with jax's XLA path,
and tools/torch_side_by_side.py skips cleanly without the PyTorch reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golf_jax.model import layers


def qkv_seg(B, T, N, K, H, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(B, T, n, H)), jnp.float32) for n in (N, K, K))
    seg = jnp.asarray(np.cumsum(rng.random((B, T)) < 0.1, axis=1), jnp.int32)  # documents packed in rows
    return q, k, v, seg


@jax.jit
def paths_and_grads(q, k, v, seg, w):
    """(chunked, xla) outputs and their (dq, dk, dv) of Σ out·w: one compile per shape."""

    def run(fn):
        out, pull = jax.vjp(fn, q, k, v)
        return out, pull(w)

    return (run(lambda q, k, v: layers.chunked_attention(q, k, v, seg, block=8)),
            run(lambda q, k, v: layers.causal_attention(q, k, v, "xla", seg)))


@pytest.mark.parametrize("shape,segments", [((2, 37, 6, 3, 4), True), ((1, 37, 6, 3, 4), False),
                                            ((2, 24, 4, 4, 8), True), ((1, 16, 4, 1, 8), False)],
                         ids=["gqa-segments", "gqa", "mha-segments", "mqa"])
def test_chunked_matches_xla(shape, segments):
    """Several query blocks (block 8, a ragged last one) against jax.nn.dot_product_attention,
    outputs and the gradients training takes through them."""
    q, k, v, seg = qkv_seg(*shape)
    seg = seg if segments else None
    w = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)
    (got, got_grads), (want, want_grads) = paths_and_grads(q, k, v, seg, w)
    for a, b in zip((got, *got_grads), (want, *want_grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_auto_is_chunked_on_cpu_and_an_explicit_cudnn_keeps_its_error():
    """"auto" is the chunked path in a program compiled for the CPU (it chooses by the platform it is
    compiled for: tests/test_target.py compiles it for an H100), while an explicit "cudnn" raises
    (no cuDNN here, or with the CUDA plugin installed: f32 inputs it refuses)."""
    q, k, v, seg = qkv_seg(1, 16, 4, 2, 8, seed=3)
    attend = jax.jit(layers.causal_attention, static_argnums=3)
    want = np.asarray(jax.jit(layers.chunked_attention)(q, k, v, seg))
    np.testing.assert_array_equal(np.asarray(attend(q, k, v, "auto", seg)), want)
    with pytest.raises((RuntimeError, ValueError)):
        attend(q, k, v, "cudnn", seg)


def test_unknown_attention_impl_is_a_config_error():
    from configs import smoke
    from golf_jax import model as model_lib

    m = smoke.get_config().model
    m.attention_impl = "flash"
    with pytest.raises(ValueError, match="model.attention_impl='flash'"):
        model_lib.build_model(m)


def test_side_by_side_skips_without_reference(tmp_path, capsys):
    from tools import torch_side_by_side

    assert torch_side_by_side.main(["--ref", str(tmp_path / "train_gpt.py")]) == 0
    assert capsys.readouterr().out.startswith("skip: the reference")
