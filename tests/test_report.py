"""Tests for `pinn.report`: report.md + figures from synthetic pipeline outputs, missing inputs,
2D problems, the atomic swap of the report directory, and what the report must not do (mix the
Adam and refinement losses, draw the refinement at a guessed step, draw constant panels, read
anything but this run's outputs, be private to its owner)."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from pinn import report
from pinn.config import validate_params
from pinn.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DPI = 40
LEVELS = {"level0": {"steps": 1000, "init_from": "init"},
          "level1": {"steps": 2000, "init_from": "level0"}}


def params(problem: str = "allen_cahn_1d", sampling: str = "hard_bank", **report_cfg):
    return validate_params({
        "problem": {"name": problem},
        "sampling": {"method": sampling},
        "multilevel": {"num_levels": 2, "levels": LEVELS},
        "report": {"title": "Synthetic run", "dpi": DPI, **report_cfg},
    })


def write_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def history(level: str, first_step: int, steps: int, wall: float, sampler: bool,
            balancer: bool = True, lr_scale: float | np.ndarray = 1.0, ntk: bool = False
            ) -> pd.DataFrame:
    level_step = np.arange(100, steps + 1, 100)
    n = len(level_step)
    df = pd.DataFrame({
        "level": level,
        "step": first_step + level_step,
        "level_step": level_step,
        "loss": np.geomspace(1.0, 1e-3, n),
        "grad_norm": np.linspace(1, 0.1, n),
        "loss_pde": np.geomspace(0.5, 1e-4, n),
        "loss_ic": np.geomspace(0.5, 1e-4, n),
        "weight_pde": np.ones(n),
        "weight_ic": np.linspace(10, 3, n) if balancer else np.full(n, 10.0),
        "steps_per_s": np.full(n, 50.0),
        "wall_s": np.linspace(wall / n, wall, n),
        "lr_scale": lr_scale,
        "rel_l2": np.geomspace(0.5, 1e-2, n),
    })
    if sampler:
        df["p"] = np.linspace(0, 0.2, n)
        df["bank_share"] = np.linspace(0, 0.15, n)
        df["bank_size"] = np.full(n, 1024)
    if ntk:
        every = np.where(level_step % 500 == 0, 1.0, np.nan)  # computed every 500 steps
        df["ntk_pde"] = every * np.geomspace(1e3, 1e5, n)
        df["ntk_ic"] = every * np.geomspace(1e1, 1e2, n)
    return df


def refine_history(iterations: int = 500, block: int = 100) -> pd.DataFrame:
    """Like the refine stage's: one row per block, the first at the end of the first block."""
    it = np.arange(block, iterations + 1, block)
    return pd.DataFrame({"iteration": it, "loss": np.geomspace(1e-5, 1e-9, len(it)),
                         "rel_l2": np.geomspace(1e-2, 1e-4, len(it)),
                         "wall_s": np.linspace(1.0, 5.0, len(it)), "method": "lbfgs"})


def make_run(root: Path, *, two_d: bool = False, refine: bool = True, samples: bool = True,
             errors: bool = True, sampler: bool = True, balancer: bool = True,
             ntk: bool = False) -> dict:
    """Synthetic pipeline outputs under `root` (the default layout); returns the known numbers."""
    t = np.linspace(0.0, 1.0, 5 if two_d else 11)
    x = np.linspace(-1.0, 1.0, 17 if two_d else 33)
    y = np.linspace(0.0, 1.0, 9) if two_d else None
    if two_d:
        T, X, Y = np.meshgrid(t, x, y, indexing="ij")
        u = np.cos(T) * np.sin(np.pi * X) * np.cos(np.pi * Y)
        err = 1e-3 * np.sin(3 * X + T) * (1 + Y)
    else:
        T, X = np.meshgrid(t, x, indexing="ij")
        u = np.cos(T) * np.sin(np.pi * X)
        err = 2e-3 * np.sin(3 * X + T)
    pred = u + err
    rel = float(np.linalg.norm(err) / np.linalg.norm(u))
    axes = {"t": t, "x": x, **({"y": y} if two_d else {})}
    write_npz(root / "data/reference.npz", u=u, est_rel_error=np.array(3e-9), **axes)
    if errors:
        write_npz(root / "data/evaluate/errors.npz", prediction=pred, error=err, **axes)
    metrics = {"problem": "allen_cahn_2d" if two_d else "allen_cahn_1d", "rel_l2": rel,
               "max_abs": float(np.abs(err).max()), "reference_est_rel_error": 3e-9,
               "final_loss": 1.5e-5}
    (root / "metrics.json").write_text(json.dumps(metrics))
    for level, first, steps, wall in (("level0", 0, 1000, 10.0), ("level1", 1000, 2000, 20.0)):
        path = root / "data/train" / level / "history.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        history(level, first, steps, wall, sampler=sampler, balancer=balancer,
                ntk=ntk).to_csv(path, index=False)
        if samples:
            rng = np.random.default_rng(0)
            pts = rng.uniform([0, -1] + ([0] if two_d else []), 1.0, (256, 3 if two_d else 2))
            write_npz(root / "data/train" / level / "samples.npz", points=pts,
                      weights=np.ones(256))
    if refine:
        path = root / "data/refine/history.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        refine_history().to_csv(path, index=False)
    return {"rel_l2": rel, "max_abs": metrics["max_abs"]}


