"""Every config × stage compiled for H100s ahead of time: one JSON per cell and the markdown table
of docs/perf.md ("Will it fit, and how fast at best?").

    JAX_PLATFORMS=cpu python bench/target_table.py --out build/target_table [--configs record,golf]
        [--stages train,sliding] [--target h100] [--devices 8] [--train_devices 1,8]

Cells already in --out are read back, not compiled again (delete a JSON to redo it). The eval
stages also find their largest batch that fits (a second compile at twice the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ["JAX_PLATFORMS"] = "cpu"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = ("baseline", "record", "sp8192_legal", "sp8192_prequant_ttt", "frontier", "golf")
STAGES = ("train", "eval", "sliding", "ttt", "slot", "calib")
REFERENCE_GPUS = 8  # the challenge's machine: the per-GPU train batch is the config's batch over 8


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/target_table")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--target", default="h100")
    ap.add_argument("--devices", type=int, default=8, help="GPUs for the eval stages")
    ap.add_argument("--train_devices", default="1,8", help="GPUs for the train step")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for config in a.configs.split(","):
        for stage in a.stages.split(","):
            devs = [int(d) for d in a.train_devices.split(",")] if stage == "train" else [a.devices]
            rows += [row(cell(out, config, stage, a.target, d)) for d in devs]
    print("| config | stage | GPUs | unit (batch) | peak GiB | XLA FLOPs/unit (÷ analytic) | roofline ms/unit "
          "| ceiling tokens/s | collective MiB/call | cuDNN calls | largest batch that fits | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
