"""Tests for `pinn.report`: report.md + figures from synthetic pipeline outputs, missing inputs,
2D problems, and the atomic swap of the report directory."""

from __future__ import annotations

import json
import re
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


def params(problem: str = "allen_cahn_1d", **report_cfg):
    return validate_params({
        "problem": {"name": problem},
        "multilevel": {"num_levels": 2, "levels": LEVELS},
        "report": {"title": "Synthetic run", "dpi": DPI, **report_cfg},
    })


def write_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def history(level: str, first_step: int, steps: int, wall: float, sampler: bool) -> pd.DataFrame:
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
        "weight_ic": np.linspace(10, 3, n),
        "steps_per_s": np.full(n, 50.0),
        "wall_s": np.linspace(wall / n, wall, n),
        "rel_l2": np.geomspace(0.5, 1e-2, n),
    })
    if sampler:
        df["p"] = np.linspace(0, 0.2, n)
        df["bank_share"] = np.linspace(0, 0.15, n)
        df["bank_size"] = np.full(n, 1024)
    return df


def make_run(root: Path, *, two_d: bool = False, refine: bool = True, samples: bool = True,
             comparison: bool = True, errors: bool = True) -> dict:
    """Synthetic pipeline outputs under `root`; returns the known numbers."""
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
        history(level, first, steps, wall, sampler=True).to_csv(path, index=False)
        if samples:
            rng = np.random.default_rng(0)
            pts = rng.uniform([0, -1] + ([0] if two_d else []), 1.0, (256, 3 if two_d else 2))
            write_npz(root / "data/train" / level / "samples.npz", points=pts,
                      weights=np.ones(256))
    if refine:
        path = root / "data/refine/history.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        it = np.arange(0, 501, 100)
        pd.DataFrame({"iteration": it, "loss": np.geomspace(1e-3, 1e-6, len(it)),
                      "rel_l2": np.geomspace(1e-2, 1e-3, len(it)),
                      "wall_s": np.linspace(0, 5.0, len(it)), "method": "lbfgs"}
                     ).to_csv(path, index=False)
    if comparison:
        rows = [
            {"problem": metrics["problem"], "variant": "hard_bank", "rel_l2": 2e-3, "steps": 3000,
             "wall_s": 30.0, "budget": "equal_steps"},
            {"problem": metrics["problem"], "variant": "baseline", "rel_l2": 8e-3, "steps": 3000,
             "wall_s": 25.0, "budget": "equal_steps"},
            {"problem": metrics["problem"], "variant": "baseline", "rel_l2": 7e-3, "steps": 3600,
             "wall_s": 30.0, "budget": "equal_wall"},
            {"problem": "burgers_1d", "variant": "other_problem_variant", "rel_l2": 1e-1,
             "steps": 10, "wall_s": 1.0, "budget": "equal_steps"},
        ]
        (root / "benchmarks/results").mkdir(parents=True, exist_ok=True)
        (root / "benchmarks/results/run.json").write_text(json.dumps({"comparison": rows}))
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
    assert summary_value(md, "total steps") == "3000"
    assert summary_value(md, "total wall time") == "35.0 s"  # 10 + 20 (levels) + 5 (refine)
    assert summary_value(md, "refine method") == "lbfgs"
    assert summary_value(md, "problem") == "allen_cahn_1d"
    assert "| final_loss | 1.500e-05 |" in md

    pngs = referenced_pngs(path)
    assert {p.name for p in pngs} == {
        "snapshots.png", "error_map.png", "convergence.png", "loss_weights.png",
        "sampling_density.png", "sampler_stats.png", "comparison.png"}
    for p in pngs:
        assert_valid_png(p)
    # nothing else is left in the report directory
    assert {p.name for p in path.parent.iterdir()} == {p.name for p in pngs} | {"report.md"}
    # dpi is honoured: the convergence figure is 2 panels of 5.0 x 3.6 inches
    img = assert_valid_png(path.parent / "convergence.png")
    assert img.shape[:2] == (round(3.6 * DPI), round(10.0 * DPI))
    assert "Not available" not in md.split("## Sampling")[0]


