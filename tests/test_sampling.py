"""Tests for `pinn.sampling`: distributions, bank invariants, buffers, schedules, compilation."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from pinn import sampling

#: a sampler's hyperparameters as attributes (`**vars(hp)` passes them on)
HP = SimpleNamespace

# t in [0, 1], x in [-1, 1) periodic
DOMAIN = SimpleNamespace(lower=(0.0, -1.0), upper=(1.0, 1.0), periodic=(False, True))
LOWER = np.array(DOMAIN.lower)
UPPER = np.array(DOMAIN.upper)


def bump(z):
    """A smooth residual field peaked at (t, x) = (0.3, 0.2) (numpy; `jbump` is the jax twin)."""
    return 2.0 * np.exp(-((z[:, 0] - 0.3) ** 2 + (z[:, 1] - 0.2) ** 2) / 0.05) + 0.01 * z[:, 0]


def bump2(z):
    """A different field, peaked at (0.8, -0.6), to check that the bank is re-scored."""
    return np.exp(-((z[:, 0] - 0.8) ** 2 + (z[:, 1] + 0.6) ** 2) / 0.02)


def jbump(z):
    return 2.0 * jnp.exp(-((z[:, 0] - 0.3) ** 2 + (z[:, 1] - 0.2) ** 2) / 0.05) + 0.01 * z[:, 0]


def jbump2(z):
    return jnp.exp(-((z[:, 0] - 0.8) ** 2 + (z[:, 1] + 0.6) ** 2) / 0.02)


def step_fn(sampler, residual_fn):
    """One jitted sampler step `run(state, step, seed=1)`: update with key fold_in(seed, step),
    then batch and stats (one compilation for all steps and seeds)."""

    @jax.jit
    def run(state, step, seed=1):
        key = jax.random.fold_in(jax.random.key(seed), step)
        state = sampler.update(state, key, step, residual_fn)
        return state, sampler.batch(state), sampler.stats(state, step)

    return run


def rows_in(a, b, tol=0.0):
    """Boolean (len(a),): whether each row of `a` equals some row of `b`."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (np.abs(a[:, None, :] - b[None, :, :]).max(-1) <= tol).any(1)


def sorted_rows(a):
    a = np.asarray(a, np.float64)
    return a[np.lexsort(a.T[::-1])]


# ----------------------------------------------------------------------------------------------
# helpers


def test_uniform_points_in_box_and_deterministic():
    pts = np.asarray(sampling.uniform_points(jax.random.key(0), 4000, LOWER, UPPER))
    assert pts.shape == (4000, 2)
    assert np.all(pts >= LOWER) and np.all(pts <= UPPER)
    for axis in range(2):
        unit = (pts[:, axis] - LOWER[axis]) / (UPPER[axis] - LOWER[axis])
        assert sps.kstest(unit, "uniform").pvalue > 1e-3
    again = sampling.uniform_points(jax.random.key(0), 4000, LOWER, UPPER)
    np.testing.assert_array_equal(pts, np.asarray(again))


def test_collocation_points_sobol_and_uniform():
    sob = sampling.collocation_points("sobol", 1024, LOWER, UPPER, seed=3)
    assert sob.dtype == np.float64 and sob.shape == (1024, 2)
    assert np.all(sob >= LOWER) and np.all(sob < UPPER)
    np.testing.assert_array_equal(sob, sampling.collocation_points("sobol", 1024, LOWER, UPPER, 3))
    assert not np.array_equal(sob, sampling.collocation_points("sobol", 1024, LOWER, UPPER, 4))
    uni = sampling.collocation_points("uniform", 1024, LOWER, UPPER, seed=3)
    assert uni.dtype == np.float64 and np.all(uni >= LOWER) and np.all(uni < UPPER)
    # Sobol' is far better balanced than i.i.d. points: 16 x 16 cell counts are all exactly 4
    def cell_counts(p):
        unit = (p - LOWER) / (UPPER - LOWER)
        return np.histogram2d(unit[:, 0], unit[:, 1], bins=16, range=[[0, 1], [0, 1]])[0]

    assert np.all(cell_counts(sob) == 4)
    assert not np.all(cell_counts(uni) == 4)
    with pytest.raises(ValueError, match="sobol"):
        sampling.collocation_points("halton", 8, LOWER, UPPER, 0)