def referenced_pngs(md_path: Path) -> list[Path]:
    names = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md_path.read_text())
    return [md_path.parent / n for n in names]


def assert_valid_png(path: Path) -> np.ndarray:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4) and img.shape[0] > 10 and img.shape[1] > 10
    return img


def summary_value(md: str, quantity: str) -> str:
    m = re.search(rf"^\| {re.escape(quantity)} \| (.*) \|$", md, flags=re.M)
    assert m, f"no summary row {quantity!r}"
    return m.group(1)


def plot_axes(fig) -> list:
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


def colorbar_axes(fig) -> list:
    return [ax for ax in fig.axes if hasattr(ax, "_colorbar")]


# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_1d(tmp_path_factory):
    """One full 1D run (every input present) and its report, shared by the tests that read it."""
    root = tmp_path_factory.mktemp("full_1d")
    known = make_run(root)
    return root, known, report.stage_report(params(), root)


def test_full_report_1d(full_1d):
    tmp_path, known, path = full_1d
    assert path == tmp_path / "report" / "report.md"
    md = path.read_text()
    assert md.startswith("# Synthetic run\n")
    assert summary_value(md, "rel L2 error") == f"{known['rel_l2']:.3e}"
    assert summary_value(md, "max abs error") == f"{known['max_abs']:.3e}"
    assert summary_value(md, "reference est. rel. error") == "3.000e-09"
    assert summary_value(md, "Adam steps") == "3000"
    assert summary_value(md, "refinement iterations") == "500"
    assert summary_value(md, "total steps + iterations") == "3500"
    assert summary_value(md, "total wall time") == "35.0 s"  # 10 + 20 (levels) + 5 (refine)
    assert summary_value(md, "refine method") == "lbfgs"
    assert summary_value(md, "problem") == "allen_cahn_1d"
    assert "| final_loss | 1.500e-05 |" in md
    assert "| refinement (lbfgs) | 500 | 1.000e-09 | 1.000e-04 | 5.0 s | 100.0 |" in md

    pngs = referenced_pngs(path)
    assert {p.name for p in pngs} == {
        "snapshots.png", "error_map.png", "convergence.png", "error_vs_time.png",
        "loss_weights.png", "sampling_density.png", "sampler_stats.png"}
    for p in pngs:
        assert_valid_png(p)
    # nothing else is left in the report directory
    assert {p.name for p in path.parent.iterdir()} == {p.name for p in pngs} | {"report.md"}
    # dpi is honoured: the convergence figure has 3 panels (Adam loss, refinement loss, rel L2)
    img = assert_valid_png(path.parent / "convergence.png")
    assert img.shape[:2] == (round(3.6 * DPI), round(3 * 4.6 * DPI))
    assert "Not available" not in md
    # the constant sampler statistic is stated, not drawn
    assert "Constant throughout: `bank_size` = 1024." in md


def test_no_comparison_and_only_this_runs_inputs(tmp_path):
    """The report shows this run only: benchmark results next to it are not read or mentioned."""
    make_run(tmp_path)
    (tmp_path / "benchmarks/results").mkdir(parents=True)
    (tmp_path / "benchmarks/results/run.json").write_text(json.dumps({"comparison": [
        {"problem": "allen_cahn_1d", "variant": "hard_bank", "rel_l2": 2e-3, "steps": 3000,
         "wall_s": 30.0, "budget": "equal_steps"}]}))
    md = report.stage_report(params(), tmp_path).read_text()
    assert "comparison" not in md.lower() and "variant" not in md and "hard_bank |" not in md
    assert "benchmarks" not in md
    assert not hasattr(report.ReportInputs, "benchmark_results")
    assert "benchmark_results" not in report.ReportInputs.__dataclass_fields__


