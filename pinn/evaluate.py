"""Accuracy of a network against a reference solution, on the reference's full grid or at its
scattered points, per field and over all fields.

For one field: relative L2 = ||u_θ − u_ref||₂ / ||u_ref||₂ over every (t, x[, y]) node of the
reference grid, or every point of a scattered reference (divided by the *reference's* norm),
max-abs = max |u_θ − u_ref|.

For a system of fields (a network with k outputs, `fields` the problem's field names): each field
the reference holds (its first as `u`, the others by name in `Reference.fields`) is compared on its
own (`Accuracy.per_field`), and the headline `rel_l2` is over all of them stacked:
sqrt(Σ_f ||e_f||²) / sqrt(Σ_f ||u_ref,f||²) (a field with larger values weighs more, as in one
vector-valued L2 norm); `max_abs` is the largest over all of them. With one field both reduce to
the formulas above. A field the reference does not hold is not evaluated (`Accuracy.missing`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pinn.reference.solution import rel_l2


@dataclass(frozen=True)
class Accuracy:
    rel_l2: float  # over every evaluated field, stacked
    max_abs: float
    prediction: np.ndarray  # the first field, same shape as the reference's u
    error: np.ndarray  # prediction − reference
    #: every evaluated field's own accuracy, in the problem's field order (the first field too)
    per_field: dict[str, "Accuracy"] = field(default_factory=dict)
    #: the problem's fields the reference holds no values of (not evaluated)
    missing: tuple[str, ...] = ()

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
    """Evaluate the field `u: (N, d) -> (N,)` (or `(N, k)`: k fields) on the reference grid (or at
    its scattered points) in chunks (bounded memory); shaped like the reference's `u` (with a last
    axis of k fields)."""
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
    values = np.concatenate(out)
    return values.reshape(reference.u.shape + values.shape[1:])


def reference_fields(reference, fields: Sequence[str]) -> dict[str, np.ndarray]:
    """The reference's values of each of `fields` it holds: the first is `u`, the others by name."""
    out = {}
    for k, name in enumerate(fields):
        if k == 0:
            out[name] = reference.u
        elif name in reference.fields:
            out[name] = reference.fields[name]
    return out


def accuracy(
    u: Callable[[jax.Array], jax.Array], reference, *, dtype=jnp.float32, chunk: int = 65536,
    fields: Sequence[str] = ("u",),
) -> Accuracy:
    """The accuracy of `u` (one output per field of `fields`) against `reference` (module doc)."""
    return accuracy_of_fields(predict_on_grid(u, reference, dtype=dtype, chunk=chunk), reference,
                              fields)


def accuracy_of_fields(pred: np.ndarray, reference, fields: Sequence[str] = ("u",)) -> Accuracy:
    """The accuracy of a prediction `pred` on the reference's grid or points (shaped like its `u`,
    with a last axis of k fields for k > 1 outputs) against `reference` (module doc)."""
    if pred.shape == reference.u.shape:  # one field
        acc = accuracy_of_prediction(pred, reference.u)
        return Accuracy(acc.rel_l2, acc.max_abs, acc.prediction, acc.error,
                        per_field={fields[0]: acc})
    fields = tuple(fields)
    if pred.shape[-1] != len(fields):
        raise ValueError(f"accuracy: the network has {pred.shape[-1]} outputs, fields {fields}")
    refs = reference_fields(reference, fields)
    per_field = {name: accuracy_of_prediction(pred[..., fields.index(name)], values)
                 for name, values in refs.items()}
    errors = np.concatenate([a.error.ravel() for a in per_field.values()])
    rel = rel_l2(np.concatenate([a.prediction.ravel() for a in per_field.values()]),
                 np.concatenate([v.ravel() for v in refs.values()]), zero_reference=math.nan)
    max_abs = float(np.max(np.abs(errors))) if errors.size else float("nan")
    first = per_field[fields[0]]
    return Accuracy(rel_l2=rel, max_abs=max_abs, prediction=first.prediction, error=first.error,
                    per_field=per_field, missing=tuple(f for f in fields if f not in refs))


def accuracy_of_prediction(pred: np.ndarray, ref_u: np.ndarray) -> Accuracy:
    err = pred - ref_u
    rel = rel_l2(pred, ref_u, zero_reference=math.nan)
    max_abs = float(np.max(np.abs(err))) if err.size else float("nan")
    return Accuracy(rel_l2=rel, max_abs=max_abs, prediction=pred, error=err)
