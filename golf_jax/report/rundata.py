"""A run directory read back for the report: its config, summary, metrics and per-stage records.

What a run writes is golf_jax/core/rundir.py (config.json, metrics.jsonl, summary.json; an
evaluation run writes eval.json instead), golf_jax/eval/stages.py (blocks_<stage>.npy,
slot_windows.npz) and the pipeline (params.msgpack, model.golfjax). Anything absent is
None here: the report skips what a run does not have.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RUN_FILES = ("config.json", "summary.json", "eval.json", "metrics.jsonl")
PIPELINE = ("data", "fit", "average", "prequant_ttt", "calibrate", "export", "load_artifact", "eval", "audit")


@dataclass
class Run:
    path: Path
    config: dict  # config.json as written ({} when absent)
    summary: dict  # summary.json, or an evaluation run's eval.json ({} when neither)
    train: dict[str, np.ndarray] | None  # columns of the per-step records (step, loss, ...); NaN where absent
    val: dict[str, np.ndarray] | None  # columns of the validation records (step, val_loss, val_bpb)
    blocks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # stage -> nll, tokens, bytes per block
    slot: dict[str, np.ndarray] | None = None  # slot_windows.npz

    @property
    def name(self) -> str:
        return self.path.name

    def section(self, key: str) -> dict:
        """A config section ({} when the run has no config.json)."""
        return self.config.get(key, {})

    @property
    def evals(self) -> dict[str, dict]:
        """The eval stages' results in the order they ran (summary.json sorts its keys)."""
        order = [x.strip() for x in str(self.section("eval").get("stages", "")).split(",")]
        return _ordered(self.summary.get("eval", {}), order)

    @property
    def stage_seconds(self) -> dict[str, float]:
        """The pipeline's stage times in the order they ran."""
        return _ordered(self.summary.get("stage_seconds", {}), PIPELINE)


def _ordered(d: dict, order) -> dict:
    rank = {k: i for i, k in enumerate(order)}
    return {k: d[k] for k in sorted(d, key=lambda k: (rank.get(k, len(rank)), k))}


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({e}); was the run interrupted while writing it?") from None


def read_metrics(path: Path) -> list[dict]:
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not a JSON record ({e}); delete the line to report the rest") from None
    return records


def columns(records: list[dict], keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """{key: float array} over the records that hold keys[1] (the kind's marker), NaN where a
    record lacks a key; None when no record is of that kind."""
    rows = [r for r in records if keys[1] in r]
    if not rows:
        return None
    return {k: np.array([float(r.get(k, np.nan)) for r in rows]) for k in keys}


def load(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_dir() or not any((path / f).is_file() for f in RUN_FILES):
        raise ValueError(f"{path} is not a run directory (it has none of {', '.join(RUN_FILES)}); "
                         "pass runs/<name>-<timestamp>/ as `python -m golf_jax.train` wrote it")
    summary = read_json(path / "summary.json") or read_json(path / "eval.json") or {}
    records = read_metrics(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
    blocks = {}
    for f in sorted(path.glob("blocks_*.npy")):
        table = np.load(f)
        if table.ndim != 2 or table.shape[1] != 3:
            raise ValueError(f"{f}: expected [blocks, 3] (NLL, tokens, bytes), got shape {table.shape}")
        blocks[f.stem[len("blocks_"):]] = dict(zip(("nll", "tokens", "bytes"), table.T))
    slot = None
    if (path / "slot_windows.npz").is_file():
        with np.load(path / "slot_windows.npz") as z:
            slot = {k: z[k] for k in z.files}
    return Run(path, read_json(path / "config.json") or {}, summary,
               columns(records, ("step", "loss", "grad_norm", "lr_scale", "train_time_s", "time")),
               columns(records, ("step", "val_loss", "val_bpb", "time")), blocks, slot)
