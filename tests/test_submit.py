"""`python -m golf_jax.records`: the record statistics, and the folder from small fake run dirs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from golf_jax.config import base_config
from golf_jax.records import __main__ as submit
from golf_jax.records.stats import record_test, verdict

# PR #1855 (the 1.0611 record): seeds 42 / 0 / 1234, against the leaderboard's 1.0810 of its day.
LOSS_1855 = [2.31944212, 2.32239991, 2.32423994]
BPB_1855 = [1.05989454, 1.06124613, 1.06208695]


def test_record_test_matches_a_hand_computation_and_upstreams_margins():
    test = record_test(LOSS_1855, BPB_1855, 1.0810)
    loss, bpb = np.array(LOSS_1855), np.array(BPB_1855)
    ratio = float(np.mean(loss / bpb))  # nats per bpb: ln 2 · bytes / tokens of the val set
    threshold = 1.0810 * ratio - 0.005
    s = math.sqrt(sum((x - loss.mean()) ** 2 for x in loss) / 2)
    t = (loss.mean() - threshold) / (s / math.sqrt(3))
    assert test.threshold_loss == pytest.approx(threshold, abs=1e-12)
    assert test.std_loss == pytest.approx(s, rel=1e-12)
    assert test.t == pytest.approx(t, rel=1e-9) and test.df == 2
    assert test.p == pytest.approx(sps.t.cdf(t, 2), rel=1e-9) and test.p < 0.01 and test.significant
    # #1855's README: "−0.01992 BPB / −0.04359 nats" against 1.0810 (it converted the rounded bpb delta).
    assert test.delta_bpb == pytest.approx(-0.01992, abs=1e-5)
    assert test.delta_nats == pytest.approx(-0.04359, abs=2e-5)
    assert test.delta_nats == pytest.approx(test.delta_bpb * ratio, rel=1e-9)
    assert verdict(test) is None


def test_record_test_refuses_what_the_rule_does_not_show():
    same = record_test(LOSS_1855, BPB_1855, 1.0611)  # against itself: no 0.005-nat gain
    assert not same.significant and same.p > 0.5 and "p = " in verdict(same)
    one = record_test(LOSS_1855[:1], BPB_1855[:1], 1.0810)
    assert math.isnan(one.p) and "at least 2 seeds" in verdict(one)
    assert one.to_json()["p"] is None
    with pytest.raises(ValueError, match="different val sets"):
        record_test(LOSS_1855, [1.05989454, 1.06124613, 1.07], 1.0810)


def _run_dir(root, seed: int, val_bpb: float, max_tokens: int = 0, **summary) -> str:
    """A finished run as golf_jax.train writes it (the files the submit reads), audited on 8xH100."""
    cfg = base_config()
    cfg.name, cfg.seed, cfg.model.num_layers, cfg.eval.stages = "frontier", seed, 11, "roundtrip,ttt"
    cfg.data.source, cfg.data.dir, cfg.data.tokenizer = "dir", "/data/fineweb10B_sp1024", "/data/sp1024.model"
    cfg.eval.max_tokens = max_tokens
    path = root / f"frontier-{seed}"
    path.mkdir()
    ratio = 2.1885  # val_loss / val_bpb, the same val set for every seed
    audit = {"verdict": "PASS", "seconds": 90.0,
             "checks": {"flip test": "PASS: bit-identical", "time budgets": "PASS: training 588.0 s, evaluation "
                        "470.0 s on 8xNVIDIA H100 80GB HBM3"}}
    base = {"status": "ok", "val_bpb": val_bpb, "val_loss": val_bpb * ratio, "final_stage": "ttt",
            "pre_quant_val_bpb": val_bpb + 0.004, "roundtrip_val_bpb": val_bpb + 0.012, "steps": 4900,
            "train_time_s": 588.0, "artifact_bytes": 15_900_000, "code_bytes": 38_000, "weight_bytes": 15_862_000,
            "compliance": "val_bpb (official)", "noncompliance": [], "audit": audit,
            "eval_budget": {"seconds": 470.0, "budget_seconds": 600.0, "fits": True,
                            "hardware": "8xNVIDIA H100 80GB HBM3"}}
    (path / "config.json").write_text(cfg.to_json_best_effort())
    (path / "summary.json").write_text(json.dumps({**base, **summary}))
    (path / "env.json").write_text(json.dumps({"argv": ["/x/golf_jax/train/__main__.py", "--config=configs/frontier.py",
                                                        f"--config.seed={seed}"], "python": "3.11.7", "jax": "0.10.2"}))
    (path / "code_version.json").write_text(json.dumps({"git_commit": "abc123", "git_dirty": False}))
    (path / "data.json").write_text(json.dumps({"train_shards": [{"name": "fineweb_train_000000.bin"}] * 80,
                                                "val_bytes": "lut"}))
    (path / "log.txt").write_text(f"seed {seed} log\n")
    (path / "submission.py").write_bytes(b"#coding:latin-1 packed\n")
    return str(path)


def test_submit_writes_a_record_folder(tmp_path, capsys):
    runs = [_run_dir(tmp_path, s, b) for s, b in ((42, 1.0540), (0, 1.0545), (1234, 1.0538))]
    out = tmp_path / "rec"
    assert submit.main(runs + ["--sota", "1.0611", "--out", str(out), "--author", "A", "--github_id", "a"]) == 0
    assert "RECORD" in capsys.readouterr().out
    sub = json.loads((out / "submission.json").read_text())
    assert sub["track"] == "10min_16mb" and sub["record"] and sub["non_record_reasons"] == []
    assert sub["seeds"] == [42, 0, 1234] and sub["seed_results"]["0"]["val_bpb"] == 1.0545
    assert sub["val_bpb"] == pytest.approx(np.mean([1.0540, 1.0545, 1.0538]), abs=1e-8)
    assert sub["p_value"] < 0.01 and sub["statistics"]["unit"] == "nats per token (val_loss)"
    assert sub["artifact_bytes_max"] == sub["bytes_total"] == 15_900_000 and sub["bytes_code"] == 38_000
    assert sub["seed_results"]["42"]["step_avg_ms"] == 120.0
    assert (out / "train_gpt.py").read_bytes() == b"#coding:latin-1 packed\n"
    assert (out / "train_seed1234.log").read_text() == "seed 1234 log\n"
    assert json.loads((out / "config_seed0.json").read_text())["seed"] == 0
    assert "jax==" in (out / "requirements.txt").read_text()
    text = (out / "README.md").read_text()
    assert text.startswith("# Record: golf_jax frontier")
    assert "python train_gpt.py train --config_json=config_seed42.json" in text
    assert "python -m golf_jax.train --config=configs/frontier.py --config.seed=1234" in text
    assert "| `model.num_layers` | `11` | `9` |" in text  # the techniques: what differs from the baseline
    assert "python -m golf_jax.data.download --variant=sp1024 --train_shards=80" in text


def test_submit_refuses_a_record_on_a_failed_audit_or_an_artifact_over_budget(tmp_path, capsys):
    failed = {"compliance": "non-compliant (reproduction)", "noncompliance": ["audit flip test: 12 scores moved"],
              "audit": {"verdict": "FAIL", "checks": {"time budgets": "PASS: on 8xH100"}}}
    runs = [_run_dir(tmp_path, 1, 1.0500, **failed), _run_dir(tmp_path, 2, 1.0501, artifact_bytes=16_000_123),
            _run_dir(tmp_path, 3, 1.0499)]
    out = tmp_path / "nonrec"
    assert submit.main(runs + ["--sota", "1.0611", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "NOT A RECORD" in printed
    sub = json.loads((out / "submission.json").read_text())
    assert sub["track"] == "non_record_16mb" and sub["record"] is False
    assert sub["p_value"] < 0.01  # the statistics alone would have made it one
    reasons = "\n".join(sub["non_record_reasons"])
    assert "seed 1: its score is 'non-compliant (reproduction)': audit flip test: 12 scores moved" in reasons
    assert "seed 2: artifact 16,000,123 B is over the 16,000,000 B limit by 123" in reasons
    assert "seed 3" not in reasons
    text = (out / "README.md").read_text()
    assert text.startswith("# Non-record submission") and "**Not a record**, because:" in text


def test_submit_refuses_cpu_timings_a_val_prefix_and_inconsistent_runs(tmp_path, capsys):
    cpu = {"audit": {"verdict": "PASS", "checks": {"time budgets": "SKIP: timings were measured on 8xcpu, not 8xH100"}}}
    runs = [_run_dir(tmp_path, s, 1.05, max_tokens=65537, **cpu) for s in (1, 2)]
    assert submit.main(runs + ["--sota", "1.0611", "--out", str(tmp_path / "cpu")]) == 1
    printed = capsys.readouterr().out
    assert "not shown on 8xH100 (SKIP: timings were measured on 8xcpu" in printed
    assert "scored on the first 65,537 val tokens (eval.max_tokens)" in printed
    assert submit.main(runs + ["--sota", "1.0611", "--out", str(tmp_path / "cpu")]) == 2  # never overwrites
    assert "exists and is not empty" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    odd = _run_dir(other, 3, 1.05, max_tokens=65537)
    cfg = json.loads((other / "frontier-3" / "config.json").read_text())
    cfg["model"]["num_layers"] = 12
    (other / "frontier-3" / "config.json").write_text(json.dumps(cfg))
    assert submit.main(runs + [odd, "--sota", "1.0611", "--out", str(tmp_path / "x")]) == 2
    assert "model.num_layers (11 vs 12)" in capsys.readouterr().err
    assert submit.main([runs[0], runs[0], "--sota", "1.0611", "--out", str(tmp_path / "y")]) == 2
    assert "seed 1 appears twice" in capsys.readouterr().err


def test_submit_refuses_train_val_overlap_from_the_runs_recorded_data(tmp_path, capsys):
    from golf_jax.data.prepare import write_shard

    data = tmp_path / "shards"
    write_shard(data / "fineweb_val_000000.bin", np.array([1, 5, 6, 1, 7, 8], np.uint16))
    write_shard(data / "fineweb_train_000000.bin", np.array([1, 9, 9, 1, 5, 6, 1, 4], np.uint16))
    runs = [_run_dir(tmp_path, s, b) for s, b in ((1, 1.0540), (2, 1.0545))]
    record = json.loads((tmp_path / "frontier-1" / "data.json").read_text())
    (tmp_path / "frontier-1" / "data.json").write_text(json.dumps({**record, "data_dir": str(data)}))
    assert submit.main(runs + ["--sota", "1.0611", "--out", str(tmp_path / "o")]) == 1
    reasons = "\n".join(json.loads((tmp_path / "o" / "submission.json").read_text())["non_record_reasons"])
    assert "seed 1: train and val share documents: 1 of 2 val documents are also train documents" in reasons
    assert "seed 2" not in reasons
