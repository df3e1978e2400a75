"""Pipeline-level tests through DVC on the tiny benchmark params: a full `dvc repro`, what a second
one and param changes rerun (the `params` gate, `always_changed`, runs every time and changes
nothing), resuming a SIGKILLed training stage, and malformed params.

Fixtures (tests/conftest.py): `built_project` is built once per session by `dvc repro`; each test
that changes something works on `built_copy`, its own copy.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import (
    STAGES, dvc, output_of, pinn, set_params, snapshot, stage, stage_argv, stage_option,
    stages_ran, stages_skipped,
)

UPSTREAM_OF_LEVEL1 = ["data/reference.npz", "data/collocation.npz", "data/export/init.npz",
                      "data/export/level0.npz", "data/train/level0/history.csv"]
BAD_P_MAX_ERROR = re.compile(
    r"^error: params\.yaml: sampling\.hard_bank\.p_max = 1\.5: must be less than or equal to 1$"
)

#: the params gate's outputs: rewritten on every repro (it always runs), constant content
GATE_STAMPS = {"data/params.ok", "data/problem.stamp", "data/reference_source.stamp",
               "data/observations_source.stamp"}


def changed(before: dict, after: dict) -> set[str]:
    """Output files added, removed, rewritten (mtime) or changed (content)."""
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def test_repro_runs_every_stage_and_writes_outputs(built_project):
    project, output = built_project.path, built_project.output
    ran = stages_ran(output)
    assert sorted(ran) == sorted(STAGES), output
    for before, after in [("init", "train@level0"), ("reference", "train@level0"),
                          ("collocation", "train@level0"), ("train@level0", "train@level1"),
                          ("train@level1", "refine"), ("refine", "evaluate"), ("evaluate", "report")]:
        assert ran.index(before) < ran.index(after)
    for name in ("init", "level0", "level1"):
        with np.load(project / "data" / "export" / f"{name}.npz") as export:
            assert len(export.files) > 0
    for path in ("data/reference.npz", "data/collocation.npz", "data/refined.npz",
                 "data/evaluate/errors.npz", "data/train/level1/samples.npz"):
        assert (project / path).is_file(), path

    metrics = json.loads((project / "metrics.json").read_text())
    assert metrics["problem"] == "burgers_1d"
    assert math.isfinite(metrics["rel_l2"]) and 0 < metrics["rel_l2"] < 10
    assert math.isfinite(metrics["max_abs"]) and metrics["max_abs"] > 0

    report = (project / "report" / "report.md").read_text()
    assert report.startswith("# Regression benchmark")
    assert f"{metrics['rel_l2']:.3e}" in report
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    assert figures and all((project / "report" / f).is_file() for f in figures)

    level1 = pd.read_csv(project / "data" / "train" / "level1" / "history.csv")
    assert list(level1["level_step"]) == [10, 20, 30, 40]
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)


def test_second_repro_reruns_only_the_params_gate(built_copy, pipeline_env):
    before = snapshot(built_copy)
    proc = dvc(built_copy, pipeline_env, "repro")
    out = output_of(proc)
    assert proc.returncode == 0, out
    # the gate is `always_changed` (it reads dvc.yaml, which DVC refuses as a dependency): it
    # runs every time, rewriting its constant stamp, which invalidates nothing downstream
    assert stages_ran(out) == ["params"]
    assert sorted(stages_skipped(out)) == sorted(set(STAGES) - {"params"})
    status = dvc(built_copy, pipeline_env, "status")
    assert status.returncode == 0
    assert re.findall(r"^(\S+):$", status.stdout, re.M) == ["params"], status.stdout
    after = snapshot(built_copy)
    assert changed(before, after) <= GATE_STAMPS | {"dvc.lock"}
    assert {k: v[1] for k, v in after.items()} == {k: v[1] for k, v in before.items()}  # content


def test_report_param_reruns_only_report(built_copy, pipeline_env):
    before = snapshot(built_copy)
    set_params(built_copy, **{"report.dpi": 41})
    status = dvc(built_copy, pipeline_env, "status").stdout
    # the params gate reruns on any edit of params.yaml (cheap; constant stamp)
    assert re.findall(r"^(\S+):$", status, re.M) == ["params", "report"], status

    proc = dvc(built_copy, pipeline_env, "repro")
    out = output_of(proc)
    assert proc.returncode == 0, out
    assert stages_ran(out) == ["params", "report"]
    assert sorted(stages_skipped(out)) == sorted(set(STAGES) - {"params", "report"})
    rewritten = changed(before, snapshot(built_copy))
    assert "report/convergence.png" in rewritten  # drawn at the new dpi
    # the gate rewrites its stamp (same content, so nothing downstream is invalidated)
    assert {p for p in rewritten if not p.startswith("report/")} == GATE_STAMPS | {"dvc.lock"}


def test_level1_steps_rerun_level1_and_downstream_only(built_copy, pipeline_env):
    before = snapshot(built_copy)
    set_params(built_copy, **{"multilevel.levels.level1.steps": 50})
    proc = dvc(built_copy, pipeline_env, "repro")
    out = output_of(proc)
    assert proc.returncode == 0, out
    assert stages_ran(out) == ["params", "train@level1", "refine", "window0", "evaluate", "report"]
    assert sorted(stages_skipped(out)) == ["collocation", "init", "plots_page", "reference",
                                           "train@level0"]
    after = snapshot(built_copy)
    for path in UPSTREAM_OF_LEVEL1:
        assert after[path] == before[path], f"{path} was rewritten"
    for path in ("data/export/level1.npz", "data/refined.npz", "metrics.json"):
        assert after[path][1] != before[path][1], f"{path} did not change"
    level1 = pd.read_csv(built_copy / "data" / "train" / "level1" / "history.csv")
    assert list(level1["level_step"]) == [10, 20, 30, 40, 50]


def _wait_for_checkpoint(resume: Path, proc: subprocess.Popen, log: Path, timeout: float) -> int:
    """Poll until a finished checkpoint (a directory named by its step, in
    `<resume>/<fingerprint>/ckpt`) exists; return the step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.name) for p in resume.glob("*/ckpt/*") if p.is_dir() and p.name.isdigit()]
        if steps:
            return max(steps)
        if proc.poll() is not None:
            pytest.fail(f"training finished before a checkpoint was seen:\n{log.read_text()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no checkpoint in {resume} after {timeout} s:\n{log.read_text()}")