def test_build_report_takes_explicit_paths(tmp_path, monkeypatch):
    """The stage entry: every input path given explicitly, nothing read from fixed locations."""
    src = tmp_path / "elsewhere"
    make_run(src)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "rep"
    path = report.build_report(
        params(), reference=src / "data/reference.npz", errors=src / "data/evaluate/errors.npz",
        metrics=src / "metrics.json", train_dir=src / "data/train",
        refine_history=src / "data/refine/history.csv", out=out)
    assert path == out / "report.md"
    md = path.read_text()
    assert summary_value(md, "Adam steps") == "3000"
    assert "Not available" not in md
    # a missing input is named by the path given, relative to the working directory
    path = report.build_report(
        params(), reference=src / "data/reference.npz", errors=src / "nope.npz",
        metrics=src / "metrics.json", train_dir=src / "data/train",
        refine_history=src / "data/refine/history.csv", out=out)
    assert "`elsewhere/nope.npz` not found" in path.read_text()


def test_missing_inputs_are_noted(tmp_path):
    make_run(tmp_path, refine=False, samples=False, errors=False)
    path = report.stage_report(params(), tmp_path)
    md = path.read_text()
    assert "`data/refine/history.csv` not found" in md
    assert "`data/train/level0/samples.npz` not found" in md
    assert "`data/train/level1/samples.npz` not found" in md
    assert "`data/evaluate/errors.npz` not found" in md
    names = {p.name for p in referenced_pngs(path)}
    assert names == {"convergence.png", "error_vs_time.png", "loss_weights.png",
                     "sampler_stats.png"}
    for p in referenced_pngs(path):
        assert_valid_png(p)
    # no refine history: the refine method comes from params, the wall time from the levels only
    assert summary_value(md, "refine method") == "lbfgs"
    assert summary_value(md, "refinement iterations") == "n/a"
    assert summary_value(md, "total wall time") == "30.0 s"


def test_missing_everything_still_reports(tmp_path):
    path = report.stage_report(params(), tmp_path)
    md = path.read_text()
    assert summary_value(md, "rel L2 error") == "n/a"
    assert summary_value(md, "Adam steps") == "n/a"
    assert "`metrics.json` not found" in md
    assert "`data/train/level0/history.csv` not found" in md
    assert referenced_pngs(path) == []


def test_refinement_starts_at_the_adam_steps_actually_taken(figures, tmp_path):
    """Level 0 left early (hybrid switch) after 600 of its 1000 steps: the refinement starts at
    600 + 2000, not at the configured 3000 and not at its first logged row."""
    h0 = history("level0", 0, 600, 6.0, sampler=False)
    h1 = history("level1", 1000, 2000, 20.0, sampler=False)  # global steps offset by the config
    run = report.phases({"level0": h0, "level1": h1}, refine_history(500, 250))
    assert [p.name for p in run] == ["level0", "level1", "refine"]
    assert report.adam_steps(run) == 2600
    np.testing.assert_array_equal(run[1].x, 600 + h1["level_step"].to_numpy())
    np.testing.assert_array_equal(run[2].x, [2850, 3100])
    assert (run[1].start_x, run[2].start_x) == (600, 2600)
    # wall clock: each phase offset by the previous phases' last wall_s
    np.testing.assert_allclose(run[1].wall, 6.0 + h1["wall_s"].to_numpy())
    np.testing.assert_allclose(run[2].wall, 26.0 + np.array([1.0, 5.0]))

    for level, df in (("level0", h0), ("level1", h1)):
        (tmp_path / "data/train" / level).mkdir(parents=True)
        df.to_csv(tmp_path / "data/train" / level / "history.csv", index=False)
    (tmp_path / "data/refine").mkdir(parents=True)
    refine_history(500, 250).to_csv(tmp_path / "data/refine/history.csv", index=False)
    md = report.stage_report(params(), tmp_path).read_text()
    assert summary_value(md, "Adam steps") == "2600"
    assert summary_value(md, "refinement iterations") == "500"
    fig = figures["convergence.png"]
    error_ax = next(ax for ax in fig.axes if ax.get_ylabel() == "relative L2 error")
    dashed = [line.get_xdata()[0] for line in error_ax.get_lines() if line.get_linestyle() == "--"]
    assert dashed == [2600]


def test_adam_and_refinement_losses_are_on_separate_axes(figures, full_1d, tmp_path):
    make_run(tmp_path)
    report.stage_report(params(), tmp_path)
    fig = figures["convergence.png"]
    by_label = {ax.get_ylabel(): ax for ax in plot_axes(fig)}
    adam = by_label["Adam loss (weighted, minibatch)"]
    refine = by_label["refinement loss (full set)"]
    assert adam is not refine
    adam_values = np.concatenate([line.get_ydata() for line in adam.get_lines()
                                  if len(line.get_ydata()) > 2])
    refine_values = np.concatenate([line.get_ydata() for line in refine.get_lines()])
    assert np.nanmin(adam_values) == pytest.approx(1e-3)  # the Adam histories' losses only
    np.testing.assert_allclose(refine_values, refine_history()["loss"])
    assert refine.get_xlabel() == "refinement iteration"


