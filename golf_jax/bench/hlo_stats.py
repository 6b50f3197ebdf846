"""What an optimized GPU program does, read from its HLO text: kernels, FLOPs, bytes, collectives.

An ahead-of-time compile gives the executable's HLO after every XLA pass (fusion,
cuBLAS/cuDNN rewrites, SPMD partitioning, scheduling). Each top-level instruction of a
non-fused computation is one kernel (or one collective); this module counts, per kernel,
the matmul FLOPs it holds (dots in its fused computation, cuBLAS GEMMs, cuDNN attention)
and the bytes it reads and writes (its operands and result), so that a roofline bound is
the sum over kernels of max(FLOPs / peak, bytes / HBM bandwidth). Loops count their body
`known_trip_count` times, and once where XLA knows no count (a solver's iterations: the
bound is then per iteration; `Stats.unknown_loops` says how many). Elementwise FLOPs are
not counted (they never bind on an H100).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
               "s64": 8, "u64": 8, "f64": 8, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1, "token": 0}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# Instructions that move no data of their own (views, bookkeeping, the halves of async pairs).
FREE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "while", "conditional", "call",
        "after-all", "partition-id", "replica-id", "opt-barrier", "copy-done", "send-done", "recv-done",
        "async-done", "async-update"} | {f"{c}-done" for c in COLLECTIVES}

_SHAPE = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([\d,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\((.*)$")
_COMP = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")


def shape_bytes(text: str) -> int:
    """Bytes of every array shape in `text` (a tuple counts each element)."""
    return sum(DTYPE_BYTES[t] * math.prod(int(d) for d in dims.split(",") if d) for t, dims in _SHAPE.findall(text))


def _dims(text: str) -> list[int]:
    m = _SHAPE.search(text)
    return [int(d) for d in m.group(2).split(",") if d] if m else []


@dataclass
class Instr:
    name: str
    opcode: str
    shape: str  # the result type as written (array or tuple)
    operands: list[str]
    attrs: str


@dataclass
class Kernel:
    name: str
    opcode: str
    flops: float
    bytes: float
    count: float = 1.0  # executions per call (loop trip counts)


@dataclass
class Stats:
    kernels: list[Kernel] = field(default_factory=list)
    collectives: dict = field(default_factory=dict)  # kind -> {"count", "bytes"} per call
    cudnn_attention: dict = field(default_factory=lambda: {"forward": 0, "backward": 0})
    attention_flops: float = 0.0  # inside the cuDNN calls (XLA's own cost analysis counts them as 0)
    unknown_loops: int = 0  # while loops without a known trip count: their body is counted once


def parse(hlo_text: str) -> tuple[dict[str, list[Instr]], str]:
    """({computation: instructions}, entry name) of an HLO module's text."""
    comps: dict[str, list[Instr]] = {}
    entry, current = "", None
    for line in hlo_text.splitlines():
        m = _COMP.match(line)
        if m:
            current = comps.setdefault(m.group(2), [])
            entry = m.group(2) if m.group(1) else entry
            continue
        if current is None or line.strip() == "}":
            continue
        m = _INSTR.match(line)
        if m:
            name, shape, opcode, rest = m.groups()
            depth, i = 1, 0
            while i < len(rest) and depth:  # the operand list ends at its closing parenthesis
                depth += {"(": 1, ")": -1}.get(rest[i], 0)
                i += 1
            current.append(Instr(name, opcode, shape, re.findall(r"%([\w.\-]+)", rest[: i - 1]), rest[i:]))
    return comps, entry


def _called(attrs: str, key: str) -> list[str]:
    m = re.search(key + r"=\{?([%\w.\-, ]+)\}?", attrs)
    return [c.strip().lstrip("%") for c in m.group(1).split(",")] if m else []


def _dot_flops(ins: Instr, shapes: dict[str, str]) -> float:
    """2·|result|·K of a dot (K: the product of the lhs contracting dims)."""
    lhs = _dims(shapes.get(ins.operands[0], "")) if ins.operands else []
    m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins.attrs)
    k = math.prod(lhs[int(d)] for d in m.group(1).split(",") if d) if m and lhs else 0
    return 2.0 * math.prod(_dims(ins.shape)) * k


def _gemm_flops(ins: Instr, shapes: dict[str, str]) -> float:
    """A cuBLAS GEMM custom call: its dot dimensions are in the backend config."""
    m = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', ins.attrs)
    lhs = _dims(shapes.get(ins.operands[0], "")) if ins.operands else []
    if not (m and lhs):
        return 0.0
    k = math.prod(lhs[int(d.strip('"'))] for d in m.group(1).split(",") if d.strip('"'))
    return 2.0 * math.prod(_dims(ins.shape)) * k  # the result's first tuple element is the product


def _fmha_flops(ins: Instr, shapes: dict[str, str], backward: bool) -> float:
    """cuDNN flash attention: Q·Kᵀ and P·V (4·B·N·T·S·H), half of it under a causal mask; the
    backward recomputes P and forms dP, dQ, dK, dV: 2.5× the forward."""
    q, k = (_dims(shapes.get(o, "")) for o in ins.operands[:2])  # q [B, T, N, H], k [B, S, K, H]
    if len(q) != 4 or len(k) != 4:
        return 0.0
    fwd = 4.0 * math.prod(q) * k[1]
    if "CAUSAL" in ins.attrs.upper():
        fwd /= 2
    return fwd * (2.5 if backward else 1.0)


