"""configs/frontier.py (#1855) and configs/golf.py end to end at a tiny width on FineWeb-200
in official SP8192 shards: the frontier model, MuonEq-R with Polar Express, GPTQ with
per-role SDClip + int7 embedding + int8 gates + LQER, per-group compression, the round
trip and phased score-first TTT. Their audits run from the CLI (docs/perf.md): at the
audit's scale each takes minutes, more than CI can spend."""

import pytest
import test_sp8192_smoke

from configs import frontier, golf
from golf_jax import pipeline

pytestmark = pytest.mark.shared_data
pytest.importorskip("zpaq", reason="export.compressor=pergroup_zpaq needs `pip install zpaq` (in the dev extra)")


def tiny(cfg, shards, tmp_path):
    """The SP8192 smoke shrink (tests/test_sp8192_smoke.py), a longer val slice and a small phased TTT."""
    cfg = test_sp8192_smoke.tiny(cfg, shards, tmp_path)
    cfg.eval.max_tokens, cfg.eval.batch_tokens = 4097, 4096
    p = cfg.eval.phased
    p.batch_docs, p.prefix_docs, p.num_phases, p.lora_rank = 4, 4, 2, 4
    p.global_chunk_tokens, p.global_batch_seqs = 512, 8
    return cfg


def test_frontier_end_to_end(sp8192_shards, tmp_path):
    cfg = tiny(frontier.get_config(), sp8192_shards, tmp_path)
    summary = pipeline.run(cfg)
    assert summary["status"] == "ok", summary.get("error")
    assert summary["loop_on_step"] == 3
    assert summary["artifact_bytes"] <= cfg.export.budget_bytes
    assert summary["compressor"] == "pergroup_zpaq" and summary["gate_int8"] == 6
    assert list(summary["eval"]) == ["roundtrip", "ttt"]
    assert summary["compliance"] == pipeline.UNAUDITED and not summary["noncompliance"]


def test_golf_end_to_end(sp8192_shards, tmp_path):
    """The golf config, with its own change (MLP hidden 2064/512 of the width), at tiny scale."""
    cfg = tiny(golf.get_config(), sp8192_shards, tmp_path)
    summary = pipeline.run(cfg)
    assert summary["status"] == "ok", summary.get("error")
    assert list(summary["eval"]) == ["roundtrip", "ttt"] and summary["artifact_bytes"] <= cfg.export.budget_bytes
