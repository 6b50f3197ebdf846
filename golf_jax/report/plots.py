"""The report's figures: matplotlib's object API on the Agg canvas (no display, no pyplot state).

Each function takes the series of golf_jax/report/curves.py and writes one PNG.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from golf_jax.report import curves
from golf_jax.report.rundata import Run

TRAIN, VAL, EVAL = "tab:blue", "tab:orange", "tab:gray"
STAGE_COLORS = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
DPI = 110


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    with warnings.catch_warnings():  # a figure too small for constrained layout is drawn without it: not news
        warnings.filterwarnings("ignore", "constrained_layout not applied", UserWarning)
        fig.savefig(path)
    return path


def _window(n: int) -> int:
    """Points in a rolling mean: ~1/50 of the series, odd, at least 1."""
    return max(1, n // 50) | 1


def training_curves(run: Run, path: Path) -> Path:
    """Loss and bpb against steps and against the training clock, train and val, with the
    eval stages' final scores as reference lines."""
    t, v = run.train, run.val
    per_nat = curves.bpb_per_nat(run)
    fig = _figure(12, 8)
    axes = fig.subplots(2, 2)
    val_clock = curves.clock_at(v["step"], run) if v is not None and t is not None else None
    for col, (xlabel, x_of) in enumerate((("step", lambda s, c: s), ("training time (s)", lambda s, c: c))):
        loss_ax, bpb_ax = axes[0, col], axes[1, col]
        if t is not None:
            x = x_of(t["step"], t["train_time_s"])
            w = _window(len(x))
            smooth = curves.rolling_mean(t["loss"], w)
            if w > 1:
                loss_ax.plot(x, t["loss"], color=TRAIN, alpha=0.25, lw=0.8)
            loss_ax.plot(x, smooth, color=TRAIN, lw=1.6, label="train" + (f" (mean of {w} steps)" if w > 1 else ""))
            if per_nat is not None:
                bpb_ax.plot(x, smooth * per_nat, color=TRAIN, lw=1.6, label="train (estimated with val bytes/token)")
        if v is not None and (col == 0 or val_clock is not None):
            x = v["step"] if col == 0 else val_clock
            loss_ax.plot(x, v["val_loss"], "o-", color=VAL, ms=4, label="val")
            bpb_ax.plot(x, v["val_bpb"], "o-", color=VAL, ms=4, label="val")
        for (stage, r), color in zip(run.evals.items(), STAGE_COLORS):
            bpb_ax.axhline(r["val_bpb"], color=color, ls="--", lw=1, label=f"eval {stage}: {r['val_bpb']:.4f}")
        loss_ax.set(title=f"loss against {xlabel.split(' (')[0]}", xlabel=xlabel, ylabel="loss (nats / token, log scale)")
        loss_ax.set_yscale("log")  # the first steps' loss would squash the rest of the run
        bpb_ax.set(title=f"bits per byte against {xlabel.split(' (')[0]}", xlabel=xlabel, ylabel="bits per byte")
        for ax in (loss_ax, bpb_ax):
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=8)
    _zoom_bpb(axes[1], run)
    fig.suptitle(f"{run.name}: training and validation")
    return _save(fig, path)


def _zoom_bpb(axes, run: Run) -> None:
    """Start the bpb axes at the val score after the first validation: the first points of a
    run (bpb ~ log2 V / bytes per token) would flatten the rest."""
    v = run.val
    finals = [r["val_bpb"] for r in run.evals.values()]
    if v is None or len(v["val_bpb"]) < 3:
        return
    lo = min([np.nanmin(v["val_bpb"]), *finals])
    hi = np.nanmax(v["val_bpb"][1:])
    for ax in axes:
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))


def schedules(series: dict, run: Run, path: Path) -> Path:
    """The LR multiplier and the Muon momentum per step, with late QAT and the layer loop marked."""
    fig = _figure(12, 4)
    lr_ax, mom_ax = fig.subplots(1, 2)
    lr_ax.plot(series["step"], series["lr_scale"], color=TRAIN)
    lr_ax.set(title=f"LR multiplier ({series['lr_source']})", xlabel="step", ylabel="lr_scale (× each group's LR)",
              ylim=(-0.02, 1.05))
    mom_ax.plot(series["step"], series["momentum"], color=VAL)
    mom_ax.set(title="Muon momentum (from config.json)", xlabel="step", ylabel="momentum")
    for ax in (lr_ax, mom_ax):
        for key, label, color in (("late_qat_step", "late QAT on", "tab:red"), ("loop_on_step", "layer loop on",
                                                                                "tab:green")):
            if series.get(key) is not None:
                ax.axvline(series[key], color=color, ls="--", lw=1, label=f"{label} (step {series[key]})")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{run.name}: schedules")
    return _save(fig, path)