def test_error_vs_wall_clock(figures, tmp_path):
    make_run(tmp_path)
    report.stage_report(params(), tmp_path)
    ax = plot_axes(figures["error_vs_time.png"])[0]
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"level0", "level1", "refinement"}
    np.testing.assert_allclose(lines["level1"].get_xdata()[[0, -1]], [10 + 20 / 20, 30.0])
    np.testing.assert_allclose(lines["refinement"].get_xdata(), 30.0 + np.linspace(1, 5, 5))
    np.testing.assert_allclose(lines["refinement"].get_ydata(), refine_history()["rel_l2"])
    assert "wall-clock" in ax.get_xlabel() and ax.get_ylabel() == "relative L2 error"


def test_every_axis_and_colour_bar_is_labelled(figures, tmp_path):
    make_run(tmp_path, ntk=True)
    report.stage_report(params(), tmp_path)
    make_run(tmp_path / "2d", two_d=True)
    report.stage_report(params("allen_cahn_2d", snapshot_times=[0.0, 1.0]), tmp_path / "2d")
    assert {"snapshots.png", "error_map.png", "convergence.png", "error_vs_time.png",
            "loss_weights.png", "sampling_density.png", "sampler_stats.png"} <= set(figures)
    for name, fig in figures.items():
        for ax in plot_axes(fig):
            assert ax.get_xlabel() and ax.get_ylabel(), (name, ax.get_title())
        for ax in colorbar_axes(fig):
            assert ax.get_ylabel() or ax.get_xlabel(), f"{name}: unlabelled colour bar"
    assert len(colorbar_axes(figures["error_map.png"])) == 1


def test_constant_panels_are_left_out(figures, tmp_path):
    """Uniform sampler, fixed weights, lr_scale ≡ 1: no sampler-statistics, weights or density
    figure and no lr_scale panel; the constants are stated instead."""
    make_run(tmp_path, sampler=False, balancer=False)
    path = report.stage_report(params(sampling="uniform"), tmp_path)
    md = path.read_text()
    names = {p.name for p in referenced_pngs(path)}
    assert names == {"snapshots.png", "error_map.png", "convergence.png", "error_vs_time.png"}
    assert not {"sampler_stats.png", "loss_weights.png", "sampling_density.png"} & set(figures)
    assert "*Constant loss weights: pde = 1, ic = 10 throughout; no figure.*" in md
    assert "*Uniform sampling: the batch density is flat by construction; not drawn.*" in md
    assert "lr_scale" not in md
    assert len(plot_axes(figures["convergence.png"])) == 3

    # a divergence retry lowered the learning rate: now the lr_scale panel carries information
    h = history("level1", 1000, 2000, 20.0, sampler=False, balancer=False,
                lr_scale=np.r_[np.ones(10), np.full(10, 0.5)])
    h.to_csv(tmp_path / "data/train/level1/history.csv", index=False)
    report.stage_report(params(sampling="uniform"), tmp_path)
    labels = [ax.get_ylabel() for ax in plot_axes(figures["convergence.png"])]
    assert labels[-1] == "learning-rate scale" and len(labels) == 4


def test_ntk_traces_are_plotted_next_to_the_weights(figures, tmp_path):
    make_run(tmp_path, balancer=False, ntk=True)
    path = report.stage_report(params(), tmp_path)
    md = path.read_text()
    assert "loss_weights.png" in {p.name for p in referenced_pngs(path)}
    axes = plot_axes(figures["loss_weights.png"])
    assert [ax.get_title() for ax in axes] == ["empirical NTK per loss term"]  # weights constant
    lines = {line.get_label(): line for line in axes[0].get_lines()
             if not line.get_label().startswith("_")}
    assert set(lines) == {"pde", "ic"}
    np.testing.assert_array_equal(lines["pde"].get_xdata(), [500, 1000])  # finite rows only
    assert "Constant loss weights: pde = 1, ic = 10." in md
    # NTK columns are not sampler statistics
    assert report.sampler_stat_columns({"l": history("l", 0, 300, 1.0, False, ntk=True)}) == []


