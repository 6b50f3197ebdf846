"""Every config × stage compiled for H100s ahead of time: one JSON per cell and the markdown table
of docs/perf.md ("Will it fit, and how fast at best?").

    python bench/target_table.py --out=build/target_table [--configs=record,golf]
        [--stages=train,sliding] [--target=h100] [--devices=8] [--train_devices=1,8] [--debug]

Cells already in --out are read back, not compiled again (delete a JSON to redo it). The eval
stages also find their largest batch that fits (a second compile at twice the rows).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # a program of its own: it compiles for the target on this host's CPU
    os.environ["JAX_PLATFORMS"] = "cpu"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from absl import flags  # noqa: E402 (after the repository is on the path)

from golf_jax.core import cli  # noqa: E402
from golf_jax.core.errors import UserError  # noqa: E402

CONFIGS = ("baseline", "record", "sp8192_legal", "sp8192_prequant_ttt", "frontier", "golf")
STAGES = ("train", "eval", "sliding", "ttt", "slot", "calib")
REFERENCE_GPUS = 8  # the challenge's machine: the per-GPU train batch is the config's batch over 8

FLAGS = cli.flag_values()
_OUT = flags.DEFINE_string("out", "build/target_table", "Folder of the cells' JSON (read back when there).",
                           flag_values=FLAGS)
_CONFIGS = flags.DEFINE_list("configs", list(CONFIGS), "configs/*.py names, comma-separated.", flag_values=FLAGS)
_STAGES = flags.DEFINE_list("stages", list(STAGES), f"Stages, comma-separated, of: {', '.join(STAGES)}.",
                            flag_values=FLAGS)
_TARGET = flags.DEFINE_string("target", "h100", "The GPU compiled for (golf_jax/bench/gpu_targets.py).",
                              flag_values=FLAGS)
_DEVICES = flags.DEFINE_integer("devices", 8, "GPUs for the eval stages.", lower_bound=1, flag_values=FLAGS)
_TRAIN_DEVICES = flags.DEFINE_list("train_devices", ["1", "8"], "GPUs for the train step, comma-separated.",
                                   flag_values=FLAGS)


def _config(name: str):
    from golf_jax.bench.run import load_config

    return load_config(str(ROOT / "configs" / f"{name}.py"))


def cell(out: Path, config: str, stage: str, target: str, devices: int) -> dict:
    """One stage on `devices` GPUs; the train step at the per-GPU batch of 8 GPUs whatever the count
    (one GPU cannot take the global batch: there is no gradient accumulation)."""
    from golf_jax.bench import target as target_lib

    path = out / f"{config}.{stage}.{target}x{devices}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    try:
        cfg = _config(config)
        per_gpu = int(cfg.train.batch_tokens) // (REFERENCE_GPUS * int(cfg.train.seq_len))
        r = target_lib.run_target(cfg, stage, target, devices, size_batch=stage != "train",
                                  per_device_seqs=per_gpu if stage == "train" else 0)
    except Exception as e:  # a cell that does not compile is a finding, not the end of the table
        r = {"config": config, "stage": stage, "devices": devices, "error": f"{type(e).__name__}: {e}"[:400]}
    r["wall_s"] = time.perf_counter() - t0
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(r, indent=1))
    tmp.replace(path)
    print(f"{config} {stage} ×{devices}: {r.get('peak_gib', float('nan')):.2f} GiB, "
          f"{r.get('bound_ms_per_unit', float('nan')):.3f} ms/{r.get('unit', '?')} [{r['wall_s']:.0f} s]"
          + (f" ERROR {r['error']}" if "error" in r else ""), flush=True)
    return r


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['config']} | {r['stage']} | {r['devices']} | does not compile: {r['error'][:120]} ||||||"
    coll = sum(v["bytes"] for p in r["programs"].values() for v in p["collectives"].values())
    cud = sum(p["cudnn_attention_calls"]["forward"] + p["cudnn_attention_calls"]["backward"]
              for p in r["programs"].values())
    fit = r.get("sizing", {}).get("largest_rows")
    ceil = r["ceiling_tokens_per_s"]
    return (f"| {r['config']} | {r['stage']} | {r['devices']} | {r['unit']} ({r['settings'].get('rows', r['settings'].get('batch', ''))}) "
            f"| {r['peak_gib']:.2f} | {r['xla_flops_per_unit']:.3g} ({r['xla_over_analytic']:.2f}×) "
            f"| {r['bound_ms_per_unit']:.3f} | {'n/a' if ceil is None else f'{ceil / 1e6:.2f} M'} "
            f"| {coll / 2**20:.0f} | {cud:.0f} | {'' if fit is None else fit} | {r['compile_s']:.0f} |")


def _main(args: list[str]) -> None:
    cli.positionals(args)
    try:
        train_devices = [int(d) for d in _TRAIN_DEVICES.value]
    except ValueError:
        raise UserError(f"--train_devices={','.join(_TRAIN_DEVICES.value)}: give GPU counts, e.g. 1,8") from None
    missing = [c for c in _CONFIGS.value if not (ROOT / "configs" / f"{c}.py").is_file()]
    if missing:
        raise UserError(f"--configs: no configs/{missing[0]}.py; pass names of configs/*.py, e.g. record,golf")
    unknown = [s for s in _STAGES.value if s not in STAGES]
    if unknown:
        raise UserError(f"--stages: unknown {unknown}; pass some of {','.join(STAGES)}")
    from golf_jax.bench import gpu_targets

    gpu_targets.spec_of(_TARGET.value)  # an unknown --target is one line, not a table of failed cells
    cli.check_output(_OUT.value, "--out", folder=True)
    out = Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for config in _CONFIGS.value:
        for stage in _STAGES.value:
            devs = train_devices if stage == "train" else [_DEVICES.value]
            rows += [row(cell(out, config, stage, _TARGET.value, d)) for d in devs]
    print("| config | stage | GPUs | unit (batch) | peak GiB | XLA FLOPs/unit (÷ analytic) | roofline ms/unit "
          "| ceiling tokens/s | collective MiB/call | cuDNN calls | largest batch that fits | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
