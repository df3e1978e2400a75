"""Figures of the training (`_fig_*(run, ..., path, dpi, title) -> caption`, `run` the phases of
`pinn.report.phases`): convergence (Adam loss, refinement loss, rel L2, learning-rate scale), error
vs wall-clock time, loss weights and NTK, the last batch's sampling density, sampler statistics.
A figure with nothing to draw raises `_Skip` with the sentence written in its place."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pinn.report import canvas
from pinn.report.canvas import _boundaries, _figure, _level_colours, _positive, _Skip, _style
from pinn.report.inputs import _last_finite, is_constant
from pinn.report.markdown import _fmt_const
from pinn.report.phases import Phase, refine_start


def _adam_axis(run: Sequence[Phase]) -> str:
    """The label of the step axis of the Adam phases' panels."""
    if any(p.window > 0 for p in run):
        return "step (Adam + refinement, all windows)"
    return "Adam step (all levels)"


def _fig_convergence(run: list[Phase], refine_label: str, path: Path, dpi: int,
                     title: str) -> str:
    """Loss and error panels. With time-marching windows the later windows' phases follow on the
    same step axis (Adam steps and refinement iterations, cumulative), each refinement's loss is
    drawn over its own iterations, and each phase's rel L2 is on its own window's time slab."""
    adam = [p for p in run if p.kind == "adam"]
    refines = [p for p in run if p.kind == "refine"]
    refine = next((p for p in refines if p.window == 0), None)
    windowed = any(p.window > 0 for p in run)
    colours = _level_colours([p.name for p in adam])
    boundary = refine_start(run)
    adam_axis = _adam_axis(run)
    panels: list[Callable] = []
    captions: list[str] = []

    if any(np.isfinite(p.column("loss")).any() for p in adam):
        def adam_panel(ax):
            for p in adam:
                ax.plot(p.x, _positive(p.column("loss")), lw=1.3, **_style(p, colours))
            ax.set_yscale("log")
            ax.set_xlabel(adam_axis)
            ax.set_ylabel("Adam loss (weighted, minibatch)")
            _boundaries(ax, adam, "start_x")
            ax.set_title("Adam phase")
            ax.legend(loc="best", fontsize="small")
        panels.append(adam_panel)
        captions.append("the Adam loss (weighted minibatch loss) per cascade level"
                        + (" and later time window" if windowed else ""))
    if windowed and any(np.isfinite(p.column("loss")).any() for p in refines):
        def windows_refine_panel(ax):
            for p in refines:
                ax.plot(p.column("iteration"), _positive(p.column("loss")), lw=1.3, marker=".",
                        **_style(p, colours))
            ax.set_yscale("log")
            ax.set_xlabel("refinement iteration (each window's)")
            ax.set_ylabel("refinement loss (full set)")
            ax.set_title(refine_label)
            ax.legend(loc="best", fontsize="small")
        panels.append(windows_refine_panel)
        captions.append(f"the refinement loss ({refine_label}) of each window on its own axes")
    elif refine is not None and np.isfinite(refine.column("loss")).any():
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
            ax.set_xlabel("step (Adam + refinement, all windows)" if windowed
                          else "Adam step, then refinement iteration")
            ax.set_ylabel("relative L2 error" + (" (its window's slab)" if windowed else ""))
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
                        "steps taken)" + (
                            "; with time-marching windows each phase's error is against the "
                            "reference on its own window's time slab (the levels and the first "
                            "refinement: window0's), not the stitched error over the whole time "
                            "interval (the summary's)" if windowed else ""))
    if any(not is_constant(p.column("lr_scale")) for p in adam):
        def lr_panel(ax):
            for p in adam:
                ax.plot(p.x, p.column("lr_scale"), lw=1.3, drawstyle="steps-post",
                        **_style(p, colours))
            ax.set_yscale("log")
            ax.set_xlabel(adam_axis)
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
    canvas._save(fig, path, dpi)
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
    canvas._save(fig, path, dpi)
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
        ax.set_xlabel(_adam_axis(run))
        _boundaries(ax, adam, "start_x")
        ax.grid(True, which="major", alpha=0.3)
    canvas._save(fig, path, dpi)
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
    canvas._save(fig, path, dpi)
    over = f"({names[0]}, {names[1]})" if dims > 1 else names[0]
    rest = ""
    if dims == 3:
        rest = f"; marginal over {names[2]}"
    elif dims > 3:
        rest = "; marginal over the other columns"
    return (f"Density of the last training batch of each level over {over} (weighted by the "
            "points' loss weights" + rest + ").")



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
        ax.set_xlabel(_adam_axis(run))
        ax.set_ylabel(col)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].legend(loc="best", fontsize="small")
    canvas._save(fig, path, dpi)
    return "Sampler statistics vs Adam step: " + ", ".join(f"`{c}`" for c in columns) + "."

