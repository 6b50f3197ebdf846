"""Resumable training: orbax checkpoints of the TrainState plus the loop's counters.

Layout: RUN_DIR/checkpoints/<step>/{state, meta}. `state` is the whole TrainState
(params, optimizer state, EMA/SWA sums) saved with StandardSave; `meta` is JSON: step,
train_time_s, late_qat_step, loop_on_step and the loader's state_dict. Saves are async: `save()`
returns once orbax has copied the arrays to host (so the next step may donate them),
and the files are written on a background thread. The train loop (golf_jax/train/loop.py fit)
calls `start` (resume, make the Checkpointer), `Checkpointer.due/save` between steps and
`Checkpointer.finish` after the last one; it closes the Checkpointer also when training fails.

Data order across a resume: the Prefetcher reads ahead by up to data.prefetch batches,
so the live loader is *ahead* of the train loop and its state_dict() at save time would
skip batches. Instead the Prefetcher snapshots `loader.state_dict()` right after it
builds each batch and hands the snapshot over with the batch; a checkpoint stores the
snapshot of the last batch a step consumed, which is exactly the state that builds the
next batch the loop will consume. On resume a fresh loader loads that state before the
Prefetcher thread starts. (Replaying next_batch() `steps` times would also be correct,
but it re-reads every token trained so far: ~10B tokens for a full record run.)

Faults. A resume takes the newest checkpoint whose metadata and arrays load: one that a
crash or a full disk left truncated is named in one line with the reason, and the one
before it is tried (orbax keeps two; a save cut short never gets its final name). While
a run saves checkpoints it holds RUN_DIR/writer.lock (pid and host): a resume refuses a
run dir whose writer still runs (its newest checkpoint may be half written, its oldest
deleted under us), and takes over a lock left by a process that is gone. A resume whose
schedule settings differ from the original run's says so. Orbax's INFO lines (dozens per
save) are kept out of the run's output; its warnings stay.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging

from golf_jax.core.errors import UserError

# The config fields that fix the TrainState's shapes; named in mismatch errors.
SHAPE_KEYS = ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult",
              "bigram_vocab_size", "bigram_dim", "ve_dim", "ve_layers", "mtp_num_heads", "smear_gate", "skip_gates",
              "num_loops", "loop_start", "loop_end", "gate_window", "attn_gate", "parallel_mode")

# The settings that shape the LR / momentum schedule, the stopping point or the data order.
SCHEDULE_KEYS = ("train.iterations", "train.batch_tokens", "train.seq_len", "train.max_wallclock_seconds",
                 "export.reserve_seconds", "schedule.mode", "schedule.warmdown_iters", "schedule.warmdown_frac",
                 "schedule.min_lr", "opt.muon_momentum", "opt.muon_momentum_warmup_start",
                 "opt.muon_momentum_warmup_steps", "train.late_qat_threshold", "model.loop_enable_frac", "data.loader")
LOCK_NAME = "writer.lock"

absl_logging.get_absl_logger().addFilter(
    lambda r: r.levelno >= logging.WARNING or f"{os.sep}orbax{os.sep}" not in r.pathname)


class CheckpointError(UserError):
    """A resume that cannot go on: no readable checkpoint, a live writer, or a state that does not fit the config."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir).resolve() / "checkpoints"


class Checkpointer:
    """Saves every `every` steps (and the final step) into RUN_DIR/checkpoints, async."""

    def __init__(self, run_dir: str | Path, every: int) -> None:
        self.every, self.run_dir = every, run_dir
        self.last_saved: int | None = None
        self._lock = acquire_lock(run_dir) if jax.process_index() == 0 else None
        options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=True)
        self._mngr: ocp.CheckpointManager | None = ocp.CheckpointManager(checkpoint_dir(run_dir), options=options)

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0 and step != self.last_saved

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Start an async save; orbax blocks only until the arrays are on host."""
        if step == self.last_saved:
            return
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._mngr.save(step, args=args, force=True)
        self.last_saved = step

    def close(self) -> None:
        """Wait for pending writes, then release orbax's threads."""
        if self._mngr is not None:
            self._mngr.wait_until_finished()
            self._mngr.close()
            self._mngr = None
        if self._lock is not None:
            release_lock(self._lock)
            self._lock = None


    def finish(self, step: int, state: Any, meta: dict, log=print) -> int:
        """Save the final state (`meta` with its measured training time), wait for the writes and
        close; returns the step saved."""
        self.save(step, state, meta)
        self.close()
        log(f"checkpoint of step {step} in {checkpoint_dir(self.run_dir)}")
        return step


