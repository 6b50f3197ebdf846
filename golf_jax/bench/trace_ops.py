"""The top ops of a jax.profiler trace by time: what a step or a batch spends its time on.

Reads the trace viewer's `*.trace.json.gz` (the newest run under DIR/plugins/profile/)
and sums the durations of op events: on a CPU (host tracer level 3) each executed HLO
instruction (a fusion, a dot, a copy) is an event named after it; on a GPU the kernels
carry the instruction in args.hlo_op. With the executables' HLO text beside the trace
(`python -m golf_jax.bench --profile_dir` writes `<name>.hlo.txt` there), each
instruction is named by the JAX op it came from (its metadata op_name, e.g.
`GPT.hidden/blocks_*/attn/dot_general`), forward or backward, and ops of the same
origin in every block are added up.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
from pathlib import Path

_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=")
_OP_NAME = re.compile(r"metadata=\{[^}]*op_name=\"([^\"]*)\"")
_OPCODE = re.compile(r"=\s*\S+\s+([\w\-]+)\(")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_BLOCK = re.compile(r"blocks_\d+")


def trace_file(trace_dir) -> Path:
    files = sorted(Path(trace_dir).glob("plugins/profile/*/*.trace.json.gz"))
    if not files:
        raise FileNotFoundError(f"no plugins/profile/*/*.trace.json.gz under {trace_dir}: not a jax.profiler trace dir")
    return files[-1]


def parse_origins(hlo_text: str) -> dict[str, str]:
    """{instruction name: op_name metadata} of every instruction in an HLO module's text.

    A fusion often carries no metadata of its own (XLA:CPU's YNNPACK fusions, which hold
    most dots, never do); it is named by the op its fused computation's ROOT came from.
    """
    own: dict[str, str | None] = {}
    opcode: dict[str, str] = {}
    calls: dict[str, str] = {}
    roots: dict[str, str] = {}  # computation -> its ROOT instruction
    dots: collections.Counter = collections.Counter()  # computation -> its dot instructions
    computation = ""
    for line in hlo_text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            computation = line.split()[0].lstrip("%")
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name = m.group(2)
        op = _OP_NAME.search(line)
        own[name] = op.group(1) if op else None
        code = _OPCODE.search(line)
        opcode[name] = code.group(1) if code else name.split(".")[0]
        c = _CALLS.search(line)
        if c:
            calls[name] = c.group(1)
        if m.group(1):
            roots[computation] = name
        if opcode[name] == "dot":
            dots[computation] += 1

    def resolve(name: str, depth: int = 0) -> str:
        """Own metadata, else the ROOT's of what it calls, else "(no metadata) <ROOT opcode>"
        (XLA drops the metadata of dots it rewrites, e.g. batched attention einsums)."""
        root = roots.get(calls.get(name, ""))
        if own.get(name) or depth > 8 or not root:
            return own.get(name) or f"(no metadata) {opcode[name]}"
        return resolve(root, depth + 1)

    def label(name: str) -> str:
        """A fusion whose ROOT is not its only dot says so: YNNPACK fuses a whole attention
        block (scores, softmax, AV) into one op, named after its last step."""
        n = dots[calls.get(name, "")]
        root = roots.get(calls.get(name, ""), "")
        extra = n - (opcode.get(root) == "dot")
        return resolve(name) + (f" (fused with {n} dot{'s' * (n > 1)})" if extra > 0 else "")

    return {name: label(name) for name in own}


def hlo_origins(trace_dir) -> dict[str, str]:
    """{instruction name: op_name metadata} from the *.hlo.txt files in trace_dir."""
    out: dict[str, str] = {}
    for path in sorted(Path(trace_dir).glob("*.hlo.txt")):
        out.update(parse_origins(path.read_text()))
    return out


def op_times(events: list[dict], known: dict | None = None) -> dict[str, list]:
    """{op: [µs, count]} of the op events: HLO instructions (known names, or args.hlo_op),
    else, without HLO, every event off the Python thread that is not the runtime's own."""
    threads = {(e.get("pid"), e.get("tid")): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    out: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("ph") != "X":
            continue
        name = (e.get("args") or {}).get("hlo_op") or e["name"]
        if known:
            if name not in known:
                continue
        elif "::" in name or name.startswith("$") or threads.get((e.get("pid"), e.get("tid")), "") == "python":
            continue
        out[name][0] += float(e.get("dur", 0.0))
        out[name][1] += 1
    return dict(out)


def origin(op_name: str) -> str:
    """`jit(f)/transpose(jvp(GPT.loss))/GPT.hidden/blocks_3/mlp/dot_general` ->
    `backward GPT.hidden/blocks_*/mlp/dot_general`."""
    parts = op_name.split("/")[1:] if op_name.startswith("jit(") else op_name.split("/")
    phase = ""
    if parts and parts[0].startswith("transpose(jvp("):
        phase, parts = "backward ", parts[1:]
    elif parts and parts[0].startswith("jvp("):
        phase, parts = "forward ", parts[1:]
    return phase + _BLOCK.sub("blocks_*", "/".join(parts))


def top_ops(trace_dir, n: int = 15, by_origin: bool = True) -> list[dict]:
    """The n ops that took longest in the trace: {op, ms, share, count}, by JAX origin when the HLO is there."""
    events = json.loads(gzip.open(trace_file(trace_dir)).read())["traceEvents"]
    known = hlo_origins(trace_dir)
    times = op_times(events, known or None)
    total = sum(t for t, _ in times.values()) or 1.0
    rows: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for name, (t, c) in times.items():
        key = origin(known[name]) if by_origin and name in known else name
        rows[key][0] += t
        rows[key][1] += c
    ranked = sorted(rows.items(), key=lambda kv: -kv[1][0])[:n]
    return [{"op": k, "ms": t / 1000.0, "share": t / total, "count": c} for k, (t, c) in ranked]


def table(rows: list[dict]) -> str:
    lines = [f"{'ms':>9} {'share':>6} {'count':>6}  op"]
    lines += [f"{r['ms']:9.1f} {100 * r['share']:5.1f}% {r['count']:6d}  {r['op']}" for r in rows]
    return "\n".join(lines)
