"""`python -m golf_jax.bench --target=h100`: stages compiled for H100s that are not here.

The compiles need the CUDA plugin (`pip install "jax[cuda12]==<jax version>"`, several GB; no
GPU): without it those tests skip with that reason, and .ci/run installs it and runs this file
as its own step. The HLO counting (golf_jax/bench/hlo_stats.py) is checked on hand-written HLO
with figures worked out by hand, and needs nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from configs import smoke
from golf_jax.bench import gpu_targets, hlo_stats, run
from golf_jax.core.errors import UserError

# bf16 (cuDNN's flash attention takes bf16/fp16), head dim 32, two layers.
TINY = {"model.num_layers": 2, "model.model_dim": 64, "model.num_heads": 2, "model.num_kv_heads": 1,
        "model.vocab_size": 256, "model.compute_dtype": "bfloat16", "train.seq_len": 64,
        "train.batch_tokens": 64 * 16, "eval.sliding.stride": 16, "eval.sliding.batch_windows": 8,
        "eval.slot.max_iter": 2}


def tiny():
    return run.apply_overrides(smoke.get_config(), [f"{k}={v}" for k, v in TINY.items()])


@pytest.fixture(scope="module")
def plugin():
    try:
        gpu_targets.check_plugin()
    except UserError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("devices", [1, 8])
def test_train_step_compiles_for_h100s_with_cudnn_attention_and_its_collectives(plugin, devices):
    from golf_jax.bench import target

    r = target.run_target(tiny(), "train", "h100", devices)
    step = r["programs"]["train_step"]
    assert 0 < r["peak_memory_bytes"] == step["memory"]["peak"] and r["fits"]
    # model.attention_impl="auto" picks cuDNN for the GPU it compiles for, though jax runs on the CPU here.
    assert step["cudnn_attention_calls"] == {"forward": 2, "backward": 2}
    kinds = set(step["collectives"])
    assert ("all-reduce" in kinds) == (devices > 1) and (not kinds) == (devices == 1)
    # XLA counts what the analytic count does (matmuls, attention inside cuDNN) and more (elementwise, Muon).
    assert r["xla_over_analytic"] > 0.95 and r["bound_ms_per_unit"] > 0
    assert r["ceiling_tokens_per_s"] == pytest.approx(64 * 16 / (r["bound_ms_per_unit"] / 1e3))
    json.dumps(r)


@pytest.mark.parametrize("devices", [1, 8])
def test_sliding_stage_compiles_for_h100s_with_cudnn_and_no_collective(plugin, devices):
    from golf_jax.bench import target

    r = target.run_target(tiny(), "sliding", "h100", devices)
    predict = r["programs"]["predict"]
    assert predict["cudnn_attention_calls"] == {"forward": 2, "backward": 0} and predict["collectives"] == {}
    assert r["unit"] == "window" and r["peak_memory_bytes"] > 0 and r["ceiling_targets_per_s"] > 0


def test_auto_attention_falls_back_to_chunked_where_cudnn_refuses_on_the_gpu(plugin):
    """fp32 inputs: cuDNN's flash attention refuses them while tracing, and "auto" answers with the
    chunked path in the H100 program; bf16 gets cuDNN (the train test above)."""
    from golf_jax.bench import target

    spec = gpu_targets.GPUS["h100"]
    cfg = run.apply_overrides(tiny(), ["model.compute_dtype=float32"])
    plan = target.plan_sliding(cfg, gpu_targets.target_mesh(spec, 1))
    r = target.compile_plan(plan, spec, 1)["predict"]
    assert r["cudnn_attention_calls"] == {"forward": 0, "backward": 0} and r["memory"]["peak"] > 0


def test_auto_keeps_only_the_chosen_paths_residuals(plugin):
    """A VJP through "auto" for an H100 holds what cuDNN's path needs, no more: phased TTT's LoRA
    forward returns its VJP, and a choice by `lax.platform_dependent` kept both paths' residuals
    there (zeros for the path not taken: every layer's chunked scores, 1.8 TiB per H100 at
    #1855's batch)."""
    import jax
    import jax.numpy as jnp

    from golf_jax.core import mesh as mesh_lib
    from golf_jax.model import layers

    mesh = gpu_targets.target_mesh(gpu_targets.GPUS["h100"], 1)
    q, kv = (jax.ShapeDtypeStruct((2, 256, n, 32), jnp.bfloat16, sharding=mesh_lib.data_sharded(mesh)) for n in (4, 2))

    def residual_bytes(impl):
        pull = jax.eval_shape(lambda q, k: jax.vjp(lambda q: layers.causal_attention(q, k, k, impl), q)[1], q, kv)
        return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(pull))

    assert residual_bytes("auto") == residual_bytes("cudnn") < residual_bytes("chunked")


def test_auto_attention_stays_chunked_where_the_program_runs_on_the_cpu():
    import jax

    from golf_jax.core import mesh as mesh_lib
    from golf_jax.bench import target

    plan = target.plan_sliding(tiny(), mesh_lib.make_mesh(jax.devices()[:1]))
    text = plan.programs[0].jitted.lower(*plan.programs[0].args).as_text()
    assert "cudnn" not in text and "dot_general" in text


