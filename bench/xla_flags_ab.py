"""Each XLA GPU flag on and off, on one bench stage: which of launch/'s flags earn their place.

XLA reads XLA_FLAGS once per process, so `python -m golf_jax.bench --compare` cannot
alternate them; this script runs one bench process per setting instead, in rounds of
(baseline, flag) pairs: round r runs the baseline and every flag in turn, so drift hits
both sides of a pair alike. It prints each flag's time per unit over the baseline's,
the median over rounds, and writes every run's JSON under OUT.

    python bench/xla_flags_ab.py [--out=build/xla_flags] [--rounds=2] [--flags=NAME,...] \
        [--timeout=300] [--dry_run] [--debug] -- BENCH ARGS
    # default bench args: the record's train step at 48 x 2048 tokens per device
    python bench/xla_flags_ab.py -- --config=configs/record.py --stage=sliding --tokens=1000000

The baseline is the environment's XLA_FLAGS (empty by default): each flag is tried on top
of it, in the direction away from XLA's default. What each flag does:

* latency_hiding: the latency-hiding scheduler orders the step so that the gradient
  all-reduces (and Parallel Muon's gathers) overlap compute; launch/ sets it.
* no_command_buffers: turns CUDA graphs off (XLA records runs of kernels as one graph by
  default, which cuts launch overhead and costs a little memory and capture time).
* no_triton_gemm: cuBLAS for every matmul instead of XLA's Triton GEMM fusions.
* combine_all_reduce: all-reduces of up to 128 MiB combined into one (one collective for
  the gradients rather than many).
* priority_stream: async collectives on the highest-priority stream.
* autotune_0: no GEMM/fusion autotuning: a quicker compile, possibly slower kernels.

Only a GPU gives meaningful ratios; on a CPU the GPU flags are accepted and do nothing,
which is how this script is checked (docs/perf.md).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import flags  # noqa: E402 (after the repository is on the path)

from golf_jax.core import cli  # noqa: E402
from golf_jax.core.errors import UserError  # noqa: E402

XLA_GPU_FLAGS = {
    "latency_hiding": "--xla_gpu_enable_latency_hiding_scheduler=true",
    "no_command_buffers": "--xla_gpu_enable_command_buffer=",
    "no_triton_gemm": "--xla_gpu_enable_triton_gemm=false",
    "combine_all_reduce": "--xla_gpu_all_reduce_combine_threshold_bytes=134217728",
    "priority_stream": "--xla_gpu_enable_highest_priority_async_stream=true",
    "autotune_0": "--xla_gpu_autotune_level=0",
}
DEFAULT_BENCH = ["--config=configs/record.py", "--stage=train", "--per_device_seqs=48",
                 "--config.train.seq_len=2048", "--calls=20"]

FLAGS = cli.flag_values()
_OUT = flags.DEFINE_string("out", None, "Folder of every run's JSON and summary.json (default: the repository's "
                           "build/xla_flags).", flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of (baseline, each flag).", lower_bound=1, flag_values=FLAGS)
_FLAGS = flags.DEFINE_list("flags", list(XLA_GPU_FLAGS), f"Comma-separated, of: {', '.join(XLA_GPU_FLAGS)}.",
                           flag_values=FLAGS)
_TIMEOUT = flags.DEFINE_integer("timeout", 300, "Seconds per bench process.", lower_bound=1, flag_values=FLAGS)
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the runs and exit.", flag_values=FLAGS)


def plan(names: list[str], rounds: int) -> list[tuple[int, str]]:
    """(round, setting) in run order: each round the baseline, then every flag."""
    return [(r, s) for r in range(rounds) for s in ["baseline", *names]]


def ratios(results: dict[str, list[float]]) -> dict[str, dict]:
    """Per flag: its seconds per unit over the same round's baseline, and their median."""
    base = results["baseline"]
    out = {}
    for name, times in results.items():
        if name == "baseline":
            continue
        per_round = [t / b for t, b in zip(times, base) if t and b]
        out[name] = {"ratios": per_round, "median": statistics.median(per_round) if per_round else None}
    return out


def _main(bench_args: list[str]) -> int:
    names = [n.strip() for n in _FLAGS.value if n.strip()]
    unknown = [n for n in names if n not in XLA_GPU_FLAGS]
    if unknown:
        raise UserError(f"--flags: unknown {unknown}; known: {', '.join(XLA_GPU_FLAGS)}")
    bench_args = bench_args or DEFAULT_BENCH
    out_dir = Path(_OUT.value).resolve() if _OUT.value else REPO / "build" / "xla_flags"  # the bench runs in REPO
    if not _DRY_RUN.value:
        cli.check_output(out_dir, "--out", folder=True)
        out_dir.mkdir(parents=True, exist_ok=True)
    base_flags = os.environ.get("XLA_FLAGS", "").strip()
    results: dict[str, list[float]] = {s: [] for s in ["baseline", *names]}
    for r, setting in plan(names, _ROUNDS.value):
        xla_flags = " ".join(f for f in (base_flags, XLA_GPU_FLAGS.get(setting, "")) if f)
        out = out_dir / f"{setting}_{r}.json"
        cmd = [sys.executable, "-m", "golf_jax.bench", *bench_args, f"--json={out}"]
        print(f"== round {r} {setting}: XLA_FLAGS='{xla_flags}' {' '.join(cmd[1:])}", flush=True)
        if _DRY_RUN.value:
            continue
        proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "XLA_FLAGS": xla_flags}, timeout=_TIMEOUT.value,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            print(f"   failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            results[setting].append(0.0)
            continue
        seconds = json.loads(out.read_text())["seconds_per_unit"]
        print(f"   {1e3 * seconds:.3f} ms per unit", flush=True)
        results[setting].append(seconds)
    if _DRY_RUN.value:
        return 0
    table = ratios(results)
    print(f"{'flag':20s} {'median flag/baseline':>21s}  per round")
    for name, row in table.items():
        med = "failed" if row["median"] is None else f"{row['median']:.3f}"
        print(f"{name:20s} {med:>21s}  {', '.join(f'{x:.3f}' for x in row['ratios'])}")
    summary = {"bench_args": bench_args, "base_xla_flags": base_flags, "flags": {n: XLA_GPU_FLAGS[n] for n in names},
               "seconds_per_unit": results, "ratios": table}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:];
    the bench's own arguments after `--`."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