def start(cfg: Any, state: Any, meta: dict, loader: Any, run: Any) -> tuple[Any, dict, dict, Checkpointer | None]:
    """The train loop's checkpoint setup: (state, meta, extra, checkpointer). With
    train.resume_from: the latest readable state and meta of that run, the loader moved to where
    it stopped (before the Prefetcher starts reading) and extra = {resumed_from, resumed_step};
    else `state` and `meta` as given. With train.checkpoint_every > 0, a Checkpointer of `run`."""
    t, extra, checkpointer = cfg.train, {}, None
    if t.resume_from:
        state, meta, saved_step = restore(t.resume_from, state, cfg, log=run.log)
        meta["step"] = int(meta["step"])
        loader.load_state_dict(meta["loader"])
        extra = {"resumed_from": str(t.resume_from), "resumed_step": saved_step}
        run.log(f"resumed from {t.resume_from} at step {saved_step} (train_time {meta['train_time_s']:.1f}s)")
    if t.checkpoint_every > 0:
        checkpointer = Checkpointer(run.path, t.checkpoint_every)
    return state, meta, extra, checkpointer


def _holder(path: Path) -> dict | None:
    """The lock's {"pid", "host"}; {} when unreadable (a writer killed mid-write), None when absent."""
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else {}
    except FileNotFoundError:
        return None
    except ValueError:
        return {}