def test_report_directory_is_readable_by_others(tmp_path):
    make_run(tmp_path)
    old = os.umask(0o022)
    try:
        path = report.stage_report(params(), tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    for f in path.parent.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_error_map_shows_the_error_where_it_is(figures, tmp_path):
    """A fine grid (more points than pixels), a localised error and rounding-level noise: each value
    fills its own cell, the log scale spans a bounded number of decades (noise does not stretch it
    to 1e-16), and the brightest pixel of the PNG is where the error is."""
    t = np.linspace(0.0, 1.0, 201)
    x = np.linspace(-1.0, 1.0, 512, endpoint=False)
    T, X = np.meshgrid(t, x, indexing="ij")
    u = np.cos(np.pi * X) * np.exp(-T)
    err = 1e-3 * np.exp(-((T - 0.75) ** 2 + (X + 0.5) ** 2) / 0.01) + 1e-16 * np.cos(40 * X)
    err[0] = 0.0  # the initial condition is exact
    write_npz(tmp_path / "data/reference.npz", u=u, t=t, x=x, est_rel_error=np.array(1e-9))
    write_npz(tmp_path / "data/evaluate/errors.npz", prediction=u + err, error=err, t=t, x=x)
    path = report.stage_report(params(dpi=60), tmp_path)
    fig = figures["error_map.png"]
    ax = plot_axes(fig)[0]
    image = ax.get_images()[0]
    dt, dx = t[1] - t[0], x[1] - x[0]
    np.testing.assert_allclose(image.get_extent(), [-dt / 2, 1 + dt / 2, -1 - dx / 2, 1 - dx / 2])
    norm = image.norm
    assert norm.vmax == pytest.approx(np.abs(err).max())
    assert norm.vmin == pytest.approx(norm.vmax * 10.0 ** -report.ERROR_DECADES)
    assert "|prediction − reference|" in colorbar_axes(fig)[0].get_ylabel()

    png = mpimg.imread(path.parent / "error_map.png")[..., :3]
    brightness = png.sum(axis=2)
    scale = 60 / fig.dpi  # saved at dpi 60
    (x0, y0), (x1, y1) = ax.get_window_extent().get_points() * scale
    h = png.shape[0]
    inside = brightness[int(h - y1) + 2:int(h - y0) - 2, int(x0) + 2:int(x1) - 2]
    row, col = np.unravel_index(np.argmax(inside), inside.shape)
    t_at = -dt / 2 + (1 + dt) * (col + 0.5) / inside.shape[1]
    x_at = (1 - dx / 2) - (2.0) * (row + 0.5) / inside.shape[0]
    assert t_at == pytest.approx(0.75, abs=0.05) and x_at == pytest.approx(-0.5, abs=0.05)


def test_sampler_stat_columns():
    h = history("level0", 0, 300, 1.0, sampler=True)
    h["causal_min_weight"] = 0.5
    h["loss_bc"] = 1.0
    h["weight_bc"] = 1.0
    assert report.sampler_stat_columns({"level0": h}) == ["p", "bank_share", "bank_size"]
    assert report.sampler_stat_columns({"level0": history("level0", 0, 300, 1.0, False)}) == []


def test_is_constant():
    assert report.is_constant(np.array([1.0, 1.0, np.nan]))
    assert report.is_constant(np.array([np.nan]))
    assert not report.is_constant(np.array([1.0, 0.5]))


def test_snapshot_indices_nearest_and_deduplicated():
    t = np.linspace(0, 1, 11)
    assert report.snapshot_indices(t, [0.0, 0.21, 0.24, 1.0, 7.0]) == [0, 2, 10]
    # fractions of the time range: on t in [0, 5] (Heat 2d-MS), 0.5 is t = 2.5 and 1 is t = 5
    assert report.snapshot_indices(np.linspace(0, 5, 21), [0.0, 0.5, 1.0]) == [0, 10, 20]


def test_fmt():
    assert report.fmt(1.23456e-3) == "1.235e-03"
    assert report.fmt(3000) == "3000"
    assert report.fmt(float("nan")) == "n/a"
    assert report.fmt(None) == "n/a"


def test_report_2d(tmp_path):
    known = make_run(tmp_path, two_d=True, refine=False)
    cfg = params("allen_cahn_2d", snapshot_times=[0.0, 0.5, 1.0])
    path = report.stage_report(cfg, tmp_path)
    md = path.read_text()
    assert summary_value(md, "rel L2 error") == f"{known['rel_l2']:.3e}"
    pngs = referenced_pngs(path)
    assert {"snapshots.png", "error_map.png", "sampling_density.png"} <= {p.name for p in pngs}
    for p in pngs:
        assert_valid_png(p)
    # one row (reference / prediction / |error|) per selected time: 3 rows of 2.6 in, 3 x 3.0 in
    img = assert_valid_png(path.parent / "snapshots.png")
    assert img.shape[:2] == (round(3 * 2.6 * DPI), round(3 * 3.0 * DPI))
    img = assert_valid_png(path.parent / "error_map.png")
    assert img.shape[:2] == (round(2.8 * DPI), round(3 * 3.0 * DPI))


def test_report_replaces_old_report_atomically(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"problem": "allen_cahn_1d", "rel_l2": 0.5}))
    old = tmp_path / "report"
    old.mkdir()
    (old / "stale.png").write_bytes(b"old")
    (old / "report.md").write_text("old report")
    report.stage_report(params(), tmp_path)
    assert not (old / "stale.png").exists()
    assert summary_value((old / "report.md").read_text(), "rel L2 error") == "5.000e-01"
    good = (old / "report.md").read_text()

    # a failing build (corrupt input) leaves the previous report untouched and no temp dirs
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match="metrics.json"):
        report.stage_report(params(), tmp_path)
    assert (old / "report.md").read_text() == good
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == []


