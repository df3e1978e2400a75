"""The regression suite (flows/regression.py): suite file, metrics of a finished case, the plain-JAX
reference step, the noise-aware rules, history and trend, live progress of the stages; and, marked
slow, the schedule for real: a `prefect server start`, the flow served on a cron, two runs
triggered through the API (one passes, one fails naming the metric).
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, TINY_PARAMS
from _prefect import final_state, served_deployment, stop
from _prefect import prefect_server as real_prefect_server

from flows import regression as R  # first: sets the Prefect defaults
from flows.pipeline import _run_logged
from pinn import cascade, progress

SUITE = ROOT / "benchmarks" / "regression" / "suite.yaml"
BASELINE = ROOT / "benchmarks" / "regression" / "baseline.json"
HISTORY = ROOT / "benchmarks" / "regression" / "history.jsonl"


def tiny_suite(tmp_path: Path, **overrides) -> Path:
    """A test-only suite file: one case, the tiny pipeline params (seconds per stage)."""
    data = {"thresholds": [1e-2, 1e-3, 1e-4], "baseline_seeds": [0, 1, 2],
            "margins": {"error": 1.0, "time": 0.5, "speed": 0.25},
            "cases": [{"name": "tiny", "params": str(TINY_PARAMS)}]}
    data.update(overrides)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


RECORD = {"date": "2026-11-29T00:00:00+00:00", "commit": "0" * 40, "hardware": {"cpu": "test"},
          "versions": {"jax": "0"}}


def baseline_file(path: Path, suite: R.Suite, per_seed: list[dict]) -> Path:
    """A baseline of `suite` whose every case has the seeds' metrics `per_seed`."""
    data = R.make_baseline(suite, {c.name: per_seed for c in suite.cases}, [0, 1, 2], RECORD)
    path.write_text(json.dumps(data))
    return path


# ----------------------------------------------------------------------------------------------
# the suite file


def test_the_committed_suite_lists_the_three_problems_with_meaningful_budgets():
    suite = R.load_suite(SUITE)
    assert [c.name for c in suite.cases] == ["burgers_1d", "allen_cahn_1d", "allen_cahn_2d"]
    assert suite.thresholds == (1e-2, 1e-3, 1e-4)
    assert len(suite.baseline_seeds) >= R.MIN_SEEDS
    from pinn.config import load_params

    for case in suite.cases:
        assert case.params.parent == ROOT / "benchmarks" / "regression" / "cases"
        cfg = load_params(case.params)  # a valid params file
        assert cfg.problem.name == case.name
        # the configurations that reach meaningful accuracy: float64 quasi-Newton after Adam
        assert cfg.refine.method == "ssbroyden" and cfg.refine.precision == "float64"
        assert cfg.refine.iterations >= 500


def test_load_suite_rejects_malformed_files(tmp_path):
    with pytest.raises(R.SuiteError, match="suite file not found"):
        R.load_suite(tmp_path / "missing.yaml")
    with pytest.raises(R.SuiteError, match=r"baseline_seeds = \[0, 1\]: must be at least 3"):
        R.load_suite(tiny_suite(tmp_path, baseline_seeds=[0, 1]))
    with pytest.raises(R.SuiteError, match=r"margins\.speed = 1\.5: must be >= 0 and < 1"):
        R.load_suite(tiny_suite(tmp_path, margins={"error": 1, "time": 1, "speed": 1.5}))
    with pytest.raises(R.SuiteError, match="margins must give one number per kind"):
        R.load_suite(tiny_suite(tmp_path, margins={"error": 1}))
    with pytest.raises(R.SuiteError, match=r"cases\[0\]\.params = nope\.yaml: no such file"):
        R.load_suite(tiny_suite(tmp_path, cases=[{"name": "a", "params": "nope.yaml"}]))
    with pytest.raises(R.SuiteError, match=r"cases\[0\]\.name = 'A-1': must match"):
        R.load_suite(tiny_suite(tmp_path, cases=[{"name": "A-1", "params": str(TINY_PARAMS)}]))


