"""The packed submission script evaluates an artifact from its embedded sources alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax
import numpy as np

from golf_jax import model as model_lib
from golf_jax import codebytes, pack, pipeline
from golf_jax.config import base_config
from golf_jax.data import shards
from golf_jax.quant import export

T = 32


def test_code_bytes_is_the_script_length(tmp_path):
    script = pack.build_script()
    assert codebytes.code_bytes() == len(script)
    assert pack.build_script() == script  # deterministic
    out = tmp_path / "submission.py"
    assert pack.main(["--artifact", str(out), "--out", str(out)]) == 0
    assert out.read_bytes() == script


def test_packed_script_evaluates_artifact_like_in_process(tmp_path, shared_data):
    work = tmp_path / "sub"
    work.mkdir()
    cfg = base_config()
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.compute_dtype = 1, 64, 4, 2, "float32"
    cfg.train.seq_len, cfg.eval.batch_tokens = T, 16 * T
    cfg.eval.stages = "roundtrip,sliding"
    cfg.eval.sliding.stride = 16
    cfg.export.format = "rtn_int6"
    model = model_lib.build_model(m)
    params = jax.device_get(model.init(jax.random.PRNGKey(0), np.zeros((1, T), np.int32))["params"])
    params = jax.tree.map(lambda a: a + np.float32(0.02) * np.sign(a + 0.5), params)
    labels = model_lib.param_labels(cfg.model, params)
    info = export.export_artifact(params, labels, cfg, work, codebytes.code_bytes())
    rng = np.random.default_rng(0)
    shards.write_shard(work / "fineweb_val_000000.bin", rng.integers(0, 1024, 40 * T + 1).astype(np.uint16))
    tok = shared_data / "tokenizers" / "fineweb_1024_bpe.model"
    (work / "config.json").write_text(cfg.to_json_best_effort())
    (work / "submission.py").write_bytes(pack.build_script())

    cfg.data.source, cfg.data.dir, cfg.data.tokenizer = "dir", str(work), str(tok)
    want = {k: r.val_bpb for k, r in pipeline.evaluate_artifact(cfg, info.path).items()}

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "submission.py", "eval", "--artifact", "model.golfjax", "--config-json", "config.json",
         "--data-dir", ".", "--tokenizer", str(tok)],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"golf_jax from .*golf_jax_sub_", proc.stderr), proc.stderr[-2000:]
    got = {m.group(1): float(m.group(2)) for m in re.finditer(r"eval (\w+): val_loss \S+ val_bpb (\S+)", proc.stdout)}
    assert got == want, (got, want)  # the same stages from the same config, bit for bit
