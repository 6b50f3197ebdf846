"""Toy evaluators for the audit's tests: each factory takes a golf_jax.eval.stages.EvalContext.

Written as a user would, outside the package, against the harness's evaluator
interface (golf_jax/eval/harness.py), so that `python -m golf_jax.audit
--evaluator=tests/audit_toys.py:FACTORY` exercises the same path. Six are broken on
purpose, each in a way one check is built to catch; two are legal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from golf_jax.eval.harness import Objective


class _Toy:
    compliant = True  # what a user would claim; the audit decides
    notes: list = []

    def __init__(self, ctx, name: str) -> None:
        self.name, self.ctx = name, ctx

    def base_logits(self, inputs):
        return self.ctx.predict(self.ctx.params, inputs["x_BxL"], inputs["pos_BxS"]).astype(jnp.float32)

    def predict(self, inputs):
        return self.base_logits(inputs)

    def update(self, reveal) -> None:
        del reveal


def plain(ctx):
    """Legal: the fixed model through the user interface."""
    return _Toy(ctx, "plain")


class _PeekNext(_Toy):
    """Adds a bonus to the token two ahead (the *next* target): only the flip test sees it."""

    def predict(self, inputs):
        logits, x, pos = self.base_logits(inputs), inputs["x_BxL"], inputs["pos_BxS"]
        L, V = x.shape[1], logits.shape[-1]
        ahead = jnp.take_along_axis(x, jnp.minimum(pos + 2, L - 1), axis=1)
        return logits + 3.0 * jax.nn.one_hot(ahead, V) * (pos + 2 < L)[..., None]


def peek_next(ctx):
    return _PeekNext(ctx, "peek_next")


class _Scaled(_Toy):
    """Reports log-probabilities 25 % too large: they sum to 1.25."""

    def predict(self, inputs):
        return {"logp": jax.nn.log_softmax(self.base_logits(inputs), axis=-1) + jnp.log(1.25)}


def scaled(ctx):
    return _Scaled(ctx, "scaled")


class _HitCache(_Toy):
    """A target-in-key cache: when the realised token already occurred in the window, mix it in.

    Each reported distribution is normalised and the score is −log of it, and nothing
    depends on a later token, so the flip test and C2 pass; but the distribution at a
    position depends on its own answer, and the counterfactual sum Σ_v p_v(v) exceeds 1.
    """

    def predict(self, inputs):
        logits, x, pos = self.base_logits(inputs), inputs["x_BxL"], inputs["pos_BxS"]
        L, V = x.shape[1], logits.shape[-1]
        y = jnp.take_along_axis(x, jnp.minimum(pos + 1, L - 1), axis=1)  # the answer, read from the window
        j = jnp.arange(L)
        seen = jnp.any((x[:, None, :] == y[..., None]) & (j[None, None, :] <= pos[..., None]), axis=-1)
        hit = (seen & (pos + 1 < L)).astype(jnp.float32)[..., None]
        p = jax.nn.softmax(logits, axis=-1)
        lam = 0.5
        q = (p + lam * hit * jax.nn.one_hot(y, V)) / (1.0 + lam * hit)
        return {"logp": jnp.log(q)}


def hit_cache(ctx):
    return _HitCache(ctx, "hit_cache")


class _UnigramCache(_Toy):
    """A full-vector unigram cache mixed into the model: legal when it reads scored blocks only."""

    lam = 0.3

    def __init__(self, ctx, name: str, ahead: bool) -> None:
        super().__init__(ctx, name)
        self.ahead = ahead
        self.chunk = int(ctx.cfg.eval.ttt.chunk_tokens)
        self.counts = None

    def schedule(self, units):
        block = units.first_target // self.chunk
        return [np.flatnonzero(block == b) for b in range(int(block.max()) + 1)]

    def predict(self, inputs):
        logits = self.base_logits(inputs)
        V = logits.shape[-1]
        p = jax.nn.softmax(logits, axis=-1)
        if self.counts is None:
            return {"logp": jnp.log(p)}
        uni = jnp.asarray((self.counts + 1.0) / (self.counts.sum() + V), jnp.float32)
        return {"logp": jnp.log((1 - self.lam) * p + self.lam * uni)}

    def update(self, reveal) -> None:
        T, c = reveal.num_targets, reveal.block
        a, b = (c + 1) * self.chunk, min((c + 2) * self.chunk, T)  # the next block: not yet scored
        if not self.ahead:
            a, b = c * self.chunk, min((c + 1) * self.chunk, T)  # the block just scored
        if b <= a:
            return
        V = int(self.ctx.model.cfg.vocab_size)
        tokens = reveal.read(a, b)[1:]
        counts = np.bincount(tokens, minlength=V).astype(np.float64)
        self.counts = counts if self.counts is None or self.ahead else self.counts + counts


def score_first_cache(ctx):
    """Legal: the cache learns from each block after it is scored."""
    return _UnigramCache(ctx, "score_first_cache", ahead=False)


def update_before_score(ctx):
    """Broken: the cache reads the next block's targets before they are scored."""
    return _UnigramCache(ctx, "update_before_score", ahead=True)


class _DoubleScore(_Toy):
    """Scores the last few windows a second time (a rescoring pass)."""

    def schedule(self, units):
        n = len(units)
        return [np.arange(n), np.arange(n - 4, n)]


def double_score(ctx):
    return _DoubleScore(ctx, "double_score")


