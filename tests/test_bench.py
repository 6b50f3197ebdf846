"""`python -m golf_jax.bench`: every stage family at a tiny width reports the JSON fields,
--compare times two settings alternately, and eval.profile writes a trace.

All on one CPU device (the bench takes any mesh): compiles are the cost here.
"""

from __future__ import annotations

import gzip
import json
import statistics
import subprocess
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from configs import smoke
from golf_jax.core import compile_cache
from golf_jax.core import mesh as mesh_lib
from golf_jax.bench import flops, run, trace_ops
from golf_jax.data.tokenizer import ByteLUT
from golf_jax.core.errors import UserError
from golf_jax.eval import profile
from golf_jax.core.paths import REPO_ROOT

TINY = {"model.num_layers": 2, "model.model_dim": 32, "model.num_heads": 2, "model.num_kv_heads": 1,
        "model.vocab_size": 256, "model.compute_dtype": "float32", "train.seq_len": 32, "train.batch_tokens": 256,
        "eval.batch_tokens": 256, "eval.sliding.stride": 8, "eval.sliding.batch_windows": 4,
        "eval.ttt.chunk_tokens": 64, "eval.ttt.batch_seqs": 2, "eval.ttt.epochs": 1}
# Per layer: c_q 32·32, c_k and c_v 32·16 (one KV head of 16), proj 32·32, fc 32·64, mlp proj 64·32; head 256·32.
N_MATMUL = 2 * (1024 + 512 + 512 + 1024 + 2048 + 2048) + 256 * 32
FIELDS = ("stage", "unit", "units_timed", "seconds_per_unit", "tokens_per_s", "targets_per_s", "flops_per_unit",
          "flops", "mfu", "compile_s", "peak_memory_bytes", "memory", "settings")


def tiny(**more):
    return run.apply_overrides(smoke.get_config(), [f"{k}={v}" for k, v in {**TINY, **more}.items()])


@pytest.fixture(scope="module")
def mesh1():
    return mesh_lib.make_mesh(jax.devices()[:1])


def check(r: dict, stage: str, unit: str) -> None:
    assert r["stage"] == stage and r["unit"] == unit and set(FIELDS) <= set(r)
    json.dumps(r)  # what --json writes
    assert r["seconds_per_unit"] > 0 and r["units_timed"] >= 1
    if r["tokens_per_unit"] is not None:
        assert r["tokens_per_s"] == pytest.approx(r["tokens_per_unit"] / r["seconds_per_unit"])


def test_train_stage_reports_step_time_flops_mfu_and_memory(mesh1):
    r = run.run_stage(tiny(), "train", run.Timing(calls=2, warmup=1, peak_tflops=1.0), mesh=mesh1)
    check(r, "train", "step")
    assert r["settings"]["n_matmul"] == N_MATMUL  # counted by hand from the model's shapes
    per_token = 6 * N_MATMUL + 6 * 2 * 32 * 32  # 6·N + 6·L·T·D
    assert r["tokens_per_unit"] == 256 and r["flops_per_unit"] == pytest.approx(256 * per_token)
    assert r["mfu"] == pytest.approx(r["flops_per_s"] / 1e12)  # one device at a stated 1 TFLOP/s
    assert r["compile_s"] > 0 and r["memory"]["train_step"]["argument"] > 0
    assert r["peak_memory_bytes"] == r["memory"]["train_step"]["peak"] > 0


def test_flops_are_the_reference_figures_for_the_record_model():
    """docs/reference-notes.md#flops-mfu: N = 27,615,232, 234.9 MFLOP per training token, 76.2 per forward token."""
    from configs import record

    cfg = record.get_config()
    params = _abstract(cfg)
    assert flops.matmul_params(cfg, params) == 27_615_232
    assert flops.train_per_token(cfg, params, 2048) / 1e6 == pytest.approx(234.9, abs=0.05)
    assert flops.forward(cfg, params, 2048, 1, 2048) / 2048 / 1e6 == pytest.approx(76.2, abs=0.05)