# ----------------------------------------------------------------------------------------------
# uniform


def test_uniform_resample_fresh_each_step():
    s = sampling.uniform(DOMAIN, 128)
    run = step_fn(s, jbump)
    state = s.init(jax.random.key(0))
    state, (p0, w0), _ = run(state, jnp.int32(0))
    state, (p1, _), _ = run(state, jnp.int32(1))
    assert p0.shape == (128, 2) and np.all(np.asarray(w0) == 1.0)
    assert not np.any(rows_in(p1, p0))


def test_uniform_fixed_points_whole_set_or_subset():
    fixed = sampling.collocation_points("sobol", 64, LOWER, UPPER, seed=0)
    whole = sampling.uniform(DOMAIN, 100, resample=False, fixed_points=fixed)
    state = whole.update(whole.init(jax.random.key(0)), jax.random.key(1), jnp.int32(0), jbump)
    np.testing.assert_allclose(np.asarray(whole.batch(state)[0]), fixed, rtol=1e-6)

    sub = sampling.uniform(DOMAIN, 16, resample=False, fixed_points=fixed)
    run = step_fn(sub, jbump)
    state = sub.init(jax.random.key(0))
    state, (a, w), _ = run(state, jnp.int32(0))
    state, (b, _), _ = run(state, jnp.int32(1))
    assert a.shape == (16, 2) and w.shape == (16,)
    assert np.all(rows_in(a, fixed, tol=1e-6)) and np.all(rows_in(b, fixed, tol=1e-6))
    assert len(np.unique(np.asarray(a), axis=0)) == 16  # without replacement
    assert not np.array_equal(np.asarray(a), np.asarray(b))  # a fresh subset each step

    with pytest.raises(ValueError):
        sampling.uniform(DOMAIN, 16, resample=False)
    with pytest.raises(ValueError):
        sampling.uniform(DOMAIN, 16, resample=True, fixed_points=fixed)


# ----------------------------------------------------------------------------------------------
# RAD


def rad_batch(cfg, residual_fn, batch_size=1024):
    s = sampling.rad(DOMAIN, batch_size, **vars(cfg))
    state, (pts, _), _ = step_fn(s, residual_fn)(s.init(jax.random.key(0)), jnp.int32(0))
    return s, state, np.asarray(pts)


def test_rad_large_c_is_uniform_and_small_c_concentrates():
    # large c: p ∝ |r|/mean|r| + c is flat, so each axis passes a KS test against uniform
    _, _, pts = rad_batch(HP(k=1.0, c=1e6, pool_size=4096), jbump)
    for axis in range(2):
        unit = (pts[:, axis] - LOWER[axis]) / (UPPER[axis] - LOWER[axis])
        assert sps.kstest(unit, "uniform").pvalue > 1e-2

    # c = 0, k = 1: p ∝ |r| concentrates on the bump, and fails the uniformity test
    s, state, pts = rad_batch(HP(k=1.0, c=0.0, pool_size=4096), jbump)
    stats = s.stats(state, jnp.int32(0))
    batch_mean = np.abs(bump(pts)).mean()
    pool_mean = float(stats["pool_mean_residual"])
    assert batch_mean > 3.0 * pool_mean
    np.testing.assert_allclose(float(stats["batch_mean_residual"]), batch_mean, rtol=1e-4)
    unit_x = (pts[:, 1] - LOWER[1]) / (UPPER[1] - LOWER[1])
    assert sps.kstest(unit_x, "uniform").pvalue < 1e-6


