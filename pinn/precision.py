"""Floating-point precision as a scope, never a process-wide switch.

JAX computes in float32 unless `jax_enable_x64` is on. Turning it on globally (as `jax.config.update`
does) leaks into everything that runs later in the same process: samplers then draw float64 points
and a float32 configuration gives different numbers after a float64 run. Every stage therefore
runs its computation inside `scope(precision)`, which sets x64 for that block only (JAX's
thread-local `jax.enable_x64` context) and restores the previous setting on exit, also on error.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal

import jax
import jax.numpy as jnp

Precision = Literal["float32", "float64"]
DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


@contextlib.contextmanager
def scope(precision: Precision) -> Iterator[jnp.dtype]:
    """`with scope("float64") as dtype:` — x64 on inside the block (off for "float32"), and the
    floating dtype to cast to. Arrays that leave the block should be converted to numpy first.

    Raises `ValueError` for a precision other than "float32" / "float64".
    """
    if precision not in DTYPES:
        raise ValueError(f"precision {precision!r}: must be 'float32' or 'float64'")
    with jax.enable_x64(precision == "float64"):
        yield DTYPES[precision]


def refined_precision(refine_method: str, refine_iterations: int, refine_precision: Precision,
                      train_precision: Precision) -> Precision:
    """The precision of the network that leaves the refine stage: the refinement's own, or
    training's when the refinement is skipped (`refine.method: none` or 0 iterations)."""
    skipped = refine_method == "none" or refine_iterations == 0
    return train_precision if skipped else refine_precision
