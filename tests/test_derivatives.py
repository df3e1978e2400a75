"""Forward-mode derivatives (`pinn.derivatives`): nested jvp and jet against analytic derivatives
and against `jax.hessian` on a small MLP, in float64."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pinn import derivatives as D
from pinn.models import apply_fn, make_model, split

METHODS = ["jvp", "jet"]
A, B, C, PHI = 2.3, 0.7, 1.9, 0.4


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def field(z):
    """u = sin(a x + φ) e^{-b t} cos(c y) + t² x³ (jnp, so jvp/jet apply)."""
    t, x, y = z[:, 0], z[:, 1], z[:, 2]
    return jnp.sin(A * x + PHI) * jnp.exp(-B * t) * jnp.cos(C * y) + t**2 * x**3


def analytic(z):
    t, x, y = (np.asarray(z[:, i]) for i in range(3))
    s, c, e = np.sin(A * x + PHI), np.cos(A * x + PHI), np.exp(-B * t)
    cy, sy = np.cos(C * y), np.sin(C * y)
    return dict(
        u=s * e * cy + t**2 * x**3,
        u_t=-B * s * e * cy + 2 * t * x**3,
        u_x=A * c * e * cy + 3 * t**2 * x**2,
        u_y=-C * s * e * sy,
        u_tt=B**2 * s * e * cy + 2 * x**3,
        u_xx=-(A**2) * s * e * cy + 6 * t**2 * x,
        u_yy=-(C**2) * s * e * cy,
    )


def points(n=64, d=3, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, d), jnp.float64, -1.0, 1.0)


@pytest.mark.parametrize("method", METHODS)
def test_value_and_derivs_analytic(method):
    z = points()
    ref = analytic(z)
    d = jax.jit(lambda z: D.value_and_derivs(field, z, first=(0,), second=(1, 2), method=method))(z)
    assert d.u.dtype == jnp.float64 and d.u.shape == (64,)
    assert set(d.first) == {0, 1, 2} and set(d.second) == {1, 2}
    np.testing.assert_allclose(d.u, ref["u"], rtol=0, atol=1e-12)
    for i, name in enumerate(["u_t", "u_x", "u_y"]):
        np.testing.assert_allclose(d.first[i], ref[name], rtol=0, atol=1e-12)
    np.testing.assert_allclose(d.second[1], ref["u_xx"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(d.second[2], ref["u_yy"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_small_functions_analytic(method):
    z = points(seed=1)
    ref = analytic(z)
    got = jax.jit(
        lambda z: (
            [D.d1(field, z, i, method=method) for i in range(3)],
            [D.d2(field, z, i, method=method) for i in range(3)],
            D.laplacian(field, z, (1, 2), method=method),
        )
    )(z)
    first, second, lap = got
    for i, (n1, n2) in enumerate([("u_t", "u_tt"), ("u_x", "u_xx"), ("u_y", "u_yy")]):
        np.testing.assert_allclose(first[i], ref[n1], atol=1e-12)
        np.testing.assert_allclose(second[i], ref[n2], atol=1e-12)
    np.testing.assert_allclose(lap, ref["u_xx"] + ref["u_yy"], atol=1e-12)


def test_no_axes_and_duplicates():
    z = points(seed=2)
    d = jax.jit(lambda z: D.value_and_derivs(field, z))(z)
    np.testing.assert_allclose(d.u, analytic(z)["u"], atol=1e-13)
    assert d.first == {} and d.second == {}
    d = jax.jit(lambda z: D.value_and_derivs(field, z, first=(1, 0, 1), second=(1, 1)))(z)
    assert sorted(d.first) == [0, 1] and sorted(d.second) == [1]


def test_unknown_method():
    with pytest.raises(ValueError, match="taylor.*jvp"):
        D.value_and_derivs(field, points(), first=(0,), method="taylor")


def test_unit_tangent():
    z = points(5)
    e = D.unit_tangent(z, 2)
    assert e.shape == z.shape and e.dtype == z.dtype
    np.testing.assert_array_equal(e, np.tile([0.0, 0.0, 1.0], (5, 1)))


@pytest.mark.parametrize("method", METHODS)
def test_against_hessian_on_mlp(method):
    cfg = SimpleNamespace(width=16, depth=2, activation="tanh", fourier_features=0,
                          fourier_scale=1.0, rwf=False, rwf_mean=0.5, rwf_std=0.1,
                          periodic_embedding=True, hard_initial_condition=False)
    problem = SimpleNamespace(lower=(0.0, 0.0, 0.0), upper=(1.0, 1.0, 1.0),
                              periodic=(False, True, True))
    graphdef, params, rest = split(make_model(cfg, problem, seed=3, dtype=jnp.float64))
    net = apply_fn(graphdef, rest)
    z = jax.random.uniform(jax.random.key(4), (32, 3), jnp.float64)

    @jax.jit
    def run(params, z):
        u = lambda w: net(params, w)  # noqa: E731
        scalar = lambda p: u(p[None, :])[0]  # noqa: E731
        grad = jax.vmap(jax.grad(scalar))(z)
        hess = jax.vmap(jax.hessian(scalar))(z)
        return u(z), grad, hess, D.value_and_derivs(u, z, (0,), (1, 2), method=method)

    value, grad, hess, d = run(params, z)
    assert d.u.dtype == jnp.float64
    np.testing.assert_allclose(d.u, value, atol=1e-13)
    for i in range(3):
        np.testing.assert_allclose(d.first[i], grad[:, i], rtol=1e-10, atol=1e-12)
    for i in (1, 2):
        np.testing.assert_allclose(d.second[i], hess[:, i, i], rtol=1e-10, atol=1e-12)


def test_float32_preserved():
    z = points().astype(jnp.float32)
    d = jax.jit(lambda z: D.value_and_derivs(field, z, first=(0,), second=(1,)))(z)
    assert d.u.dtype == d.first[0].dtype == d.second[1].dtype == jnp.float32
    np.testing.assert_allclose(d.second[1], analytic(z)["u_xx"], atol=1e-4)
