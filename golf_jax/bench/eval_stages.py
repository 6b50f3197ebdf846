"""The evaluation stages' compiled functions, as golf_jax/eval/stages.py dispatches them.

Random weights (the model's init) and random tokens; units in the steady state:

* eval: plain.jit_eval_step on one batch of eval.batch_tokens (unit: batch);
* sliding: the fixed model's predict (harness.FixedModel) on eval.sliding.batch_windows
  windows of eval seq_len tokens scoring `stride` positions each (unit: window);
* ttt: one chunk of score-first TTT (ttt.ScoreFirstTTT): predict on the chunk's
  chunk_tokens/stride windows, then its update, epochs × steps on the chunk (unit: chunk);
  with eval.ttt.mode="phased", one block of phased TTT (phased_ttt.PhasedTTT): the LoRA
  forward of batch_docs documents' chunks from full-width windows, then its LoRA AdamW step
  (unit: block; the global SGD phases are train steps of the eval model, not timed here);
* slot: the SLOT evaluator's predict (slot.Slot: forward, L-BFGS fit of δ on the
  objective, scored logits) on a batch of windows (unit: window).

The harness's host work (gathering windows, byte counts, the ledger) and its fp32
log-softmax of the scored logits are not timed: the bench times device work. The
evaluators call the executables compiled ahead of time in place of their jitted
functions (the same program, traced once rather than twice).
"""

from __future__ import annotations

import jax
import numpy as np

from golf_jax.core import mesh as mesh_lib
from golf_jax import model as model_lib
from golf_jax.bench import flops
from golf_jax.bench.measure import Bench, compile_aot
from golf_jax.eval import adapt, harness, plain, stages
from golf_jax.eval.windows import gather_batch, sliding_units


def _model(cfg, mesh, seq_len: int):
    model = model_lib.build_model(cfg.model)
    init = jax.jit(lambda r: model.init(r, np.zeros((1, seq_len), np.int32))["params"],
                   out_shardings=mesh_lib.replicated(mesh))
    return model, init(jax.random.PRNGKey(cfg.seed))


