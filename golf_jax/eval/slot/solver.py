"""L-BFGS for SLOT's δ: pure JAX functions of (objective, start point), vmap-able.

Three backends behind one call, `minimize(fun, x0, settings)`, selected by
`eval.slot.solver`:

* "torch_exact": torch.optim.LBFGS(line_search_fn="strong_wolfe") step by step
  (docs/reference-notes.md#torch-lbfgs): initial step min(1, 1/‖g‖₁)·lr, the (s, y) history pushed only
  when yᵀs > 1e-10, the H₀ = yᵀs/yᵀy scaling, torch's bracketing + zoom line search
  with cubic interpolation and its 10% "insufficient progress" guard, and torch's
  stop tests (max_iter, max_eval = ⌊5·max_iter/4⌋, tolerance_grad on max|g|,
  tolerance_change on max|t·d| and |Δf|). Each line search may take 25 trials, as in
  torch 2.9.1 (what #1318 ran); `ls_budget=True` follows later torch (pytorch PR #161488,
  checked in 2.13.0), which caps it at the evaluations left, max_eval − used. SLOT's objective has no finite minimum (a
  logit bias can push unseen tokens to −∞), so the value after 25 iterations depends
  on the path; this backend follows torch's path and reproduces the seeds' numbers.
  Its state persists across `torch_lbfgs_step` calls, as torch's does across
  `.step()` (PR #675 calls `.step` 8 times).
* "jaxopt": jaxopt.LBFGS with its zoom line search (jaxopt is archived; it is
  imported only when this backend is chosen).
* "optax": optax.lbfgs with the zoom strong-Wolfe line search in a lax.while_loop.

Every backend returns (x, SolveInfo(loss, iterations, evaluations)); `loss` is the
objective at the returned x. All loops are lax.while_loops, so `jax.vmap` over
windows gives one batched solve inside one jit.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

# eval.slot.solver: torch_exact (torch.optim.LBFGS step by step), jaxopt's or optax's L-BFGS
SOLVERS = ("torch_exact", "jaxopt", "optax")


class LbfgsSettings(NamedTuple):
    max_iter: int = 25
    history: int = 20
    lr: float = 1.0
    max_eval: int = 0  # 0: torch's default ⌊5·max_iter/4⌋
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    max_ls: int = 25  # line-search trials per iteration
    ls_budget: bool = False  # True: cap each line search at the evaluations left (max_eval − used), as torch 2.13

    @property
    def evals_cap(self) -> int:
        return self.max_eval or self.max_iter * 5 // 4


class SolveInfo(NamedTuple):
    loss: jax.Array  # objective at the returned point
    iterations: jax.Array  # int32
    evaluations: jax.Array  # int32: objective+gradient evaluations


def minimize(fun: Callable, x0: jax.Array, s: LbfgsSettings, solver: str = "torch_exact", calls: int = 1):
    """Minimise the scalar `fun` from x0 with L-BFGS; returns (x, SolveInfo).

    `calls`: torch's `.step()` called that many times on one optimizer (history kept);
    the other backends run calls·max_iter iterations.
    """
    if solver == "torch_exact":
        vg = jax.value_and_grad(fun)
        state = torch_lbfgs_init(x0, s.history)
        state = jax.lax.fori_loop(0, calls, lambda _, st: torch_lbfgs_step(vg, st, s), state)
        return state.x, SolveInfo(fun(state.x), state.n_iter, state.func_evals)
    longer = s._replace(max_iter=s.max_iter * calls)
    if solver == "jaxopt":
        return _jaxopt(fun, x0, longer)
    if solver == "optax":
        return _optax(fun, x0, longer)
    raise ValueError(f"eval.slot.solver={solver!r}: use one of {SOLVERS}")


# ---------------------------------------------------------------------------------------
# torch_exact


class TorchLbfgsState(NamedTuple):
    """What torch.optim.LBFGS keeps in `self.state` between `.step()` calls."""

    x: jax.Array
    d: jax.Array
    t: jax.Array
    dirs_MxN: jax.Array  # y history, newest last (right-aligned: the last num_old rows are valid)
    stps_MxN: jax.Array  # s history
    ro_M: jax.Array
    num_old: jax.Array
    h_diag: jax.Array
    prev_g: jax.Array
    prev_f: jax.Array
    n_iter: jax.Array  # iterations over all step calls (torch's state['n_iter'])
    func_evals: jax.Array


def torch_lbfgs_init(x0: jax.Array, history: int = 20) -> TorchLbfgsState:
    x0 = jnp.asarray(x0, jnp.float32)
    z, n = jnp.zeros_like(x0), x0.shape[0]
    f32, i32 = jnp.float32, jnp.int32
    return TorchLbfgsState(x0, z, f32(1.0), jnp.zeros((history, n), f32), jnp.zeros((history, n), f32),
                           jnp.zeros((history,), f32), i32(0), f32(1.0), z, f32(0.0), i32(0), i32(0))


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, lo, hi):
    """torch's _cubic_interpolate: the minimiser of the cubic through two points, in [lo, hi]."""
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    d2 = jnp.sqrt(jnp.maximum(d2_square, 0.0))
    forward = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    backward = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    min_pos = jnp.where(x1 <= x2, forward, backward)
    return jnp.where(d2_square >= 0, jnp.clip(min_pos, lo, hi), (lo + hi) / 2)


