"""EMA, SWA and late soft-round QAT: formulas against float64 numpy, and their wiring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke as smoke_config
from golf_jax import model as model_lib
from golf_jax.optim.build import build_optimizer
from golf_jax.core import mesh as mesh_lib
from golf_jax.train import qat, recipe as recipe_lib
from golf_jax.train import step as step_lib


def numpy_soft_round(w_OUTxIN, alpha):
    """docs/reference-notes.md#soft-round-qat, in the reference's (out, in) layout and float64."""
    w = w_OUTxIN.astype(np.float64)
    s = np.maximum(np.abs(w).max(axis=1, keepdims=True) / 31, 1 / 31)
    wn = w / s
    f = np.floor(wn)
    r = wn - f - 0.5
    q = np.clip(f + 0.5 + 0.5 * np.tanh(alpha * r) / np.tanh(alpha / 2), -32, 31)
    return q * s


@pytest.mark.parametrize("alpha", [1.0, 4.0, 16.0])
def test_soft_round_matches_numpy(alpha):
    w_OUTxIN = np.random.default_rng(0).normal(size=(6, 10)).astype(np.float32) * 3
    got = qat.soft_round_int6(jnp.asarray(w_OUTxIN.T), jnp.float32(alpha))  # ours is (in, out)
    np.testing.assert_allclose(np.asarray(got).T, numpy_soft_round(w_OUTxIN, alpha), rtol=1e-5, atol=1e-6)


def test_soft_round_is_differentiable_and_sharpens_to_the_int6_grid():
    w = jnp.asarray(np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32) * 2)
    grad = jax.grad(lambda w: jnp.sum(qat.soft_round_int6(w, jnp.float32(4.0)) ** 2))(w)
    assert np.all(np.isfinite(grad)) and np.abs(np.asarray(grad)).min() > 0  # no STE: tanh carries gradient
    sharp = np.asarray(qat.soft_round_int6(w, jnp.float32(200.0)))
    scale = np.maximum(np.abs(np.asarray(w)).max(axis=0) / 31, 1 / 31)
    frac = np.asarray(w) / scale - np.floor(np.asarray(w) / scale)
    away_from_half = np.abs(frac - 0.5) > 0.02  # tanh(200·r) saturates unless r ≈ 0
    np.testing.assert_allclose((sharp / scale)[away_from_half], np.round(np.asarray(w) / scale)[away_from_half], atol=1e-3)


def test_qat_alpha_schedule():
    assert qat.qat_alpha(0.15, 0.15) == 1.0
    assert qat.qat_alpha(0.075, 0.15) == pytest.approx(8.5)
    assert qat.qat_alpha(0.0, 0.15) == 16.0


def _setup(**train_overrides):
    cfg = smoke_config.get_config()
    cfg.model.update(num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, vocab_size=64)
    cfg.train.seq_len = 16
    cfg.train.update(train_overrides)
    mesh = mesh_lib.make_mesh(jax.devices()[:1])
    model = model_lib.build_model(cfg.model)
    rng = jax.random.PRNGKey(0)
    abstract = jax.eval_shape(lambda r: model.init(r, np.zeros((1, 8), np.int32))["params"], rng)
    labels = model_lib.param_labels(cfg.model, abstract, cfg.compat)
    tx = build_optimizer(cfg.opt, labels)
    recipe = step_lib.build_recipe(cfg, abstract, labels)
    state = step_lib.init_state(model, tx, rng, cfg.train.seq_len, mesh, recipe)
    step = jax.jit(step_lib.make_train_step(model, tx, recipe))
    tokens = np.random.default_rng(0).integers(0, 64, (4, 8, 17), dtype=np.int32)
    return cfg, labels, recipe, state, step, tokens


def test_ema_and_swa_follow_their_formulas():
    cfg, _, recipe, state, step, tokens = _setup(ema_decay=0.9, swa_enabled=True, swa_every=2, swa_lr_threshold=0.5)
    ema = jax.tree.map(np.float64, jax.device_get(state.params))
    swa, taken = jax.tree.map(np.zeros_like, ema), 0
    lrs = [1.0, 0.4, 0.4, 0.4]
    for i, lr in enumerate(lrs):
        state, _ = step(state, {"x": tokens[i, :, :-1], "y": tokens[i, :, 1:], **step_lib.schedule_inputs(lr, 0.9)})
        p = jax.tree.map(np.float64, jax.device_get(state.params))
        ema = jax.tree.map(lambda e, q: 0.9 * e + 0.1 * q, ema, p)
        if lr < 0.5 and (i + 1) % 2 == 0:
            swa, taken = jax.tree.map(np.add, swa, p), taken + 1
    for a, b in zip(jax.tree.leaves(jax.device_get(state.ema)), jax.tree.leaves(ema)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(state.swa_count) == taken == 2  # steps 2 and 4: late enough and on the grid
    final, how = recipe_lib.final_params(state, recipe)
    assert how == "swa(2)"
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(swa)):
        np.testing.assert_allclose(a, b / taken, rtol=1e-6)


def test_qat_scope_and_effect():
    cfg, labels, recipe, state, step, tokens = _setup(late_qat_threshold=0.15)
    flat_mask = jax.tree.leaves(recipe.qat_mask)
    flat_labels = jax.tree.leaves(labels)
    assert [m for m, l in zip(flat_mask, flat_labels) if l == "muon"] == [True] * 12
    assert not any(m for m, l in zip(flat_mask, flat_labels) if l != "muon")
    ref_mask = qat.qat_mask(state.params, labels, reference_scope=True)
    assert not any(m for m, l in zip(jax.tree.leaves(ref_mask), flat_labels) if l == "muon")

    batch = {"x": tokens[0, :, :-1], "y": tokens[0, :, 1:]}
    rng = np.random.default_rng(0)  # generic weights, so the logits depend on every matrix
    state = state.replace(params=jax.tree.map(lambda p: p + 0.3 * rng.normal(size=p.shape).astype(np.float32), state.params))
    _, off = step(state, {**batch, **step_lib.schedule_inputs(0.1, 0.9, qat_alpha=0.0)})
    _, on = step(state, {**batch, **step_lib.schedule_inputs(0.1, 0.9, qat_alpha=16.0)})
    assert abs(float(off["loss"]) - float(on["loss"])) > 1e-3
    cfg.train.late_qat_threshold = 0.0
    _, _, no_qat_recipe, state0, plain_step, _ = _setup()
    assert no_qat_recipe.qat_mask is None
