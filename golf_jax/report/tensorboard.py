"""TensorBoard event files of a run's metrics, beside metrics.jsonl (tensorboardX: no torch or TF).

`python -m golf_jax.train` and `python -m golf_jax.eval` pass `Events` to their run dir
(golf_jax/core/rundir.py `RunDir(..., observers=(Events,))`): it gives each metrics record,
and the finished summary.json / eval.json, to a TensorBoard writer in RUN_DIR/tensorboard/,
and `tensorboard --logdir runs/` shows every run's curves live, and at the end its eval
scores and audit verdict. rundir.py, which a submission packs, holds no TensorBoard code:
a submission (and `pipeline.run` called without observers) writes metrics.jsonl only.
"""

from __future__ import annotations

from pathlib import Path

from tensorboardX import SummaryWriter

FLUSH_SECONDS = 10  # how stale a live view may be
SCORED = ("summary.json", "eval.json")  # the files whose finished ("ok") records carry the scores


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


class Events:
    """A run dir's observer (see RunDir): its metrics records, and its finished summary.json or
    eval.json, into a Sink in RUN_DIR/tensorboard/, opened at the first of them (a run dir that
    records neither gets no event file); closed with the run dir."""

    def __init__(self, run) -> None:
        self.run = run  # its path is read at the first event: a multi-host run dir moves once made
        self._sink: Sink | None = None

    def __call__(self, name: str, record: dict) -> None:
        if name == "metrics.jsonl":
            self._open().write(record)
        elif name in SCORED and record.get("status") == "ok":
            self._open().scores(record)

    def _open(self) -> Sink:
        if self._sink is None:
            self._sink = Sink(Path(self.run.path) / "tensorboard")
        return self._sink

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None