def test_rad_probabilities_formula_and_guards():
    mag = jnp.array([0.0, 1.0, 3.0, 4.0])
    p = np.asarray(sampling.rad_probabilities(mag, k=2.0, c=0.5))
    expect = np.array([0.0, 1.0, 9.0, 16.0]) / np.mean([0.0, 1.0, 9.0, 16.0]) + 0.5
    np.testing.assert_allclose(p, expect / expect.sum(), rtol=1e-6)
    # huge magnitudes do not overflow (|r|^k is formed on |r| / max|r|)
    p = np.asarray(sampling.rad_probabilities(mag * 1e30, k=2.0, c=0.5))
    np.testing.assert_allclose(p, expect / expect.sum(), rtol=1e-5)
    # all-zero residual with c = 0 falls back to uniform instead of 0/0
    p = np.asarray(sampling.rad_probabilities(jnp.zeros(4), k=1.0, c=0.0))
    np.testing.assert_allclose(p, 0.25)


def test_rad_non_finite_residual_attracts_no_points():
    def field(z):  # NaN on x > 0, inf on a strip, finite bump elsewhere
        r = jbump(z)
        r = jnp.where(z[:, 1] > 0.0, jnp.nan, r)
        return jnp.where((z[:, 1] < -0.9), jnp.inf, r)

    _, _, pts = rad_batch(HP(k=1.0, c=0.0, pool_size=4096), field, batch_size=512)
    assert np.all(np.isfinite(pts))
    assert np.all(pts[:, 1] <= 0.0) and np.all(pts[:, 1] >= -0.9)


def test_rad_batch_fixed_between_resamples():
    s = sampling.rad(DOMAIN, 64, pool_size=256, resample_every=3)
    run = step_fn(s, jbump)
    state = s.init(jax.random.key(0))
    batches = []
    for i in range(7):
        state, (pts, _), _ = run(state, jnp.int32(i))
        batches.append(np.asarray(pts))
    for i in (1, 2, 4, 5):
        np.testing.assert_array_equal(batches[i], batches[i - 1])
    for i in (3, 6):
        assert not np.array_equal(batches[i], batches[i - 1])


# ----------------------------------------------------------------------------------------------
# hard bank


def valid_bank(state):
    res = np.asarray(state.bank_residuals)
    valid = res > -np.inf
    return np.asarray(state.bank_points)[valid], res[valid]


def test_hard_bank_holds_true_top_points():
    cfg = HP(pool_size=512, bank_size=100, top_k=64, refresh_every=5, p_ramp_steps=0)
    s = sampling.hard_bank(DOMAIN, 64, **vars(cfg))
    inputs = []  # every (concrete) point set the residual is evaluated on, recorded from inside jit

    @jax.jit
    def update(state, seed, step, which):
        def residual_fn(z):
            jax.debug.callback(lambda zz: inputs.append(np.array(zz)), z)
            return jnp.where(which == 0, jbump(z), jbump2(z))

        return s.update(state, jax.random.key(seed), step, residual_fn)

    state = s.init(jax.random.key(0))
    assert valid_bank(state)[0].shape[0] == 0

    # first refresh: the bank is exactly the top-64 of the pool (brute-force numpy sort)
    state = update(state, 10, 0, 0)
    jax.effects_barrier()
    assert len(inputs) == 1
    pool = inputs[0][: cfg.pool_size]
    top = pool[np.argsort(-np.abs(bump(pool)))[: cfg.top_k]]
    pts, res = valid_bank(state)
    assert pts.shape == (64, 2)
    np.testing.assert_array_equal(sorted_rows(pts), sorted_rows(top))
    assert np.all(np.diff(res) <= 0)  # sorted, largest first
    np.testing.assert_allclose(res, np.abs(bump(pts)), rtol=1e-5)

    # no refresh between refresh steps: the bank does not move, the residual is not evaluated
    before = np.asarray(state.bank_points)
    for step in range(1, 5):
        state = update(state, 10 + step, step, 0)
    jax.effects_barrier()
    assert len(inputs) == 1
    np.testing.assert_array_equal(np.asarray(state.bank_points), before)

    # second and third refresh, the second with a *different* field: bank = top-100 of
    # (old bank re-scored) ∪ (top-64 of the new pool), with the current field's values
    for step, which, field in ((5, 1, bump2), (10, 0, bump)):
        old_pts, _ = valid_bank(state)
        inputs.clear()
        state = update(state, 100 + step, step, which)
        jax.effects_barrier()
        pool = inputs[0][: cfg.pool_size]
        new_top = pool[np.argsort(-np.abs(field(pool)))[: cfg.top_k]]
        union = np.concatenate([old_pts, new_top])
        expect = union[np.argsort(-np.abs(field(union)))[: cfg.bank_size]]
        pts, res = valid_bank(state)
        assert pts.shape == (100, 2)
        np.testing.assert_array_equal(sorted_rows(pts), sorted_rows(expect))
        np.testing.assert_allclose(res, np.sort(np.abs(field(expect)))[::-1], rtol=1e-5)
        stats = s.stats(state, jnp.int32(step))
        assert int(stats["bank_size"]) == 100
        np.testing.assert_allclose(float(stats["bank_max_residual"]), res[0], rtol=1e-6)
        np.testing.assert_allclose(float(stats["bank_min_residual"]), res[-1], rtol=1e-6)


