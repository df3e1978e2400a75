"""The external benchmark examples of issue 12 (examples/convection, examples/heat2d_ms,
examples/kuramoto_sivashinsky): each problem's residual and conditions on its exact solution
(derivatives by name, forward mode, as the trainer takes them), the Kuramoto–Sivashinsky spectral
reference (certificate, and the problem's residual on it), and every example's params through the
params gate.

Everything in-process, small; the one default KS reference solve dominates (~8 s idle).
"""

from __future__ import annotations

import math
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
CONVECTION = "examples/convection/convection.py:Convection"
HEAT = "examples/heat2d_ms/heat.py:Heat2DMS"
KS = "examples/kuramoto_sivashinsky/ks.py:KuramotoSivashinsky"
PARAMS = {
    "convection": ROOT / "examples/convection/params.yaml",
    "convection_beta40": ROOT / "examples/convection/params_beta40.yaml",
    "heat2d_ms": ROOT / "examples/heat2d_ms/params.yaml",
    "kuramoto_sivashinsky": ROOT / "examples/kuramoto_sivashinsky/params.yaml",
    "kuramoto_sivashinsky_windows": ROOT / "examples/kuramoto_sivashinsky/params_windows.yaml",
}


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples' targets are relative to the repository root


def _points(rng: np.random.Generator, lower, upper, n: int) -> jax.Array:
    return jnp.asarray(rng.uniform(lower, upper, (n, len(lower))))


