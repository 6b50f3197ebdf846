"""The series the report plots, computed from a Run (golf_jax/report/rundata.py); pure numpy.

Train and val share the training clock: a validation at step s is placed at the
training seconds of step s (the clock stops while it validates). Train loss is in nats
per token; its bpb is estimated with the val stream's bytes per token (the only byte
count a run records), so it is labelled an estimate.
"""

from __future__ import annotations

import math

import numpy as np

from golf_jax.optim import schedule
from golf_jax.report.rundata import Run

LN2 = math.log(2.0)


def rolling_mean(y: np.ndarray, width: int) -> np.ndarray:
    """Centred mean over `width` points (fewer at the ends)."""
    y = np.asarray(y, np.float64)
    width = max(1, min(int(width), len(y)))
    c = np.concatenate([[0.0], np.cumsum(y)])
    lo = np.clip(np.arange(len(y)) - width // 2, 0, len(y))
    hi = np.clip(lo + width, 0, len(y))
    lo = np.maximum(hi - width, 0)
    return (c[hi] - c[lo]) / (hi - lo)


def bpb_per_nat(run: Run) -> float | None:
    """val_bpb / val_loss: bits per byte per nat per token (tokens/byte ÷ ln 2) of the val stream."""
    v = run.val
    if v is None:
        return None
    ok = np.isfinite(v["val_bpb"]) & (v["val_loss"] > 0)
    return float(np.median(v["val_bpb"][ok] / v["val_loss"][ok])) if ok.any() else None


def clock_at(steps: np.ndarray, run: Run) -> np.ndarray:
    """Training seconds at `steps`, interpolated from the per-step records (step 0: 0 s)."""
    t = run.train
    return np.interp(steps, np.concatenate([[0.0], t["step"]]), np.concatenate([[0.0], t["train_time_s"]]))


def schedules(run: Run) -> dict | None:
    """Per recorded step: the LR scale (recorded, or recomputed for runs that did not record it)
    and the Muon momentum (a function of the step: recomputed from config.json).

    Record s is the optimizer step the loop took at step index s-1 (it is reported after).
    """
    t = run.train
    if t is None or not run.config:
        return None
    opt, sch, tr = run.section("opt"), run.section("schedule"), run.section("train")
    taken = (t["step"] - 1).astype(int)
    out = {"step": t["step"], "late_qat_step": run.summary.get("late_qat_step"),
           "loop_on_step": run.summary.get("loop_on_step")}
    if np.isfinite(t["lr_scale"]).all():
        out.update(lr_scale=t["lr_scale"], lr_source="recorded")
    else:  # the wallclock modes saw the clock at the step's start: about the previous record's
        cap = float(tr["max_wallclock_seconds"])
        cap = max(cap - float(run.section("export").get("reserve_seconds", 0.0)), 0.0) if cap > 0 else 0.0
        started = np.concatenate([[0.0], t["train_time_s"][:-1]])
        lr = [schedule.lr_scale(int(s), float(e), iterations=int(tr["iterations"]),
                                warmdown_iters=int(sch["warmdown_iters"]), max_wallclock_seconds=cap, mode=sch["mode"],
                                warmdown_frac=float(sch["warmdown_frac"]), min_lr=float(sch["min_lr"]))
              for s, e in zip(taken, started)]
        out.update(lr_scale=np.array(lr), lr_source="recomputed from config.json")
    out["momentum"] = np.array([schedule.muon_momentum(int(s), float(opt["muon_momentum_warmup_start"]),
                                                       float(opt["muon_momentum"]),
                                                       int(opt["muon_momentum_warmup_steps"])) for s in taken])
    return out


def block_bpb(blocks: dict[str, np.ndarray]) -> np.ndarray:
    """Bits per byte of each block (a TTT chunk): its NLL sum / ln 2 / its bytes (NaN without bytes)."""
    nbytes = np.asarray(blocks["bytes"], np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(nbytes > 0, np.asarray(blocks["nll"], np.float64) / LN2 / nbytes, np.nan)


def slot_gain_bits(slot: dict[str, np.ndarray]) -> np.ndarray:
    """Per window: the change in bits per scored token that δ makes (negative: SLOT helps)."""
    count = np.asarray(slot["count"], np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (slot["nll_with"] - slot["nll_without"]) / count / LN2, np.nan)
