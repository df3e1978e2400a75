"""The Prefect flows (flows/pipeline.py, flows/regression.py) against a temporary Prefect server.

The pipeline flow runs on copies of the session's built tiny project (tests/conftest.py), so DVC
has something to skip. The regression suite's rules, history, trend and its schedule on a real
server are tested in tests/test_regression_suite.py; its command line here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, STAGES, set_params, snapshot

from flows import pipeline as pipeline_module  # first: sets the Prefect defaults
from flows import regression as regression_module
from flows.pipeline import (
    DVC_PUSH_HINT, RAN, SKIPPED, StageNode, failure_message, pipeline, read_dag, run_graph,
    transient_only,
)
from flows.regression import RegressionError
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, LogFilter, LogFilterFlowRunId,
    TaskRunFilter, TaskRunFilterFlowRunId,
)
from prefect.client.schemas.sorting import LogSort
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Failed
from prefect.testing.utilities import prefect_test_harness



@pytest.fixture(scope="module")
def prefect_server():
    """A temporary Prefect server and database for this module's flow runs."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


def task_runs(flow_run_id) -> dict[str, str]:
    """{task run name: state type} of a flow run, from the Prefect API."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])))
    return {run.name: run.state.type.value for run in runs}


def task_waits(flow_run_id) -> dict[str, set[str]]:
    """{task run name: names of the task runs it waited for} (the edges of the UI's run graph)."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])))
    names = {run.id: run.name for run in runs}
    return {run.name: {names[i.id] for i in run.task_inputs.get("wait_for", [])} for run in runs}


def flow_logs(flow_run_id) -> list[str]:
    """The messages the Prefect API holds for a flow run (its tasks' included), oldest first."""
    APILogWorker.drain_all(timeout=30)
    logs = []
    with get_client(sync_client=True) as client:
        while True:  # the API answers in pages
            page = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[flow_run_id])), sort=LogSort.TIMESTAMP_ASC, offset=len(logs))
            if not page:
                return [log.message for log in logs]
            logs += page


def unchanged(project: Path, stage: str) -> str:
    """What DVC does with an unchanged stage: skips it, unless dvc.yaml marks it
    `always_changed` (the params gate: it only validates)."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    return RAN if stages.get(stage, {}).get("always_changed") else SKIPPED


def artifact_count(key: str) -> int:
    """How many versions of the artifact `key` the Prefect API holds (any flow run)."""
    with get_client(sync_client=True) as client:
        return len(client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]))))


def artifacts(flow_run_id) -> dict[str, object]:
    """{artifact key: data} of a flow run, from the Prefect API."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a.data for a in found}


# ----------------------------------------------------------------------------------------------
# the DAG comes from DVC


