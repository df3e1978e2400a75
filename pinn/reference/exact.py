"""A reference from a problem's exact solution (`Problem.exact`), on a tensor grid of its box."""

from __future__ import annotations

import numpy as np

from pinn.reference.solution import Reference


def from_exact(problem, n_t: int = 201, n_x: int = 256) -> Reference:
    """`problem.exact` on `n_t` times × `n_x` points per spatial axis (float64, both ends
    included), `est_rel_error = 0` (exact up to rounding).

    The `Reference` grid is `t × x (× y)`: a time-dependent problem with time as its first column
    and one or two spatial columns. Raises `NotImplementedError` for other boxes (a steady or
    higher-dimensional problem needs a scattered-point reference, not built yet).
    """
    import jax
    import jax.numpy as jnp

    box = problem.box
    if box.time_axis != 0 or not 2 <= len(box.names) <= 3:
        raise NotImplementedError(
            f"{type(problem).__name__}: an exact reference on a grid needs inputs (t, x[, y]) "
            f"with time first; this box has {box.names}")
    axes = [np.linspace(lo, hi, n_t if i == 0 else n_x)
            for i, (lo, hi) in enumerate(zip(box.lower, box.upper))]
    mesh = np.meshgrid(*axes, indexing="ij")
    points = np.stack([m.reshape(-1) for m in mesh], axis=-1)
    with jax.enable_x64(True):
        u = np.asarray(jax.jit(problem.exact)(jnp.asarray(points, jnp.float64)), np.float64)
    if u.ndim == 2:  # a system: the reference holds the first field
        u = u[:, 0]
    y = axes[2] if len(axes) == 3 else None
    return Reference(t=axes[0], x=axes[1], y=y, u=u.reshape(mesh[0].shape), est_rel_error=0.0,
                     meta={"exact": 1})


__all__ = ["from_exact"]
