"""Layers shared by the golf_jax GPTs (Flax Linen, params fp32, compute in `dtype`).

Weights are `(in, out)` kernels used as `x @ W`; the PyTorch reference stores
`(out, in)`, so conversions happen only at its boundary (fixtures, export).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

Initializer = Callable[..., jax.Array]


def rms_norm(x: jax.Array, eps: float | None = None) -> jax.Array:
    """Weightless RMSNorm in fp32 opmath; eps=None is fp32 machine epsilon (torch)."""
    eps = float(jnp.finfo(jnp.float32).eps) if eps is None else eps
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype)


def torch_linear_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """torch.nn.Linear's default init, U(±1/√in), for an (in, out) kernel."""
    bound = 1.0 / math.sqrt(shape[-2])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_orthogonal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """`torch.nn.init.orthogonal_` (gain 1) of the torch `(out, in)` matrix, returned as `(in, out)`.

    torch: rows orthonormal when out ≤ in, else columns; the QR sign fix `q·sign(diag r)`
    makes the draw a Haar sample. Only the distribution matters (different RNG).
    """
    fan_in, fan_out = shape[-2], shape[-1]
    rows, cols = fan_out, fan_in
    flat = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
    q, r = jnp.linalg.qr(flat)
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    w_outxin = q.T if rows < cols else q  # (rows, cols)
    return w_outxin.T.astype(dtype)


def linear_override_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """The record reference's post-hoc pass over nn.Linear modules (L959–964): orthogonal
    when both dims are ≥ 64, else the module's own zero init stays (bigram.proj, ve proj)."""
    if shape[-2] >= 64 and shape[-1] >= 64:
        return torch_orthogonal(key, shape, dtype)
    return jnp.zeros(shape, dtype)


MATRIX_INITS = {"torch_default": torch_linear_init, "orthogonal": torch_orthogonal}


class Linear(nn.Module):
    """Bias-free linear: an fp32 `(in, out)` kernel cast to the activation dtype at use."""

    features: int
    dtype: jnp.dtype = jnp.bfloat16
    kernel_init: Initializer = torch_linear_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))


def rotary_cos_sin(seq_len: int, rot_dims: int, base: float, dtype) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [T, rot_dims/2], angles in fp32 and then cast, as the reference does."""
    inv_freq = 1.0 / (base ** (jnp.arange(0, rot_dims, 2, dtype=jnp.float32) / rot_dims))
    angles_TxR = jnp.outer(jnp.arange(seq_len, dtype=jnp.float32), inv_freq)
    return jnp.cos(angles_TxR).astype(dtype), jnp.sin(angles_TxR).astype(dtype)


def apply_rotary(x_BxTxNxH: jax.Array, cos_TxR: jax.Array, sin_TxR: jax.Array) -> jax.Array:
    """Rotate the first 2R dims by −θ: (a·cos + b·sin, −a·sin + b·cos); the rest pass through."""
    half = cos_TxR.shape[-1]
    a, b = x_BxTxNxH[..., :half], x_BxTxNxH[..., half : 2 * half]
    cos, sin = cos_TxR[None, :, None, :], sin_TxR[None, :, None, :]
    rotated = [a * cos + b * sin, -a * sin + b * cos]
    if 2 * half < x_BxTxNxH.shape[-1]:
        rotated.append(x_BxTxNxH[..., 2 * half :])
    return jnp.concatenate(rotated, axis=-1)


def default_attention_impl() -> str | None:
    """cuDNN flash attention on GPU, XLA elsewhere (cuDNN raises on CPU)."""
    return "cudnn" if jax.default_backend() == "gpu" else None


def causal_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, implementation: str | None = "auto",
                     segment_ids_BxT: jax.Array | None = None):
    """Causal GQA attention through jax.nn.dot_product_attention (scale 1/√H).

    `segment_ids_BxT` (documents packed in one row) also masks attention across
    segments, so each document sees only itself; that path uses XLA's kernel.
    """
    if implementation == "auto":
        implementation = default_attention_impl()
    mask = None
    if segment_ids_BxT is not None:
        mask = (segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :])[:, None, :, :]
        implementation = None
    return jax.nn.dot_product_attention(
        q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask=mask, is_causal=True, implementation=implementation
    )


def normed_rotary_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, q_gain_N, rot_dims: int, rope_base: float, implementation,
                            segment_ids_BxT: jax.Array | None = None):
    """The attention core every block shares: QK RMS-norm, RoPE, per-head q gain, causal GQA.

    With unit-norm q and k the attention logit is q_gain·cos(q, k)·√H, bounded by the gain.
    RoPE is relative, so a document packed at any offset of a segmented row attends
    exactly as it would alone.
    """
    q, k = rms_norm(q_BxTxNxH), rms_norm(k_BxTxKxH)
    cos, sin = rotary_cos_sin(q.shape[1], rot_dims, rope_base, q.dtype)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    q = q * q_gain_N.astype(q.dtype)[None, None, :, None]
    return causal_attention(q, k, v_BxTxKxH, implementation, segment_ids_BxT)


def lora_delta(x: jax.Array, lora: dict | None, name: str) -> jax.Array | float:
    """`scale · (x Aᵀ) Bᵀ` of the adapter `name` (A [r, in], B [out, r]), or 0 without one.

    The per-document LoRA of phased TTT (#1855): B starts at 0, so a fresh adapter
    leaves the model unchanged.
    """
    if lora is None or name + "_A" not in lora:
        return 0.0
    a, b = lora[name + "_A"].astype(x.dtype), lora[name + "_B"].astype(x.dtype)
    return (x @ a.T) @ b.T * lora["scale"].astype(x.dtype)


def softcap(logits: jax.Array, cap: float) -> jax.Array:
    return cap * jnp.tanh(logits / cap)


def cross_entropy_BxT(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Per-token NLL in fp32 (logits are upcast before log-softmax, as the reference does)."""
    logits = logits_BxTxV.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets_BxT[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return logz - picked
