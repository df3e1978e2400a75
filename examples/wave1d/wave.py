"""Wave 1D (an initial condition on u_t): `u_tt = c² u_xx` with `c = 2` on `(t, x) ∈ [0, 1]²`,
exact solution `u = sin(πx) cos(2πt) + 0.5 sin(4πx) cos(8πt)` (Wang, Wang & Perdikaris 2022,
"When and why PINNs fail to train", §7.3); `u(0, x)` from it, `u_t(0, x) = 0`, `u(t, 0) =
u(t, 1) = 0`. Run: `pinn run --params examples/wave1d/params.yaml --workdir runs/wave1d`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import jax
import jax.numpy as jnp

from pinn.problems import Bound, Box, Condition, Dirichlet, Initial, Problem


@dataclass(frozen=True)
class Wave1D(Problem):
    """`u_tt - c² u_xx = 0`; the reference is the exact solution (`exact`)."""

    c: float = 2.0

    name: ClassVar[str] = "wave_1d"
    box: ClassVar[Box] = Box(("t", "x"), (0.0, 0.0), (1.0, 1.0))
    derivatives: ClassVar[tuple[str, ...]] = ("u_tt", "u_xx")
    coefficient_bounds: ClassVar[dict[str, Bound]] = {
        "c": Bound(gt=0.0, why="the wave speed; the exact solution is written for c = 2"),
    }

    def residuals(self, d: Mapping[str, jax.Array], z: jax.Array) -> dict[str, jax.Array]:
        return {"pde": d["u_tt"] - self.c**2 * d["u_xx"]}

    def conditions(self) -> tuple[Condition, ...]:
        return (Initial(self.exact), Initial(order=1, term="ic_t"), Dirichlet("x"))

    def exact(self, z: jax.Array) -> jax.Array:
        t, x = z[:, 0], z[:, 1]
        w = self.c * jnp.pi  # the modes sin(kπx) cos(k c π t), k = 1 and 4
        return jnp.sin(jnp.pi * x) * jnp.cos(w * t) + 0.5 * jnp.sin(4 * jnp.pi * x) * jnp.cos(4 * w * t)
