"""The loss: a dict of named terms (`pde` or the problem's residual names, `ic`, `bc`, or the
terms its conditions name), each a mean of squares, weighted by a balancer that works over them
by name (`pinn.balancing.make_balancer(cfg, term_names)`).

- a PDE residual term is `Σ wᵢ rᵢ² / Σ wᵢ` over the sampler's batch (weights `w` from the
  sampler, a 0/1 mask included), or causally weighted in time (Wang, Sankaran & Perdikaris
  2022; `pinn.balancing.causal_residual_loss`) when `balancing.causal.enabled`;
- a condition term is the mean square of its conditions' mismatches, concatenated
  (`Problem.condition_terms`): initial conditions on the spatial points `ic_x (N, d-1)`,
  boundary conditions on interior points `bc_z (N, d)` moved onto the faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from pinn import balancing
from pinn.config import Params


@dataclass(frozen=True)
class LossSpec:
    """Static description of the loss: the terms in order, whether periodic axes are exact (the
    network's embedding), and the causal weighting config of the PDE terms."""

    term_names: tuple[str, ...]
    exact_periodic: bool
    causal: Any  # pinn.config.CausalConfig
    exact_initial: bool = False  # the network imposes the initial values (model.hard_initial_condition)


def loss_spec(cfg: Params, problem) -> LossSpec:
    """The loss terms of `problem` under `cfg`: its residual names, then its conditions' terms
    (those enforced by construction left out)."""
    exact_periodic = cfg.model.periodic_embedding
    exact_initial = cfg.model.hard_initial_condition
    return LossSpec(problem.term_names(exact_periodic, exact_initial), exact_periodic,
                    cfg.balancing.causal, exact_initial)


def term_residuals(problem, spec: LossSpec, field: Callable, points: jax.Array,
                   ic_x: jax.Array, bc_z: jax.Array) -> dict[str, jax.Array]:
    """`{term: per-point residual (M,)}` for every term of `spec` (unweighted, unsquared)."""
    out = dict(problem.pde_residuals(field, points))
    out.update(problem.condition_terms(field, ic_x, bc_z, exact_periodic=spec.exact_periodic,
                                       exact_initial=spec.exact_initial))
    return {name: out[name] for name in spec.term_names}


def loss_dict(problem, spec: LossSpec, field: Callable, points: jax.Array, weights: jax.Array,
              ic_x: jax.Array, bc_z: jax.Array) -> tuple[dict[str, jax.Array], dict]:
    """`({term: scalar loss}, diagnostics)` in `spec.term_names` order (see the module doc)."""
    residuals = term_residuals(problem, spec, field, points, ic_x, bc_z)
    pde_names = set(problem.residual_names)
    losses: dict[str, jax.Array] = {}
    aux: dict[str, jax.Array] = {}
    for name, r in residuals.items():
        r2 = jnp.square(r)
        if name not in pde_names:
            losses[name] = jnp.mean(r2)
        elif spec.causal.enabled:
            t = problem.box.time_axis
            losses[name], chunk_w = balancing.causal_residual_loss(
                r2, points[:, t], problem.lower[t], problem.upper[t], spec.causal.num_chunks,
                spec.causal.tolerance, weights)
            key = "causal_min_weight" if len(pde_names) == 1 else f"causal_min_weight_{name}"
            aux[key] = jnp.min(chunk_w)
        else:
            losses[name] = jnp.sum(weights * r2) / jnp.maximum(jnp.sum(weights), 1.0)
    return losses, aux


def loss_terms(
    problem,
    spec: LossSpec,
    u: Callable,
    params,
    points: jax.Array,
    weights: jax.Array,
    ic_x: jax.Array,
    bc_z: jax.Array,
) -> tuple[jax.Array, dict]:
    """The loss terms stacked `(K,)` in `spec.term_names` order (what the balancers weight), and
    diagnostics; `u(params, z)` is the network."""
    losses, aux = loss_dict(problem, spec, lambda z: u(params, z), points, weights, ic_x, bc_z)
    return jnp.stack([losses[n] for n in spec.term_names]), aux


__all__ = ["LossSpec", "loss_spec", "term_residuals", "loss_dict", "loss_terms"]
