"""Lid-driven cavity at Re 100 (PINNacle's NS2d-C): steady incompressible Navier–Stokes

    u u_x + v u_y + p_x − ν (u_xx + u_yy) = 0,
    u v_x + v v_y + p_y − ν (v_xx + v_yy) = 0,
    u_x + v_y = 0                                  on (x, y) ∈ [0, 1]²,  ν = 0.01,

lid `u = 4x(1 − x)`, `v = 0` on `y = 1`, `u = v = 0` on the other three walls, the pressure pinned
at `(0, 0)` (`p(0, 0) = 0`; p is otherwise defined up to a constant). A three-output network
`(u, v, p)`; residuals `momentum_x`, `momentum_y`, `continuity`; the wall conditions in the loss
term `bc`, the pressure pin in the term `pin` (an `Observation` of p with the one point (0, 0),
value 0, given by `observations`).

The reference is computed here (`reference`, the stage `reference`; it depends on this file's
hash, so it is DVC-cached and reruns when this file changes): Chebyshev collocation of the
streamfunction with Newton's method at 64 intervals per axis, certified by a solve at 32 (below,
`solve_certified`), interpolated to the cell centres of a uniform 100 × 100 grid (the corners,
where the pressure is singular, are not grid points).
Run: `pinn run --params examples/lid_driven_cavity/params.yaml --workdir runs/lid_driven_cavity`.

The reference solver (NumPy and SciPy only)
-------------------------------------------

Formulation. With the streamfunction ψ (`u = ψ_y`, `v = −ψ_x`, so continuity holds exactly) the
curl of the momentum equations is the streamfunction–vorticity equation

    ν Δ²ψ − ψ_y (Δψ)_x + ψ_x (Δψ)_y = 0,
    ψ = 0 on the four walls,  ψ_x = 0 on x = 0, 1,  ψ_y = 0 on y = 0,  ψ_y = 4x(1 − x) on y = 1.

Discretisation: ψ at the `(N + 1)²` Chebyshev–Gauss–Lobatto nodes `x_i = (1 − cos(πi/N))/2`
(the same in y), derivatives by the Chebyshev differentiation matrix (Trefethen 2000, "Spectral
Methods in MATLAB", program `cheb`) in tensor (Kronecker) form. Equations, one per node: `ψ = 0`
at the boundary nodes; the normal-derivative conditions in the rows of the nodes next to the
boundary (the usual row replacement for the clamped biharmonic: `ψ_y` at the boundary nodes
`(i, 0)` and `(i, N)` in the rows of `(i, 1)` and `(i, N − 1)` for `1 ≤ i ≤ N − 1` — the lid's
and the bottom's velocity at every node —, `ψ_x = 0` at `(0, j)` and `(N, j)` in the rows of
`(1, j)` and `(N − 1, j)` for `2 ≤ j ≤ N − 2`: the side walls' `v = 0` is not imposed at the two
nodes next to each corner, as the nodes next to the boundary are 4 fewer than the conditions);
the PDE at the other `(N − 3)²` interior nodes. Newton's method on this square system (dense
LU), from ψ = 0 (its first step is the Stokes solution) or from a coarser solution, until the
update is below `tol` relative to ψ.

Pressure: the momentum equations give its gradient, `∇p = −(u·∇)u + νΔu`, evaluated spectrally;
p is the least-squares solution of `[D_x; D_y] p = ∇p` (`pressure`: its normal equations, a
Sylvester equation solved in an eigenbasis) with `p = 0` at the node `(0, 0)` (the pinned corner;
p is otherwise defined up to a constant).

Accuracy. The lid profile meets the side walls with `u_x = ±4` while the walls have `v_y = 0`,
so `u_x + v_y = 0` fails in the limit at the two top corners: the solution has weak corner
singularities there (bounded velocity, unbounded pressure gradient), which limits the Chebyshev
convergence to algebraic rates. The error is therefore not assumed but measured: `solve_certified`
solves at N and N/2 and reports the relative L2 difference on the evaluation grid, per field
(`est_rel_error_u`, `_v`, `_p`) and over (u, v, p) stacked.

The results are interpolated (barycentric Lagrange interpolation through the Chebyshev nodes,
Berrut & Trefethen 2004) to the evaluation grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import jax
import numpy as np
import scipy.linalg

from pinn.problems import Bound, Box, Condition, Dirichlet, Observation, Problem

# ---------------------------------------------------------------------------------------------
# the reference solver
# ---------------------------------------------------------------------------------------------


def cheb(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Chebyshev–Gauss–Lobatto nodes on [0, 1], ascending, `(n + 1,)`, and the differentiation
    matrix `(n + 1, n + 1)` on them (Trefethen's `cheb` on [−1, 1], mapped by `x = (1 − ξ)/2`)."""
    if n < 2:
        raise ValueError(f"n = {n}: needs at least 2 intervals")
    k = np.arange(n + 1)
    xi = np.cos(np.pi * k / n)
    c = np.where((k == 0) | (k == n), 2.0, 1.0) * (-1.0) ** k
    dxi = xi[:, None] - xi[None, :]
    d = np.outer(c, 1.0 / c) / (dxi + np.eye(n + 1))
    d -= np.diag(d.sum(axis=1))
    return (1.0 - xi) / 2.0, -2.0 * d