def test_params_digest_ignores_the_seed_and_formatting(tmp_path):
    data = yaml.safe_load(TINY_PARAMS.read_text())
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(dict(data, seed=5), sort_keys=True))
    assert R.params_digest(tmp_path / "a.yaml") == R.params_digest(TINY_PARAMS)
    data["model"]["width"] += 1
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(data))
    assert R.params_digest(tmp_path / "b.yaml") != R.params_digest(TINY_PARAMS)


# ----------------------------------------------------------------------------------------------
# what a finished case measured


def fake_project(root: Path) -> Path:
    """A finished run's files: metrics.json, two levels' histories, the refinement's."""
    (root / "data" / "train" / "level0").mkdir(parents=True)
    (root / "data" / "train" / "level1").mkdir(parents=True)
    (root / "data" / "refine").mkdir(parents=True)
    (root / "metrics.json").write_text(json.dumps({"rel_l2": 5e-5, "max_abs": 2e-3}))
    pd.DataFrame({"step": [100, 200], "wall_s": [10.0, 12.0], "rel_l2": [0.5, 0.02],
                  "steps_per_s": [10.0, 50.0]}).to_csv(root / "data/train/level0/history.csv")
    pd.DataFrame({"step": [300, 400], "wall_s": [5.0, 7.0], "rel_l2": [0.009, 0.005],
                  "steps_per_s": [20.0, 40.0]}).to_csv(root / "data/train/level1/history.csv")
    # blocks of 100 iterations: the first compiles (20 s), then 4 s, 5 s, 2 s
    pd.DataFrame({"iteration": [100, 200, 300, 400], "wall_s": [20.0, 24.0, 29.0, 31.0],
                  "rel_l2": [8e-4, 2e-4, 9e-5, 5e-5]}).to_csv(root / "data/refine/history.csv")
    return root


def test_case_metrics_from_the_stage_histories(tmp_path):
    project = fake_project(tmp_path)
    m = R.case_metrics(project, ["level0", "level1"], (1e-2, 1e-3, 1e-4),
                       {"adam_steps_per_s": 100.0, "grad_evals_per_s": 80.0})
    assert m["rel_l2"] == 5e-5 and m["max_abs"] == 2e-3
    # the curve: level0 (10, 12 s), level1 offset by 12 s (17, 19 s), refine offset by 19 s
    assert m["time_to_1e-2_s"] == pytest.approx(17.0)
    assert m["time_to_1e-3_s"] == pytest.approx(39.0)
    assert m["time_to_1e-4_s"] == pytest.approx(48.0)
    assert m["time_to_1e-3"] == pytest.approx(39.0 * 100.0)  # in reference Adam steps
    # fastest interval, leaving out each phase's first (compilation): max(50, 40); 100 / 2 s
    assert m["adam_steps_per_s"] == 50.0 and m["refine_iterations_per_s"] == 50.0
    assert m["adam_speed_ratio"] == pytest.approx(0.5)
    assert m["refine_speed_ratio"] == pytest.approx(50.0 / 80.0)

    # a threshold never reached is None (and so is its reference-step time)
    m = R.case_metrics(project, ["level0", "level1"], (1e-5,),
                       {"adam_steps_per_s": 100.0, "grad_evals_per_s": 80.0})
    assert m["time_to_1e-5_s"] is None and m["time_to_1e-5"] is None
    assert R.threshold_name(1e-3) == "1e-3" and R.threshold_name(2.5e-4) == "2.5e-4"