def test_mismatched_error_shape_is_a_user_error(tmp_path):
    make_run(tmp_path)
    write_npz(tmp_path / "data/evaluate/errors.npz", prediction=np.zeros((3, 4)),
              error=np.zeros((3, 4)), t=np.linspace(0, 1, 3), x=np.linspace(-1, 1, 4))
    with pytest.raises(UserError, match="does not match the reference"):
        report.stage_report(params(), tmp_path)


@pytest.mark.parametrize("limited", [True, False])
def test_accuracy_limited_by_the_reference_is_marked(tmp_path, limited):
    """evaluate flags `reference_limited` when the reference's own error is above
    `reference.warn_above`: the report then marks every accuracy figure, and only then."""
    make_run(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics.update(reference_limited=limited, reference_est_rel_error=0.15)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    md = report.stage_report(params(), tmp_path).read_text()
    marked = "limited by the reference" in summary_value(md, "rel L2 error")
    assert marked == limited and ("limited by the reference" in summary_value(md, "max abs error")) == limited
    assert ("Accuracy limited by the reference" in md) == limited
    assert "reference_limited" not in md  # (not repeated as an "other metric")


def test_time_windows_get_a_row_each_not_a_field_row(tmp_path):
    """Time-marching (pinn.windows): evaluate's rel_l2_window<k> are listed as windows, the
    headline marked as stitched; they are not mistaken for the fields of a system."""
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"rel_l2": 0.03, "max_abs": 0.1, "rel_l2_window0": 0.01, "rel_l2_window1": 0.05,
         "problem": "allen_cahn_1d"}))
    md = report.stage_report(params(), tmp_path).read_text()
    assert summary_value(md, "rel L2 error") == "3.000e-02 (stitched, 2 time windows)"
    assert summary_value(md, "rel L2 error, time window 0 (its times only)") == "1.000e-02"
    assert summary_value(md, "rel L2 error, time window 1 (its times only)") == "5.000e-02"
    assert "field window" not in md and "rel_l2_window" not in md


def windowed_params(**model):
    """`params()` with three time-marching windows (window1, window2 after window0)."""
    return validate_params({
        "problem": {"name": "allen_cahn_1d"},
        "sampling": {"method": "hard_bank"},
        "multilevel": {"num_levels": 2, "levels": LEVELS},
        "report": {"title": "Synthetic run", "dpi": DPI},
        "model": model,
        "windows": {"count": 3, "later": {
            "window1": {"after": "window0", "steps": 400, "refine_iterations": 200},
            "window2": {"after": "window1", "steps": 300, "refine_iterations": 0}}},
    })


def make_windowed_run(root: Path) -> None:
    """`make_run` plus the logs of two later windows (window1: Adam then a refinement; window2:
    Adam only, its refine.csv a header) as the window stage writes them, and evaluate's
    per-window errors."""
    make_run(root)
    metrics = json.loads((root / "metrics.json").read_text())
    metrics.update(rel_l2_window0=1e-4, rel_l2_window1=2e-3, rel_l2_window2=3e-2)
    (root / "metrics.json").write_text(json.dumps(metrics))
    for window, steps, wall in (("window1", 400, 8.0), ("window2", 300, 6.0)):
        logs = root / "data/window_logs" / window
        logs.mkdir(parents=True)
        h = history(window, 0, steps, wall, sampler=True)
        h["rel_l2"] = np.geomspace(0.5, 7e-3 if window == "window1" else 3e-2, len(h))
        h.to_csv(logs / "history.csv", index=False)
    r = refine_history(200, 100)
    r["rel_l2"] = [3e-3, 2e-3]
    r.to_csv(root / "data/window_logs/window1/refine.csv", index=False)
    (root / "data/window_logs/window2/refine.csv").write_text(
        "iteration,loss,rel_l2,wall_s,method\n")


