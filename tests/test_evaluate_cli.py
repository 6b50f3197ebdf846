"""The whole job with every eval stage, then `python -m golf_jax.eval` on its artifact."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from golf_jax.core.paths import REPO_ROOT

TINY = {
    "model.num_layers": 2, "model.model_dim": 64, "train.seq_len": 128, "train.batch_tokens": 2048,
    "train.iterations": 12, "train.log_every": 6, "eval.max_tokens": 8193, "eval.batch_tokens": 4096,
    "eval.stages": "roundtrip,sliding,ttt", "eval.sliding.stride": 64, "eval.sliding.batch_windows": 16,
    "eval.ttt.chunk_tokens": 2048, "eval.ttt.epochs": 1, "eval.ttt.batch_seqs": 16,
    # The audit with the run's own weights and eval geometry (its compiles are the eval's); C3 is test_audit's.
    "audit.weights": "artifact", "audit.seq_len": 0, "audit.stride": 0, "audit.chunk_tokens": 0,
    "audit.tokens": 1024, "audit.flips": 1, "audit.probes": 0, "audit.vocab_probes": 0,
    "audit.normalization_positions": 8, "audit.batch_windows": 16,
}


def _cli(module: str, overrides: dict, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", module, "--config=configs/smoke.py", *extra]
    argv += [f"--config.{k}={v}" for k, v in overrides.items()]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def prequant_run(tmp_path_factory):
    """A run with pre-quant TTT on val (non-compliant) and all three eval stages."""
    root = tmp_path_factory.mktemp("runs")
    over = {**TINY, "train.run_dir": root, "eval.prequant_ttt.mode": "flat", "eval.prequant_ttt.epochs": 1,
            "eval.prequant_ttt.batch_seqs": 4}
    proc = _cli("golf_jax.train", over)
    (run_dir,) = root.iterdir()
    return over, run_dir, json.loads((run_dir / "summary.json").read_text()), proc.stdout


def test_pipeline_runs_named_stages_and_labels_prequant_ttt(prequant_run):
    _, run_dir, summary, stdout = prequant_run
    assert summary["status"] == "ok"
    for stage in ("data", "fit", "average", "prequant_ttt", "export", "load_artifact", "eval"):
        assert f"stage {stage}:" in stdout and stage in summary["stage_seconds"]
    assert list(summary["eval"]) == ["roundtrip", "sliding", "ttt"] and summary["final_stage"] == "ttt"
    assert summary["compliance"] == "non-compliant (reproduction)"
    assert any("prequant_ttt" in r for r in summary["noncompliance"])
    audit = summary["audit"]
    assert audit["verdict"] == "FAIL" and audit["checks"]["pre-quant TTT"].startswith("FAIL")
    assert audit["checks"]["flip test"].startswith("FAIL")  # weights trained on the slice move earlier scores
    for stage, r in summary["eval"].items():
        assert not r["compliant"] and any("second pass" in p for p in r["ledger_problems"])
        assert (run_dir / f"ledger_{stage}.json").exists()
    assert summary["eval_budget"]["fits"] in (True, False) and summary["eval_budget"]["budget_seconds"] == 600.0
    assert summary["prequant_ttt"]["steps"] == 16  # 64 sequences, 4 per step on the one CPU device


def test_evaluate_cli_reproduces_the_stages_from_the_artifact(prequant_run, tmp_path):
    over, run_dir, summary, _ = prequant_run
    proc = _cli("golf_jax.eval", {**over, "train.run_dir": tmp_path}, f"--artifact={run_dir / 'model.golfjax'}")
    lines = re.findall(r"^eval (\w+): val_bpb (\S+) \((\S+) s\)$", proc.stdout, re.M)
    assert [name for name, _, _ in lines] == ["roundtrip", "sliding", "ttt"]
    for name, bpb, _ in lines:
        assert abs(float(bpb) - summary["eval"][name]["val_bpb"]) < 5e-7  # printed with 6 decimals
    (eval_dir,) = tmp_path.iterdir()
    out = json.loads((eval_dir / "eval.json").read_text())
    assert out["status"] == "ok" and out["compliance"] == "non-compliant (reproduction)"  # the config says so
    assert out["audit"]["verdict"] == "FAIL" and (eval_dir / "audit.json").exists()
    assert "compliance: non-compliant (reproduction)" in proc.stdout
    # From the artifact alone, the ledgers of a legal procedure are clean.
    assert all(r["ledger_problems"] == [] for r in out["eval"].values())


def test_evaluate_cli_rejects_a_missing_artifact(tmp_path):
    argv = [sys.executable, "-m", "golf_jax.eval", "--config=configs/smoke.py", f"--artifact={tmp_path / 'x'}",
            f"--config.train.run_dir={tmp_path}"]
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no such file" in proc.stderr
