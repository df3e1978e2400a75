"""Building the report: `write_report` reads the inputs (`pinn.report.inputs`), writes the
markdown sections (`pinn.report.markdown`) and draws the figures (`pinn.report.fig_fields`,
`pinn.report.fig_training`) into a temporary directory that then replaces the report directory;
`build_report` / `stage_report` take the options from the params (the report stage)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pinn import io
from pinn.config import Params
from pinn.report.canvas import _Skip
from pinn.report.fig_fields import (
    _fig_error_map, _fig_error_points, _fig_snapshots, _fig_steady_error, _fig_steady_solution,
)
from pinn.report.fig_training import (
    _fig_convergence, _fig_error_vs_time, _fig_sample_density, _fig_sampler_stats, _fig_weights,
)
from pinn.report.inputs import (
    ReportInputs, _last_finite, _not_found, _Points, is_constant, load_run, sampler_stat_columns,
)
from pinn.report.markdown import _fmt_const, phase_table, settings_table, summary
from pinn.report.phases import phases
from pinn.report.settings import run_settings

REPORT_DIR = "report"
REPORT_MD = "report.md"


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
    hard_initial_condition: bool = False,
    settings: Sequence[tuple[str, str]] = (),
) -> Path:
    """Build report.md and its PNGs atomically into the directory `out`; return report.md's path.
    `appendix`: markdown lines added at the end (the comparison of techniques, `pinn.comparison`);
    `hard_initial_condition`: the network imposes the initial values (`model.hard_initial_condition`:
    the summary says so, and that the loss has no `ic` term); `settings`: the "Run settings"
    table's `(setting, value)` rows (`pinn.report.settings.run_settings`).

    Everything is written into a temporary sibling directory (created like `mkdir`, so with the
    usual permissions) which then replaces `out` (`pinn.io.atomic_dir`).
    """
    out = Path(out)
    with io.atomic_dir(out) as tmp:
        _build(inputs, tmp, title=title, dpi=dpi, snapshot_times=snapshot_times,
               problem=problem, refine_method=refine_method, refine_precision=refine_precision,
               sampling_method=sampling_method, appendix=appendix,
               hard_initial_condition=hard_initial_condition, settings=settings)
    return out / REPORT_MD


def _build(inputs: ReportInputs, out: Path, *, title: str, dpi: int,
           snapshot_times: Sequence[float], problem: str, refine_method: str,
           refine_precision: str, sampling_method: str | None,
           appendix: Sequence[str] = (), hard_initial_condition: bool = False,
           settings: Sequence[tuple[str, str]] = ()) -> None:
    rep = _Report(out=out)
    md = rep.lines
    data = load_run(inputs)
    grid, histories, samples = data.grid, data.histories, data.samples
    run = phases(histories, data.refine, data.windows)
    if data.refine is not None and "method" in data.refine and len(data.refine):
        refine_method = str(data.refine["method"].iloc[0])

    md += summary(data, run, inputs, title=title, problem=problem, refine_method=refine_method,
                  hard_initial_condition=hard_initial_condition)
    md += settings_table(settings)
    md += phase_table(data, run, inputs, refine_method=refine_method,
                      refine_precision=refine_precision)

    # -- solution and error
    # a tensor grid of one or two columns at the points: a steady problem's exact reference
    steady_grid = isinstance(grid, _Points) and grid.axes is not None
    md += ["## Solution" if steady_grid else "## Solution snapshots", ""]
    md += [n + "\n" for n in data.grid_notes]
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
        refined = any(p.kind == "refine" for p in run)
        refine_label = f"{refine_method}, {refine_precision}" if refined else refine_method
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
                sampling_method=cfg.sampling.method,
                hard_initial_condition=cfg.model.hard_initial_condition,
                settings=run_settings(cfg))


def _later_windows(cfg: Params) -> list[str]:
    """The time-marching windows after the first, in time order (`windows.later`)."""
    return sorted(cfg.windows.later, key=lambda w: int(w[len("window"):]))


def build_report(cfg: Params, *, reference: Path, errors: Path, metrics: Path, train_dir: Path,
                 refine_history: Path, out: Path, studies: Path | None = None,
                 window_logs: Path = Path("data") / "window_logs") -> Path:
    """The report of this run: `out/report.md` + PNGs (the directory `out` is replaced whole).

    `train_dir/<level>/history.csv` and `train_dir/<level>/samples.npz` are read for each level of
    `cfg.multilevel.levels`; any missing input is noted in the report instead of drawn. Paths in
    the report are shown relative to the working directory. `studies`: the directory of committed
    study results; the report ends with the latest one's comparison of techniques on this
    problem (`pinn.comparison`). With time-marching windows (`windows.count` > 1) each later
    window's `window_logs/<window>/history.csv` and `refine.csv` are read too. Returns the path
    of report.md.
    """
    inputs = ReportInputs.of(reference=reference, errors=errors, metrics=metrics,
                             train_dir=train_dir, refine_history=refine_history,
                             levels=list(cfg.multilevel.levels), root=Path.cwd(),
                             window_logs=window_logs, windows=_later_windows(cfg))
    appendix: list[str] = []
    if studies is not None:
        from pinn.comparison import comparison_section

        appendix = comparison_section(studies, cfg.problem.identifier, link_from=out)
    return write_report(inputs, Path(out), appendix=appendix, **_options(cfg))


def stage_report(cfg: Params, root: Path = Path(".")) -> Path:
    """`build_report` on the pipeline's default layout under `root` (report/ under `root`)."""
    root = Path(root)
    inputs = ReportInputs.at(root, list(cfg.multilevel.levels), _later_windows(cfg))
    return write_report(inputs, root / REPORT_DIR, **_options(cfg))
