"""eval.profile="STAGE:START:STOP": a jax.profiler trace of an eval stage's batches.

The harness (golf_jax/eval/harness.py) calls an evaluator's `predict` once per batch
and its `update` once per block. `Tracer.wrap` puts the profiled stage's evaluator
inside `Traced`, which starts the trace at batch START, marks every batch with a
StepTraceAnnotation (the step view of TensorBoard's profile plugin; the batch runs
from its predict to the next one, the harness's scoring included) and every update
with a TraceAnnotation, and stops after batch STOP-1 or the stage's last block.
The trace goes to RUN_DIR/profile_<stage>/ (docs/profiling.md: how to open it).
Imported only when eval.profile is set (golf_jax/submission/modules.py GATES).
"""

from __future__ import annotations

from pathlib import Path

import jax

HARNESS_STAGES = ("sliding", "ttt", "slot")  # the round trip is the plain eval: no per-batch hook


def parse(spec: str, stages=HARNESS_STAGES) -> tuple[str, int, int]:
    """(stage, start, stop) of "STAGE[:START:STOP]" (default batches 0:3); `stages`: those the run lists."""
    parts = str(spec).split(":")
    try:
        stage, start, stop = (parts[0], 0, 3) if len(parts) == 1 else (parts[0], int(parts[1]), int(parts[2]))
    except (ValueError, IndexError):
        raise ValueError(f"eval.profile={spec!r}: use STAGE or STAGE:START:STOP, e.g. sliding:2:5") from None
    if stage not in HARNESS_STAGES:
        raise ValueError(f"eval.profile={spec!r}: profile one of {HARNESS_STAGES} (the round trip's plain eval has "
                         "no batch hook: trace it with python -m golf_jax.bench --stage=eval --profile_dir=DIR)")
    if stage not in stages:
        raise ValueError(f"eval.profile={spec!r}: stage {stage} is not in eval.stages ({', '.join(stages)})")
    if not 0 <= start < stop:
        raise ValueError(f"eval.profile={spec!r}: need 0 <= START < STOP")
    return stage, start, stop


def trace_options() -> jax.profiler.ProfileOptions:
    """Host tracer level 3 on a CPU: only then do its executables' ops appear in the trace."""
    options = jax.profiler.ProfileOptions()
    if jax.default_backend() == "cpu":
        options.host_tracer_level = 3
    return options


class Tracer:
    """Which stage to trace, which batches, and where."""

    def __init__(self, spec: str, run_path: Path) -> None:
        self.stage, self.start, self.stop = parse(spec)
        self.path = Path(run_path) / f"profile_{self.stage}"

    def wrap(self, evaluator):
        return Traced(evaluator, self) if evaluator.name == self.stage else evaluator


class Traced:
    """An evaluator whose batches START..STOP-1 are traced; everything else is the evaluator's."""

    def __init__(self, inner, tracer: Tracer) -> None:
        self._inner, self._tracer = inner, tracer
        self._batch, self._tracing, self._step, self._last = 0, False, None, None

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def predict(self, inputs: dict):
        self._end_step()
        k, t = self._batch, self._tracer
        self._batch += 1
        if k == t.stop:
            self._stop()
        elif k == t.start:
            jax.profiler.start_trace(str(t.path), profiler_options=trace_options())
            self._tracing = True
        if self._tracing:
            self._step = jax.profiler.StepTraceAnnotation(f"eval_{t.stage}", step_num=k)
            self._step.__enter__()
        self._last = self._inner.predict(inputs)
        return self._last

    def update(self, reveal) -> None:
        self._end_step()
        if self._tracing:
            with jax.profiler.TraceAnnotation(f"eval_{self._tracer.stage}_update", block=reveal.block):
                self._inner.update(reveal)
        else:
            self._inner.update(reveal)
        if reveal.is_last:
            self._stop()

    def _end_step(self) -> None:
        if self._step is not None:
            self._step.__exit__(None, None, None)
            self._step = None

    def _stop(self) -> None:
        if self._tracing:
            jax.block_until_ready(self._last)
            jax.profiler.stop_trace()
            self._tracing = False
