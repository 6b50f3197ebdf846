"""Test setup: 8 simulated CPU devices, and the shared-data fixture.

XLA_FLAGS must be set before jax initialises its backend, so this file sets it
at import time, before any test module imports jax.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No persistent compilation cache (golf_jax/core/compile_cache.py) for the entry points the tests run:
# CI starts cold, where it only adds writes, and a cache shared across runs would make results depend
# on what ran before (docs/perf.md, "Persistent compilation cache").
os.environ.setdefault("GOLF_JAX_XLA_CACHE", "off")

import pytest  # noqa: E402

from golf_jax.core.paths import shared_data_dir  # noqa: E402


def _has_gpu() -> bool:
    try:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:
        return False


def pytest_collection_modifyitems(config, items):
    if os.environ.get("JAX_PLATFORMS") == "cpu" or not _has_gpu():
        skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data():
    """Path of ../shared/data; skip when absent, but fail under CI=true."""
    path = shared_data_dir()
    if not (path / "tokenizers" / "fineweb_1024_bpe.model").exists():
        message = (
            f"shared data not found at {path} (set GOLF_JAX_SHARED_DATA or place "
            "the shared/ folder beside the repository)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def fineweb_tokens(shared_data):
    """FineWeb-200 (real val documents) as one SP1024 token stream (628,457 tokens), and its byte LUT."""
    import numpy as np

    from golf_jax.data.prepare import encode_documents, iter_documents
    from golf_jax.data.tokenizer import build_byte_luts, load_tokenizer

    sp = load_tokenizer(shared_data / "tokenizers" / "fineweb_1024_bpe.model", 1024)
    docs = list(iter_documents(shared_data / "text" / "fineweb_val_200.jsonl"))
    return np.concatenate(encode_documents(sp, docs)), build_byte_luts(sp, 1024)


@pytest.fixture(scope="session")
def tiny_lm(fineweb_tokens):
    """A tiny baseline GPT trained for 60 steps on the first 500k FineWeb-200 tokens.

    Returns (cfg, model, params, val_tokens, lut): val is a held-out 8,193-token slice
    from the end of the stream. Shared by the evaluation tests (one fit per worker).
    """
    import jax
    import numpy as np

    from golf_jax.core import mesh as mesh_lib
    from golf_jax import model as model_lib
    from golf_jax.config import base_config
    from golf_jax.optim.build import build_optimizer
    from golf_jax.train import step as step_lib

    stream, lut = fineweb_tokens
    cfg = base_config()
    m = cfg.model
    m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.compute_dtype = 2, 64, 4, 2, "float32"
    cfg.train.seq_len = 128
    cfg.opt.matrix_lr, cfg.opt.tied_embed_lr = 0.02, 0.02
    mesh = mesh_lib.make_mesh()
    model = model_lib.build_model(m)
    abstract = jax.eval_shape(lambda r: model.init(r, np.zeros((1, 128), np.int32))["params"], jax.random.PRNGKey(0))
    tx = build_optimizer(cfg.opt, model_lib.param_labels(m, abstract))
    state = step_lib.init_state(model, tx, jax.random.PRNGKey(0), 128, mesh)
    step = step_lib.jit_train_step(step_lib.make_train_step(model, tx), mesh)
    rows = 32
    for i in range(60):
        span = stream[i * rows * 128 : (i + 1) * rows * 128 + 1]
        batch = {"x": mesh_lib.put_global_batch(mesh, span[:-1].reshape(rows, 128).astype(np.int32)),
                 "y": mesh_lib.put_global_batch(mesh, span[1:].reshape(rows, 128).astype(np.int32)),
                 **step_lib.schedule_inputs(1.0 - i / 60, 0.95)}
        state, metrics = step(state, batch)
        float(metrics["loss"])  # one step in flight: CPU collectives of queued steps can deadlock
    val = np.asarray(stream[-8193:], np.int32)
    return cfg, model, jax.device_get(state.params), val, lut


@pytest.fixture(scope="session")
def sp8192_shards(shared_data, tmp_path_factory):
    """FineWeb-200 in SP8192 shards: 12 docs of val, the rest cut into ≥ 8 train shards."""
    import json

    from golf_jax.data import prepare
    from golf_jax.data.prepare import iter_documents

    root = tmp_path_factory.mktemp("sp8192")
    docs = list(iter_documents(shared_data / "text" / "fineweb_val_200.jsonl"))
    for name, part in (("val.jsonl", docs[:12]), ("train.jsonl", docs[12:])):
        (root / name).write_text("".join(json.dumps({"text": d}) + "\n" for d in part))
    tokenizer = shared_data / "tokenizers" / "fineweb_8192_bpe.model"
    out = root / "shards"
    assert prepare.main(["--tokenizer", str(tokenizer), "--val", str(root / "val.jsonl"), "--train",
                         str(root / "train.jsonl"), "--out", str(out), "--shard_tokens", "20000"]) == 0
    return out, tokenizer
