"""Tests of `pinn.reference`: exact solutions, brute-force integrals, convergence orders, file I/O.

Everything runs at reduced resolution (the default solves run in the pipeline).
"""

from __future__ import annotations

import math
import zipfile
from decimal import Decimal, getcontext
from pathlib import Path

import numpy as np
import pytest
from numpy.polynomial.hermite import hermgauss

from pinn.reference import (
    Reference,
    allen_cahn_1d,
    allen_cahn_2d,
    burgers_1d,
    burgers_cole_hopf,
    rel_l2,
)
from pinn.reference import cole_hopf as ch
from pinn.reference.spectral import etdrk4_coefficients

NU = 0.01 / np.pi


# ------------------------------------------------------------------------------------------
# Reference container and file format
# ------------------------------------------------------------------------------------------


def _ref_1d() -> Reference:
    t = np.linspace(0, 1, 3)
    x = np.linspace(-1, 1, 4)
    u = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    return Reference(t, x, None, u, 1.5e-9, {"modes": 64, "dt": 1e-3})


def _ref_2d() -> Reference:
    t, x, y = np.linspace(0, 1, 2), np.arange(3) / 3, np.arange(5) / 5
    u = np.random.default_rng(0).normal(size=(2, 3, 5))
    return Reference(t, x, y, u, 2e-10, {"modes": 128})


def test_rel_l2() -> None:
    b = np.array([3.0, 4.0])
    assert rel_l2(b, b) == 0.0
    assert rel_l2(np.array([3.0, 4.0 + 5.0]), b) == pytest.approx(1.0)
    assert rel_l2(np.zeros(2), np.zeros(2)) == 0.0
    assert rel_l2(np.ones(2), np.zeros(2)) == math.inf
    with pytest.raises(ValueError):
        rel_l2(np.zeros(3), np.ones(2))


@pytest.mark.parametrize("make", [_ref_1d, _ref_2d])
def test_save_load_round_trip(tmp_path: Path, make) -> None:
    ref = make()
    path = tmp_path / "ref.npz"
    ref.save(path)
    with np.load(path, allow_pickle=False) as data:
        expected = {"t", "x", "u", "est_rel_error"} | {f"meta_{k}" for k in ref.meta}
        if ref.y is not None:
            expected.add("y")
        assert set(data.files) == expected
        assert data["est_rel_error"].shape == ()
        assert data["u"].dtype == np.float64
    back = Reference.load(path)
    for key in ("t", "x", "u"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ref, key))
    if ref.y is None:
        assert back.y is None
    else:
        np.testing.assert_array_equal(back.y, ref.y)
    assert back.est_rel_error == ref.est_rel_error
    assert back.meta == ref.meta
    assert isinstance(back.meta["modes"], int)
    # deterministic bytes: same content -> same file
    path2 = tmp_path / "ref2.npz"
    ref.save(path2)
    assert path.read_bytes() == path2.read_bytes()
    # no temp files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.npz", "ref2.npz"]


