"""The report: `report.md` plus PNG figures, from this run's outputs (and nothing else).

Inputs (paths given to `build_report`; every figure whose input is missing is skipped with a note):

    reference.npz                      t, x[, y], u[t, x(, y)], est_rel_error (or scattered:
                                       points (N, d), columns, u (N,)); source (a file's)
    errors.npz                         prediction, error (= prediction − reference), t, x[, y]
                                       (or points, columns); a system of fields: `fields` (their
                                       names), the first as prediction/error, the others as
                                       prediction_<field>, error_<field> (reference.npz holds them
                                       as field_<field>)
    metrics.json                       problem, rel_l2, max_abs, reference_est_rel_error, ...;
                                       an inverse problem's coef_<name>, coef_<name>_true,
                                       coef_<name>_rel_error (the "Recovered coefficients" table)
    <train_dir>/<level>/history.csv    per-level training log: `step` (global), `level_step`,
                                       `loss` (Adam minibatch loss), `rel_l2`, `wall_s` (from the
                                       start of that level's stage), `weight_*`, `ntk_*`, sampler
                                       statistics, `lr_scale`
    <train_dir>/<level>/samples.npz    last training batch: points (B, d) time first, weights (B,)
    refine_history.csv                 iteration, loss (full collocation set), rel_l2, wall_s, method

Solution and error figures have one panel (or row) per field: snapshots over x (a time-first
grid), curves or maps over the inputs (scattered points that are every node of a tensor grid of one
or two columns: a steady problem's exact reference), or the pointwise error at scattered points.

The Adam phase (minibatch loss, per cascade level) and the quasi-Newton refinement (loss on the
full collocation set, usually in float64) are drawn on separate axes: their losses are different
quantities. The steps axis counts the Adam steps actually taken (each level's last `level_step`),
so the refinement starts at their sum; the wall-clock view offsets each phase by the previous
phases' last `wall_s`. A panel whose quantity is constant for this run (fixed loss weights,
`lr_scale` ≡ 1, a constant sampler statistic, the batch density of the uniform sampler) is left out
and the constant stated in one line.

The report is built in a temporary directory next to `out` and swapped in with `os.rename` at the
end, so a killed report stage never leaves a half-written report; the directory gets the usual
permissions (`0o777 & ~umask`, like `mkdir`), not the private ones of a temporary directory.
Figures are drawn with matplotlib's Agg canvas (no pyplot global state).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pinn.config import Params
from pinn.errors import UserError

REPORT_DIR = "report"
REPORT_MD = "report.md"

#: history columns that are neither sampler statistics nor per-term columns
_TRAIN_COLUMNS = {"level", "step", "level_step", "loss", "grad_norm", "steps_per_s", "wall_s",
                  "rel_l2", "causal_min_weight", "lr_scale"}
#: prefixes of per-loss-term history columns
_TERM_PREFIXES = ("loss_", "weight_", "ntk_")
#: prefix of the trainable coefficients' columns (history) and keys (metrics.json)
_COEF = "coef_"


# ----------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class ReportInputs:
    """Where every input of the report lives (any of them may be missing)."""

    reference: Path
    errors: Path
    metrics: Path
    histories: dict[str, Path]  # level -> history.csv, coarse to fine
    samples: dict[str, Path]  # level -> samples.npz
    refine_history: Path
    root: Path = Path(".")  # paths are shown relative to this directory when inside it

    @classmethod
    def of(cls, *, reference: Path, errors: Path, metrics: Path, train_dir: Path,
           refine_history: Path, levels: Sequence[str], root: Path = Path(".")) -> "ReportInputs":
        """Explicit paths; `train_dir/<level>/history.csv` and `samples.npz` per level."""
        train_dir = Path(train_dir)
        return cls(
            reference=Path(reference), errors=Path(errors), metrics=Path(metrics),
            histories={lv: train_dir / lv / "history.csv" for lv in levels},
            samples={lv: train_dir / lv / "samples.npz" for lv in levels},
            refine_history=Path(refine_history), root=Path(root),
        )

    @classmethod
    def at(cls, root: Path, levels: Sequence[str]) -> "ReportInputs":
        """The pipeline's default layout under `root` (data/..., metrics.json)."""
        root = Path(root)
        return cls.of(reference=root / "data" / "reference.npz",
                      errors=root / "data" / "evaluate" / "errors.npz",
                      metrics=root / "metrics.json", train_dir=root / "data" / "train",
                      refine_history=root / "data" / "refine" / "history.csv",
                      levels=levels, root=root)

    def rel(self, path: Path) -> str:
        """`path` as shown in the report: relative to the root when inside it."""
        rel = os.path.relpath(Path(path).absolute(), Path(self.root).absolute())
        return Path(rel).as_posix() if not rel.startswith("..") else str(path)


@dataclass
class _Field:
    """One field's values where the reference has them (a grid's shape, or `(N,)` at points)."""

    name: str
    reference: np.ndarray | None  # None: the reference file is missing
    prediction: np.ndarray
    error: np.ndarray  # prediction − reference


