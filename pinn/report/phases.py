"""The phases of a run on common axes: the cascade levels (Adam), then the refinement, then — with
time-marching windows (`windows.count` > 1, `pinn.windows`) — each later window's Adam phase and
refinement.

Each history counts its own steps and wall seconds from the start of its own stage; here they are
placed end to end: `x` is the cumulative count of Adam steps and refinement iterations actually
taken by the phases before (each level's last `level_step`, each refinement's last `iteration`),
`wall` the cumulative wall seconds (each phase's `wall_s` offset by the previous phases' last
`wall_s`). Without windows the refinement is the last phase, so every Adam phase's `x` is its
cumulative Adam step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pinn.report.inputs import _last_finite, _numeric


@dataclass
class Phase:
    """One phase of the run, with its own history rows placed on the run's common axes.

    `x`: cumulative Adam steps and refinement iterations of the phases before, plus this phase's
    own step (levels, windows) or iteration (refinements); `wall`: wall seconds since the first
    level started (each history's `wall_s` counts from the start of its own stage, so it is offset
    by the previous phases' last value).
    """

    name: str
    kind: str  # "adam" | "refine"
    df: Any  # the history (pandas.DataFrame)
    x: np.ndarray
    wall: np.ndarray
    steps: int  # steps taken (levels) / iterations done (refinement)
    start_x: float
    start_wall: float
    window: int = 0  # the time-marching window it trains (0: the cascade and its refinement)
    label: str = ""  # how figures and tables name it (default: `name`; "refinement")

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.name if self.kind == "adam" else "refinement"

    def column(self, name: str) -> np.ndarray:
        return _numeric(self.df, name)


class _Axes:
    """The running offsets of `phases`: steps + iterations and wall seconds so far."""

    def __init__(self) -> None:
        self.x, self.wall = 0.0, 0.0

    def place(self, name: str, kind: str, df, local: np.ndarray, window: int, label: str = ""
              ) -> Phase:
        steps = int(np.nanmax(local)) if np.isfinite(local).any() else 0
        wall_s = _numeric(df, "wall_s")
        phase = Phase(name, kind, df, self.x + local, self.wall + wall_s, steps, self.x,
                      self.wall, window, label)
        self.x += steps
        self.wall += float(np.nanmax(wall_s)) if np.isfinite(wall_s).any() else 0.0
        return phase


def phases(histories: dict, refine, windows: dict[str, tuple[Any, Any]] | None = None
           ) -> list[Phase]:
    """The levels (in order), the refinement (when it has rows), then each later time-marching
    window's Adam phase and refinement (`windows`: window -> (history, refinement history), either
    None when missing; phases without rows are left out), on common step/wall axes."""
    out: list[Phase] = []
    axes = _Axes()
    windowed = bool(windows)
    previous_global = 0.0
    for level, df in histories.items():
        if not len(df):
            continue
        if "level_step" in df:
            local = _numeric(df, "level_step")
        else:  # older histories: the global step, minus where the previous level ended
            local = _numeric(df, "step") - previous_global
        previous_global = _last_finite(_numeric(df, "step")) or previous_global
        out.append(axes.place(level, "adam", df, local, 0))
    if refine is not None and len(refine):
        out.append(axes.place("refine", "refine", refine, _numeric(refine, "iteration"), 0,
                              "refinement (window0)" if windowed else ""))
    for k, (window, (adam, refined)) in enumerate((windows or {}).items(), start=1):
        if adam is not None and len(adam):
            local = _numeric(adam, "level_step" if "level_step" in adam else "step")
            out.append(axes.place(window, "adam", adam, local, k))
        if refined is not None and len(refined):
            name = f"{window} refinement"
            out.append(axes.place(name, "refine", refined, _numeric(refined, "iteration"), k,
                                  name))
    return out


def adam_steps(run: Sequence[Phase]) -> int:
    """Adam steps actually taken over all levels (and later windows)."""
    return sum(p.steps for p in run if p.kind == "adam")


def refine_start(run: Sequence[Phase]) -> int:
    """Where the (window 0) refinement starts on the step axis: the cascade's Adam steps."""
    return sum(p.steps for p in run if p.kind == "adam" and p.window == 0)