def test_eval_stages_report_windows_chunks_and_xla_agrees_on_the_forward_flops(mesh1):
    cfg = tiny(**{"model.num_layers": 1})  # one block: a quicker compile
    r = run.run_stage(cfg, "eval", run.Timing(calls=1), mesh=mesh1)
    check(r, "eval", "batch")
    assert r["targets_per_unit"] == 256 and r["mfu"] is None  # a CPU has no known peak
    # XLA's own count of the compiled forward: our matmuls and causal attention, plus what we leave out
    # (elementwise work, the masked half of attention) — a few percent at this shape, never less.
    assert 1.0 <= r["xla_flops_per_device_call"]["eval_step"] / r["flops_per_unit"] < 1.35

    r = run.run_stage(cfg, "sliding", run.Timing(calls=2), mesh=mesh1)
    check(r, "sliding", "window")
    assert (r["units_timed"], r["tokens_per_unit"], r["targets_per_unit"]) == (8, 32, 8)
    assert r["flops_per_unit"] == pytest.approx(flops.forward(cfg, _abstract(cfg), 32, 1, 8))

    r = run.run_stage(cfg, "ttt", run.Timing(calls=1, warmup=1), mesh=mesh1)
    check(r, "ttt", "chunk")
    s = r["settings"]
    assert (r["targets_per_unit"], s["windows_per_chunk"], s["predict_batches"], s["train_steps"]) == (64, 8, 2, 1)
    assert r["train_steps_done"] == 2 * s["train_steps"] and set(r["memory"]) == {"predict", "train_step"}

    phased = {"eval.ttt.mode": "phased", "eval.phased.chunk_size": 8, "eval.phased.batch_docs": 2,
              "eval.phased.lora_rank": 4, "eval.phased.prefix_docs": 0}
    r = run.run_stage(tiny(**{"model.num_layers": 1, **phased}), "ttt", run.Timing(calls=1, warmup=1), mesh=mesh1)
    check(r, "ttt", "block")  # one block of phased TTT: 2 documents' chunks of 8 from full 32-token windows
    assert (r["targets_per_unit"], r["tokens_per_unit"], r["settings"]["window"]) == (16, 64, 32)
    assert r["lora_steps_done"] == 2 and set(r["memory"]) == {"lora_forward", "lora_step"}

    r = run.run_stage(cfg, "slot", run.Timing(calls=1), mesh=mesh1)
    check(r, "slot", "window")
    assert r["settings"]["objective_positions"] == 31 and r["mean_evaluations"] >= 1



def test_slot_starts_its_carried_delta_replicated_like_the_delta_it_returns(mesh1):
    """Found by the bench: a single-device first δ made SLOT's second batch compile again."""
    from golf_jax import model as model_lib
    from golf_jax.eval.slot import stage as slot

    cfg = tiny()
    evaluator = slot.Slot(model_lib.build_model(cfg.model), None, mesh1, cfg.eval.slot, 32, 8)  # builds, no compile
    assert evaluator.zero_delta().sharding == mesh_lib.replicated(mesh1)


def _abstract(cfg):
    from golf_jax import model as model_lib

    model = model_lib.build_model(cfg.model)
    return jax.eval_shape(lambda k: model.init(k, np.zeros((1, 8), np.int32))["params"], jax.random.PRNGKey(0))


def test_quant_stages_time_gptq_per_matrix_and_the_export(mesh1):
    cfg = tiny(**{"export.format": "gptq_int6"})
    r = run.run_stage(cfg, "gptq", mesh=mesh1)
    check(r, "gptq", "matrix")
    assert r["units_timed"] == r["settings"]["matrices"] == 12 and r["settings"]["params"] == N_MATMUL - 256 * 32
    assert r["flops_per_unit"] is None and r["mfu"] is None and r["memory"] == {}
    r = run.run_stage(cfg, "export", mesh=mesh1)
    check(r, "export", "artifact")
    assert r["artifact_bytes"] == r["weight_bytes"] + r["code_bytes"] and r["weight_bytes"] > 10_000


