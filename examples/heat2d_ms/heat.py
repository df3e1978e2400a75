"""Heat 2D multi-scale (PINNacle's "Heat 2d-MS", Hao et al. 2023, "PINNacle: a comprehensive
benchmark of physics-informed neural networks for solving PDEs"): `u_t = a_x u_xx + a_y u_yy` with
`a_x = 1/(500π)²`, `a_y = 1/π²` on `(t, x, y) ∈ [0, 5] × [0, 1]²`, `u = 0` on the four sides,
exact solution `u = sin(20πx) sin(πy) exp(-λt)`.

The decay rate from the equation: `λ = a_x (20π)² + a_y π² = 400/250000 + 1 = 1.0016` — PINNacle's
1.0016 is exact for these coefficients, and `exact` computes it from them (`decay_rate`). The
multi-scale difficulty: ten periods in x against half a period in y, and diffusion 25 000×
weaker along x. The reference is the exact solution on a 21 t × 256 x × 256 y grid (t every
0.25; 1.4 M points, the default 201 × 256 × 256 would be 13 M). The report's snapshots show
t <= 1 (params' `report.snapshot_times` are limited to [0, 1]).
Run: `pinn run --params examples/heat2d_ms/params.yaml --workdir runs/heat2d_ms`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Mapping

import jax
import jax.numpy as jnp

from pinn.problems import Box, Condition, Dirichlet, Initial, Problem

#: the wavenumbers of the exact solution, in x and y
KX, KY = 20 * math.pi, math.pi


@dataclass(frozen=True)
class Heat2DMS(Problem):
    """`u_t - a_x u_xx - a_y u_yy = 0`, zero Dirichlet sides, `u(0) = sin(20πx) sin(πy)`."""

    name: ClassVar[str] = "heat_2d_ms"
    box: ClassVar[Box] = Box(("t", "x", "y"), (0.0, 0.0, 0.0), (5.0, 1.0, 1.0))
    derivatives: ClassVar[tuple[str, ...]] = ("u_t", "u_xx", "u_yy")
    #: diffusivities along x and y (PINNacle's values)
    a_x: ClassVar[float] = 1.0 / (500 * math.pi) ** 2
    a_y: ClassVar[float] = 1.0 / math.pi**2

    @property
    def decay_rate(self) -> float:
        """`λ = a_x kx² + a_y ky²` (`= 1.0016` exactly up to rounding at PINNacle's values)."""
        return self.a_x * KX**2 + self.a_y * KY**2

    def residuals(self, d: Mapping[str, jax.Array], z: jax.Array) -> dict[str, jax.Array]:
        return {"pde": d["u_t"] - self.a_x * d["u_xx"] - self.a_y * d["u_yy"]}

    def conditions(self) -> tuple[Condition, ...]:
        return (Initial(self.exact), Dirichlet("x"), Dirichlet("y"))

    def exact(self, z: jax.Array) -> jax.Array:
        """`sin(20πx) sin(πy) e^{-λt}` at `z = (t, x, y)` `(N, 3)` -> `(N,)`."""
        t, x, y = z[:, 0], z[:, 1], z[:, 2]
        return jnp.sin(KX * x) * jnp.sin(KY * y) * jnp.exp(-self.decay_rate * t)

    def reference(self, progress: bool = True):
        from pinn.reference import from_exact

        return from_exact(self, n_t=21, n_x=256)
