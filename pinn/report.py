"""The report stage: `report/report.md` plus PNG figures, from the pipeline's outputs.

Inputs (relative to the run root; every figure whose input is missing is skipped with a note):

    data/reference.npz                 t, x[, y], u[t, x(, y)], est_rel_error
    data/evaluate/errors.npz           prediction, error (= prediction − reference), t, x[, y]
    metrics.json                       problem, rel_l2, max_abs, reference_est_rel_error, ...
    data/train/<level>/history.csv     per-level training log (global `step`, per-level `wall_s`)
    data/train/<level>/samples.npz     last training batch: points (B, d) time first, weights (B,)
    data/refine/history.csv            iteration, loss, rel_l2, wall_s, method
    benchmarks/results/*.json          optional `comparison` rows (compute-normalised variants)

The report is built in a temporary directory next to `report/` and swapped in with `os.rename`
at the end, so a killed report stage never leaves a half-written report. Figures are drawn with
matplotlib's Agg canvas (no pyplot global state).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pinn.config import Params
from pinn.errors import UserError

REPORT_DIR = "report"
REPORT_MD = "report.md"

#: history columns that are not sampler statistics
_TRAIN_COLUMNS = {"level", "step", "level_step", "loss", "grad_norm", "steps_per_s", "wall_s",
                  "rel_l2", "causal_min_weight"}


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
    benchmark_results: Path  # a directory of *.json
    root: Path = Path(".")

    @classmethod
    def at(cls, root: Path, levels: Sequence[str]) -> "ReportInputs":
        """The pipeline's fixed layout (see `pinn.stages`) under `root`."""
        root = Path(root)
        train = root / "data" / "train"
        return cls(
            reference=root / "data" / "reference.npz",
            errors=root / "data" / "evaluate" / "errors.npz",
            metrics=root / "metrics.json",
            histories={lv: train / lv / "history.csv" for lv in levels},
            samples={lv: train / lv / "samples.npz" for lv in levels},
            refine_history=root / "data" / "refine" / "history.csv",
            benchmark_results=root / "benchmarks" / "results",
            root=root,
        )

    def rel(self, path: Path) -> str:
        """`path` as shown in the report: relative to the root when possible."""
        try:
            return Path(os.path.relpath(path, self.root)).as_posix()
        except ValueError:
            return str(path)


@dataclass
class _Grid:
    t: np.ndarray
    x: np.ndarray
    y: np.ndarray | None
    reference: np.ndarray | None  # u_ref[t, x(, y)]
    prediction: np.ndarray | None
    error: np.ndarray | None  # prediction − reference


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
    except Exception as e:
        raise UserError(f"{path}: not a readable CSV file ({type(e).__name__}: {e})") from None


def _numeric(df, column: str) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)


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
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds:.1f} s ({seconds / 60:.1f} min)"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _not_found(inputs: ReportInputs, path: Path, what: str) -> str:
    return f"*Not available: `{inputs.rel(path)}` not found; {what}.*"


# ----------------------------------------------------------------------------------------------
# figures


class _Skip(Exception):
    """A figure cannot be drawn; the message is the note written in its place."""


def _figure(nrows: int, ncols: int, panel: tuple[float, float], title: str | None = None,
            squeeze: bool = False):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze)
    if title:
        fig.suptitle(title)
    return fig, axes


def _save(fig, path: Path, dpi: int) -> None:
    fig.savefig(path, dpi=dpi, format="png")


def _log_norm(values: np.ndarray):
    """A log colour scale covering the finite positive values (linear when there are none)."""
    from matplotlib.colors import LogNorm, Normalize

    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if positive.size == 0:
        return Normalize(vmin=0.0, vmax=1.0)
    vmax = float(positive.max())
    vmin = max(float(positive.min()), vmax * 1e-8)
    if vmin >= vmax:
        vmin = vmax / 10.0
    return LogNorm(vmin=vmin, vmax=vmax)


def snapshot_indices(t: np.ndarray, times: Sequence[float]) -> list[int]:
    """Indices of the stored times nearest to each requested time (sorted, duplicates removed)."""
    t = np.asarray(t, dtype=np.float64)
    return sorted({int(np.argmin(np.abs(t - float(s)))) for s in times})


def _positive(values: np.ndarray) -> np.ndarray:
    """Non-positive and non-finite values become NaN (gaps on a log axis)."""
    v = np.asarray(values, dtype=np.float64).copy()
    v[~np.isfinite(v) | (v <= 0)] = np.nan
    return v