def test_killed_training_resumes_from_checkpoint(built_copy, pipeline_env):
    steps, every, log_every = 2000, 100, 50
    set_params(built_copy, **{"multilevel.levels.level0.steps": steps,
                              "train.checkpoint_every": every, "train.log_every": log_every})
    for out in ("data/export/level0.npz", "data/checkpoints/level0", "data/train/level0"):
        path = built_copy / out  # what DVC removes before it runs the stage
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    resume = built_copy / stage_option(built_copy, "train@level0", "--resume")
    log = built_copy / "first-run.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(stage_argv(built_copy, "train@level0"),
                                cwd=built_copy, env=pipeline_env, stdout=f, stderr=subprocess.STDOUT)
        try:
            _wait_for_checkpoint(resume, proc, log, 600)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (built_copy / "data/export/level0.npz").exists()

    rerun = stage(built_copy, pipeline_env, "train@level0")
    out = output_of(rerun)
    assert rerun.returncode == 0, out
    match = re.search(r"train level0: resuming from checkpoint at step (\d+)", out)
    assert match, out
    resumed_at = int(match.group(1))
    assert 0 < resumed_at < steps and resumed_at % every == 0
    assert f"train level0: {steps} steps" in out

    history = pd.read_csv(built_copy / "data/train/level0/history.csv")
    assert list(history["level_step"]) == list(range(log_every, steps + 1, log_every))
    assert np.isfinite(history["loss"]).all()
    with np.load(built_copy / "data/export/level0.npz") as export:
        assert len(export.files) > 0
    assert not resume.exists()  # the finished run's checkpoints are gone


@pytest.fixture
def bad_params(built_copy) -> Path:
    """The built copy with sampling.hard_bank.p_max = 1.5 (allowed: [0, 1])."""
    set_params(built_copy, **{"sampling.hard_bank.p_max": 1.5})
    return built_copy


def _assert_one_line_error(proc: subprocess.CompletedProcess) -> None:
    out = output_of(proc)
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert BAD_P_MAX_ERROR.match(proc.stderr.strip()), proc.stderr


@pytest.mark.parametrize("argv", [["check-params"], ["run"]])
def test_malformed_params_one_line_error_through_pinn(bad_params, pipeline_env, argv):
    before = snapshot(bad_params)
    _assert_one_line_error(pinn(bad_params, pipeline_env, *argv))
    assert changed(before, snapshot(bad_params)) == set()


@pytest.mark.parametrize("name", ["params", "reference", "train@level0", "refine"])
def test_malformed_params_one_line_error_through_a_stage(bad_params, pipeline_env, name):
    """Each stage's command, run directly (as dvc.yaml gives it), validates the params first."""
    before = snapshot(bad_params)
    _assert_one_line_error(stage(bad_params, pipeline_env, name))
    assert changed(before, snapshot(bad_params)) == set()


def test_malformed_params_one_line_error_through_dvc_repro(bad_params, pipeline_env):
    before = snapshot(bad_params)
    proc = dvc(bad_params, pipeline_env, "repro")
    out = output_of(proc)
    assert proc.returncode != 0
    assert "Traceback" not in out
    error_lines = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert len(error_lines) == 1 and BAD_P_MAX_ERROR.match(error_lines[0]), out
    # the params gate, upstream of every stage, is the only stage DVC tried: no stage that does
    # work had its outputs removed (DVC deletes a stage's outputs before running its command);
    # only the gate's own constant stamp is gone
    assert stages_ran(out) == ["params"]
    after = snapshot(bad_params)
    assert changed(before, after) == GATE_STAMPS
    assert not GATE_STAMPS & set(after)