def _alive(holder: dict) -> bool:
    """Whether the lock's writer still runs. One on another host cannot be checked: it counts as alive."""
    if not holder:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    if holder.get("pid") == os.getpid():
        return False  # an earlier run of this process
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, KeyError, TypeError, ValueError):  # gone, or no pid: stale
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(run_dir: str | Path, log=print) -> Path | None:
    """Hold RUN_DIR/writer.lock: refuse a live holder, take over a stale one (None: a read-only run dir)."""
    path = Path(run_dir).resolve() / LOCK_NAME
    holder = _holder(path)
    if holder is not None and _alive(holder):
        raise CheckpointError(
            f"{path.parent} is in use by process {holder.get('pid')} on {holder.get('host')} (lock {path}): "
            f"wait for it to finish or stop it (SIGTERM saves a checkpoint); if it is gone, delete {path}")
    if holder is not None:
        log(f"taking over the stale lock {path} of process {holder.get('pid')} on {holder.get('host')}, which is gone")
    tmp = path.with_name(f"{LOCK_NAME}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        os.replace(tmp, path)
    except OSError:  # a run dir we may read but not write: nobody can be writing it either
        return None
    return path


def release_lock(path: Path) -> None:
    """Remove the lock if this process still holds it."""
    if _holder(path) == {"pid": os.getpid(), "host": socket.gethostname()}:
        path.unlink(missing_ok=True)


def _model_fields(model_cfg: Any) -> dict:
    get = model_cfg.get if hasattr(model_cfg, "get") else lambda k, d=None: getattr(model_cfg, k, d)
    return {k: get(k, None) for k in SHAPE_KEYS}


def _saved_config(run_dir: Path) -> dict | None:
    """The original run's config.json, or None when it is absent or unreadable."""
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def schedule_changes(saved: dict, cfg: Any) -> list[str]:
    """'key old → new' for each SCHEDULE_KEYS setting of `cfg` that differs from the saved config's."""
    changes = []
    for key in SCHEDULE_KEYS:
        group, name = key.split(".")
        new = cfg[group][name]
        old = (saved.get(group) or {}).get(name, new)
        if old != new:
            changes.append(f"{key} {old!r} → {new!r}")
    return changes


def _reason(e: BaseException) -> str:
    """An orbax / tensorstore error's innermost cause on one line, without its spec dump."""
    for _ in range(16):
        inner = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
        if inner is None:
            break
        e = inner
    text = " ".join(str(e).split("[tensorstore_spec")[0].split())
    return f"{type(e).__name__}: {text[:300]}"


def restore(run_dir: str | Path, like_state: Any, cfg: Any, log=print) -> tuple[Any, dict, int]:
    """The newest readable (state, meta, step) of `run_dir`, with `like_state`'s shapes and shardings.

    `like_state` is a freshly initialised TrainState: restored arrays get its (replicated)
    shardings, so the compiled step takes them exactly like fresh ones. A checkpoint whose
    metadata or arrays do not load is skipped, with one `log` line saying which and why.
    A run dir that a live process still writes is refused; its lock is held while reading.
    """
    run_dir = Path(run_dir).resolve()
    ckpt = checkpoint_dir(run_dir)
    if not ckpt.is_dir():
        raise CheckpointError(
            f"train.resume_from={str(run_dir)!r} has no checkpoints ({ckpt} does not exist); "
            "pass a run directory that was trained with train.checkpoint_every > 0"
        )
    lock = acquire_lock(run_dir, log) if jax.process_index() == 0 else None
    try:
        return _restore(run_dir, ckpt, like_state, cfg, log)
    finally:
        if lock is not None:
            release_lock(lock)


def _restore(run_dir: Path, ckpt: Path, like_state: Any, cfg: Any, log) -> tuple[Any, dict, int]:
    saved = _saved_config(run_dir)
    ours, theirs = _model_fields(cfg.model), None if saved is None else _model_fields(saved.get("model") or {})
    mismatch = {k: (theirs[k], ours[k]) for k in SHAPE_KEYS if theirs is not None and theirs[k] != ours[k]}

    def shape_error(detail: str) -> CheckpointError:
        return CheckpointError(
            f"the checkpoint in {ckpt} does not fit this config's model: {detail}; "
            f"checkpoint model {theirs if theirs is not None else 'unknown (no config.json)'} vs this run's model {ours}. Resume with the model config "
            "of the run that wrote the checkpoint"
        )

    if mismatch:
        raise shape_error("differing fields (checkpoint, this run) " + ", ".join(f"{k}={v}" for k, v in mismatch.items()))
    changes = schedule_changes(saved or {}, cfg)
    if changes:
        log(f"warning: resuming {run_dir} with another schedule than it was trained with: {'; '.join(changes)} "
            "(the LR / momentum schedule, the stopping point or the data order differ from an uninterrupted run)")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    want = sorted(tuple(x.shape) for x in jax.tree.leaves(abstract))
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False)
    mngr = ocp.CheckpointManager(ckpt, options=options, item_handlers=handlers)
    try:
        steps, skipped = sorted(mngr.all_steps(), reverse=True), []
        if not steps:
            raise CheckpointError(
                f"train.resume_from={str(run_dir)!r}: {ckpt} holds no finished checkpoint; "
                "pass a run directory that saved at least one (train.checkpoint_every > 0)"
            )
        for step in steps:
            try:
                stored = mngr.item_metadata(step)["state"]
            except Exception as e:  # noqa: BLE001 (any unreadable metadata: skip to the older checkpoint)
                skipped.append(f"checkpoint {ckpt / str(step)} has unreadable metadata ({_reason(e)})")
                log(f"warning: {skipped[-1]}; trying an older one")
                continue
            if sorted(tuple(getattr(m, "shape", ())) for m in jax.tree.leaves(stored)) != want:
                raise shape_error(f"checkpoint {step} holds other array shapes than this run's TrainState")
            try:
                out = mngr.restore(step, args=args)
            except Exception as e:  # noqa: BLE001 (its metadata fits: a file is damaged)
                skipped.append(f"checkpoint {ckpt / str(step)} does not load ({_reason(e)})")
                log(f"warning: {skipped[-1]}; trying an older one")
                continue
            return out.state, dict(out.meta), int(step)
        raise CheckpointError(f"train.resume_from={str(run_dir)!r}: no checkpoint loads: {'; '.join(skipped)}")
    finally:
        mngr.close()
