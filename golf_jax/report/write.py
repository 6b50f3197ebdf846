"""Everything `python -m golf_jax.report RUN_DIR` writes into RUN_DIR/report/.

Each plot needs its own records; a run without them (no TTT stage, an evaluation-only
run dir) gets a note in summary.md instead of the plot.
"""

from __future__ import annotations

import os
from pathlib import Path

from golf_jax.report import curves, markdown, plots, quant_error, rundata
from golf_jax.core.rundir import write_atomic


def write_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[list[Path], list[str]]:
    """(files written, notes on what was skipped) for the run in `run_dir`; default out: RUN_DIR/report."""
    run = rundata.load(run_dir)
    out = Path(out) if out is not None else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    notes: list[str] = []

    def plot(title: str, name: str, draw) -> None:
        tmp = out / f".{name}.tmp{Path(name).suffix}"  # a temporary file, then a rename: never half a figure
        draw(tmp)
        os.replace(tmp, out / name)
        figures[title] = name

    if run.train is not None or run.val is not None:
        plot("training and validation curves", "curves.png", lambda p: plots.training_curves(run, p))
    else:
        notes.append("training curves: metrics.jsonl has no training or validation records (an evaluation run?)")
    series = curves.schedules(run)
    if series is not None:
        plot("LR and momentum schedules", "schedules.png", lambda p: plots.schedules(series, run, p))
    else:
        notes.append("schedules: need the per-step records of metrics.jsonl and config.json")
    chunked = {stage: b for stage, b in run.blocks.items() if len(b["nll"]) > 1}  # one block: nothing per chunk
    for stage, blocks in chunked.items():
        plot(f"bpb per {stage} chunk", f"chunks_{stage}.png", lambda p: plots.ttt_chunks(stage, blocks, run, p))
    if not chunked:
        notes.append("bpb per TTT chunk: no stage scored in chunks (the run has no TTT stage)")
    if run.slot is not None:
        plot("SLOT gain and ‖δ‖ per window", "slot_windows.png", lambda p: plots.slot_windows(run.slot, run, p))
    else:
        notes.append("SLOT per window: no slot_windows.npz (the run has no slot stage)")
    params, artifact = run.path / "params.msgpack", run.path / "model.golfjax"
    if params.is_file() and artifact.is_file():
        rows = quant_error.tensor_errors(params, artifact)
        plot("quantization error per tensor", "quant_error.png", lambda p: plots.quant_errors(rows, run, p))
    else:
        notes.append("quantization error: needs params.msgpack and model.golfjax in the run dir")
    write_atomic(out / "summary.md", markdown.summary(run, figures, notes))
    return [out / f for f in figures.values()] + [out / "summary.md"], notes
