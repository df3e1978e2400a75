"""Time-marching windows (`windows.count` = K > 1): the time axis cut into K equal slabs.

Window k trains on the slab `[t_k, t_{k+1}]`, `t_k = t_0 + k (t_K − t_0) / K` (the problem's time
interval split evenly), with its initial condition at `t = t_k` taken from window k−1's trained
network (window 0: the problem's own `Initial` conditions). This is the time-marching of Wight &
Zhao (2020, "Solving Allen–Cahn and Cahn–Hilliard equations using the adaptive physics informed
neural networks", §2.3) and of jaxpi (Wang et al. 2023, "An expert's guide to training PINNs",
§5: "time-marching"). A window's problem is the problem itself with its box cut to the slab
(`slab_problem`): samplers, the network's input embedding (time mapped from the slab onto
[−1, 1]) and causal weighting (`balancing.causal`, over the problem's time interval) all act
within the window. Evaluation stitches: each point is evaluated with the network of the window
holding its t (`window_index`; a boundary time belongs to the later window, the final time to the
last).

With `windows.count: 1` (the default) nothing here changes anything: `slab_problem` is not used
and the stages compute what they always did.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from pinn.config import Params
from pinn.problems.base import Box, Initial


def window_names(cfg: Params) -> list[str]:
    """`["window0", ..., "window{K-1}"]` for `windows.count` = K."""
    return [f"window{k}" for k in range(cfg.windows.count)]


def time_axis(problem) -> int:
    """The problem's time column; raises `ValueError` for a steady problem (the gate refuses
    `windows.count` > 1 for one)."""
    t = problem.box.time_axis
    if t is None:
        raise ValueError(f"{type(problem).__name__}: a steady problem has no time axis to cut "
                         "into windows (windows.count must be 1)")
    return t


def bounds(cfg: Params, problem) -> np.ndarray:
    """The K+1 window boundaries `t_0 < t_1 < ... < t_K` over the problem's time interval
    (float64, `(K + 1,)`): equal slabs, `t_k = t_0 + k (t_K − t_0) / K`."""
    t = time_axis(problem)
    return np.linspace(problem.lower[t], problem.upper[t], cfg.windows.count + 1)


def window_index(t: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """The window of each time `t (N,)` -> int `(N,)`: k with `t_k <= t < t_{k+1}`; an inner
    boundary `t_k` belongs to window k (the later one), the final time to the last window."""
    inner = np.asarray(edges, np.float64)[1:-1]
    return np.searchsorted(inner, np.asarray(t, np.float64), side="right")


def slab_problem(problem, t0: float, t1: float, initial: Callable | None = None):
    """`problem` on the time slab `[t0, t1]`: the same PDE and coefficients, its box's time
    interval replaced. With `initial` (a field `u: (N, d) -> (N,)` or `(N, k)`, the previous
    window's network), each `Initial` condition's value becomes that field's value (order 0) or
    time derivative of the condition's order at `t = t0`, for the condition's field; without it
    the problem's own `Initial` conditions are kept (window 0).

    The result is an instance of a subclass made here (one per call: its `==` and hash separate
    it from the problem and from other slabs)."""
    from pinn.derivatives import nested_jvp

    cls = type(problem)
    box = problem.box
    t = time_axis(problem)
    lower = tuple(t0 if i == t else v for i, v in enumerate(box.lower))
    upper = tuple(t1 if i == t else v for i, v in enumerate(box.upper))
    slab = Box(box.names, lower, upper, box.periodic, box.time)
    base_conditions = cls.conditions
    fields = problem.fields

    def conditions(self):
        found = base_conditions(self)
        if initial is None:
            return found
        out = []
        for c in found:
            if isinstance(c, Initial):
                k = fields.index(c.field or fields[0])

                def value(z, order=c.order, k=k):
                    got = initial(z) if order == 0 else nested_jvp(initial, z, (t,) * order)
                    return got if got.ndim == 1 else got[:, k]

                c = dataclasses.replace(c, value=value)
            out.append(c)
        return tuple(out)

    sub = type(f"{cls.__name__}Slab", (cls,), {
        "box": slab, "conditions": conditions, "__module__": cls.__module__,
        "__doc__": f"{cls.__name__} on t in [{t0:g}, {t1:g}] (a time-marching window).",
    })
    return sub(**problem.coefficients)


def window_problem(cfg: Params, problem, k: int, initial: Callable | None = None):
    """Window k's problem (`slab_problem` on `[t_k, t_{k+1}]`); `problem` itself when windows are
    off (`windows.count` = 1)."""
    if cfg.windows.count == 1:
        return problem
    edges = bounds(cfg, problem)
    return slab_problem(problem, float(edges[k]), float(edges[k + 1]), initial)


def to_slab(points: np.ndarray, problem, t0: float, t1: float) -> np.ndarray:
    """Points `(N, d)` of the problem's whole box moved into the slab `[t0, t1]`: the time column
    mapped affinely from the problem's time interval onto the slab, the others kept (the fixed
    collocation sets, drawn over the whole box, restricted to a window without redrawing)."""
    t = problem.box.time_axis
    out = np.array(points, dtype=np.float64, copy=True)
    lo, hi = problem.lower[t], problem.upper[t]
    out[:, t] = t0 + (out[:, t] - lo) * ((t1 - t0) / (hi - lo))
    return out


def collocation_in_window(cfg: Params, problem, sets: dict[str, np.ndarray], k: int
                          ) -> dict[str, np.ndarray]:
    """The collocation sets (`interior`, `ic`, `bc`) for window k: interior and boundary points
    moved into its slab (`to_slab`), the initial ones (spatial only) kept; unchanged when windows
    are off."""
    if cfg.windows.count == 1:
        return sets
    edges = bounds(cfg, problem)
    t0, t1 = float(edges[k]), float(edges[k + 1])
    return {"interior": to_slab(sets["interior"], problem, t0, t1), "ic": sets["ic"],
            "bc": to_slab(sets["bc"], problem, t0, t1)}


def reference_times(reference, time: str) -> np.ndarray:
    """The times along the first axis of the reference's `u`: a grid's `t` axis `(T,)`, or the time
    column of its scattered points `(N,)`."""
    if reference.is_grid:
        return reference.t
    return reference.scattered[:, reference.columns.index(time)]


def reference_mask(reference, time: str, edges: Sequence[float], k: int) -> np.ndarray:
    """Which entries along the first axis of the reference's `u` (`reference_times`) lie in
    window k (`window_index`), `(T,)` or `(N,)` bool."""
    return window_index(reference_times(reference, time), edges) == k


def stitch(predictions: Sequence[np.ndarray], reference, time: str, edges: Sequence[float]
           ) -> np.ndarray:
    """One prediction on the reference's grid/points from one per window (each shaped like the
    reference's `u`, with a last axis of fields for several): at each time the prediction of the
    window holding it (`window_index`)."""
    which = window_index(reference_times(reference, time), edges)
    out = np.array(predictions[0], dtype=np.float64, copy=True)
    for k in range(1, len(predictions)):
        out[which == k] = predictions[k][which == k]
    return out


def reference_in_window(cfg: Params, problem, reference, k: int):
    """The reference restricted to window k's times (for logging a window's rel L2 while it
    trains); unchanged when windows are off."""
    if cfg.windows.count == 1:
        return reference
    mask = reference_mask(reference, problem.box.time, bounds(cfg, problem), k)
    fields = {name: v[mask] for name, v in reference.fields.items()}
    if reference.is_grid:
        return dataclasses.replace(reference, t=reference.t[mask], u=reference.u[mask],
                                   fields=fields)
    return dataclasses.replace(reference, scattered=reference.scattered[mask],
                               u=reference.u[mask], fields=fields)