def test_hard_bank_non_finite_residuals_do_not_enter_the_top():
    cfg = HP(pool_size=256, bank_size=32, top_k=32, refresh_every=1)
    s = sampling.hard_bank(DOMAIN, 16, **vars(cfg))
    field = lambda z: jnp.where(z[:, 1] > 0.5, jnp.nan, jbump(z))  # noqa: E731
    state, _, _ = step_fn(s, field)(s.init(jax.random.key(0)), jnp.int32(0))
    pts, res = valid_bank(state)
    assert np.all(np.isfinite(res)) and np.all(pts[:, 1] <= 0.5)


def test_mixing_probability_schedule():
    steps = jnp.array([0, 99, 100, 200, 250, 300, 10_000])
    p = np.asarray(sampling.mixing_probability(steps, 0.2, 100, 200))
    np.testing.assert_allclose(p, [0.0, 0.0, 0.0, 0.1, 0.15, 0.2, 0.2], atol=1e-7)
    p = np.asarray(sampling.mixing_probability(steps, 0.2, 100, 0))  # step function
    np.testing.assert_allclose(p, [0.0, 0.0, 0.2, 0.2, 0.2, 0.2, 0.2], atol=1e-7)


def run_hard_bank(cfg, batch_size, steps, field=jbump, seed=1):
    s = sampling.hard_bank(DOMAIN, batch_size, **vars(cfg))

    def body(state, step):
        key = jax.random.fold_in(jax.random.key(seed), step)
        state = s.update(state, key, step, field)
        return state, (s.batch(state)[0], state.bank_points, s.stats(state, step))

    state, (batches, banks, stats) = jax.jit(lambda st: jax.lax.scan(body, st, jnp.arange(steps)))(
        s.init(jax.random.key(0))
    )
    return s, state, np.asarray(batches), np.asarray(banks), jax.tree.map(np.asarray, stats)


def test_hard_bank_share_follows_p():
    batch_size, steps = 64, 900
    cfg = HP(
        pool_size=128, bank_size=32, top_k=16, refresh_every=10,
        p_start_step=100, p_ramp_steps=100, p_max=0.3,
    )
    _, _, batches, banks, stats = run_hard_bank(cfg, batch_size, steps)
    p_expect = np.asarray(sampling.mixing_probability(jnp.arange(steps), 0.3, 100, 100))
    np.testing.assert_allclose(stats["p"], p_expect, atol=1e-6)
    n_bank = np.rint(stats["bank_share"] * batch_size).astype(int)
    assert np.all(n_bank[:101] == 0)  # no bank points before p_start_step (p = 0 at it)
    # stochastic rounding: the count is floor(p·B) or ceil(p·B) ...
    assert np.all(n_bank >= np.floor(p_expect * batch_size - 1e-4))
    assert np.all(n_bank <= np.ceil(p_expect * batch_size + 1e-4))
    # ... and p·B on average: 0.3 · 64 = 19.2 at full p (std of the mean 0.4/sqrt(700) ≈ 0.015)
    assert set(np.unique(n_bank[200:])) == {19, 20}
    assert abs(n_bank[200:].mean() - 19.2) < 0.08
    # the reported share is the real one: exactly that many batch rows are bank points
    for step in (50, 150, 199, 250, 899):
        from_bank = rows_in(batches[step], banks[step])
        assert from_bank.sum() == n_bank[step]
        assert np.all(from_bank[: n_bank[step]])