def _windows(cfg, mesh, seq_len: int, rows: int):
    """(stream, units, arrays) of `rows` steady-state windows (after window 0's pieces)."""
    stride = int(cfg.eval.sliding.stride)
    first = -(-seq_len // stride)
    num_targets = seq_len + (rows + 1) * stride
    tokens = np.random.default_rng(cfg.seed).integers(0, cfg.model.vocab_size, num_targets + 1).astype(np.int32)
    units = sliding_units(num_targets, seq_len, stride, "merged").take(np.arange(first, first + rows))
    return tokens, units, gather_batch(tokens, units, rows)


def _put(mesh, arrays: dict, keys) -> dict:
    return {k: mesh_lib.put_global_batch(mesh, arrays[k]) for k in keys}


def _compiled_predict(cfg, mesh, seq_len: int):
    """(model, params, rows, inputs, compiled, compile_s): the sliding predict that sliding and
    TTT score with, compiled for one batch of steady-state windows (its inputs)."""
    model, params = _model(cfg, mesh, seq_len)
    rows = harness.batch_rows(int(cfg.eval.sliding.batch_windows), mesh)
    _, _, arrays = _windows(cfg, mesh, seq_len, rows)
    put = _put(mesh, arrays, ("x", "pos"))
    compiled, compile_s = compile_aot(harness.model_predict(model, mesh), params, put["x"], put["pos"])
    return model, params, rows, {"x_BxL": put["x"], "pos_BxS": put["pos"], "num_units": rows}, compiled, compile_s


def build_eval(cfg, mesh) -> Bench:
    seq_len = stages.eval_seq_len(cfg)
    model, params = _model(cfg, mesh, seq_len)
    n = mesh.devices.size
    rows = max(n, -(-max(int(cfg.eval.batch_tokens) // seq_len, 1) // n) * n)  # as plain.eval_batches
    tokens = np.random.default_rng(cfg.seed).integers(0, cfg.model.vocab_size, (rows, seq_len + 1)).astype(np.int32)
    batch = _put(mesh, {"x": tokens[:, :-1], "y": tokens[:, 1:], "mask": np.ones((rows, seq_len), bool)}, ("x", "y", "mask"))
    step = plain.jit_eval_step(plain.make_eval_step(model), mesh)
    compiled, compile_s = compile_aot(step, params, batch)
    return Bench("eval", "batch", 1, lambda: compiled(params, batch),
                 "forward, logits at every position (bench/flops.py)",
                 flops_per_unit=flops.forward(cfg, params, seq_len, rows, rows * seq_len), tokens_per_unit=rows * seq_len,
                 targets_per_unit=rows * seq_len, compiled={"eval_step": compiled}, compile_s=compile_s,
                 settings={"batch": f"{rows} x {seq_len}"})


def build_sliding(cfg, mesh) -> Bench:
    seq_len, S = stages.eval_seq_len(cfg), int(cfg.eval.sliding.stride)
    model, params, rows, inputs, compiled, compile_s = _compiled_predict(cfg, mesh, seq_len)
    evaluator = harness.FixedModel(compiled, params)
    return Bench("sliding", "window", rows, lambda: evaluator.predict(inputs),
                 "forward of the window, logits at its stride positions (bench/flops.py)",
                 flops_per_unit=flops.forward(cfg, params, seq_len, 1, S), tokens_per_unit=seq_len, targets_per_unit=S,
                 compiled={"predict": compiled}, compile_s=compile_s,
                 settings={"windows_per_batch": rows, "seq_len": seq_len, "stride": S})


def build_ttt(cfg, mesh) -> Bench:
    t, seq_len, S = cfg.eval.ttt, stages.eval_seq_len(cfg), int(cfg.eval.sliding.stride)
    if t.mode == "phased":
        return build_phased(cfg, mesh)
    from golf_jax.eval.ttt import score_first as ttt

    ttt.check_config(t, seq_len, S)
    C = int(t.chunk_tokens)
    model, params, rows, inputs, c_pred, s_pred = _compiled_predict(cfg, mesh, seq_len)
    adapter = ttt.ScoreFirstTTT(model, c_pred, params, mesh, t, seq_len, 2)  # chunk 0 of 2: trained, at LR scale 1
    stream = np.random.default_rng(cfg.seed + 1).integers(0, cfg.model.vocab_size, C + 1).astype(np.int32)
    reveal = harness.Reveal(stream, lambda a, b: True, 0, 2, True)
    windows = C // S
    batches = -(-windows // rows)
    x, y = adapt.sequences(stream, seq_len)
    batch = _put(mesh, adapt.padded_rows(x[: adapter._rows], y[: adapter._rows], adapter._rows), ("x", "y", "w"))
    batch["hparams"] = {"lr_scale": np.float32(1.0)}
    c_step, s_step = compile_aot(adapter._step, adapter.state, batch)  # the adapter's jitted train step
    adapter._step = c_step

    def call():
        for _ in range(batches):
            adapter.predict(inputs)
        adapter.update(reveal)
        return adapter.state

    seqs = x.shape[0]
    train_flops = int(t.epochs) * seqs * seq_len * flops.train_per_token(cfg, params, seq_len, mtp_heads=False)
    return Bench("ttt", "chunk", 1, call,
                 "scoring forwards of the chunk's windows + epochs × its sequences × (6·N + 6·L·T·D) "
                 "(bench/flops.py)",
                 flops_per_unit=flops.forward(cfg, params, seq_len, windows, windows * S) + train_flops,
                 tokens_per_unit=windows * seq_len + int(t.epochs) * seqs * seq_len, targets_per_unit=C,
                 compiled={"predict": c_pred, "train_step": c_step}, compile_s=s_pred + s_step,
                 settings={"mode": t.mode, "chunk_tokens": C, "windows_per_chunk": windows, "predict_batches": batches,
                           "train_steps": int(t.epochs) * -(-seqs // adapter._rows), "train_rows": adapter._rows},
                 extra=lambda: {"train_steps_done": adapter.steps}, calls=2, warmup=1)


def build_slot(cfg, mesh) -> Bench:
    from golf_jax.eval.slot import stage as slot

    e, seq_len = cfg.eval, stages.eval_seq_len(cfg)
    S = int(e.sliding.stride)
    slot.check_config(e.slot, seq_len, S)
    model, params = _model(cfg, mesh, seq_len)
    rows = harness.batch_rows(int(e.sliding.batch_windows), mesh)
    tokens, units, arrays = _windows(cfg, mesh, seq_len, rows)
    evaluator = slot.Slot(model, params, mesh, e.slot, seq_len, S)
    obj = evaluator.objective(units, rows)
    target = units.start[:, None] + obj.pos_BxF
    obj_y = np.where(obj.mask_BxF, tokens[np.where(obj.mask_BxF, target + 1, 0)], 0).astype(np.int32)
    put = _put(mesh, {**arrays, "opos": obj.pos_BxF.astype(np.int32), "oy": obj_y, "omask": obj.mask_BxF},
               ("x", "pos", "opos", "oy", "omask"))
    inputs = {"x_BxL": put["x"], "pos_BxS": put["pos"], "num_units": rows, "obj_pos_BxF": put["opos"],
              "obj_y_BxF": put["oy"], "obj_mask_BxF": put["omask"]}
    compiled, compile_s = compile_aot(evaluator._fn, params, put["x"], put["pos"], put["opos"], put["oy"],  # its jit
                                      put["omask"], evaluator.zero_delta(), np.int32(rows - 1))
    evaluator._fn = compiled
    F = obj.pos_BxF.shape[1]

    def solver_effort() -> dict:
        d = evaluator.diagnostics()
        return {"mean_iterations": float(np.mean(d["iterations"])),
                "mean_evaluations": float(np.mean(d["evaluations"]))}

    return Bench("slot", "window", rows, lambda: evaluator.predict(inputs)["logits"],
                 "forward of the window, logits at its stride and objective positions; the solver's "
                 "FLOPs are not counted (bench/flops.py)",
                 flops_per_unit=flops.forward(cfg, params, seq_len, 1, S + F), tokens_per_unit=seq_len, targets_per_unit=S,
                 compiled={"slot_batch": compiled}, compile_s=compile_s,
                 settings={"mode": e.slot.mode, "solver": e.slot.solver, "max_iter": int(e.slot.max_iter),
                           "objective_positions": F, "windows_per_batch": rows, "seq_len": seq_len, "stride": S},
                 extra=solver_effort)


def build_phased(cfg, mesh) -> Bench:
    """One steady-state block of phased TTT: every row a document whose chunk is scored from
    a full eval-seq_len window and then trained on (not its last chunk)."""
    from golf_jax.eval.phased import plan as phased_plan, ttt as phased_ttt
    from golf_jax.model.embeddings import BOS_ID

    p, seq_len = cfg.eval.phased, stages.eval_seq_len(cfg)
    phased_ttt.check_config(p, seq_len)
    C = int(p.chunk_size)
    rows = harness.batch_rows(int(p.batch_docs), mesh)
    c = -(-seq_len // C)  # the first chunk whose window is the full L; a chunk after it keeps the row training
    P = (c + 2) * C  # targets per document
    rng = np.random.default_rng(cfg.seed)
    doc_tokens = rng.integers(BOS_ID + 1, cfg.model.vocab_size, (rows, P)).astype(np.int32)
    doc_tokens[:, 0] = BOS_ID
    stream = np.append(doc_tokens.reshape(-1), np.int32(BOS_ID))
    plan = phased_plan.build(phased_plan.find_documents(stream), rows, rows, C, seq_len, 0, int(p.num_phases))
    model, params = _model(cfg, mesh, seq_len)
    evaluator = phased_ttt.PhasedTTT(model, params, mesh, p, plan, seq_len)
    arrays = gather_batch(stream, plan.units.take(plan.blocks[c]), rows)
    put = _put(mesh, arrays, ("x", "pos"))
    inputs = {"x_BxL": put["x"], "pos_BxS": put["pos"], "num_units": rows}
    W = arrays["x"].shape[1]
    c_fwd, s_fwd = compile_aot(evaluator._fwd, params, evaluator.lora, evaluator._scale, put["x"], put["pos"])
    evaluator._fwd = c_fwd
    logits, pullback = c_fwd(params, evaluator.lora, evaluator._scale, put["x"], put["pos"])
    y = mesh_lib.put_global_batch(mesh, np.zeros((rows, C), np.int32))
    w = mesh_lib.put_global_batch(mesh, np.ones((rows, C), np.float32))
    c_step, s_step = compile_aot(evaluator._step, evaluator.lora, evaluator._opt, pullback, logits, y, w, np.int32(1))
    evaluator._step = c_step
    del logits, pullback
    reveal = lambda: harness.Reveal(stream, lambda a, b: True, c, len(plan.blocks), True)  # noqa: E731

    def call():
        evaluator.predict(inputs)
        evaluator.update(reveal())
        return evaluator.lora

    fwd = flops.forward(cfg, params, W, rows, rows * C)
    return Bench("ttt", "block", 1, call,
                 "forward of the block's windows with logits at its chunks, and the backward to the adapters: "
                 "input gradients only, about one more forward with attention twice (bench/flops.py); LoRA "
                 "matmuls not counted",
                 flops_per_unit=2 * fwd + flops.attention_forward(cfg, W, rows), tokens_per_unit=rows * W,
                 targets_per_unit=rows * C, compiled={"lora_forward": c_fwd, "lora_step": c_step},
                 compile_s=s_fwd + s_step,
                 settings={"mode": "phased", "rows": rows, "chunk": C, "window": W, "lora_rank": int(p.lora_rank),
                           "lora_modules": str(p.lora_modules)},
                 extra=lambda: {"lora_steps_done": evaluator.lora_steps})