@dataclass
class _Grid:
    """Prediction and error on a time-first reference grid `t × x (× y)`, per field."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray | None
    fields: list[_Field]

    @property
    def complete(self) -> bool:
        return all(f.reference is not None for f in self.fields)


@dataclass
class _Points:
    """Prediction and error at the scattered points of a reference (read from a file, or a steady
    or higher-dimensional problem's exact solution), per field. `axes`: when the points are the
    nodes of a tensor grid over one or two columns (a steady problem's exact reference), its axes,
    and `flat` the node of each point (C order), so the values can be drawn as curves or maps."""

    points: np.ndarray  # (N, d)
    columns: tuple[str, ...]
    fields: list[_Field]
    axes: list[np.ndarray] | None = None
    flat: np.ndarray | None = None

    @property
    def complete(self) -> bool:
        return all(f.reference is not None for f in self.fields)

    def on_grid(self, values: np.ndarray) -> np.ndarray:
        """Values at the points arranged on the tensor grid `axes` (indexed like the columns)."""
        out = np.empty(len(self.points))
        out[self.flat] = values
        return out.reshape(tuple(a.size for a in self.axes))


def _tensor_grid(points: np.ndarray) -> tuple[list[np.ndarray], np.ndarray] | None:
    """`(axes, flat)` when `points (N, d)`, d <= 2, are every node of a tensor grid exactly once
    (`flat`: each point's node in C order); else None."""
    if points.ndim != 2 or not 1 <= points.shape[1] <= 2 or len(points) < 2:
        return None
    axes = [np.unique(points[:, j]) for j in range(points.shape[1])]
    if math.prod(a.size for a in axes) != len(points) or min(a.size for a in axes) < 2:
        return None
    idx = tuple(np.searchsorted(a, points[:, j]) for j, a in enumerate(axes))
    flat = np.ravel_multi_index(idx, tuple(a.size for a in axes))
    if np.unique(flat).size != len(points):
        return None
    return axes, flat


def _load_npz(path: Path, required: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in required if k not in data.files]
            if missing:
                raise UserError(f"{path}: missing array(s) {', '.join(missing)}")
            return {k: np.asarray(data[k]) for k in data.files}
    except UserError:
        raise
    except Exception as e:  # truncated, not a zip, pickled objects
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable JSON file ({type(e).__name__}: {e})") from None


def _load_csv(path: Path):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as e:
        raise UserError(f"{path}: not a readable CSV file ({type(e).__name__}: {e})") from None


def _numeric(df, column: str) -> np.ndarray:
    """A column as float64 (NaN where absent or not a number)."""
    import pandas as pd

    if column not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)


def _last_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else None


def is_constant(values: np.ndarray) -> bool:
    """True when the finite values are all equal (or there are none): nothing to plot."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return finite.size == 0 or bool(np.all(finite == finite[0]))


# ----------------------------------------------------------------------------------------------
# the phases of a run: cascade levels, then the refinement


@dataclass
class Phase:
    """One phase of the run, with its own history rows placed on the run's common axes.

    `x`: cumulative Adam steps actually taken (levels), or the Adam total plus the iteration
    (refinement); `wall`: wall seconds since the first level started (each history's `wall_s`
    counts from the start of its own stage, so it is offset by the previous phases' last value).
    """

    name: str
    kind: str  # "adam" | "refine"
    df: Any  # the history (pandas.DataFrame)
    x: np.ndarray
    wall: np.ndarray
    steps: int  # steps taken (levels) / iterations done (refinement)
    start_x: float
    start_wall: float

    def column(self, name: str) -> np.ndarray:
        return _numeric(self.df, name)


def phases(histories: dict, refine) -> list[Phase]:
    """The levels (in order) and the refinement (when it has rows) on common step/wall axes."""
    out: list[Phase] = []
    offset_x, offset_wall, previous_global = 0.0, 0.0, 0.0
    for level, df in histories.items():
        if not len(df):
            continue
        if "level_step" in df:
            local = _numeric(df, "level_step")
        else:  # older histories: the global step, minus where the previous level ended
            local = _numeric(df, "step") - previous_global
        previous_global = _last_finite(_numeric(df, "step")) or previous_global
        steps = int(np.nanmax(local)) if np.isfinite(local).any() else 0
        wall_s = _numeric(df, "wall_s")
        out.append(Phase(level, "adam", df, offset_x + local, offset_wall + wall_s, steps,
                         offset_x, offset_wall))
        offset_x += steps
        offset_wall += float(np.nanmax(wall_s)) if np.isfinite(wall_s).any() else 0.0
    if refine is not None and len(refine):
        it = _numeric(refine, "iteration")
        steps = int(np.nanmax(it)) if np.isfinite(it).any() else 0
        out.append(Phase("refine", "refine", refine, offset_x + it,
                         offset_wall + _numeric(refine, "wall_s"), steps, offset_x, offset_wall))
    return out


def adam_steps(run: Sequence[Phase]) -> int:
    """Adam steps actually taken over all levels (where the refinement starts on the step axis)."""
    return sum(p.steps for p in run if p.kind == "adam")


# ----------------------------------------------------------------------------------------------
# formatting


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


def _not_found(inputs: ReportInputs, path: Path, what: str) -> str:
    return f"*Not available: `{inputs.rel(path)}` not found; {what}.*"


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ----------------------------------------------------------------------------------------------
# figures


class _Skip(Exception):
    """A figure is not drawn; the message is the sentence written in its place."""


def _figure(nrows: int, ncols: int, panel: tuple[float, float], title: str | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if title:
        fig.suptitle(title)
    return fig, axes


def _save(fig, path: Path, dpi: int) -> None:
    fig.savefig(path, dpi=dpi, format="png")


#: decades of |error| shown below its maximum on the error maps' log colour scale
ERROR_DECADES = 5.0


def error_norm(values: np.ndarray):
    """Log colour scale for |error|: from its maximum down to `ERROR_DECADES` decades below it
    (or to its smallest positive value, if larger); smaller values are clipped to the lowest colour
    (the colour bar shows the clipping as an extension)."""
    from matplotlib.colors import LogNorm, Normalize

    finite = np.abs(values[np.isfinite(values)])
    positive = finite[finite > 0]
    if positive.size == 0:
        return Normalize(vmin=0.0, vmax=1.0)
    vmax = float(positive.max())
    vmin = max(float(positive.min()), vmax * 10.0 ** -ERROR_DECADES)
    if vmin >= vmax:
        vmin = vmax / 10.0
    return LogNorm(vmin=vmin, vmax=vmax, clip=False)


def _is_uniform(v: np.ndarray) -> bool:
    d = np.diff(np.asarray(v, dtype=np.float64))
    return d.size > 0 and bool(np.all(d > 0)) and bool(np.allclose(d, d[0], rtol=1e-6, atol=0))


def cell_edges(v: np.ndarray) -> np.ndarray:
    """Edges of the cells centred on the grid values `v` (midpoints; ends extended by half a cell)."""
    v = np.asarray(v, dtype=np.float64)
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = 0.5 * (v[1:] + v[:-1])
    return np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])


def _field_image(ax, h: np.ndarray, v: np.ndarray, values: np.ndarray, **kw):
    """`values[h, v]` on axes (h horizontal, v vertical), each value filling its own cell.

    Uniform grids: `imshow` with the cells' extent and anti-aliased downsampling (a grid finer than
    the pixels does not alias into moiré); otherwise `pcolormesh` on the cell edges."""
    if _is_uniform(h) and _is_uniform(v):
        he, ve = cell_edges(h), cell_edges(v)
        return ax.imshow(values.T, origin="lower", extent=(he[0], he[-1], ve[0], ve[-1]),
                         aspect="auto", interpolation="antialiased", **kw)
    return ax.pcolormesh(cell_edges(h), cell_edges(v), values.T, shading="flat",
                         rasterized=True, **kw)


def _for_log_scale(values: np.ndarray, norm) -> np.ndarray:
    """Exact zeros drawn in the lowest colour (below the scale), not as missing data."""
    vmin = getattr(norm, "vmin", None) or 1.0
    return np.where(np.isfinite(values) & (values <= 0), 0.1 * vmin, values)


def _error_cmap():
    from matplotlib import colormaps

    magma = colormaps["magma"]
    return magma.with_extremes(under=magma(0.0), bad="0.5")


def snapshot_indices(t: np.ndarray, times: Sequence[float]) -> list[int]:
    """Indices of the stored times nearest to each requested time, given as a fraction of the
    stored time range (0: the first time, 1: the last; sorted, duplicates removed)."""
    t = np.asarray(t, dtype=np.float64)
    at = t[0] + (t[-1] - t[0]) * np.asarray(times, dtype=np.float64)
    return sorted({int(np.argmin(np.abs(t - s))) for s in at})


def _positive(values: np.ndarray) -> np.ndarray:
    """Non-positive and non-finite values become NaN (gaps on a log axis)."""
    v = np.asarray(values, dtype=np.float64).copy()
    v[~np.isfinite(v) | (v <= 0)] = np.nan
    return v


def _field_label(f: _Field, several: bool, text: str) -> str:
    """A panel title: `text`, prefixed with the field's name when there are several fields."""
    return f"{f.name}, {text}" if several else text


def _fig_snapshots(grid: _Grid, times: Sequence[float], path: Path, dpi: int, title: str) -> str:
    idx = snapshot_indices(grid.t, times)
    several = len(grid.fields) > 1
    if grid.y is None:  # one row of snapshots per field
        fig, axes = _figure(len(grid.fields), len(idx), (3.2, 2.8), f"{title}: solution snapshots")
        for row, f in zip(axes, grid.fields):
            for ax, k in zip(row, idx):
                ax.plot(grid.x, f.reference[k], "k-", lw=1.5, label="reference")
                ax.plot(grid.x, f.prediction[k], "r--", lw=1.2, label="PINN")
                ax.set_title(_field_label(f, several, f"t = {grid.t[k]:.3g}"))
                ax.set_xlabel("x")
                ax.set_ylabel(f.name)
        axes[0][0].legend(loc="best", fontsize="small")
    else:  # one row (reference, PINN, |error|) per field and time
        fig, axes = _figure(len(grid.fields) * len(idx), 3, (3.0, 2.6),
                            f"{title}: solution snapshots")
        rows = iter(axes)
        cmap = _error_cmap()
        for f in grid.fields:
            err_norm = error_norm(f.error[idx])
            for row, k in zip(rows, idx):
                lo = float(min(f.reference[k].min(), f.prediction[k].min()))
                hi = float(max(f.reference[k].max(), f.prediction[k].max()))
                for ax, field_, name in ((row[0], f.reference[k], "reference"),
                                         (row[1], f.prediction[k], "PINN")):
                    im = _field_image(ax, grid.x, grid.y, field_, cmap="RdBu_r", vmin=lo, vmax=hi)
                    ax.set_title(_field_label(f, several, f"{name}, t = {grid.t[k]:.3g}"))
                    ax.set_xlabel("x")
                    ax.set_ylabel("y")
                fig.colorbar(im, ax=row[:2].tolist(), shrink=0.9, label=f.name)
                im = _field_image(row[2], grid.x, grid.y,
                                  _for_log_scale(np.abs(f.error[k]), err_norm), cmap=cmap,
                                  norm=err_norm)
                row[2].set_title(_field_label(f, several, f"|error|, t = {grid.t[k]:.3g}"))
                row[2].set_xlabel("x")
                row[2].set_ylabel("y")
                fig.colorbar(im, ax=row[2], shrink=0.9, extend="min",
                             label="|prediction − reference|")
    _save(fig, path, dpi)
    per_field = (" One row per field (" + ", ".join(f.name for f in grid.fields) + ")"
                 + (" and time." if grid.y is not None else ".") if several else "")
    return "Reference solution vs PINN prediction at the stored times nearest to " + ", ".join(
        f"{s:g}" for s in times) + "." + per_field


def _fig_error_map(grid: _Grid, times: Sequence[float], path: Path, dpi: int, title: str) -> str:
    cmap = _error_cmap()
    label = "|prediction − reference| (log scale)"
    several = len(grid.fields) > 1
    norms = [error_norm(f.error) for f in grid.fields]
    decades = ", ".join(
        (f"{f.name}: " if several else "")
        + (f"{math.log10(n.vmax / n.vmin):.1f}" if n.vmin > 0 else "n/a")
        + (f" decades below the maximum {n.vmax:.2e}" if several else "")
        for f, n in zip(grid.fields, norms))
    if grid.y is None:  # one panel per field over (t, x)
        fig, axes = _figure(len(grid.fields), 1, (7.0, 3.6), f"{title}: pointwise error")
        for row, f, norm in zip(axes, grid.fields, norms):
            ax = row[0]
            im = _field_image(ax, grid.t, grid.x, _for_log_scale(np.abs(f.error), norm),
                              cmap=cmap, norm=norm)
            ax.set_xlabel("t")
            ax.set_ylabel("x")
            if several:
                ax.set_title(f.name)
            fig.colorbar(im, ax=ax, extend="min", label=label)
        if several:
            caption = (f"|prediction − reference| over (t, x) per field, one cell per reference "
                       f"grid point, log colour scale per field ({decades}).")
        else:
            caption = (f"|prediction − reference| over (t, x), one cell per reference grid "
                       f"point, log colour scale over {decades} decades below the maximum "
                       f"{norms[0].vmax:.2e} (smaller errors in the lowest colour).")
    else:  # one row of maps per field, one panel per stored time
        idx = snapshot_indices(grid.t, times)
        fig, axes = _figure(len(grid.fields), len(idx), (3.0, 2.8), f"{title}: pointwise error")
        for row, f, norm in zip(axes, grid.fields, norms):
            err = _for_log_scale(np.abs(f.error), norm)
            for ax, k in zip(row, idx):
                im = _field_image(ax, grid.x, grid.y, err[k], cmap=cmap, norm=norm)
                ax.set_title(_field_label(f, several, f"t = {grid.t[k]:.3g}"))
                ax.set_xlabel("x")
                ax.set_ylabel("y")
            fig.colorbar(im, ax=row.tolist(), extend="min", label=label)
        if several:
            caption = (f"|prediction − reference| over (x, y) per stored time, one row per field, "
                       f"log colour scale per field ({decades}).")
        else:
            caption = (f"|prediction − reference| over (x, y) per stored time, shared log colour "
                       f"scale over {decades} decades below the maximum {norms[0].vmax:.2e}.")
    _save(fig, path, dpi)
    return caption


def _fig_steady_solution(pts: _Points, path: Path, dpi: int, title: str) -> str:
    """A tensor grid of one or two columns (a steady problem): per field, reference and PINN as
    curves over the column (one panel per field), or as maps over the two columns (one row per
    field: reference, PINN)."""
    several = len(pts.fields) > 1
    names = ", ".join(f.name for f in pts.fields)
    if len(pts.axes) == 1:
        x = pts.axes[0]
        fig, axes = _figure(1, len(pts.fields), (4.0, 3.0), f"{title}: solution")
        for ax, f in zip(axes[0], pts.fields):
            ax.plot(x, pts.on_grid(f.reference), "k-", lw=1.5, label="reference")
            ax.plot(x, pts.on_grid(f.prediction), "r--", lw=1.2, label="PINN")
            ax.set_title(f.name)
            ax.set_xlabel(pts.columns[0])
            ax.set_ylabel(f.name)
        axes[0][0].legend(loc="best", fontsize="small")
        _save(fig, path, dpi)
        return (f"Reference solution vs PINN prediction over {pts.columns[0]}, one panel per "
                f"field ({names}).")
    h, v = pts.axes
    fig, axes = _figure(len(pts.fields), 2, (3.2, 2.8), f"{title}: solution")
    for row, f in zip(axes, pts.fields):
        ref, pred = pts.on_grid(f.reference), pts.on_grid(f.prediction)
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        for ax, values, name in ((row[0], ref, "reference"), (row[1], pred, "PINN")):
            im = _field_image(ax, h, v, values, cmap="RdBu_r", vmin=lo, vmax=hi)
            ax.set_title(_field_label(f, several, name))
            ax.set_xlabel(pts.columns[0])
            ax.set_ylabel(pts.columns[1])
        fig.colorbar(im, ax=row.tolist(), shrink=0.9, label=f.name)
    _save(fig, path, dpi)
    return (f"Reference solution vs PINN prediction over ({pts.columns[0]}, {pts.columns[1]}), "
            f"one row per field ({names}).")


def _fig_steady_error(pts: _Points, path: Path, dpi: int, title: str) -> str:
    """|error| on a tensor grid of one or two columns: one panel per field (a curve on a log
    axis, or a map on a log colour scale)."""
    names = ", ".join(f.name for f in pts.fields)
    label = "|prediction − reference| (log scale)"
    fig, axes = _figure(1, len(pts.fields), (4.0, 3.2), f"{title}: pointwise error")
    for ax, f in zip(axes[0], pts.fields):
        err = np.abs(pts.on_grid(f.error))
        if len(pts.axes) == 1:
            ax.plot(pts.axes[0], _positive(err), "k-", lw=1.2)
            ax.set_yscale("log")
            ax.set_xlabel(pts.columns[0])
            ax.set_ylabel(label)
            ax.grid(True, which="major", alpha=0.3)
        else:
            norm = error_norm(err)
            im = _field_image(ax, pts.axes[0], pts.axes[1], _for_log_scale(err, norm),
                              cmap=_error_cmap(), norm=norm)
            ax.set_xlabel(pts.columns[0])
            ax.set_ylabel(pts.columns[1])
            fig.colorbar(im, ax=ax, extend="min", label=label)
        ax.set_title(f.name)
    _save(fig, path, dpi)
    where = pts.columns[0] if len(pts.axes) == 1 else f"({pts.columns[0]}, {pts.columns[1]})"
    return (f"|prediction − reference| over {where}, one panel per field ({names})"
            + ("; log colour scale per field." if len(pts.axes) == 2 else ", log scale."))


def _level_colours(levels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    n = max(len(levels) - 1, 1)
    return {lv: cmap(0.85 * i / n) for i, lv in enumerate(levels)}


def _style(phase: Phase, colours: dict) -> dict:
    if phase.kind == "refine":
        return dict(color="k", ls="-", label="refinement")
    return dict(color=colours[phase.name], ls="-", label=phase.name)


def _boundaries(ax, run: Sequence[Phase], attr: str) -> None:
    """Dotted lines where each phase after the first starts (on the `start_x`/`start_wall` axis)."""
    for p in run[1:]:
        ax.axvline(getattr(p, attr), color="0.5" if p.kind == "adam" else "k", ls=":", lw=0.9)


def _fig_convergence(run: list[Phase], refine_label: str, path: Path, dpi: int,
                     title: str) -> str:
    adam = [p for p in run if p.kind == "adam"]
    refine = next((p for p in run if p.kind == "refine"), None)
    colours = _level_colours([p.name for p in adam])
    boundary = adam_steps(run)
    panels: list[Callable] = []
    captions: list[str] = []

    if any(np.isfinite(p.column("loss")).any() for p in adam):
        def adam_panel(ax):
            for p in adam:
                ax.plot(p.x, _positive(p.column("loss")), lw=1.3, **_style(p, colours))
            ax.set_yscale("log")
            ax.set_xlabel("Adam step (all levels)")
            ax.set_ylabel("Adam loss (weighted, minibatch)")
            _boundaries(ax, adam, "start_x")
            ax.set_title("Adam phase")
            ax.legend(loc="best", fontsize="small")
        panels.append(adam_panel)
        captions.append("the Adam loss (weighted minibatch loss) per cascade level")
    if refine is not None and np.isfinite(refine.column("loss")).any():
        def refine_panel(ax):
            it = refine.column("iteration")
            ax.plot(it, _positive(refine.column("loss")), "k-", lw=1.3, marker=".")
            ax.set_yscale("log")
            ax.set_xlabel("refinement iteration")
            ax.set_ylabel("refinement loss (full set)")
            ax.set_title(refine_label)
        panels.append(refine_panel)
        captions.append(f"the refinement loss ({refine_label}) on its own axes")
    if any(np.isfinite(p.column("rel_l2")).any() for p in run):
        def error_panel(ax):
            for p in run:
                ax.plot(p.x, _positive(p.column("rel_l2")), lw=1.3, marker=".", ms=3,
                        **_style(p, colours))
            ax.set_yscale("log")
            ax.set_xlabel("Adam step, then refinement iteration")
            ax.set_ylabel("relative L2 error")
            _boundaries(ax, adam, "start_x")
            if refine is not None:
                ax.axvline(boundary, color="k", ls="--", lw=1.0)
                ax.annotate(f"refinement from step {boundary}", (boundary, 1.0),
                            xycoords=("data", "axes fraction"), xytext=(3, -3),
                            textcoords="offset points", va="top", fontsize="small")
            ax.set_title("accuracy")
            ax.legend(loc="best", fontsize="small")
        panels.append(error_panel)
        captions.append("the relative L2 error against the reference over Adam steps, then "
                        f"refinement iterations (the refinement starts after the {boundary} Adam "
                        "steps taken)")
    if any(not is_constant(p.column("lr_scale")) for p in adam):
        def lr_panel(ax):
            for p in adam:
                ax.plot(p.x, p.column("lr_scale"), lw=1.3, drawstyle="steps-post",
                        **_style(p, colours))
            ax.set_yscale("log")
            ax.set_xlabel("Adam step (all levels)")
            ax.set_ylabel("learning-rate scale")
            ax.set_title("after divergence retries")
        panels.append(lr_panel)
        captions.append("the learning-rate scale lowered by divergence retries")
    if not panels:
        raise _Skip("Not available: the histories hold no finite loss or error values.")
    fig, axes = _figure(1, len(panels), (4.6, 3.6), f"{title}: convergence")
    for ax, draw in zip(axes[0], panels):
        draw(ax)
        ax.grid(True, which="major", alpha=0.3)
    _save(fig, path, dpi)
    return "Left to right: " + "; ".join(captions) + ". Level boundaries dotted."


def _fig_error_vs_time(run: list[Phase], path: Path, dpi: int, title: str) -> str:
    colours = _level_colours([p.name for p in run if p.kind == "adam"])
    shown = [p for p in run if (np.isfinite(p.column("rel_l2")) & np.isfinite(p.wall)).any()]
    if not shown:
        raise _Skip("Not available: no rows with both `rel_l2` and `wall_s`.")
    fig, axes = _figure(1, 1, (6.0, 3.6), f"{title}: error vs wall-clock time")
    ax = axes[0][0]
    for p in shown:
        ax.plot(p.wall, _positive(p.column("rel_l2")), lw=1.3, marker=".", ms=3,
                **_style(p, colours))
    _boundaries(ax, run, "start_wall")
    ax.set_yscale("log")
    ax.set_xlabel("wall-clock time (s, cumulative over the phases)")
    ax.set_ylabel("relative L2 error")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    _save(fig, path, dpi)
    return ("Relative L2 error against cumulative wall-clock seconds: each phase's `wall_s` "
            "(counted from the start of its own stage) offset by the previous phases' totals; "
            "phase boundaries dotted. Each phase's time starts at its training loop (compilation "
            "included); process start-up and loading of inputs are not counted.")


def _terms(run: Sequence[Phase], prefix: str) -> list[str]:
    return list(dict.fromkeys(c for p in run if p.kind == "adam" for c in p.df.columns
                              if c.startswith(prefix)))


def _fig_weights(run: list[Phase], path: Path, dpi: int, title: str) -> str:
    from matplotlib import colormaps

    adam = [p for p in run if p.kind == "adam"]
    cmap = colormaps["tab10"]
    weights = _terms(adam, "weight_")
    ntk = [c for c in _terms(adam, "ntk_")
           if any(np.isfinite(p.column(c)).any() for p in adam)]
    varying = [c for c in weights if not is_constant(np.concatenate([p.column(c) for p in adam]))]
    causal = [p for p in adam if "causal_min_weight" in p.df]
    causal_varies = causal and not is_constant(
        np.concatenate([p.column("causal_min_weight") for p in causal]))
    constant = [c for c in weights if c not in varying]
    names = list(dict.fromkeys([c.removeprefix("weight_") for c in weights]
                               + [c.removeprefix("ntk_") for c in ntk]))
    colour = {name: cmap(i) for i, name in enumerate(names)}  # one colour per term throughout
    notes = []
    if constant:
        notes.append("constant loss weights: " + ", ".join(
            f"{c.removeprefix('weight_')} = "
            f"{_fmt_const(_last_finite(np.concatenate([p.column(c) for p in adam])) or math.nan)}"
            for c in constant))
    panels: list[Callable] = []
    if varying:
        def weight_panel(ax):
            for col in varying:
                for i, p in enumerate(adam):
                    ax.plot(p.x, _positive(p.column(col)), color=colour[col[7:]], lw=1.3,
                            label=col.removeprefix("weight_") if i == 0 else None)
            ax.set_yscale("log")
            ax.set_ylabel("loss weight")
            ax.set_title("loss weights")
            ax.legend(loc="best", fontsize="small", title="term")
        panels.append(weight_panel)
    if causal_varies:
        def causal_panel(ax):
            colours = _level_colours([p.name for p in adam])
            for p in causal:
                ax.plot(p.x, p.column("causal_min_weight"), color=colours[p.name], lw=1.3,
                        label=p.name)
            ax.set_ylabel("smallest causal weight")
            ax.set_ylim(-0.05, 1.05)
            ax.set_title("causal time weighting")
            ax.legend(loc="best", fontsize="small")
        panels.append(causal_panel)
    if ntk:
        def ntk_panel(ax):
            for col in ntk:
                for i, p in enumerate(adam):
                    v = _positive(p.column(col))
                    keep = np.isfinite(v)
                    ax.plot(p.x[keep], v[keep], color=colour[col[4:]], lw=1.3, marker="o", ms=3,
                            label=col.removeprefix("ntk_") if i == 0 else None)
            ax.set_yscale("log")
            ax.set_ylabel("NTK trace / points (mean ‖∂r/∂θ‖²)")
            ax.set_title("empirical NTK per loss term")
            ax.legend(loc="best", fontsize="small", title="term")
        panels.append(ntk_panel)
    if not panels:
        raise _Skip((notes[0][0].upper() + notes[0][1:] + " throughout; no figure.")
                    if notes else "Not available: no `weight_*` or `ntk_*` columns in the "
                                  "training histories.")
    fig, axes = _figure(1, len(panels), (4.6, 3.4), f"{title}: loss weights and NTK")
    for ax, draw in zip(axes[0], panels):
        draw(ax)
        ax.set_xlabel("Adam step (all levels)")
        _boundaries(ax, adam, "start_x")
        ax.grid(True, which="major", alpha=0.3)
    _save(fig, path, dpi)
    parts = []
    if varying:
        parts.append("loss-term weights")
    if causal_varies:
        parts.append("the smallest causal time weight")
    if ntk:
        parts.append("per loss term, the trace of its empirical NTK block divided by the number "
                     "of points (mean squared norm of the parameter gradient of the term's "
                     "residual on a fixed subsample of points; computed every `train.ntk_every` "
                     "steps)")
    caption = "Left to right: " + "; ".join(parts) + ". Level boundaries dotted."
    if notes:
        caption += " " + notes[0][0].upper() + notes[0][1:] + "."
    return caption


def _fig_sample_density(samples: dict[str, dict], path: Path, dpi: int, title: str,
                        columns: Sequence[str] = ("t", "x", "y")) -> str:
    """The last batch's density over the first two input columns (`columns`: their names; a
    histogram over the one column of a one-input problem)."""
    fig, axes = _figure(1, len(samples), (3.4, 3.0), f"{title}: last training batch")
    dims = 2
    names = [columns[i] if i < len(columns) else f"z{i}" for i in range(3)]
    for ax, (level, s) in zip(axes[0], samples.items()):
        pts, w = s["points"], s["weights"]
        dims = max(dims, pts.shape[1]) if pts.shape[1] > 1 else 1
        w = w if np.sum(w) > 0 else np.ones_like(w)
        bins = int(np.clip(np.sqrt(len(pts) / 4), 8, 50))  # ~4 points per bin on average
        if pts.shape[1] == 1:
            ax.hist(pts[:, 0], bins=bins, weights=w, color="C0")
            ax.set_ylabel("points per bin (weighted)")
        else:
            h = ax.hist2d(pts[:, 0], pts[:, 1], bins=bins, weights=w, cmap="viridis")
            fig.colorbar(h[3], ax=ax, label="points per bin (weighted)")
            ax.set_ylabel(names[1])
        ax.set_title(f"{level} ({len(pts)} points)")
        ax.set_xlabel(names[0])
    _save(fig, path, dpi)
    over = f"({names[0]}, {names[1]})" if dims > 1 else names[0]
    rest = ""
    if dims == 3:
        rest = f"; marginal over {names[2]}"
    elif dims > 3:
        rest = "; marginal over the other columns"
    return (f"Density of the last training batch of each level over {over} (weighted by the "
            "points' loss weights" + rest + ").")


def sampler_stat_columns(histories: dict) -> list[str]:
    """History columns that are sampler statistics (not loss/weight/NTK/timing columns)."""
    cols: list[str] = []
    for df in histories.values():
        for c in df.columns:
            if (c in _TRAIN_COLUMNS or c.startswith(_TERM_PREFIXES) or c.startswith(_COEF)
                    or c in cols):
                continue
            if np.isfinite(_numeric(df, c)).any():
                cols.append(c)
    return cols


def _fig_sampler_stats(run: list[Phase], columns: list[str], path: Path, dpi: int,
                       title: str) -> str:
    adam = [p for p in run if p.kind == "adam"]
    colours = _level_colours([p.name for p in adam])
    fig, axes = _figure(1, len(columns), (3.4, 2.8), f"{title}: sampler statistics")
    for ax, col in zip(axes[0], columns):
        for p in adam:
            if col in p.df:
                ax.plot(p.x, p.column(col), lw=1.3, **_style(p, colours))
        ax.set_title(col)
        ax.set_xlabel("Adam step (all levels)")
        ax.set_ylabel(col)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].legend(loc="best", fontsize="small")
    _save(fig, path, dpi)
    return "Sampler statistics vs Adam step: " + ", ".join(f"`{c}`" for c in columns) + "."


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


def _fmt_int(v: float | None) -> str:
    return "n/a" if v is None else str(int(v))


# ----------------------------------------------------------------------------------------------
# the report


@dataclass
class _Report:
    out: Path
    lines: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def figure(self, name: str, alt: str, draw: Callable[[Path], str]) -> None:
        """Draw `name` with `draw(path) -> caption` and link it, or write the sentence instead."""
        try:
            caption = draw(self.out / name)
        except _Skip as e:
            self.lines += [f"*{e}*", ""]
            return
        self.figures.append(name)
        self.lines += [f"![{alt}]({name})", "", caption, ""]


def _fields(inputs: ReportInputs, ref: dict | None, err: dict, shape: tuple[int, ...]
            ) -> list[_Field]:
    """The fields of errors.npz (`fields`, default `u`: the first as `prediction`/`error`, the
    others as `prediction_<name>`/`error_<name>`) with the reference's values of each (`u`, then
    `field_<name>`), every array checked against `shape`."""
    names = [str(n) for n in np.atleast_1d(err["fields"])] if "fields" in err else ["u"]
    out = []
    for k, name in enumerate(names):
        suffix = "" if k == 0 else f"_{name}"
        missing = [key for key in (f"prediction{suffix}", f"error{suffix}") if key not in err]
        if missing:
            raise UserError(f"{inputs.errors}: missing array(s) {', '.join(missing)} (field "
                            f"{name!r} of its fields)")
        prediction, error = err[f"prediction{suffix}"], err[f"error{suffix}"]
        if prediction.shape != error.shape:
            raise UserError(f"{inputs.errors}: prediction {prediction.shape} and error "
                            f"{error.shape} differ in shape")
        if error.shape != shape:
            raise UserError(f"{inputs.errors}: error{suffix} shape {error.shape} does not match "
                            f"its points or axes {shape}")
        reference = None
        if ref is not None:
            key = "u" if k == 0 else f"field_{name}"
            if key not in ref:
                raise UserError(f"{inputs.reference}: no array {key!r} (field {name!r}, which "
                                f"{inputs.errors} holds)")
            if ref[key].shape != error.shape:
                raise UserError(f"{inputs.errors}: error shape {error.shape} does not match "
                                f"the reference's {key} {ref[key].shape} ({inputs.reference})")
            reference = ref[key]
        out.append(_Field(name, reference, prediction, error))
    return out


def _load_grid(inputs: ReportInputs, notes: list[str]) -> _Grid | _Points | None:
    ref = _load_npz(inputs.reference, ("u",)) if inputs.reference.exists() else None
    err = (_load_npz(inputs.errors, ("prediction", "error")) if inputs.errors.exists() else None)
    if ref is None:
        notes.append(_not_found(inputs, inputs.reference, "no reference solution is shown"))
    if err is None:
        notes.append(_not_found(inputs, inputs.errors, "no prediction or error map"))
        return None
    if "points" in err:
        return _load_points(inputs, ref, err)
    missing = [k for k in ("t", "x") if k not in err]
    if missing:
        raise UserError(f"{inputs.errors}: missing array(s) {', '.join(missing)} (or points)")
    y = err.get("y")
    want = (len(err["t"]), len(err["x"])) + ((len(y),) if y is not None else ())
    return _Grid(t=err["t"], x=err["x"], y=y, fields=_fields(inputs, ref, err, want))


def _load_points(inputs: ReportInputs, ref: dict | None, err: dict) -> _Points:
    points = err["points"]
    if points.ndim != 2:
        raise UserError(f"{inputs.errors}: points {points.shape} must be (N, d)")
    columns = tuple(str(c) for c in err.get("columns", [f"z{i}" for i in range(points.shape[1])]))
    if len(columns) != points.shape[1]:
        raise UserError(f"{inputs.errors}: {len(columns)} columns for points {points.shape}")
    grid = _tensor_grid(points)
    return _Points(points=points, columns=columns,
                   fields=_fields(inputs, ref, err, (len(points),)),
                   axes=None if grid is None else grid[0], flat=None if grid is None else grid[1])


def _fig_error_points(pts: _Points, path: Path, dpi: int, title: str) -> str:
    """|error| at scattered points, one row per field: against the coordinate (one input), else
    one scatter per pair of consecutive input columns (at most three), largest errors on top."""
    n, d = pts.points.shape
    several = len(pts.fields) > 1
    label = "|prediction − reference| (log scale)"
    per_field = (" One row per field (" + ", ".join(f.name for f in pts.fields) + ")."
                 if several else "")
    if d == 1:
        fig, axes = _figure(len(pts.fields), 1, (6.0, 3.6), f"{title}: pointwise error")
        order = np.argsort(pts.points[:, 0], kind="stable")
        for row, f in zip(axes, pts.fields):
            ax = row[0]
            ax.plot(pts.points[order, 0], _positive(np.abs(f.error)[order]), "k.", ms=3)
            ax.set_yscale("log")
            ax.set_xlabel(pts.columns[0])
            ax.set_ylabel(label)
            ax.grid(True, which="major", alpha=0.3)
            if several:
                ax.set_title(f.name)
        _save(fig, path, dpi)
        return f"|prediction − reference| at the reference's {n} scattered points." + per_field
    pairs = [(i, i + 1) for i in range(min(d - 1, 3))]
    size = float(np.clip(20000.0 / n, 0.5, 20.0))
    fig, axes = _figure(len(pts.fields), len(pairs), (4.2, 3.6), f"{title}: pointwise error")
    spans = []
    for row, f in zip(axes, pts.fields):
        norm = error_norm(f.error)
        err = np.abs(f.error)
        order = np.argsort(err, kind="stable")  # largest on top
        for ax, (i, j) in zip(row, pairs):
            sc = ax.scatter(pts.points[order, i], pts.points[order, j],
                            c=_for_log_scale(err[order], norm), norm=norm, cmap=_error_cmap(),
                            s=size, linewidths=0, rasterized=True)
            ax.set_xlabel(pts.columns[i])
            ax.set_ylabel(pts.columns[j])
            if several:
                ax.set_title(f.name)
        fig.colorbar(sc, ax=row.tolist(), extend="min", label=label)
        decades = f"{math.log10(norm.vmax / norm.vmin):.1f}" if getattr(norm, "vmin", 0) else "n/a"
        spans.append((f.name, decades, getattr(norm, "vmax", float("nan"))))
    planes = " and ".join(f"({pts.columns[i]}, {pts.columns[j]})" for i, j in pairs)
    _save(fig, path, dpi)
    if several:
        scale = "log colour scale per field (" + ", ".join(
            f"{name}: {dec} decades below the maximum {vmax:.2e}" for name, dec, vmax in spans) + ")"
    else:
        scale = (f"log colour scale over {spans[0][1]} decades below the maximum "
                 f"{spans[0][2]:.2e}")
    return (f"|prediction − reference| at the reference's {n} scattered points, drawn over "
            f"{planes}{' (projected)' if d > 2 else ''}, largest errors on top; {scale}."
            + per_field)


def write_report(
    inputs: ReportInputs,
    out: Path,
    *,
    title: str,
    dpi: int,
    snapshot_times: Sequence[float],
    problem: str,
    refine_method: str,
    refine_precision: str = "float64",
    sampling_method: str | None = None,
    appendix: Sequence[str] = (),
) -> Path:
    """Build report.md and its PNGs atomically into the directory `out`; return report.md's path.
    `appendix`: markdown lines added at the end (the comparison of techniques, `pinn.comparison`).

    Everything is written into a temporary sibling directory (created like `mkdir`, so with the
    usual permissions) which then replaces `out`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left behind by a killed report stage
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    os.mkdir(tmp)  # mode 0o777 & ~umask, like the report directory a user would make
    try:
        _build(inputs, tmp, title=title, dpi=dpi, snapshot_times=snapshot_times,
               problem=problem, refine_method=refine_method, refine_precision=refine_precision,
               sampling_method=sampling_method, appendix=appendix)
        _swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out / REPORT_MD


def _swap_in(new: Path, dest: Path) -> None:
    """Replace the directory `dest` by `new` (two renames; `dest` is never partially written)."""
    old = None
    if dest.is_dir() and not dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rename(dest, old / dest.name)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    os.rename(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build(inputs: ReportInputs, out: Path, *, title: str, dpi: int,
           snapshot_times: Sequence[float], problem: str, refine_method: str,
           refine_precision: str, sampling_method: str | None,
           appendix: Sequence[str] = ()) -> None:
    rep = _Report(out=out)
    md = rep.lines

    # -- inputs
    metrics = _load_json(inputs.metrics) if inputs.metrics.exists() else {}
    if not isinstance(metrics, dict):
        raise UserError(f"{inputs.metrics}: must be a JSON object")
    grid_notes: list[str] = []
    grid = _load_grid(inputs, grid_notes)
    histories = {lv: _load_csv(p) for lv, p in inputs.histories.items() if p.exists()}
    for lv, df in histories.items():
        if len(df.columns) and "step" not in df:
            raise UserError(f"{inputs.histories[lv]}: no `step` column")
    refine = _load_csv(inputs.refine_history) if inputs.refine_history.exists() else None
    if refine is not None and len(refine.columns) and "iteration" not in refine:
        raise UserError(f"{inputs.refine_history}: no `iteration` column")
    samples = {lv: _load_npz(p, ("points", "weights"))
               for lv, p in inputs.samples.items() if p.exists()}
    run = phases(histories, refine)

    problem = str(metrics.get("problem", problem))
    est = _float(metrics.get("reference_est_rel_error"))
    reference_file = None  # the file a reference was read from (not certified here)
    if inputs.reference.exists():
        stored = _load_npz(inputs.reference, ("est_rel_error",) if est is None else ())
        if est is None:
            est = _float(stored["est_rel_error"])
        if "source" in stored:
            reference_file = str(stored["source"])
    if refine is not None and "method" in refine and len(refine):
        refine_method = str(refine["method"].iloc[0])
    refine_phase = next((p for p in run if p.kind == "refine"), None)
    walls = [float(np.nanmax(p.column("wall_s"))) for p in run
             if np.isfinite(p.column("wall_s")).any()]
    steps = adam_steps(run) if histories else None
    iterations = refine_phase.steps if refine_phase is not None else (
        0 if refine is not None else None)

    # -- summary
    md += [f"# {title}", "", "## Summary", ""]
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
         fmt(est) if reference_file is None else
         ("unknown" if est is None else f"{fmt(est)} (stated by the file)")],
        ["Adam steps", fmt(steps)],
        ["refinement iterations", fmt(iterations)],
        ["total steps + iterations",
         fmt(None if steps is None and iterations is None else (steps or 0) + (iterations or 0))],
        ["total wall time", fmt_seconds(sum(walls)) if walls else "n/a"],
        ["refine method", refine_method],
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

    md += ["### Phases", ""]
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
            rows.append([
                p.name if p.kind == "adam" else f"refinement ({refine_method})",
                str(p.steps),
                fmt(_float(last.get("loss"))),
                fmt(_float(last.get("rel_l2"))),
                fmt_seconds(_float(last.get("wall_s"))),
                f"{np.nanmean(rate):.1f}" if np.isfinite(rate).any() else "n/a",
            ])
        md += _table(["phase", "steps / iterations", "final loss", "final rel L2", "wall time",
                      "steps (iterations) / s"], rows) + [""]
        md += ["The final loss of a level is Adam's weighted minibatch loss; the refinement's is "
               f"the loss on the full collocation set ({refine_precision}).", ""]
    for lv in inputs.histories:
        if lv not in histories:
            md += [_not_found(inputs, inputs.histories[lv], f"level `{lv}` is not shown"), ""]
    if refine is None:
        md += [_not_found(inputs, inputs.refine_history, "the refinement is not shown"), ""]
    elif refine_phase is None:
        md += [f"*No refinement iterations (refine method `{refine_method}`).*", ""]

    # -- solution and error
    # a tensor grid of one or two columns at the points: a steady problem's exact reference
    steady_grid = isinstance(grid, _Points) and grid.axes is not None
    md += ["## Solution" if steady_grid else "## Solution snapshots", ""]
    md += [n + "\n" for n in grid_notes]
    if steady_grid and grid.complete:
        rep.figure("solution.png", "solution", lambda p: _fig_steady_solution(grid, p, dpi, title))
    elif steady_grid:
        md += ["*Not available: the solution needs both the reference and the prediction.*", ""]
    elif isinstance(grid, _Points):
        md += [f"*Not drawn: the reference is {len(grid.points)} scattered points, not a grid; "
               "snapshots at fixed times need a grid.*", ""]
    elif grid is not None and grid.complete:
        rep.figure("snapshots.png", "solution snapshots",
                   lambda p: _fig_snapshots(grid, snapshot_times, p, dpi, title))
    else:
        md += ["*Not available: the snapshots need both the reference and the prediction.*", ""]
    md += ["## Error map", ""]
    if steady_grid:
        rep.figure("error_map.png", "pointwise error",
                   lambda p: _fig_steady_error(grid, p, dpi, title))
    elif isinstance(grid, _Points):
        rep.figure("error_map.png", "pointwise error",
                   lambda p: _fig_error_points(grid, p, dpi, title))
    elif grid is not None:
        rep.figure("error_map.png", "error map",
                   lambda p: _fig_error_map(grid, snapshot_times, p, dpi, title))
    else:
        md += [_not_found(inputs, inputs.errors, "no error map"), ""]

    # -- training dynamics
    md += ["## Convergence", ""]
    if run:
        refine_label = (f"{refine_method}, {refine_precision}" if refine_phase is not None
                        else refine_method)
        rep.figure("convergence.png", "convergence",
                   lambda p: _fig_convergence(run, refine_label, p, dpi, title))
        md += ["### Error vs wall-clock time", ""]
        rep.figure("error_vs_time.png", "error vs wall-clock time",
                   lambda p: _fig_error_vs_time(run, p, dpi, title))
    else:
        md += ["*Not available: no training history found.*", ""]
    md += ["## Loss weights and NTK", ""]
    if histories:
        rep.figure("loss_weights.png", "loss weights and NTK",
                   lambda p: _fig_weights(run, p, dpi, title))
    else:
        md += ["*Not available: no training history found.*", ""]

    # -- sampling
    md += ["## Sampling", ""]
    if sampling_method == "uniform":
        md += ["*Uniform sampling: the batch density is flat by construction; not drawn.*", ""]
    else:
        if samples:
            columns = grid.columns if isinstance(grid, _Points) else ("t", "x", "y")
            rep.figure("sampling_density.png", "sampling density",
                       lambda p: _fig_sample_density(samples, p, dpi, title, columns))
        for lv, p in inputs.samples.items():
            if lv not in samples:
                md += [_not_found(inputs, p, f"no sampling density for `{lv}`"), ""]
    stats = sampler_stat_columns(histories)
    adam = [p for p in run if p.kind == "adam"]
    varying = [c for c in stats
               if not is_constant(np.concatenate([p.column(c) for p in adam]))]
    constant = [c for c in stats if c not in varying]
    if varying:
        rep.figure("sampler_stats.png", "sampler statistics",
                   lambda p: _fig_sampler_stats(run, varying, p, dpi, title))
    elif histories and not constant:
        md += ["*The sampler logs no statistics"
               + (f" (`sampling.method: {sampling_method}`)" if sampling_method else "") + ".*", ""]
    if constant:
        md += ["Constant throughout: " + ", ".join(
            f"`{c}` = {_fmt_const(_last_finite(np.concatenate([p.column(c) for p in adam])))}"
            for c in constant) + ".", ""]

    md += list(appendix)
    text = "\n".join(md).rstrip() + "\n"
    (out / REPORT_MD).write_text(text)


def _options(cfg: Params) -> dict[str, Any]:
    return dict(title=cfg.report.title, dpi=cfg.report.dpi,
                snapshot_times=cfg.report.snapshot_times, problem=cfg.problem.name,
                refine_method=cfg.refine.method, refine_precision=cfg.refine.precision,
                sampling_method=cfg.sampling.method)


def build_report(cfg: Params, *, reference: Path, errors: Path, metrics: Path, train_dir: Path,
                 refine_history: Path, out: Path, studies: Path | None = None) -> Path:
    """The report of this run: `out/report.md` + PNGs (the directory `out` is replaced whole).

    `train_dir/<level>/history.csv` and `train_dir/<level>/samples.npz` are read for each level of
    `cfg.multilevel.levels`; any missing input is noted in the report instead of drawn. Paths in
    the report are shown relative to the working directory. `studies`: the directory of committed
    study results; the report ends with the latest one's comparison of techniques on this
    problem (`pinn.comparison`). Returns the path of report.md.
    """
    inputs = ReportInputs.of(reference=reference, errors=errors, metrics=metrics,
                             train_dir=train_dir, refine_history=refine_history,
                             levels=list(cfg.multilevel.levels), root=Path.cwd())
    appendix: list[str] = []
    if studies is not None:
        from pinn.comparison import comparison_section

        appendix = comparison_section(studies, cfg.problem.identifier, link_from=out)
    return write_report(inputs, Path(out), appendix=appendix, **_options(cfg))


def stage_report(cfg: Params, root: Path = Path(".")) -> Path:
    """`build_report` on the pipeline's default layout under `root` (report/ under `root`)."""
    root = Path(root)
    inputs = ReportInputs.at(root, list(cfg.multilevel.levels))
    return write_report(inputs, root / REPORT_DIR, **_options(cfg))
