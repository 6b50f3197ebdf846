"""`python -m golf_jax.quant.estimate --config=configs/X.py`: a full-size artifact's bytes
without training it.

The compressed size of an SDClip- or percentile-quantized matrix depends on the shape
of its weight distribution, not on its scale, so the estimate builds the config's model
at full size, draws every quantized matrix (block kernels and large tables) from a
Gaussian, quantizes them with the config's export (round to nearest at the GPTQ
scales: no calibration data needed) and compresses with its codec. Trained weights are
heavier-tailed than a Gaussian, which puts more of them in the few central levels,
so the real artifact usually compresses a little better; treat the figure as an upper
estimate. Prints the parameter count, weight bytes, code bytes and the total.
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np
from flax import traverse_util

from golf_jax.core import cli
from golf_jax.core.errors import UserError
from golf_jax.submission import codebytes
from golf_jax import model as model_lib
from golf_jax.quant import container, export

def gaussian_params(cfg, seed: int = 0) -> dict:
    """The model's params with every leaf of > PASSTHROUGH_MAX_NUMEL entries drawn i.i.d. N(0, 0.02²)."""
    model = model_lib.build_model(cfg.model)
    abstract = jax.eval_shape(lambda r: model.init(r, np.zeros((1, 8), np.int32))["params"], jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in traverse_util.flatten_dict(abstract).items():
        size = int(np.prod(leaf.shape))
        big = size > export.PASSTHROUGH_MAX_NUMEL
        flat[path] = (0.02 * rng.standard_normal(leaf.shape) if big else np.ones(leaf.shape)).astype(np.float32)
    return traverse_util.unflatten_dict(flat)


def estimate(cfg, seed: int = 0, log=lambda m: None) -> dict:
    """{params, weight_bytes, code_bytes, total_bytes, budget_bytes, seconds} of the config's export;
    `log` hears each phase as it starts (a full-size export takes minutes on a CPU)."""
    t0 = time.perf_counter()
    say = lambda m: log(f"[estimate {time.perf_counter() - t0:.0f}s] {m}")  # noqa: E731
    say(f"drawing the {cfg.name} model's weights")
    params = gaussian_params(cfg, seed)
    labels = export.flat_labels(model_lib.param_labels(cfg.model, params, cfg.compat))
    arrays = {n: a for n, a in export.named_arrays(params).items() if not n.startswith(export.NOT_EXPORTED_PREFIXES)}
    ex = cfg.export
    say(f"quantizing {len(arrays)} tensors ({ex.format}) and compressing ({ex.compressor or 'default codec'})")
    if ex.format == "int8_zlib":
        blob = container.serialize(export.quantize_int8(arrays), compressor="zlib")
    elif ex.format in export.INT6_FORMATS:
        tensors, _ = export.quantize_int6(arrays, labels, ex, hessians=None)
        blob = export.serializer(tensors, ex, ex.compressor or "lzma")[2]
    else:
        raise ValueError(f"export.format={ex.format!r}: known formats are {', '.join(map(repr, export.FORMATS))}")
    say("packing the code")
    code = codebytes.code_bytes(cfg)
    n_params = sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params))
    return {"params": n_params, "weight_bytes": len(blob), "code_bytes": code, "total_bytes": len(blob) + code,
            "budget_bytes": int(ex.budget_bytes), "seconds": time.perf_counter() - t0}


def report(cfg) -> str:
    r = estimate(cfg, log=lambda m: print(m, flush=True))
    over = r["total_bytes"] - r["budget_bytes"]
    return (f"config: {cfg.name}  params: {r['params']:,}  export: {cfg.export.format} / "
            f"{cfg.export.compressor or 'default codec'}\n"
            f"estimated artifact: weights {r['weight_bytes']:,} B + code {r['code_bytes']:,} B = {r['total_bytes']:,} B "
            f"({'over' if over > 0 else 'under'} the {r['budget_bytes']:,} B budget by {abs(over):,} B; "
            f"Gaussian weights, round to nearest, {r['seconds']:.0f} s)")


FLAGS = cli.flag_values()  # the command's own flags (golf_jax/core/cli.py): importing this module sets none
_CONFIG = cli.required(cli.define_config(FLAGS), "a configs/*.py file, e.g. --config=configs/frontier.py")


def _main(args: list[str]) -> None:
    cli.positionals(args)
    try:
        export.check_config(_CONFIG.value.export)  # the export.* settings it estimates with, before the minutes
    except ValueError as e:
        raise UserError(str(e)) from e
    print(report(_CONFIG.value))


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
