"""Accuracy of a network against a reference solution, on the reference's full grid or at its
scattered points.

relative L2 = ||u_θ − u_ref||₂ / ||u_ref||₂ over every (t, x[, y]) node of the reference grid, or
every point of a scattered reference (divided by the *reference's* norm), max-abs =
max |u_θ − u_ref|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Accuracy:
    rel_l2: float
    max_abs: float
    prediction: np.ndarray  # same shape as the reference's u
    error: np.ndarray  # prediction − reference

    @property
    def finite(self) -> bool:
        return math.isfinite(self.rel_l2) and math.isfinite(self.max_abs)


def grid_points(reference) -> np.ndarray:
    """All nodes of the reference grid as `(N, d)` points, time first, in `u.ravel()` order; or
    the reference's scattered points (`Reference.points`)."""
    return reference.points()


def predict_on_grid(
    u: Callable[[jax.Array], jax.Array],
    reference,
    *,
    dtype=jnp.float32,
    chunk: int = 65536,
) -> np.ndarray:
    """Evaluate the field `u: (N, d) -> (N,)` on the reference grid (or at its scattered points)
    in chunks (bounded memory); shaped like the reference's `u`."""
    points = grid_points(reference)
    f = jax.jit(u)
    out = []
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        pad = chunk - len(block) if len(points) > chunk else 0
        if pad:  # keep one compiled shape
            block = np.concatenate([block, np.repeat(block[-1:], pad, axis=0)])
        vals = np.asarray(f(jnp.asarray(block, dtype=dtype)), dtype=np.float64)
        out.append(vals[: len(vals) - pad] if pad else vals)
    return np.concatenate(out).reshape(reference.u.shape)


def accuracy(
    u: Callable[[jax.Array], jax.Array], reference, *, dtype=jnp.float32, chunk: int = 65536
) -> Accuracy:
    pred = predict_on_grid(u, reference, dtype=dtype, chunk=chunk)
    return accuracy_of_prediction(pred, reference.u)


def accuracy_of_prediction(pred: np.ndarray, ref_u: np.ndarray) -> Accuracy:
    err = pred - ref_u
    denom = float(np.linalg.norm(ref_u.ravel()))
    rel = float(np.linalg.norm(err.ravel()) / denom) if denom > 0 else float("nan")
    max_abs = float(np.max(np.abs(err))) if err.size else float("nan")
    return Accuracy(rel_l2=rel, max_abs=max_abs, prediction=pred, error=err)
