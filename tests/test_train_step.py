"""The jitted train step on a device mesh: 1 device and 8 simulated devices agree."""

import jax
import numpy as np

from configs import smoke as smoke_config
from golf_jax import model as model_lib
from golf_jax.optim.build import build_optimizer
from golf_jax.core import mesh as mesh_lib
from golf_jax.train import step as step_lib


def _tiny_config():
    cfg = smoke_config.get_config()
    cfg.model.num_layers = 2
    cfg.model.model_dim = 64
    cfg.model.vocab_size = 128
    cfg.train.seq_len = 32
    cfg.opt.muon_ns_dtype = "float32"  # bf16 NS would amplify summation-order noise
    cfg.opt.grad_clip_norm = 0.5  # exercise the global clip after the cross-device mean
    return cfg


def _run(cfg, devices, tokens, steps=3):
    mesh = mesh_lib.make_mesh(devices)
    model = model_lib.build_model(cfg.model)
    rng = jax.random.PRNGKey(0)
    abstract = jax.eval_shape(lambda r: model.init(r, np.zeros((1, 8), np.int32))["params"], rng)
    tx = build_optimizer(cfg.opt, model_lib.param_labels(cfg.model, abstract))
    state = step_lib.init_state(model, tx, rng, cfg.train.seq_len, mesh)
    # Zero-initialised projections make some first gradients exactly 0, where Adam's
    # sign-like step turns reduction-order noise into ±lr; start from generic params.
    noise = jax.tree.map(lambda p: 0.02 * np.random.default_rng(p.size).normal(size=p.shape).astype(np.float32), state.params)
    params = jax.device_put(jax.tree.map(lambda p, n: np.asarray(p) + n, state.params, noise), mesh_lib.replicated(mesh))
    state = state.replace(params=params)
    loss_and_grad = jax.jit(
        jax.value_and_grad(lambda p, x, y: model.apply({"params": p}, x, y, method=model.loss)[0]),
        in_shardings=(mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh), mesh_lib.data_sharded(mesh)),
    )
    x = mesh_lib.put_global_batch(mesh, tokens[0, :, :-1])
    y = mesh_lib.put_global_batch(mesh, tokens[0, :, 1:])
    grads = jax.device_get(loss_and_grad(state.params, x, y)[1])
    train_step = step_lib.jit_train_step(step_lib.make_train_step(model, tx), mesh)
    losses = []
    for i in range(steps):
        batch = {
            "x": mesh_lib.put_global_batch(mesh, tokens[i, :, :-1]),
            "y": mesh_lib.put_global_batch(mesh, tokens[i, :, 1:]),
            **step_lib.schedule_inputs(1.0 - 0.1 * i, 0.85 + 0.01 * i),
        }
        state, metrics = train_step(state, batch)
        losses.append(float(metrics["loss"]))
        if i == 0:
            params_after_one = jax.device_get(state.params)
    return losses, params_after_one, grads


def _assert_close_to_scale(a, b, rtol):
    """max|a−b| ≤ rtol·max|a| per tensor: fp32 agreement relative to the tensor's scale."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.max(np.abs(x - y)) <= rtol * np.max(np.abs(x)), (np.max(np.abs(x - y)), np.max(np.abs(x)))


def test_one_device_and_eight_devices_agree():
    """Same losses for 3 steps, same mean gradients and Muon params, at fp32 rtol 1e-5.

    The mesh's job is the cross-device mean gradient; the optimizer then acts per
    element (checked against numpy in test_muon/test_optim_build). So we compare
    gradients, and params only where the update is a smooth function of them:
    Muon matrices after one step. Later Muon steps amplify reduction-order noise
    (the NS5 quintic has slope 3.4445 at 0: ~3.4^5 ≈ 480× along small singular
    directions), and Adam's first step is lr·g/(|g|+eps), a sign for |g|≫eps that
    flips on fp32 noise where |g| ≈ eps. Losses stay equal to 1e-5 regardless.
    """
    assert jax.device_count() == 8, "tests/conftest.py should give 8 simulated CPU devices"
    cfg = _tiny_config()
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (3, 16, cfg.train.seq_len + 1), dtype=np.int32)
    loss_1, params_1, grads_1 = _run(cfg, jax.devices()[:1], tokens)
    loss_8, params_8, grads_8 = _run(cfg, jax.devices(), tokens)
    np.testing.assert_allclose(loss_8, loss_1, rtol=1e-5)
    # Normwise over the whole gradient: small tensors' entries are sums of larger terms.
    flat_1 = np.concatenate([g.ravel() for g in jax.tree.leaves(grads_1)])
    flat_8 = np.concatenate([g.ravel() for g in jax.tree.leaves(grads_8)])
    assert np.linalg.norm(flat_8 - flat_1) <= 1e-5 * np.linalg.norm(flat_1)
    labels = model_lib.param_labels(cfg.model, params_1)
    muon_1 = [p for p, l in zip(jax.tree.leaves(params_1), jax.tree.leaves(labels)) if l == "muon"]
    muon_8 = [p for p, l in zip(jax.tree.leaves(params_8), jax.tree.leaves(labels)) if l == "muon"]
    assert len(muon_1) == 12
    _assert_close_to_scale(muon_1, muon_8, rtol=1e-5)


def test_state_is_donated():
    cfg = _tiny_config()
    tokens = np.random.default_rng(1).integers(0, cfg.model.vocab_size, (1, 8, cfg.train.seq_len + 1), dtype=np.int32)
    mesh = mesh_lib.make_mesh()
    model = model_lib.build_model(cfg.model)
    rng = jax.random.PRNGKey(0)
    abstract = jax.eval_shape(lambda r: model.init(r, np.zeros((1, 8), np.int32))["params"], rng)
    tx = build_optimizer(cfg.opt, model_lib.param_labels(cfg.model, abstract))
    state = step_lib.init_state(model, tx, rng, cfg.train.seq_len, mesh)
    train_step = step_lib.jit_train_step(step_lib.make_train_step(model, tx), mesh)
    batch = {
        "x": mesh_lib.put_global_batch(mesh, tokens[0, :, :-1]),
        "y": mesh_lib.put_global_batch(mesh, tokens[0, :, 1:]),
        **step_lib.schedule_inputs(1.0, 0.9),
    }
    old_leaf = jax.tree.leaves(state.params)[0]
    train_step(state, batch)
    assert old_leaf.is_deleted()
