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
    <window_logs>/<window>/history.csv time-marching windows after the first (`windows.count` > 1):
    <window_logs>/<window>/refine.csv  each window's Adam and refinement logs, columns as above,
                                       rel_l2 on the window's own time slab

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

With time-marching windows the levels and the refinement train window 0; each later window's Adam
phase and refinement follow them in the phase table, on the figures' step and wall-clock axes and
in the totals, and every rel L2 logged while training is labelled as its window's slab error (the
stitched error over the whole time interval is evaluate's `rel_l2`).

The package, by what it does: `inputs` (where the inputs live, reading them), `phases` (the
histories on common axes), `markdown` (formatting, the summary and phase table), `settings` (the run's settings from
the params), `canvas`,
`fig_fields`, `fig_training` (figures), `build` (`write_report`, `build_report`, `stage_report`).
"""

from pinn.report.build import REPORT_DIR, REPORT_MD, build_report, stage_report, write_report
from pinn.report.canvas import ERROR_DECADES, cell_edges, error_norm, snapshot_indices
from pinn.report.inputs import ReportInputs, RunData, is_constant, load_run, sampler_stat_columns
from pinn.report.markdown import HARD_INITIAL, coefficient_table, fmt, fmt_seconds
from pinn.report.phases import Phase, adam_steps, phases

__all__ = [
    "ERROR_DECADES", "HARD_INITIAL", "REPORT_DIR", "REPORT_MD", "Phase", "ReportInputs", "RunData",
    "adam_steps", "build_report", "cell_edges", "coefficient_table", "error_norm", "fmt",
    "fmt_seconds", "is_constant", "load_run", "phases", "sampler_stat_columns",
    "snapshot_indices", "stage_report", "write_report",
]
