"""What every figure of the report is drawn with: a matplotlib Agg figure (no pyplot global state),
`_save` (the one place a PNG is written; tests capture the figures there), the error colour scale,
cell-filling images of grid values, and the phases' colours, styles and boundaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pinn.report.inputs import _Field
from pinn.report.phases import Phase


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



def _level_colours(levels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    n = max(len(levels) - 1, 1)
    return {lv: cmap(0.85 * i / n) for i, lv in enumerate(levels)}


def _style(phase: Phase, colours: dict) -> dict:
    """Line style of a phase: levels and windows by `colours` (phase name -> colour), the
    refinements black (window 0's) or grey (a later window's)."""
    if phase.kind == "refine":
        return dict(color="k" if phase.window == 0 else "0.45", ls="-", label=phase.label)
    return dict(color=colours[phase.name], ls="-", label=phase.label)


def _boundaries(ax, run: Sequence[Phase], attr: str) -> None:
    """Dotted lines where each phase after the first starts (on the `start_x`/`start_wall` axis)."""
    for p in run[1:]:
        ax.axvline(getattr(p, attr), color="0.5" if p.kind == "adam" else "k", ls=":", lw=0.9)