def test_comparison_table_only_current_problem(full_1d):
    md = full_1d[2].read_text()
    section = md.split("## Compute-normalised comparison of variants")[1]
    rows = [line for line in section.splitlines() if line.startswith("| equal")]
    assert [r.split(" | ")[1] for r in rows] == ["hard_bank", "baseline", "baseline"]
    assert rows[0].split(" | ")[0] == "| equal steps"  # sorted by budget, then by rel L2
    assert "2.000e-03" in rows[0] and "8.000e-03" in rows[1] and "7.000e-03" in rows[2]
    assert "other_problem_variant" not in md


def test_missing_inputs_are_noted(tmp_path):
    make_run(tmp_path, refine=False, samples=False, comparison=False, errors=False)
    path = report.stage_report(params(), tmp_path)
    md = path.read_text()
    assert "`data/refine/history.csv` not found" in md
    assert "`data/train/level0/samples.npz` not found" in md
    assert "`data/train/level1/samples.npz` not found" in md
    assert "`data/evaluate/errors.npz` not found" in md
    assert "no `comparison` rows for `allen_cahn_1d`" in md
    names = {p.name for p in referenced_pngs(path)}
    assert names == {"convergence.png", "loss_weights.png", "sampler_stats.png"}
    for p in referenced_pngs(path):
        assert_valid_png(p)
    # no refine history: the refine method comes from params, the wall time from the levels only
    assert summary_value(md, "refine method") == "lbfgs"
    assert summary_value(md, "total wall time") == "30.0 s"


def test_missing_everything_still_reports(tmp_path):
    path = report.stage_report(params(), tmp_path)
    md = path.read_text()
    assert summary_value(md, "rel L2 error") == "n/a"
    assert "`metrics.json` not found" in md
    assert "`data/train/level0/history.csv` not found" in md
    assert referenced_pngs(path) == []


def test_convergence_series_offsets_refine_after_last_adam_step():
    h0 = history("level0", 0, 1000, 1.0, sampler=False)
    h1 = history("level1", 1000, 2000, 1.0, sampler=False)
    refine = pd.DataFrame({"iteration": [0, 50, 100], "loss": [1e-3, 1e-4, 1e-5],
                           "rel_l2": [1e-2, 5e-3, 1e-3], "wall_s": [0, 1, 2], "method": "bfgs"})
    s = report.convergence_series({"level0": h0, "level1": h1}, refine)
    assert list(s) == ["level0", "level1", "refine"]
    np.testing.assert_array_equal(s["refine"]["x"], [3000, 3050, 3100])
    np.testing.assert_array_equal(s["level1"]["x"], h1["step"].to_numpy())
    np.testing.assert_allclose(s["refine"]["loss"], [1e-3, 1e-4, 1e-5])


def test_sampler_stat_columns():
    h = history("level0", 0, 300, 1.0, sampler=True)
    h["causal_min_weight"] = 0.5
    h["loss_bc"] = 1.0
    h["weight_bc"] = 1.0
    assert report.sampler_stat_columns({"level0": h}) == ["p", "bank_share", "bank_size"]
    assert report.sampler_stat_columns({"level0": history("level0", 0, 300, 1.0, False)}) == []


def test_snapshot_indices_nearest_and_deduplicated():
    t = np.linspace(0, 1, 11)
    assert report.snapshot_indices(t, [0.0, 0.21, 0.24, 1.0, 7.0]) == [0, 2, 10]


def test_fmt():
    assert report.fmt(1.23456e-3) == "1.235e-03"
    assert report.fmt(3000) == "3000"
    assert report.fmt(float("nan")) == "n/a"
    assert report.fmt(None) == "n/a"


def test_report_2d(tmp_path):
    known = make_run(tmp_path, two_d=True, refine=False, comparison=False)
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
    make_run(tmp_path, comparison=False)
    write_npz(tmp_path / "data/evaluate/errors.npz", prediction=np.zeros((3, 4)),
              error=np.zeros((3, 4)), t=np.linspace(0, 1, 3), x=np.linspace(-1, 1, 4))
    with pytest.raises(UserError, match="does not match the reference"):
        report.stage_report(params(), tmp_path)
