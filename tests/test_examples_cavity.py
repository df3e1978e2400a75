"""The lid-driven cavity example (examples/lid_driven_cavity): the problem's residuals on an exact
Navier–Stokes solution (Kovasznay flow) and its boundary data on the lid profile, the Chebyshev
streamfunction reference solver (its operators, its convergence under refinement, and its
solution satisfying the problem's own momentum and continuity equations), and the params gate.

Everything in-process and small (solves at 8–24 Chebyshev intervals, about a second); the
default 64-interval reference is left to the pipeline.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from conftest import check_params, refused_coefficient
from pinn.problems import make_problem

ROOT = Path(__file__).resolve().parents[1]
CAVITY = "examples/lid_driven_cavity/cavity.py:LidDrivenCavity"
PARAMS = ROOT / "examples/lid_driven_cavity/params.yaml"


@pytest.fixture
def cavity(monkeypatch):
    monkeypatch.chdir(ROOT)  # the example's target is relative to the repository root
    return make_problem(CAVITY, nu=0.01)


@pytest.fixture
def solver(cavity):
    """The module of the problem's file (the solver's functions live beside the class)."""
    import sys

    return sys.modules[type(cavity).__module__]


def kovasznay(nu: float):
    """Kovasznay's (1948) exact steady Navier–Stokes flow at `Re = 1/ν`: `(u, v, p) (N, 3)` at
    `z (N, 2)`."""
    re_ = 1.0 / nu
    lam = re_ / 2 - np.sqrt(re_**2 / 4 + 4 * np.pi**2)

    def field(z):
        x, y = z[:, 0], z[:, 1]
        e = jnp.exp(lam * x)
        return jnp.stack([1 - e * jnp.cos(2 * jnp.pi * y),
                          lam / (2 * jnp.pi) * e * jnp.sin(2 * jnp.pi * y),
                          (1 - jnp.exp(2 * lam * x)) / 2], axis=1)

    return field


def test_residuals_vanish_on_an_exact_navier_stokes_solution(cavity) -> None:
    """Kovasznay flow at ν = 0.01 zeroes both momentum equations and continuity (derivatives by
    name, forward mode, as the trainer takes them); with the pressure's sign flipped, or at the
    wrong viscosity, the momentum residuals do not vanish."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        z = jnp.asarray(rng.uniform(0.0, 1.0, (256, 2)))
        r = cavity.pde_residuals(kovasznay(0.01), z)
        assert set(r) == {"momentum_x", "momentum_y", "continuity"}
        for name, v in r.items():
            assert v.dtype == jnp.float64
            np.testing.assert_allclose(v, 0.0, atol=1e-10, err_msg=name)
        flipped = lambda z: kovasznay(0.01)(z) * jnp.array([1.0, 1.0, -1.0])  # noqa: E731
        assert float(jnp.max(jnp.abs(cavity.pde_residuals(flipped, z)["momentum_x"]))) > 1e-2
        other = cavity.pde_residuals(kovasznay(0.02), z)
        assert float(jnp.max(jnp.abs(other["momentum_x"]))) > 1e-3
        np.testing.assert_allclose(other["continuity"], 0.0, atol=1e-10)


def test_boundary_data_is_the_lid_profile_and_no_slip(cavity) -> None:
    """A field equal to the lid profile on y = 1 and zero on the other walls, with v = 0 on the
    walls, meets every wall condition; the lid's mismatch of u = 0 is `−4x(1 − x)` on the top
    face and zero elsewhere; the pressure pin is the one point (0, 0) with value 0."""
    with jax.enable_x64(True):
        z = jnp.asarray(np.random.default_rng(1).uniform(0.0, 1.0, (64, 2)))
        pin = cavity.observation_conditions()
        assert len(pin) == 1 and pin[0].field == "p" and pin[0].term == "pin"
        points, values = cavity.observations(pin[0])
        np.testing.assert_array_equal(points, [[0.0, 0.0]])
        np.testing.assert_array_equal(values, [0.0])
        good = lambda z: jnp.stack([4 * z[:, 0] * (1 - z[:, 0]) * z[:, 1] ** 3,  # noqa: E731
                                    jnp.sin(jnp.pi * z[:, 0]) * jnp.sin(jnp.pi * z[:, 1]),
                                    z[:, 0] + z[:, 1]], axis=1)
        terms = cavity.condition_terms(good, z[:, 1:], z, exact_periodic=False,
                                       observations=((jnp.asarray(points), jnp.asarray(values)),))
        assert set(terms) == {"bc", "pin"}
        np.testing.assert_allclose(terms["bc"], 0.0, atol=1e-14)
        np.testing.assert_allclose(terms["pin"], 0.0, atol=1e-14)
        still = lambda z: jnp.zeros((z.shape[0], 3))  # noqa: E731
        bc = np.asarray(cavity.condition_terms(still, z[:, 1:], z, exact_periodic=False,
                                               observations=((jnp.asarray(points),
                                                              jnp.asarray(values)),))["bc"])
        # the first condition: u on the upper y face (the lid), mismatch u − lid
        x = np.asarray(z[:, 0])
        np.testing.assert_allclose(bc[:64], -4 * x * (1 - x), atol=1e-15)
        np.testing.assert_allclose(bc[64:], 0.0)
    assert cavity.term_names(True) == ("momentum_x", "momentum_y", "continuity", "bc", "pin")


