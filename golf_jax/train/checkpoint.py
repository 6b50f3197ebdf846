"""Resumable training: orbax checkpoints of the TrainState plus the loop's counters.

Layout: RUN_DIR/checkpoints/<step>/{state, meta}. `state` is the whole TrainState
(params, optimizer state, EMA/SWA sums) saved with StandardSave; `meta` is JSON: step,
train_time_s, late_qat_step and the loader's state_dict. Saves are async: `save()`
returns once orbax has copied the arrays to host (so the next step may donate them),
and the files are written on a background thread.

Data order across a resume: the Prefetcher reads ahead by up to data.prefetch batches,
so the live loader is *ahead* of the train loop and its state_dict() at save time would
skip batches. Instead the Prefetcher snapshots `loader.state_dict()` right after it
builds each batch and hands the snapshot over with the batch; a checkpoint stores the
snapshot of the last batch a step consumed, which is exactly the state that builds the
next batch the loop will consume. On resume a fresh loader loads that state before the
Prefetcher thread starts. (Replaying next_batch() `steps` times would also be correct,
but it re-reads every token trained so far: ~10B tokens for a full record run.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

# The config fields that fix the TrainState's shapes; named in mismatch errors.
SHAPE_KEYS = ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult",
              "bigram_vocab_size", "bigram_dim", "ve_dim", "ve_layers", "mtp_num_heads", "smear_gate", "skip_gates",
              "num_loops", "loop_start", "loop_end", "gate_window", "attn_gate", "parallel_mode")


class CheckpointError(RuntimeError):
    """A resume that cannot go on: no checkpoints, or a state that does not fit the config."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir).resolve() / "checkpoints"


class Checkpointer:
    """Saves every `every` steps (and the final step) into RUN_DIR/checkpoints, async."""

    def __init__(self, run_dir: str | Path, every: int) -> None:
        self.every = every
        self.last_saved: int | None = None
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


def _model_fields(model_cfg: Any) -> dict:
    get = model_cfg.get if hasattr(model_cfg, "get") else lambda k, d=None: getattr(model_cfg, k, d)
    return {k: get(k, None) for k in SHAPE_KEYS}


def _saved_model_fields(run_dir: Path) -> dict | None:
    path = run_dir / "config.json"
    if not path.exists():
        return None
    try:
        return _model_fields(json.loads(path.read_text()).get("model", {}))
    except (ValueError, AttributeError):
        return None


def restore(run_dir: str | Path, like_state: Any, cfg: Any) -> tuple[Any, dict, int]:
    """The latest (state, meta, step) of `run_dir`, with `like_state`'s shapes and shardings.

    `like_state` is a freshly initialised TrainState: restored arrays get its (replicated)
    shardings, so the compiled step takes them exactly like fresh ones.
    """
    run_dir = Path(run_dir).resolve()
    ckpt = checkpoint_dir(run_dir)
    if not ckpt.is_dir():
        raise CheckpointError(
            f"train.resume_from={str(run_dir)!r} has no checkpoints ({ckpt} does not exist); "
            "pass a run directory that was trained with train.checkpoint_every > 0"
        )
    ours, theirs = _model_fields(cfg.model), _saved_model_fields(run_dir)
    mismatch = {k: (theirs[k], ours[k]) for k in SHAPE_KEYS if theirs is not None and theirs[k] != ours[k]}

    def shape_error(detail: str) -> CheckpointError:
        return CheckpointError(
            f"the checkpoint in {ckpt} does not fit this config's model: {detail}; "
            f"checkpoint model {theirs if theirs is not None else 'unknown (no config.json)'} vs this run's model {ours}. Resume with the model config "
            "of the run that wrote the checkpoint"
        )

    if mismatch:
        raise shape_error("differing fields (checkpoint, this run) " + ", ".join(f"{k}={v}" for k, v in mismatch.items()))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    mngr = ocp.CheckpointManager(ckpt, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = mngr.latest_step()
        if step is None:
            raise CheckpointError(
                f"train.resume_from={str(run_dir)!r}: {ckpt} holds no finished checkpoint; "
                "pass a run directory that saved at least one (train.checkpoint_every > 0)"
            )
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        try:
            out = mngr.restore(step, args=args)
        except (ValueError, TypeError, KeyError) as e:
            raise shape_error(f"{type(e).__name__}: {e}") from e
    finally:
        mngr.close()
    got = jax.tree.map(lambda x: tuple(x.shape), out.state)
    want = jax.tree.map(lambda x: tuple(x.shape), abstract)
    if got != want:
        raise shape_error("restored array shapes differ from this run's TrainState")
    return out.state, dict(out.meta), int(step)
