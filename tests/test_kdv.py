"""The KdV example (issue 11): the extended ETDRK4 solver (complex / fourth-order symbols, the
Burgers nonlinearity with the 2/3 rule) against closed forms (linear dispersive and damped waves,
the KdV soliton), its certificate at the example's defaults, the example problem's residual on the
soliton and on the reference, and the params gate on `examples/kdv/params.yaml`.

Reduced resolutions except one default solve (~5 s idle); the file takes ~15 s at load 6 on 2 cores.
"""

from __future__ import annotations

import cmath
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from conftest import check_params, refused_coefficient
from pinn.reference import rel_l2
from pinn.reference.spectral import (
    dealias_mask,
    etdrk4_coefficients,
    kdv_1d,
    kdv_resolution,
    linear_symbol,
    periodic_1d,
)

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "examples" / "kdv" / "params.yaml"
TARGET = "examples/kdv/kdv.py:KdV"
DELTA = 0.022


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the example's target is relative to the repository root


def kdv_problem(**coefficients):
    from pinn.problems import make_problem

    return make_problem(TARGET, **coefficients)


def soliton(x, t, c=1.0, x0=-0.25, delta=DELTA):
    """`u = 3c sech²(√c (x - x0 - ct) / 2δ)`: an exact solution of `u_t + u u_x + δ² u_xxx = 0`
    (on the line; on [-1, 1) periodic its tails are below 1e-18 for c = 1)."""
    xi = np.sqrt(c) / (2 * delta) * (np.asarray(x)[None, :] - x0 - c * np.asarray(t)[:, None])
    return 3 * c / np.cosh(xi) ** 2


# --------------------------------------------------------------------------------------------
# The solver
# --------------------------------------------------------------------------------------------


def _phi_coefficients(z: complex) -> dict[str, complex]:
    """`Q/h, f1/h, f2/h, f3/h` at `z = hL` through `φ_n(z) = Σ_k z^k / (k + n)!`: the series for
    |z| <= 4 (terms never exceed ~e^4 against results ~0.1: rounding ~1e-14), the closed forms
    otherwise (|e^z| <= 1 for the test points: no cancellation)."""
    if abs(z) > 4:
        ez = cmath.exp(z)
        return dict(q=(cmath.exp(z / 2) - 1) / z,
                    f1=(-4 - z + ez * (4 - 3 * z + z**2)) / z**3,
                    f2=(2 + z + ez * (-2 + z)) / z**3,
                    f3=(-4 - 3 * z - z**2 + ez * (4 - z)) / z**3)

    def phi(n: int, w: complex) -> complex:
        return sum(w**k / math.factorial(k + n) for k in range(80))

    p1, p2, p3 = phi(1, z), phi(2, z), phi(3, z)
    return dict(q=phi(1, z / 2) / 2, f1=p1 - 3 * p2 + 4 * p3, f2=p2 - 2 * p3, f3=-p2 + 4 * p3)


def test_complex_etdrk4_coefficients_match_closed_forms() -> None:
    """A complex symbol (the whole contour, complex mean) against the φ-function series / closed
    forms, on the imaginary axis (dispersion) and off it (dispersion + damping), from |z| ~ 1e-7
    to the |z| ~ 1e3 of KdV's highest modes; a real symbol given as complex agrees with the real
    path (same contour points) to rounding."""
    # on -e^{iπ/64} (minus a contour point of radius 1: a 0/0 there) and near |z| = 1
    on_contour = -np.exp(1j * np.pi * 0.5 / 32)
    z = np.array([1e-7j, 0.3j, 1j, on_contour, 0.6 - 0.8j, -1 + 0.01j, 1.2 + 0.3j, 2.5j, -3 + 4j,
                  25j, -150 + 10j, -2 - 800j])
    h = 0.25
    e, e2, q, f1, f2, f3 = etdrk4_coefficients(z / h, h)
    assert q.dtype == np.complex128
    for i, zi in enumerate(z):
        exact = _phi_coefficients(complex(zi))
        for name, got in (("q", q[i]), ("f1", f1[i]), ("f2", f2[i]), ("f3", f3[i])):
            assert abs(got / h - exact[name]) <= 1e-11 * abs(exact[name]), (name, zi)
    np.testing.assert_allclose(e, np.exp(z), rtol=1e-14)
    np.testing.assert_allclose(e2, np.exp(z / 2), rtol=1e-14)
    real = np.array([-150.0, -5.0, -1.0, 0.0, 0.5, 2.0])
    for a, b in zip(etdrk4_coefficients(real.astype(complex), h), etdrk4_coefficients(real, h)):
        assert b.dtype == np.float64
        np.testing.assert_allclose(a.imag, 0.0, atol=1e-15)
        np.testing.assert_allclose(a.real, b, rtol=1e-13, atol=1e-16)


