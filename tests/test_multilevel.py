"""Coarse-to-fine cascade: widths, function-preserving widening, Adam state transfer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pinn.config
import pinn.models as models
from pinn.multilevel import level_widths, prolongate, prolongate_adam_state

LOWER, UPPER = (0.0, -1.0), (1.0, 1.0)


def _model(width, depth=3, *, periodic=False, rwf=None, fourier=0, dtype=jnp.float32, seed=0):
    embedding = models.Embedding(LOWER, UPPER, (False, periodic))
    return models.PINN(
        embedding,
        width=width,
        depth=depth,
        rwf=rwf,
        fourier_features=fourier,
        fourier_scale=2.0,
        dtype=dtype,
        rngs=nnx.Rngs(seed),
    )


def _points(n, key, dtype=jnp.float32):
    # a margin outside the domain too: exactness must not depend on where the points lie
    lo, hi = jnp.array(LOWER) - 0.2, jnp.array(UPPER) + 0.2
    return (lo + (hi - lo) * jax.random.uniform(jax.random.PRNGKey(key), (n, 2))).astype(dtype)


def _perturb(params, key, size=0.3):
    """Stand-in for trained coarse params: every entry (zero biases too) moved off its init."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(key), len(leaves))
    return treedef.unflatten(
        [x + size * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    )


def _layers(params):
    """[(kernel, bias, scale|None)] of the hidden layers then the output layer, as numpy."""
    d = nnx.to_pure_dict(params)
    layers = [d["hidden"][i] for i in sorted(d["hidden"])] + [d["output"]]
    return [(np.asarray(l["kernel"]), np.asarray(l["bias"]), l.get("scale")) for l in layers]


def _target(z):
    return jnp.sin(jnp.pi * z[:, 1]) * jnp.exp(-z[:, 0])


# ----------------------------------------------------------------------------------------------
# level widths


def test_level_widths_values_and_config_agreement():
    assert level_widths(64, 3, 0.5) == [16, 32, 64]
    assert level_widths(64, 1, 0.5) == [64]
    assert level_widths(5, 4, 0.5) == [1, 1, 2, 5]  # 0.625 → 1 (floor of 1), 1.25 → 1, 2.5 → 2
    assert level_widths(48, 3, 0.75) == [27, 36, 48]
    assert level_widths(7, 3, 1.0) == [7, 7, 7]
    names = ["level0", "level1", "level2", "level3"]
    params = pinn.config.validate_params(
        {
            "model": {"width": 50},
            "multilevel": {
                "num_levels": 4,
                "coarsening_factor": 0.6,
                "levels": {
                    n: {"steps": 10, "init_from": "init" if i == 0 else names[i - 1]}
                    for i, n in enumerate(names)
                },
            },
        }
    )
    assert level_widths(50, 4, 0.6) == list(pinn.config.level_widths(params).values())
    for bad in [(0, 3, 0.5), (8, 0, 0.5), (8, 3, 0.0), (8, 3, 1.5)]:
        with pytest.raises(ValueError):
            level_widths(*bad)


# ----------------------------------------------------------------------------------------------
# prolongation


CASES = [
    # depth, coarse width, fine width, periodic x, rwf, Fourier features
    (2, 8, 16, False, None, 0),
    (3, 16, 32, True, None, 0),
    (4, 5, 12, False, None, 0),
    (2, 8, 16, True, (0.5, 0.1), 0),
    (3, 5, 12, False, (1.0, 0.1), 0),
    (3, 8, 16, False, None, 6),
    (4, 16, 32, True, (0.5, 0.1), 8),
]


@pytest.mark.parametrize("depth,wc,wf,periodic,rwf,fourier", CASES)
def test_prolongate_preserves_function_and_layout(depth, wc, wf, periodic, rwf, fourier):
    kw = dict(depth=depth, periodic=periodic, rwf=rwf, fourier=fourier)
    gc, pc, rc = models.split(_model(wc, **kw))
    gf, pf_init, rf = models.split(_model(wf, **kw))
    pc = _perturb(pc, key=depth + wc)
    pf = prolongate(pc, pf_init, coarse_rest=rc, fine_rest=rf)

    assert jax.tree_util.tree_structure(pf) == jax.tree_util.tree_structure(pf_init)
    z = _points(2048, key=wf)
    u_c = models.apply_fn(gc, rc)(pc, z)
    u_f = models.apply_fn(gf, rf)(pf, z)
    assert float(jnp.max(jnp.abs(u_c))) > 0.1  # a nontrivial function
    assert float(jnp.max(jnp.abs(u_f - u_c))) <= 1e-6

    for (kc, bc, sc), (kf, bf, sf), (k0, b0, s0) in zip(_layers(pc), _layers(pf), _layers(pf_init)):
        i, o = kc.shape
        np.testing.assert_array_equal(kf[:i, :o], kc)  # old block copied
        np.testing.assert_array_equal(bf[:o], bc)
        assert np.all(kf[i:, :] == 0)  # rows reading new units: zero outgoing weights
        np.testing.assert_array_equal(kf[:i, o:], k0[:i, o:])  # new units' incoming: fine init
        np.testing.assert_array_equal(bf[o:], b0[o:])
        if kf.shape[1] > o:
            assert np.any(kf[:i, o:] != 0)  # new units are alive (nonzero activations)
        if rwf is not None:
            np.testing.assert_array_equal(np.asarray(sf)[:o], np.asarray(sc))
            np.testing.assert_array_equal(np.asarray(sf)[o:], np.asarray(s0)[o:])


def test_prolongate_float64_exact():
    with jax.enable_x64(True):
        kw = dict(depth=3, periodic=True, rwf=(0.5, 0.1), fourier=4, dtype=jnp.float64)
        gc, pc, rc = models.split(_model(6, **kw))
        gf, pf_init, rf = models.split(_model(13, **kw))
        pc = _perturb(pc, key=3)
        pf = prolongate(pc, pf_init, coarse_rest=rc, fine_rest=rf)
        assert all(x.dtype == jnp.float64 for x in jax.tree_util.tree_leaves(pf))
        z = _points(1024, key=5, dtype=jnp.float64)
        diff = models.apply_fn(gf, rf)(pf, z) - models.apply_fn(gc, rc)(pc, z)
        assert float(jnp.max(jnp.abs(diff))) <= 1e-12


def test_prolongate_rejects_incompatible_networks():
    _, pc, rc = models.split(_model(8, fourier=4, seed=0))
    _, pf, rf = models.split(_model(16, fourier=4, seed=0))
    _, _, rf_other = models.split(_model(16, fourier=4, seed=1))
    with pytest.raises(ValueError, match="Fourier|seed"):
        prolongate(pc, pf, coarse_rest=rc, fine_rest=rf_other)
    with pytest.raises(ValueError, match="does not fit"):
        prolongate(pf, pc)  # narrowing
    _, p_deeper, _ = models.split(_model(16, depth=4, fourier=4))
    with pytest.raises(ValueError, match="structure"):
        prolongate(pc, p_deeper)
    _, p_rwf, _ = models.split(_model(16, fourier=4, rwf=(0.5, 0.1)))
    with pytest.raises(ValueError, match="structure"):
        prolongate(pc, p_rwf)
    with pytest.raises(ValueError, match="both"):
        prolongate(pc, pf, coarse_rest=rc)
    prolongate(pc, pf, coarse_rest=rc, fine_rest=rf)  # same seed: accepted


def test_new_units_are_trainable():
    """Zero outgoing weights get gradient h_new ⊗ δ at once; incoming ones from the second step."""
    gc, pc, rc = models.split(_model(8, depth=3, rwf=(0.5, 0.1)))
    gf, pf_init, rf = models.split(_model(16, depth=3, rwf=(0.5, 0.1)))
    pf = prolongate(_perturb(pc, key=1), pf_init)
    u = models.apply_fn(gf, rf)
    z = _points(256, key=2)

    def loss(p):
        return jnp.mean((u(p, z) - _target(z)) ** 2)

    opt = optax.adam(1e-3)
    state = opt.init(pf)
    steps = [pf]
    for _ in range(2):
        updates, state = opt.update(jax.grad(loss)(steps[-1]), state, steps[-1])
        steps.append(optax.apply_updates(steps[-1], updates))
    before, after1, after2 = (_layers(p) for p in steps)
    for layer in range(1, 4):  # hidden 1, 2 and the output layer read new units
        assert np.all(before[layer][0][8:] == 0)
        assert np.all(after1[layer][0][8:] != 0)
    for layer in range(3):  # incoming weights of the new units (columns 8:)
        np.testing.assert_array_equal(after1[layer][0][:, 8:], before[layer][0][:, 8:])
        assert np.any(after2[layer][0][:, 8:] != before[layer][0][:, 8:])


# ----------------------------------------------------------------------------------------------
# Adam state transfer


def _median_ratio(mu, nu, t, b1=0.9, b2=0.999):
    ratio = (np.abs(mu) / (1 - b1**t)) / (np.sqrt(nu / (1 - b2**t)) + 1e-38)
    return float(np.clip(np.median(ratio), 1e-3, 1.0))


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda: optax.adam(1e-3),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.exponential_decay(1e-3, 10, 0.9))),
        lambda: optax.inject_hyperparams(optax.adam)(learning_rate=1e-3),
    ],
    ids=["adam", "chain_schedule", "inject_hyperparams"],
)
def test_adam_state_layout_and_seeding(make_opt):
    gc, pc, rc = models.split(_model(5, depth=2, rwf=(0.5, 0.1)))
    gf, pf_init, rf = models.split(_model(12, depth=2, rwf=(0.5, 0.1)))
    z = _points(128, key=0)
    uc, uf = models.apply_fn(gc, rc), models.apply_fn(gf, rf)
    opt = make_opt()
    state_c = opt.init(pc)
    for _ in range(7):
        g = jax.grad(lambda p: jnp.mean((uc(p, z) - _target(z)) ** 2))(pc)
        updates, state_c = opt.update(g, state_c, pc)
        pc = optax.apply_updates(pc, updates)
    pf = prolongate(pc, pf_init)
    grads = jax.grad(lambda p: jnp.mean((uf(p, z) - _target(z)) ** 2))(pf)
    state_f = prolongate_adam_state(state_c, pc, pf, grads)

    fresh = opt.init(pf)
    assert jax.tree_util.tree_structure(state_f) == jax.tree_util.tree_structure(fresh)
    for a, b in zip(jax.tree_util.tree_leaves(state_f), jax.tree_util.tree_leaves(fresh)):
        assert a.shape == b.shape and a.dtype == b.dtype
    adam_c = [s for s in jax.tree_util.tree_leaves(state_c, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]
    adam_f = [s for s in jax.tree_util.tree_leaves(state_f, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]
    assert len(adam_c) == len(adam_f) == 1
    (ac,), (af,) = adam_c, adam_f
    assert int(af.count) == int(ac.count) == 7
    # every scalar / count elsewhere (schedule, inject_hyperparams) passes through unchanged
    for a, b in zip(jax.tree_util.tree_leaves(state_c), jax.tree_util.tree_leaves(state_f)):
        if a.ndim == 0:
            assert a == b

    bias = 1 - 0.999**7
    for mu_c, nu_c, mu_f, nu_f, g in zip(
        *(jax.tree_util.tree_leaves(x) for x in (ac.mu, ac.nu, af.mu, af.nu, grads))
    ):
        block = tuple(slice(0, n) for n in mu_c.shape)
        np.testing.assert_array_equal(mu_f[block], mu_c)
        np.testing.assert_array_equal(nu_f[block], nu_c)
        new = np.ones(mu_f.shape, bool)
        new[block] = False
        assert np.all(np.asarray(mu_f)[new] == 0)
        rho = _median_ratio(np.asarray(mu_c), np.asarray(nu_c), 7)
        np.testing.assert_allclose(
            np.asarray(nu_f)[new], bias * np.asarray(g)[new] ** 2 / rho**2, rtol=1e-5, atol=1e-30
        )

    # without gradients: the leaf's mean old nu
    state_m = prolongate_adam_state(state_c, pc, pf)
    (am,) = [s for s in jax.tree_util.tree_leaves(state_m, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]
    for nu_c, nu_m in zip(jax.tree_util.tree_leaves(ac.nu), jax.tree_util.tree_leaves(am.nu)):
        new = np.ones(nu_m.shape, bool)
        new[tuple(slice(0, n) for n in nu_c.shape)] = False
        np.testing.assert_allclose(np.asarray(nu_m)[new], float(np.mean(nu_c)), rtol=1e-6)


def _fit_and_transfer(lr=1e-2, coarse_steps=200, wc=16, wf=32):
    z = jax.random.uniform(jax.random.PRNGKey(1), (512, 2)) * jnp.array([1.0, 2.0]) - jnp.array([0.0, 1.0])
    y = _target(z)
    gc, pc, rc = models.split(_model(wc, depth=3))
    gf, pf_init, rf = models.split(_model(wf, depth=3))
    uc, uf = models.apply_fn(gc, rc), models.apply_fn(gf, rf)
    loss_c = jax.jit(lambda p: jnp.mean((uc(p, z) - y) ** 2))
    loss_f = jax.jit(lambda p: jnp.mean((uf(p, z) - y) ** 2))
    opt = optax.adam(lr)

    def make_run(loss, steps):
        @jax.jit
        def run(p, s):
            def body(carry, _):
                p, s = carry
                updates, s = opt.update(jax.grad(loss)(p), s, p)
                p = optax.apply_updates(p, updates)
                return (p, s), loss(p)

            (p, s), losses = jax.lax.scan(body, (p, s), None, length=steps)
            return p, s, losses

        return run

    pc, state_c, _ = make_run(loss_c, coarse_steps)(pc, opt.init(pc))
    pf = prolongate(pc, pf_init, coarse_rest=rc, fine_rest=rf)
    grads = jax.grad(loss_f)(pf)
    return dict(
        pc=pc, state_c=state_c, pf=pf, grads=grads, loss_c=loss_c, loss_f=loss_f,
        run_c=make_run(loss_c, 1), run_f=make_run(loss_f, 1), run_f_long=make_run(loss_f, 300),
        run_c_long=make_run(loss_c, 300),
    )


@pytest.fixture(scope="module")
def transfer():
    return _fit_and_transfer()


def test_first_fine_step_does_not_jump(transfer):
    t = transfer
    loss0 = float(t["loss_c"](t["pc"]))
    assert abs(float(t["loss_f"](t["pf"])) - loss0) <= 1e-6 * max(loss0, 1e-3)
    _, _, coarse_next = t["run_c"](t["pc"], t["state_c"])

    seeded = prolongate_adam_state(t["state_c"], t["pc"], t["pf"], t["grads"])
    p1, _, fine_next = t["run_f"](t["pf"], seeded)
    # carried old entries take the coarse step; new ones barely move: same loss as the coarse step
    assert float(fine_next[0]) <= max(loss0, float(coarse_next[0])) * 1.1
    wc = _layers(t["pc"])[-1][0].shape[0]
    new_rows = _layers(p1)[-1][0][wc:]  # output weights reading the new units, 0 before the step
    assert 0 < np.max(np.abs(new_rows)) <= 0.1 * 1e-2 * 1.01  # ≈ (1-b1) ρ lr, ρ ≤ 1

    no_grads = prolongate_adam_state(t["state_c"], t["pc"], t["pf"])
    _, _, fine_next_m = t["run_f"](t["pf"], no_grads)
    assert float(fine_next_m[0]) <= max(loss0, float(coarse_next[0])) * 1.1

    # naive transfer: old entries carried, new mu = nu = 0 with the carried count → ≈3.16 lr steps
    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, t["grads"])
    naive = prolongate_adam_state(t["state_c"], t["pc"], t["pf"], zero_grads)
    _, _, naive_next = t["run_f"](t["pf"], naive)
    assert float(naive_next[0]) > 5 * loss0


def test_seeded_transfer_keeps_training_new_units(transfer):
    """The seeded wide network keeps improving on the coarse one instead of tracking it."""
    t = transfer
    seeded = prolongate_adam_state(t["state_c"], t["pc"], t["pf"], t["grads"])
    _, _, fine = t["run_f_long"](t["pf"], seeded)
    _, _, coarse = t["run_c_long"](t["pc"], t["state_c"])
    print(float(jnp.min(fine)), float(jnp.min(coarse)), float(fine[-1]), float(coarse[-1]))
