"""Runs from the Prefect UI: `python -m flows.pipeline --serve` (and `flows.ablation --serve`),
parameters `overrides` and `name`, each such run a DVC experiment (flows/pipeline.py).

Fast: the command lines (`--serve` refuses without PREFECT_API_URL, in one line, for both
flows; what it deploys), the overrides' validation (params.yaml with the overrides applied,
checked as `pinn check-params` does, each error naming its key), reading `dvc exp run`'s output.

Slow, for real: a `prefect server start` on 127.0.0.1 (a free port, PREFECT_HOME in tmp), the
pipeline served from a subprocess on the tiny built project (a git + DVC project, its build
committed), a run triggered with `run_deployment(..., parameters={"overrides": ..., "name":
...})`: it completes, `dvc exp show --json` lists the experiment with the overridden values and a
finite rel L2, and the workspace is byte-identical; a run with a misspelt key fails naming it,
before any task, and creates no experiment.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY_PARAMS, dvc, output_of, run
from _prefect import final_state, prefect_server, served_deployment, stop as _stop

from flows import ablation as ablation_module  # first: sets the Prefect defaults
from flows import pipeline as pipeline_module
from flows.pipeline import (
    INVALID_PARAMS, RAN, RESTORED, SKIPPED, OverrideError, experiment_failure, outcomes_in_order,
    override_args, parse_set,
)
from prefect.settings import PREFECT_API_URL, temporary_settings

# ----------------------------------------------------------------------------------------------
# the command lines


@pytest.mark.parametrize("module", [pipeline_module, ablation_module], ids=["pipeline", "ablation"])
def test_serve_refuses_without_a_server_in_one_line(module, monkeypatch, capsys):
    """An ephemeral server lives as long as the process: `--serve` says what to start instead."""
    flow = module.pipeline if module is pipeline_module else module.ablation
    calls = []
    monkeypatch.setattr(flow, "serve", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert module.main(["--serve"]) == 2
    assert calls == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0] == pipeline_module.NO_SERVER
    assert "`prefect server start`" in err[0] and "PREFECT_API_URL" in err[0]


def test_serve_deploys_with_the_command_lines_parameters(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(pipeline_module.pipeline, "serve", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ablation_module.ablation, "serve", lambda **kwargs: calls.append(kwargs))
    monkeypatch.chdir(tmp_path)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert pipeline_module.main(["--serve"]) == 0
        assert pipeline_module.main(["--serve", "--name", "n", "--params", "p/params.yaml",
                                     "-S", "sampling.method=rad", "-S", "optimizer.learning_rate=1e-3",
                                     "--experiment", "e1"]) == 0
        assert ablation_module.main(["--serve"]) == 0
        assert ablation_module.main(["s.yaml", "--serve", "--jobs", "2", "--name", "m"]) == 0
    assert calls == [
        {"name": "ui", "parameters": {"params_path": str(tmp_path / "params.yaml")}},
        {"name": "n", "parameters": {"params_path": str(tmp_path / "p" / "params.yaml"),
                                     "overrides": {"sampling.method": "rad",
                                                   "optimizer.learning_rate": 1e-3},
                                     "name": "e1"}},
        {"name": "ui", "parameters": {}},
        {"name": "m", "parameters": {"study_file": str(tmp_path / "s.yaml"), "jobs": 2}},
    ]


def test_ablation_needs_a_study_file_unless_served(capsys):
    with pytest.raises(SystemExit) as exit_:
        ablation_module.main([])
    assert exit_.value.code == 2
    assert "the study file is required" in capsys.readouterr().err


def test_set_arguments_are_read_as_yaml_values():
    assert parse_set(["sampling.method=rad", "optimizer.learning_rate=1e-3", "train.log_every=5",
                      "causal.enabled=true", "report.snapshot_times=[0, 1]", "~a.b", "report.title="]
                     ) == {"sampling.method": "rad", "optimizer.learning_rate": 1e-3,
                           "train.log_every": 5, "causal.enabled": True,
                           "report.snapshot_times": [0, 1], "~a.b": None, "report.title": ""}
    with pytest.raises(ValueError, match="must be KEY=VALUE"):
        parse_set(["sampling.method"])


# ----------------------------------------------------------------------------------------------
# the overrides' validation


@pytest.fixture(scope="module")
def params_project(tmp_path_factory) -> Path:
    """dvc.yaml and the tiny params.yaml: what the validation reads (nothing runs)."""
    root = tmp_path_factory.mktemp("validate")
    shutil.copy2(ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copy2(TINY_PARAMS, root / "params.yaml")
    return root


def test_overrides_become_dvc_set_arguments(params_project):
    before = (params_project / "params.yaml").read_bytes()
    assert override_args(params_project, {"sampling.method": "rad", "optimizer.learning_rate": 1e-3,
                                          "sampling.rad.k": 2.0, "report.title": "a b"}) == [
        "sampling.method=rad", "optimizer.learning_rate=0.001", "+sampling.rad.k=2.0",
        "report.title='a b'"]
    assert override_args(params_project, {}) == []
    assert (params_project / "params.yaml").read_bytes() == before
    assert sorted(p.name for p in params_project.iterdir()) == ["dvc.yaml", "params.yaml"]


@pytest.mark.parametrize("overrides,expected", [
    ({"sampling.methd": "rad"}, "sampling.methd: unknown key; did you mean 'method'?"),
    ({"sampling.method": "radd"}, "sampling.method = 'radd': must be one of"),
    ({"model.width": 8, "refine.iterations": -1}, "refine.iterations = -1"),
    ({"sampling method": "rad"}, "overrides: 'sampling method': not a dotted params key"),
    ({"~sampling.nope": None}, "overrides: ~sampling.nope: no such key to delete in params.yaml"),
    ({"seed.x": 1}, "overrides: seed.x: a key above it is not a mapping in params.yaml"),
    ({"train.log_every": math.nan}, "overrides: train.log_every = nan: "),
    ({"~train.precision": None}, "train.precision: missing (stage"),  # a key a stage declares
], ids=["unknown-key", "bad-value", "out-of-range", "not-a-key", "delete-missing", "not-a-mapping",
        "nan", "declared-key-deleted"])
def test_bad_overrides_fail_in_one_line_naming_the_key(params_project, overrides, expected):
    with pytest.raises(OverrideError) as failure:
        override_args(params_project, overrides)
    message = str(failure.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith("error: ") and expected in message, message
    assert "pinn-overrides-" not in message  # the scratch file is named as what it is


def test_dvc_exp_run_output_is_read_per_stage():
    output = "\n".join([
        "Reproducing experiment 'e'", "Running stage 'params':", "> python -m pinn.stages.gate",
        "Stage 'reference' didn't change, skipping", "Stage 'train@level0' didn't change, skipping",
        "Stage 'refine' is cached - skipping run, checking out outputs",
        "Running stage 'report':", "Ran experiment(s): e"])
    assert outcomes_in_order(output) == [("params", RAN), ("reference", SKIPPED),
                                         ("train@level0", SKIPPED), ("refine", RESTORED),
                                         ("report", RAN)]
    failed = ["Running stage 'reference':",
              "error: reference burgers_1d: its estimated relative error is above reference.fail_above",
              "ERROR: failed to reproduce 'reference': failed to run: python -m pinn.stages.reference "
              "--params params.yaml --out data/reference.npz, exited with 2"]
    assert experiment_failure(1, failed) == (
        2, "stage reference: reference burgers_1d: its estimated relative error is above "
           "reference.fail_above")
    status, message = experiment_failure(255, ["ERROR: Invalid exp name bad name, the exp name ..."])
    assert status is None and message.startswith("`dvc exp run` exited with 255: Invalid exp name")


# ----------------------------------------------------------------------------------------------
# for real: a Prefect server, the served deployment, runs from the API










def experiments(project: Path, env: dict[str, str]) -> dict[str, dict]:
    """{name: {"params", "metrics"}} of every experiment `dvc exp show --json` lists."""
    proc = dvc(project, env, "exp", "show", "--json")
    assert proc.returncode == 0, output_of(proc)
    found = {}
    for commit in json.loads(proc.stdout):
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                found[exp.get("name") or rev.get("name")] = {
                    "params": ((data.get("params") or {}).get("params.yaml") or {}).get("data"),
                    "metrics": ((data.get("metrics") or {}).get("metrics.json") or {}).get("data")}
    return found


@pytest.mark.slow  # a Prefect server, a served deployment, a DVC experiment (~2 min on 2 cores)
@pytest.mark.timeout(480)
def test_ui_run_with_overrides_is_a_dvc_experiment_and_a_bad_key_fails_naming_it(
        built_copy, pipeline_env, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter, ArtifactFilterFlowRunId, TaskRunFilter, TaskRunFilterFlowRunId,
    )
    from prefect.deployments import run_deployment

    project = built_copy
    git = ["git", "-c", "user.name=pinn tests", "-c", "user.email=tests@pinn.invalid"]
    for cmd in (git + ["add", "-A"], git + ["commit", "-q", "-m", "built"]):  # the baseline: built
        proc = run(cmd, project, pipeline_env, timeout=120)
        assert proc.returncode == 0, output_of(proc)
    workspace = {name: (project / name).read_bytes() for name in ("params.yaml", "dvc.lock",
                                                                  "metrics.json")}
    serve = None
    serve_log = tmp_path / "serve.log"
    with prefect_server(tmp_path, pipeline_env) as env:
        try:
            serve = subprocess.Popen(
                [sys.executable, "-m", "flows.pipeline", "--serve", "--params",
                 str(project / "params.yaml")],
                env=env, cwd=ROOT, stdout=serve_log.open("w"), stderr=subprocess.STDOUT)
            with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
                found = served_deployment("pinn-pipeline/ui", serve, serve_log)
                assert found.parameters == {"params_path": str(project / "params.yaml")}
                assert {"overrides", "name"} <= set(found.parameter_openapi_schema["properties"])

                def finish(parameters):
                    flow_run = run_deployment("pinn-pipeline/ui", parameters=parameters, timeout=0)
                    return flow_run.id, final_state(flow_run.id, serve, serve_log)

                # a run with overrides: an experiment, the workspace untouched
                start = time.monotonic()
                run_id, state = finish({"overrides": {"refine.iterations": 10, "report.dpi": 41},
                                        "name": "ui-run"})
                seconds = time.monotonic() - start
                assert state.type.value == "COMPLETED", (state, serve_log.read_text()[-4000:])
                listed = experiments(project, pipeline_env)
                assert "ui-run" in listed, (listed.keys(), serve_log.read_text()[-4000:])
                exp = listed["ui-run"]
                assert exp["params"]["refine"]["iterations"] == 10
                assert exp["params"]["report"]["dpi"] == 41
                assert exp["params"]["sampling"] == _yaml(workspace["params.yaml"])["sampling"]
                assert math.isfinite(exp["metrics"]["rel_l2"])
                assert exp["metrics"]["refine_iterations"] == 10  # the value reached the run
                assert json.loads(workspace["metrics.json"])["refine_iterations"] == 20
                for name, data in workspace.items():
                    assert (project / name).read_bytes() == data, f"{name} changed"
                with get_client(sync_client=True) as client:
                    keys = {a.key for a in client.read_artifacts(artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))}
                assert {"pinn-exp-ui-run-stages", "pinn-exp-ui-run-metrics",
                        "pinn-exp-ui-run-report"} <= keys, keys

                # a misspelt key: Failed naming it, before any task, no experiment
                run_id, state = finish({"overrides": {"sampling.methd": "rad"}, "name": "ui-bad"})
                assert state.type.value == "FAILED" and state.name == INVALID_PARAMS, state
                assert "sampling.methd" in state.message and "unknown key" in state.message
                assert len(state.message.splitlines()) == 1, state.message
                with get_client(sync_client=True) as client:
                    tasks = client.read_task_runs(task_run_filter=TaskRunFilter(
                        flow_run_id=TaskRunFilterFlowRunId(any_=[run_id])))
                assert tasks == [], [t.name for t in tasks]
                assert set(experiments(project, pipeline_env)) == {"ui-run"}
                proc = dvc(project, pipeline_env, "exp", "ls", "--name-only")
                assert proc.stdout.split() == ["ui-run"], output_of(proc)
                for name, data in workspace.items():
                    assert (project / name).read_bytes() == data, f"{name} changed"
                print(f"ui-run: {seconds:.1f} s from trigger to Completed")
        finally:
            _stop(serve)


def _yaml(data: bytes):
    import yaml

    return yaml.safe_load(data)
