"""Viscous Burgers equation (Raissi et al. 2019 benchmark)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Mapping

import jax
import jax.numpy as jnp

from pinn.problems.base import Bound, Box, Condition, Dirichlet, Initial, Problem


@dataclass(frozen=True)
class Burgers1D(Problem):
    """`u_t + u u_x - ν u_xx = 0`, `(t, x) ∈ [0, 1] × [-1, 1]`, `u(0, x) = -sin(πx)`,
    `u(t, ±1) = 0` (Dirichlet). Default `ν = 0.01/π`."""

    viscosity: float = 0.01 / math.pi

    name: ClassVar[str] = "burgers_1d"
    box: ClassVar[Box] = Box(("t", "x"), (0.0, -1.0), (1.0, 1.0), (False, False))
    derivatives: ClassVar[tuple[str, ...]] = ("u_t", "u_x", "u_xx")
    coefficient_bounds: ClassVar[dict[str, Bound]] = {
        "viscosity": Bound(gt=0.0, why="the Cole–Hopf reference needs a positive viscosity"),
    }

    def initial_condition(self, x: jax.Array) -> jax.Array:
        """`u(0, x)` for spatial points `x (N, 1)` -> `(N,)`."""
        return -jnp.sin(jnp.pi * x[:, 0])

    def residuals(self, d: Mapping[str, jax.Array], z: jax.Array) -> dict[str, jax.Array]:
        return {"pde": d["u_t"] + d["u"] * d["u_x"] - self.viscosity * d["u_xx"]}

    def conditions(self) -> tuple[Condition, ...]:
        return (Initial(lambda z: self.initial_condition(z[:, 1:])), Dirichlet("x"))

    def reference(self, progress: bool = True):
        from pinn import reference

        return reference.burgers_1d(viscosity=self.viscosity, progress=progress)