class _BatchShared(_Toy):
    """#1350's pattern: one bias per batch fitted on every row's scored targets."""

    def objective(self, units, rows):
        S = units.stride
        pos = np.zeros((rows, S), np.int64)
        mask = np.zeros((rows, S), bool)
        k = np.arange(S)
        n = len(units)
        pos[:n] = units.pos[:, None] + k
        mask[:n] = k[None, :] < units.count[:, None]
        return Objective(np.where(mask, pos, 0), mask, shared=True)

    def predict(self, inputs):
        logits = self.base_logits(inputs)
        V = logits.shape[-1]
        # On the host: an eager reduction over the 8 simulated devices' shards has aborted XLA's
        # CPU runtime now and then under xdist (an all-reduce outside jit); a jitted predict would not.
        y, mask = np.asarray(inputs["obj_y_BxF"]), np.asarray(inputs["obj_mask_BxF"])
        hist = np.bincount(y[mask], minlength=V).astype(np.float32)
        return logits + jnp.asarray(2.0 * hist / max(hist.sum(), 1.0) * V / 8)


def batch_shared(ctx):
    return _BatchShared(ctx, "batch_shared")


class _Reordered(_PeekNext):
    """Scores its chunks out of stream order ("end_first": the last chunk first, as a warm-up;
    "reversed": last to first), reads each chunk once scored (legal), and peeks at the next
    target in every chunk after the first it scores: judged in evaluation order, the
    look-ahead is compared against almost nothing; in stream order, it is caught."""

    def __init__(self, ctx, name: str, order: str) -> None:
        super().__init__(ctx, name)
        self.order, self.chunk, self.scored_blocks = order, int(ctx.cfg.eval.ttt.chunk_tokens), 0
        self.ranges: list = []

    def schedule(self, units):
        chunk = units.first_target // self.chunk
        blocks = [np.flatnonzero(chunk == c) for c in range(int(chunk.max()) + 1)]
        blocks = blocks[::-1] if self.order == "reversed" else [blocks[-1]] + blocks[:-1]
        self.ranges = [(units.first_target[b], units.first_target[b] + units.count[b]) for b in blocks]
        return blocks

    def predict(self, inputs):
        return super().predict(inputs) if self.scored_blocks else self.base_logits(inputs)

    def update(self, reveal) -> None:
        reveal.read_many(*self.ranges[reveal.block])
        self.scored_blocks += 1


def end_first_peek(ctx):
    return _Reordered(ctx, "end_first_peek", "end_first")


def reversed_peek(ctx):
    return _Reordered(ctx, "reversed_peek", "reversed")


class _NoisyTarget(_PeekNext):
    """Noise of a few nats on one target per run (`seed`: drawn from EvalContext.seed, so
    repeatable; else fresh each run) and, with `peek`, a look-ahead everywhere else."""

    def __init__(self, ctx, name: str, peek: bool, seeded: bool) -> None:
        super().__init__(ctx, name)
        self.peek, self.noised = peek, False
        self.rng = np.random.default_rng(ctx.seed if seeded else None)

    def predict(self, inputs):
        logits = super().predict(inputs) if self.peek else self.base_logits(inputs)
        noise = np.zeros(logits.shape, np.float32)
        if not self.noised:  # the first scored position of the first batch
            noise[0, 0, :] = self.rng.normal(0.0, 3.0, logits.shape[-1])
            self.noised = True
        return logits + jnp.asarray(noise)


def noisy_peek(ctx):
    return _NoisyTarget(ctx, "noisy_peek", peek=True, seeded=False)


def seeded_noise(ctx):
    """Legal: randomness drawn from EvalContext.seed, the same in every rerun."""
    return _NoisyTarget(ctx, "seeded_noise", peek=False, seeded=True)


class _ScaleKeyed(_PeekNext):
    """Peeks only when told it evaluates at the real scale (a million targets or more)."""

    def predict(self, inputs):
        return super().predict(inputs) if self.ctx.num_targets >= 1_000_000 else self.base_logits(inputs)


def scale_keyed(ctx):
    return _ScaleKeyed(ctx, "scale_keyed")


class _LateHitCache(_HitCache):
    """The target-in-key cache of hit_cache, on only after `after` scored targets and only
    for answers with id ≥ `min_id`: inert early in the stream, or on a small vocabulary."""

    def __init__(self, ctx, name: str, after: int, min_id: int) -> None:
        super().__init__(ctx, name)
        self.after, self.min_id, self.scored = after, min_id, 0

    def predict(self, inputs):
        self.scored += int(np.asarray(inputs["num_units"])) * self.ctx.stride
        if self.scored < self.after:
            return {"logp": jax.nn.log_softmax(self.base_logits(inputs), axis=-1)}
        out = super().predict(inputs)
        x, pos = inputs["x_BxL"], inputs["pos_BxS"]
        y = jnp.take_along_axis(x, jnp.minimum(pos + 1, x.shape[1] - 1), axis=1)
        plain = jax.nn.log_softmax(self.base_logits(inputs), axis=-1)
        return {"logp": jnp.where((y >= self.min_id)[..., None], out["logp"], plain)}


def late_hit_cache(ctx):
    return _LateHitCache(ctx, "late_hit_cache", after=1000, min_id=0)


def high_id_cache(ctx):
    return _LateHitCache(ctx, "high_id_cache", after=0, min_id=32)


class _ReadsVal(_PeekNext):
    """Reads the validation text from disk (the audit's FineWeb slice comes from it) and
    replaces the audit's flip test with one that always passes: in its own process, the
    read is recorded and the replaced function is not the audit's."""

    def __init__(self, ctx, name: str) -> None:
        super().__init__(ctx, name)
        from golf_jax.audit import checks
        from golf_jax.core.paths import shared_data_dir

        path = shared_data_dir() / "text" / "fineweb_val_200.jsonl"
        self.val_text = path.read_text()[:1000] if path.exists() else ""
        checks.flip_test = lambda *a, **k: checks.Check("flip test", "PASS", "patched")


def reads_val(ctx):
    return _ReadsVal(ctx, "reads_val")