def phase_row(md: str, phase: str) -> list[str]:
    m = re.search(rf"^\| {re.escape(phase)} \| (.*) \|$", md, flags=re.M)
    assert m, f"no phase row {phase!r}"
    return m.group(1).split(" | ")


def test_the_report_covers_every_time_window(tmp_path, figures):
    """Time-marching windows: every window's phases get a row and a curve, the totals are over
    all windows, and each phase's rel L2 is labelled as its window's slab error."""
    make_windowed_run(tmp_path)
    md = report.stage_report(windowed_params(), tmp_path).read_text()
    over = " (over the 3 time windows)"
    assert summary_value(md, "Adam steps") == "3700" + over  # 1000 + 2000 + 400 + 300
    assert summary_value(md, "refinement iterations") == "700" + over  # 500 + 200 (+ 0)
    assert summary_value(md, "total steps + iterations") == "4400" + over
    assert summary_value(md, "total wall time") == "54.0 s" + over  # 30 + 5 + 8 + 5 + 6
    assert "| phase | steps / iterations | final loss | final rel L2 (its window's slab) |" in md
    assert phase_row(md, "level1 (window0)")[:3] == ["2000", "1.000e-03", "1.000e-02"]
    assert phase_row(md, "refinement (lbfgs, window0)")[:3] == ["500", "1.000e-09", "1.000e-04"]
    assert phase_row(md, "window1 (Adam)")[:3] == ["400", "1.000e-03", "7.000e-03"]
    assert phase_row(md, "window1 refinement (lbfgs)")[:3] == ["200", "1.000e-09", "2.000e-03"]
    assert phase_row(md, "window2 (Adam)")[:3] == ["300", "1.000e-03", "3.000e-02"]
    assert "window2 refinement" not in md  # no iterations: no row

    conv = figures["convergence.png"]
    adam_ax, refine_ax, error_ax = plot_axes(conv)[:3]
    labels = [line.get_label() for line in error_ax.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["level0", "level1", "refinement (window0)", "window1",
                      "window1 refinement", "window2"]
    assert "window's slab" in error_ax.get_ylabel()
    # the later windows follow on the step axis: window1 after window 0's 3000 + 500
    window1 = next(line for line in error_ax.get_lines() if line.get_label() == "window1")
    np.testing.assert_array_equal(window1.get_xdata(), 3500 + np.arange(100, 401, 100))
    window2 = next(line for line in error_ax.get_lines() if line.get_label() == "window2")
    assert window2.get_xdata()[0] == 3500 + 400 + 200 + 100
    assert [line.get_label() for line in refine_ax.get_lines()] == [
        "refinement (window0)", "window1 refinement"]
    assert {line.get_label() for line in adam_ax.get_lines()} >= {"window1", "window2"}
    # the wall-clock axis runs on through the windows
    wall = plot_axes(figures["error_vs_time.png"])[0]
    last = next(line for line in wall.get_lines() if line.get_label() == "window2")
    assert last.get_xdata()[-1] == pytest.approx(54.0)


def test_a_missing_window_log_is_noted(tmp_path):
    make_windowed_run(tmp_path)
    (tmp_path / "data/window_logs/window2/history.csv").unlink()
    md = report.stage_report(windowed_params(), tmp_path).read_text()
    assert ("*Not available: `data/window_logs/window2/history.csv` not found; window `window2`'s "
            "Adam phase is not shown.*") in md
    assert summary_value(md, "Adam steps") == "3400 (over the 3 time windows)"


@pytest.mark.parametrize("hard", [True, False])
def test_the_hard_initial_condition_is_stated(tmp_path, hard):
    """`model.hard_initial_condition`: the network imposes u(t0) (u = u0 + (t − t0)·N), so the
    loss has no `ic` term; the summary says so, and only then."""
    make_run(tmp_path)
    cfg = validate_params({
        "problem": {"name": "allen_cahn_1d"}, "sampling": {"method": "hard_bank"},
        "multilevel": {"num_levels": 2, "levels": LEVELS},
        "report": {"title": "Synthetic run", "dpi": DPI},
        "model": {"hard_initial_condition": hard}})
    md = report.stage_report(cfg, tmp_path).read_text()
    if hard:
        row = summary_value(md, "initial condition")
        assert "hard initial condition u = u0 + (t − t0)·N" in row
        assert "no `ic` loss term" in row
    else:
        assert "| initial condition |" not in md and "hard initial" not in md


@pytest.mark.slow
def test_a_windowed_pipeline_run_reports_every_window(tmp_path):
    """The tiny pipeline with two time windows, every stage in-process (the report stage's own
    command from dvc.yaml): the report has window1's phases, the totals include them, and each
    window's rel L2 is evaluate's."""
    import yaml

    from pinn import pipeline

    data = yaml.safe_load((Path(__file__).parents[1] / "benchmarks/regression/params.yaml")
                          .read_text())
    data["multilevel"] = {"num_levels": 1, "coarsening_factor": 0.5, "finest_warmup_steps": 0,
                          "levels": {"level0": {"steps": 10, "init_from": "init"}}}
    data["refine"]["iterations"] = 10
    data["windows"] = {"count": 2, "later": {"window1": {"after": "window0", "steps": 20,
                                                         "refine_iterations": 10}}}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    project = pipeline.make_project(tmp_path / "p", params_file)
    assert "report" in pipeline.run_in_process(project)
    md = (project / "report" / "report.md").read_text()
    metrics = json.loads((project / "metrics.json").read_text())
    over = " (over the 2 time windows)"
    assert summary_value(md, "Adam steps") == "30" + over
    assert summary_value(md, "refinement iterations") == "20" + over
    assert phase_row(md, "level0 (window0)")[0] == "10"
    assert phase_row(md, "window1 (Adam)")[0] == "20"
    assert phase_row(md, "refinement (lbfgs, window0)")[0] == "10"
    # window1's refinement ends where evaluate measures window 1: the same network, its slab
    logged = float(phase_row(md, "window1 refinement (lbfgs)")[2])
    assert logged == pytest.approx(metrics["rel_l2_window1"], rel=1e-3)
    assert summary_value(md, "rel L2 error, time window 1 (its times only)") == \
        f"{metrics['rel_l2_window1']:.3e}"


def test_the_run_settings_are_stated(tmp_path):
    """What was trained, from the params the report stage declares: the seed, every coefficient
    (given or the problem's default), the network and its cascade widths, the points, the
    optimisers; an exact reference's error is called exact, not shown as a bare 0."""
    make_run(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    (tmp_path / "metrics.json").write_text(json.dumps({**metrics, "reference_est_rel_error": 0.0}))
    cfg = validate_params({
        "seed": 7, "problem": {"name": "allen_cahn_1d", "coefficients": {"reaction": 4.0}},
        "model": {"width": 24, "depth": 4, "activation": "sin"},
        "sampling": {"method": "rad", "batch_size": 1000, "rad": {"k": 2.0, "resample_every": 50}},
        "optimizer": {"learning_rate": 5e-4},
        "refine": {"method": "ssbroyden", "iterations": 300, "resample_every_blocks": 2},
        "balancing": {"causal": {"enabled": True, "tolerance": 2.0}},
        "multilevel": {"num_levels": 2, "levels": LEVELS, "finest_warmup_steps": 50},
        "report": {"title": "Synthetic run", "dpi": DPI}})
    md = report.stage_report(cfg, tmp_path).read_text()
    assert summary_value(md, "seed") == "7"
    assert summary_value(md, "coefficients") == "diffusion = 0.0001 (default); reaction = 4"
    assert summary_value(md, "network (finest level)") == (
        "4 hidden layers × 24 (sin), float32; exact periodic embedding in x")
    assert summary_value(md, "cascade levels") == (
        "level0: width 12, 1000 Adam steps; level1: width 24, 2050 Adam steps")
    assert summary_value(md, "sampling").startswith("rad, batch 1000 interior")
    assert "k = 2," in summary_value(md, "sampling") and "every 50 steps" in summary_value(md, "sampling")
    assert summary_value(md, "Adam").startswith("learning rate 0.0005")
    assert summary_value(md, "refinement") == (
        "ssbroyden, 300 iterations in float64, blocks of 100, points redrawn with RAD every 2 blocks")
    assert summary_value(md, "loss balancing") == "fixed; causal weighting in time (tolerance 2, 16 chunks)"
    assert summary_value(md, "reference est. rel. error") == "0.000e+00 (exact solution)"


def test_run_settings_of_an_inverse_problem_and_a_hard_initial_condition():
    """A trained coefficient shows its start and its true value; the observations and the hard
    initial condition are stated."""
    from pinn.report.settings import run_settings

    target = "examples/inverse_burgers/burgers.py:InverseBurgers"
    rows = dict(run_settings(validate_params({
        "problem": {"target": target, "trainable": {"viscosity": 0.05}},
        "model": {"hard_initial_condition": True},
        "refine": {"method": "ssbroyden", "resample_every_blocks": 1}})))
    assert rows["coefficients"].startswith("viscosity: trained from 0.05 (true value 0.00318")
    assert rows["observations"].startswith("2000 points of u (noise std 0")
    assert rows["network (finest level)"].endswith("hard initial condition u = u0 + (t − t0)·N")
    assert rows["refinement"].endswith("points redrawn with RAD after every block")
