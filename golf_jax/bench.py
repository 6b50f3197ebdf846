"""`python -m golf_jax.bench --config=configs/baseline.py`: train-step throughput.

Times the real compiled train step on random tokens (no data needed), after
compilation and warm-up, with one sync at the end of the timed window.

FLOPs per token (training, causal-effective, as in reference-pr1318 §7):
  6·N_matmul  +  6·L·T·D
where N_matmul counts every matmul weight used in the forward (all `kernel`
leaves plus the tied output head V·D; the embedding gather is not a matmul) and
6·L·T·D is QKᵀ and AV (4·D·T/2 per layer forward, ×3 for training). With depth
recurrence L counts the virtual layers and a looped block's kernels count per use.
"""

from __future__ import annotations

import collections
import time

import jax
import numpy as np
from absl import app, flags
from flax import traverse_util
from ml_collections import config_flags

from golf_jax import model as model_lib
from golf_jax.model import gpt
from golf_jax.optim.build import build_optimizer
from golf_jax import mesh as mesh_lib
from golf_jax.train import step as step_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_PER_DEVICE_SEQS = flags.DEFINE_integer("per_device_seqs", 0, "Override the batch: sequences per device (0 = config).")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0, "Peak bf16 TFLOP/s per device for MFU (0 = from the device kind).")

# Dense bf16 peak per device (TFLOP/s), from the vendors' datasheets.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "B200": 2250.0}


def flops_per_token(cfg, params) -> tuple[float, int]:
    """With depth recurrence a looped block's kernels and attention count once per use."""
    encoder, decoder = gpt.layer_order(cfg.model, looping=True)
    uses = collections.Counter(encoder + decoder)
    flat = traverse_util.flatten_dict(params)

    def times_used(path) -> int:
        return uses[int(path[0].split("_")[1])] if path[0].startswith("blocks_") else 1

    n_matmul = sum(int(np.prod(v.shape)) * times_used(k) for k, v in flat.items() if k[-1] == "kernel")
    n_matmul += cfg.model.vocab_size * cfg.model.model_dim  # tied head
    attn = 6 * len(encoder + decoder) * cfg.train.seq_len * cfg.model.model_dim
    return 6.0 * n_matmul + attn, n_matmul


def peak_tflops(device) -> float | None:
    if _PEAK_TFLOPS.value > 0:
        return _PEAK_TFLOPS.value
    kind = getattr(device, "device_kind", "")
    return next((v for k, v in PEAK_TFLOPS.items() if k in kind), None)


def main(argv) -> None:
    del argv
    cfg = _CONFIG.value
    mesh = mesh_lib.make_mesh()
    n_dev = mesh.devices.size
    seq_len = cfg.train.seq_len
    per_device = _PER_DEVICE_SEQS.value or cfg.train.batch_tokens // (n_dev * seq_len)
    global_seqs = per_device * n_dev
    model = model_lib.build_model(cfg.model)
    rng = jax.random.PRNGKey(cfg.seed)
    abstract = jax.eval_shape(lambda r: model.init(r, np.zeros((1, seq_len), np.int32))["params"], rng)
    labels = model_lib.param_labels(cfg.model, abstract, cfg.compat)
    tx = build_optimizer(cfg.opt, labels)
    recipe = step_lib.build_recipe(cfg, abstract, labels)
    state = step_lib.init_state(model, tx, rng, seq_len, mesh, recipe)
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (global_seqs, seq_len + 1), dtype=np.int32)
    batch = {
        "x": mesh_lib.put_global_batch(mesh, tokens[:, :-1]),
        "y": mesh_lib.put_global_batch(mesh, tokens[:, 1:]),
        **step_lib.schedule_inputs(1.0, cfg.opt.muon_momentum),
    }
    t = time.perf_counter()
    step = step_lib.jit_train_step(step_lib.make_train_step(model, tx, recipe), mesh).lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    for _ in range(_WARMUP.value):
        state, metrics = step(state, batch)
    jax.block_until_ready(state)
    t = time.perf_counter()
    for _ in range(_STEPS.value):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - t) / _STEPS.value
    fpt, n_matmul = flops_per_token(cfg, state.params)
    tok_per_s = global_seqs * seq_len / seconds
    device = mesh.devices.flat[0]
    peak = peak_tflops(device)
    mfu = f"{100 * tok_per_s * fpt / (n_dev * peak * 1e12):.1f}%" if peak else "n/a (pass --peak_tflops)"
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    peak_mem = f"{stats['peak_bytes_in_use'] / 2**30:.2f} GiB" if stats and "peak_bytes_in_use" in stats else "n/a"
    print(f"config: {cfg.name} devices: {n_dev} × {getattr(device, 'device_kind', device.platform)}")
    print(f"batch: {per_device} × {seq_len} tokens per device ({global_seqs * seq_len:,} per step)")
    print(f"compile: {compile_s:.1f} s   loss after {_WARMUP.value + _STEPS.value} steps: {float(metrics['loss']):.4f}")
    print(f"FLOPs/token: {fpt / 1e6:.1f} M (6·N_matmul with N_matmul = {n_matmul:,}, + 6·L·T·D attention)")
    print(f"ms/step: {1000 * seconds:.1f}   tokens/s: {tok_per_s:,.0f}   tokens/s/device: {tok_per_s / n_dev:,.0f}")
    print(f"MFU: {mfu}   peak memory: {peak_mem}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
