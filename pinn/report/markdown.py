"""The report's markdown: number formatting, tables, and the text sections — the summary (accuracy,
the reference, totals, the run's settings that change what is trained), the recovered coefficients
and the phase table (one row per cascade level, refinement and later time-marching window)."""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np

from pinn.report.inputs import _COEF, ReportInputs, RunData, _float, _not_found
from pinn.report.phases import Phase, adam_steps

def fmt(value: Any) -> str:
    """A number as shown in the report: floats `1.234e-03`, ints as ints, missing as `n/a`."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return f"{v:.3e}" if math.isfinite(v) else "n/a"
    return str(value)


def fmt_seconds(seconds: float | None) -> str:
    """Seconds as shown in the report (minutes added from 2 min on)."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds:.1f} s ({seconds / 60:.1f} min)"


def _fmt_const(v: float) -> str:
    return f"{v:g}"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def coefficient_table(metrics: dict) -> list[str]:
    """Markdown lines of the recovered trainable coefficients (inverse problems; evaluate's
    `coef_<name>`, `coef_<name>_true`, `coef_<name>_rel_error`): one row per coefficient with the
    recovered value, the true one and the relative error (n/a when the true value is unknown);
    `[]` when there are none."""
    names = [k[len(_COEF):] for k in metrics
             if k.startswith(_COEF) and not k.endswith(("_true", "_rel_error"))]
    if not names:
        return []
    def cell(key: str, missing: str) -> str:
        return fmt(_float(metrics[key])) if key in metrics else missing

    rows = [[n, cell(f"{_COEF}{n}", "n/a"), cell(f"{_COEF}{n}_true", "unknown"),
             cell(f"{_COEF}{n}_rel_error", "n/a")] for n in names]
    return (["### Recovered coefficients", ""]
            + _table(["coefficient", "recovered", "true", "relative error"], rows) + [""])




def settings_table(rows: Sequence[tuple[str, str]]) -> list[str]:
    """The `### Run settings` section (`pinn.report.settings.run_settings`); `[]` without rows."""
    if not rows:
        return []
    return ["### Run settings", ""] + _table(["setting", "value"], rows) + [""]


#: the summary's row for `model.hard_initial_condition` (pinn.models: the network imposes the
#: problem's initial values, so the loss has no `ic` term)
HARD_INITIAL = ("hard initial condition u = u0 + (t − t0)·N (exact at t0 for any parameters); "
                "no `ic` loss term")


def refinement_iterations(data: RunData, run: Sequence[Phase]) -> int | None:
    """Refinement iterations done over all refinements (window 0's and later windows'): None when
    no refinement history exists at all."""
    refines = [p for p in run if p.kind == "refine"]
    if refines:
        return sum(p.steps for p in refines)
    present = data.refine is not None or any(r is not None for _, r in data.windows.values())
    return 0 if present else None


def summary(data: RunData, run: Sequence[Phase], inputs: ReportInputs, *, title: str,
            problem: str, refine_method: str, hard_initial_condition: bool = False) -> list[str]:
    """The title and the summary: warnings about the reference, the accuracy and totals table
    (totals over every phase, later time windows included), recovered coefficients, other
    numeric metrics."""
    metrics, est, reference_file = data.metrics, data.est, data.reference_file
    problem = str(metrics.get("problem", problem))
    walls = [float(np.nanmax(p.column("wall_s"))) for p in run
             if np.isfinite(p.column("wall_s")).any()]
    windowed = bool(data.windows)
    steps = adam_steps(run) if data.histories or any(
        h is not None for h, _ in data.windows.values()) else None
    iterations = refinement_iterations(data, run)
    # totals over the time windows: say so
    over = f" (over the {len(data.windows) + 1} time windows)" if windowed else ""

    md = [f"# {title}", "", "## Summary", ""]
    # the reference's own error is above `reference.warn_above` (evaluate says so): every accuracy
    # figure below is limited by it
    limited = metrics.get("reference_limited") is True
    mark = f" (limited by the reference, its own error {fmt(est)})" if limited else ""
    if limited:
        md += [f"> **Accuracy limited by the reference:** its estimated relative error is {fmt(est)} "
               "(above `reference.warn_above`); errors at or below that level say nothing about "
               "the network.", ""]
    if reference_file is not None:
        stated = (f"its error as the file states it: {fmt(est)}" if est is not None
                  else "its error is unknown")
        md += [f"> **Reference from a file:** `{reference_file}`, not certified here (no "
               f"self-convergence check; {stated}). Accuracy figures are relative to that data.",
               ""]
    # a system of fields: evaluate writes rel_l2_<field> and max_abs_<field> per field, and the
    # headline over all of them stacked
    per_field = [k[len("rel_l2_"):] for k in metrics if k.startswith("rel_l2_")
                 and not re.fullmatch(r"window\d+", k[len("rel_l2_"):])]
    # time-marching windows: evaluate writes rel_l2_window<k>, the error on window k's times
    per_window = [k for k in metrics if re.fullmatch(r"rel_l2_window\d+", k)]
    stacked = " (all fields stacked)" if per_field else ""
    stitched = f" (stitched, {len(per_window)} time windows)" if per_window else ""
    md += _table(["quantity", "value"], [
        ["problem", problem],
        ["rel L2 error", fmt(_float(metrics.get("rel_l2"))) + stacked + stitched + mark],
        *[[f"rel L2 error, field {f}", fmt(_float(metrics.get(f"rel_l2_{f}"))) + mark]
          for f in per_field],
        *[[f"rel L2 error, time window {k[len('rel_l2_window'):]} (its times only)",
           fmt(_float(metrics.get(k))) + mark] for k in per_window],
        ["max abs error",
         fmt(_float(metrics.get("max_abs"))) + (" (over all fields)" if per_field else "") + mark],
        *[[f"max abs error, field {f}", fmt(_float(metrics.get(f"max_abs_{f}"))) + mark]
          for f in per_field],
        ["reference est. rel. error",
         (f"{fmt(est)} (exact solution)" if est == 0 else fmt(est)) if reference_file is None else
         ("unknown" if est is None else f"{fmt(est)} (stated by the file)")],
        ["Adam steps", fmt(steps) + (over if steps is not None else "")],
        ["refinement iterations", fmt(iterations) + (over if iterations is not None else "")],
        ["total steps + iterations",
         fmt(None if steps is None and iterations is None else (steps or 0) + (iterations or 0))
         + (over if steps is not None or iterations is not None else "")],
        ["total wall time", fmt_seconds(sum(walls)) + over if walls else "n/a"],
        ["refine method", refine_method],
        *([["initial condition", HARD_INITIAL]] if hard_initial_condition else []),
    ])
    md.append("")
    if not inputs.metrics.exists():
        md += [_not_found(inputs, inputs.metrics, "accuracy metrics are not shown"), ""]
    md += coefficient_table(metrics)
    known = {"problem", "rel_l2", "max_abs", "reference_est_rel_error", "reference_limited",
             *(f"rel_l2_{f}" for f in per_field), *(f"max_abs_{f}" for f in per_field),
             *per_window, *(k for k in metrics if k.startswith(_COEF))}
    extra = [[k, fmt(v)] for k, v in sorted(metrics.items())
             if k not in known and isinstance(v, (int, float))]
    if extra:
        md += ["Other metrics:", ""] + _table(["metric", "value"], extra) + [""]
    return md