def test_linear_symbol_and_dealias_mask() -> None:
    k = np.array([0.0, 1.0, 2.0, np.pi])
    kdv = linear_symbol({3: -DELTA**2}, k)  # -δ² ∂³ -> -δ² (ik)³ = i δ² k³
    assert kdv.dtype == np.complex128
    np.testing.assert_array_equal(kdv, 1j * DELTA**2 * k**3)
    ks = linear_symbol({2: -1.0, 4: -1.0}, k)  # -∂² - ∂⁴ -> k² - k⁴, real (no rounding imag part)
    assert ks.dtype == np.float64
    np.testing.assert_array_equal(ks, k**2 - k**4)
    np.testing.assert_array_equal(linear_symbol({0: 2.0, 1: 0.5}, k), 2.0 + 0.5j * k)
    with pytest.raises(ValueError, match="orders"):
        linear_symbol({-1: 1.0}, k)
    # 2/3 rule: kept j < N/3; the sum of two kept modes never aliases onto a kept mode
    for n in (12, 13, 14, 1022):
        keep = np.flatnonzero(dealias_mask(n))
        top = keep.max()
        assert 3 * top < n <= 3 * (top + 1)
        assert n - 2 * top > top  # 2·top aliases to -(n - 2·top), outside the kept band


@pytest.mark.parametrize("linear,domain", [
    ({3: -0.1**2}, (-1.0, 1.0)),                  # linear KdV: pure dispersion, L = i δ² k³
    ({3: -0.1**2, 4: -1e-4}, (-1.0, 1.0)),        # dispersion + hyperdiffusion (complex, Re < 0)
    ({2: -1.0, 4: -1.0}, (0.0, 8 * np.pi)),       # linear Kuramoto–Sivashinsky: k = 1/4 grows
])
def test_linear_waves_exact(linear, domain) -> None:
    """Without the nonlinear term each Fourier mode evolves as `e^{L(k) t}`: for
    `u0 = cos(kx) + 0.3 sin(3kx)` (k = 2π/period) the solution is `Re(e^{L(k)t + ikx}) +
    0.3 Im(e^{L(3k)t + 3ikx})`. ETDRK4 is exact on the linear part, whatever the step."""
    kk = 2 * np.pi / (domain[1] - domain[0])
    t = np.array([0.0, 0.3, 1.0])
    x = np.linspace(*domain, 37)
    w1 = np.exp(complex(linear_symbol(linear, np.array([kk]))[0]) * t)[:, None]
    w3 = np.exp(complex(linear_symbol(linear, np.array([3 * kk]))[0]) * t)[:, None]
    exact = np.real(w1 * np.exp(1j * kk * x)) + 0.3 * np.imag(w3 * np.exp(3j * kk * x))
    if linear == {3: -0.1**2}:
        # u_t + δ² u_xxx = 0: cos(kx - ωt) needs ω = -δ² k³, i.e. u = cos(πx + δ²π³ t)
        c = 0.1**2 * np.pi**3
        np.testing.assert_allclose(exact, np.cos(np.pi * x + c * t[:, None])
                                   + 0.3 * np.sin(3 * np.pi * x + 27 * c * t[:, None]), atol=1e-13)
    ic = lambda x: np.cos(kk * x) + 0.3 * np.sin(3 * kk * x)  # noqa: E731
    ref = periodic_1d(linear, ic, advection=0.0, domain=domain, t=t, x=x, modes=32, dt=0.1,
                      progress=False)
    np.testing.assert_allclose(ref.u, exact, rtol=0, atol=1e-12)
    assert ref.est_rel_error < 1e-12


