"""`python -m golf_jax.train --config=configs/record.py`, shrunk by overrides only.

Runs the whole record pipeline on CPU: record model, Muon/AdamW with the record
recipe, EMA, late QAT, on-device Hessians, GPTQ int6 + lzma, round trip.
"""

import json
import os
import subprocess
import sys

from golf_jax.core.paths import REPO_ROOT

TINY = {
    "model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 4, "model.num_kv_heads": 2,
    "model.rope_dims": 8, "model.bigram_vocab_size": 256, "model.bigram_dim": 16, "model.ve_dim": 16,
    "model.ve_layers": "1", "model.xsa_last_n": 2, "model.compute_dtype": "float32",
    "train.seq_len": 128, "train.batch_tokens": 2048, "train.iterations": 30,
    "train.max_wallclock_seconds": 0, "train.val_every": 0, "train.log_every": 10,
    "eval.batch_tokens": 8192, "schedule.mode": "iterations", "schedule.warmdown_iters": 20,
    "opt.muon_momentum_warmup_steps": 10, "eval.max_tokens": 16385, "eval.ttt.chunk_tokens": 4096, "export.calib_seqs": 8,
    # The audit with the run's own weights and eval geometry (its compiles are the eval's); C3 is test_audit's.
    "audit.weights": "artifact", "audit.seq_len": 0, "audit.stride": 0, "audit.chunk_tokens": 0,
    "audit.tokens": 1024, "audit.flips": 1, "audit.probes": 0, "audit.normalization_positions": 8,
    "audit.batch_windows": 32,
}


def test_record_config_shrunk_by_overrides_trains_and_exports(tmp_path):
    argv = [sys.executable, "-m", "golf_jax.train", "--config=configs/record.py", f"--config.train.run_dir={tmp_path}"]
    argv += [f"--config.{k}={v}" for k, v in TINY.items()]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert summary["averaging"] == "ema(0.997)"
    assert summary["late_qat_step"] is not None  # lr_scale fell below 0.15 in the warmdown
    assert summary["export_format"] == "gptq_int6" and summary["compressor"] == "lzma"
    assert summary["calibration_on_val"] is False
    assert 0 < summary["roundtrip_val_bpb"] < 10
    # The record's eval stages: round trip, sliding s64, the reference's TTT run score-first, context SLOT.
    assert sorted(summary["eval"]) == ["roundtrip", "sliding", "slot", "ttt"]
    # The audit reran the legal procedure and every check passed: the score is official.
    assert summary["compliance"] == "val_bpb (official)" and summary["audit"]["verdict"] == "PASS"
    assert (run_dir / "audit.json").exists() and "stage audit:" in proc.stdout
    assert summary["eval"]["slot"]["mode"] == "context" and summary["eval"]["slot"]["compliant"]
    assert summary["eval"]["ttt"]["mode"] == "pr1318" and summary["eval"]["ttt"]["train_steps"] == 3
    assert summary["eval"]["sliding"]["val_bpb"] <= summary["roundtrip_val_bpb"] + 0.05
    losses = [json.loads(l)["loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert losses[-1] < losses[0] - 0.5
    assert "model: record" in proc.stdout
