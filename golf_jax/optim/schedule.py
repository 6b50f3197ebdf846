"""Host-side LR and momentum schedules (docs/reference-notes.md#muon momentum warmup, docs/reference-notes.md#lr-schedule lr_mul).

They return plain Python floats computed on the host every step; the train step
receives them as traced optax extra args (`lr_scale`, `muon_momentum`), so a new
value never triggers a recompile. The wallclock modes depend on measured time,
exactly as in the reference, and are therefore not reproducible across hardware.
"""

from __future__ import annotations

from golf_jax.submission.modules import repo_only

LR_MODES = ("wallclock", "iterations", "wallclock_fraction")


def _iterations_lr(step: int, iterations: int, warmdown_iters: int) -> float:
    """Upstream `lr_mul` without a cap: linear over the last `warmdown_iters` steps.

    Like the reference, steps at or past `iterations` return 1.0; the reference loop
    never takes an optimizer step there, so the value is never used.
    """
    warmdown_start = max(iterations - warmdown_iters, 0)
    if warmdown_start <= step < iterations:
        return max((iterations - step) / max(warmdown_iters, 1), 0.0)
    return 1.0


def training_fraction(step: int, elapsed_s: float, iterations: int, max_wallclock_seconds: float) -> float:
    """How far training is: elapsed/cap with a wallclock cap (net of any GPTQ reserve),
    else step/iterations. The SP8192 stack's LR warmdown and depth-recurrence switch use it."""
    if max_wallclock_seconds > 0:
        return elapsed_s / max(max_wallclock_seconds, 1e-12)
    return step / max(iterations, 1)


@repo_only
def check_config(sched) -> None:
    """The schedule section's enum and ranges (before anything compiles)."""
    if sched.mode not in LR_MODES:
        raise ValueError(f"schedule.mode={sched.mode!r}: use one of {', '.join(map(repr, LR_MODES))}")
    if not 0.0 <= sched.warmdown_frac <= 1.0 or not 0.0 <= sched.min_lr <= 1.0:
        raise ValueError(f"schedule.warmdown_frac={sched.warmdown_frac} and schedule.min_lr={sched.min_lr} "
                         "must be fractions in [0, 1]")
    if sched.warmdown_iters < 0:
        raise ValueError(f"schedule.warmdown_iters={sched.warmdown_iters}: must be >= 0")


def lr_scale(
    step: int,
    elapsed_s: float,
    *,
    iterations: int,
    warmdown_iters: int,
    max_wallclock_seconds: float,
    mode: str,
    warmdown_frac: float = 0.72,
    min_lr: float = 0.0,
) -> float:
    """The multiplier applied to every group's base LR at `step`.

    mode "wallclock" (PR #1318 / upstream baseline, docs/reference-notes.md#lr-schedule): the warmdown spans
    the last `warmdown_iters` steps *estimated from the mean step time so far*
    and ends at the cap. Without a cap (`max_wallclock_seconds <= 0`) it falls back
    to "iterations", as the reference does.

    mode "iterations": linear to 0 over the last `warmdown_iters` of `iterations`.

    mode "wallclock_fraction" (SP8192 stack): with `frac = elapsed/cap` (or
    `step/iterations` without a cap), `max((1-frac)/warmdown_frac, min_lr)` once
    `frac >= 1 - warmdown_frac`, else 1. Pass the cap net of any GPTQ reserve.
    """
    if mode == "wallclock_fraction":
        if warmdown_frac <= 0:
            return 1.0
        frac = training_fraction(step, elapsed_s, iterations, max_wallclock_seconds)
        if frac >= 1.0 - warmdown_frac:
            return max((1.0 - frac) / warmdown_frac, min_lr)
        return 1.0
    if mode not in LR_MODES:
        raise ValueError(f"lr schedule mode must be one of {LR_MODES}, got {mode!r}")
    if warmdown_iters <= 0:
        return 1.0
    if mode == "iterations" or max_wallclock_seconds <= 0:
        return _iterations_lr(step, iterations, warmdown_iters)
    step_s = elapsed_s / max(step, 1)
    warmdown_s = warmdown_iters * step_s
    remaining_s = max(max_wallclock_seconds - elapsed_s, 0.0)
    if remaining_s <= warmdown_s:
        return remaining_s / max(warmdown_s, 1e-12)
    return 1.0


def muon_momentum(step: int, start: float, end: float, warmup_steps: int) -> float:
    """Linear momentum warmup `(1-f)·start + f·end`, `f = min(step/warmup_steps, 1)`."""
    if warmup_steps <= 0:
        return float(end)
    frac = min(step / warmup_steps, 1.0)
    return (1.0 - frac) * start + frac * end
