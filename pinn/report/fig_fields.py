"""Figures of the solution and its error (`_fig_*(data, path, dpi, title) -> caption`): snapshots
over x of a time-first grid, error maps over (t, x) or (x, y), a steady problem's curves or maps
over its tensor grid, and the pointwise error at scattered points. One panel (or row) per field."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from pinn.report import canvas
from pinn.report.canvas import (
    _error_cmap, _field_image, _field_label, _figure, _for_log_scale, _positive, error_norm,
    snapshot_indices,
)
from pinn.report.inputs import _Grid, _Points


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
    canvas._save(fig, path, dpi)
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
    canvas._save(fig, path, dpi)
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
        canvas._save(fig, path, dpi)
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
    canvas._save(fig, path, dpi)
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
    canvas._save(fig, path, dpi)
    where = pts.columns[0] if len(pts.axes) == 1 else f"({pts.columns[0]}, {pts.columns[1]})"
    return (f"|prediction − reference| over {where}, one panel per field ({names})"
            + ("; log colour scale per field." if len(pts.axes) == 2 else ", log scale."))



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
        canvas._save(fig, path, dpi)
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
    canvas._save(fig, path, dpi)
    if several:
        scale = "log colour scale per field (" + ", ".join(
            f"{name}: {dec} decades below the maximum {vmax:.2e}" for name, dec, vmax in spans) + ")"
    else:
        scale = (f"log colour scale over {spans[0][1]} decades below the maximum "
                 f"{spans[0][2]:.2e}")
    return (f"|prediction − reference| at the reference's {n} scattered points, drawn over "
            f"{planes}{' (projected)' if d > 2 else ''}, largest errors on top; {scale}."
            + per_field)
