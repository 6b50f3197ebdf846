"""What every bench stage shares: a compiled function and how one call of it is timed.

A stage builds a `Bench`: `call()` dispatches one call (a train step, a batch of
windows, a TTT chunk, ...) and returns something to wait on. `timed` runs warm-up
calls, then the timed window with one sync at its end, so host dispatch overlaps
device work as in the pipeline. Compile time and memory come from the executables
themselves (`jit(...).lower(...).compile()`), which the stages then call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import jax

from golf_jax.core.progress import progress

PROGRESS_EVERY = 30.0  # seconds between progress lines when the output is a file
# Dense bf16 peak per device (TFLOP/s), from the vendors' datasheets.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "B200": 2250.0}


@dataclass
class Bench:
    """One stage, ready to time."""

    stage: str
    unit: str  # what one unit is: step, batch, window, chunk, matrix, artifact
    units_per_call: int
    call: Callable[[], Any]
    flops: str  # how flops_per_unit is counted (or why there is none)
    flops_per_unit: float | None = None
    tokens_per_unit: float | None = None  # tokens through the model (token-forwards; training tokens)
    targets_per_unit: float | None = None  # val targets scored (eval stages)
    compiled: dict = field(default_factory=dict)  # name -> jax.stages.Compiled
    compile_s: float = 0.0
    settings: dict = field(default_factory=dict)
    extra: Callable[[], dict] | None = None  # stage figures read after timing (e.g. solver effort)
    calls: int = 10  # default timed calls
    warmup: int = 2  # default untimed calls before them


def compile_aot(jitted, *args) -> tuple[Any, float]:
    """(executable, seconds to trace, lower and compile) of jitted at these arguments."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def memory(compiled) -> dict | None:
    """Per-device bytes from XLA's memory analysis; None where the backend gives none.

    peak = arguments + outputs + temporaries - aliased (donated) buffers: what the
    executable holds at once, the number to compare with the device's memory.
    """
    try:
        m = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError, AttributeError):
        return None
    if m is None:
        return None
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp", "alias", "generated_code")}
    out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def xla_flops(compiled) -> float | None:
    """XLA's FLOP count of one execution (one device's program), or None."""
    try:
        cost = compiled.cost_analysis()
    except (NotImplementedError, RuntimeError, AttributeError):
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    return float(cost["flops"]) if isinstance(cost, dict) and "flops" in cost else None


def timed(bench: Bench, calls: int, warmup: int) -> float:
    """Seconds per call: `warmup` untimed calls, then `calls` with one sync at the end. Both loops
    speak (golf_jax/core/progress.py): a TTT chunk or an export can take minutes a call."""
    out = None
    for _ in progress(f"bench {bench.stage} warm-up", "call", items=range(warmup), every=PROGRESS_EVERY):
        out = bench.call()
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    for i in progress(f"bench {bench.stage}", "call", items=range(calls), every=PROGRESS_EVERY):
        with jax.profiler.StepTraceAnnotation(f"bench_{bench.stage}", step_num=i):
            out = bench.call()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / max(calls, 1)


def peak_tflops(device, override: float = 0.0) -> float | None:
    if override > 0:
        return override
    kind = getattr(device, "device_kind", "")
    return next((v for k, v in PEAK_TFLOPS.items() if k in kind), None)


def report(bench: Bench, seconds_per_call: float, calls: int, devices, peak_override: float = 0.0) -> dict:
    """The stage's JSON: time per unit, tokens/s, MFU (with its FLOP count), compile, memory."""
    n_dev = len(devices)
    device = devices[0]
    per_unit = seconds_per_call / bench.units_per_call
    rate = lambda per: None if per is None else per / per_unit  # noqa: E731  (per unit -> per second)
    peak = peak_tflops(device, peak_override)
    flops_s = rate(bench.flops_per_unit)
    mems = {name: memory(c) for name, c in bench.compiled.items()}
    peaks = [m["peak"] for m in mems.values() if m]
    xla = {name: xla_flops(c) for name, c in bench.compiled.items()}
    out = {
        "stage": bench.stage, "devices": n_dev, "device_kind": getattr(device, "device_kind", device.platform),
        "unit": bench.unit, "units_timed": calls * bench.units_per_call, "seconds_per_unit": per_unit,
        "units_per_s": 1.0 / per_unit,
        "tokens_per_unit": bench.tokens_per_unit, "tokens_per_s": rate(bench.tokens_per_unit),
        "tokens_per_s_per_device": None if bench.tokens_per_unit is None else rate(bench.tokens_per_unit) / n_dev,
        "targets_per_unit": bench.targets_per_unit, "targets_per_s": rate(bench.targets_per_unit),
        "flops_per_unit": bench.flops_per_unit, "flops": bench.flops, "flops_per_s": flops_s,
        "peak_tflops_per_device": peak,
        "mfu": None if flops_s is None or peak is None else flops_s / (n_dev * peak * 1e12),
        "compile_s": bench.compile_s,
        "peak_memory_bytes": max(peaks) if peaks else None, "memory": mems,  # the largest executable's peak
        "xla_flops_per_device_call": xla,
        "settings": bench.settings,
    }
    if bench.extra is not None:
        out.update(bench.extra())
    return out


def lines(r: dict) -> list[str]:
    """A stage's report as a few human lines."""
    f = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731
    mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    if r["mfu"] is None and r["flops_per_unit"] is not None:
        mfu += " (unknown peak: pass --peak_tflops)"
    mem = "n/a" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**30:.3f} GiB"
    return [
        f"stage {r['stage']}: {r['devices']} × {r['device_kind']}; {r['settings']}",
        f"  {1000 * r['seconds_per_unit']:.3f} ms/{r['unit']} ({r['units_timed']} timed)   "
        f"tokens/s {f(r['tokens_per_s'], ',.0f')} ({f(r['tokens_per_s_per_device'], ',.0f')}/device)   "
        f"targets/s {f(r['targets_per_s'], ',.0f')}",
        f"  FLOPs/{r['unit']} {f(r['flops_per_unit'], '.4g')} [{r['flops']}]   MFU {mfu}",
        f"  compile {r['compile_s']:.2f} s   peak memory (XLA analysis, per device) {mem}",
    ]