def test_chebyshev_operators(solver) -> None:
    """The differentiation matrix is exact on polynomials up to its degree; the interpolation
    reproduces such polynomials between the nodes and takes node values on the nodes."""
    x, d = solver.cheb(10)
    assert x[0] == 0.0 and x[-1] == 1.0 and np.all(np.diff(x) > 0)
    np.testing.assert_allclose(d @ x**7, 7 * x**6, atol=1e-10)
    t = np.array([0.0, 0.123, 0.5, 0.77, 1.0])
    m = solver.interpolation_matrix(x, t)
    np.testing.assert_allclose(m @ (x**9 - 3 * x**2), t**9 - 3 * t**2, atol=1e-13)
    np.testing.assert_allclose(m[0], np.eye(11)[0])


def test_reference_solver_converges_and_satisfies_the_problem(solver) -> None:
    """Solves at 8, 12, 16 and 24 intervals: Newton converges; the lid, the walls and the pin
    hold at the nodes; the solution meets the problem's momentum and continuity equations
    (spectral derivatives of u, v, p — not the streamfunction equation the solver discretises)
    in [0.1, 0.9]², better at 24 intervals than at 16, where the wrong sign of the advection
    misses by far; and the N vs N/2 estimate of (u, v) on a cell-centre grid decreases (the
    singular top corners make the rate algebraic; p converges more slowly)."""
    grid = solver.cell_centres(40)
    sols = {n: solver.solve(n, 0.01) for n in (8, 12, 16, 24)}
    for n, s in sols.items():
        assert s.last_update < 1e-10
        np.testing.assert_allclose(s.u[1:-1, -1], 4 * s.x[1:-1] * (1 - s.x[1:-1]), atol=1e-12)
        np.testing.assert_allclose(s.u[:, 0], 0.0, atol=1e-12)                     # bottom
        np.testing.assert_allclose(s.v[:, [0, -1]], 0.0, atol=1e-12)               # top, bottom
        np.testing.assert_allclose(s.u[[0, -1], :], 0.0, atol=1e-12)               # sides: u
        np.testing.assert_allclose(s.v[[0, -1], 2:-2], 0.0, atol=1e-12)            # sides: v
        assert s.p[0, 0] == 0.0                                                    # the pin

    def misfit(n, sign=1.0):
        s = sols[n]
        _, d = solver.cheb(n)
        dx = lambda f: d @ f  # noqa: E731
        dy = lambda f: f @ d.T  # noqa: E731
        lap = lambda f: dx(dx(f)) + dy(dy(f))  # noqa: E731
        inner = np.ix_((s.x > 0.1) & (s.x < 0.9), (s.x > 0.1) & (s.x < 0.9))
        rms = lambda a: float(np.sqrt(np.mean(a[inner] ** 2)))  # noqa: E731
        adv_u, adv_v = s.u * dx(s.u) + s.v * dy(s.u), s.u * dx(s.v) + s.v * dy(s.v)
        mx = sign * adv_u + dx(s.p) - 0.01 * lap(s.u)
        my = sign * adv_v + dy(s.p) - 0.01 * lap(s.v)
        np.testing.assert_allclose(dx(s.u) + dy(s.v), 0.0, atol=1e-9 * np.abs(dx(s.u)).max())
        return max(rms(mx), rms(my)) / rms(adv_u)

    assert misfit(24) < 0.03 and misfit(24) < 0.6 * misfit(16)
    assert misfit(24, sign=-1.0) > 1.0
    at = {n: s.at(grid, grid) for n, s in sols.items()}
    uv = lambda a: np.stack([a["u"], a["v"]])  # noqa: E731
    e16, e24 = solver.rel(uv(at[8]), uv(at[16])), solver.rel(uv(at[12]), uv(at[24]))
    assert e24 < 0.2 * e16 and e24 < 1e-2
    # solve_certified reports exactly that estimate, and the finer solve's values
    values, est = solver.solve_certified(24, 0.01, grid)
    assert est["est_rel_error_uv"] == pytest.approx(e24, rel=1e-6)
    np.testing.assert_allclose(values["u"], at[24]["u"], atol=1e-9)
    assert est["est_rel_error_p"] > est["est_rel_error_u"]


def test_gate_accepts_the_params_and_refuses_a_bad_viscosity(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(ROOT)
    result = check_params(PARAMS)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(": ok")
    data = yaml.safe_load(PARAMS.read_text())
    assert data["problem"]["name"] is None and data["problem"]["target"] == CAVITY
    line = refused_coefficient(PARAMS, tmp_path, "nu", 0.001)
    assert re.search(r"problem\.coefficients\.nu = 0\.001: must be >= 0\.01", line), line
