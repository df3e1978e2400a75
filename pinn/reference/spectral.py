"""Fourier pseudo-spectral + ETDRK4 references (numpy, float64): Allen–Cahn 1D/2D, and 1D periodic
equations with a dispersive / fourth-order linear part and a Burgers nonlinearity (KdV, KS).

Method (Cox & Matthews 2002, "Exponential time differencing for stiff systems", J. Comput. Phys.
176; Kassam & Trefethen 2005, "Fourth-order time-stepping for stiff PDEs", SIAM J. Sci. Comput.
26(4)): in Fourier space `v_t = L v + N(v)` with the diagonal linear symbol in `L` — for
Allen–Cahn **the linear reaction is kept in L**: `L = -d |k|² + r` — and the cubic
`N(v) = -r F[(F⁻¹ v)³]` evaluated pseudo-spectrally (no dealiasing; the doubled-resolution check
certifies the aliasing error too).
The ETDRK4 coefficients `e^{hL/2}`, `Q`, `f1`, `f2`, `f3` are computed by the contour integral of
Kassam & Trefethen: the mean over `contour_points` points on a circle of radius 1 around each `hL`,
real part taken (`M = 32`: the trapezoid rule is exact to rounding for these entire functions;
where `|hL| ≈ 1` the circle passes within `sin(π/2M)` of 0, which costs ~1e-12 relative accuracy
in `f1..f3` — harmless here, and fewer points keep that distance larger). A complex symbol (a
dispersive term, odd derivative order) takes the whole circle, `2·contour_points` points, and the
complex mean (Kassam & Trefethen's KdV/NLS codes): for a real `L` those are the same points as the
half circle and its mirror image, so the accuracy is the same; where `0.5 < |hL| < 1.5` the
radius is 2 (a complex `hL` can fall on a contour point's mirror image, a 0/0). Each output time is
hit exactly: every interval between output times takes the fewest equal steps not larger than `dt`.

Public functions (all return a `pinn.reference.Reference`, certified by a second solve with twice
the modes per dimension and half the time step; the saved `u` is the finer solve):

- `allen_cahn_1d(diffusion=1e-4, reaction=5.0, t=None, x=None, modes=..., dt=..., progress=True,
  initial_condition=None)`: `u_t = d u_xx + r (u - u³)`, `x ∈ [-1, 1)` periodic,
  `u(x, 0) = x² cos(πx)`. Output grid by default `t = linspace(0, 1, 201)`,
  `x = linspace(-1, 1, 512)` (both ends; `x = 1` is `x = -1` by periodicity). The initial condition
  has a derivative kink at `x = ±1`, so Fourier convergence is only algebraic (measured
  ~`modes⁻²`): the default is `N = 511·32` points (= modes) on `[-1, 1)` with `dt = 2.5e-3`,
  certified by (and returning) `N = 511·64`, `dt = 1.25e-3` (est_rel_error ≈ 1.5e-8, spatial
  error dominant; the time error at `dt = 2.5e-3` is ~4e-10); the default output `x` is an exact
  subset of both solver grids (subsampling = exact Fourier interpolation).
- `allen_cahn_2d(epsilon=0.01, t=None, n_out=128, modes=..., dt=..., progress=True, reaction=1.0,
  initial_condition=None)`: `u_t = ε² Δu + r (u - u³)` (`r = 1` for the benchmark),
  `(x, y) ∈ [0, 1)²` periodic, `u(x, y, 0) = sin²(πx) cos²(πy) - 0.5`. Output `t = {0, .25, .5, .75,
  1}` by default, `x = y = arange(n_out) / n_out`, `u[t, x, y]`. The solution stays smooth for
  `t <= 1` (128² modes agree with 512² to rounding), so the default is `128²` modes, `dt = 1e-2`,
  certified by (and returning) `256²`, `dt = 5e-3` (est_rel_error ≈ 1.3e-10, time error dominant).
- `periodic_1d(linear, initial_condition, advection=1.0, domain=(-1, 1), t=None, x=None, modes,
  dt, dealias=True, progress=True)`: `u_t = Σ_n c_n ∂ⁿu/∂xⁿ - g (u²/2)_x` on a periodic interval,
  `linear = {n: c_n}` (any orders: `{3: -δ²}` is KdV's dispersion, `L = c_3 (ik)³ = i δ² k³`;
  `{2: -β, 4: -γ}` is Kuramoto–Sivashinsky's `L = β k² - γ k⁴`), `g = advection`. The nonlinear
  term is `-g (ik/2) F[(F⁻¹ v)²]` with the 2/3 rule (modes `|j| ≥ N/3` of the product, and of the
  initial spectrum, are zeroed: the quadratic term then has no aliasing error).
- `kdv_1d(dispersion=0.022, amplitude=1.0, t=None, x=None, modes=..., dt=..., progress=True,
  initial_condition=None)`: `u_t + u u_x + δ² u_xxx = 0`, `x ∈ [-1, 1)` periodic,
  `u(0, x) = a cos(πx)` (Zabusky & Kruskal 1965; jaxpi's KdV example). Default output grid as for
  Allen–Cahn 1D (201 × 512, both ends); the default is `N = 511` points, `dt = 1e-4`, certified
  by (and returning) `N = 1022`, `dt = 5e-5` (est_rel_error ≈ 1.5e-10 at `δ = 0.022`, `a = 1`,
  time error dominant: the solitons that form are smooth, and 1022 and 2044 points agree to
  1e-15 at equal `dt`); `kdv_resolution` refines both for narrower, faster solitons.
- `kuramoto_sivashinsky_1d(alpha=100/16, beta=100/16², gamma=100/16⁴, t=None, x=None, modes=511,
  dt=5e-5, progress=True, initial_condition=None)`: `u_t + α u u_x + β u_xx + γ u_xxxx = 0`,
  `x ∈ [0, 2π)` periodic, `u(0, x) = cos x (1 + sin x)` (jaxpi's KS example), by `periodic_1d`
  with `L = β k² - γ k⁴`; certified by (and returning) 1022 points, `dt = 2.5e-5`
  (est_rel_error ≈ 6.8e-9, time error dominant). Output 201 × 512 on `[0, 2π]`, both ends.

At `t = 0` the initial condition is returned exactly (evaluated at the output points).
`t`/`x` may be any output grids (`t` strictly increasing, `t[0] >= 0`); output points that are not
solver-grid nodes are evaluated by exact Fourier interpolation (trigonometric sum). `reaction` /
`initial_condition` exist for verification (e.g. `reaction=0` gives the heat equation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pinn.reference.solution import Reference, by_doubling

ArrayFn = Callable[..., np.ndarray]

AC1D_DEFAULT_MODES = 511 * 32
AC1D_DEFAULT_DT = 2.5e-3
AC2D_DEFAULT_MODES = 128
AC2D_DEFAULT_DT = 1e-2
CONTOUR_POINTS = 32


# --------------------------------------------------------------------------------------------
# ETDRK4 core
# --------------------------------------------------------------------------------------------


def etdrk4_coefficients(
    lin: np.ndarray, h: float, contour_points: int = CONTOUR_POINTS
) -> tuple[np.ndarray, ...]:
    """`(E, E2, Q, f1, f2, f3)` for the diagonal symbol `lin` and step `h`
    (Kassam & Trefethen 2005, eq. (2.5) and the contour-integral evaluation of §3).

    `E = e^{hL}`, `E2 = e^{hL/2}`, `Q = (e^{hL/2} - 1)/L`, `f1 = h(-4 - z + e^z(4 - 3z + z²))/z³`,
    `f2 = h(2 + z + e^z(z - 2))/z³`, `f3 = h(-4 - 3z - z² + e^z(4 - z))/z³` with `z = hL`: real
    float64 arrays of `lin`'s shape (half circle, real part). A complex `lin` (complex dtype: a
    dispersive symbol) gives complex128 arrays, from the whole circle (`2·contour_points` points,
    complex mean). Work is done once per distinct value of `lin` (in blocks, to bound memory).
    """
    if np.iscomplexobj(lin):
        return _etdrk4_coefficients_complex(np.asarray(lin, dtype=np.complex128), h,
                                            contour_points)
    lin = np.asarray(lin, dtype=np.float64)
    values, inverse = np.unique(lin.ravel(), return_inverse=True)
    m = np.arange(1, contour_points + 1)
    roots = np.exp(1j * np.pi * (m - 0.5) / contour_points)
    q = np.empty_like(values)
    f1 = np.empty_like(values)
    f2 = np.empty_like(values)
    f3 = np.empty_like(values)
    block = max(1, 2**20 // contour_points)
    for start in range(0, values.size, block):
        sl = slice(start, start + block)
        lr = h * values[sl, None] + roots[None, :]
        elr = np.exp(lr)
        lr3 = lr**3
        q[sl] = h * np.real(np.mean((np.exp(lr / 2) - 1) / lr, axis=1))
        f1[sl] = h * np.real(np.mean((-4 - lr + elr * (4 - 3 * lr + lr**2)) / lr3, axis=1))
        f2[sl] = h * np.real(np.mean((2 + lr + elr * (-2 + lr)) / lr3, axis=1))
        f3[sl] = h * np.real(np.mean((-4 - 3 * lr - lr**2 + elr * (4 - lr)) / lr3, axis=1))
    shape = lin.shape

    def back(a: np.ndarray) -> np.ndarray:
        return a[inverse].reshape(shape)

    e = np.exp(h * lin)
    e2 = np.exp(h * lin / 2)
    return e, e2, back(q), back(f1), back(f2), back(f3)


def _etdrk4_coefficients_complex(
    lin: np.ndarray, h: float, contour_points: int
) -> tuple[np.ndarray, ...]:
    """`etdrk4_coefficients` for a complex symbol: the whole circle around each `hL`,
    `2·contour_points` points (those of the real case's half circle and their mirror images),
    complex mean. Radius 1, or 2 where `0.5 < |hL| < 1.5`: a complex `hL` of modulus ~1 may lie
    arbitrarily close to minus a contour point (the integrands' removable singularity at 0, a
    0/0 there), so the circle is kept at least 0.5 away from 0 (the integrands then stay below
    ~300 against results ~0.2: ~1e-13 relative rounding)."""
    values, inverse = np.unique(lin.ravel(), return_inverse=True)
    points = 2 * contour_points
    roots = np.exp(1j * np.pi * (np.arange(1, points + 1) - 0.5) / contour_points)
    radius = np.where(np.abs(np.abs(h * values) - 1.0) < 0.5, 2.0, 1.0)
    q = np.empty_like(values)
    f1 = np.empty_like(values)
    f2 = np.empty_like(values)
    f3 = np.empty_like(values)
    block = max(1, 2**20 // points)
    for start in range(0, values.size, block):
        sl = slice(start, start + block)
        lr = h * values[sl, None] + radius[sl, None] * roots[None, :]
        elr = np.exp(lr)
        lr3 = lr**3
        q[sl] = h * np.mean((np.exp(lr / 2) - 1) / lr, axis=1)
        f1[sl] = h * np.mean((-4 - lr + elr * (4 - 3 * lr + lr**2)) / lr3, axis=1)
        f2[sl] = h * np.mean((2 + lr + elr * (-2 + lr)) / lr3, axis=1)
        f3[sl] = h * np.mean((-4 - 3 * lr - lr**2 + elr * (4 - lr)) / lr3, axis=1)
    shape = lin.shape

    def back(a: np.ndarray) -> np.ndarray:
        return a[inverse].reshape(shape)

    return np.exp(h * lin), np.exp(h * lin / 2), back(q), back(f1), back(f2), back(f3)


def _check_times(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"t must be a non-empty 1-d array, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or t[0] < 0 or np.any(np.diff(t) <= 0):
        raise ValueError("t must be finite, strictly increasing, with t[0] >= 0")
    return t


def _step_plan(t_out: np.ndarray, dt: float) -> list[tuple[int, float]]:
    """Per output interval (starting from 0): number of equal steps `n <= ...` and step `h`."""
    plan = []
    t_prev = 0.0
    for t_next in t_out:
        span = float(t_next) - t_prev
        if span <= 0:
            plan.append((0, 0.0))
        else:
            n = max(1, math.ceil(span / dt * (1 - 1e-12)))
            plan.append((n, span / n))
        t_prev = float(t_next)
    return plan


def etdrk4_solve(
    v0: np.ndarray,
    lin: np.ndarray,
    nonlinear: Callable[[np.ndarray], np.ndarray],
    t_out: np.ndarray,
    dt: float,
    *,
    contour_points: int = CONTOUR_POINTS,
    progress: bool = True,
    desc: str = "ETDRK4",
) -> tuple[np.ndarray, int]:
    """Integrate `v_t = lin * v + nonlinear(v)` from `t = 0` (spectrum `v0`) with ETDRK4 and
    return the spectra at `t_out` (shape `(len(t_out),) + v0.shape`) and the number of steps."""
    t_out = _check_times(t_out)
    plan = _step_plan(t_out, dt)
    total = sum(n for n, _ in plan)
    out = np.empty((t_out.size,) + v0.shape, dtype=v0.dtype)
    cache: list[tuple[float, tuple[np.ndarray, ...]]] = []

    def coefficients(h: float) -> tuple[np.ndarray, ...]:
        for h_cached, coeffs in cache:
            if abs(h - h_cached) <= 1e-12 * h_cached:
                return coeffs
        coeffs = etdrk4_coefficients(lin, h, contour_points)
        cache.append((h, coeffs))
        if len(cache) > 4:
            cache.pop(0)
        return coeffs

    v = v0.copy()
    with tqdm(total=total, desc=desc, unit="step", disable=not progress, leave=False) as bar:
        for i, (n, h) in enumerate(plan):
            if n:
                e, e2, q, f1, f2, f3 = coefficients(h)
                for _ in range(n):
                    nv = nonlinear(v)
                    a = e2 * v + q * nv
                    na = nonlinear(a)
                    b = e2 * v + q * na
                    nb = nonlinear(b)
                    c = e2 * a + q * (2 * nb - nv)
                    nc = nonlinear(c)
                    v = e * v + nv * f1 + 2 * (na + nb) * f2 + nc * f3
                bar.update(n)
            out[i] = v
    return out, total


# --------------------------------------------------------------------------------------------
# Exact Fourier evaluation on output grids
# --------------------------------------------------------------------------------------------


def _grid_indices(x: np.ndarray, x0: float, period: float, n: int) -> np.ndarray | None:
    """Indices of `x` on the grid `x0 + period * j / n` (mod period), or None if any is off-grid."""
    pos = (x - x0) / period * n
    idx = np.rint(pos)
    if np.max(np.abs(pos - idx), initial=0.0) > 1e-9:
        return None
    return np.mod(idx.astype(np.int64), n)


def _fourier_matrix(
    x: np.ndarray, x0: float, period: float, n: int, half: bool
) -> np.ndarray:
    """`M[i, k] = w_k e^{i k (x_i - x0)} / n` so that `u(x) = Re(M @ c)` for numpy's (r)fft `c`
    (`half`: rfft layout with weights 2 on the interior modes; else the full fft layout)."""
    if half:
        modes = np.arange(n // 2 + 1)
        w = np.full(modes.size, 2.0)
        w[0] = 1.0
        if n % 2 == 0:
            w[-1] = 1.0
    else:
        modes = np.fft.fftfreq(n, 1.0 / n)
        w = np.ones(n)
    k = 2 * np.pi / period * modes
    return np.exp(1j * np.outer(x - x0, k)) * (w / n)


def _evaluate_1d(
    spectra: np.ndarray, n: int, x0: float, period: float, x: np.ndarray
) -> np.ndarray:
    idx = _grid_indices(x, x0, period, n)
    if idx is not None:
        return np.fft.irfft(spectra, n=n, axis=-1)[:, idx]
    out = np.empty((spectra.shape[0], x.size))
    chunk = max(1, 2**22 // spectra.shape[-1])
    for s in range(0, x.size, chunk):
        mat = _fourier_matrix(x[s : s + chunk], x0, period, n, half=True)
        out[:, s : s + chunk] = np.real(spectra @ mat.T)
    return out


def _evaluate_2d(
    spectra: np.ndarray, n: int, x0: float, period: float, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    ix = _grid_indices(x, x0, period, n)
    iy = _grid_indices(y, x0, period, n)
    if ix is not None and iy is not None:
        grid = np.fft.irfft2(spectra, s=(n, n), axes=(-2, -1))
        return grid[:, ix][:, :, iy]
    mx = _fourier_matrix(x, x0, period, n, half=False) * n  # x: full spectrum, unscaled
    my = _fourier_matrix(y, x0, period, n, half=True) / n  # y: rfft half, carries 1/n²
    return np.real(np.einsum("ia,tab,jb->tij", mx, spectra, my, optimize=True))


# --------------------------------------------------------------------------------------------
# Allen–Cahn 1D
# --------------------------------------------------------------------------------------------


def _ac1d_ic(x: np.ndarray) -> np.ndarray:
    return x**2 * np.cos(np.pi * x)


def _solve_ac1d(
    diffusion: float,
    reaction: float,
    ic: ArrayFn,
    t: np.ndarray,
    x: np.ndarray,
    modes: int,
    dt: float,
    contour_points: int,
    progress: bool,
    desc: str,
) -> tuple[np.ndarray, int]:
    x0, period = -1.0, 2.0
    grid = x0 + period * np.arange(modes) / modes
    k = 2 * np.pi / period * np.arange(modes // 2 + 1)
    lin = -diffusion * k**2 + reaction

    def nonlinear(v: np.ndarray) -> np.ndarray:
        u = np.fft.irfft(v, n=modes)
        return -reaction * np.fft.rfft(u * u * u)

    v0 = np.fft.rfft(np.asarray(ic(grid), dtype=np.float64))
    return _march_1d(v0, lin, nonlinear, ic, x0, period, t, x, modes, dt, contour_points,
                     progress, desc)


def _march_1d(v0: np.ndarray, lin: np.ndarray, nonlinear, ic: ArrayFn, x0: float, period: float,
              t: np.ndarray, x: np.ndarray, modes: int, dt: float, contour_points: int,
              progress: bool, desc: str) -> tuple[np.ndarray, int]:
    """ETDRK4 from the spectrum `v0` to the output times `t`, sampled at `x` (the initial
    condition itself at t = 0): the shared end of the periodic 1-D solvers."""
    spectra, steps = etdrk4_solve(
        v0, lin, nonlinear, t, dt, contour_points=contour_points, progress=progress, desc=desc
    )
    u = _evaluate_1d(spectra, modes, x0, period, x)
    u[t == 0] = np.asarray(ic(x), dtype=np.float64)  # the initial condition exactly
    return u, steps


def allen_cahn_1d(
    diffusion: float = 1e-4,
    reaction: float = 5.0,
    t: np.ndarray | None = None,
    x: np.ndarray | None = None,
    modes: int = AC1D_DEFAULT_MODES,
    dt: float = AC1D_DEFAULT_DT,
    progress: bool = True,
    *,
    initial_condition: ArrayFn | None = None,
    contour_points: int = CONTOUR_POINTS,
) -> Reference:
    """Certified reference for `u_t = d u_xx + r (u - u³)`, `x ∈ [-1, 1)` periodic, `t ∈ [0, 1]`,
    `u(x, 0) = x² cos(πx)` (Raissi et al. 2019 benchmark), by Fourier pseudo-spectral + ETDRK4
    (Kassam & Trefethen 2005) with `L = -d k² + r`, `N(u) = -r u³`.

    `modes` solver points on `[-1, 1)`, max step `dt`; certified against `2·modes`, `dt/2` whose
    result is returned. Defaults: `t = linspace(0, 1, 201)`, `x = linspace(-1, 1, 512)`.
    `initial_condition(x) -> u0` overrides the benchmark initial condition (for verification).
    """
    t_out = _check_times(np.linspace(0.0, 1.0, 201) if t is None else t)
    x_out = np.linspace(-1.0, 1.0, 512) if x is None else np.asarray(x, dtype=np.float64)
    if modes < 4 or dt <= 0:
        raise ValueError(f"need modes >= 4 and dt > 0, got modes={modes}, dt={dt}")
    ic = _ac1d_ic if initial_condition is None else initial_condition
    common: dict[str, Any] = dict(contour_points=contour_points, progress=progress)
    fine, steps, est = by_doubling(lambda r: _solve_ac1d(
        diffusion, reaction, ic, t_out, x_out, r * modes, dt / r,
        desc=f"allen_cahn_1d N={r * modes}", **common,
    ))
    return Reference(
        t=t_out,
        x=x_out,
        y=None,
        u=fine,
        est_rel_error=est,
        meta={
            "diffusion": float(diffusion),
            "reaction": float(reaction),
            "modes": 2 * modes,
            "dt": dt / 2,
            "steps": steps,
            "modes_check": modes,
            "dt_check": dt,
            "contour_points": contour_points,
            "default_initial_condition": int(initial_condition is None),
        },
    )


# --------------------------------------------------------------------------------------------
# Allen–Cahn 2D
# --------------------------------------------------------------------------------------------


def _ac2d_ic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sin(np.pi * x) ** 2 * np.cos(np.pi * y) ** 2 - 0.5


def _solve_ac2d(
    epsilon: float,
    reaction: float,
    ic: ArrayFn,
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    modes: int,
    dt: float,
    contour_points: int,
    progress: bool,
    desc: str,
) -> tuple[np.ndarray, int]:
    x0, period = 0.0, 1.0
    grid = x0 + period * np.arange(modes) / modes
    kx = 2 * np.pi / period * np.fft.fftfreq(modes, 1.0 / modes)
    ky = 2 * np.pi / period * np.arange(modes // 2 + 1)
    lin = -(epsilon**2) * (kx[:, None] ** 2 + ky[None, :] ** 2) + reaction

    def nonlinear(v: np.ndarray) -> np.ndarray:
        u = np.fft.irfft2(v, s=(modes, modes))
        return -reaction * np.fft.rfft2(u * u * u)

    gx, gy = np.meshgrid(grid, grid, indexing="ij")
    v0 = np.fft.rfft2(np.asarray(ic(gx, gy), dtype=np.float64))
    spectra, steps = etdrk4_solve(
        v0, lin, nonlinear, t, dt, contour_points=contour_points, progress=progress, desc=desc
    )
    u = _evaluate_2d(spectra, modes, x0, period, x, y)
    ox, oy = np.meshgrid(x, y, indexing="ij")
    u[t == 0] = np.asarray(ic(ox, oy), dtype=np.float64)  # the initial condition exactly
    return u, steps


def allen_cahn_2d(
    epsilon: float = 0.01,
    t: np.ndarray | None = None,
    n_out: int = 128,
    modes: int = AC2D_DEFAULT_MODES,
    dt: float = AC2D_DEFAULT_DT,
    progress: bool = True,
    *,
    reaction: float = 1.0,
    initial_condition: ArrayFn | None = None,
    contour_points: int = CONTOUR_POINTS,
) -> Reference:
    """Certified reference for `u_t = ε² (u_xx + u_yy) + r (u - u³)` (`r = 1`), `(x, y) ∈ [0, 1)²`
    periodic, `u(x, y, 0) = sin²(πx) cos²(πy) - 0.5`, by 2D Fourier pseudo-spectral + ETDRK4
    (Kassam & Trefethen 2005) with `L = -ε² |k|² + r`, `N(u) = -r u³`.

    `modes` solver points per dimension, max step `dt`; certified against `2·modes`, `dt/2` whose
    result is returned. Output `u[t, x, y]` on `x = y = arange(n_out) / n_out`, default
    `t = (0, .25, .5, .75, 1)`. `initial_condition(x, y) -> u0` (arrays from `meshgrid(...,
    indexing="ij")`) overrides the benchmark initial condition (for verification).
    """
    t_out = _check_times(np.linspace(0.0, 1.0, 5) if t is None else t)
    if modes < 4 or dt <= 0 or n_out < 1:
        raise ValueError(f"need modes >= 4, dt > 0, n_out >= 1; got {modes}, {dt}, {n_out}")
    xy = np.arange(n_out) / n_out
    ic = _ac2d_ic if initial_condition is None else initial_condition
    common: dict[str, Any] = dict(contour_points=contour_points, progress=progress)
    fine, steps, est = by_doubling(lambda r: _solve_ac2d(
        epsilon, reaction, ic, t_out, xy, xy, r * modes, dt / r,
        desc=f"allen_cahn_2d N={r * modes}²", **common,
    ))
    return Reference(
        t=t_out,
        x=xy,
        y=xy.copy(),
        u=fine,
        est_rel_error=est,
        meta={
            "epsilon": float(epsilon),
            "reaction": float(reaction),
            "modes": 2 * modes,
            "dt": dt / 2,
            "steps": steps,
            "modes_check": modes,
            "dt_check": dt,
            "contour_points": contour_points,
            "default_initial_condition": int(initial_condition is None),
        },
    )


# --------------------------------------------------------------------------------------------
# 1D periodic: dispersive / fourth-order linear part, Burgers nonlinearity (KdV, KS)
# --------------------------------------------------------------------------------------------

KDV_DEFAULT_MODES = 511
KDV_DEFAULT_DT = 1e-4
#: the dispersion the defaults are set for (Zabusky & Kruskal's δ)
KDV_DEFAULT_DISPERSION = 0.022


def kdv_resolution(dispersion: float, amplitude: float) -> tuple[int, float]:
    """`(modes, dt)` for `kdv_1d`: the defaults (`511`, `1e-4`: est_rel_error ≈ 1.5e-10 at
    `δ = 0.022`, `a = 1`) refined by powers of 2 as the solitons get narrower and faster. A
    soliton of height ~`a` has wavenumber ~`√a/δ` (modes scale with it) and speed ~`a` (the
    explicit nonlinear term's step scales with `1/(a √a/δ)`); neither is coarsened below the
    defaults."""
    a, d = abs(float(amplitude)), float(dispersion)
    if not d > 0:
        raise ValueError(f"dispersion must be > 0, got {dispersion}")
    space = max(1.0, math.sqrt(a) / d * KDV_DEFAULT_DISPERSION)
    time = max(1.0, space * a)
    refine = lambda f: 2 ** math.ceil(math.log2(f) - 1e-9)  # noqa: E731
    return KDV_DEFAULT_MODES * refine(space), KDV_DEFAULT_DT / refine(time)


def linear_symbol(linear: Mapping[int, float], k: np.ndarray) -> np.ndarray:
    """`L(k) = Σ_n c_n (ik)ⁿ` for `linear = {n: c_n}` (the Fourier symbol of `Σ c_n ∂ⁿ/∂xⁿ`):
    real float64 when every odd order has `c_n = 0`, else complex128 (a dispersive symbol).
    The powers of `i` are exact (`(ik)³ = -i k³`), so an even-order symbol has no rounding
    imaginary part."""
    k = np.asarray(k, dtype=np.float64)
    re = np.zeros_like(k)
    im = np.zeros_like(k)
    for n, c in linear.items():
        if int(n) != n or n < 0:
            raise ValueError(f"linear: derivative orders must be integers >= 0, got {n!r}")
        n, c = int(n), float(c)
        if c == 0.0:
            continue
        term = c * k**n
        # i^n = 1, i, -1, -i
        if n % 4 == 0:
            re += term
        elif n % 4 == 1:
            im += term
        elif n % 4 == 2:
            re -= term
        else:
            im -= term
    odd = any(float(c) != 0.0 and int(n) % 2 == 1 for n, c in linear.items())
    return re + 1j * im if odd else re


def dealias_mask(modes: int) -> np.ndarray:
    """The 2/3 rule on numpy's rfft layout of `modes` points: True for the kept modes
    `j < modes/3` (then `j1 + j2` of two kept modes aliases to `|j| > modes/3`, never onto a
    kept mode)."""
    j = np.arange(modes // 2 + 1)
    return 3 * j < modes


def _solve_periodic_1d(
    linear: Mapping[int, float],
    advection: float,
    ic: ArrayFn,
    x0: float,
    period: float,
    t: np.ndarray,
    x: np.ndarray,
    modes: int,
    dt: float,
    dealias: bool,
    contour_points: int,
    progress: bool,
    desc: str,
) -> tuple[np.ndarray, int]:
    grid = x0 + period * np.arange(modes) / modes
    k = 2 * np.pi / period * np.arange(modes // 2 + 1)
    lin = linear_symbol(linear, k)
    keep = dealias_mask(modes) if dealias else np.ones(k.size, dtype=bool)
    if modes % 2 == 0:
        keep[-1] = False  # the Nyquist mode has no derivative (dealiased anyway)
    # -g (u²/2)_x  ->  -g (ik/2) F[u²], the product's aliased modes removed
    factor = np.where(keep, -0.5j * float(advection) * k, 0.0)

    def nonlinear(v: np.ndarray) -> np.ndarray:
        u = np.fft.irfft(v, n=modes)
        return factor * np.fft.rfft(u * u)

    v0 = np.fft.rfft(np.asarray(ic(grid), dtype=np.float64)) * keep
    return _march_1d(v0, lin, nonlinear, ic, x0, period, t, x, modes, dt, contour_points,
                     progress, desc)


def periodic_1d(
    linear: Mapping[int, float],
    initial_condition: ArrayFn,
    *,
    advection: float = 1.0,
    domain: tuple[float, float] = (-1.0, 1.0),
    t: np.ndarray | None = None,
    x: np.ndarray | None = None,
    modes: int = 512,
    dt: float = 1e-3,
    dealias: bool = True,
    progress: bool = True,
    contour_points: int = CONTOUR_POINTS,
    name: str = "periodic_1d",
    meta: Mapping[str, float | int] | None = None,
) -> Reference:
    """Certified reference for `u_t = Σ_n c_n ∂ⁿu/∂xⁿ - g (u²/2)_x` (`linear = {n: c_n}`,
    `g = advection`) on the periodic interval `domain = [x0, x1)`, `u(0, x) = initial_condition(x)`,
    by Fourier pseudo-spectral + ETDRK4 (Kassam & Trefethen 2005): `L(k) = Σ c_n (ik)ⁿ` (complex
    when an odd order is present: dispersion), the quadratic term with the 2/3 rule (`dealias`).

    KdV `u_t + u u_x + δ² u_xxx = 0`: `linear = {3: -δ²}`; Kuramoto–Sivashinsky
    `u_t + α u u_x + β u_xx + γ u_xxxx = 0`: `linear = {2: -β, 4: -γ}`, `advection = α`.
    `modes` solver points on `domain`, max step `dt`; certified against `2·modes`, `dt/2` whose
    result is returned. Defaults: `t = linspace(0, 1, 201)`, `x = linspace(x0, x1, 512)`.
    `meta` is added to the reference's meta (e.g. the coefficients by their problem's names).
    """
    x0, x1 = (float(a) for a in domain)
    if not x1 > x0:
        raise ValueError(f"domain must be (x0, x1) with x1 > x0, got {domain}")
    t_out = _check_times(np.linspace(0.0, 1.0, 201) if t is None else t)
    x_out = np.linspace(x0, x1, 512) if x is None else np.asarray(x, dtype=np.float64)
    if modes < 4 or dt <= 0:
        raise ValueError(f"need modes >= 4 and dt > 0, got modes={modes}, dt={dt}")
    linear = {int(n): float(c) for n, c in dict(linear).items()}
    linear_symbol(linear, np.zeros(1))  # validates the orders
    common: dict[str, Any] = dict(dealias=dealias, contour_points=contour_points,
                                  progress=progress)
    fine, steps, est = by_doubling(lambda r: _solve_periodic_1d(
        linear, advection, initial_condition, x0, x1 - x0, t_out, x_out, r * modes, dt / r,
        desc=f"{name} N={r * modes}", **common,
    ))
    info: dict[str, float | int] = {f"linear_{n}": c for n, c in sorted(linear.items())}
    info.update(dict(meta or {}))
    info.update(
        advection=float(advection),
        x0=x0,
        x1=x1,
        modes=2 * modes,
        dt=dt / 2,
        steps=steps,
        modes_check=modes,
        dt_check=dt,
        dealias=int(dealias),
        contour_points=contour_points,
    )
    return Reference(t=t_out, x=x_out, y=None, u=fine, est_rel_error=est, meta=info)


def kdv_1d(
    dispersion: float = 0.022,
    amplitude: float = 1.0,
    t: np.ndarray | None = None,
    x: np.ndarray | None = None,
    modes: int | None = None,
    dt: float | None = None,
    progress: bool = True,
    *,
    initial_condition: ArrayFn | None = None,
    contour_points: int = CONTOUR_POINTS,
) -> Reference:
    """Certified reference for the Korteweg–de Vries equation `u_t + u u_x + δ² u_xxx = 0`,
    `x ∈ [-1, 1)` periodic, `t ∈ [0, 1]`, `u(0, x) = a cos(πx)` (Zabusky & Kruskal 1965 with
    `δ = 0.022`; jaxpi's KdV example), by `periodic_1d` with `L = i δ² k³`, `N = -(ik/2) F[u²]`
    (2/3 rule). `modes` solver points, max step `dt`; certified against `2·modes`, `dt/2` whose
    result is returned; None: `kdv_resolution(dispersion, amplitude)` (at the defaults `511`
    points, `dt = 1e-4`: est_rel_error ≈ 1.5e-10, ~5 s). Defaults: `t = linspace(0, 1, 201)`,
    `x = linspace(-1, 1, 512)` (an exact subset of the solver grids).
    `initial_condition(x) -> u0` overrides `a cos(πx)` (for verification).
    """
    auto_modes, auto_dt = kdv_resolution(dispersion, amplitude)
    modes = auto_modes if modes is None else modes
    dt = auto_dt if dt is None else dt
    a = float(amplitude)
    ic = (lambda x: a * np.cos(np.pi * x)) if initial_condition is None else initial_condition
    return periodic_1d(
        {3: -float(dispersion) ** 2}, ic, advection=1.0, domain=(-1.0, 1.0), t=t, x=x,
        modes=modes, dt=dt, progress=progress, contour_points=contour_points, name="kdv_1d",
        meta={"dispersion": float(dispersion), "amplitude": a,
              "default_initial_condition": int(initial_condition is None)},
    )


#: Kuramoto–Sivashinsky defaults: solver points on [0, 2π) and max step (the returned solve has
#: twice the points and half the step)
KS_DEFAULT_MODES = 511
KS_DEFAULT_DT = 5e-5


def kuramoto_sivashinsky_1d(
    alpha: float = 100 / 16,
    beta: float = 100 / 16**2,
    gamma: float = 100 / 16**4,
    t: np.ndarray | None = None,
    x: np.ndarray | None = None,
    modes: int = KS_DEFAULT_MODES,
    dt: float = KS_DEFAULT_DT,
    progress: bool = True,
    *,
    initial_condition: ArrayFn | None = None,
    contour_points: int = CONTOUR_POINTS,
) -> Reference:
    """Certified reference for the Kuramoto–Sivashinsky equation
    `u_t + α u u_x + β u_xx + γ u_xxxx = 0`, `x ∈ [0, 2π)` periodic, `t ∈ [0, 1]`,
    `u(0, x) = cos(x)(1 + sin(x))` (jaxpi's KS example, α = 100/16, β = 100/16², γ = 100/16⁴:
    Kassam & Trefethen's 2005 case `u_t + u u_x + u_xx + u_xxxx = 0` on `[0, 32π)`,
    `t ∈ [0, 100]`, rescaled by `x = x'/16`, `t = t'/100`), by `periodic_1d` with the
    fourth-order symbol `L(k) = β k² - γ k⁴` (`linear = {2: -β, 4: -γ}`: modes `0 < k < √(β/γ)`
    grow) and `N = -α (ik/2) F[u²]` (2/3 rule).

    `modes` solver points on `[0, 2π)`, max step `dt`; certified against `2·modes`, `dt/2` whose
    result is returned (defaults `511`, `5e-5`: est_rel_error ≈ 6.8e-9 at the default
    coefficients, time error dominant, ~8 s; an independent solve returning 2044 points at
    `dt = 5e-6` agrees with it to 1.6e-9 — below ~2e-9 the solves differ by rounding that the
    chaotic dynamics amplify, so finer steps do not certify more). Defaults: `t = linspace(0, 1, 201)`, `x = linspace(0, 2π, 512)`
    (an exact subset of the solver grids). `initial_condition(x) -> u0` overrides the default
    (for verification).
    """
    ic = ((lambda x: np.cos(x) * (1 + np.sin(x))) if initial_condition is None
          else initial_condition)
    return periodic_1d(
        {2: -float(beta), 4: -float(gamma)}, ic, advection=float(alpha), domain=(0.0, 2 * np.pi),
        t=t, x=x, modes=modes, dt=dt, progress=progress, contour_points=contour_points,
        name="kuramoto_sivashinsky_1d",
        meta={"alpha": float(alpha), "beta": float(beta), "gamma": float(gamma),
              "default_initial_condition": int(initial_condition is None)},
    )


__all__ = ["allen_cahn_1d", "allen_cahn_2d", "dealias_mask", "etdrk4_coefficients",
           "etdrk4_solve", "kdv_1d", "kdv_resolution", "kuramoto_sivashinsky_1d",
           "linear_symbol", "periodic_1d"]
