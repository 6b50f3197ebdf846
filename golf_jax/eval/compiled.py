"""One compile per (model, key): later passes over val, and the audit's many reruns, reuse it."""

from __future__ import annotations

_COMPILED: dict = {}


def cached(model, key, build):
    """`build()` once per (model, key); `key` must name everything the built function depends on.

    The entry holds the model (flax modules with config fields are unhashable), so its id stays its own.
    """
    k = (id(model), key)
    if k not in _COMPILED:
        _COMPILED[k] = (model, build())
    return _COMPILED[k][1]


def settings_key(cfg) -> tuple:
    """A hashable key of a ConfigDict's values (what a jitted step built from it depends on)."""
    return tuple(sorted((k, settings_key(v) if hasattr(v, "to_dict") else v) for k, v in cfg.items()))
