"""One compile per (model, key): later passes over val, and the audit's many reruns, reuse it.

The cache is bounded: it keeps the MAX_ENTRIES most recently used functions (an LRU; a run
builds about ten, the audit's reruns reuse them), so a long process (the test suite, a
sweep of configs) does not keep every model it ever compiled for alive.
"""

from __future__ import annotations

MAX_ENTRIES = 32
_COMPILED: dict = {}  # insertion order is recency: the first entry is the least recently used


def cached(model, key, build):
    """`build()` once per (model, key) while cached; `key` must name everything the built function depends on.

    The entry holds the model (flax modules with config fields are unhashable), so its id stays its
    own while the entry lives; an evicted entry takes the model's reference with it.
    """
    k = (id(model), key)
    entry = _COMPILED[k] = _COMPILED.pop(k, None) or (model, build())  # now the most recently used
    if len(_COMPILED) > MAX_ENTRIES:
        del _COMPILED[next(iter(_COMPILED))]
    return entry[1]


def settings_key(cfg) -> tuple:
    """A hashable key of a ConfigDict's values (what a jitted step built from it depends on)."""
    return tuple(sorted((k, settings_key(v) if hasattr(v, "to_dict") else v) for k, v in cfg.items()))