# --------------------------------------------------------------------------------------------
# Convection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key,beta", [("convection", 30.0), ("convection_beta40", 40.0)])
def test_convection_exact_solution_satisfies_the_problem(in_root, key, beta) -> None:
    """`sin(x - βt)` zeroes `u_t + β u_x` and every condition (the initial value, and the
    periodic one, checked here although the embedding makes it exact in training); the
    wrong-way wave `sin(x + βt)` does not."""
    from pinn.config import load_params

    cfg = load_params(PARAMS[key])
    with jax.enable_x64(True):
        p = make_problem(cfg.problem.identifier, **cfg.problem.coefficients)
        assert p.beta == beta
        z = _points(np.random.default_rng(0), p.lower, p.upper, 256)
        r = p.residual(p.exact, z)
        assert r.dtype == jnp.float64
        np.testing.assert_allclose(r, 0.0, atol=1e-12 * beta)
        terms = p.condition_terms(p.exact, z[:, 1:], z, exact_periodic=False)
        assert set(terms) == {"ic", "bc"}
        for name, v in terms.items():
            np.testing.assert_allclose(v, 0.0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(terms["ic"] + p.exact(z.at[:, 0].set(0.0)),
                                   np.sin(np.asarray(z[:, 1])), atol=1e-15)  # u0 = sin x
        wrong = lambda z: jnp.sin(z[:, 1] + p.beta * z[:, 0])  # noqa: E731
        assert float(jnp.sqrt(jnp.mean(p.residual(wrong, z) ** 2))) > beta
    assert p.term_names(True) == ("pde", "ic")
    ref = p.reference()
    assert ref.u.shape == (201, 256) and ref.est_rel_error == 0.0
    np.testing.assert_allclose(ref.u[-1], np.sin(ref.x - beta), atol=1e-13)


# --------------------------------------------------------------------------------------------
# Heat 2d-MS
# --------------------------------------------------------------------------------------------


def test_heat2d_ms_decay_rate_is_exact_and_the_solution_satisfies_the_problem(in_root) -> None:
    """λ = (500π)⁻²(20π)² + π⁻²π² = 1.0016 (PINNacle's rate is exact); the exact solution zeroes
    the residual and the initial and four Dirichlet conditions; with PINNacle's rounded rate
    changed to 1 the residual is 0.0016 |u|, far above rounding."""
    with jax.enable_x64(True):
        p = make_problem(HEAT)
        assert p.decay_rate == pytest.approx(1.0016, rel=1e-14, abs=0)
        z = _points(np.random.default_rng(1), p.lower, p.upper, 512)
        u = np.asarray(p.exact(z))
        d = p.named_derivatives(p.exact, z)
        np.testing.assert_allclose(d["u_xx"], -(20 * np.pi) ** 2 * u, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(p.residual(p.exact, z), 0.0, atol=1e-12)
        terms = p.condition_terms(p.exact, z[:, 1:], z, exact_periodic=True)
        assert set(terms) == {"ic", "bc"} and terms["bc"].shape == (4 * 512,)
        for name, v in terms.items():
            np.testing.assert_allclose(v, 0.0, atol=1e-12, err_msg=name)

        def slow(z):  # the rate 1 instead of 1.0016
            return jnp.sin(20 * jnp.pi * z[:, 1]) * jnp.sin(jnp.pi * z[:, 2]) * jnp.exp(-z[:, 0])

        np.testing.assert_allclose(p.residual(slow, z), 0.0016 * np.asarray(slow(z)), rtol=1e-8,
                                   atol=1e-14)
    assert p.term_names(True) == ("pde", "ic", "bc")
    ref = p.reference()
    assert ref.u.shape == (21, 256, 256) and ref.est_rel_error == 0.0
    np.testing.assert_array_equal(ref.t, np.linspace(0, 5, 21))
    x, y = np.meshgrid(ref.x, ref.y, indexing="ij")
    np.testing.assert_allclose(ref.u[4], np.sin(20 * np.pi * x) * np.sin(np.pi * y)
                               * math.exp(-1.0016), atol=1e-13)


# --------------------------------------------------------------------------------------------
# Kuramoto–Sivashinsky
# --------------------------------------------------------------------------------------------


def test_ks_residual_from_forward_mode_derivatives(in_root) -> None:
    """On `u = sin(x - t)` (u_t = -cos, u_x = cos, u_xx = -sin, u_xxxx = sin) the problem's
    residual, with the fourth derivative by nested forward mode, is the closed form."""
    with jax.enable_x64(True):
        p = make_problem(KS)
        z = _points(np.random.default_rng(2), p.lower, p.upper, 256)
        u = lambda z: jnp.sin(z[:, 1] - z[:, 0])  # noqa: E731
        s, c = np.sin(z[:, 1] - z[:, 0]), np.cos(z[:, 1] - z[:, 0])
        expected = -c + p.alpha * s * c - p.beta * s + p.gamma * s
        np.testing.assert_allclose(p.residual(u, z), expected, rtol=0, atol=1e-12)
        x = z[:, 1:]
        np.testing.assert_allclose(p.initial_condition(x),
                                   np.cos(x[:, 0]) * (1 + np.sin(x[:, 0])), atol=1e-15)
    assert (p.alpha, p.beta, p.gamma) == (100 / 16, 100 / 16**2, 100 / 16**4)
    assert p.term_names(True) == ("pde", "ic") and p.term_names(False) == ("pde", "ic", "bc")


def test_ks_default_reference_is_certified(in_root) -> None:
    """The example's reference (`kuramoto_sivashinsky_1d()` at the defaults): 201 t × 512 x on
    [0, 1] × [0, 2π] (both ends), est_rel_error — the difference to the solve at half the
    points and twice the step — far below 1e-6 (measured 6.8e-9), the initial condition exact,
    x = 0 and 2π equal, the mean of u conserved (the (u²)_x and derivative terms have none) and
    the chaotic state reached (max |u| grows from 1.3 to 3.0)."""
    p = make_problem(KS)
    ref = p.reference(progress=False)
    assert ref.u.shape == (201, 512)
    np.testing.assert_array_equal(ref.x, np.linspace(0, 2 * np.pi, 512))
    assert ref.est_rel_error < 1e-7, ref.est_rel_error
    assert ref.meta["modes"] == 1022 and ref.meta["dt"] == 2.5e-5 and ref.meta["modes_check"] == 511
    assert ref.meta["linear_2"] == -100 / 16**2 and ref.meta["linear_4"] == -100 / 16**4
    np.testing.assert_array_equal(ref.u[0], np.cos(ref.x) * (1 + np.sin(ref.x)))
    np.testing.assert_allclose(ref.u[:, 0], ref.u[:, -1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ref.u[:, :-1].mean(axis=1), 0.0, atol=1e-12)
    assert np.abs(ref.u).max() > 2.5  # measured 3.02


def test_ks_reference_satisfies_the_problem_pde(in_root) -> None:
    """Solver and problem agree on the equation (signs of the u_xx and u_xxxx terms, α, the ½ of
    (u²/2)_x): at t = 0.3, `u_x`, `u_xx`, `u_xxxx` spectral from the reference on one period and
    `u_t` by a fourth-order central difference (τ = 2e-4) make the problem's residual ~0 against
    `u_t` — while flipping the sign of the fourth-order symbol (or of β) leaves O(1)."""
    from pinn.reference.spectral import kuramoto_sivashinsky_1d

    p = make_problem(KS)
    tau, n = 2e-4, 512
    t = 0.3 + tau * np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    x = 2 * np.pi * np.arange(n) / n  # not a solver grid (511·2^k): Fourier interpolation path
    ref = kuramoto_sivashinsky_1d(t=t, x=x, modes=256, dt=5e-5, progress=False)
    assert ref.est_rel_error < 1e-6
    u = ref.u
    u_t = (u[0] - 8 * u[1] + 8 * u[3] - u[4]) / (12 * tau)
    k = np.fft.rfftfreq(n, 1.0 / n)
    spec = np.fft.rfft(u[2])
    spec[-1] = 0.0  # Nyquist: no odd derivative
    d = {"u": u[2], "u_t": u_t, "u_x": np.fft.irfft(1j * k * spec, n),
         "u_xx": np.fft.irfft(-(k**2) * spec, n), "u_xxxx": np.fft.irfft(k**4 * spec, n)}
    with jax.enable_x64(True):
        z = jnp.stack([jnp.full(n, 0.3), jnp.asarray(x)], axis=1)
        r = np.asarray(p.residuals({name: jnp.asarray(v) for name, v in d.items()}, z)["pde"])
    scale = np.linalg.norm(u_t)
    assert scale > np.sqrt(n)  # u_t: RMS ~4 at t = 0.3 (the time scale is 1/100 of KS's usual)
    assert np.linalg.norm(r) < 1e-6 * scale, np.linalg.norm(r) / scale
    for wrong in (r - 2 * p.gamma * d["u_xxxx"], r - 2 * p.beta * d["u_xx"]):
        assert np.linalg.norm(wrong) > 0.1 * scale


def test_ks_reference_with_the_wrong_symbol_fails_the_pde_check() -> None:
    """The check above can fail: a solve with the fourth-order term's sign flipped (anti-damping
    `+γ k⁴`, through the generic solver) is not the KS equation — its time derivative disagrees
    with the KS spatial terms by O(1) already at t = 0.01 (before it overflows)."""
    from pinn.reference.spectral import periodic_1d

    a, b, g = 100 / 16, 100 / 16**2, 100 / 16**4
    tau, n = 1e-4, 128
    t = 0.01 + tau * np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    x = 2 * np.pi * np.arange(n) / n
    ic = lambda x: np.cos(x) * (1 + np.sin(x))  # noqa: E731
    u = {}
    for sign in (1.0, -1.0):
        u[sign] = periodic_1d({2: -b, 4: -sign * g}, ic, advection=a, domain=(0.0, 2 * np.pi),
                              t=t, x=x, modes=64, dt=1e-5, progress=False).u
    k = np.fft.rfftfreq(n, 1.0 / n)

    def ks_residual(v):
        u_t = (v[0] - 8 * v[1] + 8 * v[3] - v[4]) / (12 * tau)
        spec = np.fft.rfft(v[2])
        spec[-1] = 0.0
        ux, uxx, uxxxx = (np.fft.irfft(f * spec, n) for f in (1j * k, -(k**2), k**4))
        return np.linalg.norm(u_t + a * v[2] * ux + b * uxx + g * uxxxx) / np.linalg.norm(u_t)

    assert ks_residual(u[1.0]) < 1e-6
    assert ks_residual(u[-1.0]) > 0.1


def test_ks_windows_params_are_the_single_network_params_marched_in_five_windows(in_root) -> None:
    """params_windows.yaml is params.yaml (same problem, network, sampling, weights, optimizer)
    cut into 5 windows of 0.2, each starting from the one before; only the windows, the
    refinement's iteration count and the report title differ."""
    from pinn.config import load_params
    from pinn.windows import bounds

    one = load_params(PARAMS["kuramoto_sivashinsky"]).model_dump()
    marched = load_params(PARAMS["kuramoto_sivashinsky_windows"])
    data = marched.model_dump()
    assert {k for k in one if one[k] != data[k]} == {"refine", "report", "windows"}
    assert {k for k in one["refine"] if one["refine"][k] != data["refine"][k]} == {"iterations"}
    assert marched.windows.count == 5
    assert [w.after for w in marched.windows.later.values()] == [f"window{k}" for k in range(4)]
    problem = make_problem(marched.problem.identifier, **marched.problem.coefficients)
    np.testing.assert_allclose(bounds(marched, problem), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


# --------------------------------------------------------------------------------------------
# The params gate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(PARAMS))
def test_gate_accepts_the_example_params(in_root, key) -> None:
    result = check_params(PARAMS[key])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(": ok")
    data = yaml.safe_load(PARAMS[key].read_text())
    assert data["problem"]["name"] is None and data["problem"]["target"].startswith("examples/")


@pytest.mark.parametrize("key,name,value,message", [
    ("kuramoto_sivashinsky", "gamma", 0.0,
     r"problem\.coefficients\.gamma = 0\.0: must be >= 0\.001"),
    ("convection", "beta", -30.0, r"problem\.coefficients\.beta = -30\.0: must be >= 0"),
    ("heat2d_ms", "a_x", 1.0, r"problem\.coefficients\.a_x = 1\.0: not a coefficient of "
                              r"examples/heat2d_ms/heat\.py:Heat2DMS"),
])
def test_gate_rejects_a_bad_coefficient_in_one_line(in_root, tmp_path, key, name, value,
                                                     message) -> None:
    line = refused_coefficient(PARAMS[key], tmp_path, name, value)
    assert re.search(message, line), line
