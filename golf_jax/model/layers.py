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


# model.matrix_init: "torch_default" (nn.Linear's U(±1/√in)) or "orthogonal" (the records)
MATRIX_INITS = {"torch_default": torch_linear_init, "orthogonal": torch_orthogonal}


def matmul_2d(x_xI: jax.Array, w_IxO: jax.Array) -> jax.Array:
    """`x @ w` for x of any leading dims [..., I], flattened into one for a 2-D dot.

    Same maths as a [B, T, I] dot, but XLA:CPU lays out a 3-D dot's weight gradient by
    writing the [B, T, O] output gradient transposed (a strided copy of activation size,
    15% of a train step); the 2-D form has none (docs/perf.md). The reshapes are bitcasts.
    """
    y = jnp.dot(x_xI.reshape(-1, x_xI.shape[-1]), w_IxO)
    return y.reshape(*x_xI.shape[:-1], w_IxO.shape[-1])


class Linear(nn.Module):
    """Bias-free linear: an fp32 `(in, out)` kernel cast to the activation dtype at use."""

    features: int
    dtype: jnp.dtype = jnp.bfloat16
    kernel_init: Initializer = torch_linear_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        return matmul_2d(x.astype(self.dtype), kernel.astype(self.dtype))


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


# model.attention_impl: "auto" is cuDNN on GPU, else "chunked"
ATTENTION_IMPLS = ("auto", "xla", "chunked", "cudnn")


def chunked_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segment_ids_BxT=None, block: int = 0):
    """Causal GQA attention by query blocks, for where no fused kernel exists (the CPU).

    Block [a, b) scores keys [0, a) unmasked and its own keys [a, b) causally, so the
    scores above the diagonal (about half of T×T) are never formed and a block's stay in
    cache; q is scaled before the matmul and the softmax normalised after the PV matmul,
    which saves two passes over the scores (docs/perf.md). The G query heads of a KV head
    are rows of one matmul. Block 0: 64 rows, or T/16 past T = 1024 (bounds the unrolled
    blocks, so the compile time). Every row sees its own key, so its max is finite.
    """
    B, T, N, H = q_BxTxNxH.shape
    K = k_BxTxKxH.shape[2]
    G, block, seg = N // K, block or max(64, T // 16), segment_ids_BxT
    q = (q_BxTxNxH * (1.0 / math.sqrt(H))).reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4)
    k, v = k_BxTxKxH.transpose(0, 2, 1, 3), v_BxTxKxH.transpose(0, 2, 1, 3)
    outs = []
    for a in range(0, T, block):
        b = min(a + block, T)
        spans, scores = [(0, a), (a, b)] if a else [(a, b)], []
        for lo, hi in spans:
            sc = jnp.einsum("bkrh,bksh->bkrs", q[:, :, :, a:b].reshape(B, K, -1, H), k[:, :, lo:hi],
                            preferred_element_type=jnp.float32).reshape(B, K, G, b - a, hi - lo)
            mask = jnp.tri(b - a, dtype=bool) if lo == a else True
            if seg is not None:
                mask = (mask & (seg[:, a:b, None] == seg[:, None, lo:hi]))[:, None, None]
            scores.append(sc if mask is True else jnp.where(mask, sc, -jnp.inf))
        m = scores[0].max(-1, keepdims=True)
        if a:
            m = jnp.maximum(m, scores[1].max(-1, keepdims=True))
        e = [jnp.exp(sc - jax.lax.stop_gradient(m)) for sc in scores]
        o = sum(jnp.einsum("bkrs,bksh->bkrh", p.astype(v.dtype).reshape(B, K, -1, hi - lo), v[:, :, lo:hi],
                           preferred_element_type=jnp.float32) for p, (lo, hi) in zip(e, spans))
        outs.append((o.reshape(B, K, G, b - a, H) / sum(p.sum(-1, keepdims=True) for p in e)).astype(v.dtype))
    return jnp.concatenate(outs, axis=3).transpose(0, 3, 1, 2, 4).reshape(B, T, N, H)


def compile_platform(x: jax.Array) -> str:
    """The platform of the devices the traced program is compiled for: the mesh of the trace's
    shardings says it (an ahead-of-time compile for H100s on a CPU host says "gpu"); where the
    trace carries none, the process's default backend."""
    device = jax.typeof(x).sharding.mesh.abstract_device
    return device.platform if device else jax.default_backend()


def causal_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, implementation: str = "auto",
                     segment_ids_BxT: jax.Array | None = None):
    """Causal GQA attention (scale 1/√H); `segment_ids_BxT` (documents packed in one row)
    also masks attention across segments, so each document sees only itself.

    "auto": cuDNN flash attention in a program compiled for a GPU (`compile_platform`;
    segments go in as its mask), else, or where cuDNN refuses the shape (it raises while
    tracing), the chunked path. Chosen while tracing, not with `lax.platform_dependent`: a
    VJP through that keeps both branches' residuals, and where the VJP is an output (phased
    TTT's LoRA forward) every layer's chunked scores would be materialized as zeros.
    "xla": jax's reference path, which forms all T×T scores.
    """
    seg = segment_ids_BxT
    mask = None if seg is None else (seg[:, :, None] == seg[:, None, :])[:, None]
    gpu = compile_platform(q_BxTxNxH) == "gpu"
    impl = "cudnn" if implementation == "auto" and gpu else implementation
    if impl in ("cudnn", "xla"):
        try:
            return jax.nn.dot_product_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask=mask, is_causal=True,
                                                implementation=impl)
        except (RuntimeError, ValueError, NotImplementedError):
            if implementation != "auto":
                raise
    return chunked_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, seg)


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


def lora_delta(x: jax.Array, lora: dict | None, name: str, dtype) -> jax.Array | float:
    """`scale · (x Aᵀ) Bᵀ` of the adapter `name`, each row b of x with its own (A [B, r, in],
    B [B, out, r]), or 0 without one.

    The per-document LoRA of phased TTT (#1855): B starts at 0, so a fresh adapter
    leaves the model unchanged. Rows are a batch axis of the matmuls (as the reference's
    bmm), not a vmap of the model: cuDNN's attention under vmap cannot take the segment
    mask. In the compute dtype, as the reference's autocast runs it:
    an fp32 delta would make q, k and v fp32, which cuDNN's attention refuses (the chunked
    path then ran every phased-TTT forward on a GPU; docs/perf.md).
    """
    if lora is None or name + "_A" not in lora:
        return 0.0
    a, b = lora[name + "_A"].astype(dtype), lora[name + "_B"].astype(dtype)
    return (x.astype(dtype) @ a.mT) @ b.mT * lora["scale"].astype(dtype)  # [B, T, in] @ [B, in, r] @ [B, r, out]


def softcap(logits: jax.Array, cap: float) -> jax.Array:
    return cap * jnp.tanh(logits / cap)


def cross_entropy_BxT(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Per-token NLL in fp32 (logits are upcast before log-softmax, as the reference does)."""
    logits = logits_BxTxV.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets_BxT[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return logz - picked