def test_hard_bank_p_zero_while_bank_empty():
    cfg = HP(
        pool_size=64, bank_size=16, top_k=8, refresh_every=10, p_ramp_steps=0, p_max=0.5
    )
    s = sampling.hard_bank(DOMAIN, 32, **vars(cfg))
    run = step_fn(s, jbump)
    state = s.init(jax.random.key(0))
    assert float(s.stats(state, jnp.int32(5))["p"]) == 0.0
    state, (pts, _), stats = run(state, jnp.int32(3))  # not a refresh step
    assert int(stats["bank_size"]) == 0 and float(stats["bank_share"]) == 0.0
    assert np.all(np.isfinite(np.asarray(pts)))
    state, _, stats = run(state, jnp.int32(10))  # refresh
    assert int(stats["bank_size"]) == 8 and float(stats["p"]) == pytest.approx(0.5)
    assert float(stats["bank_share"]) == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------
# RAR-D


def test_rar_d_buffer_fills_wraps_periodic_and_keeps_initial_points():
    initial = sampling.collocation_points("sobol", 50, LOWER, UPPER, seed=0)
    cfg = HP(
        num_new_points=16, percentile=90.0, noise_scale=0.05, every=4, capacity=130, pool_size=1024
    )
    s = sampling.rar_d(DOMAIN, initial, **vars(cfg))

    def edge(z):  # peaked on the periodic seam x = ±1 and at the final time t = 1
        return jnp.exp(-((1.0 - jnp.abs(z[:, 1])) ** 2) / 0.01 - (1.0 - z[:, 0]) ** 2 / 0.01)

    run = step_fn(s, edge)
    state = s.init(jax.random.key(0))
    np.testing.assert_allclose(np.asarray(s.batch(state)[1]).sum(), 50)
    history = []
    for step in range(26):
        state, (pts, w), stats = run(state, jnp.int32(step))
        history.append((np.asarray(pts), np.asarray(w)))
        rounds = step // 4 + 1
        expect = min(50 + 16 * rounds, 130)
        assert int(stats["num_points"]) == expect and int(stats["num_added"]) == 16 * rounds
        np.testing.assert_array_equal(w, (np.arange(130) < expect).astype(w.dtype))
        # the initial points are never overwritten
        np.testing.assert_allclose(pts[:50], initial, rtol=1e-6)

    pts, _ = history[-1]
    added = pts[50:]
    assert np.all(added[:, 0] >= 0.0) and np.all(added[:, 0] <= 1.0)  # time clipped
    assert np.any(added[:, 0] == 1.0)  # (jitter pushed some past t = 1: clipped, not dropped)
    assert np.all(added[:, 1] >= -1.0) and np.all(added[:, 1] < 1.0)  # x wrapped into [-1, 1)
    assert np.sum(np.abs(added[:, 1]) == 1.0) == 0  # wrapped, not clipped onto the seam
    assert np.sum(added[:, 1] > 0.8) > 10 and np.sum(added[:, 1] < -0.8) > 10  # both sides
    assert np.all(1.0 - np.abs(added[:, 1]) < 0.5)  # all near the seam

    # steps 20 and 24 overwrote the ring: oldest added slots (50..81) replaced, the rest kept
    before_ring, _ = history[19]
    np.testing.assert_array_equal(pts[82:], before_ring[82:])
    assert not np.any(rows_in(pts[50:82], before_ring[50:82]))


