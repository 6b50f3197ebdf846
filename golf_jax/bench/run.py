"""Run one bench stage, or two settings of it alternately, and report.

`compare` builds (compiles) both A and B first, then times them in turns, A B A B ...,
so that a load change on a shared machine hits both alike; its ratio (the median over
rounds of B / A time per unit, each from adjacent windows) is the figure to quote.
Absolute times from a noisy machine are not.
"""

from __future__ import annotations

import copy
import importlib.util
import statistics
from pathlib import Path
from typing import NamedTuple

import jax

from golf_jax.core import mesh as mesh_lib
from golf_jax.bench import eval_stages, quant_stages, train_stage
from golf_jax.bench.measure import Bench, report, timed
from golf_jax.core.errors import UserError
from golf_jax.eval.profile import trace_options

STAGES = {
    "train": train_stage.build,
    "eval": eval_stages.build_eval,
    "sliding": eval_stages.build_sliding,
    "ttt": eval_stages.build_ttt,
    "slot": eval_stages.build_slot,
    "gptq": quant_stages.build_gptq,
    "export": quant_stages.build_export,
}


def build(cfg, stage: str, mesh, per_device_seqs: int = 0) -> Bench:
    if stage not in STAGES:
        raise UserError(f"--stage={stage}: use one of {', '.join(STAGES)}")
    if stage == "train":
        return train_stage.build(cfg, mesh, per_device_seqs)
    return STAGES[stage](cfg, mesh)


def _warmup(bench: Bench, warmup: int) -> int:
    """The stage's default when < 0; at least 1 when compiled (an executable's first call pays one-time costs)."""
    warm = bench.warmup if warmup < 0 else warmup
    return max(warm, 1) if bench.compiled else warm


def calls_for(bench: Bench, calls: int = 0, tokens: int = 0) -> int:
    """Timed calls: enough to cover `tokens` targets (or tokens) when given, else `calls`, else the stage's."""
    per = bench.targets_per_unit or bench.tokens_per_unit
    if tokens > 0 and per:
        return max(1, -(-int(tokens) // int(per * bench.units_per_call)))
    return calls or bench.calls


class Timing(NamedTuple):
    """How a stage is timed (the bench's flags): `calls` timed calls (0: enough for `tokens`
    targets or tokens, else the stage's own), `warmup` calls first (-1: the stage's), the
    per-device batch (0: the config's) and the peak TFLOP/s that MFU is against (0: none)."""

    calls: int = 0
    warmup: int = -1
    tokens: int = 0
    per_device_seqs: int = 0
    peak_tflops: float = 0.0


def run_stage(cfg, stage: str, timing: Timing = Timing(), profile_dir: str | None = None, mesh=None) -> dict:
    """Build, warm up and time one stage; returns its report (golf_jax/bench/measure.py)."""
    calls, warmup, tokens, per_device_seqs, peak_tflops = timing
    mesh = mesh or mesh_lib.make_mesh()
    bench = build(cfg, stage, mesh, per_device_seqs)
    n = calls_for(bench, calls, tokens)
    warm = _warmup(bench, warmup)
    if profile_dir:
        for _ in range(warm):  # compile and warm up outside the trace
            jax.block_until_ready(bench.call())
        warm = 0
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        for name, compiled in bench.compiled.items():  # names the trace's ops (golf_jax/bench/trace_ops.py)
            (Path(profile_dir) / f"{name}.hlo.txt").write_text(compiled.as_text())
        jax.profiler.start_trace(str(profile_dir), profiler_options=trace_options())
    try:
        seconds = timed(bench, n, warm)
    finally:
        if profile_dir:
            jax.profiler.stop_trace()
    out = report(bench, seconds, n, list(mesh.devices.flat), peak_tflops)
    out["config"] = cfg.name
    if profile_dir:
        out["trace_dir"] = str(Path(profile_dir))
    return out


def compare(cfg_a, cfg_b, stage: str, timing: Timing = Timing(), rounds: int = 3, mesh=None) -> dict:
    """Time A and B alternately for `rounds` rounds; {a, b (at their median seconds per call), seconds per
    call by round, B/A per round and its median}."""
    calls, warmup, tokens, per_device_seqs, peak_tflops = timing
    mesh = mesh or mesh_lib.make_mesh()
    benches = [build(cfg_a, stage, mesh, per_device_seqs), build(cfg_b, stage, mesh, per_device_seqs)]
    n = [calls_for(b, calls, tokens) for b in benches]
    warm = [_warmup(b, warmup) for b in benches]
    per_round = []
    for r in range(max(rounds, 1)):
        per_round.append([timed(b, n[i], warm[i] if r == 0 else 0) for i, b in enumerate(benches)])
    med = [statistics.median(row[i] for row in per_round) for i in range(2)]
    devices = list(mesh.devices.flat)
    a, b = (report(bench, med[i], n[i], devices, peak_tflops) for i, bench in enumerate(benches))
    a_bench, b_bench = benches
    a["config"], b["config"] = cfg_a.name, cfg_b.name
    ratios = [(tb / b_bench.units_per_call) / (ta / a_bench.units_per_call) for ta, tb in per_round]
    return {"stage": stage, "a": a, "b": b, "order": "A then B in each round", "rounds": per_round,
            "round_ratios": ratios, "ratio_b_over_a": statistics.median(ratios)}


def load_config(spec: str):
    """configs/X.py[:arg] -> its get_config([arg])."""
    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise UserError(f"--compare={spec}: no config file {path}")
    module_spec = importlib.util.spec_from_file_location(f"bench_compare_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def config_b(cfg_a, spec: str, argv: list[str]):
    """--compare's B: a config file with A's command-line overrides, or A with settings."""
    if spec.split(":")[0].endswith(".py"):
        overrides = [a for a in argv if a.startswith("--config.") and "=" in a]
        return apply_overrides(load_config(spec), overrides, "--config")
    return apply_overrides(cfg_a, [p for p in spec.split(",") if p.strip()])


def apply_overrides(cfg, pairs: list[str], what: str = "--compare"):
    """A copy of cfg with `key=value` settings, each value parsed as the type the key has."""
    cfg = copy.deepcopy(cfg)
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"{what}: {pair!r} is not key=value (e.g. model.num_layers=4)")
        key, value = pair.split("=", 1)
        *path, leaf = key.removeprefix("--config.").strip().split(".")
        node = cfg
        try:
            for p in path:
                node = node[p]
            old = node[leaf]
        except (KeyError, AttributeError, TypeError):
            raise UserError(f"{what}: unknown config key {key!r}; the keys are in golf_jax/config.py") from None
        node[leaf] = _parse(value, old, key, what)
    return cfg


def _parse(value: str, old, key: str, what: str):
    try:
        if isinstance(old, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if isinstance(old, int):
            return int(value)
        if isinstance(old, float):
            return float(value)
    except ValueError:
        raise UserError(f"{what}: {key}={value!r} is not a {type(old).__name__}") from None
    return value


