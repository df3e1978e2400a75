"""`pinn.trees.all_finite`: one NaN or inf anywhere in a pytree makes it non-finite, under jit too."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pinn.trees import all_finite


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_bad_entry_anywhere(bad):
    tree = {"a": jnp.ones((3, 2)), "b": [jnp.zeros(4), jnp.arange(3.0)]}
    assert bool(all_finite(tree)) and bool(jax.jit(all_finite)(tree))
    broken = {"a": tree["a"], "b": [tree["b"][0].at[2].set(bad), tree["b"][1]]}
    assert not bool(all_finite(broken)) and not bool(jax.jit(all_finite)(broken))


def test_an_empty_tree_is_finite():
    assert bool(all_finite({})) and all_finite({}).shape == ()