class _LineSearch(NamedTuple):
    phase: jax.Array  # 0 bracketing, 1 zoom, 2 finished
    ls_iter: jax.Array
    evals: jax.Array
    t: jax.Array  # bracketing: the current trial and its f, g, gtd
    f_new: jax.Array
    g_new: jax.Array
    gtd_new: jax.Array
    t_prev: jax.Array
    f_prev: jax.Array
    g_prev: jax.Array
    gtd_prev: jax.Array
    b_2: jax.Array  # zoom bracket (points, values, gradients, slopes)
    bf_2: jax.Array
    bg_2xN: jax.Array
    bgtd_2: jax.Array
    low: jax.Array  # index of the bracket's low end
    insuf: jax.Array


def _strong_wolfe(vg, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """torch.optim.lbfgs._strong_wolfe; returns (f, g, t, evaluations).

    Each trip of the while_loop first takes the decisions that need no evaluation
    (torch's bracketing tests on the current trial; entering or leaving the zoom), then
    evaluates at most one new trial point, as torch does.
    """
    d_norm = jnp.max(jnp.abs(d))
    f_new, g_new = vg(x + t * d)
    i32 = jnp.int32
    init = _LineSearch(i32(0), i32(0), i32(1), t, f_new, g_new, jnp.dot(g_new, d), jnp.zeros_like(t), f, g, gtd,
                       jnp.stack([t, t]), jnp.stack([f_new, f_new]), jnp.stack([g_new, g_new]),
                       jnp.stack([gtd, gtd]), i32(0), jnp.bool_(False))
    pick = lambda cond, a, b: jax.tree.map(lambda u, v: jnp.where(cond, u, v), a, b)  # noqa: E731

    def set_bracket(c: _LineSearch, pts, vals, grads, slopes, phase):
        bf = jnp.stack(vals)
        return c._replace(b_2=jnp.stack(pts), bf_2=bf, bg_2xN=jnp.stack(grads), bgtd_2=jnp.stack(slopes),
                          low=jnp.where(bf[0] <= bf[1], 0, 1).astype(i32), phase=jnp.asarray(phase, i32))

    def body(c: _LineSearch) -> _LineSearch:
        # Bracketing: torch's tests on the current trial, in its order.
        bracketing = c.phase == 0
        out_of_trials = c.ls_iter >= max_ls
        armijo_fails = (c.f_new > f + c1 * c.t * gtd) | ((c.ls_iter > 1) & (c.f_new >= c.f_prev))
        wolfe = jnp.abs(c.gtd_new) <= -c2 * gtd
        uphill = c.gtd_new >= 0
        extrapolate = bracketing & ~out_of_trials & ~armijo_fails & ~wolfe & ~uphill
        after_max = set_bracket(c, [jnp.zeros_like(c.t), c.t], [f, c.f_new], [g, c.g_new], [gtd, c.gtd_new], 2)
        to_zoom = set_bracket(c, [c.t_prev, c.t], [c.f_prev, c.f_new], [c.g_prev, c.g_new],
                              [c.gtd_prev, c.gtd_new], 1)
        accept = set_bracket(c, [c.t, c.t], [c.f_new, c.f_new], [c.g_new, c.g_new], [c.gtd_new, c.gtd_new], 2)
        ended = pick(out_of_trials, after_max, pick(armijo_fails, to_zoom, pick(wolfe, accept, to_zoom)))
        c = pick(bracketing & ~extrapolate, ended, c)
        # Extrapolation trial: the cubic step clamped to [t + 0.01(t − t_prev), 10t].
        t_extrap = _cubic_interpolate(c.t_prev, c.f_prev, c.gtd_prev, c.t, c.f_new, c.gtd_new,
                                      c.t + 0.01 * (c.t - c.t_prev), c.t * 10)
        # Zoom trial: cubic inside the bracket, kept 10% away from its ends after slow progress.
        zooming = c.phase == 1
        lo_b, hi_b = jnp.min(c.b_2), jnp.max(c.b_2)
        zoom_over = zooming & ((jnp.abs(c.b_2[1] - c.b_2[0]) * d_norm < tolerance_change) | (c.ls_iter >= max_ls))
        t_zoom = _cubic_interpolate(c.b_2[0], c.bf_2[0], c.bgtd_2[0], c.b_2[1], c.bf_2[1], c.bgtd_2[1], lo_b, hi_b)
        eps = 0.1 * (hi_b - lo_b)
        near_edge = jnp.minimum(hi_b - t_zoom, t_zoom - lo_b) < eps
        move = near_edge & (c.insuf | (t_zoom >= hi_b) | (t_zoom <= lo_b))
        t_zoom = jnp.where(move, jnp.where(jnp.abs(t_zoom - hi_b) < jnp.abs(t_zoom - lo_b), hi_b - eps, lo_b + eps),
                           t_zoom)
        zoom_trial = zooming & ~zoom_over
        # At most one evaluation per trip.
        t_e = jnp.where(extrapolate, t_extrap, t_zoom)
        f_e, g_e = jax.lax.cond(extrapolate | zoom_trial, lambda: vg(x + t_e * d), lambda: (f, g))
        gtd_e = jnp.dot(g_e, d)
        counted = dict(ls_iter=c.ls_iter + 1, evals=c.evals + 1)
        extrap_out = c._replace(t=t_e, f_new=f_e, g_new=g_e, gtd_new=gtd_e, t_prev=c.t, f_prev=c.f_new,
                                g_prev=c.g_new, gtd_prev=c.gtd_new, **counted)
        # Zoom update: the trial replaces the high end (Armijo fails or not below the low end),
        # or it becomes the low end (the old low becoming the high end if the slope says so).
        low, high = c.low, 1 - c.low
        worse = (f_e > f + c1 * t_e * gtd) | (f_e >= c.bf_2[low])
        zoom_wolfe = jnp.abs(gtd_e) <= -c2 * gtd
        flip = ~zoom_wolfe & (gtd_e * (c.b_2[high] - c.b_2[low]) >= 0)
        fields = (c.b_2, c.bf_2, c.bg_2xN, c.bgtd_2)
        trial = (t_e, f_e, g_e, gtd_e)
        as_high = [a.at[high].set(v) for a, v in zip(fields, trial)]
        flipped = [jnp.where(flip, a.at[high].set(a[low]), a) for a in fields]
        as_low = [a.at[low].set(v) for a, v in zip(flipped, trial)]
        new = [jnp.where(worse, h, lw) for h, lw in zip(as_high, as_low)]
        zoom_out = c._replace(b_2=new[0], bf_2=new[1], bg_2xN=new[2], bgtd_2=new[3],
                              low=jnp.where(worse, jnp.where(new[1][0] <= new[1][1], 0, 1), low).astype(i32),
                              insuf=near_edge & ~move,
                              phase=jnp.where(~worse & zoom_wolfe, 2, 1).astype(i32), **counted)
        out = pick(extrapolate, extrap_out, pick(zoom_trial, zoom_out, c))
        return pick(zoom_over, c._replace(phase=i32(2)), out)

    c = jax.lax.while_loop(lambda c: c.phase != 2, body, init)
    return c.bf_2[c.low], c.bg_2xN[c.low], c.b_2[c.low], c.evals


def _two_loop(g, s: TorchLbfgsState, h_diag, num_old):
    """H·(−g) by the two-loop recursion over the valid (right-aligned) history rows."""
    m = s.dirs_MxN.shape[0]
    valid = jnp.arange(m) >= m - num_old

    def back(q, i):
        al = jnp.where(valid[i], jnp.dot(s.stps_MxN[i], q) * s.ro_M[i], 0.0)
        return q - al * s.dirs_MxN[i], al

    q, al_rev = jax.lax.scan(back, -g, jnp.arange(m - 1, -1, -1))
    al = al_rev[::-1]

    def fwd(r, i):
        be = jnp.dot(s.dirs_MxN[i], r) * s.ro_M[i]
        return jnp.where(valid[i], r + s.stps_MxN[i] * (al[i] - be), r), None

    r, _ = jax.lax.scan(fwd, q * h_diag, jnp.arange(m))
    return r


class _StepLoop(NamedTuple):
    """The carry of one .step() call's iteration loop."""

    st: TorchLbfgsState
    f: jax.Array
    g: jax.Array
    n_iter: jax.Array  # this call's iterations
    evals: jax.Array  # this call's evaluations
    stop: jax.Array


def torch_lbfgs_step(vg, state: TorchLbfgsState, s: LbfgsSettings) -> TorchLbfgsState:
    """One torch LBFGS.step(closure): up to max_iter iterations, from `state`."""
    f0, g0 = vg(state.x)
    i32 = jnp.int32

    def body(c: _StepLoop) -> _StepLoop:
        st = c.st
        total = st.n_iter + 1
        first = total == 1
        # Direction.
        y = c.g - st.prev_g
        sv = st.d * st.t
        ys = jnp.dot(y, sv)
        push = ~first & (ys > 1e-10)
        roll = lambda a, v: jnp.roll(a, -1, axis=0).at[-1].set(v)  # noqa: E731
        dirs = jnp.where(push, roll(st.dirs_MxN, y), st.dirs_MxN)
        stps = jnp.where(push, roll(st.stps_MxN, sv), st.stps_MxN)
        ro = jnp.where(push, roll(st.ro_M, 1.0 / jnp.where(push, ys, 1.0)), st.ro_M)
        num_old = jnp.where(first, 0, jnp.where(push, jnp.minimum(st.num_old + 1, s.history), st.num_old))
        h_diag = jnp.where(first, 1.0, jnp.where(push, ys / jnp.where(push, jnp.dot(y, y), 1.0), st.h_diag))
        hist = st._replace(dirs_MxN=dirs, stps_MxN=stps, ro_M=ro)
        d = jnp.where(first, -c.g, _two_loop(c.g, hist, h_diag, num_old))
        t = jnp.where(first, jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(c.g))) * s.lr, jnp.float32(s.lr))
        gtd = jnp.dot(c.g, d)
        descent = gtd <= -s.tolerance_change
        max_ls = s.evals_cap - c.evals if s.ls_budget else s.max_ls
        f_ls, g_ls, t_ls, ls_evals = _strong_wolfe(vg, st.x, t, d, c.f, c.g, gtd, tolerance_change=s.tolerance_change,
                                                   max_ls=max_ls)
        x = jnp.where(descent, st.x + t_ls * d, st.x)
        f = jnp.where(descent, f_ls, c.f)
        g = jnp.where(descent, g_ls, c.g)
        t = jnp.where(descent, t_ls, t)
        evals = c.evals + jnp.where(descent, ls_evals, 0)
        n_iter = c.n_iter + 1
        stop = (~descent | (n_iter == s.max_iter) | (evals >= s.evals_cap) | (jnp.max(jnp.abs(g)) <= s.tolerance_grad)
                | (jnp.max(jnp.abs(d * t)) <= s.tolerance_change) | (jnp.abs(f - c.f) < s.tolerance_change))
        new = TorchLbfgsState(x, d, t, dirs, stps, ro, num_old.astype(i32), h_diag, c.g, c.f, total,
                              st.func_evals + jnp.where(descent, ls_evals, 0))
        return _StepLoop(new, f, g, n_iter, evals, stop)

    converged = jnp.max(jnp.abs(g0)) <= s.tolerance_grad
    start = _StepLoop(state._replace(func_evals=state.func_evals + 1), f0, g0, i32(0), i32(1), converged)
    out = jax.lax.while_loop(lambda c: ~c.stop, body, start)
    return out.st