def _fig_snapshots(grid: _Grid, times: Sequence[float], path: Path, dpi: int, title: str) -> str:
    idx = snapshot_indices(grid.t, times)
    if grid.y is None:
        fig, axes = _figure(1, len(idx), (3.2, 2.8), f"{title}: solution snapshots")
        for ax, k in zip(axes[0], idx):
            ax.plot(grid.x, grid.reference[k], "k-", lw=1.5, label="reference")
            ax.plot(grid.x, grid.prediction[k], "r--", lw=1.2, label="PINN")
            ax.set_title(f"t = {grid.t[k]:.3g}")
            ax.set_xlabel("x")
        axes[0][0].set_ylabel("u")
        axes[0][0].legend(loc="best", fontsize="small")
    else:
        fig, axes = _figure(len(idx), 3, (3.0, 2.6), f"{title}: solution snapshots")
        extent = (grid.x[0], grid.x[-1], grid.y[0], grid.y[-1])
        err_norm = _log_norm(np.abs(grid.error[idx]))
        for row, k in zip(axes, idx):
            lo = float(min(grid.reference[k].min(), grid.prediction[k].min()))
            hi = float(max(grid.reference[k].max(), grid.prediction[k].max()))
            for ax, field_, name in ((row[0], grid.reference[k], "reference"),
                                     (row[1], grid.prediction[k], "PINN")):
                im = ax.imshow(field_.T, origin="lower", extent=extent, aspect="auto",
                               cmap="RdBu_r", vmin=lo, vmax=hi)
                ax.set_title(f"{name}, t = {grid.t[k]:.3g}")
            ax.figure.colorbar(im, ax=row[:2].tolist(), shrink=0.9)
            shown = np.maximum(np.abs(grid.error[k]), err_norm.vmin)  # zeros: no white gaps
            im = row[2].imshow(shown.T, origin="lower", extent=extent, aspect="auto",
                               cmap="magma", norm=err_norm)
            row[2].set_title(f"|error|, t = {grid.t[k]:.3g}")
            row[2].figure.colorbar(im, ax=row[2], shrink=0.9)
            row[0].set_ylabel("y")
        for ax in axes[-1]:
            ax.set_xlabel("x")
    _save(fig, path, dpi)
    return "Reference solution vs PINN prediction at the stored times nearest to " + ", ".join(
        f"{s:g}" for s in times) + "."


def _fig_error_map(grid: _Grid, times: Sequence[float], path: Path, dpi: int, title: str) -> str:
    err = np.abs(grid.error)
    norm = _log_norm(err)
    err = np.maximum(err, norm.vmin)  # exact zeros show as the smallest colour, not as gaps
    if grid.y is None:
        fig, axes = _figure(1, 1, (7.0, 3.6), f"{title}: |prediction − reference|")
        ax = axes[0][0]
        im = ax.pcolormesh(grid.t, grid.x, err.T, shading="nearest", cmap="magma", norm=norm)
        ax.set_xlabel("t")
        ax.set_ylabel("x")
        fig.colorbar(im, ax=ax, label="|error| (log scale)")
        caption = "Pointwise absolute error over (t, x), log colour scale."
    else:
        idx = snapshot_indices(grid.t, times)
        fig, axes = _figure(1, len(idx), (3.0, 2.8), f"{title}: |prediction − reference|")
        extent = (grid.x[0], grid.x[-1], grid.y[0], grid.y[-1])
        for ax, k in zip(axes[0], idx):
            im = ax.imshow(err[k].T, origin="lower", extent=extent, aspect="auto", cmap="magma",
                           norm=norm)
            ax.set_title(f"t = {grid.t[k]:.3g}")
            ax.set_xlabel("x")
        axes[0][0].set_ylabel("y")
        fig.colorbar(im, ax=axes[0].tolist(), label="|error| (log scale)")
        caption = "Pointwise absolute error over (x, y) per stored time, shared log colour scale."
    _save(fig, path, dpi)
    return caption