def test_kdv_soliton_exact() -> None:
    """The nonlinear scheme against the KdV soliton of speed c = 1 (height 3, width ~2δ), which
    crosses half the domain: ETDRK4 + 2/3-rule pseudo-spectral reproduce it to ~1e-10."""
    t = np.array([0.0, 0.1, 0.5])
    x = np.linspace(-1, 1, 512)
    ref = kdv_1d(t=t, x=x, modes=512, dt=1e-4, progress=False,
                 initial_condition=lambda x: soliton(x, np.zeros(1))[0])
    exact = soliton(x, t)
    assert np.max(np.abs(ref.u - exact)) < 1e-9, np.max(np.abs(ref.u - exact))
    assert ref.est_rel_error < 1e-9
    assert ref.meta["default_initial_condition"] == 0 and ref.meta["dealias"] == 1


def test_kdv_time_order_and_honest_estimate() -> None:
    """The certificate on the benchmark problem at reduced cost (t <= 0.5): est_rel_error is
    exactly the difference between the solve it returns and the one at half the resolution, and
    it falls ~16× per halving of dt (fourth order; the space error is already below it)."""
    t = np.linspace(0, 0.5, 11)
    a = kdv_1d(t=t, modes=511, dt=4e-4, progress=False)   # returns 1022 points, dt 2e-4
    b = kdv_1d(t=t, modes=1022, dt=2e-4, progress=False)  # its check solve is a's returned one
    assert a.meta["modes"] == 1022 and b.meta["modes"] == 2044 and b.meta["dt"] == 1e-4
    assert b.est_rel_error == pytest.approx(rel_l2(a.u, b.u), rel=1e-6)
    ratio = a.est_rel_error / b.est_rel_error
    assert 12 < ratio < 20, (a.est_rel_error, b.est_rel_error)
    assert b.est_rel_error < 1e-9


def test_kdv_default_reference_certified_and_conserving(in_root) -> None:
    """The example's reference (`KdV().reference()` = `kdv_1d()`): on the evaluation grid of the
    built-in references (201 t × 512 x, both ends), certified to far below 1e-8 by the doubled
    solve, the initial condition exact, x = ±1 equal, and KdV's invariants ∫u and ∫u² kept."""
    p = kdv_problem()
    ref = p.reference(progress=False)
    assert ref.u.shape == (201, 512)
    np.testing.assert_array_equal(ref.t, np.linspace(0, 1, 201))
    np.testing.assert_array_equal(ref.x, np.linspace(-1, 1, 512))
    assert ref.est_rel_error < 1e-9, ref.est_rel_error  # measured 1.5e-10
    assert ref.meta["modes"] == 1022 and ref.meta["dt"] == 5e-5
    assert ref.meta["dispersion"] == DELTA and ref.meta["amplitude"] == 1.0
    np.testing.assert_array_equal(ref.u[0], np.cos(np.pi * ref.x))
    np.testing.assert_allclose(ref.u[:, 0], ref.u[:, -1], rtol=0, atol=1e-13)
    periodic = ref.u[:, :-1]  # 511 equispaced points of one period
    np.testing.assert_allclose(periodic.mean(axis=1), 0.0, atol=1e-12)
    energy = (periodic**2).mean(axis=1)
    np.testing.assert_allclose(energy, 0.5, rtol=1e-9)
    assert np.abs(ref.u).max() > 2.5  # the solitons have formed (Zabusky & Kruskal): max 2.63