def _fused_flops(comp: str, comps: dict, seen: dict) -> float:
    if comp not in seen:
        shapes = {i.name: i.shape for i in comps.get(comp, [])}
        total = 0.0
        for ins in comps.get(comp, []):
            if ins.opcode == "dot":
                total += _dot_flops(ins, shapes)
            elif ins.opcode == "fusion":
                total += sum(_fused_flops(c, comps, seen) for c in _called(ins.attrs, "calls"))
        seen[comp] = total
    return seen[comp]


def _collective_kind(opcode: str) -> str | None:
    base = opcode.removesuffix("-start")
    return base if base in COLLECTIVES else None


def analyze(hlo_text: str) -> Stats:
    """Kernels, collectives and cuDNN attention calls of one optimized HLO module (per device)."""
    comps, entry = parse(hlo_text)
    stats, fused = Stats(), {}

    def walk(comp: str, times: float) -> None:
        shapes = {i.name: i.shape for i in comps.get(comp, [])}
        for ins in comps.get(comp, []):
            if ins.opcode == "while":
                m = re.search(r'"known_trip_count":\{"n":"(\d+)"', ins.attrs)
                stats.unknown_loops += m is None
                for body in _called(ins.attrs, "body"):
                    walk(body, times * (int(m.group(1)) if m else 1))
                continue
            if ins.opcode in ("call", "conditional", "async-start"):
                for key in ("to_apply", "branch_computations", "calls"):
                    for c in _called(ins.attrs, key):
                        walk(c, times)
                continue
            if ins.opcode in FREE:
                continue
            moved = shape_bytes(ins.shape) + sum(shape_bytes(shapes.get(o, "")) for o in ins.operands)
            kind = _collective_kind(ins.opcode)
            if kind:
                entry_ = stats.collectives.setdefault(kind, {"count": 0, "bytes": 0})
                entry_["count"] += times
                entry_["bytes"] += times * max([0] + [shape_bytes(a) for a in _arrays(ins.shape)])
                continue
            flops = 0.0
            if ins.opcode == "fusion":
                flops = sum(_fused_flops(c, comps, fused) for c in _called(ins.attrs, "calls"))
            elif ins.opcode in ("dot", "convolution"):
                flops = _dot_flops(ins, shapes)
            elif ins.opcode == "custom-call":
                target = re.search(r'custom_call_target="([^"]+)"', ins.attrs)
                target = target.group(1) if target else ""
                if "cudnn$fmha" in target:
                    backward = "backward" in target.lower()
                    stats.cudnn_attention["backward" if backward else "forward"] += times
                    flops = _fmha_flops(ins, shapes, backward)
                    stats.attention_flops += times * flops
                elif "gemm" in target.lower() or "matmul" in target.lower():
                    flops = _gemm_flops(ins, shapes)
            stats.kernels.append(Kernel(ins.name, ins.opcode, flops, moved, times))

    walk(entry, 1.0)
    return stats


def _arrays(shape: str) -> list[str]:
    """A tuple type's array elements, or the array itself."""
    return [f"{t}[{d}]" for t, d in _SHAPE.findall(shape)]


def collective_seconds(kind: str, nbytes: float, devices: int, link_bw: float) -> float:
    """Time on the wire of one ring collective of `nbytes` (its largest buffer) over `devices` GPUs."""
    if devices <= 1:
        return 0.0
    share = (devices - 1) / devices
    return {"all-reduce": 2 * share, "collective-permute": 1.0}.get(kind, share) * nbytes / link_bw


def roofline(stats: Stats, peak_flops: float, memory_bw: float) -> dict:
    """Per-call lower bounds: Σ over kernels of max(compute, memory) time, and its parts."""
    compute = sum(k.count * k.flops / peak_flops for k in stats.kernels)
    memory = sum(k.count * k.bytes / memory_bw for k in stats.kernels)
    bound = sum(k.count * max(k.flops / peak_flops, k.bytes / memory_bw) for k in stats.kernels)
    top = sorted(stats.kernels, key=lambda k: -k.count * max(k.flops / peak_flops, k.bytes / memory_bw))[:8]
    return {"seconds": bound, "compute_seconds": compute, "memory_seconds": memory,
            "kernels": int(sum(k.count for k in stats.kernels)),
            "matmul_flops": sum(k.count * k.flops for k in stats.kernels),
            "kernel_bytes": sum(k.count * k.bytes for k in stats.kernels),
            "top_kernels": [{"name": k.name, "opcode": k.opcode, "count": k.count, "gflops": k.flops / 1e9,
                             "mbytes": k.bytes / 1e6,
                             "ms": 1e3 * k.count * max(k.flops / peak_flops, k.bytes / memory_bw)} for k in top]}


def f32_dots(hlo_text: str) -> int:
    """Dots whose operands are both f32: where bf16 is meant, they run far below the tensor-core peak."""
    n = 0
    for instrs in parse(hlo_text)[0].values():
        shapes = {i.name: i.shape for i in instrs}
        n += sum(1 for i in instrs if i.opcode == "dot" and len(i.operands) == 2
                 and all(shapes.get(o, "").startswith("f32") for o in i.operands))
    return n


def xla_cost(compiled) -> dict:
    """XLA's HLO cost analysis (flops, bytes accessed, ...) of an executable's optimized module.

    `compiled.cost_analysis()` gives None for a deviceless GPU executable; the analysis itself
    is target-independent, so the CPU client runs it on the GPU module.
    """
    import jax
    from jax._src.lib import xla_client

    module = compiled.runtime_executable().hlo_modules()[0]
    cost = xla_client._xla.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
    return {k: float(v) for k, v in cost.items()}
