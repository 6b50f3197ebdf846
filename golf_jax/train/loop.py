"""The fit stage: the timed training loop (Muon/AdamW on the mesh, wallclock cap).

The rest of the job (data, averaging, export, evaluation) is golf_jax/pipeline.py.
The hot loop keeps the host out of the device's way: the step is compiled before
the clock starts, the state is donated, batches are prefetched by a thread, and
metrics are read one step late. Periodic validation is a callback the pipeline passes.

With train.checkpoint_every > 0 the state is saved asynchronously (see
golf_jax/train/checkpoint.py, which also explains how the loader state survives the
Prefetcher's read-ahead; it is imported only when checkpoints are asked for);
train.resume_from continues the latest checkpoint of a run.
SIGTERM / SIGINT (golf_jax/core/rundir.py) stop the loop between steps: the step in hand is
saved as a checkpoint, then the run ends as `Interrupted`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple
import queue
import threading
import time
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from golf_jax.core import mesh as mesh_lib
from golf_jax import model as model_lib
from golf_jax.model import gpt
from golf_jax.optim import build, schedule
from golf_jax.core.rundir import Interrupted, RunDir
from golf_jax.train import step as step_lib
from golf_jax.submission.modules import repo_only


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, bad config); the run dir keeps what ran."""


# data.loader: "sequential" reads the stream in order (docs/reference-notes.md#sequential-loader),
# "coprime" walks each shard with a coprime stride (#coprime-loader), "shuffled" draws random
# sequence starts per shard (#shuffled-loader). Each is imported on its branch only (make_loader).
LOADERS = ("sequential", "coprime", "shuffled")


@repo_only
def check_config(cfg, num_devices: int) -> None:
    """The train, schedule, opt and model keys' enums and ranges, before anything compiles."""
    t = cfg.train
    for key, low in (("iterations", 0), ("seq_len", 1), ("batch_tokens", 1), ("swa_every", 1), ("val_every", 0),
                     ("checkpoint_every", 0), ("max_wallclock_seconds", 0), ("late_qat_threshold", 0)):
        if t[key] < low:
            raise ValueError(f"train.{key}={t[key]}: use a value >= {low}")
    if not 0 <= t.ema_decay < 1:
        raise ValueError(f"train.ema_decay={t.ema_decay}: use 0 (off) or a decay in (0, 1)")
    _parse_profile(t.profile_steps)
    if t.batch_tokens % (num_devices * t.seq_len):
        raise ValueError(
            f"train.batch_tokens={t.batch_tokens} must be a multiple of devices×seq_len = "
            f"{num_devices}×{t.seq_len}; change train.batch_tokens or train.seq_len"
        )
    model_lib.check_config(cfg.model)
    schedule.check_config(cfg.schedule)
    build.check_config(cfg.opt)
    if cfg.data.loader not in LOADERS:
        raise ValueError(f"data.loader={cfg.data.loader!r}: use one of {', '.join(map(repr, LOADERS))}")


