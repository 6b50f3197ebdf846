"""The grouped optimizer: global clip, then Muon / AdamW groups chosen by label.

Every group ends with `scale_by_lr(base_lr)`, which multiplies by
`-base_lr · lr_scale`, where `lr_scale` is the optax extra arg passed each step.
Putting decayed weights before it gives the torch decoupled-decay step exactly:
`u = -lr·(d + wd·p)`, i.e. `p ← p·(1 - lr·wd) - lr·d` (docs/reference-notes.md#param-groups, docs/reference-notes.md#muon), because
`d` (the Adam or Muon direction) does not depend on `p`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from golf_jax.optim.muon import NS_COEFFS, scale_by_muon
from golf_jax.submission.modules import repo_only

LABELS = ("muon", "embed", "scalar", "head", "frozen")
MUON_VARIANTS = ("muon", "muoneq_r")  # muoneq_r: rows L2-normalised before Newton–Schulz (SP8192 stack)
DTYPES = ("bfloat16", "float32")  # Muon's Newton-Schulz and momentum buffer


def scale_by_lr(base_lr: float) -> optax.GradientTransformationExtraArgs:
    """Multiply updates by `-base_lr · lr_scale` (extra arg; 1.0 when absent)."""

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(
        updates: optax.Updates,
        state: optax.EmptyState,
        params: optax.Params | None = None,
        *,
        lr_scale: Any = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.EmptyState]:
        del params, extra_args
        scale = 1.0 if lr_scale is None else lr_scale
        factor = -base_lr * jnp.asarray(scale, jnp.float32)
        return jax.tree.map(lambda u: (u * factor).astype(u.dtype), updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """`torch.nn.utils.clip_grad_norm_`: `g · min(1, max_norm / (‖g‖₂ + 1e-6))`.

    Differs from `optax.clip_by_global_norm` only by torch's 1e-6 in the
    denominator; the norm is taken in fp32 over every leaf of the tree.
    """

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(
        updates: optax.Updates, state: optax.EmptyState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, optax.EmptyState]:
        del params
        leaves = jax.tree.leaves(updates)
        sq = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)
        coef = jnp.minimum(1.0, max_norm / (jnp.sqrt(sq) + 1e-6))
        return jax.tree.map(lambda u: (u * coef).astype(u.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def adamw_torch(
    lr: float, b1: float, b2: float, eps: float, weight_decay: float
) -> optax.GradientTransformationExtraArgs:
    """torch.optim.AdamW: bias-corrected `m̂/(√v̂ + eps)`, decoupled decay by `lr·wd`."""
    parts: list[optax.GradientTransformation] = [optax.scale_by_adam(b1=b1, b2=b2, eps=eps)]
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(scale_by_lr(lr))
    return optax.chain(*parts)


def _get(cfg: Any, name: str, default: Any = None, required: bool = True) -> Any:
    """Read `cfg.name` (ConfigDict or any attribute object) with a clear error."""
    try:
        return getattr(cfg, name)
    except (AttributeError, KeyError):
        if required:
            raise ValueError(
                f"optimizer config is missing field {name!r}; add it to the optim "
                "section of the config (see golf_jax/optim/build.py)"
            ) from None
        return default


def _check_labels(param_labels: Any) -> None:
    found = set(jax.tree.leaves(param_labels))
    unknown = sorted(str(x) for x in found - set(LABELS))
    if unknown:
        raise ValueError(
            f"param_labels has unknown labels {unknown}; the model's param_labels() "
            f"must use only {list(LABELS)}"
        )


@repo_only
def check_config(opt_cfg: Any) -> None:
    """The opt.* choices, before anything compiles."""
    for key, allowed in (("muon_variant", MUON_VARIANTS), ("muon_ns_coeffs", tuple(NS_COEFFS)),
                         ("muon_ns_dtype", DTYPES), ("muon_momentum_dtype", DTYPES)):
        value = _get(opt_cfg, key, allowed[0], required=False)
        if value not in allowed:
            raise ValueError(f"opt.{key}={value!r}: use one of {', '.join(map(repr, allowed))}")


def build_optimizer(
    opt_cfg: Any, param_labels: Any | Callable[[Any], Any], mesh: Any = None
) -> optax.GradientTransformationExtraArgs:
    """Clip (optional), then per-label transforms; see the module docstring.

    Optional config fields: `muon_ns_dtype` ("bfloat16"), `muon_momentum_dtype`
    ("float32"; the reference keeps a bf16 buffer), `muon_sharded_ns` (False): Newton–Schulz
    split over `mesh`, the mesh the step runs on (without one every device runs all of it).
    """
    if not callable(param_labels):
        _check_labels(param_labels)
    b1, b2 = float(_get(opt_cfg, "beta1")), float(_get(opt_cfg, "beta2"))
    eps = float(_get(opt_cfg, "adam_eps"))
    adam_wd = float(_get(opt_cfg, "adam_weight_decay"))
    embed_wd = _get(opt_cfg, "embed_weight_decay", None, required=False)
    embed_wd = adam_wd if embed_wd is None else float(embed_wd)
    muon_wd = float(_get(opt_cfg, "muon_weight_decay"))
    check_config(opt_cfg)
    variant = _get(opt_cfg, "muon_variant", "muon", required=False)
    ns_coeffs = _get(opt_cfg, "muon_ns_coeffs", "standard", required=False)

    muon_parts: list[optax.GradientTransformation] = [
        scale_by_muon(
            momentum=float(_get(opt_cfg, "muon_momentum")),
            ns_steps=int(_get(opt_cfg, "muon_ns_steps")),
            nesterov=bool(_get(opt_cfg, "muon_nesterov")),
            ns_dtype=jnp.dtype(_get(opt_cfg, "muon_ns_dtype", "bfloat16", required=False)),
            momentum_dtype=jnp.dtype(
                _get(opt_cfg, "muon_momentum_dtype", "float32", required=False)
            ),
            row_normalize=variant == "muoneq_r",
            ns_coeffs=NS_COEFFS[ns_coeffs],
            ns_mesh=mesh if _get(opt_cfg, "muon_sharded_ns", False, required=False) else None,
        )
    ]
    if muon_wd:
        muon_parts.append(optax.add_decayed_weights(muon_wd))
    muon_parts.append(scale_by_lr(float(_get(opt_cfg, "matrix_lr"))))

    transforms = {
        "muon": optax.chain(*muon_parts),
        "embed": adamw_torch(float(_get(opt_cfg, "tied_embed_lr")), b1, b2, eps, embed_wd),
        "scalar": adamw_torch(float(_get(opt_cfg, "scalar_lr")), b1, b2, eps, adam_wd),
        "head": adamw_torch(float(_get(opt_cfg, "head_lr")), b1, b2, eps, adam_wd),
        "frozen": optax.set_to_zero(),
    }
    parts: list[optax.GradientTransformation] = []
    clip = float(_get(opt_cfg, "grad_clip_norm"))
    if clip > 0:
        parts.append(clip_by_global_norm_torch(clip))
    # optax.partition (0.2.8) forwards **extra_args through masked() to each group.
    parts.append(optax.partition(transforms, param_labels))
    return optax.chain(*parts)


def count_by_label(params: Any, labels: Any) -> dict[str, int]:
    """Number of scalar parameters per label, for logging."""
    counts: dict[str, int] = {}

    def add(p: Any, label: str) -> None:
        counts[label] = counts.get(label, 0) + int(np.prod(np.shape(p), dtype=np.int64))

    jax.tree.map(add, params, labels)
    return counts


def freeze(trainable: Any) -> optax.GradientTransformation:
    """Zero the updates of leaves whose `trainable` mask entry is False."""

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, t: u if t else jnp.zeros_like(u), updates, trainable), state

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_annealed_lr(lr_tree: Any, floor: float = 0.0) -> optax.GradientTransformationExtraArgs:
    """Multiply by `-(floor + (lr - floor) · lr_scale)`, per leaf (lr_tree) or for all (a float).

    torch's CosineAnnealingLR(eta_min=floor) over param groups: every group anneals
    toward the same absolute floor; lr_scale = ½(1 + cos(π·e/E)) comes from the host.
    """

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, lr_scale: Any = None, **extra_args: Any):
        del params, extra_args
        scale = jnp.asarray(1.0 if lr_scale is None else lr_scale, jnp.float32)
        lrs = lr_tree if not isinstance(lr_tree, (int, float)) else jax.tree.map(lambda _: float(lr_tree), updates)
        return jax.tree.map(lambda u, lr: (u * -(floor + (lr - floor) * scale)).astype(u.dtype), updates, lrs), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def build_adaptation_optimizer(kind: str, lr: Any, trainable: Any, *, floor: float = 0.0, momentum: float = 0.9,
                               b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                               grad_clip: float = 0.0) -> optax.GradientTransformationExtraArgs:
    """The test-time-training optimizer, from the same pieces as the training one.

    Frozen leaves get no gradient (so they do not count in the clip norm, as in torch,
    where they have requires_grad=False) and no update. kind: "sgd" (torch SGD with
    momentum, dampening 0: buf = m·buf + g) or "adamw" (torch AdamW). `lr` is a float or
    a per-leaf pytree of LRs (discriminative TTT); lr_scale anneals it toward `floor`.
    """
    parts: list[optax.GradientTransformation] = [freeze(trainable)]
    if grad_clip > 0:
        parts.append(clip_by_global_norm_torch(grad_clip))
    if kind == "sgd":
        if momentum:
            parts.append(optax.trace(decay=momentum, nesterov=False))
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay))
    elif kind == "adamw":
        parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay))
    else:
        raise ValueError(f"TTT optimizer {kind!r}: use 'sgd' or 'adamw'")
    parts += [scale_by_annealed_lr(lr, floor), freeze(trainable)]
    return optax.chain(*parts)