def test_compare_alternates_a_and_b_and_reports_their_ratio(mesh1):
    a = tiny()  # GPTQ: a host stage, nothing to compile; the ratio path is every stage's
    b = run.config_b(a, "export.gptq_clip=sdclip,export.gptq_block=16", [])
    out = run.compare(a, b, "gptq", rounds=3, mesh=mesh1)
    assert len(out["rounds"]) == 3 and all(len(r) == 2 for r in out["rounds"])
    assert out["round_ratios"] == pytest.approx([tb / ta for ta, tb in out["rounds"]])  # same units per call
    assert out["ratio_b_over_a"] == statistics.median(out["round_ratios"])
    assert (out["a"]["settings"]["clip"], out["b"]["settings"]["clip"]) == ("percentile", "sdclip")
    # B as another config file gets A's command-line overrides.
    base = run.config_b(a, "configs/baseline.py", ["--config.model.num_layers=2", "--stage=eval"])
    assert base.name == "baseline" and base.model.num_layers == 2 and base.model.model_dim == 512
    with pytest.raises(UserError, match="unknown config key 'model.num_layer'"):
        run.config_b(a, "model.num_layer=3", [])
    with pytest.raises(UserError, match="is not a int"):
        run.apply_overrides(a, ["model.num_layers=two"])


def test_eval_profile_traces_the_batches_asked_for(tmp_path, mesh1):
    from golf_jax import model as model_lib
    from golf_jax.eval import stages

    cfg = tiny(**{"eval.stages": "sliding", "eval.profile": "sliding:1:3", "model.num_layers": 1})
    model = model_lib.build_model(cfg.model)
    params = jax.device_put(model.init(jax.random.PRNGKey(0), np.zeros((1, 32), np.int32))["params"],
                            mesh_lib.replicated(mesh1))
    val = np.random.default_rng(0).integers(0, 256, 32 + 8 * 20 + 1).astype(np.int32)  # 21 windows: 6 batches
    lut = ByteLUT(np.ones(256, np.int16), np.zeros(256, bool), np.zeros(256, bool))
    stages.run_stages(cfg, model, params, stages.Val(val, lut), mesh1,
                      run=SimpleNamespace(path=tmp_path, is_writer=False), log=lambda *_: None)
    (trace,) = (tmp_path / "profile_sliding").glob("plugins/profile/*/*.trace.json.gz")
    events = json.loads(gzip.open(trace).read())["traceEvents"]
    steps = sorted(int(e["args"]["step_num"]) for e in events if e.get("name") == "eval_sliding")
    assert steps == [1, 2]
    for bad, why in (("roundtrip", "no batch hook"), ("ttt:0:2", "not in eval.stages"), ("sliding:3:1", "START < STOP"),
                     ("sliding:x", "STAGE:START:STOP")):
        with pytest.raises(ValueError, match=why):
            profile.parse(bad, ["sliding"])


def test_trace_ops_sums_op_time_by_origin(tmp_path):
    run_dir = tmp_path / "plugins" / "profile" / "2026_12_02"
    run_dir.mkdir(parents=True)
    events = [{"ph": "M", "pid": 1, "tid": 2, "name": "thread_name", "args": {"name": "tf_XLAEigen"}},
              {"ph": "X", "pid": 1, "tid": 2, "name": "fusion.1", "dur": 300.0},
              {"ph": "X", "pid": 1, "tid": 2, "name": "fusion.2", "dur": 100.0},
              {"ph": "X", "pid": 1, "tid": 2, "name": "fusion.3", "dur": 600.0},
              {"ph": "X", "pid": 1, "tid": 2, "name": "ynn_fusion.4", "dur": 200.0},
              {"ph": "X", "pid": 1, "tid": 2, "name": "ynn_fusion.5", "dur": 100.0},
              {"ph": "X", "pid": 1, "tid": 2, "name": "ThunkExecutor::Execute", "dur": 5000.0}]
    (run_dir / "vm.trace.json.gz").write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))
    (tmp_path / "step.hlo.txt").write_text(
        '  %fusion.1 = f32[4]{0} fusion(%a), metadata={op_name="jit(f)/jvp(GPT.loss)/blocks_0/mlp/dot_general"}\n'
        '  %fusion.2 = f32[4]{0} fusion(%a), metadata={op_name="jit(f)/jvp(GPT.loss)/blocks_1/mlp/dot_general"}\n'
        '  %ynn_fusion.4 = f32[4]{0} fusion(%a), kind=kCustom, calls=%fused_computation.4\n'
        '  %ynn_fusion.5 = f32[4]{0} fusion(%a), kind=kCustom, calls=%fused_computation.5\n'
        '  ROOT %fusion.3 = f32[4]{0} fusion(%a), metadata={op_name="jit(f)/transpose(jvp(GPT.loss))/blocks_1/mul"}\n'
        '}\n\n%fused_computation.4 (param_0: f32[4]) -> f32[4] {\n'
        '  ROOT %dot.9 = f32[4]{0} dot(%param_0), metadata={op_name="jit(f)/jvp(GPT.loss)/blocks_2/attn/dot_general"}\n'
        '}\n\n%fused_computation.5 (param_1: f32[4]) -> f32[4] {\n'
        '  %dot.10 = f32[4,4]{1,0} dot(%param_1, %param_1)\n'
        '  ROOT %reduce.11 = f32[4]{0} reduce(%dot.10), metadata={op_name="jit(f)/jvp(GPT.loss)/blocks_2/attn/reduce_sum"}\n')
    rows = trace_ops.top_ops(tmp_path)
    # ynn fusions have no metadata of their own: they are named by their fused computation's ROOT,
    # and one whose ROOT is not its only dot says so
    assert [(r["op"], r["ms"], r["count"]) for r in rows] == [
        ("backward blocks_*/mul", 0.6, 1), ("forward blocks_*/mlp/dot_general", 0.4, 2),
        ("forward blocks_*/attn/dot_general", 0.2, 1), ("forward blocks_*/attn/reduce_sum (fused with 1 dot)", 0.1, 1)]
    assert rows[0]["share"] == pytest.approx(0.6 / 1.3)


