"""golf_jax/eval/compiled.py: one build per (model, key), in a bounded LRU cache."""

from __future__ import annotations

import gc
import weakref

import pytest

from golf_jax.eval import compiled


class Model:  # stands for a flax module: unhashable, identified by id()
    __hash__ = None


@pytest.fixture
def empty_cache(monkeypatch):
    monkeypatch.setattr(compiled, "_COMPILED", {})  # the suite's own compiles stay untouched
    monkeypatch.setattr(compiled, "MAX_ENTRIES", 3)
    return compiled._COMPILED


def test_one_build_per_model_and_key(empty_cache):
    builds = []
    a, b = Model(), Model()

    def build(tag):
        return lambda: builds.append(tag) or tag

    assert compiled.cached(a, "k", build("a/k")) == "a/k"
    assert compiled.cached(a, "k", build("again")) == "a/k"  # reused: not built again
    assert compiled.cached(a, "j", build("a/j")) == "a/j"
    assert compiled.cached(b, "k", build("b/k")) == "b/k"  # another model: its own entry
    assert builds == ["a/k", "a/j", "b/k"]


def test_the_cache_is_bounded_and_evicts_the_least_recently_used(empty_cache):
    builds = []
    models = [Model() for _ in range(5)]
    alive = weakref.ref(models[1])
    for m in models[:3]:
        compiled.cached(m, "k", lambda: builds.append(1))
    compiled.cached(models[0], "k", lambda: builds.append("rebuilt 0"))  # a hit: now the most recent
    compiled.cached(models[3], "k", lambda: builds.append(3))  # evicts models[1], the least recently used
    assert len(empty_cache) == 3 and builds == [1, 1, 1, 3]
    compiled.cached(models[0], "k", lambda: builds.append("rebuilt 0"))  # still cached
    assert builds == [1, 1, 1, 3]
    models[1] = None
    gc.collect()
    assert alive() is None  # the evicted entry no longer keeps its model alive
    compiled.cached(models[3], "j", lambda: builds.append(4))
    compiled.cached(models[2], "k", lambda: builds.append("rebuilt 2"))  # evicted by (3, "j")
    assert builds == [1, 1, 1, 3, 4, "rebuilt 2"]
    compiled.cached(models[4], "k", lambda: builds.append(5))
    assert len(empty_cache) == 3 and builds == [1, 1, 1, 3, 4, "rebuilt 2", 5]
