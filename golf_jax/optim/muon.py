"""Muon as an optax transform, with the Parameter Golf (PR #1318) semantics.

Why not `optax.contrib.muon`: it uses EMA momentum with bias correction, runs NS
in the momentum dtype and routes every 2-D leaf to Muon. The record uses sum-form
momentum (`buf = mu*buf + g`), Nesterov `g + mu*buf`, NS5 in bf16 and a momentum
that warms up from 0.92 to 0.99 (docs/reference-notes.md#muon), so we write the ~100 lines ourselves.

Weight layout: our kernels are `(in, out)` (Flax `Dense`); the reference stores
`(out, in)`. NS5 is transpose-equivariant, and the shape scale
`sqrt(max(1, rows/cols))` of the reference is `sqrt(max(1, out/in))` here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from golf_jax.core import mesh as mesh_lib

NS5_COEFFS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
# Polar Express (PR #1344, used by #1787 / #1855): per-iteration minimax coefficients
# for 5 steps; steps past the table reuse its last (converged) triple.
POLAR_EXPRESS_COEFFS: tuple[tuple[float, float, float], ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
# opt.muon_ns_coeffs: "standard" (3.4445, −4.775, 2.0315) every iteration, or "polar_express"'s
# per-iteration coefficients (#1787; docs/reference-notes.md#polar-express)
NS_COEFFS = {"standard": NS5_COEFFS, "polar_express": POLAR_EXPRESS_COEFFS}


def iteration_coeffs(coeffs, steps: int) -> list[tuple[float, float, float]]:
    """One (a, b, c) per iteration: a single triple repeats; a per-iteration table is
    used in order and its last triple repeats past its end."""
    if isinstance(coeffs[0], (int, float)):
        return [tuple(coeffs)] * steps
    return [tuple(coeffs[min(i, len(coeffs) - 1)]) for i in range(steps)]


def newton_schulz5(
    g: jax.Array,
    steps: int = 5,
    eps: float = 1e-7,
    coeffs: Any = NS5_COEFFS,
    dtype: Any = jnp.bfloat16,
) -> jax.Array:
    """Approximately orthogonalize each trailing matrix of `g` (docs/reference-notes.md#muon, NS5).

    `coeffs` is one (a, b, c) for every iteration or a per-iteration table (Polar Express).

    Leading axes are batch axes (stacked "banks"); each matrix is handled
    independently. Returns an array of `dtype` with the shape of `g`.
    """
    if g.ndim < 2:
        raise ValueError(f"newton_schulz5 needs an array with ndim >= 2, got shape {g.shape}")
    dtype = jnp.dtype(dtype)
    # The Frobenius norm is taken in at least fp32 so that a bf16 run only rounds X.
    norm_dtype = jnp.promote_types(dtype, jnp.float32)
    x = g.astype(norm_dtype)
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))
    x = (x / (norm + eps)).astype(dtype)
    tall = g.shape[-2] > g.shape[-1]
    if tall:  # iterate on the wide orientation: X Xᵀ is the smaller Gram matrix
        x = jnp.swapaxes(x, -1, -2)
    # Matmul inputs are `dtype`; accumulation and the polynomial's elementwise
    # terms are fp32, as in torch (fp32 accumulate, fp32 "opmath" for `b*A`). In
    # plain JAX a Python coefficient would be rounded to bf16 (-4.775 -> -4.78125),
    # which doubles the error of the bf16 iteration.
    # fp32/fp64 runs are the numerics reference: do not let XLA use TF32 on GPU.
    precision = None if dtype == jnp.bfloat16 else jax.lax.Precision.HIGHEST

    def mm(u: jax.Array, v: jax.Array) -> jax.Array:
        return jnp.matmul(u, v, precision=precision, preferred_element_type=norm_dtype)

    for a, b, c in iteration_coeffs(coeffs, steps):
        gram = mm(x, jnp.swapaxes(x, -1, -2))
        poly = b * gram + c * mm(gram.astype(dtype), gram.astype(dtype))
        x = (a * x.astype(norm_dtype) + mm(poly.astype(dtype), x)).astype(dtype)
    if tall:
        x = jnp.swapaxes(x, -1, -2)
    return x


def newton_schulz_sharded(mats: list[jax.Array], mesh: Mesh, **ns_kwargs: Any) -> list[jax.Array]:
    """Parallel Muon (docs/reference-notes.md#muon): `newton_schulz5` of each matrix, the work split over
    the mesh's data axis instead of repeated on every device.

    Matrices of one shape are stacked into a bank, padded with zero matrices (which stay
    zero) to a multiple of the device count, and sharded along the bank axis, so each
    device orthogonalizes its share; the replicated result is XLA's all-gather. The bank
    is pinned replicated before it is split: otherwise XLA propagates the split back into
    the gradients and momentum and reassembles them with one all-to-all per matrix (70 in
    the record's step, compiled for 8 H100s; docs/perf.md).
    """
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(mats):
        groups.setdefault((m.shape, m.dtype), []).append(i)
    out: list[Any] = [None] * len(mats)
    for idx in groups.values():
        bank = jnp.stack([mats[i] for i in idx])
        bank = jnp.pad(bank, [(0, -len(idx) % mesh.devices.size)] + [(0, 0)] * (bank.ndim - 1))
        bank = jax.lax.with_sharding_constraint(bank, mesh_lib.replicated(mesh))
        bank = jax.lax.with_sharding_constraint(bank, mesh_lib.data_sharded(mesh))
        bank = jax.lax.with_sharding_constraint(newton_schulz5(bank, **ns_kwargs), mesh_lib.replicated(mesh))
        for k, i in enumerate(idx):
            out[i] = bank[k]
    return out


def normalize_rows(u: jax.Array, eps: float = 1e-7) -> jax.Array:
    """MuonEq-R (the SP8192 stack, #1735 L226-300): each output row of the reference's
    `(out, in)` matrix divided by its L2 norm (clamped at eps) before Newton–Schulz, so
    every output channel enters the orthogonalization with equal weight. Our kernels are
    `(in, out)`: the reference's rows are our columns, normed over axis −2."""
    u32 = u.astype(jnp.float32)
    norms = jnp.sqrt(jnp.sum(jnp.square(u32), axis=-2, keepdims=True))
    return (u32 / jnp.maximum(norms, eps)).astype(u.dtype)


def muon_shape_scale(shape: tuple[int, ...]) -> float:
    """`sqrt(max(1, out/in))` for an `(…, in, out)` kernel (the reference's rows/cols)."""
    fan_in, fan_out = shape[-2], shape[-1]
    return math.sqrt(max(1.0, fan_out / fan_in))


class MuonState(NamedTuple):
    """Step count and the sum-form momentum buffer (one per Muon leaf)."""

    count: jax.Array
    momentum_buffer: optax.Updates


def _check_matrices(tree: Any, what: str) -> None:
    """Raise a clear error for any leaf that is not a matrix or a stack of them."""

    def check(path: Any, leaf: Any) -> None:
        if jnp.ndim(leaf) < 2:
            raise ValueError(
                f"scale_by_muon got {what} leaf {jax.tree_util.keystr(path)} with shape "
                f"{jnp.shape(leaf)}; Muon needs ndim >= 2 (trailing (in, out) matrix). "
                "Label it 'scalar' (AdamW) in the model's param_labels instead of 'muon'."
            )

    jax.tree_util.tree_map_with_path(check, tree)


def scale_by_muon(
    momentum: float | None = 0.95,
    ns_steps: int = 5,
    nesterov: bool = True,
    ns_dtype: Any = jnp.bfloat16,
    momentum_dtype: Any = jnp.float32,
    eps: float = 1e-7,
    row_normalize: bool = False,
    ns_coeffs: Any = NS5_COEFFS,
    ns_mesh: Mesh | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Muon direction `sqrt(max(1, out/in)) · NS5(g + μ·buf)`, without lr or decay.

    `row_normalize` is MuonEq-R: NS5 sees `normalize_rows(g + μ·buf)` instead.
    `ns_coeffs`: NS5_COEFFS or a per-iteration table (POLAR_EXPRESS_COEFFS).
    `ns_mesh`: split NS5 over its devices (`newton_schulz_sharded`); None: every device
    orthogonalizes every matrix.

    μ is the extra arg `muon_momentum` when given to `update` (a traced scalar, so a
    warmup does not recompile), else `momentum`. Weight decay and the (negative)
    learning rate are composed after this in `golf_jax.optim.build`.
    """
    momentum_dtype = jnp.dtype(momentum_dtype)

    def init_fn(params: optax.Params) -> MuonState:
        _check_matrices(params, "a param")
        buf = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), momentum_dtype), params)
        return MuonState(count=jnp.zeros([], jnp.int32), momentum_buffer=buf)

    def update_fn(
        updates: optax.Updates,
        state: MuonState,
        params: optax.Params | None = None,
        *,
        muon_momentum: Any = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, MuonState]:
        del params, extra_args
        _check_matrices(updates, "an update")
        mu_value = momentum if muon_momentum is None else muon_momentum
        if mu_value is None:
            raise ValueError(
                "scale_by_muon(momentum=None) needs the extra arg muon_momentum: "
                "tx.update(grads, state, params, muon_momentum=...)"
            )
        # torch computes `buf*mu + g` in fp32 "opmath" and rounds to the buffer dtype.
        mu = jnp.asarray(mu_value, jnp.float32)

        def new_buffer(g: jax.Array, buf: jax.Array) -> jax.Array:
            return (mu * buf.astype(jnp.float32) + g.astype(jnp.float32)).astype(momentum_dtype)

        buffer = jax.tree.map(new_buffer, updates, state.momentum_buffer)

        def ns_input(g: jax.Array, buf: jax.Array) -> jax.Array:
            buf32 = buf.astype(jnp.float32)
            u = g.astype(jnp.float32) + mu * buf32 if nesterov else buf32
            return normalize_rows(u) if row_normalize else u

        ns = dict(steps=ns_steps, eps=eps, coeffs=ns_coeffs, dtype=ns_dtype)
        grads, tree = jax.tree.flatten(updates)
        us = [ns_input(g, b) for g, b in zip(grads, tree.flatten_up_to(buffer))]
        orth = newton_schulz_sharded(us, ns_mesh, **ns) if ns_mesh is not None else [newton_schulz5(u, **ns) for u in us]
        out = tree.unflatten([(o.astype(jnp.float32) * muon_shape_scale(g.shape)).astype(g.dtype)
                              for o, g in zip(orth, grads)])
        count = optax.safe_increment(state.count)
        return out, MuonState(count=count, momentum_buffer=buffer)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
