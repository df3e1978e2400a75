"""Poisson 5D (a steady problem in five dimensions): `-Δu = (π²/4) Σᵢ sin(π xᵢ / 2)` on
`[0, 1]^5`, exact solution `u = Σᵢ sin(π xᵢ / 2)` (PINNacle's high-dimensional Poisson, "PNd"),
Dirichlet values from it on every face. The reference is the exact solution at 2^15 fixed
scrambled Sobol' points of the box (`pinn.reference.exact`: a 5-D grid would not fit), the report
draws the pointwise error at those points. Run:
`pinn run --params examples/poisson5d/params.yaml --workdir runs/poisson5d`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import jax
import jax.numpy as jnp

from pinn.problems import Box, Condition, Dirichlet, Problem

DIM = 5
NAMES = tuple(f"x{i}" for i in range(1, DIM + 1))


@dataclass(frozen=True)
class Poisson5D(Problem):
    """`-Δu - f = 0`, steady (`Box(time=None)`); `u = exact` on the faces (loss term `bc`)."""

    name: ClassVar[str] = "poisson_5d"
    box: ClassVar[Box] = Box(NAMES, (0.0,) * DIM, (1.0,) * DIM, time=None)
    derivatives: ClassVar[tuple[str, ...]] = tuple(f"u_{n}{n}" for n in NAMES)

    def residuals(self, d: Mapping[str, jax.Array], z: jax.Array) -> dict[str, jax.Array]:
        laplacian = sum(d[f"u_{n}{n}"] for n in NAMES)
        return {"pde": -laplacian - jnp.pi**2 / 4 * jnp.sum(jnp.sin(jnp.pi * z / 2), axis=1)}

    def conditions(self) -> tuple[Condition, ...]:
        return tuple(Dirichlet(n, value=self.exact) for n in NAMES)

    def exact(self, z: jax.Array) -> jax.Array:
        return jnp.sum(jnp.sin(jnp.pi * z / 2), axis=1)
