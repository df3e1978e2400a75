"""A reference from a problem's exact solution (`Problem.exact`): on a grid of its box, or at a
fixed set of scattered points where a grid is too big.

Where the exact solution is evaluated (`from_exact`), by the problem's box:

- time first and one or two spatial columns, `(t, x[, y])`: the tensor grid `t × x (× y)`,
  `n_t` times × `n_x` points per spatial axis, both ends included (the `Reference` grid form;
  the report draws snapshots);
- steady with one or two columns, e.g. `(x, y)`: the nodes of the tensor grid with `n_steady`
  points per axis (1024 for one column, 256 × 256 for two), stored as scattered points in the
  grid's C order (the `Reference` grid form is time-first; the report recognises the tensor grid
  and draws maps over it);
- anything else (more columns, e.g. a 5-D Poisson problem on [0, 1]^5, or time not first):
  `SCATTERED_POINTS` = 2^15 points of a scrambled Sobol' sequence over the box with the fixed
  seed `SCATTERED_SEED` (independent of params' `seed`: the reference depends only on the problem),
  stored as scattered points; a 5-D grid of useful resolution would not fit in memory. `meta`
  records the choice (`sobol_seed`, `num_points`).

Every field of the problem is stored: the first as `u`, the others by name (`Reference.fields`).
`est_rel_error` is 0 (exact up to rounding; evaluated in float64).
"""

from __future__ import annotations

import numpy as np

from pinn.reference.solution import Reference

#: the scattered points of a reference for a box that gets no grid: how many, and their seed
SCATTERED_POINTS = 2**15
SCATTERED_SEED = 0
#: points per axis of a steady problem's grid, by its number of columns
STEADY_GRID = {1: 1024, 2: 256}


def exact_points(problem, n_t: int = 201, n_x: int = 256) -> tuple[str, list[np.ndarray] | None,
                                                                     np.ndarray]:
    """Where `from_exact` evaluates the exact solution: `(kind, axes, points (N, d))`, `kind` one
    of "grid" (time-first `Reference` grid over `axes`), "steady_grid" (tensor grid nodes over
    `axes`, stored scattered) and "scattered" (Sobol' points, `axes` None)."""
    box = problem.box
    d = len(box.names)
    lo, hi = np.asarray(box.lower, float), np.asarray(box.upper, float)
    if box.time_axis == 0 and 2 <= d <= 3:
        kind, sizes = "grid", [n_t] + [n_x] * (d - 1)
    elif box.time is None and d in STEADY_GRID:
        kind, sizes = "steady_grid", [STEADY_GRID[d]] * d
    else:
        from scipy.stats import qmc

        unit = qmc.Sobol(d, scramble=True, seed=SCATTERED_SEED).random_base2(
            int(np.log2(SCATTERED_POINTS)))
        return "scattered", None, lo + (hi - lo) * unit
    axes = [np.linspace(a, b, n) for a, b, n in zip(lo, hi, sizes)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return kind, axes, np.stack([m.reshape(-1) for m in mesh], axis=-1)


def from_exact(problem, n_t: int = 201, n_x: int = 256) -> Reference:
    """`problem.exact` where `exact_points` says (see the module doc), float64, every field,
    `est_rel_error = 0` (exact up to rounding)."""
    import jax
    import jax.numpy as jnp

    kind, axes, points = exact_points(problem, n_t, n_x)
    with jax.enable_x64(True):
        values = np.asarray(jax.jit(problem.exact)(jnp.asarray(points, jnp.float64)), np.float64)
    fields = tuple(problem.fields)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape != (len(points), len(fields)):
        raise ValueError(f"{type(problem).__name__}.exact: returns shape {values.shape} at "
                         f"{len(points)} points, expected ({len(points)},) for one field or "
                         f"({len(points)}, {len(fields)}) for the fields {fields}")
    if kind == "grid":
        shape = tuple(a.size for a in axes)
        others = {f: values[:, k].reshape(shape) for k, f in enumerate(fields) if k}
        return Reference(t=axes[0], x=axes[1], y=axes[2] if len(axes) == 3 else None,
                         u=values[:, 0].reshape(shape), est_rel_error=0.0, meta={"exact": 1},
                         fields=others)
    meta = {"exact": 1, "num_points": len(points)}
    if kind == "scattered":
        meta["sobol_seed"] = SCATTERED_SEED
    others = {f: values[:, k] for k, f in enumerate(fields) if k}
    return Reference.at_points(points, problem.input_names, values[:, 0], 0.0, meta=meta,
                               fields=others)


__all__ = ["from_exact", "exact_points", "SCATTERED_POINTS", "SCATTERED_SEED", "STEADY_GRID"]