def _level_colours(levels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    n = max(len(levels) - 1, 1)
    return {lv: cmap(0.85 * i / n) for i, lv in enumerate(levels)}


def _level_boundaries(ax, histories: dict) -> None:
    for df in list(histories.values())[1:]:
        if len(df):
            first = float(_numeric(df, "step")[0] - _numeric(df, "level_step")[0]) \
                if "level_step" in df else float(_numeric(df, "step")[0])
            ax.axvline(first, color="0.6", ls=":", lw=0.8)


def convergence_series(histories: dict, refine) -> dict[str, dict[str, np.ndarray]]:
    """Per curve (each level, then "refine"): x (global step), loss, rel_l2 (NaN where absent).

    The refinement's iterations are offset to start after the last Adam step.
    """
    series: dict[str, dict[str, np.ndarray]] = {}
    last_step = 0.0
    for level, df in histories.items():
        step = _numeric(df, "step")
        if np.isfinite(step).any():
            last_step = max(last_step, float(np.nanmax(step)))
        series[level] = {"x": step, **{c: _numeric(df, c) if c in df else np.full(len(df), np.nan)
                                       for c in ("loss", "rel_l2")}}
    if refine is not None:
        series["refine"] = {
            "x": last_step + _numeric(refine, "iteration"),
            **{c: _numeric(refine, c) if c in refine else np.full(len(refine), np.nan)
               for c in ("loss", "rel_l2")},
        }
    return series


def _fig_convergence(histories: dict, refine, path: Path, dpi: int, title: str) -> str:
    colours = _level_colours(list(histories))
    series = convergence_series(histories, refine)
    fig, axes = _figure(1, 2, (5.0, 3.6), f"{title}: convergence")
    for name, s in series.items():
        if name == "refine":
            method = str(refine["method"].iloc[0]) if "method" in refine and len(refine) else ""
            style = dict(color="k", ls="--", label=f"refine ({method})" if method else "refine")
            for ax in axes[0]:
                ax.axvline(s["x"][0] if len(s["x"]) else 0.0, color="k", ls=":", lw=0.8)
        else:
            style = dict(color=colours[name], ls="-", label=name)
        for ax, col in zip(axes[0], ("loss", "rel_l2")):
            ax.plot(s["x"], _positive(s[col]), lw=1.3, **style)
    for ax, label in zip(axes[0], ("training loss", "relative L2 error")):
        ax.set_yscale("log")
        ax.set_xlabel("step (refine: iterations after the last Adam step)")
        ax.set_ylabel(label)
        _level_boundaries(ax, histories)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].legend(loc="best", fontsize="small")
    _save(fig, path, dpi)
    return ("Training loss and relative L2 error vs global step, one colour per cascade level"
            + ("; the quasi-Newton refinement is appended after the last Adam step."
               if refine is not None else "."))


