"""A finished pipeline run's error curve: rel L2 against optimisation steps and wall-clock.

The stages write one history per phase: `data/train/<level>/history.csv` (a row per log interval:
global `step`, `wall_s` from the start of that level's stage, `rel_l2`) and
`data/refine/history.csv` (a row per block: `iteration`, `wall_s` from the start of the refinement
stage, `rel_l2`). `curve` joins them into one curve, the levels in order and then the refinement:
each phase's `wall_s` is offset by the previous phase's last `wall_s` (process start-up and
imports between stages are excluded), and a refinement iteration counts as one step after the
Adam steps taken. `value_at` reads rel L2 off such a curve at a budget (used by the benchmark
suite and by `pinn.ablate`), `time_to` the budget at which it first reaches a threshold.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Mapping, Sequence

import pandas as pd

#: how a curve is indexed: Adam steps + refinement iterations, or seconds of training
Axis = Literal["step", "wall_s"]


def curve(levels: Mapping[str, pd.DataFrame], refine: pd.DataFrame | None = None) -> list[dict]:
    """One row `{phase, step, wall_s, rel_l2}` per log interval of every phase: `levels` (level name
    → its history, coarse to fine) and then `refine` (the refinement's history; None or empty when
    there was no refinement)."""
    rows: list[dict] = []
    offset = 0.0
    for level, frame in levels.items():
        rows += [{"phase": level, "step": int(r.step), "wall_s": offset + float(r.wall_s),
                  "rel_l2": float(r.rel_l2)} for r in frame.itertuples()]
        offset = rows[-1]["wall_s"] if rows else offset
    steps = rows[-1]["step"] if rows else 0
    if refine is not None:
        rows += [{"phase": "refine", "step": steps + int(r.iteration),
                  "wall_s": offset + float(r.wall_s), "rel_l2": float(r.rel_l2)}
                 for r in refine.itertuples()]
    return rows


def pipeline_curve(project: Path, levels: Sequence[str]) -> list[dict]:
    """`curve` of a finished pipeline run in `project` (its `data/train/<level>/history.csv` for
    each of `levels`, then `data/refine/history.csv`)."""
    project = Path(project)
    histories = {level: pd.read_csv(project / "data" / "train" / level / "history.csv")
                 for level in levels}
    refine = project / "data" / "refine" / "history.csv"
    return curve(histories, pd.read_csv(refine) if refine.exists() else None)


def value_at(rows: Sequence[Mapping], budget: float, axis: Axis) -> float:
    """rel L2 of `rows` (a `curve`) at `budget` on `axis`: the value logged last at or before the
    budget. A run that ended before the budget gives its last value (a budget is a cap: the run
    used less); a budget before the first logged point gives NaN (nothing was measured yet)."""
    if budget <= 0 or not math.isfinite(budget):
        raise ValueError(f"budget = {budget}: must be a positive finite number")
    within = [r for r in rows if r[axis] <= budget]
    return float(within[-1]["rel_l2"]) if within else float("nan")


def time_to(rows: Sequence[Mapping], threshold: float, axis: Axis = "wall_s") -> float | None:
    """The first `axis` value (seconds or steps) of `rows` (a `curve`) at which rel L2 is at or
    below `threshold`; None when it never gets there."""
    return next((float(r[axis]) for r in rows if r["rel_l2"] <= threshold), None)