def test_reference_step_of_a_case_size_runs_and_measures_rates(tmp_path):
    """The plain-JAX reference compiles for the case's sizes and times positive rates; its
    hand-written residuals are the problems' own (same value on the same network)."""
    import jax
    import jax.numpy as jnp

    from pinn.config import validate_params
    from pinn.precision import scope
    from pinn.problems import make_problem

    step = R.ReferenceStep(TINY_PARAMS, steps_per_call=2, evals_per_call=1)
    rates = step.rates(seconds=0.01)
    assert rates["adam_steps_per_s"] > 0 and rates["grad_evals_per_s"] > 0

    for name in ("burgers_1d", "allen_cahn_1d", "allen_cahn_2d"):
        cfg = validate_params({"problem": {"name": name}, "model": {"width": 8, "depth": 2}})
        problem = make_problem(name)
        with scope("float64"):
            ws, apply = R._plain_network(cfg, problem, jax.random.PRNGKey(0), jnp.float64)
            z = jax.random.uniform(jax.random.PRNGKey(1), (16, len(problem.input_names)),
                                   jnp.float64)
            f = lambda zz: apply(ws, zz)  # noqa: E731

            def both(z):
                unit = [jnp.zeros_like(z).at[:, i].set(1.0) for i in range(z.shape[1])]
                d1 = {i: jax.jvp(f, (z,), (unit[i],))[1] for i in range(z.shape[1])}
                d2 = {i: jax.jvp(lambda zz: jax.jvp(f, (zz,), (unit[i],))[1], (z,),
                                 (unit[i],))[1] for i in range(z.shape[1])}
                return R.PLAIN_RESIDUALS[name](problem, f(z), d1, d2), problem.residual(f, z)

            plain, ours = jax.jit(both)(z)
        np.testing.assert_allclose(np.asarray(plain), np.asarray(ours), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# the rules


def seed_metrics(rel_l2: float, ratio: float, time_to: float | None) -> dict:
    return {"rel_l2": rel_l2, "max_abs": 10 * rel_l2, "adam_speed_ratio": ratio,
            "refine_speed_ratio": ratio / 2, "time_to_1e-2": 100.0, "time_to_1e-3": time_to,
            "time_to_1e-4": None}


def test_baseline_records_mean_and_spread_of_three_seeds(tmp_path):
    suite = R.load_suite(tiny_suite(tmp_path))
    runs = [seed_metrics(1e-4, 1.0, 200.0), seed_metrics(2e-4, 0.8, 300.0),
            seed_metrics(3e-4, 0.9, None)]
    data = json.loads(baseline_file(tmp_path / "b.json", suite, runs).read_text())
    entry = data["cases"]["tiny"]["metrics"]["rel_l2"]
    assert entry["kind"] == "error" and entry["values"] == [1e-4, 2e-4, 3e-4]
    assert entry["mean"] == pytest.approx(2e-4) and entry["std"] == pytest.approx(np.std(
        [1e-4, 2e-4, 3e-4]))
    assert (entry["min"], entry["max"]) == (1e-4, 3e-4)
    assert data["cases"]["tiny"]["metrics"]["adam_speed_ratio"]["kind"] == "speed"
    # a threshold one seed did not reach has no mean: it is not compared
    assert data["cases"]["tiny"]["metrics"]["time_to_1e-3"]["mean"] is None
    assert data["cases"]["tiny"]["params_digest"] == R.params_digest(TINY_PARAMS)
    assert data["seeds"] == [0, 1, 2] and data["hardware"] == {"cpu": "test"}
    assert R.load_baseline(tmp_path / "b.json")["cases"].keys() == {"tiny"}
    with pytest.raises(R.BaselineError, match="at least 3 seeds"):
        R.make_baseline(suite, {"tiny": runs[:2]}, [0, 1], RECORD)


def test_load_baseline_rejects_malformed_files(tmp_path):
    with pytest.raises(R.BaselineError, match="baseline not found"):
        R.load_baseline(tmp_path / "missing.json")
    suite = R.load_suite(tiny_suite(tmp_path))
    good = json.loads(baseline_file(tmp_path / "b.json", suite,
                                    [seed_metrics(1e-4, 1.0, 200.0)] * 3).read_text())
    bad = json.loads(json.dumps(good))
    bad["seeds"] = [0, 1]
    (tmp_path / "c.json").write_text(json.dumps(bad))
    with pytest.raises(R.BaselineError, match="a baseline needs at least 3 seeds"):
        R.load_baseline(tmp_path / "c.json")
    bad = json.loads(json.dumps(good))
    bad["cases"]["tiny"]["metrics"]["rel_l2"]["mean"] = 1.0  # outside [min, max]
    (tmp_path / "d.json").write_text(json.dumps(bad))
    with pytest.raises(R.BaselineError, match=r"cases\.tiny\.metrics\.rel_l2: needs min <= mean"):
        R.load_baseline(tmp_path / "d.json")


def test_rules_fail_outside_the_seeds_spread_by_the_margin_naming_everything(tmp_path):
    suite = R.load_suite(tiny_suite(tmp_path))
    runs = [seed_metrics(1e-4, 1.0, 200.0), seed_metrics(2e-4, 0.8, 300.0),
            seed_metrics(3e-4, 0.9, 250.0)]
    baseline = R.load_baseline(baseline_file(tmp_path / "b.json", suite, runs))

    # within: worse than the mean but inside worst seed x (1 + margin); faster is never a failure
    rows, failures = R.compare(suite, baseline, {"tiny": dict(
        seed_metrics(5.9e-4, 0.61, 449.0), max_abs=1e-9, adam_speed_ratio=3.0)})
    assert failures == []
    status = {r["metric"]: r["status"] for r in rows}
    assert status["rel_l2"] == "ok" and status["time_to_1e-3"] == "ok"
    assert status["time_to_1e-4"] == "not compared"  # no seed reached it

    # outside: error > 3e-4 x 2, time > 300 x 1.5, speed < 0.8 x 0.75
    rows, failures = R.compare(suite, baseline, {"tiny": dict(
        seed_metrics(6.1e-4, 0.59, 451.0), max_abs=3e-3)})
    assert len(failures) == 4, failures
    rel = next(f for f in failures if ": rel_l2 =" in f)
    assert rel == ("tiny: rel_l2 = 0.00061, baseline 0.0002 ± 8.2e-05 (mean ± std of 3 seeds, "
                   "range 0.0001..0.0003), change +205.0 %, allowed <= 0.0006 "
                   "(worst seed x (1 + 1))")
    speed = next(f for f in failures if "adam_speed_ratio" in f)
    assert "allowed >= 0.6 (slowest seed x (1 - 0.25))" in speed and "change -34.4 %" in speed
    assert any(f.startswith("tiny: time_to_1e-3 = 451") for f in failures)
    assert any(f.startswith("tiny: refine_speed_ratio = 0.295") for f in failures)
    assert {r["metric"]: r["status"] for r in rows}["max_abs"] == "ok"

    # a threshold every seed reached, not reached now; a metric not finite
    _, failures = R.compare(suite, baseline, {"tiny": dict(
        seed_metrics(math.nan, 1.0, None))})
    assert any(f.startswith("tiny: time_to_1e-3: threshold not reached") for f in failures)
    assert any(f.startswith("tiny: rel_l2 = nan: not finite") for f in failures)


def test_rules_refuse_a_baseline_of_other_params(tmp_path):
    suite = R.load_suite(tiny_suite(tmp_path))
    baseline = R.load_baseline(baseline_file(tmp_path / "b.json", suite,
                                             [seed_metrics(1e-4, 1.0, 200.0)] * 3))
    baseline["cases"]["tiny"]["params_digest"] = "0123456789abcdef"
    _, failures = R.compare(suite, baseline, {"tiny": seed_metrics(1e-4, 1.0, 200.0)})
    assert len(failures) == 1 and "changed since the baseline" in failures[0]
    assert "--update-baseline" in failures[0]
    del baseline["cases"]["tiny"]
    _, failures = R.compare(suite, baseline, {"tiny": seed_metrics(1e-4, 1.0, 200.0)})
    assert failures == ["tiny: not in the baseline: record it with --update-baseline"]


# ----------------------------------------------------------------------------------------------
# history and trend


def test_history_is_appended_and_the_trend_drawn_with_log_axes_and_the_baseline_band(tmp_path):
    suite = R.load_suite(tiny_suite(tmp_path))
    runs = [seed_metrics(1e-4, 1.0, 200.0), seed_metrics(2e-4, 0.8, 300.0),
            seed_metrics(3e-4, 0.9, 250.0)]
    baseline = R.load_baseline(baseline_file(tmp_path / "b.json", suite, runs))
    history = tmp_path / "history.jsonl"
    record = R.history_record("baseline", suite, {"tiny": [
        {"seed": s, "metrics": m} for s, m in zip([0, 1, 2], runs)]})
    record["status"] = "baseline"
    R.append_history(history, record)
    check = R.history_record("check", suite, {"tiny": [{"seed": 0, "metrics": seed_metrics(
        9e-4, 0.5, 280.0)}]})
    check["status"] = "failed"
    R.append_history(history, check)
    records = R.read_history(history)
    assert [r["kind"] for r in records] == ["baseline", "check"]
    assert len(history.read_text().splitlines()) == 2
    for r in records:  # what each record must carry
        assert {"date", "commit", "dirty", "versions", "hardware", "cases", "status"} <= set(r)
        assert r["versions"]["jax"] and r["hardware"]["cpu"]
    assert records[0]["commit"] and len(records[0]["commit"]) == 40  # this checkout is git

    fig = R.trend_figure(records, baseline, suite)
    axes = {ax.get_ylabel(): ax for ax in fig.axes if ax.get_ylabel()}
    assert axes["rel_l2"].get_yscale() == "log" and axes["max_abs"].get_yscale() == "log"
    assert axes["time_to_1e-3\n(reference steps)"].get_yscale() == "log"
    assert axes["adam_speed_ratio\n(ours / plain JAX)"].get_yscale() == "linear"
    # the baseline band: the seeds' range shaded, the mean and the failure limit drawn
    (band,) = axes["rel_l2"].patches
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((1e-4, 3e-4))
    lines = {round(float(line.get_ydata()[0]), 12) for line in axes["rel_l2"].get_lines()
             if len(set(line.get_ydata())) == 1 and len(line.get_xdata()) == 2}
    assert {2e-4, 6e-4} <= lines
    # every run's points: three seeds, then the check
    points = [line for line in axes["rel_l2"].get_lines() if line.get_marker() == "o"]
    assert sorted(float(y) for line in points for y in line.get_ydata()) == [1e-4, 2e-4, 3e-4,
                                                                             9e-4]
    png = R.write_trend(tmp_path / "trend.png", records, baseline, suite)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "trend.png").read_bytes() == png

    moved = R.what_moved(records, suite)
    assert moved[0]["metric"] == "rel_l2" and moved[0]["change_pct"] == pytest.approx(350.0)


