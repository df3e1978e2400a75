"""Tests for pinn.balancing: fixed, GradNorm, gradient-norm ratios, causal time weighting."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pinn import balancing
from pinn.balancing import BalancerState, causal_residual_loss, gradnorm_step

NAMES2 = ("pde", "ic")


def _jit_update(bal):
    """`bal.update` compiled once, with the gradient norms passed in as an array."""
    def update(state, step, losses, norms):
        return bal.update(state, step, losses, lambda: norms)

    return jax.jit(update)


def _f32(x):
    return jnp.asarray(x, jnp.float32)


_gradnorm_step = jax.jit(
    gradnorm_step, static_argnames=("alpha", "learning_rate", "min_weight", "max_weight")
)
BOUNDS = dict(min_weight=0.1, max_weight=10.0)
_renormalize = jax.jit(balancing._renormalize_with_bounds, static_argnums=(1, 2, 3))
_causal = jax.jit(causal_residual_loss, static_argnames=("num_chunks",))


def _assert_state_equal(a: BalancerState, b: BalancerState) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------------------------
# fixed


def test_fixed_weights_constant_and_never_traces_grad_norms():
    traced = []

    def grad_norms_fn():
        traced.append(1)
        return jnp.ones(3)

    bal = balancing.fixed([1.0, 10.0, 2.0], ("pde", "ic", "bc"))
    state = bal.init(3)
    state2 = jax.jit(lambda s, k: bal.update(s, k, jnp.array([1.0, 2.0, 3.0]), grad_norms_fn))(
        state, jnp.int32(0)
    )
    np.testing.assert_array_equal(bal.weights(state2), [1.0, 10.0, 2.0])
    assert traced == []  # fixed never even traces the K backward passes
    stats = {k: float(v) for k, v in bal.stats(state2).items()}
    assert stats == {"w_pde": 1.0, "w_ic": 10.0, "w_bc": 2.0}
    with pytest.raises(ValueError, match="num_terms = 2"):
        bal.init(2)
    with pytest.raises(ValueError, match="weights\\[1\\]"):
        balancing.fixed([1.0, -1.0])


def test_fixed_weights_by_name_as_params_yaml_writes_them():
    """`{term: weight}` (params.yaml's shape) in term order, an omitted term at 1 — the same
    weights the adapter gives — and a name that is not a term refused."""
    bal = balancing.fixed({"ic": 10.0, "pde": 1.0}, ("pde", "ic", "bc"))
    np.testing.assert_array_equal(bal.weights(bal.init(3)), [1.0, 10.0, 1.0])
    with pytest.raises(ValueError, match=r"weights \['icc'\]: not among term_names"):
        balancing.fixed({"icc": 10.0}, ("pde", "ic"))
    with pytest.raises(ValueError, match="term_names must be given"):
        balancing.fixed({"pde": 1.0})


# ----------------------------------------------------------------------------------------------
# GradNorm


def test_gradnorm_two_updates_by_hand():
    bal = balancing.gradnorm(NAMES2, alpha=1.5, learning_rate=0.1, update_every=10, **BOUNDS)
    state = bal.init(2)
    upd = _jit_update(bal)
    # first update records L(0) = (4, 1): L̃ = r = 1, G = (3, 1), Ḡ = 2, target = (2, 2),
    # sign = (+, -), n̄ = 2 -> Δw = -0.1 * (3, -1) / 2 = (-0.15, +0.05) -> (0.85, 1.05) -> ×2/1.9
    state = upd(state, 0, jnp.array([4.0, 1.0]), _f32([3.0, 1.0]))
    np.testing.assert_allclose(bal.weights(state), [17 / 19, 21 / 19], rtol=1e-6)
    np.testing.assert_array_equal(state.initial_losses, [4.0, 1.0])
    assert bool(state.initialized) and int(state.num_updates) == 1
    # second update: L = (2, 1) -> L̃ = (0.5, 1), r = (2/3, 4/3); n = (2, 2),
    # G = 2w = (1.789, 2.211), Ḡ = 2, target = 2 r^1.5 = (1.0887, 3.0792) -> sign = (+, -)
    # -> Δw = ∓0.1 (sum stays 2).
    # (With alpha = 0 the signs would flip: G_1 < Ḡ.)
    state = upd(state, 10, jnp.array([2.0, 1.0]), _f32([2.0, 2.0]))
    np.testing.assert_allclose(bal.weights(state), [17 / 19 - 0.1, 21 / 19 + 0.1], rtol=1e-6)
    np.testing.assert_array_equal(state.initial_losses, [4.0, 1.0])  # L(0) kept
    np.testing.assert_array_equal(state.grad_norms, [2.0, 2.0])


def test_gradnorm_step_matches_autodiff_of_gradnorm_loss():
    rng = np.random.default_rng(0)
    K, lr, alpha = 4, 0.05, 1.2
    w = rng.uniform(0.5, 1.5, K)
    w = _f32(w * K / w.sum())
    losses, l0, norms = (_f32(rng.uniform(lo, hi, K)) for lo, hi in [(0.1, 2), (0.5, 3), (0.1, 50)])

    def gradnorm_loss(weights):
        g = weights * norms
        rel = losses / l0
        target = jax.lax.stop_gradient(jnp.mean(g) * (rel / rel.mean()) ** alpha)
        return jnp.sum(jnp.abs(g - target))

    stepped = w - lr * jax.grad(gradnorm_loss)(w) / jnp.mean(norms)
    expected = stepped * K / stepped.sum()  # bounds inactive here
    got = _gradnorm_step(
        w, losses, l0, norms, alpha=alpha, learning_rate=lr, min_weight=1e-3, max_weight=1e3
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_gradnorm_rate_term_favours_slower_relative_loss():
    """Equal gradient norms: only the relative inverse training rate r_i^α moves the weights."""
    losses0, losses = jnp.array([1.0, 1.0]), jnp.array([0.1, 1.0])  # term 0 trains 10× faster
    w = jnp.ones(2)
    for _ in range(5):
        w = _gradnorm_step(w, losses, losses0, jnp.ones(2), alpha=1.5, learning_rate=0.05, **BOUNDS)
    assert float(w[1]) > 1.2 and float(w[0]) < 0.8
    w0 = _gradnorm_step(
        jnp.ones(2), losses, losses0, jnp.ones(2), alpha=0.0, learning_rate=0.05, **BOUNDS
    )
    np.testing.assert_allclose(w0, [1.0, 1.0])  # α = 0: equal G already on target


def test_renormalize_with_bounds_exact():
    # one clip+rescale pass leaves Σ = 2.9; the exact procedure pins entry 0 at hi and rescales
    # the rest
    got = _renormalize(jnp.array([5.0, 0.1, 0.1]), 3.0, 0.2, 2.5)
    np.testing.assert_allclose(got, [2.5, 0.25, 0.25], rtol=1e-6)
    got = _renormalize(jnp.array([0.01, 0.01, 3.0, 3.0]), 4.0, 0.5, 4.0)
    np.testing.assert_allclose(got, [0.5, 0.5, 1.5, 1.5], rtol=1e-6)


def test_gradnorm_bounds_and_sum_on_random_updates():
    K, lo, hi, n = 3, 0.3, 1.6, 500
    rng = np.random.default_rng(1)
    w = rng.dirichlet(np.ones(K), size=n) * K  # Σ w = K, some entries outside [lo, hi]
    losses, l0 = np.exp(3 * rng.standard_normal((2, n, K)))
    norms = np.exp(5 * rng.standard_normal((n, K)))  # spans many orders of magnitude
    step = jax.vmap(
        lambda *a: gradnorm_step(*a, alpha=1.5, learning_rate=0.7, min_weight=lo, max_weight=hi)
    )
    ws = np.asarray(jax.jit(step)(*(_f32(a) for a in (w, losses, l0, norms))))
    assert np.all(np.isfinite(ws))
    np.testing.assert_allclose(ws.sum(axis=1), K, rtol=1e-5)
    assert ws.min() >= lo - 1e-6 and ws.max() <= hi + 1e-6
    assert np.any(np.isclose(ws, lo)) and np.any(np.isclose(ws, hi))  # bounds were active


def test_gradnorm_guards_zero_and_nonfinite():
    bal = balancing.gradnorm(NAMES2, learning_rate=0.1, update_every=1)
    state = bal.init(2)
    upd = _jit_update(bal)
    # zero initial loss for a term and a zero gradient norm: finite, Σ = K
    s1 = upd(state, 0, jnp.array([0.0, 1.0]), _f32([0.0, 2.0]))
    s1 = upd(s1, 1, jnp.array([0.0, 0.5]), _f32([0.0, 1.0]))
    assert np.all(np.isfinite(s1.weights))
    assert math.isclose(float(s1.weights.sum()), 2.0, rel_tol=1e-6)
    # all gradient norms zero: weights do not move
    s2 = upd(state, 0, jnp.array([1.0, 1.0]), _f32([0.0, 0.0]))
    np.testing.assert_array_equal(s2.weights, [1.0, 1.0])
    # non-finite measurements: update skipped entirely (L(0) not recorded either)
    for losses, norms in [([jnp.nan, 1.0], [1.0, 1.0]), ([1.0, 1.0], [jnp.inf, 1.0])]:
        s3 = upd(s1, 2, jnp.array(losses), _f32(norms))
        _assert_state_equal(s3, s1)
    s4 = upd(state, 0, jnp.array([jnp.nan, 1.0]), _f32([1.0, 1.0]))
    assert not bool(s4.initialized)
    with pytest.raises(ValueError, match="min_weight <= 1 <= max_weight"):
        balancing.gradnorm(NAMES2, min_weight=1.5, max_weight=3.0)


def _toy_gradnorm_run(num_steps: int = 300):
    """θ = (a, b); L1 = (a-1)² trains fast, L2 = 0.01 (b-1)² has a 100× flatter landscape.

    Plain SGD (not Adam): with disjoint parameters Adam's per-parameter normalization would make
    the term weights irrelevant to the dynamics."""
    bal = balancing.gradnorm(NAMES2, alpha=1.5, learning_rate=0.05, update_every=5, **BOUNDS)
    opt = optax.sgd(0.2)

    def term_losses(theta):
        return jnp.stack([(theta[0] - 1.0) ** 2, 0.01 * (theta[1] - 1.0) ** 2])

    def step_fn(carry, step):
        theta, opt_state, bstate = carry
        losses = term_losses(theta)

        def grad_norms_fn():
            jac = jax.jacrev(term_losses)(theta)  # (K, P): one backward pass per term
            return jnp.linalg.norm(jac, axis=1)

        bstate = bal.update(bstate, step, losses, grad_norms_fn)
        w = bal.weights(bstate)
        grads = jax.grad(lambda th: jnp.sum(w * term_losses(th)))(theta)
        updates, opt_state = opt.update(grads, opt_state, theta)
        return (optax.apply_updates(theta, updates), opt_state, bstate), (w, losses)

    theta = jnp.zeros(2)
    carry = (theta, opt.init(theta), bal.init(2))
    run = jax.jit(lambda c: jax.lax.scan(step_fn, c, jnp.arange(num_steps)))
    (theta, _, bstate), (ws, losses) = run(carry)
    return bstate, np.asarray(ws), np.asarray(losses)


def test_gradnorm_raises_weight_of_lagging_term():
    bstate, ws, losses = _toy_gradnorm_run()
    assert losses[-1, 0] / losses[0, 0] < losses[-1, 1] / losses[0, 1]  # term 1 lags
    assert ws[-1, 1] > 1.5 and ws[-1, 0] < 0.5
    np.testing.assert_allclose(ws.sum(axis=1), 2.0, rtol=1e-6)
    assert ws.min() >= 0.1 - 1e-7 and ws.max() <= 10.0 + 1e-6
    assert int(bstate.num_updates) == 60
    # weights change only on update steps (they are constant between multiples of update_every)
    changes = np.nonzero(np.any(np.diff(ws, axis=0) != 0, axis=1))[0] + 1
    assert set(changes.tolist()) <= set(range(0, 300, 5))
    # determinism: same program, bitwise same result
    _, ws2, _ = _toy_gradnorm_run()
    np.testing.assert_array_equal(ws, ws2)


# ----------------------------------------------------------------------------------------------
# gradient-norm ratio


def test_grad_ratio_targets_and_momentum():
    targets = balancing.grad_ratio_targets(jnp.array([1.0, 4.0]), jnp.ones(2))
    np.testing.assert_allclose(targets, [5.0, 1.25])
    bal = balancing.grad_ratio(NAMES2, momentum=0.9, update_every=100)
    state = bal.init(2)
    upd = _jit_update(bal)
    state = upd(state, 0, jnp.array([1.0, 1.0]), _f32([1.0, 4.0]))
    np.testing.assert_allclose(bal.weights(state), [0.9 + 0.5, 0.9 + 0.125], rtol=1e-6)
    # non-update step: state unchanged, even though the norms differ
    same = upd(state, 150, jnp.array([1.0, 1.0]), _f32([3.0, 1.0]))
    _assert_state_equal(same, state)
    state = upd(state, 200, jnp.array([1.0, 1.0]), _f32([2.0, 2.0]))
    np.testing.assert_allclose(bal.weights(state), [0.9 * 1.4 + 0.2, 0.9 * 1.025 + 0.2], rtol=1e-6)
    np.testing.assert_allclose(bal.stats(state)["grad_norm_ic"], 2.0)
    assert int(state.num_updates) == 2


def test_grad_ratio_guards():
    bal = balancing.grad_ratio(NAMES2, momentum=0.5, update_every=1)
    state = bal.init(2)
    upd = _jit_update(bal)
    # zero norm: that term keeps its weight; the other gets Σn/n = 1
    s1 = upd(state, 0, jnp.zeros(2), _f32([0.0, 3.0]))
    np.testing.assert_allclose(s1.weights, [1.0, 1.0])
    s1 = upd(state, 0, jnp.zeros(2), _f32([0.0, 0.0]))
    np.testing.assert_allclose(s1.weights, [1.0, 1.0])
    s2 = upd(state, 0, jnp.zeros(2), _f32([jnp.nan, 1.0]))
    _assert_state_equal(s2, state)


# ----------------------------------------------------------------------------------------------
# periodic evaluation, compilation


def _balancer(method: str, update_every: int) -> balancing.Balancer:
    if method == "fixed":
        return balancing.fixed([1.0, 1.0], NAMES2)
    return getattr(balancing, method)(NAMES2, update_every=update_every)


@pytest.mark.parametrize("method", ["gradnorm", "grad_ratio"])
def test_grad_norms_fn_runs_only_on_update_steps(method):
    calls = []
    bal = _balancer(method, update_every=10)

    def body(state, step):
        def grad_norms_fn():
            jax.debug.callback(lambda s: calls.append(int(s)), step)
            return jnp.array([1.0, 2.0])

        return bal.update(state, step, jnp.array([1.0, 1.0]), grad_norms_fn), None

    state, _ = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(35)))(bal.init(2))
    jax.effects_barrier()
    assert sorted(calls) == [0, 10, 20, 30]
    assert int(state.num_updates) == 4


@pytest.mark.parametrize("method", ["fixed", "gradnorm", "grad_ratio"])
def test_no_recompilation_across_steps(method):
    traces = []
    bal = _balancer(method, update_every=3)

    @jax.jit
    def step_fn(state, step, theta):
        traces.append(1)
        losses = jnp.stack([jnp.sum(theta**2), jnp.sum((theta - 1.0) ** 2)])
        norms = lambda: jnp.stack([2 * jnp.linalg.norm(theta), 2 * jnp.linalg.norm(theta - 1.0)])
        state = bal.update(state, step, losses, norms)
        return state, theta * 0.9

    state, theta = bal.init(2), jnp.array([2.0, -1.0])
    structure = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    for step in range(20):
        state, theta = step_fn(state, jnp.int32(step), theta)
    assert len(traces) == 1
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == structure
    assert np.all(np.isfinite(state.weights))


# ----------------------------------------------------------------------------------------------
# causal time weighting


def test_causal_hand_example_and_gradient():
    t = jnp.array([0.1, 0.2, 0.3, 0.6])  # chunks of width 0.25: 0, 0, 1, 2; chunk 3 empty
    r2 = jnp.array([1.0, 3.0, 2.0, 4.0])  # chunk losses L = (2, 2, 4, 0)
    loss, w = _causal(r2, t, 0.0, 1.0, num_chunks=4, tolerance=0.5)
    expected_w = np.exp(-0.5 * np.array([0.0, 2.0, 4.0, 8.0]))
    np.testing.assert_allclose(w, expected_w, rtol=1e-6)
    assert float(w[0]) == 1.0 and np.all(np.diff(np.asarray(w)) < 0)
    np.testing.assert_allclose(loss, (2 + 2 * math.exp(-1) + 4 * math.exp(-2)) / 4, rtol=1e-6)
    # d loss / d r2_p = w_k / (M n_k): no gradient through the weights
    g = jax.jit(jax.grad(lambda r: causal_residual_loss(r, t, 0.0, 1.0, 4, 0.5)[0]))(r2)
    np.testing.assert_allclose(g, [1 / 8, 1 / 8, math.exp(-1) / 4, math.exp(-2) / 4], rtol=1e-6)


def test_causal_validity_weights_empty_chunks_and_clamping():
    t = jnp.array([0.1, 0.2, 0.3, 1.0, -0.5])  # t = t_max -> last chunk; t < t_min -> first
    r2 = jnp.array([1.0, 100.0, 2.0, 5.0, 3.0])
    v = jnp.array([1.0, 0.0, 1.0, 1.0, 1.0])  # point 1 is padding
    f = lambda r: causal_residual_loss(r, t, 0.0, 1.0, 8, 1.0, weights=v)
    (loss, w), g = jax.jit(jax.value_and_grad(f, has_aux=True))(r2)
    # chunks of width 1/8: L0 = (1 + 3)/2 = 2, L1 = 0 (only padding), L2 = 2,
    # L3..L6 = 0 (empty), L7 = 5
    expected_w = np.exp(-np.array([0, 2, 2, 4, 4, 4, 4, 4.0]))
    np.testing.assert_allclose(w, expected_w, rtol=1e-6)
    np.testing.assert_allclose(loss, (2 + 2 * math.exp(-2) + 5 * math.exp(-4)) / 8, rtol=1e-6)
    assert np.all(np.isfinite(g)) and float(g[1]) == 0.0
    # tolerance 0: plain mean of chunk means
    loss0, w0 = _causal(r2, t, 0.0, 1.0, num_chunks=8, tolerance=0.0, weights=v)
    np.testing.assert_array_equal(w0, np.ones(8))
    np.testing.assert_allclose(loss0, 9 / 8, rtol=1e-6)


def test_causal_random_monotone_under_jit():
    rng = np.random.default_rng(3)
    t = rng.uniform(size=512)
    t, r2 = _f32(t), _f32(rng.uniform(size=512) * (1 + 10 * t))
    loss, w = _causal(r2, t, 0.0, 1.0, num_chunks=16, tolerance=0.1)
    assert w.shape == (16,) and float(w[0]) == 1.0
    assert np.all(np.diff(np.asarray(w)) <= 0) and float(w[-1]) < 0.1
    assert 0 < float(loss) < float(jnp.mean(r2))
    with pytest.raises(ValueError, match="t_max = 0.0"):
        causal_residual_loss(r2, t, 0.0, 0.0, 16, 0.1)