def test_kdv_resolution_scales_with_the_coefficients() -> None:
    assert kdv_resolution(0.022, 1.0) == (511, 1e-4)
    assert kdv_resolution(0.1, 0.5) == (511, 1e-4)  # never coarser than the defaults
    assert kdv_resolution(0.011, 1.0) == (1022, 5e-5)
    assert kdv_resolution(0.01, 2.0) == (2044, 1.25e-5)
    with pytest.raises(ValueError, match="dispersion"):
        kdv_resolution(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# The example problem
# --------------------------------------------------------------------------------------------


def test_problem_residual_vanishes_on_the_soliton(in_root) -> None:
    """The problem's residual (derivatives by name through the network path, forward mode) is
    zero on the exact soliton of its own coefficients, and its initial condition is a cos(πx)."""
    with jax.enable_x64(True):
        p = kdv_problem(dispersion=0.03)

        def u(z):
            xi = math.sqrt(0.5) / (2 * p.dispersion) * (z[:, 1] + 0.3 - 0.5 * z[:, 0])  # c = 0.5
            return 1.5 / jnp.cosh(xi) ** 2

        z = jnp.asarray(np.random.default_rng(0).uniform([0, -1], [1, 1], (256, 2)))
        d = p.named_derivatives(u, z)
        r = p.residual(u, z)
        scale = float(jnp.max(jnp.abs(d["u_t"])))
        assert scale > 1.0
        np.testing.assert_allclose(r, 0.0, atol=1e-12 * scale)
        x = z[:, 1:]
        np.testing.assert_allclose(p.initial_condition(x), np.cos(np.pi * x[:, 0]), atol=1e-15)
        assert p.term_names(True) == ("pde", "ic") and p.term_names(False) == ("pde", "ic", "bc")


def test_problem_residual_vanishes_on_the_reference(in_root) -> None:
    """The solver and the problem agree on the equation (signs, δ², the ½ of (u²/2)_x): at
    t = 0.5 of the benchmark solution, `u_x`, `u_xxx` spectral from the reference on a periodic
    grid and `u_t` by a fourth-order central difference in time (τ = 1e-3, truncation ~1e-7 of
    the terms) make the problem's residual ~0 — against O(1) for a wrong sign or factor."""
    p = kdv_problem()
    tau, n = 1e-3, 512
    t = 0.5 + tau * np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    x = -1 + 2 * np.arange(n) / n  # one period, not a solver grid: Fourier interpolation path
    u = kdv_1d(t=t, x=x, modes=512, dt=1e-4, progress=False).u
    u_t = (u[0] - 8 * u[1] + 8 * u[3] - u[4]) / (12 * tau)
    k = np.pi * np.fft.rfftfreq(n, 1.0 / n)
    spec = np.fft.rfft(u[2])
    spec[-1] = 0.0  # Nyquist: no odd derivative
    d = {"u": u[2], "u_t": u_t, "u_x": np.fft.irfft(1j * k * spec, n),
         "u_xxx": np.fft.irfft(-1j * k**3 * spec, n)}
    with jax.enable_x64(True):
        z = jnp.stack([jnp.full(n, 0.5), jnp.asarray(x)], axis=1)
        r = np.asarray(p.residuals({name: jnp.asarray(v) for name, v in d.items()}, z)["pde"])
    scale = np.linalg.norm(u_t)
    assert r.dtype == np.float64
    assert np.linalg.norm(r) < 1e-6 * scale, np.linalg.norm(r) / scale
    wrong = u_t + d["u"] * d["u_x"] - DELTA**2 * d["u_xxx"]  # dispersion of the wrong sign
    assert np.linalg.norm(wrong) > 0.01 * scale


# --------------------------------------------------------------------------------------------
# The example's params through the gate
# --------------------------------------------------------------------------------------------


def test_gate_accepts_the_example_params(in_root) -> None:
    result = check_params(PARAMS)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(": ok")
    data = yaml.safe_load(PARAMS.read_text())
    assert data["problem"]["name"] is None and data["problem"]["target"] == TARGET


@pytest.mark.parametrize("name,value,message", [
    ("dispersion", 0.0, r"problem\.coefficients\.dispersion = 0\.0: must be >= 0\.01"),
    ("amplitude", 3.0, r"problem\.coefficients\.amplitude = 3\.0: must be <= 2"),
    ("amplitude", -1.0, r"problem\.coefficients\.amplitude = -1\.0: must be > 0"),
    ("dispersoin", 0.02, r"problem\.coefficients\.dispersoin = 0\.02: not a coefficient of "
                         r"examples/kdv/kdv\.py:KdV; did you mean 'dispersion'"),
])
def test_gate_rejects_a_bad_coefficient(in_root, tmp_path, name, value, message) -> None:
    import re

    line = refused_coefficient(PARAMS, tmp_path, name, value)
    assert re.search(message, line), line
