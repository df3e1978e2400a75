"""Convection with a large speed (a known PINN failure mode): `u_t + β u_x = 0` on
`(t, x) ∈ [0, 1] × [0, 2π)`, periodic in x, `u(0, x) = sin x`, exact solution `u = sin(x - βt)`
(Krishnapriyan, Gholami, Zhe, Kirby & Mahoney 2021, "Characterizing possible failure modes in
physics-informed neural networks", NeurIPS, §3.1 and Table 1: β = 30 and 40). The reference is the
exact solution on the 201 t × 256 x grid (`exact`, `pinn.reference.exact`).
Run: `pinn run --params examples/convection/params.yaml --workdir runs/convection` (β = 30), or
`pinn run --params examples/convection/params_beta40.yaml --workdir runs/convection_beta40`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Mapping

import jax
import jax.numpy as jnp

from pinn.problems import Bound, Box, Condition, Initial, Periodic, Problem


@dataclass(frozen=True)
class Convection(Problem):
    """`u_t + β u_x = 0`, `u(0, x) = sin x`, periodic in x; `beta` is the speed `β`."""

    beta: float = 30.0

    name: ClassVar[str] = "convection_1d"
    box: ClassVar[Box] = Box(("t", "x"), (0.0, 0.0), (1.0, 2 * math.pi), (False, True))
    derivatives: ClassVar[tuple[str, ...]] = ("u_t", "u_x")
    coefficient_bounds: ClassVar[dict[str, Bound]] = {
        # any finite speed has the exact solution; the bound only keeps the benchmark's range
        "beta": Bound(ge=0.0, le=200.0, why="the speed β; the 256-point reference grid resolves "
                                            "sin(x - βt) for any β, the bound keeps the "
                                            "benchmark's range (Krishnapriyan et al.: β <= 40)"),
    }

    def residuals(self, d: Mapping[str, jax.Array], z: jax.Array) -> dict[str, jax.Array]:
        return {"pde": d["u_t"] + self.beta * d["u_x"]}

    def conditions(self) -> tuple[Condition, ...]:
        return (Initial(self.exact), Periodic("x"))

    def exact(self, z: jax.Array) -> jax.Array:
        """`sin(x - βt)` at `z = (t, x)` `(N, 2)` -> `(N,)` (characteristics `x - βt = const`)."""
        return jnp.sin(z[:, 1] - self.beta * z[:, 0])
