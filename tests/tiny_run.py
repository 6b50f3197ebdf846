"""A tiny finished run directory without training: the smoke config shrunk, its model's initial
weights exported (config.json, data.json, params.msgpack, submission.py, model.golfjax,
summary.json, log.txt, metrics.jsonl), as the job writes them. For the entry-point tests."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import serialization

from configs import smoke
from golf_jax.submission import codebytes
from golf_jax import pipeline
from golf_jax import model as model_lib
from golf_jax.data import source
from golf_jax.quant import export
from golf_jax.core.rundir import RunDir

TINY = {"model.num_layers": 2, "model.model_dim": 64, "train.seq_len": 64, "train.batch_tokens": 512,
        "train.iterations": 2, "eval.max_tokens": 4097, "eval.batch_tokens": 1024, "audit.enabled": False}


def tiny_config(**overrides):
    cfg = smoke.get_config()
    for key, value in {**TINY, **overrides}.items():
        *groups, name = key.split(".")
        node = cfg
        for g in groups:
            node = node[g]
        node[name] = value
    return cfg


def make_run(root: Path, **overrides) -> Path:
    cfg = source.absolute_paths(tiny_config(**overrides))
    run = RunDir(root, cfg.name, cfg)
    data = pipeline.load_data(cfg)
    pipeline.record_data(cfg, data, run)
    model = model_lib.build_model(cfg.model)
    params = jax.device_get(model.init(jax.random.PRNGKey(0), np.zeros((1, cfg.train.seq_len), np.int32))["params"])
    (run.path / "params.msgpack").write_bytes(serialization.to_bytes(params))
    script = codebytes.script(cfg)
    (run.path / "submission.py").write_bytes(script)
    labels = model_lib.param_labels(cfg.model, params, cfg.compat)
    info = export.export_artifact(params, labels, cfg, run.path, len(script))
    run.log(f"step 1/2 train_loss 6.9 (data {data.data_dir})")
    run.metrics({"step": 1, "train_loss": 6.9, "lr_scale": 1.0})
    run.write_json("summary.json", {"status": "ok", "run_dir": str(run.path), "steps": 2, "val_bpb": 4.0,
                                    "val_loss": 6.9, "artifact_bytes": info.total_bytes, "code_bytes": len(script),
                                    "weight_bytes": info.weight_bytes, "compliance": "unaudited"})
    run.close()
    return run.path
