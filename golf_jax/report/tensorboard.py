"""TensorBoard event files of a run's metrics, beside metrics.jsonl (tensorboardX: no torch or TF).

`python -m golf_jax.train` calls `attach()`: from then on every run dir (golf_jax/core/rundir.py)
also gives each metrics record to a `Sink` in RUN_DIR/tensorboard/, and `tensorboard
--logdir runs/` shows every run's curves live, and at the end its eval scores and audit verdict. It wraps RunDir's methods from here, so
rundir.py, which a submission packs, holds no TensorBoard code: a submission (and
`pipeline.run` called without `attach()`) writes metrics.jsonl only.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tensorboardX import SummaryWriter

from golf_jax.core.rundir import RunDir

FLUSH_SECONDS = 10  # how stale a live view may be


def scalars(record: dict) -> dict[str, float]:
    """{tag: value} of a metrics record: val_* under val/, the rest under train/ (less a
    train_ prefix); the step and the run dir's clock are not scalars."""
    out = {}
    for key, value in record.items():
        if key in ("step", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        tag = "val/" + key[4:] if key.startswith("val_") else "train/" + key.removeprefix("train_")
        out[tag] = float(value)
    return out


class Sink:
    """write(record) -> one scalar per numeric field at the record's step."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = Path(logdir)
        self._writer = SummaryWriter(str(self.logdir), flush_secs=FLUSH_SECONDS)

    def write(self, record: dict) -> None:
        if "step" not in record:
            return
        for tag, value in scalars(record).items():
            self._writer.add_scalar(tag, value, int(record["step"]))

    def scores(self, summary: dict) -> None:
        """A finished run's (or evaluation's) scores per eval stage and the audit's verdict, at its last step."""
        step = int(summary.get("steps") or 0)
        for stage, r in (summary.get("eval") or {}).items():
            for key in ("val_bpb", "val_loss"):
                if isinstance(r.get(key), (int, float)):
                    self._writer.add_scalar(f"eval/{stage}/{key}", float(r[key]), step)
        if isinstance(summary.get("val_bpb"), (int, float)):
            self._writer.add_scalar("eval/final_val_bpb", float(summary["val_bpb"]), step)
        audit = summary.get("audit")
        if audit:
            self._writer.add_scalar("audit/pass", float(audit.get("verdict") == "PASS"), step)
            checks = "\n".join(f"- {name}: {result}" for name, result in audit.get("checks", {}).items())
            self._writer.add_text("audit", f"**{audit.get('verdict')}** ({summary.get('compliance', '')})\n\n{checks}",
                                  step)

    def close(self) -> None:
        self._writer.close()


def attach(cls: type = RunDir) -> None:
    """Make every writing run dir of `cls` keep a Sink (opened at its first metrics record,
    closed with the run dir). Idempotent."""
    if getattr(cls.metrics, "tensorboard", False):
        return
    metrics, close, write_json = cls.metrics, cls.close, cls.write_json

    @functools.wraps(metrics)
    def metrics_and_events(run, record: dict) -> None:
        metrics(run, record)
        if run.is_writer:
            if "_tensorboard" not in vars(run):
                run._tensorboard = Sink(run.path / "tensorboard")
            run._tensorboard.write(record)

    @functools.wraps(close)
    def close_with_events(run) -> None:
        close(run)
        sink = vars(run).pop("_tensorboard", None)
        if sink is not None:
            sink.close()

    @functools.wraps(write_json)
    def write_json_and_scores(run, name: str, obj: dict) -> None:
        write_json(run, name, obj)
        if run.is_writer and name in ("summary.json", "eval.json") and obj.get("status") == "ok":
            if "_tensorboard" not in vars(run):
                run._tensorboard = Sink(run.path / "tensorboard")
            run._tensorboard.scores(obj)

    metrics_and_events.tensorboard = True
    cls.metrics, cls.close, cls.write_json = metrics_and_events, close_with_events, write_json_and_scores
