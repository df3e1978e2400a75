"""Certified reference solutions, computed in numpy float64 (see docs/architecture.md).

- `Reference` (`t`, `x`, `y | None`, `u[t, x(, y)]`, `est_rel_error`, `meta`; atomic `save`,
  validating `Reference.load`) and `rel_l2(a, b) = ||a - b|| / ||b||`;
- `allen_cahn_1d(diffusion=1e-4, reaction=5.0, t=None, x=None, modes, dt, progress=True)` and
  `allen_cahn_2d(epsilon=0.01, t=None, n_out=128, modes, dt, progress=True)`: Fourier
  pseudo-spectral + ETDRK4 (Kassam & Trefethen 2005), `pinn.reference.spectral`;
- `periodic_1d(linear={order: coefficient}, initial_condition, ...)`: the same ETDRK4 for any
  periodic 1-D equation `u_t = sum_n c_n d^n u / dx^n - g (u^2/2)_x` (complex contour for
  dispersive symbols: KdV, Kuramoto–Sivashinsky), and `kdv_1d(...)` built on it;
- `burgers_1d(viscosity=0.01/π, t=None, x=None, nodes, progress=True)` (alias
  `burgers_cole_hopf`): exact Cole–Hopf solution by Gauss–Hermite quadrature,
  `pinn.reference.cole_hopf`.

- `from_exact(problem)`: a problem's exact solution (`Problem.exact`), every field, on a grid
  of its box, or at 2^15 fixed Sobol' points where a grid is too big (`pinn.reference.exact`).

Every solver certifies itself: it solves again at doubled resolution (2× modes and dt/2, or 2×
quadrature nodes), returns the finer solution and stores the relative L2 difference between the
two over the whole output grid as `est_rel_error`.
"""

from pinn.reference.cole_hopf import burgers_1d, burgers_cole_hopf
from pinn.reference.exact import from_exact
from pinn.reference.solution import Reference, rel_l2
from pinn.reference.spectral import allen_cahn_1d, allen_cahn_2d, kdv_1d, periodic_1d

__all__ = [
    "Reference",
    "rel_l2",
    "allen_cahn_1d",
    "allen_cahn_2d",
    "periodic_1d",
    "kdv_1d",
    "burgers_1d",
    "burgers_cole_hopf",
    "from_exact",
]
