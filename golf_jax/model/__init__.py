"""Model registry: `build_model(model_cfg)` and each model's optimizer labels."""

from __future__ import annotations

from typing import Any, Callable

from flax import linen as nn

from golf_jax.model import baseline, record

_REGISTRY: dict[str, tuple[type[nn.Module], Callable[[dict], dict]]] = {
    "baseline": (baseline.BaselineGPT, baseline.param_labels),
    "record": (record.RecordGPT, record.param_labels),
}


def register(name: str, module_cls: type[nn.Module], labels_fn: Callable[[dict], dict]) -> None:
    _REGISTRY[name] = (module_cls, labels_fn)


def _entry(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"unknown model.name={name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def build_model(model_cfg: Any) -> nn.Module:
    return _entry(model_cfg.name)[0](model_cfg)


def param_labels(model_cfg: Any, params: dict, compat: Any = None) -> dict:
    """`compat` (the config's compat section) selects quirk-reproducing labels where a
    model has them (record: `compat.mtp_untrained` freezes the MTP heads)."""
    if model_cfg.name == "record" and compat is not None and compat.get("mtp_untrained", False):
        return record.make_param_labels(mtp_untrained=True)(params)
    return _entry(model_cfg.name)[1](params)