def test_dag_is_read_from_dvc_with_foreach_expanded(tiny_project):
    dag = read_dag(tiny_project)
    assert [node.name for node in dag] == STAGES
    upstream = {node.name: set(node.upstream) for node in dag}
    assert upstream["params"] == set()
    assert upstream["reference"] == upstream["collocation"] == upstream["init"] == {"params"}
    assert upstream["train@level0"] == {"params", "reference", "collocation", "init"}
    assert upstream["train@level1"] == {"params", "reference", "collocation", "train@level0"}
    assert upstream["evaluate"] == {"params", "reference", "refine", "window0"}
    assert upstream["window0"] == {"refine"}
    assert dict((n.name, n.cmd) for n in dag)["train@level1"].startswith(
        "python -m pinn.stages.train --params params.yaml --level level1 --start data/export/level0.npz ")

    # a third level in params.yaml and an extra stage in dvc.yaml show up: nothing is hard-coded
    set_params(tiny_project, **{"multilevel.num_levels": 3,
                                "multilevel.levels.level2": {"steps": 10, "init_from": "level1"}})
    dvc_yaml = yaml.safe_load((tiny_project / "dvc.yaml").read_text())
    dvc_yaml["stages"]["summary"] = {"cmd": "cp metrics.json summary.json",
                                     "deps": ["metrics.json"], "outs": ["summary.json"]}
    (tiny_project / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    names = [node.name for node in read_dag(tiny_project)]
    assert names.index("train@level1") < names.index("train@level2") < names.index("refine")
    assert names.index("evaluate") < names.index("summary")
    assert dict((n.name, n.upstream) for n in read_dag(tiny_project))["summary"] == ("evaluate",)


def test_run_graph_is_the_data_graph_without_the_gate_fan(tiny_project):
    """Every stage depends on the params gate's stamp; the run graph draws that edge only where it
    is the stage's one upstream stage, and keeps every other DVC edge (implied or not)."""
    waits = run_graph(read_dag(tiny_project))
    assert list(waits) == STAGES
    assert waits["params"] == ()
    assert waits["reference"] == waits["collocation"] == waits["init"] == ("params",)
    assert waits["train@level0"] == ("collocation", "init", "reference")
    assert waits["train@level1"] == ("collocation", "reference", "train@level0")
    assert waits["window0"] == ("refine",)
    # reference: implied by refine, but data; refine: implied by window0 (its copy), but data
    assert waits["evaluate"] == ("reference", "refine", "window0")
    assert [s for s, ups in waits.items() if "params" in ups] == ["reference", "collocation", "init"]

    # no gate (a stage that is not upstream of everything): nothing is dropped
    dag = [StageNode("a", "", ()), StageNode("b", "", ()), StageNode("c", "", ("a", "b")),
           StageNode("d", "", ("a", "c"))]
    assert run_graph(dag) == {"a": (), "b": (), "c": ("a", "b"), "d": ("a", "c")}
    # a stage with no edges (the plots page) does not stop the gate from being one
    dag = [StageNode("g", "", ()), StageNode("page", "", ()), StageNode("b", "", ("g",)),
           StageNode("c", "", ("g", "b"))]
    assert run_graph(dag) == {"g": (), "page": (), "b": ("g",), "c": ("b",)}


# ----------------------------------------------------------------------------------------------
# the pipeline flow


@pytest.mark.slow  # runs the whole tiny pipeline under Prefect (minutes)
def test_pipeline_flow_runs_changed_stages_and_skips_the_rest(
        built_copy, pipeline_environ, prefect_server):
    set_params(built_copy, **{"report.dpi": 41})
    state = pipeline(params_path=str(built_copy / "params.yaml"), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["stages"] == {s: (RAN if s in ("params", "report") else SKIPPED) for s in STAGES}
    metrics = json.loads((built_copy / "metrics.json").read_text())
    assert result["metrics"] == metrics

    flow_run = state.state_details.flow_run_id
    runs = task_runs(flow_run)
    assert set(runs) == set(STAGES) | {name for name in runs if name.startswith("publish-report")}
    assert all(state_type == "COMPLETED" for state_type in runs.values()), runs
    found = artifacts(flow_run)
    assert {"pinn-report", "pinn-metrics", "pinn-stages"} <= set(found)
    report = found["pinn-report"]
    assert report.startswith("# Regression benchmark")
    assert "data:image/png;base64,iVBORw0KGgo" in report  # figures embedded as PNG
    assert "](convergence.png)" not in report
    table = json.loads(found["pinn-metrics"])
    assert {row["metric"]: row["value"] for row in table}["rel_l2"] == metrics["rel_l2"]
    stages_table = json.loads(found["pinn-stages"])
    assert [(r["stage"], r["outcome"]) for r in stages_table] == list(result["stages"].items())
    # the UI's run graph: the data dependencies, not an edge from the gate to every stage
    waits = task_waits(flow_run)
    expected = run_graph(read_dag(built_copy))
    assert {s: waits[s] for s in STAGES} == {s: set(expected[s]) for s in STAGES}
    assert waits["train@level1"] == {"collocation", "reference", "train@level0"}
    # the report stage ran, and DVC's push hint (no remote here) is not in the log
    logs = flow_logs(flow_run)
    assert any("Running stage 'report'" in m for m in logs)
    assert not any("dvc push" in m for m in logs)

    again = pipeline(params_path=str(built_copy / "params.yaml"), return_state=True)
    assert again.is_completed(), again.message
    assert again.result()["stages"] == {s: unchanged(built_copy, s) for s in STAGES}


def test_pipeline_flow_rejects_bad_params_before_any_stage(
        built_copy, pipeline_environ, prefect_server, capsys):
    set_params(built_copy, **{"sampling.hard_bank.p_max": 1.5})
    before = snapshot(built_copy)
    state = pipeline(params_path=str(built_copy / "params.yaml"), return_state=True)
    assert state.is_failed()
    assert state.message == ("error: params.yaml: sampling.hard_bank.p_max = 1.5: "
                             "must be less than or equal to 1")
    assert task_runs(state.state_details.flow_run_id) == {}
    assert snapshot(built_copy) == before

    assert pipeline_module.main(["--params", str(built_copy / "params.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == state.message
    assert not any("Traceback" in line for line in err)
    assert snapshot(built_copy) == before


@pytest.mark.slow  # runs the whole tiny pipeline under Prefect (minutes)
def test_pipeline_flow_fails_at_once_on_a_user_error_in_a_stage(
        built_copy, pipeline_environ, prefect_server, capsys):
    """A stage that exits with 2 (a missing params file) is not retried; the flow fails with the
    stage's one-line message, and nothing in the log is a traceback."""
    dvc_yaml = yaml.safe_load((built_copy / "dvc.yaml").read_text())
    dvc_yaml["stages"]["refine"]["cmd"] = dvc_yaml["stages"]["refine"]["cmd"].replace(
        "--params params.yaml", "--params missing.yaml")
    (built_copy / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    state = pipeline(params_path=str(built_copy / "params.yaml"), return_state=True)
    assert state.is_failed()
    assert state.message == "stage refine: missing.yaml: file not found"
    assert state.name == "UserError"
    flow_run = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        refine_run = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run]), name={"any_": ["refine"]}))[0]
    assert refine_run.run_count == 1  # not retried
    assert refine_run.state.message == state.message
    upstream = ["params", "plots_page", "reference", "collocation", "init", "train@level0",
                "train@level1"]
    assert task_runs(flow_run) == {**{s: "COMPLETED" for s in upstream}, "refine": "FAILED"}
    stages_table = json.loads(artifacts(flow_run)["pinn-stages"])
    assert [(r["stage"], r["outcome"]) for r in stages_table] == (
        [(s, unchanged(built_copy, s)) for s in upstream]
        + [("refine", "failed"), ("window0", "not run"), ("evaluate", "not run"),
           ("report", "not run")])
    logs = flow_logs(flow_run)
    assert state.message in logs
    assert not [m for m in logs if "Traceback" in m or "Retry" in m], logs

    # the command line: the same line, exit status 2
    assert pipeline_module.main(["--params", str(built_copy / "params.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: stage refine: missing.yaml: file not found"
    assert not any("Traceback" in line for line in err)


@pytest.mark.slow  # runs the whole tiny pipeline under Prefect (minutes)
def test_pipeline_flow_retries_a_transient_failure(built_copy, pipeline_environ, prefect_server):
    """refine's command is killed the first time (exit 137): retried once, then the flow runs on."""
    dvc_yaml = yaml.safe_load((built_copy / "dvc.yaml").read_text())
    cmd = dvc_yaml["stages"]["refine"]["cmd"]
    dvc_yaml["stages"]["refine"]["cmd"] = (
        f"{{ test -e killed-once || {{ touch killed-once; exit 137; }}; }} && {cmd}")
    (built_copy / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    state = pipeline(params_path=str(built_copy / "params.yaml"), return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["stages"]["refine"] == RAN
    flow_run = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        refine_run = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run]), name={"any_": ["refine"]}))[0]
    assert refine_run.run_count == 2
    assert refine_run.state.type.value == "COMPLETED"
    logs = flow_logs(flow_run)
    assert any("Retry 1/1" in m and "exited with 137" in m for m in logs), logs
    assert not any("dvc push" in m for m in logs)


def test_failure_classification():
    """Exit 2 (user error) and 3 (divergence) of the stage's command are permanent: their one-line
    message, no retry; anything else (killed, DVC's own errors) is retried."""
    lines = ["Running stage 'train@level0':",
             "> python -m pinn.stages.train --params params.yaml --level level0",
             "error: level level0: training diverged (non-finite loss) between steps 10 and 20",
             "ERROR: failed to reproduce 'train@level0': failed to run: python -m pinn.stages.train "
             "--params params.yaml --level level0, exited with 3"]
    assert failure_message("train@level0", 255, lines) == (
        3, "stage train@level0: level level0: training diverged (non-finite loss) between steps "
           "10 and 20")
    killed = lines[:2] + [lines[3].replace("exited with 3", "exited with -9")]
    status, message = failure_message("train@level0", 255, killed)
    assert status == -9 and message.startswith(
        "stage train@level0: `dvc repro --single-item train@level0` exited with 255 "
        "(the stage's command with -9): ERROR: failed to reproduce")
    assert failure_message("x", 255, ["ERROR: unexpected error - lock held"])[0] is None

    assert not transient_only(None, None, Failed(name="UserError"))
    assert not transient_only(None, None, Failed(name="Diverged"))
    assert transient_only(None, None, Failed(message="Task run encountered an exception"))
    assert DVC_PUSH_HINT == "Use `dvc push` to send your updates to remote storage."


# ----------------------------------------------------------------------------------------------
# the regression flow


def test_regression_serve_entry_point(monkeypatch):
    calls = []
    monkeypatch.setattr(regression_module.regression, "serve",
                        lambda **kwargs: calls.append(kwargs))
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert regression_module.main(["--serve", "--cron", "0 3 * * *"]) == 0
    assert calls == [{"name": "pinn-regression-nightly", "cron": "0 3 * * *",
                      "parameters": {"suite_path": "benchmarks/regression/suite.yaml",
                                     "baseline_path": "benchmarks/regression/baseline.json",
                                     "history_path": "benchmarks/regression/history.jsonl",
                                     "trend_path": "benchmarks/regression/trend.png"}}]
    calls.clear()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert regression_module.main(["--serve", "--name", "n", "--suite", "s.yaml",
                                       "--workdir", "w", "--no-rerun"]) == 0
    assert calls[0]["name"] == "n" and calls[0]["parameters"]["suite_path"] == "s.yaml"
    assert calls[0]["parameters"]["workdir"] == "w" and calls[0]["parameters"]["rerun"] is False


def test_regression_serve_refuses_without_a_server(monkeypatch, capsys):
    """An ephemeral server cannot run a schedule: `--serve` says what to start, in one line."""
    calls = []
    monkeypatch.setattr(regression_module.regression, "serve",
                        lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert regression_module.main(["--serve"]) == 2
        with pytest.raises(RegressionError, match="prefect server start"):
            regression_module.serve("0 3 * * *")
    assert calls == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: --serve needs a running Prefect server")
    assert "`prefect server start`" in err[0] and "PREFECT_API_URL" in err[0]