def test_rar_d_adds_only_points_above_the_percentile():
    initial = sampling.collocation_points("uniform", 10, LOWER, UPPER, seed=0)
    cfg = HP(
        num_new_points=200, percentile=90.0, noise_scale=0.0, every=1, capacity=210, pool_size=4096
    )
    s = sampling.rar_d(DOMAIN, initial, **vars(cfg))
    state, _, _ = step_fn(s, lambda z: z[:, 0])(s.init(jax.random.key(0)), jnp.int32(0))
    added = np.asarray(state.points)[10:]
    assert added[:, 0].min() > 0.85  # |r| = t: only the top 10 % of the pool (t ≳ 0.9) qualify
    assert len(np.unique(added, axis=0)) > 100  # sampled ∝ |r| over many points, not one


def test_rar_d_capacity_error():
    initial = np.zeros((20, 2))
    with pytest.raises(ValueError, match="capacity"):
        sampling.rar_d(DOMAIN, initial, capacity=10)


# ----------------------------------------------------------------------------------------------
# shared properties


SAMPLERS = {
    "uniform": lambda: sampling.uniform(DOMAIN, 64),
    "uniform_fixed": lambda: sampling.uniform(
        DOMAIN, 32, resample=False,
        fixed_points=sampling.collocation_points("sobol", 64, LOWER, UPPER, 0),
    ),
    "rad": lambda: sampling.rad(DOMAIN, 64, pool_size=256, resample_every=4),
    "rar_d": lambda: sampling.rar_d(
        DOMAIN, np.full((8, 2), 0.5),
        capacity=64, pool_size=256, every=4, num_new_points=8,
    ),
    "hard_bank": lambda: sampling.hard_bank(
        DOMAIN, 64,
        pool_size=256, bank_size=32, top_k=8, refresh_every=4, p_ramp_steps=6,
    ),
}


_TRAIN_STEPS: dict = {}


def train_step_for(name):
    """A jitted mock training step around sampler `name` (cached: shared by the tests below), and
    the list its Python body appends to on every trace."""
    if name not in _TRAIN_STEPS:
        s = SAMPLERS[name]()
        traces = []

        @jax.jit
        def train_step(state, key, step, scale):
            traces.append(1)  # Python side effect: runs once per trace
            # closes over a traced "parameter", like a real residual closes over the params
            residual_fn = lambda z: scale * jbump(z)  # noqa: E731
            state = s.update(state, key, step, residual_fn)
            pts, w = s.batch(state)
            loss = jnp.sum(w * residual_fn(pts) ** 2) / jnp.sum(w)
            return state, (pts, w), loss, s.stats(state, step)

        _TRAIN_STEPS[name] = (s, train_step, traces)
    return _TRAIN_STEPS[name]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_compiled_once_across_refresh_and_plain_steps(name):
    s, train_step, traces = train_step_for(name)
    state = s.init(jax.random.key(0))
    struct = jax.tree.map(lambda a: (a.shape, a.dtype), state)
    for step in range(13):  # covers refresh steps (0, 4, 8, 12) and plain ones
        key, step_arr = jax.random.key(step), jnp.int32(step)
        state, _, loss, _ = train_step(state, key, step_arr, jnp.float32(1.0 + step))
        assert np.isfinite(float(loss))
        assert jax.tree.map(lambda a: (a.shape, a.dtype), state) == struct
    assert len(traces) == 1
    assert train_step._cache_size() == 1


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_deterministic_given_keys(name):
    s, train_step, _ = train_step_for(name)

    def trajectory(seed):
        state = s.init(jax.random.key(seed))
        out = []
        for step in range(6):
            key = jax.random.fold_in(jax.random.key(seed), step)
            state, (pts, w), _, _ = train_step(state, key, jnp.int32(step), jnp.float32(1.0))
            out.append((np.asarray(pts), np.asarray(w)))
        return out

    a, b, c = trajectory(3), trajectory(3), trajectory(4)
    for (pa, wa), (pb, wb) in zip(a, b):
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(pa, pc) for (pa, _), (pc, _) in zip(a, c))