def test_slot_stage_from_the_command_line_with_batch_sizing(plugin, tmp_path):
    out = tmp_path / "slot.json"
    args = [f"--config.{k}={v}" for k, v in TINY.items()]
    done = subprocess.run([sys.executable, "-m", "golf_jax.bench", "--config=configs/smoke.py", "--stage=slot",
                           "--target=h100", "--devices=8", "--size_batch", f"--json={out}", *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["devices"] == 8 and r["programs"]["slot_batch"]["cudnn_attention_calls"]["forward"] == 2
    z = r["sizing"]
    assert z["rows_x2_peak_bytes"] > z["peak_bytes"] and z["largest_rows"] % 8 == 0
    assert z["largest_rows"] > 8 * z["rows"]  # a tiny model: far more windows fit than the config asks
    assert "largest batch that fits" in done.stdout


def test_a_target_that_is_not_described_is_one_line():
    from golf_jax.bench import target

    with pytest.raises(UserError, match="--target=a100: use one of h100, h200"):
        target.run_target(tiny(), "train", "a100", 8)


def test_target_description_is_the_published_h100():
    text = gpu_targets.target_config(gpu_targets.GPUS["h100"])
    assert "core_count: 132" in text and "major: 9" in text and "memory_bandwidth: 3350000000000" in text


HLO = """HloModule m, is_scheduled=true

%fused_dot (p0: bf16[4,8], p1: bf16[8,16]) -> f32[4,16] {
  %p0 = bf16[4,8]{1,0} parameter(0)
  %p1 = bf16[8,16]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,16]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%body (arg: (s32[], f32[4,16])) -> (s32[], f32[4,16]) {
  %arg = (s32[], f32[4,16]{1,0}) parameter(0)
  %x = f32[4,16]{1,0} get-tuple-element(%arg), index=1
  %ar = f32[4,16]{1,0} all-reduce(%x), replica_groups={}, to_apply=%add
  %i = s32[] get-tuple-element(%arg), index=0
  ROOT %t = (s32[], f32[4,16]{1,0}) tuple(%i, %ar)
}

ENTRY %main (a: bf16[4,8], b: bf16[8,16]) -> f32[4,16] {
  %a = bf16[4,8]{1,0} parameter(0)
  %b = bf16[8,16]{1,0} parameter(1)
  %f = f32[4,16]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_dot
  %q = bf16[2,64,4,32]{3,2,1,0} parameter(2)
  %att = (bf16[2,64,4,32]{3,2,1,0}, u8[0]{0}) custom-call(%q, %q, %q), custom_call_target="__cudnn$fmhaSoftmax", backend_config={"cudnn_fmha_backend_config":{"mask_type":"CAUSAL"}}
  %ag = f32[8,16]{1,0} all-gather(%f), dimensions={0}
  %init = (s32[], f32[4,16]{1,0}) tuple(%c, %f)
  %w = (s32[], f32[4,16]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}
  ROOT %out = f32[4,16]{1,0} get-tuple-element(%w), index=1
}
"""


def test_hlo_counts_kernels_flops_bytes_and_collectives_by_hand():
    s = hlo_stats.analyze(HLO)
    by_name = {k.name: k for k in s.kernels}
    assert by_name["f"].flops == 2 * 4 * 16 * 8  # 2·|result|·K
    assert by_name["f"].bytes == 4 * 16 * 4 + 4 * 8 * 2 + 8 * 16 * 2  # result f32 + both bf16 operands
    # Q·Kᵀ and P·V: 4·B·N·T·S·H, halved by the causal mask.
    attention = 4 * (2 * 64 * 4 * 32) * 64 / 2
    assert by_name["att"].flops == attention == s.attention_flops
    assert s.cudnn_attention == {"forward": 1, "backward": 0}
    # The loop's all-reduce runs 5 times; the all-gather once, counted at its gathered size.
    assert s.collectives == {"all-gather": {"count": 1, "bytes": 8 * 16 * 4},
                             "all-reduce": {"count": 5, "bytes": 5 * 4 * 16 * 4}}
    assert s.unknown_loops == 0 and hlo_stats.analyze(HLO.replace('"known_trip_count":{"n":"5"}', "")).unknown_loops == 1
    assert hlo_stats.f32_dots(HLO) == 0 and hlo_stats.f32_dots(HLO.replace("bf16[", "f32[")) == 1
    r = hlo_stats.roofline(s, peak_flops=1e12, memory_bw=1e9)
    assert r["kernels"] == 2 and r["seconds"] == pytest.approx(
        sum(max(k.flops / 1e12, k.bytes / 1e9) for k in s.kernels))


@pytest.mark.parametrize("kind,factor", [("all-reduce", 2 * 7 / 8), ("all-gather", 7 / 8), ("reduce-scatter", 7 / 8),
                                         ("all-to-all", 7 / 8), ("collective-permute", 1.0)])
def test_ring_collective_time_on_eight_gpus(kind, factor):
    assert hlo_stats.collective_seconds(kind, 1e9, 8, 1e11) == pytest.approx(factor * 1e9 / 1e11)
    assert hlo_stats.collective_seconds(kind, 1e9, 1, 1e11) == 0.0


def test_shape_bytes_counts_tuples_and_scalars():
    assert hlo_stats.shape_bytes("(bf16[2,3]{1,0}, f32[], s8[5])") == 2 * 6 + 4 + 5
    assert np.isclose(hlo_stats.shape_bytes("pred[7]"), 7)


def test_gpu_description_names_each_field_the_card_gives_differently():
    import importlib.util

    from golf_jax.core.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("gpu_description", REPO_ROOT / "bench" / "gpu_description.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ours = gpu_targets.target_config(gpu_targets.GPUS["h100"])
    card = ours.replace("core_count: 132", "core_count: 114").replace('platform_name: "CUDA"\n', "")
    assert module.differences(ours, ours) == []
    assert module.differences(ours, card) == ["gpu_device_info.core_count: ours 132, the card's 114",
                                              "platform_name: ours CUDA, the card's (absent)"]
