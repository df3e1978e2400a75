"""Inverse heat conduction (PINNacle's HInv, Hao et al. 2023, `src/pde/inverse.py: HeatInv`):
recover the diffusivity `a(x, y)` inside the square from noisy observations of the temperature.

    u_t - div(a grad u) - f = 0        on (t, x, y) in [0, 1] x [-1, 1]^2,

with the exact solution `u = exp(-t) sin(πx) sin(πy)`, `a = 2 + sin(πx) sin(πy)` and `f` derived
from them: with `s = sin(πx) sin(πy)`, `div(a grad u) = exp(-t) (grad a · grad s + a Δs)` and
`Δs = -2π² s`, `grad a = grad s`, so

    f = u_t - div(a grad u) = exp(-t) [(4π² - 1) s + π² (2 s² - cos²(πx) sin²(πy) - sin²(πx) cos²(πy))]

(the same as PINNacle's). The network has two outputs, `u` and `a` (a system). What it is told:
2500 observations of `u` at points uniform in the box (seed 0) with Gaussian noise of standard
deviation `noise_std` = 0.1 (the `data` loss term), and `a` on the spatial boundary (`a = 2`,
Dirichlet on the x and y faces, term `bc`). As in PINNacle, `u` gets no boundary or initial
condition: everything it knows about `u` comes from the observations and the PDE. The reference
is the exact `(u, a)` on a 51 × 129 × 129 grid of `(t, x, y)`; evaluate reports `rel_l2_u` and
`rel_l2_a` (and `rel_l2` over both stacked). `a` is a function of (x, y) only, but the network
sees t too: its error is measured at every time of the grid.
Run: `pinn run --params examples/inverse_heat/params.yaml --workdir runs/inverse_heat`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import jax
import jax.numpy as jnp

from pinn.problems import Bound, Box, Condition, Dirichlet, Observation, Problem


@dataclass(frozen=True)
class InverseHeat(Problem):
    """`u_t - div(a grad u) = f` with `a` unknown inside (module doc); `noise_std` is the standard
    deviation of the Gaussian noise on the 2500 observations of `u`."""

    noise_std: float = 0.1

    name: ClassVar[str] = "inverse_heat_2d"
    box: ClassVar[Box] = Box(("t", "x", "y"), (0.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    fields: ClassVar[tuple[str, ...]] = ("u", "a")
    derivatives: ClassVar[tuple[str, ...]] = ("u_t", "u_x", "u_y", "u_xx", "u_yy", "a_x", "a_y")
    coefficient_bounds: ClassVar[dict[str, Bound]] = {
        "noise_std": Bound(ge=0.0, why="the standard deviation of the observations' noise"),
    }
    #: the observations: how many, and the seed of their points and noise
    num_observations: ClassVar[int] = 2500
    observation_seed: ClassVar[int] = 0

    @staticmethod
    def source(z: jax.Array) -> jax.Array:
        """`f (N,)` at `z (N, 3)` (columns t, x, y): the module doc's formula."""
        t, x, y = z[:, 0], z[:, 1], z[:, 2]
        sx, sy, cx, cy = jnp.sin(jnp.pi * x), jnp.sin(jnp.pi * y), jnp.cos(jnp.pi * x), jnp.cos(jnp.pi * y)
        s = sx * sy
        return jnp.exp(-t) * ((4 * jnp.pi**2 - 1) * s
                              + jnp.pi**2 * (2 * s**2 - cx**2 * sy**2 - sx**2 * cy**2))

    def exact(self, z: jax.Array) -> jax.Array:
        """`(u, a) (N, 2)` at `z (N, 3)`: `u = exp(-t) sin(πx) sin(πy)`, `a = 2 + sin(πx) sin(πy)`."""
        s = jnp.sin(jnp.pi * z[:, 1]) * jnp.sin(jnp.pi * z[:, 2])
        return jnp.stack([jnp.exp(-z[:, 0]) * s, 2.0 + s], axis=1)

    def residuals(self, d: Mapping[str, jax.Array], z: jax.Array) -> dict[str, jax.Array]:
        """`u_t - (a (u_xx + u_yy) + a_x u_x + a_y u_y) - f`: `div(a grad u)` expanded."""
        div = d["a"] * (d["u_xx"] + d["u_yy"]) + d["a_x"] * d["u_x"] + d["a_y"] * d["u_y"]
        return {"pde": d["u_t"] - div - self.source(z)}

    def conditions(self) -> tuple[Condition, ...]:
        a_exact = lambda z: self.exact(z)[:, 1]
        return (Dirichlet("x", value=a_exact, field="a"), Dirichlet("y", value=a_exact, field="a"),
                Observation(field="u", count=self.num_observations, noise_std=self.noise_std,
                            seed=self.observation_seed))

    def reference(self, progress: bool = True):
        from pinn.reference import from_exact

        return from_exact(self, n_t=51, n_x=129)
