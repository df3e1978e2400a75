"""PDE problems: residuals against manufactured solutions (float64, analytic derivatives),
boundary / initial residuals, registry and reference plumbing."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pinn import derivatives
from pinn.problems import PROBLEMS, Domain, Problem, make_problem

METHODS = list(derivatives.METHODS)
TOL = 1e-10
A, B, C, PHI, K = 2.3, 0.7, 1.9, 0.4, 0.6


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def points(problem: Problem, n: int = 128, seed: int = 0) -> jax.Array:
    lo, hi = np.asarray(problem.lower), np.asarray(problem.upper)
    r = jax.random.uniform(jax.random.key(seed), (n, len(lo)), jnp.float64)
    return jnp.asarray(lo) + jnp.asarray(hi - lo) * r


# --- manufactured fields with analytic derivatives ------------------------------------------
# u = sin(a x + φ) e^{-b t} [cos(c y)] + k t x²  — u_t, u_xx (u_yy) are not proportional to u,
# and u is O(1) so the u³ term matters.


def field_1d(z):
    t, x = z[:, 0], z[:, 1]
    return jnp.sin(A * x + PHI) * jnp.exp(-B * t) + K * t * x**2


def derivs_1d(z):
    t, x = np.asarray(z[:, 0]), np.asarray(z[:, 1])
    s, c, e = np.sin(A * x + PHI), np.cos(A * x + PHI), np.exp(-B * t)
    u = s * e + K * t * x**2
    return u, -B * s * e + K * x**2, A * c * e + 2 * K * t * x, -(A**2) * s * e + 2 * K * t


def field_2d(z):
    t, x, y = z[:, 0], z[:, 1], z[:, 2]
    return jnp.sin(A * x + PHI) * jnp.exp(-B * t) * jnp.cos(C * y) + K * t * x**2


def derivs_2d(z):
    t, x, y = (np.asarray(z[:, i]) for i in range(3))
    s, e, cy = np.sin(A * x + PHI), np.exp(-B * t), np.cos(C * y)
    u = s * e * cy + K * t * x**2
    u_t = -B * s * e * cy + K * x**2
    u_xx = -(A**2) * s * e * cy + 2 * K * t
    u_yy = -(C**2) * s * e * cy
    return u, u_t, u_xx, u_yy


def expected(name: str, z, **c) -> np.ndarray:
    if name == "allen_cahn_1d":
        u, u_t, _, u_xx = derivs_1d(z)
        return u_t - c["diffusion"] * u_xx + c["reaction"] * (u**3 - u)
    if name == "burgers_1d":
        u, u_t, u_x, u_xx = derivs_1d(z)
        return u_t + u * u_x - c["viscosity"] * u_xx
    if name == "allen_cahn_2d":
        u, u_t, u_xx, u_yy = derivs_2d(z)
        return u_t - c["epsilon"] ** 2 * (u_xx + u_yy) - u + u**3
    raise AssertionError(name)


FIELDS = {"allen_cahn_1d": field_1d, "burgers_1d": field_1d, "allen_cahn_2d": field_2d}
# non-default coefficients big enough that every term is visible far above TOL
COEFFS = {
    "allen_cahn_1d": dict(diffusion=0.3, reaction=2.5),
    "burgers_1d": dict(viscosity=0.2),
    "allen_cahn_2d": dict(epsilon=0.4),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_residual_manufactured(name, method):
    problem = make_problem(name, **COEFFS[name])
    z = points(problem)
    r = jax.jit(lambda z: problem.residual(FIELDS[name], z, method=method))(z)
    assert r.shape == (z.shape[0],) and r.dtype == jnp.float64
    want = expected(name, z, **COEFFS[name])
    np.testing.assert_allclose(r, want, rtol=0, atol=TOL)
    assert np.max(np.abs(want)) > 0.1  # non-trivial manufactured residual

    # the test can fail: a 1 % change of any coefficient moves the residual far beyond TOL
    for key, value in COEFFS[name].items():
        wrong = make_problem(name, **{**COEFFS[name], key: 1.01 * value})
        r_wrong = jax.jit(lambda z: wrong.residual(FIELDS[name], z, method=method))(z)
        assert np.max(np.abs(np.asarray(r_wrong) - want)) > 1e3 * TOL, key


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_residual_default_coefficients(name):
    problem = make_problem(name)
    coeffs = problem.coefficients
    z = points(problem, seed=1)
    r = jax.jit(lambda z: problem.residual(FIELDS[name], z))(z)
    np.testing.assert_allclose(r, expected(name, z, **coeffs), rtol=0, atol=TOL)


def test_default_coefficients():
    assert make_problem("allen_cahn_1d").coefficients == dict(diffusion=1e-4, reaction=5.0)
    assert make_problem("allen_cahn_2d").coefficients == dict(epsilon=0.01)
    assert make_problem("burgers_1d").viscosity == pytest.approx(0.01 / math.pi, rel=1e-15)


def test_geometry():
    ac1, ac2, bu = (make_problem(n) for n in ("allen_cahn_1d", "allen_cahn_2d", "burgers_1d"))
    assert ac1.input_names == ("t", "x") and ac1.lower == (0.0, -1.0) and ac1.upper == (1.0, 1.0)
    assert ac1.periodic == (False, True)
    assert ac2.input_names == ("t", "x", "y") and ac2.lower == (0.0, 0.0, 0.0)
    assert ac2.upper == (1.0, 1.0, 1.0) and ac2.periodic == (False, True, True)
    assert bu.input_names == ("t", "x") and bu.periodic == (False, False)
    dom = ac2.domain
    assert isinstance(dom, Domain) and dom.periodic == (False, True, True)
    assert dom.lower.shape == dom.upper.shape == (3,)
    np.testing.assert_array_equal(dom.upper, [1.0, 1.0, 1.0])
    for p in (ac1, ac2, bu):
        assert p.name in PROBLEMS and PROBLEMS[p.name] is type(p)


def test_initial_conditions():
    ac1, ac2, bu = (make_problem(n) for n in ("allen_cahn_1d", "allen_cahn_2d", "burgers_1d"))
    x = jnp.array([[0.5], [1.0], [-0.3]])
    np.testing.assert_allclose(ac1.initial_condition(x), [0.0, -1.0, 0.09 * np.cos(-0.3 * np.pi)],
                               atol=1e-15)
    np.testing.assert_allclose(bu.initial_condition(x), [-1.0, 0.0, np.sin(0.3 * np.pi)],
                               atol=1e-15)
    xy = jnp.array([[0.5, 0.0], [0.0, 0.3], [0.25, 0.25]])
    np.testing.assert_allclose(ac2.initial_condition(xy), [0.5, -0.5, 0.25 - 0.5], atol=1e-15)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_ic_residual(name):
    problem = make_problem(name)
    x = points(problem, 50)[:, 1:]

    def u_ic(z):  # equals the initial condition at t = 0, differs later
        return problem.initial_condition(z[:, 1:]) * jnp.exp(-z[:, 0]) + z[:, 0]

    r = problem.ic_residual(u_ic, x)
    assert r.shape == (50,)
    np.testing.assert_allclose(r, 0.0, atol=1e-14)
    r = problem.ic_residual(lambda z: u_ic(z) + 0.25, x)
    np.testing.assert_allclose(r, 0.25, atol=1e-14)


def test_burgers_boundary():
    problem = make_problem("burgers_1d")
    z = points(problem, 40)

    def u_exact_ic(z):  # -sin(πx): zero on both walls for every t
        return -jnp.sin(jnp.pi * z[:, 1]) * (1.0 + z[:, 0])

    for exact in (True, False):
        r = problem.boundary_residual(u_exact_ic, z, exact_periodic=exact)
        assert r.shape == (80,)
        np.testing.assert_allclose(r, 0.0, atol=1e-14)
    r = problem.boundary_residual(lambda z: z[:, 1] + 2.0 + z[:, 0], z, exact_periodic=True)
    t = np.asarray(z[:, 0])
    np.testing.assert_allclose(r, np.concatenate([1.0 + t, 3.0 + t]), atol=1e-14)  # lo, then hi


@pytest.mark.parametrize("name", ["allen_cahn_1d", "allen_cahn_2d"])
def test_periodic_boundary(name):
    problem = make_problem(name)
    z = points(problem, 30)
    n_axes = sum(problem.periodic)
    # period 2 on [-1, 1] (1D), period 1 on [0, 1]² (2D); non-trivial t dependence
    if name == "allen_cahn_1d":
        def periodic(z):
            x = z[:, 1]
            return jnp.sin(jnp.pi * x + 0.3) * jnp.exp(z[:, 0]) + jnp.cos(2 * jnp.pi * x)

        def values_match(z):  # same values at both walls, different slopes
            return jnp.cos(jnp.pi * z[:, 1] / 2) * (1 + z[:, 0])
    else:
        def periodic(z):
            return (jnp.sin(2 * jnp.pi * z[:, 1] + 0.3) * jnp.cos(2 * jnp.pi * z[:, 2] - 0.2)
                    * jnp.exp(z[:, 0]))

        def values_match(z):
            return jnp.sin(jnp.pi * z[:, 1]) + jnp.sin(jnp.pi * z[:, 2]) * (1 + z[:, 0])

    assert problem.boundary_residual(periodic, z, exact_periodic=True) is None
    bc = jax.jit(
        lambda u, z: problem.boundary_residual(u, z, exact_periodic=False), static_argnums=0
    )
    r = bc(periodic, z)
    assert r.shape == (2 * n_axes * 30,)
    np.testing.assert_allclose(r, 0.0, atol=1e-12)

    r = bc(lambda z: periodic(z) + z[:, 1], z)
    assert np.min(np.abs(np.asarray(r)[:30])) > 0.5  # value mismatch on the first axis

    # the derivative part is enforced too: values agree at both walls, slopes do not
    r = np.asarray(bc(values_match, z))
    blocks = r.reshape(2 * n_axes, 30)
    np.testing.assert_allclose(blocks[0::2], 0.0, atol=1e-12)  # u(lo) - u(hi) per axis
    assert np.min(np.abs(blocks[1::2])) > 0.5  # u_i(lo) - u_i(hi) per axis


def test_boundary_residual_jits():
    problem = make_problem("allen_cahn_2d")
    z = points(problem, 8)
    f = jax.jit(lambda z: problem.boundary_residual(field_2d, z, exact_periodic=False))
    assert f(z).shape == (32,)


def test_make_problem_errors():
    with pytest.raises(ValueError, match=r"'heat_1d'.*allen_cahn_1d.*allen_cahn_2d.*burgers_1d"):
        make_problem("heat_1d")
    with pytest.raises(ValueError, match=r"'nu'.*burgers_1d.*viscosity"):
        make_problem("burgers_1d", nu=0.1)
    with pytest.raises(ValueError, match=r"'epsilon'.*diffusion.*reaction"):
        make_problem("allen_cahn_1d", diffusion=1e-3, epsilon=0.1)
    with pytest.raises(ValueError, match="lower"):
        make_problem("allen_cahn_1d", lower=(0.0, 0.0))  # geometry is not a coefficient


def test_problem_is_frozen_and_hashable():
    p = make_problem("burgers_1d", viscosity=0.05)
    assert p.viscosity == 0.05
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.viscosity = 0.1  # type: ignore[misc]
    assert p == make_problem("burgers_1d", viscosity=0.05) and hash(p) == hash(
        make_problem("burgers_1d", viscosity=0.05)
    )
    assert p != make_problem("burgers_1d")
    # usable as a static jit argument
    f = jax.jit(lambda z, prob: prob.residual(field_1d, z), static_argnums=1)
    assert f(points(p, 4), p).shape == (4,)


@pytest.mark.parametrize(
    "name, coeffs, solver, expected_kwargs",
    [
        ("allen_cahn_1d", dict(diffusion=2e-4, reaction=4.0), "allen_cahn_1d",
         dict(diffusion=2e-4, reaction=4.0)),
        ("allen_cahn_2d", dict(epsilon=0.02), "allen_cahn_2d", dict(epsilon=0.02)),
        ("burgers_1d", dict(viscosity=0.003), "burgers_1d", dict(viscosity=0.003)),
    ],
)
def test_reference_passes_coefficients(monkeypatch, name, coeffs, solver, expected_kwargs):
    import pinn.reference

    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return "REF"

    monkeypatch.setattr(pinn.reference, solver, fake, raising=False)
    assert make_problem(name, **coeffs).reference(progress=False) == "REF"
    assert calls == [dict(expected_kwargs, progress=False)]


def test_the_builtin_names_are_one_list():
    """The params schema (which the CLI's help lists) and the problem registry name the same
    built-ins."""
    from pinn.config import BUILTIN_PROBLEMS, ProblemConfig
    from pinn.problems import PROBLEMS

    assert set(BUILTIN_PROBLEMS) == set(PROBLEMS)
    assert ProblemConfig(name="burgers_1d").name == "burgers_1d"
    with pytest.raises(Exception):
        ProblemConfig(name="kdv")
