"""`pinn.models`: shapes, exact periodic embedding, fixed Fourier features, RWF, dtypes."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pinn.models import (
    PINN,
    Embedding,
    FactorizedDense,
    apply_fn,
    cast,
    count_params,
    make_model,
    split,
)
from pinn.problems import make_problem


def cfg(**kw):
    base = dict(width=16, depth=2, activation="tanh", fourier_features=0, fourier_scale=1.0,
                rwf=False, rwf_mean=0.5, rwf_std=0.1, periodic_embedding=True,
                hard_initial_condition=False)
    return SimpleNamespace(**{**base, **kw})


def points(problem, n=64, seed=0, dtype=jnp.float32):
    lo, hi = jnp.asarray(problem.lower, dtype), jnp.asarray(problem.upper, dtype)
    return lo + (hi - lo) * jax.random.uniform(jax.random.key(seed), (n, len(problem.lower)), dtype)


def jitted(model):
    """`model` as one compiled function (faster than op-by-op eager calls in tests)."""
    graphdef, params, rest = split(model)
    f = jax.jit(apply_fn(graphdef, rest))
    return lambda z: f(params, z)


def at_walls(problem, z, axis):
    return z.at[:, axis].set(problem.lower[axis]), z.at[:, axis].set(problem.upper[axis])


@pytest.mark.parametrize(
    "name, extra",
    [
        ("allen_cahn_1d", {}),
        ("burgers_1d", {}),
        ("allen_cahn_2d", dict(fourier_features=8, rwf=True, activation="sin")),
    ],
)
def test_output_shape(name, extra):
    problem = make_problem(name)
    model = make_model(cfg(**extra), problem, seed=0)
    z = points(problem, 37)
    out = model(z)
    assert out.shape == (37,) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("name, fourier_features", [("allen_cahn_1d", 0), ("allen_cahn_2d", 8)])
def test_exact_periodicity_f32(name, fourier_features):
    problem = make_problem(name)
    z = points(problem)
    model = jitted(
        make_model(cfg(fourier_features=fourier_features, fourier_scale=2.0), problem, seed=1)
    )
    plain = jitted(make_model(cfg(periodic_embedding=False), problem, seed=1))
    for axis in problem.spatial_axes:
        lo, hi = at_walls(problem, z, axis)
        np.testing.assert_allclose(model(lo), model(hi), rtol=0, atol=1e-6)
        assert np.max(np.abs(plain(lo) - plain(hi))) > 1e-3  # not periodic without the embedding


def test_exact_periodicity_f64():
    with jax.enable_x64(True):
        problem = make_problem("allen_cahn_2d")
        z = points(problem, dtype=jnp.float64)
        model = jitted(make_model(cfg(rwf=True), problem, seed=2, dtype=jnp.float64))
        for axis in (1, 2):
            lo, hi = at_walls(problem, z, axis)
            out_lo, out_hi = model(lo), model(hi)
            assert out_lo.dtype == jnp.float64
            np.testing.assert_allclose(out_lo, out_hi, rtol=0, atol=1e-12)


def test_embedding():
    emb = Embedding(lower=(0.0, -1.0), upper=(2.0, 1.0), periodic=(False, True))
    assert emb.out_features == 3
    z = jnp.array([[0.0, 0.5], [2.0, -1.0], [1.0, 0.0]])
    e = emb(z)
    np.testing.assert_allclose(e[:, 0], [-1.0, 1.0, 0.0], atol=1e-7)  # affine to [-1, 1]
    np.testing.assert_allclose(e[:, 1], np.cos(np.pi * np.array([0.5, -1.0, 0.0])), atol=1e-6)
    np.testing.assert_allclose(e[:, 2], np.sin(np.pi * np.array([0.5, -1.0, 0.0])), atol=1e-6)


def test_periodic_embedding_flag():
    problem = make_problem("allen_cahn_2d")
    assert make_model(cfg(), problem, seed=0).embedding.periodic == (False, True, True)
    off = make_model(cfg(periodic_embedding=False), problem, seed=0)
    assert off.embedding.periodic == (False, False, False)
    burgers = make_model(cfg(), make_problem("burgers_1d"), seed=0)
    assert burgers.embedding.periodic == (False, False)


def test_fourier_features_not_trainable():
    problem = make_problem("allen_cahn_1d")
    model = make_model(cfg(fourier_features=8, width=16, depth=2), problem, seed=0)
    assert model.fourier is not None and model.fourier[...].shape == (3, 8)
    assert not isinstance(model.fourier, nnx.Param)
    graphdef, params, rest = split(model)
    param_leaves = jax.tree_util.tree_leaves(params)
    assert not any(leaf.shape == (3, 8) for leaf in param_leaves)
    assert any(leaf.shape == (3, 8) for leaf in jax.tree_util.tree_leaves(rest))
    # 16-dim features -> 16 -> 16 -> 1
    assert count_params(params) == (16 * 16 + 16) + (16 * 16 + 16) + (16 + 1)
    # gradients flow only to params, and the fixed B is untouched by a parameter update
    u = apply_fn(graphdef, rest)
    z = points(problem, 8)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(u(p, z) ** 2)))(params)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)


def test_param_count_plain_and_rwf():
    problem = make_problem("burgers_1d")  # embedding: 2 features
    plain = count_params(split(make_model(cfg(depth=3), problem, seed=0))[1])
    assert plain == (2 * 16 + 16) + 2 * (16 * 16 + 16) + (16 + 1)
    rwf = count_params(split(make_model(cfg(depth=3, rwf=True), problem, seed=0))[1])
    assert rwf == plain + 3 * 16 + 1  # one scale per output unit


def test_rwf_weight_is_kernel_times_exp_scale():
    layer = FactorizedDense(5, 7, rwf=(0.5, 0.1), dtype=jnp.float32, rngs=nnx.Rngs(0))
    assert layer.scale is not None and layer.scale[...].shape == (7,)
    np.testing.assert_allclose(
        layer.weight(), layer.kernel[...] * jnp.exp(layer.scale[...])[None, :], rtol=1e-6
    )
    s = np.asarray(layer.scale[...])
    assert 0.2 < s.mean() < 0.8 and s.std() > 0  # s ~ N(0.5, 0.1)
    plain = FactorizedDense(5, 7, rwf=None, dtype=jnp.float32, rngs=nnx.Rngs(0))
    assert plain.scale is None
    np.testing.assert_array_equal(plain.weight(), plain.kernel[...])
    # same Glorot draw W0: the factorized layer reproduces the plain layer's weight at init
    np.testing.assert_allclose(layer.weight(), plain.weight(), rtol=1e-5, atol=1e-7)


def test_rwf_model_equals_plain_model_with_its_weights():
    problem = make_problem("allen_cahn_1d")
    rwf = make_model(cfg(rwf=True), problem, seed=3)
    plain = make_model(cfg(), problem, seed=4)
    for src, dst in zip([*rwf.hidden, rwf.output], [*plain.hidden, plain.output]):
        dst.kernel[...] = src.weight()
        dst.bias[...] = src.bias[...]
    z = points(problem)
    np.testing.assert_allclose(rwf(z), plain(z), rtol=1e-5, atol=1e-6)


def test_float64_option():
    with jax.enable_x64(True):
        problem = make_problem("allen_cahn_2d")
        model = make_model(cfg(fourier_features=4), problem, seed=0, dtype=jnp.float64)
        _, params, _ = split(model)
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(params))
        assert model(points(problem, dtype=jnp.float64)).dtype == jnp.float64


def test_make_model_width_override_and_config():
    problem = make_problem("allen_cahn_2d")
    c = cfg(width=16, depth=3, activation="sin")
    model = make_model(c, problem, seed=0)
    assert isinstance(model, PINN)
    assert model.width == 16 and len(model.hidden) == 3 and model.activation == "sin"
    assert model.hidden[0].kernel[...].shape == (5, 16)
    coarse = make_model(c, problem, seed=0, width=8)
    assert coarse.width == 8 and coarse.hidden[0].kernel[...].shape == (5, 8)
    assert coarse.output.kernel[...].shape == (8, 1)


def test_bad_activation():
    with pytest.raises(ValueError, match="relu6"):
        make_model(cfg(activation="relu6"), make_problem("burgers_1d"), seed=0)


def test_seed_determinism():
    problem = make_problem("burgers_1d")
    z = points(problem, 5)
    a, b = make_model(cfg(), problem, seed=7), make_model(cfg(), problem, seed=7)
    np.testing.assert_array_equal(a(z), b(z))
    assert not np.allclose(a(z), make_model(cfg(), problem, seed=8)(z))


def test_split_apply_cast_roundtrip():
    problem = make_problem("allen_cahn_1d")
    model = make_model(cfg(rwf=True, fourier_features=4), problem, seed=0)
    graphdef, params, rest = split(model)
    u = apply_fn(graphdef, rest)
    z = points(problem, 9)
    np.testing.assert_allclose(jax.jit(u)(params, z), nnx.jit(lambda m, z: m(z))(model, z),
                               rtol=1e-6, atol=1e-6)
    with jax.enable_x64(True):
        p64 = cast(params, jnp.float64)
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(p64))