def test_points_order_matches_u() -> None:
    ref = _ref_2d()
    pts = ref.points()
    assert pts.shape == (ref.u.size, 3)
    i, j, k = 1, 2, 3
    flat = np.ravel_multi_index((i, j, k), ref.u.shape)
    np.testing.assert_array_equal(pts[flat], [ref.t[i], ref.x[j], ref.y[k]])
    assert ref.input_names == ("t", "x", "y")


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ref.npz"
    good = _ref_1d()
    good.save(path)
    before = path.read_bytes()
    calls = {"n": 0}
    real_write = np.lib.format.write_array

    def failing_write(fp, array, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # some members already written, then the disk "fails"
            fp.write(b"partial")
            raise OSError("disk full")
        return real_write(fp, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(OSError, match="disk full"):
        _ref_2d().save(path)
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ref.npz"]  # no partial temp file left
    # a failing first save leaves nothing at all
    new = tmp_path / "new.npz"
    calls["n"] = 0
    with pytest.raises(OSError):
        _ref_2d().save(new)
    assert not new.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ref.npz"]


def _write_npz(path: Path, **arrays) -> None:
    np.savez(path, **arrays)


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        Reference.load(garbage)

    ok = dict(
        t=np.linspace(0, 1, 3), x=np.linspace(-1, 1, 4), u=np.zeros((3, 4)),
        est_rel_error=np.float64(1e-9),
    )
    for missing in ("t", "x", "u", "est_rel_error"):
        path = tmp_path / f"missing_{missing}.npz"
        _write_npz(path, **{k: v for k, v in ok.items() if k != missing})
        with pytest.raises(ValueError, match=rf"missing_{missing}\.npz.*'{missing}'"):
            Reference.load(path)

    path = tmp_path / "bad_shape.npz"
    _write_npz(path, **{**ok, "u": np.zeros((4, 3))})
    with pytest.raises(ValueError, match=r"bad_shape\.npz.*'u'"):
        Reference.load(path)

    path = tmp_path / "bad_y.npz"  # y present (2D) but u is 2-d
    _write_npz(path, **ok, y=np.arange(5.0))
    with pytest.raises(ValueError, match=r"bad_y\.npz.*'u'"):
        Reference.load(path)

    path = tmp_path / "pickled.npz"
    _write_npz(path, **{**ok, "meta_obj": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match=r"pickled\.npz"):
        Reference.load(path)

    path = tmp_path / "nonfinite.npz"
    _write_npz(path, **{**ok, "u": np.full((3, 4), np.nan)})
    with pytest.raises(ValueError, match=r"nonfinite\.npz"):
        Reference.load(path)

    path = tmp_path / "extra.npz"
    _write_npz(path, **ok, junk=np.zeros(2))
    with pytest.raises(ValueError, match=r"extra\.npz.*'junk'"):
        Reference.load(path)

    with pytest.raises(FileNotFoundError):
        Reference.load(tmp_path / "does_not_exist.npz")

    # a valid file written by plain numpy loads fine
    path = tmp_path / "plain.npz"
    _write_npz(path, **ok, meta_modes=np.int64(8))
    assert Reference.load(path).meta == {"modes": 8}
    assert zipfile.is_zipfile(path)


def test_reference_validates_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        Reference(np.zeros(3), np.zeros(4), None, np.zeros((4, 3)), 0.0)
    with pytest.raises(ValueError, match="est_rel_error"):
        Reference(np.zeros(3), np.zeros(4), None, np.zeros((3, 4)), float("nan"))
    with pytest.raises(ValueError, match="meta"):
        Reference(np.zeros(3), np.zeros(4), None, np.zeros((3, 4)), 0.0, {"s": "text"})


# ------------------------------------------------------------------------------------------
# Burgers / Cole–Hopf
# ------------------------------------------------------------------------------------------


def _burgers_brute(x: float, t: float, points: int = 40_001, nu: float = NU) -> float:
    """Cole–Hopf ratio on the original variable eta by a fine trapezoid rule (integrand decays
    like a Gaussian, so the rule is spectrally accurate), exponent shifted by its maximum."""
    s = math.sqrt(4 * nu * t)
    half_width = s * math.sqrt(100 + 1 / (np.pi * nu))  # beyond it the integrand is < e^-100
    eta = np.linspace(-half_width, half_width, points)
    y = np.pi * (x - eta)
    expo = -np.cos(y) / (2 * np.pi * nu) - eta**2 / (4 * nu * t)
    g = np.exp(expo - expo.max())
    return float(-np.trapezoid(np.sin(y) * g, eta) / np.trapezoid(g, eta))


# (x, t): near the shock (x ~ 0, t > 0.3), in the smooth region, at early times, near x = 1
BURGERS_POINTS = [
    (0.0, 1.0), (1e-3, 1.0), (-0.004, 0.8), (0.01, 0.5), (0.02, 0.35),
    (0.5, 0.2), (-0.9, 0.05), (0.3, 0.005), (0.999, 1.0), (0.0031, 0.6),
]


def test_cole_hopf_matches_brute_force_integral() -> None:
    x = np.array([p[0] for p in BURGERS_POINTS])
    t = np.array([p[1] for p in BURGERS_POINTS])
    got = burgers_1d(t=t, x=x, progress=False)  # default nodes (doubled, as returned)
    nodes = got.meta["nodes"]
    for i, (xi, ti) in enumerate(zip(x, t)):
        assert got.u[i, i] == pytest.approx(_burgers_brute(xi, ti), abs=1e-12), (xi, ti, nodes)
        coarse = ch.cole_hopf(NU, np.array([ti]), np.array([xi]), nodes // 2, progress=False)
        assert coarse[0, 0] == pytest.approx(_burgers_brute(xi, ti), abs=1e-12), (xi, ti)


def test_cole_hopf_matches_scipy_quad_near_shock() -> None:
    integrate = pytest.importorskip("scipy.integrate")
    x, t = 0.002, 0.9
    s = math.sqrt(4 * NU * t)
    half_width = s * math.sqrt(100 + 1 / (np.pi * NU))
    grid = np.linspace(-half_width, half_width, 20_001)
    emax = np.max(-np.cos(np.pi * (x - grid)) / (2 * np.pi * NU) - grid**2 / (4 * NU * t))

    def g(eta: float) -> float:
        return math.exp(
            -math.cos(math.pi * (x - eta)) / (2 * math.pi * NU) - eta**2 / (4 * NU * t) - emax
        )

    opts = dict(epsabs=1e-15, epsrel=1e-13, limit=500)
    num = integrate.quad(lambda e: math.sin(math.pi * (x - e)) * g(e), -half_width, half_width,
                         **opts)[0]
    den = integrate.quad(g, -half_width, half_width, **opts)[0]
    got = ch.cole_hopf(NU, np.array([t]), np.array([x]), 256, progress=False)[0, 0]
    assert got == pytest.approx(-num / den, abs=1e-9)
    assert abs(got) > 0.1  # really inside the steep shock layer


def test_gauss_hermite_large_n_path() -> None:
    z, logw = ch.gauss_hermite(400)  # beyond hermgauss's range: Golub–Welsch + log weights
    w = np.exp(logw)
    assert np.all(np.isfinite(logw)) and np.all(np.diff(z) > 0)
    for k in range(0, 30, 2):  # ∫ z^k e^{-z²} = Γ((k+1)/2)
        assert np.sum(w * z**k) == pytest.approx(math.gamma((k + 1) / 2), rel=1e-12)
    assert np.sum(w * z**5) == pytest.approx(0.0, abs=1e-12)
    z_small, w_small = hermgauss(40)  # same rule as numpy's where both apply (checked at n=40)
    z_big = ch._jacobi_eigenvalues_bisection(40, width=1e-13)
    np.testing.assert_allclose(z_big, z_small, rtol=0, atol=1e-11)
    # large-n nodes give the same solution as the default ones, near the shock too
    t, x = np.array([0.3, 0.7, 1.0]), np.linspace(-0.05, 0.05, 11)
    a = ch.cole_hopf(NU, t, x, 400, progress=False)
    b = ch.cole_hopf(NU, t, x, 128, progress=False)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


def test_cole_hopf_small_viscosity_needs_shift_and_many_nodes() -> None:
    """nu = 2e-4: exp(1/(2 pi nu)) = e^796 overflows without the max shift, and the shock layer
    needs > 300 nodes (the Golub–Welsch/log-weight path); 512 nodes match brute force."""
    nu = 2e-4
    for x, t in [(0.3, 0.2), (0.001, 0.5), (0.0005, 1.0), (0.9, 0.1), (-0.97, 0.6)]:
        got = ch.cole_hopf(nu, np.array([t]), np.array([x]), 512, progress=False)[0, 0]
        assert got == pytest.approx(_burgers_brute(x, t, 200_001, nu), abs=1e-12), (x, t)


def test_burgers_properties() -> None:
    t = np.array([0.0, 0.1, 0.4, 0.75, 1.0])
    x = np.linspace(-1, 1, 101)
    ref = burgers_1d(t=t, x=x, progress=False)
    assert burgers_cole_hopf is burgers_1d
    assert ref.u.shape == (5, 101) and ref.y is None
    np.testing.assert_array_equal(ref.u[0], -np.sin(np.pi * x))  # t = 0 exactly
    np.testing.assert_allclose(ref.u, -ref.u[:, ::-1], rtol=0, atol=1e-12)  # odd in x
    np.testing.assert_allclose(ref.u[:, [0, -1]], 0.0, rtol=0, atol=1e-12)  # u(±1, t) = 0
    assert ref.est_rel_error < 1e-12
    assert ref.meta["nodes"] == 2 * ref.meta["nodes_check"]
    # the steep shock at t = 1: u(∓0.02) = ±0.706 (two grid cells apart)
    assert ref.u[-1, 49] == pytest.approx(0.70608, abs=1e-5)
    assert ref.u[-1, 51] == pytest.approx(-0.70608, abs=1e-5)
    # too few nodes give a visibly larger self-certified error
    assert burgers_1d(t=t, x=x, nodes=30, progress=False).est_rel_error > 1e-6


# ------------------------------------------------------------------------------------------
# ETDRK4 / Allen–Cahn
# ------------------------------------------------------------------------------------------


def test_etdrk4_coefficients_match_high_precision() -> None:
    getcontext().prec = 50
    z = np.array([-150.0, -30.0, -5.0, -2.6875, -1.0001, -1.0, -0.99625, -0.3, 0.0, 1e-7, 0.5, 2.0])
    h = 0.5
    e, e2, q, f1, f2, f3 = etdrk4_coefficients(z / h, h)
    for i, zi in enumerate(z):
        zd = Decimal(float(zi))
        if zi == 0.0:
            exact = dict(q=Decimal(1) / 2, f1=Decimal(1) / 6, f2=Decimal(1) / 6, f3=Decimal(1) / 6)
        else:
            ez = zd.exp()
            exact = dict(
                q=((zd / 2).exp() - 1) / zd,
                f1=(-4 - zd + ez * (4 - 3 * zd + zd**2)) / zd**3,
                f2=(2 + zd + ez * (-2 + zd)) / zd**3,
                f3=(-4 - 3 * zd - zd**2 + ez * (4 - zd)) / zd**3,
            )
        for name, got in (("q", q[i]), ("f1", f1[i]), ("f2", f2[i]), ("f3", f3[i])):
            assert got / h == pytest.approx(float(exact[name]), rel=1e-11), (name, zi)
    np.testing.assert_allclose(e, np.exp(z))
    np.testing.assert_allclose(e2, np.exp(z / 2))


def test_allen_cahn_1d_heat_equation_exact() -> None:
    d = 0.02
    t = np.linspace(0, 1, 11)
    ic = lambda x: np.sin(np.pi * x) + 0.5 * np.cos(3 * np.pi * x)  # noqa: E731

    def exact(x: np.ndarray) -> np.ndarray:
        return (np.exp(-d * np.pi**2 * t)[:, None] * np.sin(np.pi * x)
                + 0.5 * np.exp(-9 * d * np.pi**2 * t)[:, None] * np.cos(3 * np.pi * x))

    ref = allen_cahn_1d(d, 0.0, t=t, modes=64, dt=0.05, progress=False, initial_condition=ic)
    assert ref.u.shape == (11, 512)
    np.testing.assert_allclose(ref.u, exact(ref.x), rtol=0, atol=1e-12)
    assert ref.est_rel_error < 1e-12
    # off-grid output points (exact Fourier interpolation path), outside [-1, 1) too
    x = np.random.default_rng(1).uniform(-3, 3, 37)
    ref = allen_cahn_1d(d, 0.0, t=t, x=x, modes=32, dt=0.1, progress=False, initial_condition=ic)
    np.testing.assert_allclose(ref.u, exact(x), rtol=0, atol=1e-12)


def test_allen_cahn_2d_heat_equation_exact() -> None:
    eps = 0.1
    t = np.array([0.0, 0.3, 1.0])

    def ic(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # not symmetric in x <-> y
        return np.sin(2 * np.pi * x) + 0.5 * np.cos(4 * np.pi * y) + np.cos(2 * np.pi * (x + 2 * y))

    def exact(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        X, Y = np.meshgrid(x, y, indexing="ij")
        k2 = (2 * np.pi) ** 2
        decay = lambda n2: np.exp(-(eps**2) * k2 * n2 * t)[:, None, None]  # noqa: E731
        return (decay(1) * np.sin(2 * np.pi * X) + 0.5 * decay(4) * np.cos(4 * np.pi * Y)
                + decay(5) * np.cos(2 * np.pi * (X + 2 * Y)))

    for n_out in (16, 12):  # 12 does not divide 32: exact Fourier interpolation path
        ref = allen_cahn_2d(eps, t=t, n_out=n_out, modes=32, dt=0.1, progress=False,
                            reaction=0.0, initial_condition=ic)
        assert ref.u.shape == (3, n_out, n_out)
        np.testing.assert_allclose(ref.x, np.arange(n_out) / n_out)
        np.testing.assert_allclose(ref.u, exact(ref.x, ref.y), rtol=0, atol=1e-12)


def _logistic(c: float, r: float, t: np.ndarray) -> np.ndarray:
    """Exact solution of u' = r (u - u³), u(0) = c."""
    return c * np.exp(r * t) / np.sqrt(1 + c**2 * (np.exp(2 * r * t) - 1))


def test_etdrk4_fourth_order_on_uniform_solution() -> None:
    """A constant initial condition stays constant in x and follows u' = r (u - u³) exactly:
    the nonlinear part of the scheme against a closed form, and its 4th order in time."""
    c, r = 0.3, 5.0
    t = np.linspace(0, 1, 11)
    ic = lambda x: np.full_like(x, c)  # noqa: E731
    errors = []
    for dt in (0.05, 0.025, 0.0125):
        # modes=8 and dt/2 -> the returned solution uses dt/2
        ref = allen_cahn_1d(1e-4, r, t=t, x=np.array([0.0, 0.5]), modes=8, dt=2 * dt,
                            progress=False, initial_condition=ic)
        errors.append(np.max(np.abs(ref.u - _logistic(c, r, t)[:, None])))
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(12 < q < 22 for q in ratios), (errors, ratios)
    ref = allen_cahn_1d(1e-4, r, t=t, x=np.array([0.0]), modes=8, dt=2e-3, progress=False,
                        initial_condition=ic)
    np.testing.assert_allclose(ref.u[:, 0], _logistic(c, r, t), rtol=0, atol=1e-10)
    # 2D, r = 1
    ref = allen_cahn_2d(0.01, t=t, n_out=4, modes=8, dt=1e-2, progress=False,
                        initial_condition=lambda x, y: np.full_like(x, -0.4))
    np.testing.assert_allclose(ref.u, np.broadcast_to(_logistic(-0.4, 1.0, t)[:, None, None],
                                                      ref.u.shape), rtol=0, atol=1e-10)


def test_allen_cahn_1d_self_convergence_smooth() -> None:
    """Smooth IC, nonlinear reaction: spectral convergence in modes, 4th order in dt."""
    d, r = 1e-3, 5.0
    t = np.linspace(0, 0.5, 6)
    x = np.linspace(-1, 1, 65)
    ic = lambda x: 0.5 * np.sin(np.pi * x) + 0.3 * np.cos(2 * np.pi * x)  # noqa: E731
    solve = lambda modes, dt: allen_cahn_1d(  # noqa: E731
        d, r, t=t, x=x, modes=modes, dt=dt, progress=False, initial_condition=ic)
    # space: fixed dt, modes 16 -> 32 -> 64 (returned: 32, 64, 128) against 512:
    # spectral convergence, i.e. the gain per doubling grows (measured ~70, ~160, ~3e4)
    best = solve(256, 2e-3).u
    err = [rel_l2(solve(m, 2e-3).u, best) for m in (16, 32, 64, 128)]
    gains = [err[i] / err[i + 1] for i in range(3)]
    assert err[-1] < 1e-9 and gains[0] > 30 and gains[0] < gains[1] < gains[2], (err, gains)
    # time: fixed modes, dt halving -> ~16x (ETDRK4 is 4th order)
    best = solve(64, 1e-3).u
    err = [rel_l2(solve(64, dt).u, best) for dt in (0.1, 0.05, 0.025)]
    ratios = [err[i] / err[i + 1] for i in range(2)]
    assert all(12 < q < 24 for q in ratios), (err, ratios)


def test_allen_cahn_1d_kink_algebraic_convergence_and_certificate() -> None:
    """The benchmark IC (kink at x = ±1) on a short horizon and reduced grids: the estimate
    falls like modes⁻² (algebraic), and `est_rel_error` is exactly the coarse-vs-returned
    difference (the returned u is the doubled solve)."""
    t = np.linspace(0, 0.05, 11)
    # (with fewer modes the undamped high-mode truncation error, ~modes^-1.5, still dominates)
    a = allen_cahn_1d(t=t, modes=511 * 4, dt=5e-3, progress=False)
    b = allen_cahn_1d(t=t, modes=511 * 8, dt=2.5e-3, progress=False)
    assert a.meta["modes"] == 511 * 8 and b.meta["modes"] == 511 * 16 and b.meta["dt"] == 1.25e-3
    np.testing.assert_array_equal(a.u[0], a.x**2 * np.cos(np.pi * a.x))  # output ⊂ solver grid
    np.testing.assert_allclose(a.u[:, 0], a.u[:, -1], rtol=0, atol=1e-14)  # x = ±1 identical
    ratio = a.est_rel_error / b.est_rel_error  # measured 4.1
    assert 3.5 < ratio < 4.6, (a.est_rel_error, b.est_rel_error)
    assert b.est_rel_error == pytest.approx(rel_l2(a.u, b.u), rel=1e-9)


def test_allen_cahn_2d_default_problem_reduced() -> None:
    t = np.array([0.0, 0.5])
    ref = allen_cahn_2d(t=t, n_out=32, modes=32, dt=0.05, progress=False)
    X, Y = np.meshgrid(ref.x, ref.y, indexing="ij")
    np.testing.assert_allclose(ref.u[0], np.sin(np.pi * X) ** 2 * np.cos(np.pi * Y) ** 2 - 0.5,
                               rtol=0, atol=1e-14)
    assert ref.est_rel_error < 1e-6
    # symmetry of the problem: u(x, y) = u(1 - x, y) = u(x, 1 - y)
    u = ref.u[1]
    np.testing.assert_allclose(u, np.roll(u[::-1], 1, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(u, np.roll(u[:, ::-1], 1, axis=1), rtol=0, atol=1e-12)
    assert ref.meta["modes"] == 64 and ref.meta["epsilon"] == 0.01


def test_progress_bar_and_validation(capsys: pytest.CaptureFixture[str]) -> None:
    t = np.array([0.0, 0.1])
    allen_cahn_1d(t=t, modes=16, dt=0.05, progress=False)
    burgers_1d(t=t, x=np.zeros(1), nodes=8, progress=False)
    assert capsys.readouterr().err == ""
    allen_cahn_1d(t=t, modes=16, dt=0.05, progress=True)
    assert "allen_cahn_1d" in capsys.readouterr().err
    with pytest.raises(ValueError, match="increasing"):
        allen_cahn_1d(t=np.array([0.5, 0.1]), modes=16, progress=False)
    with pytest.raises(ValueError):
        allen_cahn_2d(modes=16, dt=-1.0, progress=False)
    with pytest.raises(ValueError):
        burgers_1d(t=np.array([-0.1]), progress=False)


def test_output_times_hit_exactly() -> None:
    """Irregular output times with a dt that does not divide them still match the exact heat
    solution (each interval is split into equal steps)."""
    t = np.array([0.0, 0.013, 0.1, 0.1001, 0.77])
    d = 0.05
    ref = allen_cahn_1d(d, 0.0, t=t, x=np.array([0.25]), modes=16, dt=0.03, progress=False,
                        initial_condition=lambda x: np.cos(np.pi * x))
    np.testing.assert_allclose(ref.u[:, 0], np.exp(-d * np.pi**2 * t) * np.cos(np.pi * 0.25),
                               rtol=0, atol=1e-13)