def test_compile_cache_dir_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    assert compile_cache.cache_dir() == compile_cache.DEFAULT_DIR
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.cache_dir() is None and compile_cache.enable() is None
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path))
    before = jax.config.jax_compilation_cache_dir
    try:
        assert compile_cache.enable() == tmp_path and jax.config.jax_compilation_cache_dir == str(tmp_path)
    finally:
        jax.config.update("jax_compilation_cache_dir", before)  # nothing compiled in between
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere")
    assert str(compile_cache.cache_dir()) == "/elsewhere"


def test_gpu_standing_script_parses():
    proc = subprocess.run(["bash", "-n", str(REPO_ROOT / "bench" / "gpu_standing.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _xla_flags_ab():
    import importlib.util

    spec = importlib.util.spec_from_file_location("xla_flags_ab", REPO_ROOT / "bench" / "xla_flags_ab.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_xla_flags_ab_pairs_each_flag_with_its_rounds_baseline(capsys, tmp_path):
    ab = _xla_flags_ab()
    assert ab.plan(["latency_hiding", "autotune_0"], 2) == [
        (0, "baseline"), (0, "latency_hiding"), (0, "autotune_0"),
        (1, "baseline"), (1, "latency_hiding"), (1, "autotune_0")]
    table = ab.ratios({"baseline": [2.0, 4.0], "latency_hiding": [1.0, 3.0], "autotune_0": [0.0, 6.0]})
    assert table["latency_hiding"] == {"ratios": [0.5, 0.75], "median": 0.625}
    assert table["autotune_0"] == {"ratios": [1.5], "median": 1.5}  # a failed run (0.0) drops out
    out_dir = tmp_path / "ab"
    assert ab.main(["--dry_run", f"--out={out_dir}", "--rounds=1", "--flags=no_triton_gemm", "--",
                    "--stage=eval"]) == 0
    out = capsys.readouterr().out  # each flag on top of the environment's XLA_FLAGS
    assert out.count("--stage=eval") == 2 and "--xla_gpu_enable_triton_gemm=false'" in out
    assert not out_dir.exists()
    assert ab.main(["--dry_run", "--flags=latency"]) == 2  # one line (tests/test_entrypoints.py: the scripts)
    assert "error: --flags: unknown ['latency']" in capsys.readouterr().err


def test_timed_calls_print_progress_into_a_file(capsys, monkeypatch):
    """A slow stage (a TTT chunk, an export) speaks while it is timed: a line of tqdm's figures on
    stderr every PROGRESS_EVERY seconds when the output is not a terminal."""
    import time

    from golf_jax.bench import measure

    monkeypatch.setattr(measure, "PROGRESS_EVERY", 0.02)
    bench = measure.Bench("ttt", "chunk", 1, lambda: time.sleep(0.03), "none", compiled={"x": None})
    assert measure.timed(bench, calls=4, warmup=1) >= 0.03
    err = capsys.readouterr().err
    assert "bench ttt:" in err and "bench ttt warm-up" in err, err
