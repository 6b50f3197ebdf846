"""Every stage compiled for a GPU that is not here: memory, FLOPs, bytes, collectives, a roofline.

`python -m golf_jax.bench --config=X --stage=S --target=h100 --devices=8` builds the stage's
programs, exactly as the pipeline jits them, over abstract devices of the target
(golf_jax/bench/gpu_targets.py) with shape-only arguments (`jax.ShapeDtypeStruct`s with
their shardings; no weight is materialized), compiles each ahead of time and reads:

* XLA's memory analysis (the peak per device against the card's memory, and against the
  0.92 share that launch/ gives XLA's allocator);
* XLA's HLO cost analysis of the optimized module (FLOPs, bytes accessed), plus the FLOPs
  inside cuDNN's attention calls, which it counts as 0; the bench's analytic count beside it;
* per kernel of the optimized HLO (golf_jax/bench/hlo_stats.py): a roofline lower bound
  max(FLOPs / peak, bytes / HBM bandwidth) summed, and the collectives' bytes on NVLink;
* the tokens/s and MFU that this bound allows: a ceiling, not a forecast.

What it cannot know: autotuning (none without the GPU: every GEMM keeps default tiles),
cuDNN's run-time acceptance of the graph, cuDNN's workspace, and the real overlap of
communication with compute. docs/perf.md, "Will it fit, and how fast at best?".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from golf_jax.core import mesh as mesh_lib
from golf_jax import model as model_lib
from golf_jax.bench import flops, gpu_targets, hlo_stats
from golf_jax.core.errors import UserError
from golf_jax.eval import harness, stages

ALLOCATOR_SHARE = 0.92  # XLA_PYTHON_CLIENT_MEM_FRACTION in launch/*.sh
MARGIN = 0.10  # of the card, kept free when sizing a batch: cuDNN's workspace, fragmentation, what XLA misses


@dataclass
class Program:
    """One jitted function of a stage and the abstract arguments it is compiled for."""

    name: str
    jitted: object
    args: tuple


@dataclass
class StagePlan:
    """A stage's programs and what one call of them is worth (as in golf_jax/bench/measure.Bench)."""

    stage: str
    unit: str
    units_per_call: float
    programs: list[Program]
    flops_per_unit: float | None
    flops: str
    tokens_per_unit: float | None = None
    targets_per_unit: float | None = None
    settings: dict = field(default_factory=dict)


def _shaped(tree, sharding):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def _batch(mesh, shapes: dict) -> dict:
    """{name: (shape, dtype)} -> arrays of that shape split over the data mesh."""
    dat = mesh_lib.data_sharded(mesh)
    return {k: jax.ShapeDtypeStruct(s, d, sharding=dat) for k, (s, d) in shapes.items()}


def _model_and_params(cfg, mesh, seq_len: int):
    model = model_lib.build_model(cfg.model)
    params = jax.eval_shape(lambda r: model.init(r, np.zeros((1, seq_len), np.int32))["params"], jax.random.PRNGKey(0))
    return model, _shaped(params, mesh_lib.replicated(mesh))


def plan_train(cfg, mesh, per_device_seqs: int = 0) -> StagePlan:
    from golf_jax.optim.build import build_optimizer
    from golf_jax.train import step as step_lib

    n_dev, T = mesh.devices.size, int(cfg.train.seq_len)
    per_device = per_device_seqs or int(cfg.train.batch_tokens) // (n_dev * T)
    if per_device < 1:
        raise UserError(f"train.batch_tokens={cfg.train.batch_tokens} is less than one sequence of {T} per device "
                        f"on {n_dev} devices; raise it or pass --per_device_seqs")
    rows = per_device * n_dev
    model, params = _model_and_params(cfg, mesh, T)
    labels = model_lib.param_labels(cfg.model, params, cfg.compat)
    tx = build_optimizer(cfg.opt, labels, mesh)
    recipe = step_lib.build_recipe(cfg, params, labels)
    state = jax.eval_shape(lambda r: step_lib.init_state(model, tx, r, T, mesh, recipe), jax.random.PRNGKey(0))
    batch = {**_batch(mesh, {"x": ((rows, T), jnp.int32), "y": ((rows, T), jnp.int32)}),
             **step_lib.schedule_inputs(1.0, cfg.opt.muon_momentum)}
    step = step_lib.jit_train_step(step_lib.make_train_step(model, tx, recipe), mesh)
    return StagePlan("train", "step", 1, [Program("train_step", step, (state, batch))],
                     rows * T * flops.train_per_token(cfg, params, T), "6·N_matmul + 6·L·T·D per token",
                     tokens_per_unit=rows * T, targets_per_unit=rows * T,
                     settings={"batch": f"{per_device} x {T} tokens per device", "tokens_per_step": rows * T})


