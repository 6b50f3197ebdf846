"""How a train step and a sliding-window eval forward grow with tokens per step and
sequence length, measured on this machine (docs/scaling.md, "Measured on the CPU").

    python tools/scaling_bench.py [--layers 4 --dim 128 --rounds 5]

The model is configs/record.py's at a small width (fp32; attention_impl as configured:
"auto" is the chunked path on the CPU). Each row is the median of `rounds` calls after
a compile; train rows are loss (with MTP) forward + backward, eval rows are the
harness's sliding predict (hidden states of whole windows, logits at `stride` positions).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def median_ms(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--impl", default="auto", help="model.attention_impl")
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from configs import record
    from golf_jax import model as model_lib
    from golf_jax.eval import harness

    m = record.get_config().model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = args.layers, args.dim, 4, 2
    m.rope_dims, m.xsa_last_n, m.ve_layers = 16, args.layers, str(args.layers - 1)
    m.compute_dtype, m.attention_impl = "float32", args.impl
    model = model_lib.build_model(m)
    rng = np.random.default_rng(0)
    params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
    grad = jax.jit(jax.value_and_grad(lambda p, x: model.apply({"params": p}, x, x, method=model.loss)[0]))
    predict = jax.jit(harness.make_predict(model))
    print(f"record model {args.layers}x{args.dim}, fp32, attention_impl={args.impl}, median of {args.rounds}")
    print("train: tokens/step, T, ms/step, us/token")
    for B, T in [(2, 256), (4, 256), (8, 256), (16, 256), (32, 128), (8, 512), (4, 1024), (2, 2048)]:
        x = jnp.asarray(rng.integers(0, m.vocab_size, (B, T)), jnp.int32)
        ms = median_ms(lambda: jax.block_until_ready(grad(params, x)), args.rounds)
        print(f"  {B * T:6d} {T:5d} {ms:9.1f} {1e3 * ms / (B * T):8.1f}")
    print(f"eval (stride {args.stride}, 8 windows a forward): T, ms/window, us/scored token")
    for T in (256, 512, 1024, 2048):
        x = jnp.asarray(rng.integers(0, m.vocab_size, (8, T)), jnp.int32)
        pos = jnp.tile(jnp.arange(T - args.stride, T, dtype=jnp.int32), (8, 1))
        ms = median_ms(lambda: jax.block_until_ready(predict(params, x, pos)), args.rounds) / 8
        print(f"  {T:5d} {ms:9.2f} {1e3 * ms / args.stride:8.1f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
