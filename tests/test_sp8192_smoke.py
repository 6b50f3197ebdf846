"""Both SP8192 configs end to end at a tiny width on real FineWeb text with the official
SP8192 tokenizer: shuffled loader, depth recurrence switched on mid-run, MuonEq-R, SDClip
GPTQ with the tied embedding's LM-head Hessian, brotli, the round trip and their eval."""

import pytest

from configs import sp8192_legal, sp8192_prequant_ttt
from golf_jax import pipeline

pytestmark = pytest.mark.shared_data


def tiny(cfg, shards, tmp_path):
    data_dir, tokenizer = shards
    cfg.data.dir, cfg.data.tokenizer = str(data_dir), str(tokenizer)
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.rope_dims = 6, 64, 4, 2, 8
    m.loop_start, m.loop_end, m.parallel_residual_start, m.xsa_last_n = 2, 3, 4, 6
    m.compute_dtype = "float32"
    t = cfg.train
    t.seq_len, t.batch_tokens, t.iterations, t.max_wallclock_seconds = 64, 8 * 64, 6, 0.0
    t.val_every, t.log_every, t.run_dir = 0, 2, str(tmp_path)
    cfg.export.calib_seqs = 16
    e = cfg.eval
    e.max_tokens, e.batch_tokens = 2049, 2048
    e.sliding.stride, e.sliding.batch_windows = 32, 8
    e.ttt.chunk_tokens, e.ttt.batch_seqs, e.ttt.epochs = 512, 8, 1
    e.prequant_ttt.epochs, e.prequant_ttt.chunk_tokens = 2, 512
    cfg.audit.enabled = False
    return cfg


def check_common(summary, cfg):
    assert summary["status"] == "ok", summary.get("error")
    assert summary["loop_on_step"] == 3  # step/iterations = 3/6 is the first ≥ 0.35
    assert summary["artifact_bytes"] <= cfg.export.budget_bytes
    assert summary["compressor"] == "brotli" and summary["embed_quant"] == "gptq"
    assert summary["gptq_fallbacks"] == 0
    log = (pipeline.Path(summary["run_dir"]) / "log.txt").read_text()
    assert "layer loop on at step 3: encoder [0, 1, 2, 3, 2] decoder [3, 2, 3, 4, 5]" in log
    assert "compiled train steps (without and with the layer loop)" in log


def test_sp8192_legal_end_to_end(sp8192_shards, tmp_path):
    cfg = tiny(sp8192_legal.get_config(), sp8192_shards, tmp_path)
    summary = pipeline.run(cfg)
    check_common(summary, cfg)
    assert list(summary["eval"]) == ["roundtrip", "sliding", "ttt"]
    assert summary["compliance"] == pipeline.UNAUDITED and not summary["noncompliance"]


def test_sp8192_prequant_ttt_end_to_end(sp8192_shards, tmp_path):
    cfg = tiny(sp8192_prequant_ttt.get_config(), sp8192_shards, tmp_path)
    cfg.eval.stages = "roundtrip"  # the sliding stage is covered by the legal run
    summary = pipeline.run(cfg)
    check_common(summary, cfg)
    assert summary["prequant_ttt"]["epochs"] == 2
    assert summary["compliance"] == pipeline.NONCOMPLIANT
    assert any("prequant_ttt.mode=parallel" in r for r in summary["noncompliance"])
