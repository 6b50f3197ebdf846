"""How a train step and a sliding-window eval forward grow with tokens per step and
sequence length, measured on this machine (docs/scaling.md, "Measured on the CPU").

    python tools/scaling_bench.py [--layers=4 --dim=128 --impl=auto --stride=64 --rounds=5] [--debug]

The model is configs/record.py's at a small width (fp32; attention_impl as configured:
"auto" is the chunked path on the CPU). Each row is the median of `rounds` calls after
a compile; train rows are loss (with MTP) forward + backward, eval rows are the
harness's sliding predict (hidden states of whole windows, logits at `stride` positions).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import flags  # noqa: E402 (after the repository is on the path)

from golf_jax.core import cli  # noqa: E402
from golf_jax.core.errors import UserError  # noqa: E402

FLAGS = cli.flag_values()
_LAYERS = flags.DEFINE_integer("layers", 4, "Layers of the model.", lower_bound=1, flag_values=FLAGS)
_DIM = flags.DEFINE_integer("dim", 128, "Model width (4 heads, 2 KV heads).", lower_bound=1, flag_values=FLAGS)
_IMPL = flags.DEFINE_string("impl", "auto", "model.attention_impl.", flag_values=FLAGS)
_STRIDE = flags.DEFINE_integer("stride", 64, "Scored positions per eval window (the shortest window is 256).",
                               lower_bound=1, upper_bound=256, flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed calls per row (the median is shown).", lower_bound=1,
                               flag_values=FLAGS)


def median_ms(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _main(args: list[str]) -> int:
    cli.positionals(args)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from configs import record
    from golf_jax import model as model_lib
    from golf_jax.eval import harness

    layers, dim, impl, stride, rounds = _LAYERS.value, _DIM.value, _IMPL.value, _STRIDE.value, _ROUNDS.value
    m = record.get_config().model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads = layers, dim, 4, 2
    m.rope_dims, m.xsa_last_n, m.ve_layers = 16, layers, str(layers - 1)
    m.compute_dtype, m.attention_impl = "float32", impl
    try:
        model = model_lib.build_model(m)
    except ValueError as e:  # the model's own checks of the sizes and attention_impl, as one line
        raise UserError(f"{e} (--layers={layers} --dim={dim} --impl={impl}); fix the flag") from e
    rng = np.random.default_rng(0)
    params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
    grad = jax.jit(jax.value_and_grad(lambda p, x: model.apply({"params": p}, x, x, method=model.loss)[0]))
    predict = jax.jit(harness.make_predict(model))
    print(f"record model {layers}x{dim}, fp32, attention_impl={impl}, median of {rounds}")
    print("train: tokens/step, T, ms/step, us/token")
    for B, T in [(2, 256), (4, 256), (8, 256), (16, 256), (32, 128), (8, 512), (4, 1024), (2, 2048)]:
        x = jnp.asarray(rng.integers(0, m.vocab_size, (B, T)), jnp.int32)
        ms = median_ms(lambda: jax.block_until_ready(grad(params, x)), rounds)
        print(f"  {B * T:6d} {T:5d} {ms:9.1f} {1e3 * ms / (B * T):8.1f}")
    print(f"eval (stride {stride}, 8 windows a forward): T, ms/window, us/scored token")
    for T in (256, 512, 1024, 2048):
        x = jnp.asarray(rng.integers(0, m.vocab_size, (8, T)), jnp.int32)
        pos = jnp.tile(jnp.arange(T - stride, T, dtype=jnp.int32), (8, 1))
        ms = median_ms(lambda: jax.block_until_ready(predict(params, x, pos)), rounds) / 8
        print(f"  {T:5d} {ms:9.2f} {1e3 * ms / stride:8.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