def test_committed_baseline_history_and_trend():
    """The committed baseline: three seeds of every case of the committed suite, for its params;
    its run is in the committed history, with the trend chart next to it."""
    committed = R.load_baseline(BASELINE)
    assert len(committed["seeds"]) >= 3
    assert set(committed["cases"]) == {c.name for c in R.load_suite(SUITE).cases}
    for case in R.load_suite(SUITE).cases:
        assert committed["cases"][case.name]["params_digest"] == R.params_digest(case.params)
        assert committed["cases"][case.name]["metrics"]["rel_l2"]["n"] >= 3
    records = R.read_history(HISTORY)
    assert any(r["kind"] == "baseline" and len(next(iter(r["cases"].values()))) >= 3
               for r in records)
    assert (HISTORY.parent / "trend.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------------------------
# progress while it runs


def test_progress_mode_and_line():
    assert progress.progress_mode(True) == "bar"
    assert progress.progress_mode("lines") == "lines"
    with pytest.raises(ValueError, match="progress = 'loud'"):
        progress.progress_mode("loud")
    assert progress.progress_line("train level0", 500, 2000, "step", loss=1.234e-3, rel_l2=4.56e-2,
                                 rate=812.34, rate_unit="steps/s") == (
        "train level0: step 500/2000 (25%), loss 1.234e-03, rel L2 4.560e-02, 812.3 steps/s")


class _Stderr(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_train_and_refine_print_a_line_per_interval_when_piped(monkeypatch):
    """Piped (stderr not a terminal): one flushed line per log interval from `train_level` and
    per block from `refine`; on a terminal with the bar off (a stage's --quiet) nothing."""
    from test_reliability import _tiny_trainer

    from pinn.config import validate_params
    from pinn.precision import scope
    from pinn.problems import make_problem
    from pinn.refine import refine

    trainer, state0 = _tiny_trainer()
    err = _Stderr(tty=True)
    monkeypatch.setattr(sys, "stderr", err)
    cascade.train_level(trainer, state0, 20, level="level0", log_every=10,
                        max_divergence_retries=3, divergence_lr_factor=0.5)
    assert err.getvalue() == ""

    err = _Stderr(tty=False)
    monkeypatch.setattr(sys, "stderr", err)
    cascade.train_level(trainer, state0, 30, level="level0", log_every=10,
                        max_divergence_retries=3, divergence_lr_factor=0.5)
    cfg = validate_params({"problem": {"name": "burgers_1d"}, "model": {"width": 8, "depth": 2},
                           "refine": {"method": "lbfgs", "iterations": 4, "block_size": 2,
                                      "resample_every_blocks": 0},
                           "multilevel": {"num_levels": 1, "levels": {
                               "level0": {"steps": 10, "init_from": "init"}}}})
    problem = make_problem("burgers_1d")
    rng = np.random.default_rng(0)
    colloc = {"interior": rng.uniform([0, -1], [1, 1], (64, 2)),
              "ic": rng.uniform(-1, 1, (16, 1)), "bc": rng.uniform([0, -1], [1, 1], (16, 2))}
    with scope("float64"):
        tr, model = cascade.make_trainer(cfg, problem, "level0")
        st = cascade.state_template(tr, model, cfg, "level0")
        refine(cfg, problem, tr.graphdef, tr.rest, st.params, np.ones(3), colloc)
    lines = err.getvalue().splitlines()
    train = [ln for ln in lines if ln.startswith("train level0: step ")]
    assert [ln.split(",")[0] for ln in train] == [
        "train level0: step 10/30 (33%)", "train level0: step 20/30 (67%)",
        "train level0: step 30/30 (100%)"]
    assert all(ln.endswith(" steps/s") and ", loss " in ln for ln in train)
    blocks = [ln for ln in lines if ln.startswith("refine lbfgs: iteration ")]
    assert [ln.split(",")[0] for ln in blocks] == [
        "refine lbfgs: iteration 2/4 (50%)", "refine lbfgs: iteration 4/4 (100%)"]
    assert all(ln.endswith(" iterations/s") for ln in blocks)


def test_stage_output_reaches_the_logger_as_it_comes_not_at_the_end(tmp_path):
    """`flows.pipeline._run_logged` (what each stage task runs) logs each line when it is
    printed: the first line is logged while the command is still running."""
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        print("train level0: step 10/20", file=sys.stderr, flush=True)
        time.sleep(3)
        print("train level0: step 20/20", flush=True)
    """))
    logged: list[tuple[float, str]] = []

    class Logger:
        def info(self, message, *args):
            logged.append((time.monotonic(), message % args if args else message))

    start = time.monotonic()
    code, lines = _run_logged([sys.executable, str(script)], tmp_path, Logger())
    end = time.monotonic()
    assert code == 0 and lines == ["train level0: step 10/20", "train level0: step 20/20"]
    assert [m for _, m in logged] == lines
    assert logged[0][0] < end - 2.0, "the first line was logged only when the command ended"
    assert logged[1][0] - start >= 3.0


# ----------------------------------------------------------------------------------------------
# the flow on the tiny suite (a built project: DVC skips its stages)


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _artifact_keys(flow_run_id=None) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])) if flow_run_id else None)
    return {a.key for a in found}


def test_regression_flow_on_a_built_project_passes_then_fails_naming_the_metric(
        built_copy, pipeline_environ, prefect_server, tmp_path):
    """With --no-rerun over a finished project the flow compares, records and draws: a baseline
    the run is within passes; a stricter one fails naming case, metric, baseline and new value.
    The user's data and artifact keys are not touched."""
    from conftest import snapshot

    user_data = snapshot(ROOT)
    suite = R.load_suite(tiny_suite(tmp_path))
    workdir = tmp_path / "work"
    (workdir / "tiny").mkdir(parents=True)
    built_copy.rename(workdir / "tiny" / "seed-0")
    metrics = json.loads((workdir / "tiny" / "seed-0" / "metrics.json").read_text())
    loose = baseline_file(tmp_path / "loose.json", suite, [
        {"rel_l2": metrics["rel_l2"] * f, "max_abs": metrics["max_abs"] * f} for f in (1, 1, 1.1)])
    strict = baseline_file(tmp_path / "strict.json", suite, [
        {"rel_l2": 1e-6 * f, "max_abs": metrics["max_abs"] * f} for f in (1, 2, 3)])
    paths = dict(suite_path=str(suite.path), history_path=str(tmp_path / "history.jsonl"),
                 trend_path=str(tmp_path / "trend.png"), workdir=str(workdir), rerun=False)

    result = R.regression(baseline_path=str(loose), **paths)
    rows = {(r["case"], r["metric"]): r["status"] for r in result["comparison"]}
    assert rows[("tiny", "rel_l2")] == "ok" and rows[("tiny", "max_abs")] == "ok"
    assert result["cases"]["tiny"][0]["metrics"]["rel_l2"] == metrics["rel_l2"]

    with pytest.raises(R.RegressionError) as failure:
        R.regression(baseline_path=str(strict), **paths)
    message = str(failure.value)
    assert "tiny: rel_l2 = " in message and f"{metrics['rel_l2']:.3g}" in message
    assert "baseline 2e-06" in message and "allowed <= 6e-06" in message and " %" in message
    assert "max_abs" not in message

    records = R.read_history(tmp_path / "history.jsonl")
    assert [r["status"] for r in records] == ["passed", "failed"]
    assert records[1]["failures"] and "tiny: rel_l2" in records[1]["failures"][0]
    assert (tmp_path / "trend.png").read_bytes()[:4] == b"\x89PNG"
    keys = _artifact_keys()
    assert {"pinn-regression-comparison", "pinn-regression-trend",
            "pinn-regression-tiny-report", "pinn-regression-tiny-stages"} <= keys
    assert not keys & {"pinn-report", "pinn-metrics", "pinn-stages"}
    assert snapshot(ROOT) == user_data


def test_update_baseline_needs_three_seeds(tmp_path, prefect_server):
    with pytest.raises(R.RegressionError, match="needs at least 3 seeds"):
        R.regression(suite_path=str(tiny_suite(tmp_path)), update_baseline=True, seeds=[0, 1],
                     baseline_path=str(tmp_path / "b.json"))


# ----------------------------------------------------------------------------------------------
# the schedule, for real






@pytest.mark.slow
@pytest.mark.timeout(600)
def test_served_on_a_cron_by_a_real_server_runs_and_fails_on_a_stricter_baseline(
        tmp_path, pipeline_env):
    """A real `prefect server start` (127.0.0.1, a free port, PREFECT_HOME in tmp); the flow served
    with `python -m flows.regression --serve --cron ...`; a run triggered through the API ends
    Completed (its log shows the stages' progress lines); a second run, with a stricter baseline,
    ends Failed with a message naming the case and metric. Then the way for another machine: a
    process work pool, `--deploy` to it, `prefect worker start`: its run ends Completed."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    serve_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
    prefect = str(Path(sys.executable).parent / "prefect")
    serve = worker = None
    with real_prefect_server(tmp_path, pipeline_env) as env:
        api = env["PREFECT_API_URL"]
        try:
            suite = R.load_suite(tiny_suite(tmp_path))
            metrics_guess = [{"rel_l2": 10.0 * f, "max_abs": 100.0 * f} for f in (1, 2, 3)]
            loose = baseline_file(tmp_path / "loose.json", suite, metrics_guess)
            strict = baseline_file(tmp_path / "strict.json", suite, [
                {"rel_l2": 1e-9 * f, "max_abs": 100.0 * f} for f in (1, 2, 3)])
            workdir = tmp_path / "work"
            serve = subprocess.Popen(
                [sys.executable, "-m", "flows.regression", "--serve", "--cron", "0 3 * * *",
                 "--name", "test-nightly", "--suite", str(suite.path), "--baseline", str(loose),
                 "--history", str(tmp_path / "history.jsonl"), "--trend", str(tmp_path / "trend.png"),
                 "--workdir", str(workdir)],
                env=env, cwd=ROOT, stdout=serve_log.open("w"), stderr=subprocess.STDOUT)

            with temporary_settings(updates={PREFECT_API_URL: api}):
                found = served_deployment("pinn-regression/test-nightly", serve, serve_log)
                assert found.schedules and found.schedules[0].schedule.cron == "0 3 * * *"

                def finish(parameters):
                    run = run_deployment("pinn-regression/test-nightly", parameters=parameters,
                                         timeout=0)
                    return run.id, final_state(run.id, serve, serve_log)

                _, state = finish({})
                assert state.type.value == "COMPLETED", (state, serve_log.read_text()[-3000:])
                logs: list[str] = []
                with get_client(sync_client=True) as client:  # this server's only run so far (its
                    while True:                               # stages log under its subflow run)
                        page = client.read_logs(offset=len(logs))
                        if not page:
                            break
                        logs += [log.message for log in page]
                assert any(m.startswith("train level0: step 10/40") and "steps/s" in m for m in logs)
                assert any(m.startswith("refine lbfgs: iteration 10/20") for m in logs)
                assert [r["status"] for r in R.read_history(tmp_path / "history.jsonl")] == ["passed"]

                _, state = finish({"baseline_path": str(strict), "rerun": False})
                assert state.type.value == "FAILED"
                assert "tiny: rel_l2 = " in state.message and "baseline 2e-09" in state.message, \
                    state.message
                records = R.read_history(tmp_path / "history.jsonl")
                assert [r["status"] for r in records] == ["passed", "failed"]

                # the README's way for another machine: a work pool, a deployment of it, a worker
                create = subprocess.run([prefect, "work-pool", "create", "test-pool", "--type",
                                         "process"], env=env, cwd=tmp_path, capture_output=True,
                                        text=True, timeout=120)
                assert create.returncode == 0, create.stdout + create.stderr
                deployed = subprocess.run(
                    [sys.executable, "-m", "flows.regression", "--deploy", "test-pool", "--name",
                     "pooled", "--cron", "0 4 * * *", "--suite", str(suite.path), "--baseline",
                     str(loose), "--history", str(tmp_path / "history.jsonl"), "--trend",
                     str(tmp_path / "trend.png"), "--workdir", str(workdir), "--no-rerun"],
                    env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
                assert deployed.returncode == 0, deployed.stdout + deployed.stderr
                assert "prefect worker start --pool test-pool" in deployed.stdout
                worker = subprocess.Popen([prefect, "worker", "start", "--pool", "test-pool"],
                                          env=env, cwd=tmp_path, stdout=worker_log.open("w"),
                                          stderr=subprocess.STDOUT)
                with get_client(sync_client=True) as client:
                    pooled = client.read_deployment_by_name("pinn-regression/pooled")
                assert pooled.work_pool_name == "test-pool"
                assert pooled.schedules[0].schedule.cron == "0 4 * * *"
                run = run_deployment("pinn-regression/pooled", timeout=0)
                state = final_state(run.id, worker, worker_log, timeout=180)
                assert state.type.value == "COMPLETED", worker_log.read_text()[-3000:]
                assert [r["status"] for r in R.read_history(tmp_path / "history.jsonl")] == [
                    "passed", "failed", "passed"]
        finally:
            for proc in (worker, serve):
                stop(proc)
