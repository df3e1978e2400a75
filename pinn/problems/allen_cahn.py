"""Allen–Cahn equations (1D: Raissi-style benchmark; 2D: periodic square)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import jax
import jax.numpy as jnp

from pinn.problems.base import Bound, Box, Condition, Initial, Periodic, Problem


@dataclass(frozen=True)
class AllenCahn1D(Problem):
    """`u_t - d u_xx + r u³ - r u = 0`, `(t, x) ∈ [0, 1] × [-1, 1]`, periodic in x,
    `u(0, x) = x² cos(πx)`. Defaults `d = 1e-4`, `r = 5`."""

    diffusion: float = 1e-4
    reaction: float = 5.0

    name: ClassVar[str] = "allen_cahn_1d"
    box: ClassVar[Box] = Box(("t", "x"), (0.0, -1.0), (1.0, 1.0), (False, True))
    derivatives: ClassVar[tuple[str, ...]] = ("u_t", "u_xx")
    coefficient_bounds: ClassVar[dict[str, Bound]] = {
        "diffusion": Bound(ge=0.0, why="negative diffusion is ill-posed: the reference blows up"),
        # the cubic term is explicit in ETDRK4: at the reference's time step it blows up near 1000
        "reaction": Bound(le=500.0, why="the reference solver's time step is stable up to 500"),
    }

    def initial_condition(self, x: jax.Array) -> jax.Array:
        """`u(0, x)` for spatial points `x (N, 1)` -> `(N,)`."""
        x = x[:, 0]
        return x**2 * jnp.cos(jnp.pi * x)

    def residuals(self, d: Mapping[str, jax.Array], z: jax.Array) -> dict[str, jax.Array]:
        u = d["u"]
        return {"pde": d["u_t"] - self.diffusion * d["u_xx"] + self.reaction * (u**3 - u)}

    def conditions(self) -> tuple[Condition, ...]:
        return (Initial(lambda z: self.initial_condition(z[:, 1:])), Periodic("x"))

    def reference(self, progress: bool = True):
        from pinn import reference

        return reference.allen_cahn_1d(
            diffusion=self.diffusion, reaction=self.reaction, progress=progress
        )


@dataclass(frozen=True)
class AllenCahn2D(Problem):
    """`u_t = ε² (u_xx + u_yy) + u - u³`, `(t, x, y) ∈ [0, 1] × [0, 1]²`, periodic in x and y,
    `u(0, x, y) = sin²(πx) cos²(πy) - 0.5`. Residual `u_t - ε² Δu - u + u³`; default `ε = 0.01`."""

    epsilon: float = 0.01

    name: ClassVar[str] = "allen_cahn_2d"
    box: ClassVar[Box] = Box(("t", "x", "y"), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                             (False, True, True))
    derivatives: ClassVar[tuple[str, ...]] = ("u_t", "u_xx", "u_yy")
    coefficient_bounds: ClassVar[dict[str, Bound]] = {
        "epsilon": Bound(ge=0.0, why="the interface width; the PDE uses epsilon²"),
    }

    def initial_condition(self, x: jax.Array) -> jax.Array:
        """`u(0, x, y)` for spatial points `x (N, 2)` -> `(N,)`."""
        return jnp.sin(jnp.pi * x[:, 0]) ** 2 * jnp.cos(jnp.pi * x[:, 1]) ** 2 - 0.5

    def residuals(self, d: Mapping[str, jax.Array], z: jax.Array) -> dict[str, jax.Array]:
        u = d["u"]
        lap = d["u_xx"] + d["u_yy"]
        return {"pde": d["u_t"] - self.epsilon**2 * lap - u + u**3}

    def conditions(self) -> tuple[Condition, ...]:
        return (Initial(lambda z: self.initial_condition(z[:, 1:])), Periodic("x"), Periodic("y"))

    def reference(self, progress: bool = True):
        from pinn import reference

        return reference.allen_cahn_2d(epsilon=self.epsilon, progress=progress)