def make_loader(cfg, data_dir: Path, mesh):
    pattern = str(data_dir / "fineweb_train_*.bin")
    world, ranks = mesh.devices.size, mesh_lib.local_data_ranks(mesh)
    t = cfg.train
    if cfg.data.loader == "coprime":  # each loader is imported on its branch only: golf_jax/submission/modules.py GATES
        from golf_jax.data.coprime import CoprimeLoader

        return CoprimeLoader(pattern, t.seq_len, t.batch_tokens // t.seq_len, world, ranks, cfg.model.vocab_size)
    if cfg.data.loader == "shuffled":
        from golf_jax.data.shuffled import ShuffledLoader

        return ShuffledLoader(pattern, t.seq_len, t.batch_tokens, world, ranks, cfg.model.vocab_size,
                              seed=cfg.seed, rank_seed=cfg.compat.loader_rank_seed)
    from golf_jax.data.sequential import SequentialLoader, span_ranks

    spans, read = span_ranks(ranks, world, cfg.compat.loader_spans)
    return SequentialLoader(pattern, t.seq_len, t.batch_tokens, spans, read, cfg.model.vocab_size)


class Prefetcher:
    """Reads and uploads the next batches on a thread while the device computes.

    Each batch comes with the loader's state_dict() taken right after it was built: the
    state that builds the batch after it (checkpoints save it; the loader runs ahead).
    """

    def __init__(self, loader, mesh, depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._loader, self._mesh = loader, mesh
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                x, y = self._loader.next_batch()
                after = self._loader.state_dict()
                item = ({"x": mesh_lib.put_local_batch(self._mesh, x), "y": mesh_lib.put_local_batch(self._mesh, y)}, after)
            except Exception as e:  # surfaced in the main thread by next()
                item = e
            self._queue.put(item)
            if isinstance(item, Exception):
                return

    def next(self) -> tuple[dict, dict]:
        """(batch, loader state after it)."""
        item = self._queue.get()
        if isinstance(item, Exception):
            raise item
        return dict(item[0]), item[1]


@dataclass
class FitResult:
    state: step_lib.TrainState
    steps: int
    train_time_s: float
    live_val_bpb: float
    late_qat_step: int | None
    extra: dict = field(default_factory=dict)  # resumed_from, resumed_step, last_checkpoint_step


class Trainee(NamedTuple):
    """What fit trains: the model, its optimizer, the recipe (golf_jax/train/step.py: QAT mask,
    EMA/SWA) and the state to start from (pipeline.py builds all four together)."""

    model: Any
    tx: Any
    recipe: step_lib.Recipe
    state: step_lib.TrainState


def fit(cfg, trainee: Trainee, loader, mesh, run: RunDir, validate: Callable[[Any, int], float]) -> FitResult:
    """Train until train.iterations or the wallclock cap; `validate(params, step) -> val_bpb`.

    The loop steps, validates and decides when to stop; each other concern is a helper it calls:
    checkpoints (golf_jax/train/checkpoint.py `start`, `Checkpointer.due/save/finish`), the
    compiled graphs (_compile), the layer-loop and late-QAT switches (_schedule), profiling
    (_profile), the metrics one step late (_report), multi-host agreement (_agree), and signals
    (the run dir defers them to the loop, which ends with _stop).
    """
    t = cfg.train
    # The loop's counters, as a checkpoint's meta holds them (plus loop_on_step and the loader's state).
    state, meta, extra, checkpointer = trainee.state, {"step": 0, "train_time_s": 0.0, "late_qat_step": None}, {}, None
    if t.resume_from or t.checkpoint_every > 0:  # orbax only when asked for (eval stays light): GATES
        from golf_jax.train import checkpoint as ckpt_lib

        state, meta, extra, checkpointer = ckpt_lib.start(cfg, state, meta, loader, run)
    try:
        prefetch = Prefetcher(loader, mesh, cfg.data.prefetch)  # after a resume set the loader's position
        batch, meta["loader"] = prefetch.next()
        looped_step, unlooped_step = _compile(cfg, trainee, state, batch, mesh, run)
        meta["loop_on_step"] = meta.get("loop_on_step") if unlooped_step is not None else 0
        # export.reserve_seconds: stop early so calibration fits inside the training budget.
        cap_s = max(t.max_wallclock_seconds - cfg.export.reserve_seconds, 0.0) if t.max_wallclock_seconds > 0 else None
        profile = _parse_profile(t.profile_steps)
        stop_after, pending, val_bpb, interrupted = None, None, float("nan"), False
        train_time, t0 = float(meta["train_time_s"]), time.perf_counter()
        clock = lambda: train_time + time.perf_counter() - t0  # noqa: E731 (training seconds so far)
        run.defer_signals = True  # from here a signal only sets run.stop_signal, which the loop polls
        while True:
            step = meta["step"]
            last = step == t.iterations or (stop_after is not None and step >= stop_after)
            if last or (t.val_every > 0 and step % t.val_every == 0):
                _report(run, pending, t, clock, force=True)
                pending = None
                jax.block_until_ready(state)
                train_time += time.perf_counter() - t0
                val_bpb = validate(state.params, step)
                t0 = time.perf_counter()
            if last:
                break
            _profile(run, profile, step)
            batch.update(_schedule(cfg, trainee.recipe, meta, clock(), cap_s, run))
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, metrics = (unlooped_step if meta["loop_on_step"] is None else looped_step)(state, batch)
            meta["step"] = step = step + 1
            _profile(run, profile, step, state)
            _report(run, pending, t, clock)  # the previous step's metrics: one step late
            pending = (step, metrics, batch["lr_scale"])
            capped, interrupted = _agree(cap_s is not None and stop_after is None and clock() >= cap_s,
                                         run.stop_signal is not None)
            if capped:
                stop_after = step
                run.log(f"wallclock cap {cap_s:.0f}s reached at step {step}")
            if interrupted:  # saved below, like a last step
                jax.block_until_ready(state)
                train_time += time.perf_counter() - t0
                break
            if step < t.iterations and not (stop_after is not None and step >= stop_after):
                # The last step is saved after the loop, with the training time measured once its
                # steps have finished (clock() here runs ahead of steps still in flight).
                if checkpointer is not None and checkpointer.due(step):
                    checkpointer.save(step, state, {**meta, "train_time_s": clock()})  # orbax waits for the arrays
                batch, meta["loader"] = prefetch.next()

        run.defer_signals = False  # a second signal stops at once
        meta["train_time_s"] = train_time
        run.log(f"training: {step} steps in {train_time:.1f}s ({1000 * train_time / max(step, 1):.1f} ms/step)")
        if checkpointer is not None:  # the final state, with its measured training time
            extra["last_checkpoint_step"] = checkpointer.finish(step, state, meta, run.log)
    finally:
        if checkpointer is not None:
            checkpointer.close()  # waits for pending writes and releases the lock, also on a failure
    _stop(run, interrupted, step, checkpointer)
    if unlooped_step is not None:
        extra["loop_on_step"] = meta["loop_on_step"]
    return FitResult(state, step, train_time, val_bpb, meta["late_qat_step"], extra)


def _compile(cfg, trainee: Trainee, state, batch: dict, mesh, run: RunDir):
    """(the train step with the layer loop, the one without it or None), compiled before the clock starts.

    Depth recurrence switches on at a fraction of training: both graphs compile now, so the
    timed loop never stalls on a recompile (the reference warms both up too)."""
    t0, args = time.perf_counter(), {**batch, **step_lib.schedule_inputs(1.0, cfg.opt.muon_momentum)}

    def compiled(model):
        return step_lib.jit_train_step(step_lib.make_train_step(model, trainee.tx, trainee.recipe), mesh).lower(
            state, args).compile()

    looped = compiled(trainee.model)
    unlooped = compiled(trainee.model.clone(looping=False)) if recurrence_delayed(cfg.model) else None
    run.log(f"compiled train step{'s (without and with the layer loop)' if unlooped else ''} "
            f"in {time.perf_counter() - t0:.1f}s")
    return looped, unlooped


def _schedule(cfg, recipe, meta: dict, elapsed: float, cap_s: float | None, run: RunDir) -> dict:
    """The step's schedule inputs (LR scale, Muon momentum, QAT alpha); switches the layer loop
    and late QAT on (meta's loop_on_step, late_qat_step) when their time comes."""
    t, step = cfg.train, meta["step"]
    lr = schedule.lr_scale(
        step, elapsed, iterations=t.iterations, warmdown_iters=cfg.schedule.warmdown_iters,
        max_wallclock_seconds=cap_s or 0.0, mode=cfg.schedule.mode, warmdown_frac=cfg.schedule.warmdown_frac,
        min_lr=cfg.schedule.min_lr,
    )
    if meta["loop_on_step"] is None and schedule.training_fraction(step, elapsed, t.iterations, cap_s or 0.0) >= cfg.model.loop_enable_frac:
        meta["loop_on_step"] = step
        encoder, decoder = gpt.layer_order(cfg.model, looping=True)
        run.log(f"layer loop on at step {step}: encoder {encoder} decoder {decoder}")
    if recipe.qat_mask is not None:  # imported on its branch only: golf_jax/submission/modules.py GATES
        from golf_jax.train import qat
    if recipe.qat_mask is not None and meta["late_qat_step"] is None and lr < t.late_qat_threshold:
        meta["late_qat_step"] = step
        run.log(f"late QAT on at step {step} (lr_scale {lr:.3f} < {t.late_qat_threshold})")
    return step_lib.schedule_inputs(
        lr,
        schedule.muon_momentum(step, cfg.opt.muon_momentum_warmup_start, cfg.opt.muon_momentum, cfg.opt.muon_momentum_warmup_steps),
        0.0 if recipe.qat_mask is None or meta["late_qat_step"] is None else qat.qat_alpha(lr, t.late_qat_threshold),
    )


def _profile(run: RunDir, profile: tuple[int, int] | None, step: int, state=None) -> None:
    """train.profile_steps START:STOP: a trace starts before step START (called without a state)
    and stops after step STOP - 1 (called with the state, once the step counter is STOP)."""
    if profile is None:
        return
    if state is None and step == profile[0]:
        jax.profiler.start_trace(str(run.path / "profile"))
    if state is not None and step == profile[1]:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        run.log(f"profile of steps {profile[0]}..{profile[1]} written to {run.path / 'profile'}")


def _stop(run: RunDir, interrupted: bool, step: int, checkpointer) -> None:
    """A signal (here, or on another host: SIGTERM, 15) ends the run as Interrupted, once saved."""
    if interrupted or run.stop_signal:
        resume = f"; resume with --config.train.resume_from={run.path}" if checkpointer else ""
        raise Interrupted(run.stop_signal or 15, f" at step {step}{resume}")


def recurrence_delayed(model_cfg) -> bool:
    """Whether training starts without the layer loop and switches it on later."""
    return model_cfg.num_loops > 0 and model_cfg.loop_enable_frac > 0


def _report(run: RunDir, pending, t, clock, force: bool = False) -> None:
    """Log a finished step's metrics (reading them syncs only with that older step)."""
    if pending is None:
        return
    step, metrics, lr = pending
    loss = float(metrics["loss"])  # waits for that step only; later steps stay queued
    elapsed = clock()
    if not math.isfinite(loss):
        raise TrainingError(
            f"train loss is {loss} at step {step}; lower the learning rates (opt.*_lr), "
            "enable opt.grad_clip_norm, or check the data"
        )
    if force or step <= 5 or step % max(t.log_every, 1) == 0:
        ms = 1000 * elapsed / step
        eta = (t.iterations - step) * ms / 1000  # the wallclock cap may end it sooner
        if t.max_wallclock_seconds:
            eta = min(eta, t.max_wallclock_seconds - elapsed)
        run.log(
            f"step {step}/{t.iterations} loss {loss:.4f} lr_scale {float(lr):.3f} "
            f"{ms:.1f} ms/step {t.batch_tokens / (ms / 1000):,.0f} tok/s eta {max(eta, 0):.0f}s"
        )
    run.metrics({"step": step, "loss": loss, "grad_norm": float(metrics["grad_norm"]), "lr_scale": float(lr),
                 "train_time_s": elapsed})


def _agree(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true on every host if it is on any: all hosts stop on the same step (a host
    sync, only in multi-host runs)."""
    if jax.process_count() == 1:
        return flags
    return tuple(bool(f) for f in np.max(multihost_utils.process_allgather(np.int32(flags)), axis=0))


def _parse_profile(spec: str) -> tuple[int, int] | None:
    if not spec:
        return None
    try:
        start, stop = (int(v) for v in spec.split(":"))
    except ValueError:
        raise ValueError(f"train.profile_steps={spec!r}: use 'START:STOP', e.g. '5:10'") from None
    if not 0 <= start < stop:
        raise ValueError(f"train.profile_steps={spec!r}: need 0 <= START < STOP")
    return start, stop