def _method(phase: Phase, default: str) -> str:
    """A refinement's method as its history states it (`method` column), else `default`."""
    if "method" in phase.df and len(phase.df):
        return str(phase.df["method"].iloc[0])
    return default


def phase_table(data: RunData, run: Sequence[Phase], inputs: ReportInputs, *,
                refine_method: str, refine_precision: str) -> list[str]:
    """The `### Phases` section: one row per level, refinement and later window (steps, final
    loss, final rel L2, wall time, rate), and a note for each missing history. With time-marching
    windows every phase's rel L2 is against the reference on its own window's time slab, and the
    rows say which window each phase trains."""
    windowed = bool(data.windows)
    md = ["### Phases", ""]
    if run:
        rows = []
        for p in run:
            df = p.df
            last = df.iloc[-1]
            if p.kind == "adam":
                rate = p.column("steps_per_s")
            else:
                wall = _float(last.get("wall_s"))
                rate = np.array([p.steps / wall if wall else np.nan])
            if not windowed:
                name = p.name if p.kind == "adam" else f"refinement ({refine_method})"
            elif p.kind == "adam":
                name = f"{p.name} (window0)" if p.window == 0 else f"{p.name} (Adam)"
            elif p.window == 0:
                name = f"refinement ({refine_method}, window0)"
            else:
                name = f"{p.name} ({_method(p, refine_method)})"
            rows.append([
                name,
                str(p.steps),
                fmt(_float(last.get("loss"))),
                fmt(_float(last.get("rel_l2"))),
                fmt_seconds(_float(last.get("wall_s"))),
                f"{np.nanmean(rate):.1f}" if np.isfinite(rate).any() else "n/a",
            ])
        rel = "final rel L2 (its window's slab)" if windowed else "final rel L2"
        md += _table(["phase", "steps / iterations", "final loss", rel, "wall time",
                      "steps (iterations) / s"], rows) + [""]
        md += ["The final loss of a level is Adam's weighted minibatch loss; the refinement's is "
               f"the loss on the full collocation set ({refine_precision}).", ""]
        if windowed:
            md += ["Time-marching windows: the levels and the first refinement train window0, "
                   "each later window continues from the one before on its own time slab; a "
                   "phase's rel L2 is against the reference on its window's times only (the "
                   "stitched error over the whole interval, and each window's, are in the "
                   "summary).", ""]
    for lv in inputs.histories:
        if lv not in data.histories:
            md += [_not_found(inputs, inputs.histories[lv], f"level `{lv}` is not shown"), ""]
    refine_phase = next((p for p in run if p.kind == "refine" and p.window == 0), None)
    if data.refine is None:
        md += [_not_found(inputs, inputs.refine_history, "the refinement is not shown"), ""]
    elif refine_phase is None:
        md += [f"*No refinement iterations (refine method `{refine_method}`).*", ""]
    for window, (history, refined) in data.windows.items():
        hist_path, refine_path = inputs.windows[window]
        if history is None:
            md += [_not_found(inputs, hist_path, f"window `{window}`'s Adam phase is not shown"),
                   ""]
        if refined is None:
            md += [_not_found(inputs, refine_path, f"window `{window}`'s refinement is not shown"),
                   ""]
    return md