def ttt_chunks(stage: str, blocks: dict, run: Run, path: Path) -> Path:
    """bpb of each block a TTT stage scored (a chunk; for phased TTT one chunk of every
    document of a round), in scoring order, with its rolling mean and the stage scores."""
    bpb = curves.block_bpb(blocks)
    x = np.arange(len(bpb))
    fig = _figure(12, 4.5)
    ax = fig.subplots()
    ok = np.isfinite(bpb)
    w = _window(int(ok.sum()))
    ax.plot(x, bpb, "." if w > 1 else "o-", color=TRAIN, ms=3 if w > 1 else 5, alpha=0.5 if w > 1 else 1,
            label="per chunk")
    if w > 1:
        ax.plot(x[ok], curves.rolling_mean(bpb[ok], w), color=TRAIN, lw=1.6, label=f"rolling mean ({w} chunks)")
    for name, r in run.evals.items():
        if name in (stage, "sliding"):
            ax.axhline(r["val_bpb"], color=VAL if name == stage else EVAL, ls="--", lw=1,
                       label=f"eval {name}: {r['val_bpb']:.4f}")
    mode = run.evals.get(stage, {}).get("mode")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # chunks are counted
    ax.set(title=f"{run.name}: {stage} stage{f' ({mode})' if mode else ''}, bits per byte of each chunk as scored",
           xlabel=("block (a chunk of each document of a round)" if mode == "phased" else "chunk")
           + ", in scoring order (each scored before the model trains on it)", ylabel="bits per byte")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def slot_windows(slot: dict, run: Run, path: Path) -> Path:
    """SLOT per window: what δ changes in bits per scored token, and ‖δ‖."""
    gain = curves.slot_gain_bits(slot)
    x = np.asarray(slot["first_target"])
    w = _window(len(gain))
    fig = _figure(12, 7)
    gain_ax, norm_ax = fig.subplots(2, 1, sharex=True)
    gain_ax.plot(x, gain, ".", color=TRAIN, ms=3, alpha=0.5, label="per window")
    norm_ax.plot(x, slot["delta_norm"], ".", color=VAL, ms=3, alpha=0.5, label="per window")
    if w > 1:
        ok = np.isfinite(gain)
        gain_ax.plot(x[ok], curves.rolling_mean(gain[ok], w), color=TRAIN, lw=1.6, label=f"rolling mean ({w})")
        norm_ax.plot(x, curves.rolling_mean(slot["delta_norm"], w), color=VAL, lw=1.6, label=f"rolling mean ({w})")
    gain_ax.axhline(0.0, color="black", lw=0.8)
    r = run.evals.get("slot", {})
    total = f"; stage: {r['slot_gain_bpb']:+.4f} bpb" if "slot_gain_bpb" in r else ""
    gain_ax.set(title=f"{run.name}: SLOT gain per window (below 0: δ helps){total}",
                ylabel="Δ bits / scored token (with δ − without)")
    norm_ax.set(title="‖δ‖₂ per window", xlabel="first scored target of the window (token index in val)",
                ylabel="‖δ‖₂")
    for ax in (gain_ax, norm_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def quant_errors(rows: list[dict], run: Run, path: Path) -> Path:
    """Relative quantization error per tensor (log scale), coloured by how it is stored."""
    kinds = sorted({r["kind"] for r in rows})
    colors = {k: f"C{i}" for i, k in enumerate(kinds)}
    fig = _figure(10, max(3.0, 0.8 + 0.19 * len(rows)))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    err = np.array([r["rel_error"] for r in rows], float)
    exact = err == 0  # stored losslessly: no bar on a log axis, a label instead
    ax.barh(y, np.where(exact, np.nan, err), color=[colors[r["kind"]] for r in rows], height=0.75)
    left = np.nanmin(np.where(exact, np.nan, err)) / 2 if (~exact).any() else 1e-6
    for yi in y[exact]:
        ax.text(left, yi, "exact (no error)", va="center", fontsize=7)
    if exact.all():
        ax.set_xlim(left / 10, 1.0)
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=7)
    ax.set_xscale("log")
    ax.set_ylim(-0.6, len(rows) - 0.4)
    for k in kinds:
        ax.barh([np.nan], [np.nan], color=colors[k], label=k)
    ax.legend(title="stored as", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set(title=f"{run.name}: quantization error per tensor",
           xlabel="relative error ‖W − Ŵ‖_F / ‖W‖_F (log scale)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
