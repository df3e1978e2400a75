"""Inverse Burgers (Raissi, Perdikaris & Karniadakis 2019, JCP 378, section 4.1.1): recover the
viscosity of

    u_t + u u_x = nu u_xx,   (t, x) in [0, 1] x [-1, 1],   u(0, x) = -sin(pi x),   u(t, ±1) = 0,

from 2000 observations of u, with true nu = 0.01/pi. The PDE, initial and boundary conditions are
the built-in `burgers_1d`'s (`pinn.problems.Burgers1D`); this class adds the observations (the
`data` loss term): `num_observations` points uniform in the box (seed `observation_seed`), the
exact Cole–Hopf solution there (`pinn.reference.cole_hopf`, the quadrature of the certified
reference, evaluated at each point) plus Gaussian noise of standard deviation `noise_std` times
the data's RMS (Raissi et al.'s noise model: "1% noise" is noise_std = 0.01).

The viscosity is unknown to the training: params `problem.trainable: {viscosity: 0.05}` makes it
a trainable parameter from that guess (`pinn.problems.trainable`, optimised as log nu); the value
the problem holds (`problem.coefficients.viscosity`, default 0.01/pi) generates the data and the
reference, and is the true value that evaluate reports the error against.
Run: `pinn run --params examples/inverse_burgers/params.yaml --workdir runs/inverse_burgers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pinn.problems import Bound, Condition, Observation
from pinn.problems.burgers import Burgers1D


def cole_hopf_at(viscosity: float, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The Cole–Hopf solution `u (N,)` at scattered points `t, x (N,)`: the quadrature of
    `pinn.reference.cole_hopf.cole_hopf` (Gauss–Hermite, the certified reference's
    `2 · BURGERS_DEFAULT_NODES` nodes), point by point instead of on a grid,
    `u = -Σ_k w_k sin(y_k) e^{-cos(y_k)/(2π nu)} / Σ_k w_k e^{-cos(y_k)/(2π nu)}`,
    `y_k = π (x - sqrt(4 nu t) z_k)`; `u = -sin(πx)` at t = 0."""
    from pinn.reference.cole_hopf import BURGERS_DEFAULT_NODES, gauss_hermite

    nodes, logw = gauss_hermite(2 * BURGERS_DEFAULT_NODES)
    s = np.sqrt(4.0 * viscosity * np.asarray(t, float))[:, None]
    y = np.pi * (np.asarray(x, float)[:, None] - s * nodes[None, :])
    expo = logw[None, :] - np.cos(y) / (2 * np.pi * viscosity)
    weight = np.exp(expo - expo.max(axis=1, keepdims=True))
    return -np.sum(np.sin(y) * weight, axis=1) / np.sum(weight, axis=1)


@dataclass(frozen=True)
class InverseBurgers(Burgers1D):
    """The built-in Burgers problem plus `num_observations` observations of `u` (module doc);
    `noise_std`: the noise's standard deviation relative to the data's RMS."""

    noise_std: float = 0.0

    name: ClassVar[str] = "inverse_burgers_1d"
    coefficient_bounds: ClassVar[dict[str, Bound]] = {
        **Burgers1D.coefficient_bounds,
        "noise_std": Bound(ge=0.0, why="a standard deviation, relative to the data's RMS"),
    }
    num_observations: ClassVar[int] = 2000
    observation_seed: ClassVar[int] = 0

    def conditions(self) -> tuple[Condition, ...]:
        return (*super().conditions(),
                Observation(count=self.num_observations, noise_std=self.noise_std,
                            seed=self.observation_seed))

    def observations(self, c: Observation) -> tuple[np.ndarray, np.ndarray]:
        """`c.count` points `(count, 2)` uniform in the box (columns t, x) and the Cole–Hopf `u`
        there `(count,)` plus N(0, (noise_std · rms(u))^2) noise, float64; one NumPy generator
        seeded with `c.seed` draws the points, then the noise."""
        rng = np.random.default_rng(c.seed)
        lo, hi = np.asarray(self.lower, float), np.asarray(self.upper, float)
        z = lo + (hi - lo) * rng.random((c.count, 2))
        u = cole_hopf_at(self.viscosity, z[:, 0], z[:, 1])
        rms = float(np.sqrt(np.mean(u**2)))
        return z, u + c.noise_std * rms * rng.standard_normal(c.count)