# ---------------------------------------------------------------------------------------
# jaxopt and optax


def _jaxopt(fun, x0, s: LbfgsSettings):
    try:
        import jaxopt
    except ImportError as e:  # archived upstream: optional at import
        raise ValueError("eval.slot.solver=jaxopt needs jaxopt (pip install 'jaxopt>=0.8.5'); "
                         "or use eval.slot.solver=torch_exact or optax") from e
    solver = jaxopt.LBFGS(fun=fun, maxiter=s.max_iter, history_size=s.history, tol=s.tolerance_grad,
                          linesearch="zoom", maxls=s.max_ls, jit=True)
    x, state = solver.run(jnp.asarray(x0, jnp.float32))
    return x, SolveInfo(fun(x), state.iter_num.astype(jnp.int32), state.num_fun_eval.astype(jnp.int32))


def _optax(fun, x0, s: LbfgsSettings):
    import optax

    opt = optax.lbfgs(memory_size=s.history,
                      linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=s.max_ls))
    value_and_grad = optax.value_and_grad_from_state(fun)
    x0 = jnp.asarray(x0, jnp.float32)

    def body(c):
        x, state, k, evals, _ = c
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        steps = optax.tree_utils.tree_get(state, "num_linesearch_steps")
        return optax.apply_updates(x, updates), state, k + 1, evals + steps.astype(jnp.int32), jnp.max(jnp.abs(grad))

    def cond(c):
        _, _, k, _, gmax = c
        return (k < s.max_iter) & (gmax > s.tolerance_grad)

    state = opt.init(x0)
    x, _, k, evals, _ = jax.lax.while_loop(cond, body, (x0, state, jnp.int32(0), jnp.int32(1), jnp.float32(jnp.inf)))
    return x, SolveInfo(fun(x), k, evals)
