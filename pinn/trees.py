"""Pytree predicates shared by the training step and the quasi-Newton line search."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def all_finite(tree: Any) -> jax.Array:
    """Whether every entry of every leaf of `tree` is finite (no NaN, no ±inf): a 0-d bool array,
    traceable under `jit`. An empty tree is finite."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