def plan_eval(cfg, mesh, rows: int = 0) -> StagePlan:
    from golf_jax.eval import plain

    seq_len = stages.eval_seq_len(cfg)
    model, params = _model_and_params(cfg, mesh, seq_len)
    n = mesh.devices.size
    rows = rows or max(n, -(-max(int(cfg.eval.batch_tokens) // seq_len, 1) // n) * n)  # as plain.eval_batches
    batch = _batch(mesh, {"x": ((rows, seq_len), jnp.int32), "y": ((rows, seq_len), jnp.int32), "mask": ((rows, seq_len), jnp.bool_)})
    step = plain.jit_eval_step(plain.make_eval_step(model), mesh)
    return StagePlan("eval", "batch", 1, [Program("eval_step", step, (params, batch))],
                     flops.forward(cfg, params, seq_len, rows, rows * seq_len), "forward, logits at every position",
                     tokens_per_unit=rows * seq_len, targets_per_unit=rows * seq_len, settings={"rows": rows, "seq_len": seq_len})


def _predict(cfg, mesh, model, params, rows: int) -> Program:
    seq_len, S = stages.eval_seq_len(cfg), int(cfg.eval.sliding.stride)
    x = _batch(mesh, {"x": ((rows, seq_len), jnp.int32), "pos": ((rows, S), jnp.int32)})
    return Program("predict", harness.model_predict(model, mesh), (params, x["x"], x["pos"]))


def plan_sliding(cfg, mesh, rows: int = 0) -> StagePlan:
    seq_len, S = stages.eval_seq_len(cfg), int(cfg.eval.sliding.stride)
    model, params = _model_and_params(cfg, mesh, seq_len)
    rows = rows or harness.batch_rows(int(cfg.eval.sliding.batch_windows), mesh)
    return StagePlan("sliding", "window", rows, [_predict(cfg, mesh, model, params, rows)],
                     flops.forward(cfg, params, seq_len, 1, S), "forward of the window, logits at its stride positions",
                     tokens_per_unit=seq_len, targets_per_unit=S, settings={"rows": rows, "seq_len": seq_len, "stride": S})


def plan_ttt(cfg, mesh, rows: int = 0) -> StagePlan:
    """Score-first (or #1318's) TTT: a chunk's scoring batches and its training steps; phased TTT:
    a block's LoRA forward and step, and a step of the global SGD phases."""
    t, seq_len, S = cfg.eval.ttt, stages.eval_seq_len(cfg), int(cfg.eval.sliding.stride)
    if t.mode == "phased":
        return _plan_phased(cfg, mesh, rows)
    from golf_jax.eval.ttt import score_first as ttt

    ttt.check_config(t, seq_len, S)
    model, params = _model_and_params(cfg, mesh, seq_len)
    pred_rows = harness.batch_rows(int(cfg.eval.sliding.batch_windows), mesh)
    _, init, step = ttt.trainer(model, params, mesh, t)
    n, C = mesh.devices.size, int(t.chunk_tokens)
    train_rows = rows or -(-min(int(t.batch_seqs), max(C // seq_len, 1)) // n) * n  # as ScoreFirstTTT
    batch = _batch(mesh, {"x": ((train_rows, seq_len), jnp.int32), "y": ((train_rows, seq_len), jnp.int32),
                          "w": ((train_rows,), jnp.float32)})
    batch["hparams"] = {"lr_scale": np.float32(1.0)}
    windows, seqs = C // S, C // seq_len
    steps = int(t.epochs) * -(-seqs // train_rows)
    train = int(t.epochs) * seqs * seq_len * flops.train_per_token(cfg, params, seq_len, mtp_heads=False)
    return StagePlan("ttt", "chunk", 1, [_predict(cfg, mesh, model, params, pred_rows),
                                         Program("train_step", step, (jax.eval_shape(init, params), batch))],
                     flops.forward(cfg, params, seq_len, windows, windows * S) + train,
                     "scoring forwards of the chunk's windows + epochs × its sequences × (6·N + 6·L·T·D)",
                     tokens_per_unit=windows * seq_len + int(t.epochs) * seqs * seq_len, targets_per_unit=C,
                     settings={"mode": t.mode, "chunk_tokens": C, "predict_batches": -(-windows // pred_rows),
                               "rows": train_rows, "train_steps": steps,
                               "calls": {"predict": -(-windows // pred_rows), "train_step": steps}})


def _plan_phased(cfg, mesh, rows: int = 0) -> StagePlan:
    from golf_jax.eval.phased import lora as lora_lib
    from golf_jax.eval.phased import ttt as phased_ttt

    p, seq_len = cfg.eval.phased, stages.eval_seq_len(cfg)
    phased_ttt.check_config(p, seq_len)
    model, params = _model_and_params(cfg, mesh, seq_len)
    rows, C = rows or harness.batch_rows(int(p.batch_docs), mesh), int(p.chunk_size)
    dat, rep = mesh_lib.data_sharded(mesh), mesh_lib.replicated(mesh)
    fwd, step = phased_ttt._lora_fns(model, mesh, p)
    lora = _shaped(jax.eval_shape(lambda k: lora_lib.init(k, model.cfg, int(p.lora_rank), phased_ttt.modules_of(p),
                                                          rows), jax.random.PRNGKey(0)), dat)
    opt = _shaped(jax.eval_shape(lora_lib.adamw_init, lora), dat)
    scale = jax.ShapeDtypeStruct((), jnp.float32, sharding=rep)
    x = _batch(mesh, {"x": ((rows, seq_len), jnp.int32), "pos": ((rows, C), jnp.int32), "y": ((rows, C), jnp.int32),
                      "w": ((rows, C), jnp.float32)})
    # The forward's outputs (logits and the VJP's residuals) stay where it left them: a leaf with a
    # row per document split over the mesh, the rest (weights, scalars) replicated.
    logits, pullback = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dat if a.ndim and a.shape[0] == rows else rep),
        jax.eval_shape(fwd, params, lora, scale, x["x"], x["pos"]))
    init, g_step = phased_ttt._global_trainer(model, mesh, p, params)
    g_rows = harness.batch_rows(int(p.global_batch_seqs), mesh)
    g_batch = _batch(mesh, {k: ((g_rows, seq_len), jnp.int32) for k in ("x", "y", "seg")})
    g_batch["w"] = _batch(mesh, {"w": ((g_rows,), jnp.float32)})["w"]
    g_batch["hparams"] = {"lr_scale": np.float32(1.0)}
    fwd_flops = flops.forward(cfg, params, seq_len, rows, rows * C)
    return StagePlan("ttt", "block", 1,
                     [Program("lora_forward", fwd, (params, lora, scale, x["x"], x["pos"])),
                      Program("lora_step", step, (lora, opt, pullback, logits, x["y"], x["w"], np.int32(1))),
                      Program("global_sgd_step", g_step, (jax.eval_shape(init, params), g_batch))],
                     2 * fwd_flops + flops.attention_forward(cfg, seq_len, rows),
                     "a block: forward with logits at its chunks + the backward to the adapters",
                     tokens_per_unit=rows * seq_len, targets_per_unit=rows * C,
                     settings={"mode": "phased", "rows": rows, "chunk": C, "window": seq_len, "global_rows": g_rows,
                               "calls": {"lora_forward": 1, "lora_step": 1, "global_sgd_step": 0}})


def plan_slot(cfg, mesh, rows: int = 0) -> StagePlan:
    from golf_jax.eval.slot import stage as slot
    from golf_jax.eval.windows import sliding_units

    e, seq_len = cfg.eval, stages.eval_seq_len(cfg)
    S = int(e.sliding.stride)
    slot.check_config(e.slot, seq_len, S)
    model, params = _model_and_params(cfg, mesh, seq_len)
    rows = rows or harness.batch_rows(int(e.sliding.batch_windows), mesh)
    evaluator = slot.Slot(model, params, mesh, e.slot, seq_len, S)  # allocates nothing
    first = -(-seq_len // S)
    units = sliding_units(seq_len + (rows + 1) * S, seq_len, S, "merged").take(np.arange(first, first + rows))
    F = evaluator.objective(units, rows).pos_BxF.shape[1]
    b = _batch(mesh, {"x": ((rows, seq_len), jnp.int32), "pos": ((rows, S), jnp.int32), "opos": ((rows, F), jnp.int32),
                      "oy": ((rows, F), jnp.int32), "omask": ((rows, F), jnp.bool_)})
    delta0 = jax.ShapeDtypeStruct((int(cfg.model.vocab_size),), jnp.float32, sharding=mesh_lib.replicated(mesh))
    args = (params, b["x"], b["pos"], b["opos"], b["oy"], b["omask"], delta0, np.int32(rows - 1))
    return StagePlan("slot", "window", rows, [Program("slot_batch", evaluator._fn, args)],
                     flops.forward(cfg, params, seq_len, 1, S + F),
                     "forward of the window, logits at its stride and objective positions; the solver's not counted",
                     tokens_per_unit=seq_len, targets_per_unit=S,
                     settings={"mode": e.slot.mode, "solver": e.slot.solver, "max_iter": int(e.slot.max_iter),
                               "rows": rows, "objective_positions": F})


def plan_calib(cfg, mesh, rows: int = 0) -> StagePlan:
    """One batch of the GPTQ calibration pass: a forward that sums xᵀx at every kernel's input."""
    from golf_jax.quant import hessian

    ex = cfg.export
    T = int(ex.calib_seq_len) or int(cfg.train.seq_len)
    model, params = _model_and_params(cfg, mesh, T)
    n = mesh.devices.size
    rows = rows or max(n, -(-hessian.BATCH_SEQS // n) * n)  # as collect_hessians' batch
    tied = ex.embed_quant == "gptq"
    x = _batch(mesh, {"x": ((rows, T), jnp.int32), "w": ((rows,), jnp.float32)})
    acc = _shaped(jax.eval_shape(lambda p, t: hessian.xtx_forward(model, p, t, tied_embed=tied), params, x["x"]),
                  mesh_lib.replicated(mesh))
    _, uses = flops._layers_and_uses(cfg)
    times = lambda path: uses[int(path.split("/")[0].split("_")[1])] if path.startswith("blocks_") else 1  # noqa: E731
    xtx = sum(2.0 * a.shape[0] * a.shape[1] * times(path) for path, a in acc.items()) * rows * T
    return StagePlan("calib", "batch", 1,
                     [Program("accumulate", hessian.jit_accumulate(model, mesh, tied), (acc, params, x["x"], x["w"]))],
                     flops.forward(cfg, params, T, rows, 0) + xtx,
                     "the forward without logits + 2·in² per token for each kernel's Σ xᵀx",
                     tokens_per_unit=rows * T, settings={"rows": rows, "seq_len": T, "calib_seqs": int(ex.calib_seqs)})


PLANS = {"train": plan_train, "eval": plan_eval, "sliding": plan_sliding, "ttt": plan_ttt, "slot": plan_slot,
         "calib": plan_calib}


def compile_plan(plan: StagePlan, spec: gpu_targets.GpuSpec, devices: int, hlo_dir: str | None = None) -> dict:
    """Compile every program of the plan and report it (per device, per call of the program); with
    hlo_dir, write each program's optimized HLO there (`<stage>.<program>.hlo.txt`)."""
    out = {}
    for prog in plan.programs:
        t0 = time.perf_counter()
        compiled = prog.jitted.lower(*prog.args).compile()
        out[prog.name] = {"compile_s": time.perf_counter() - t0, **program_report(compiled, spec, devices)}
        if hlo_dir:
            Path(hlo_dir).mkdir(parents=True, exist_ok=True)
            (Path(hlo_dir) / f"{plan.stage}.{prog.name}.hlo.txt").write_text(compiled.as_text())
    return out


def program_report(compiled, spec: gpu_targets.GpuSpec, devices: int) -> dict:
    """One executable's memory, FLOPs, bytes, kernels, collectives and roofline bound (per call)."""
    text = compiled.as_text()
    stats = hlo_stats.analyze(text)
    cost = hlo_stats.xla_cost(compiled)
    mem = compiled.memory_analysis()
    m = {k: int(getattr(mem, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp", "alias")}
    m["peak"] = m["argument"] + m["output"] + m["temp"] - m["alias"]
    roof = hlo_stats.roofline(stats, spec.bf16_tflops * 1e12, spec.memory_bw)
    comm = {k: {**v, "ms": 1e3 * v["count"] * hlo_stats.collective_seconds(k, v["bytes"] / max(v["count"], 1),
                                                                          devices, spec.link_bw)}
            for k, v in stats.collectives.items()}
    comm_ms = sum(v["ms"] for v in comm.values())
    return {"memory": m, "peak_gib": m["peak"] / 2**30,
            "xla_flops": cost.get("flops", 0.0) + stats.attention_flops, "xla_flops_without_cudnn": cost.get("flops", 0.0),
            "cudnn_attention_flops": stats.attention_flops, "bytes_accessed": cost.get("bytes accessed", 0.0),
            "cudnn_attention_calls": stats.cudnn_attention, "collectives": comm, "collective_ms": comm_ms,
            "roofline_ms": 1e3 * roof["seconds"], "compute_ms": 1e3 * roof["compute_seconds"],
            "memory_ms": 1e3 * roof["memory_seconds"], "bound_ms": max(1e3 * roof["seconds"], comm_ms),
            "kernels": roof["kernels"], "top_kernels": roof["top_kernels"], "f32_dots": hlo_stats.f32_dots(text),
            "loops_counted_once": stats.unknown_loops}


def run_target(cfg, stage: str, target: str, devices: int, rows: int = 0, per_device_seqs: int = 0,
               size_batch: bool = False, hlo_dir: str | None = None) -> dict:
    """The stage compiled for `devices` GPUs of kind `target`: its report (JSON-able); with
    size_batch (eval stages), also the largest batch that fits (`largest_rows`)."""
    if stage not in PLANS:
        raise UserError(f"--stage={stage} with --target: use one of {', '.join(PLANS)}")
    spec = gpu_targets.spec_of(target)
    mesh = gpu_targets.target_mesh(spec, devices)
    plan = plan_train(cfg, mesh, per_device_seqs) if stage == "train" else PLANS[stage](cfg, mesh, rows)
    progs = compile_plan(plan, spec, devices, hlo_dir)
    calls = plan.settings.get("calls") or {name: 1 for name in progs}
    unit_s = sum(calls.get(n, 0) * p["bound_ms"] for n, p in progs.items()) / 1e3 / plan.units_per_call
    xla = sum(calls.get(n, 0) * p["xla_flops"] for n, p in progs.items()) * devices / plan.units_per_call
    peak_bytes = max(p["memory"]["peak"] for p in progs.values())
    out = {
        "stage": stage, "config": cfg.name, "target": spec.name, "devices": devices, "unit": plan.unit,
        "settings": plan.settings, "programs": progs, "compile_s": sum(p["compile_s"] for p in progs.values()),
        "peak_memory_bytes": peak_bytes, "peak_gib": peak_bytes / 2**30,
        "device_memory_gib": spec.memory_bytes / 2**30,
        "fits": peak_bytes <= ALLOCATOR_SHARE * spec.memory_bytes,
        "flops_per_unit": plan.flops_per_unit, "flops": plan.flops, "xla_flops_per_unit": xla,
        "xla_over_analytic": xla / plan.flops_per_unit if plan.flops_per_unit else None,
        "bound_ms_per_unit": 1e3 * unit_s,
        "ceiling_tokens_per_s": plan.tokens_per_unit / unit_s if plan.tokens_per_unit and unit_s else None,
        "ceiling_targets_per_s": plan.targets_per_unit / unit_s if plan.targets_per_unit and unit_s else None,
        "ceiling_mfu": (plan.flops_per_unit / unit_s / (devices * spec.bf16_tflops * 1e12)
                        if plan.flops_per_unit and unit_s else None),
    }
    if size_batch and stage != "train":
        out["sizing"] = largest_rows(cfg, stage, out, spec, devices)
    return out


def largest_rows(cfg, stage: str, report: dict, spec: gpu_targets.GpuSpec, devices: int,
                 margin: float = MARGIN) -> dict:
    """The largest global batch of an eval stage that fits: its peak grows linearly in the rows
    (weights fixed, activations per row), so a second compile at twice the rows gives the slope.
    Budget: the XLA pool less `margin` of the card (cuDNN's workspace and fragmentation)."""
    rows = int(report["settings"]["rows"])
    mesh = gpu_targets.target_mesh(spec, devices)
    twice = compile_plan(PLANS[stage](cfg, mesh, 2 * rows), spec, devices)
    peak1, peak2 = report["peak_memory_bytes"], max(p["memory"]["peak"] for p in twice.values())
    budget = (ALLOCATOR_SHARE - margin) * spec.memory_bytes
    per_row = max(peak2 - peak1, 1) / rows
    fit = int((budget - (peak1 - per_row * rows)) // per_row) // devices * devices
    return {"rows": rows, "peak_bytes": peak1, "rows_x2_peak_bytes": peak2, "bytes_per_row": per_row,
            "budget_bytes": budget, "margin": margin, "largest_rows": fit}


def lines(r: dict) -> list[str]:
    """A target report as a few human lines."""
    f = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731
    head = [f"stage {r['stage']} compiled for {r['devices']} × {r['target']} ({r['config']}); {r['settings']}",
            f"  peak {r['peak_gib']:.2f} GiB of {r['device_memory_gib']:.1f} GiB per device "
            f"({'fits' if r['fits'] else 'DOES NOT FIT'} in the {ALLOCATOR_SHARE:.0%} XLA pool)   "
            f"compile {r['compile_s']:.1f} s",
            f"  FLOPs/{r['unit']}: analytic {f(r['flops_per_unit'], '.4g')}, XLA {r['xla_flops_per_unit']:.4g} "
            f"(×{f(r['xla_over_analytic'], '.3f')})",
            f"  roofline bound {r['bound_ms_per_unit']:.3f} ms/{r['unit']}   ceiling: tokens/s "
            f"{f(r['ceiling_tokens_per_s'], ',.0f')}, MFU {f(r['ceiling_mfu'] and 100 * r['ceiling_mfu'], '.1f')}%"]
    for name, p in r["programs"].items():
        coll = ", ".join(f"{v['count']:g} {k} ({v['bytes'] / 2**20:.1f} MiB, {v['ms']:.2f} ms)"
                         for k, v in p["collectives"].items()) or "none"
        cud = p["cudnn_attention_calls"]
        head.append(f"  [{name}] peak {p['peak_gib']:.2f} GiB, {p['kernels']} kernels, roofline {p['roofline_ms']:.3f} ms "
                    f"(compute {p['compute_ms']:.3f}, memory {p['memory_ms']:.3f}), bytes accessed "
                    f"{p['bytes_accessed'] / 2**30:.2f} GiB, cuDNN attention {cud['forward']:g} fwd + "
                    f"{cud['backward']:g} bwd; collectives: {coll}"
                    + (f"; {p['f32_dots']} dots with both operands f32" if p["f32_dots"] else "")
                    + (f"; {p['loops_counted_once']} loops of unknown trip count counted once (the bound is per "
                       "iteration there)" if p["loops_counted_once"] else ""))
    if "sizing" in r:
        z = r["sizing"]
        head.append(f"  largest batch that fits: {z['largest_rows']} rows ({z['bytes_per_row'] / 2**20:.1f} MiB per "
                    f"row; budget {z['budget_bytes'] / 2**30:.1f} GiB = {ALLOCATOR_SHARE:.0%} pool less "
                    f"{z['margin']:.0%} margin)")
    return head