def interpolation_matrix(nodes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Barycentric interpolation from the Chebyshev–Lobatto `nodes (n + 1,)` (as `cheb` returns
    them) to `targets (m,)`: `(m, n + 1)`; a target on a node takes that node's value."""
    n = len(nodes) - 1
    w = (-1.0) ** np.arange(n + 1)
    w[0] /= 2.0
    w[-1] /= 2.0
    diff = targets[:, None] - nodes[None, :]
    hit = np.isclose(diff, 0.0, atol=1e-14, rtol=0.0)
    diff = np.where(hit, 1.0, diff)
    m = w[None, :] / diff
    m /= m.sum(axis=1, keepdims=True)
    rows = hit.any(axis=1)
    m[rows] = hit[rows].astype(float)
    return m


def lid(x: np.ndarray) -> np.ndarray:
    """The lid's velocity `u(x, 1) = 4x(1 − x)`."""
    return 4.0 * x * (1.0 - x)


@dataclass(frozen=True)
class Solution:
    """One solve: the nodes `x (n + 1,)` (the same in y), and `psi`, `u`, `v`, `p`, each
    `(n + 1, n + 1)` indexed `[i, j]` = value at `(x_i, y_j)`; `newton_steps` taken and the
    last relative update."""

    x: np.ndarray
    psi: np.ndarray
    u: np.ndarray
    v: np.ndarray
    p: np.ndarray
    newton_steps: int
    last_update: float

    def at(self, xs: np.ndarray, ys: np.ndarray) -> dict[str, np.ndarray]:
        """u, v, p interpolated to the tensor grid `xs (mx,) × ys (my,)`: each `(mx, my)`."""
        ix, iy = interpolation_matrix(self.x, xs), interpolation_matrix(self.x, ys)
        return {f: ix @ getattr(self, f) @ iy.T for f in ("u", "v", "p")}


def solve(n: int, nu: float = 0.01, tol: float = 1e-10, max_steps: int = 30,
          start: Solution | None = None) -> Solution:
    """Steady cavity flow at `n` Chebyshev intervals per axis (module doc); Newton starts from
    `start`'s ψ interpolated to this grid (fewer steps; the converged solution does not depend
    on it), else from ψ = 0. Raises `RuntimeError` when Newton has not converged after
    `max_steps`."""
    x, d1 = cheb(n)
    eye = np.eye(n + 1)
    d2 = d1 @ d1
    d3 = d2 @ d1
    d4 = d2 @ d2
    dx, dy = np.kron(d1, eye), np.kron(eye, d1)
    lap = np.kron(d2, eye) + np.kron(eye, d2)
    lap_x = np.kron(d3, eye) + np.kron(d1, d2)       # ∂x Δ
    lap_y = np.kron(d2, d1) + np.kron(eye, d3)       # ∂y Δ
    bih = np.kron(d4, eye) + 2.0 * np.kron(d2, d2) + np.kron(eye, d4)
    size = (n + 1) ** 2
    idx = np.arange(size).reshape(n + 1, n + 1)

    # rows: each node's equation; linear rows (boundary conditions) fixed, the rest the PDE
    linear = np.zeros((size, size))
    rhs = np.zeros(size)
    pde = np.ones((n + 1, n + 1), bool)
    boundary = np.zeros_like(pde)
    boundary[[0, -1], :] = boundary[:, [0, -1]] = True
    for i, j in zip(*np.nonzero(boundary)):
        linear[idx[i, j], idx[i, j]] = 1.0
    for i in range(1, n):                              # ψ_y = 0 on y = 0, ψ_y = lid on y = 1
        linear[idx[i, 1]] = dy[idx[i, 0]]
        linear[idx[i, n - 1]] = dy[idx[i, n]]
        rhs[idx[i, n - 1]] = lid(x[i])
    for j in range(2, n - 1):                          # ψ_x = 0 on x = 0 and x = 1
        linear[idx[1, j]] = dx[idx[0, j]]
        linear[idx[n - 1, j]] = dx[idx[n, j]]
    pde[boundary] = False
    pde[1, :] = pde[n - 1, :] = pde[:, 1] = pde[:, n - 1] = False
    rows = idx[pde]
    fixed = np.setdiff1d(np.arange(size), rows)

    if start is None:
        psi = np.zeros(size)
    else:
        ix = interpolation_matrix(start.x, x)
        psi = (ix @ start.psi @ ix.T).reshape(-1)
    update = np.inf
    for step in range(1, max_steps + 1):
        px, py = dx @ psi, dy @ psi
        lx, ly = lap_x @ psi, lap_y @ psi
        residual = np.empty(size)
        residual[fixed] = linear[fixed] @ psi - rhs[fixed]
        residual[rows] = (nu * (bih @ psi) - py * lx + px * ly)[rows]
        jac = np.empty((size, size))
        jac[fixed] = linear[fixed]
        jac[rows] = (nu * bih[rows] - py[rows, None] * lap_x[rows] - lx[rows, None] * dy[rows]
                     + px[rows, None] * lap_y[rows] + ly[rows, None] * dx[rows])
        delta = scipy.linalg.solve(jac, -residual, check_finite=False)
        psi = psi + delta
        update = float(np.linalg.norm(delta) / max(np.linalg.norm(psi), 1e-300))
        if update < tol:
            break
    else:
        raise RuntimeError(f"cavity solve at n = {n}: Newton not converged after {max_steps} "
                           f"steps (last relative update {update:.2e})")

    u, v = dy @ psi, -(dx @ psi)
    gx = -(u * (dx @ u) + v * (dy @ u)) + nu * (lap @ u)
    gy = -(u * (dx @ v) + v * (dy @ v)) + nu * (lap @ v)
    shape = (n + 1, n + 1)
    p = pressure(d1, gx.reshape(shape), gy.reshape(shape))
    return Solution(x, psi.reshape(shape), u.reshape(shape), v.reshape(shape), p, step, update)


def pressure(d1: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The least-squares p `(n + 1, n + 1)` of `D_x p = gx`, `D_y p = gy` (`gx`, `gy` of that
    shape, `[i, j]` at `(x_i, y_j)`; `D_x p = d1 @ p`, `D_y p = p @ d1.T`), shifted to `p = 0`
    at node (0, 0). Its normal equations `M P + P M = d1ᵀ gx + gy d1` with `M = d1ᵀ d1`
    (symmetric, null space the constants, as for the gradient) are solved in the eigenbasis of
    M: O(n³), where a dense least-squares solve of the `2(n + 1)² × (n + 1)²` system is O(n⁶)."""
    lam, q = np.linalg.eigh(d1.T @ d1)
    rhs = q.T @ (d1.T @ gx + gy @ d1) @ q
    denom = lam[:, None] + lam[None, :]
    null = denom <= 1e-9 * denom.max()                 # the constant (λ = 0 twice): free
    pt = np.where(null, 0.0, rhs / np.where(null, 1.0, denom))
    p = q @ pt @ q.T
    return p - p[0, 0]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Relative L2 difference `‖a − b‖ / ‖b‖` (over all entries)."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def solve_certified(n: int, nu: float, grid: np.ndarray) -> tuple[dict[str, np.ndarray],
                                                                   dict[str, float]]:
    """u, v, p solved at `n` intervals, on the tensor grid `grid × grid` (`grid (m,)` in
    [0, 1]): each `(m, m)` indexed `[i, j]` = value at `(grid_i, grid_j)`; and the error
    estimate: the relative L2 difference to a solve at `n // 2` on the same grid, per field
    (`est_rel_error_u`, `_v`, `_p`) and over (u, v, p) (`est_rel_error`) and (u, v)
    (`est_rel_error_uv`) stacked. The fine solve's Newton starts from the coarse solution (it
    converges to the same tolerance either way)."""
    coarse = solve(n // 2, nu)
    fine = solve(n, nu, start=coarse)
    a, b = fine.at(grid, grid), coarse.at(grid, grid)
    est = {f"est_rel_error_{f}": rel(b[f], a[f]) for f in ("u", "v", "p")}
    stack = lambda s, fs: np.stack([s[f] for f in fs])  # noqa: E731
    est["est_rel_error"] = rel(stack(b, "uvp"), stack(a, "uvp"))
    est["est_rel_error_uv"] = rel(stack(b, "uv"), stack(a, "uv"))
    return a, est


# ---------------------------------------------------------------------------------------------
# the problem
# ---------------------------------------------------------------------------------------------

#: the reference's resolution: Chebyshev intervals per axis (certified against half of it), and
#: the evaluation grid: the cell centres of a uniform GRID × GRID grid of [0, 1]²
INTERVALS = 64
GRID = 100


def cell_centres(m: int = GRID) -> np.ndarray:
    """The cell centres `(k + 1/2)/m`, `k = 0..m−1`, of a uniform grid of [0, 1]: `(m,)`."""
    return (np.arange(m) + 0.5) / m


@dataclass(frozen=True)
class LidDrivenCavity(Problem):
    """Steady Navier–Stokes in the unit square driven by the lid `u = 4x(1 − x)` (module doc)."""

    nu: float = 0.01

    name: ClassVar[str] = "lid_driven_cavity"
    box: ClassVar[Box] = Box(("x", "y"), (0.0, 0.0), (1.0, 1.0), time=None)
    fields: ClassVar[tuple[str, ...]] = ("u", "v", "p")
    derivatives: ClassVar[tuple[str, ...]] = ("u_x", "u_y", "u_xx", "u_yy", "v_x", "v_y", "v_xx",
                                              "v_yy", "p_x", "p_y")
    residual_names: ClassVar[tuple[str, ...]] = ("momentum_x", "momentum_y", "continuity")
    coefficient_bounds: ClassVar[dict[str, Bound]] = {
        # the reference's resolution (64/32 Chebyshev intervals) was checked at ν = 0.01 (Re 100);
        # a smaller ν (higher Re) needs a finer reference than the default
        "nu": Bound(ge=0.01, le=10.0, why="the kinematic viscosity 1/Re; the reference's "
                                          "resolution is checked at Re 100 (ν = 0.01) and below"),
    }

    def residuals(self, d: Mapping[str, jax.Array], z: jax.Array) -> dict[str, jax.Array]:
        """The two momentum equations and continuity at `z (N, 2)` -> each `(N,)`."""
        u, v = d["u"], d["v"]
        return {
            "momentum_x": u * d["u_x"] + v * d["u_y"] + d["p_x"] - self.nu * (d["u_xx"] + d["u_yy"]),
            "momentum_y": u * d["v_x"] + v * d["v_y"] + d["p_y"] - self.nu * (d["v_xx"] + d["v_yy"]),
            "continuity": d["u_x"] + d["v_y"],
        }

    @staticmethod
    def lid(z: jax.Array) -> jax.Array:
        """The lid's `u(x, 1) = 4x(1 − x)` at points `z (N, 2)` of the face -> `(N,)`."""
        return 4.0 * z[:, 0] * (1.0 - z[:, 0])

    def conditions(self) -> tuple[Condition, ...]:
        return (Dirichlet("y", side="upper", value=self.lid, field="u"),
                Dirichlet("y", side="upper", field="v"),
                Dirichlet("y", side="lower", field="u"), Dirichlet("y", side="lower", field="v"),
                Dirichlet("x", field="u"), Dirichlet("x", field="v"),
                Observation(field="p", term="pin", count=1))

    def observations(self, c: Observation) -> tuple[np.ndarray, np.ndarray]:
        """The pressure pin: the point `(0, 0)` `(1, 2)` and the value 0 `(1,)` (float64)."""
        return np.zeros((1, 2)), np.zeros(1)

    def reference(self, progress: bool = True):
        """u, v, p at the cell centres of the `GRID × GRID` grid (x-major, the tensor grid's C
        order), `est_rel_error` over (u, v, p) stacked against the solve at half the resolution;
        `meta`: the per-field estimates, the resolutions, Newton's steps."""
        from pinn.reference import Reference

        c = cell_centres()
        if progress:
            print(f"cavity reference: Chebyshev {INTERVALS // 2} and {INTERVALS} intervals, "
                  f"nu = {self.nu}", flush=True)
        values, est = solve_certified(INTERVALS, self.nu, c)
        mesh = np.meshgrid(c, c, indexing="ij")
        points = np.stack([m.reshape(-1) for m in mesh], axis=-1)
        meta = {**est, "chebyshev_intervals": INTERVALS, "coarse_intervals": INTERVALS // 2,
                "grid": GRID}
        return Reference.at_points(points, self.input_names, values["u"].reshape(-1),
                                   est["est_rel_error"], meta=meta,
                                   fields={"v": values["v"].reshape(-1),
                                           "p": values["p"].reshape(-1)})
