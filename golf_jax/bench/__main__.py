"""`python -m golf_jax.bench --config=configs/X.py --stage={train,eval,sliding,ttt,slot,gptq,export} [--json OUT]`

Times one stage's real compiled function on random tokens and weights (no data
needed) and prints the time per unit, tokens/s, MFU with its FLOP count, compile time
and XLA's peak-memory analysis. Any width: on a CPU shrink it with overrides, e.g.
`--config.model.model_dim=64 --config.model.num_layers=2`.

`--compare=B` times the config (A) and B alternately in one process and prints B/A:
B is another config file (`configs/record.py`, or `configs/record.py:pr1318`; it gets
the same `--config.*` overrides as A) or settings of A (`model.num_layers=4,opt.muon_ns_steps=3`).
`--profile_dir=DIR` writes a jax.profiler trace of the timed calls (golf_jax/bench/trace_ops.py
summarises its top ops; docs/profiling.md).

`--target=h100|h200 --devices=N` compiles the stage for N GPUs of that kind without one
(golf_jax/bench/target.py): shape-only, nothing runs; it reports the memory analysis, FLOPs,
bytes, collectives and a roofline bound. Its stages are train, eval, sliding, ttt, slot and
calib (one batch of the GPTQ calibration pass). It needs `pip install "jax[cuda12]==<jax version>"`
and runs jax on the CPU (it sets JAX_PLATFORMS=cpu itself).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags

from golf_jax.core import cli, compile_cache
from golf_jax.core.errors import UserError

FLAGS = cli.flag_values()
_CONFIG = cli.required(cli.define_config(FLAGS), "a configs/*.py file, e.g. --config=configs/smoke.py")
_STAGE = flags.DEFINE_enum("stage", "train", ["train", "eval", "sliding", "ttt", "slot", "gptq", "export", "calib"],
                           "Which stage to time (calib: with --target only).", flag_values=FLAGS)
_JSON = flags.DEFINE_string("json", None, "Write the report as JSON to this file.", flag_values=FLAGS)
_CALLS = flags.DEFINE_integer("calls", 0, "Timed calls (a step, a batch of windows, a chunk, ...; 0: the stage's "
                              "default).", flag_values=FLAGS)
_WARMUP = flags.DEFINE_integer("warmup", -1, "Untimed calls after compilation (-1: the stage's default; at least 1 "
                               "for a compiled stage).", flag_values=FLAGS)
_TOKENS = flags.DEFINE_integer("tokens", 0, "Time enough calls to cover this many targets (eval stages) or tokens.",
                               flag_values=FLAGS)
_PER_DEVICE_SEQS = flags.DEFINE_integer("per_device_seqs", 0, "train: sequences per device (0: train.batch_tokens).",
                                        flag_values=FLAGS)
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0, "Peak TFLOP/s per device for MFU (0: from the device kind).",
                                  flag_values=FLAGS)
_COMPARE = flags.DEFINE_string("compare", None, "B: a config file[:arg], or key=value[,key=value] settings of A.",
                               flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "--compare: rounds of A then B.", flag_values=FLAGS)
_PROFILE_DIR = flags.DEFINE_string("profile_dir", None, "Write a jax.profiler trace of the timed calls here.",
                                   flag_values=FLAGS)
_TARGET = flags.DEFINE_string("target", None, "Compile for this GPU instead of timing here: h100 or h200 "
                              "(ahead of time, shape-only; needs the CUDA plugin, no GPU).", flag_values=FLAGS)
_DEVICES = flags.DEFINE_integer("devices", 8, "--target: how many GPUs of one host to compile for.", flag_values=FLAGS)
_SIZE_BATCH = flags.DEFINE_bool("size_batch", False, "--target, eval stages: also find the largest batch that "
                                 "fits (a second compile at twice the rows).", flag_values=FLAGS)
_HLO_DIR = flags.DEFINE_string("hlo_dir", None, "--target: write each program's optimized HLO text here.",
                               flag_values=FLAGS)
_ROWS = flags.DEFINE_integer("rows", 0, "--target: the eval stages' global batch (windows, documents, sequences; "
                             "0: the config's).", flag_values=FLAGS)


def _main(args: list[str]) -> None:
    cli.positionals(args)
    if _COMPARE.value and _PROFILE_DIR.value:
        raise UserError("--profile_dir traces one stage: drop --compare")
    if _TARGET.value:
        return _compile_for_target()
    from golf_jax.bench import run
    from golf_jax.bench.measure import lines

    import jax

    from golf_jax import pipeline

    pipeline.check_config(_CONFIG.value, jax.device_count(), train=False)  # every key's range, before a compile
    if _JSON.value:
        cli.check_output(_JSON.value, "--json")  # before the timing, not after it
    where = compile_cache.enable()
    cfg = _CONFIG.value
    timing = run.Timing(_CALLS.value, _WARMUP.value, _TOKENS.value, _PER_DEVICE_SEQS.value, _PEAK_TFLOPS.value)
    print(f"persistent compilation cache: {where or 'off'}")
    if _COMPARE.value:
        cfg_b = run.config_b(cfg, _COMPARE.value, sys.argv)
        out = run.compare(cfg, cfg_b, _STAGE.value, timing, rounds=_ROUNDS.value)
        for label in ("a", "b"):
            print(f"{label.upper()} = {out[label]['config']}")
            print("\n".join(lines(out[label])))
        for r, ((ta, tb), q) in enumerate(zip(out["rounds"], out["round_ratios"])):
            print(f"round {r}: A {1000 * ta:.2f} ms/call  B {1000 * tb:.2f} ms/call  "
                  f"B/A {q:.3f} per {out['a']['unit']}")
        print(f"B/A (time per {out['a']['unit']}, median of the rounds): {out['ratio_b_over_a']:.3f}")
    else:
        out = run.run_stage(cfg, _STAGE.value, timing, profile_dir=_PROFILE_DIR.value)
        print(f"config: {out['config']}")
        print("\n".join(lines(out)))
        if _PROFILE_DIR.value:
            from golf_jax.bench import trace_ops

            print(f"trace: {out['trace_dir']}")
            print(trace_ops.table(trace_ops.top_ops(out["trace_dir"])))
    out["compile_cache"] = str(where) if where else None
    if _JSON.value:
        Path(_JSON.value).write_text(json.dumps(out, indent=1))


def _compile_for_target() -> None:
    """--target: the stage's programs compiled for absent GPUs; nothing is timed or cached."""
    if _COMPARE.value or _PROFILE_DIR.value:
        raise UserError("--target compiles, it times nothing: drop --compare and --profile_dir")
    import jax

    jax.config.update("jax_platforms", "cpu")  # the GPUs are abstract; a real one must not be initialised
    from golf_jax import pipeline
    from golf_jax.bench import target

    pipeline.check_config(_CONFIG.value, _DEVICES.value, train=False)
    if _JSON.value:
        cli.check_output(_JSON.value, "--json")

    # Not the persistent cache: a deviceless executable is not autotuned, and a real GPU run would read it back.
    out = target.run_target(_CONFIG.value, _STAGE.value, _TARGET.value, _DEVICES.value, rows=_ROWS.value,
                            per_device_seqs=_PER_DEVICE_SEQS.value, size_batch=_SIZE_BATCH.value, hlo_dir=_HLO_DIR.value)
    print("\n".join(target.lines(out)))
    if _JSON.value:
        Path(_JSON.value).write_text(json.dumps(out, indent=1))


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