def _fig_weights(histories: dict, path: Path, dpi: int, title: str) -> str:
    columns = sorted({c for df in histories.values() for c in df.columns
                      if c.startswith("weight_")})
    if not columns:
        raise _Skip("no `weight_*` columns in the training histories")
    causal = any("causal_min_weight" in df for df in histories.values())
    fig, axes = _figure(1, 2 if causal else 1, (5.0, 3.4), f"{title}: loss weights")
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    ax = axes[0][0]
    for j, col in enumerate(columns):
        for i, df in enumerate(histories.values()):
            if col in df:
                ax.plot(_numeric(df, "step"), _positive(_numeric(df, col)), color=cmap(j),
                        lw=1.3, label=col.removeprefix("weight_") if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss weight")
    ax.legend(loc="best", fontsize="small")
    _level_boundaries(ax, histories)
    if causal:
        ax = axes[0][1]
        colours = _level_colours(list(histories))
        for level, df in histories.items():
            if "causal_min_weight" in df:
                ax.plot(_numeric(df, "step"), _numeric(df, "causal_min_weight"),
                        color=colours[level], lw=1.3, label=level)
        ax.set_xlabel("step")
        ax.set_ylabel("min causal weight")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(loc="best", fontsize="small")
    _save(fig, path, dpi)
    return "Loss-term weights vs global step (level boundaries dotted)" + (
        "; right: the smallest causal time weight." if causal else ".")


def _fig_sample_density(samples: dict[str, dict], path: Path, dpi: int, title: str) -> str:
    fig, axes = _figure(1, len(samples), (3.4, 3.0), f"{title}: last training batch")
    for ax, (level, s) in zip(axes[0], samples.items()):
        pts, w = s["points"], s["weights"]
        w = w if np.sum(w) > 0 else np.ones_like(w)
        bins = int(np.clip(np.sqrt(len(pts) / 4), 8, 50))  # ~4 points per bin on average
        h = ax.hist2d(pts[:, 0], pts[:, 1], bins=bins, weights=w, cmap="viridis")
        fig.colorbar(h[3], ax=ax)
        ax.set_title(f"{level} ({len(pts)} points)")
        ax.set_xlabel("t")
    axes[0][0].set_ylabel("x")
    _save(fig, path, dpi)
    return ("Density of the last training batch of each level over (t, x) (weighted by the "
            "points' loss weights; 2D problems: marginal over y).")


def sampler_stat_columns(histories: dict) -> list[str]:
    """History columns that are sampler statistics (everything not a loss/weight/timing column)."""
    cols: list[str] = []
    for df in histories.values():
        for c in df.columns:
            if c in _TRAIN_COLUMNS or c.startswith(("loss_", "weight_")) or c in cols:
                continue
            if np.isfinite(_numeric(df, c)).any():
                cols.append(c)
    return cols


def _fig_sampler_stats(histories: dict, columns: list[str], path: Path, dpi: int,
                       title: str) -> str:
    colours = _level_colours(list(histories))
    fig, axes = _figure(1, len(columns), (3.4, 2.8), f"{title}: sampler statistics")
    for ax, col in zip(axes[0], columns):
        for level, df in histories.items():
            if col in df:
                ax.plot(_numeric(df, "step"), _numeric(df, col), color=colours[level], lw=1.3,
                        label=level)
        ax.set_title(col)
        ax.set_xlabel("step")
    axes[0][0].legend(loc="best", fontsize="small")
    _save(fig, path, dpi)
    return "Sampler statistics vs global step: " + ", ".join(f"`{c}`" for c in columns) + "."


def _fig_comparison(rows: list[dict], path: Path, dpi: int, title: str) -> str:
    best: dict[tuple[str, str], float] = {}
    for r in rows:  # later files win for a repeated (variant, budget)
        v = _float(r.get("rel_l2"))
        if v is not None and v > 0:
            best[(str(r["variant"]), str(r["budget"]))] = v
    if not best:
        raise _Skip("no finite positive rel L2 values to plot")
    variants = list(dict.fromkeys(k[0] for k in best))
    budgets = sorted({k[1] for k in best})
    fig, axes = _figure(1, 1, (max(5.0, 1.1 * len(variants) + 2), 3.8),
                        f"{title}: compute-normalised comparison")
    ax = axes[0][0]
    width = 0.8 / len(budgets)
    x = np.arange(len(variants))
    for j, b in enumerate(budgets):
        vals = [best.get((v, b), np.nan) for v in variants]
        ax.bar(x + (j - (len(budgets) - 1) / 2) * width, vals, width, label=b.replace("_", " "))
    ax.set_xticks(x, variants, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("relative L2 error")
    ax.legend(title="budget", fontsize="small")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    _save(fig, path, dpi)
    return "Relative L2 error per variant (log scale), grouped by compute budget."


def _fmt_int(v: float | None) -> str:
    return "n/a" if v is None else str(int(v))


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ----------------------------------------------------------------------------------------------
# the report


@dataclass
class _Report:
    out: Path
    lines: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def figure(self, name: str, alt: str, draw: Callable[[Path], str]) -> None:
        """Draw `name` with `draw(path) -> caption` and link it, or write the skip note."""
        try:
            caption = draw(self.out / name)
        except _Skip as e:
            self.lines += [f"*Not available: {e}.*", ""]
            return
        self.figures.append(name)
        self.lines += [f"![{alt}]({name})", "", caption, ""]


def _load_grid(inputs: ReportInputs, notes: list[str]) -> _Grid | None:
    ref = _load_npz(inputs.reference, ("t", "x", "u")) if inputs.reference.exists() else None
    err = (_load_npz(inputs.errors, ("prediction", "error", "t", "x"))
           if inputs.errors.exists() else None)
    if ref is None:
        notes.append(_not_found(inputs, inputs.reference, "no reference solution is shown"))
    if err is None:
        notes.append(_not_found(inputs, inputs.errors,
                                "no prediction or error map"))
        return None
    if err["prediction"].shape != err["error"].shape:
        raise UserError(f"{inputs.errors}: prediction {err['prediction'].shape} and error "
                        f"{err['error'].shape} differ in shape")
    reference = None
    if ref is not None:
        if ref["u"].shape != err["error"].shape:
            raise UserError(f"{inputs.errors}: error shape {err['error'].shape} does not match "
                            f"the reference's u {ref['u'].shape} ({inputs.reference})")
        reference = ref["u"]
    y = err.get("y")
    want = (len(err["t"]), len(err["x"])) + ((len(y),) if y is not None else ())
    if err["error"].shape != want:
        raise UserError(f"{inputs.errors}: error shape {err['error'].shape} does not match its "
                        f"axes {want}")
    return _Grid(t=err["t"], x=err["x"], y=y, reference=reference,
                 prediction=err["prediction"], error=err["error"])


def _comparison_rows(inputs: ReportInputs, problem: str, notes: list[str]) -> list[dict]:
    rows: list[dict] = []
    directory = inputs.benchmark_results
    files = sorted(directory.glob("*.json")) if directory.is_dir() else []
    for f in files:
        try:
            data = _load_json(f)
        except UserError as e:
            notes.append(f"*Skipped {inputs.rel(f)}: {e}.*")
            continue
        table = data.get("comparison") if isinstance(data, dict) else None
        if not isinstance(table, list):
            continue
        for r in table:
            if (isinstance(r, dict) and r.get("problem") == problem
                    and {"variant", "budget"} <= r.keys()):
                rows.append({**r, "source": f.name})
    return rows


def write_report(
    inputs: ReportInputs,
    out: Path,
    *,
    title: str,
    dpi: int,
    snapshot_times: Sequence[float],
    problem: str,
    refine_method: str,
) -> Path:
    """Build report.md and its PNGs atomically into the directory `out`; return report.md's path.

    Everything is written into a temporary sibling directory which then replaces `out`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left behind by a killed report stage
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _build(inputs, tmp, title=title, dpi=dpi, snapshot_times=snapshot_times,
               problem=problem, refine_method=refine_method)
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
           snapshot_times: Sequence[float], problem: str, refine_method: str) -> None:
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
        if "step" not in df:
            raise UserError(f"{inputs.histories[lv]}: no `step` column")
    refine = _load_csv(inputs.refine_history) if inputs.refine_history.exists() else None
    if refine is not None and "iteration" not in refine:
        raise UserError(f"{inputs.refine_history}: no `iteration` column")
    samples = {lv: _load_npz(p, ("points", "weights"))
               for lv, p in inputs.samples.items() if p.exists()}

    problem = str(metrics.get("problem", problem))
    est = _float(metrics.get("reference_est_rel_error"))
    if est is None and inputs.reference.exists():
        est = _float(_load_npz(inputs.reference, ("est_rel_error",))["est_rel_error"])
    total_steps = max((int(np.nanmax(_numeric(df, "step"))) for df in histories.values()
                       if len(df) and np.isfinite(_numeric(df, "step")).any()), default=None)
    walls = [float(np.nanmax(_numeric(df, "wall_s"))) for df in histories.values()
             if "wall_s" in df and np.isfinite(_numeric(df, "wall_s")).any()]
    if refine is not None and "wall_s" in refine and np.isfinite(_numeric(refine, "wall_s")).any():
        walls.append(float(np.nanmax(_numeric(refine, "wall_s"))))
    if refine is not None and "method" in refine and len(refine):
        refine_method = str(refine["method"].iloc[0])

    # -- summary
    md += [f"# {title}", "", "## Summary", ""]
    md += _table(["quantity", "value"], [
        ["problem", problem],
        ["rel L2 error", fmt(_float(metrics.get("rel_l2")))],
        ["max abs error", fmt(_float(metrics.get("max_abs")))],
        ["reference est. rel. error", fmt(est)],
        ["total steps", fmt(total_steps)],
        ["total wall time", fmt_seconds(sum(walls)) if walls else "n/a"],
        ["refine method", refine_method],
    ])
    md.append("")
    if not inputs.metrics.exists():
        md += [_not_found(inputs, inputs.metrics, "accuracy metrics are not shown"), ""]
    known = {"problem", "rel_l2", "max_abs", "reference_est_rel_error"}
    extra = [[k, fmt(v)] for k, v in sorted(metrics.items())
             if k not in known and isinstance(v, (int, float))]
    if extra:
        md += ["Other metrics:", ""] + _table(["metric", "value"], extra) + [""]

    md += ["### Levels", ""]
    missing_levels = [lv for lv in inputs.histories if lv not in histories]
    if histories:
        rows = []
        for lv, df in histories.items():
            last = df.iloc[-1] if len(df) else {}
            sps = _numeric(df, "steps_per_s") if "steps_per_s" in df else np.array([np.nan])
            rows.append([
                lv,
                _fmt_int(_float(last.get("level_step"))) if len(df) else "n/a",
                fmt(_float(last.get("loss"))) if len(df) else "n/a",
                fmt(_float(last.get("rel_l2"))) if len(df) else "n/a",
                fmt_seconds(_float(last.get("wall_s"))) if len(df) else "n/a",
                f"{np.nanmean(sps):.1f}" if np.isfinite(sps).any() else "n/a",
            ])
        md += _table(["level", "steps", "final loss", "final rel L2", "wall time",
                      "mean steps/s"], rows) + [""]
    for lv in missing_levels:
        md += [_not_found(inputs, inputs.histories[lv], f"level `{lv}` is not shown"), ""]
    if refine is None:
        md += [_not_found(inputs, inputs.refine_history, "the refine phase is not shown"), ""]

    # -- 1, 2: solution and error
    md += ["## Solution snapshots", ""]
    md += [n + "\n" for n in grid_notes]
    if grid is not None and grid.reference is not None:
        rep.figure("snapshots.png", "solution snapshots",
                   lambda p: _fig_snapshots(grid, snapshot_times, p, dpi, title))
    else:
        md += ["*Not available: the snapshots need both the reference and the prediction.*", ""]
    md += ["## Error map", ""]
    if grid is not None:
        rep.figure("error_map.png", "error map",
                   lambda p: _fig_error_map(grid, snapshot_times, p, dpi, title))
    else:
        md += [_not_found(inputs, inputs.errors, "no error map"), ""]

    # -- 3, 4: training dynamics
    md += ["## Convergence", ""]
    if histories:
        rep.figure("convergence.png", "convergence",
                   lambda p: _fig_convergence(histories, refine, p, dpi, title))
    else:
        md += ["*Not available: no training history found.*", ""]
    md += ["## Loss weights", ""]
    if histories:
        rep.figure("loss_weights.png", "loss weights",
                   lambda p: _fig_weights(histories, p, dpi, title))
    else:
        md += ["*Not available: no training history found.*", ""]

    # -- 5: sampling
    md += ["## Sampling", ""]
    if samples:
        rep.figure("sampling_density.png", "sampling density",
                   lambda p: _fig_sample_density(samples, p, dpi, title))
    for lv, p in inputs.samples.items():
        if lv not in samples:
            md += [_not_found(inputs, p, f"no sampling density for `{lv}`"), ""]
    stats = sampler_stat_columns(histories)
    if stats:
        rep.figure("sampler_stats.png", "sampler statistics",
                   lambda p: _fig_sampler_stats(histories, stats, p, dpi, title))
    else:
        md += ["*Not available: the training histories hold no sampler statistics.*", ""]

    # -- benchmarks
    md += ["## Compute-normalised comparison of variants", ""]
    notes: list[str] = []
    rows = _comparison_rows(inputs, problem, notes)
    md += [n + "\n" for n in notes]
    if rows:
        order = sorted(rows, key=lambda r: (str(r["budget"]),
                                            _float(r.get("rel_l2")) or math.inf))
        md += _table(["budget", "variant", "rel L2", "steps", "wall time", "source"], [
            [str(r["budget"]).replace("_", " "), r["variant"], fmt(_float(r.get("rel_l2"))),
             _fmt_int(_float(r.get("steps"))),
             fmt_seconds(_float(r.get("wall_s"))), r["source"]]
            for r in order
        ]) + [""]
        rep.figure("comparison.png", "comparison of variants",
                   lambda p: _fig_comparison(rows, p, dpi, title))
    else:
        md += [f"*Not available: no `comparison` rows for `{problem}` in "
               f"`{inputs.rel(inputs.benchmark_results)}/*.json`.*", ""]

    text = "\n".join(md).rstrip() + "\n"
    (out / REPORT_MD).write_text(text)


def stage_report(cfg: Params, root: Path = Path(".")) -> Path:
    """The report stage: `report/report.md` + PNGs under `root` from the pipeline's outputs."""
    root = Path(root)
    inputs = ReportInputs.at(root, list(cfg.multilevel.levels))
    path = write_report(
        inputs,
        root / REPORT_DIR,
        title=cfg.report.title,
        dpi=cfg.report.dpi,
        snapshot_times=cfg.report.snapshot_times,
        problem=cfg.problem.name,
        refine_method=cfg.refine.method,
    )
    return path
