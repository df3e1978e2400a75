"""Viscous Burgers equation (Raissi et al. 2019 benchmark)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from pinn.derivatives import Derivs
from pinn.problems.base import Bound, Problem


@dataclass(frozen=True)
class Burgers1D(Problem):
    """`u_t + u u_x - ν u_xx = 0`, `(t, x) ∈ [0, 1] × [-1, 1]`, `u(0, x) = -sin(πx)`,
    `u(t, ±1) = 0` (Dirichlet). Default `ν = 0.01/π`."""

    viscosity: float = 0.01 / math.pi

    name: ClassVar[str] = "burgers_1d"
    input_names: ClassVar[tuple[str, ...]] = ("t", "x")
    lower: ClassVar[tuple[float, ...]] = (0.0, -1.0)
    upper: ClassVar[tuple[float, ...]] = (1.0, 1.0)
    periodic: ClassVar[tuple[bool, ...]] = (False, False)
    first: ClassVar[tuple[int, ...]] = (0,)
    second: ClassVar[tuple[int, ...]] = (1,)
    coefficient_bounds: ClassVar[dict[str, Bound]] = {
        "viscosity": Bound(gt=0.0, why="the Cole–Hopf reference needs a positive viscosity"),
    }

    def initial_condition(self, x: jax.Array) -> jax.Array:
        return -jnp.sin(jnp.pi * x[:, 0])

    def residual_from_derivs(self, d: Derivs, z: jax.Array) -> jax.Array:
        return d.first[0] + d.u * d.first[1] - self.viscosity * d.second[1]

    def reference(self, progress: bool = True):
        from pinn import reference

        return reference.burgers_1d(viscosity=self.viscosity, progress=progress)
