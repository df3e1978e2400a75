"""Prefect flow over the DVC pipeline: one Prefect task per dvc.yaml stage.

The stages and their order come from DVC itself (`pinn.pipeline.read_dag`: the graph DVC builds
from dvc.yaml, foreach expanded, so `train` is `train@level0`, `train@level1`, ...; an edge runs
from a stage to each stage whose outputs it depends on). The flow runs the stages in a
topological order of that graph (ties in dvc.yaml order), each as one task that calls

    dvc repro --single-item <stage>          (subprocess, in the project root)

so DVC's lock file and cache decide whether the stage runs; the task reports which happened:

    ran        DVC ran the stage's command
    skipped    deps, params and outs unchanged ("Stage 'x' didn't change, skipping")
    restored   DVC restored the outputs from its run cache instead of running the command

Each task waits for the stages whose outputs it reads (the run graph in the Prefect UI is DVC's
data graph; the params gate, upstream of everything, is drawn only to the stages that have no
other upstream stage: every other edge from it is implied).

Failures: a stage command that exits with 2 (user error: bad params, a missing input) or 3
(divergence) fails the flow at once, with the stage's one-line message and no traceback; any
other failure (killed, out of memory, a lock held by another DVC process) is taken as transient
and the stage is retried once (a retried train/refine stage resumes from its checkpoint).

Before any stage, `pinn check-params` validates params.yaml: a bad file fails the flow with the
one-line error naming the key, and touches nothing. At the end the report is attached as Prefect
artifacts under `<artifacts>-report` (report/report.md with its figures embedded as base64 PNG),
`<artifacts>-metrics` (metrics.json as a table) and `<artifacts>-stages` (what each stage did);
`artifacts` is "pinn" for a user's run (the regression flow uses its own prefix). DVC's
"Use `dvc push` ..." hint is left out of the log when the project has no default remote.

    python -m flows.pipeline [--params params.yaml] [--force]       ephemeral Prefect server
    prefect server start      # then, in another shell:
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.pipeline     # UI: http://127.0.0.1:4200
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def project_root() -> Path:
    """The directory holding the project's dvc.yaml: this checkout, else the working directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "dvc.yaml").exists() else Path.cwd()


# Prefect defaults for a local, offline project; Prefect reads them when first imported, so they
# are set before the import below (each only if not already set in the environment):
#   PREFECT_HOME in the project (git-ignored) instead of ~/.prefect; a generous startup timeout for
#   the ephemeral server (its first start is slow); no server telemetry (it fails offline).
os.environ.setdefault("PREFECT_HOME", str(project_root() / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.states import Failed  # noqa: E402

from pinn.pipeline import (  # noqa: E402,F401 (re-exported)
    DVC_PUSH_HINT, StageNode, has_default_remote, read_dag, subprocess_env,
)

RAN, SKIPPED, RESTORED = "ran", "skipped", "restored"
#: retries of a stage after a transient failure (exit statuses other than `PERMANENT_EXIT`)
RETRIES = 1
#: exit statuses of a stage command that are not transient (pinn.errors): no retry, the flow fails
#: at once with the stage's one-line message; values are the failed task's state name
PERMANENT_EXIT = {2: "UserError", 3: "Diverged"}
#: figures larger than this are linked by path instead of embedded in the report artifact
MAX_EMBEDDED_IMAGE_BYTES = 2_000_000
#: state name of a flow run stopped by invalid params (exit status 2 from `python -m flows.pipeline`)
INVALID_PARAMS = "InvalidParams"
#: printed by `dvc repro` after any stage ran, whatever the configuration (dvc/commands/repro.py)
#: default prefix of the artifact keys (`pinn-report`, `pinn-metrics`, `pinn-stages`)
ARTIFACTS = "pinn"


class StageFailed(RuntimeError):
    """`dvc repro --single-item <stage>` failed for a reason that may be transient."""


def run_graph(dag: list[StageNode]) -> dict[str, tuple[str, ...]]:
    """{stage: the stages it waits for}: DVC's edges, less the implied edges from a gate.

    A gate (the params stage) is a stage with no upstream that every other stage depends on,
    directly or not; its edge to a stage with another upstream stage is implied by that stage and
    left out, so the graph shows the data dependencies instead of a fan from the gate."""
    upstream = {node.name: set(node.upstream) for node in dag}
    ancestors: dict[str, set[str]] = {}
    for node in dag:  # topological order: upstream stages come first
        ancestors[node.name] = set().union(*({u} | ancestors.get(u, set())
                                             for u in upstream[node.name]))
    names = list(upstream)
    # stages with no edges at all (the plots page) take no part in deciding what a gate is
    linked = [n for n in names if upstream[n] or any(n in upstream[o] for o in names)]
    gates = {g for g in linked if not upstream[g]
             and all(g in ancestors[other] for other in linked if other != g)}
    return {name: tuple(sorted(u for u in ups if u not in gates or ups <= gates))
            for name, ups in upstream.items()}


def check_params(root: Path, params_name: str = "params.yaml") -> str | None:
    """Run `pinn check-params`; None when valid, else its error message (one line per problem)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pinn.cli", "check-params", params_name],
        cwd=root, env=subprocess_env(), capture_output=True, text=True,
    )
    if proc.returncode == 0:
        return None
    return (proc.stderr.strip() or proc.stdout.strip()
            or f"error: {params_name}: pinn check-params exited with {proc.returncode}")


def stage_outcome(stage: str, output: str, force: bool = False) -> str:
    """What `dvc repro --single-item <stage>` did, from DVC's messages."""
    quoted = re.escape(f"'{stage}'")
    if re.search(rf"Running stage {quoted}", output):
        return RAN
    if re.search(rf"Stage {quoted} is cached - skipping run", output):
        return RESTORED
    if re.search(rf"{quoted} didn't change, skipping", output):
        return SKIPPED
    return RAN if force else "unknown"


def _run_logged(cmd: list[str], cwd: Path, logger, hide: frozenset[str] = frozenset()
                ) -> tuple[int, list[str]]:
    """Run `cmd`, sending each line of its stdout+stderr to the Prefect logger as it comes
    (lines in `hide` are neither logged nor returned)."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line and line.strip() not in hide:
            lines.append(line)
            logger.info(line)
    return proc.wait(), lines


def stage_exit_status(stage: str, lines: list[str]) -> int | None:
    """The exit status of the stage's command, from DVC's "failed to reproduce '<stage>': failed to
    run: <cmd>, exited with N" (None when DVC failed before or without running it)."""
    quoted = re.escape(f"'{stage}'")
    for line in reversed(lines):
        m = re.search(rf"failed to reproduce {quoted}: .*exited with (-?\d+)\s*$", line)
        if m:
            return int(m.group(1))
    return None


def failure_message(stage: str, returncode: int, lines: list[str]) -> tuple[int | None, str]:
    """(the stage command's exit status, the one-line message for the flow) of a failed stage.

    A stage command that exits with a status in `PERMANENT_EXIT` has printed its error as one line
    `error: ...` (pinn.errors); that line is the message: `stage <name>: <error>`. Otherwise the
    message quotes DVC's error lines (or the last lines of output)."""
    status = stage_exit_status(stage, lines)
    own = [ln for ln in lines if ln.startswith("error: ")]  # pinn's one-line errors (DVC: "ERROR:")
    if status in PERMANENT_EXIT and own:
        return status, f"stage {stage}: {own[-1].removeprefix('error: ')}"
    errors = [ln for ln in lines if ln.lower().startswith("error")] or lines[-3:]
    return status, (f"stage {stage}: `dvc repro --single-item {stage}` exited with {returncode}"
                    + (f" (the stage's command with {status})" if status is not None else "")
                    + ": " + " | ".join(errors))


def transient_only(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry a failed stage unless its failure is permanent."""
    return state.name not in PERMANENT_EXIT.values()


@task(name="dvc-stage", task_run_name="{stage}", retries=RETRIES, retry_delay_seconds=1,
      retry_condition_fn=transient_only)
def run_stage(stage: str, root: str, force: bool = False, hide_push_hint: bool = True):
    """`dvc repro --single-item <stage>`: DVC runs it or skips it; returns what it did.

    A permanent failure (the stage's command exited with a status in `PERMANENT_EXIT`) returns a
    Failed state named after it, with the stage's one-line message (no exception, so no traceback
    and no retry); any other failure raises `StageFailed` (retried by Prefect)."""
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    start = time.monotonic()
    hide = frozenset([DVC_PUSH_HINT]) if hide_push_hint else frozenset()
    returncode, lines = _run_logged(cmd, Path(root), logger, hide)
    seconds = time.monotonic() - start
    if returncode != 0:
        status, message = failure_message(stage, returncode, lines)
        if status in PERMANENT_EXIT:
            logger.error(message)
            return Failed(message=message, name=PERMANENT_EXIT[status])
        raise StageFailed(message)
    outcome = stage_outcome(stage, "\n".join(lines), force)
    logger.info("stage %s: %s by DVC (%.1f s)", stage, outcome, seconds)
    return {"stage": stage, "outcome": outcome, "seconds": round(seconds, 2)}


def embed_images(markdown: str, directory: Path) -> str:
    """Replace `![alt](file.png)` links to files in `directory` by base64 data URIs."""

    def inline(match: re.Match) -> str:
        alt, target = match.group(1), match.group(2)
        path = directory / target
        if "://" in target or target.startswith("data:") or not path.is_file():
            return match.group(0)
        data = path.read_bytes()
        if len(data) > MAX_EMBEDDED_IMAGE_BYTES:
            return f"![{alt}]({target}) (not embedded: {len(data) / 1e6:.1f} MB; see {path})"
        return f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode('ascii')})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", inline, markdown)


@task(name="publish-report")
def publish_report(root: str, stages: list[dict[str, Any]], artifacts: str = ARTIFACTS
                   ) -> dict[str, Any] | None:
    """Attach stage outcomes, metrics.json and report/report.md (figures embedded) as artifacts
    `<artifacts>-stages`, `<artifacts>-metrics`, `<artifacts>-report`."""
    logger = get_run_logger()
    root_path = Path(root)
    _stages_artifact(stages, artifacts)
    metrics = None
    metrics_path = root_path / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        create_table_artifact(
            table=[{"metric": k, "value": v} for k, v in sorted(metrics.items())],
            key=f"{artifacts}-metrics", description=f"{metrics_path}",
        )
    else:
        logger.warning("%s: missing, no metrics artifact", metrics_path)
    report = root_path / "report" / "report.md"
    if report.exists():
        markdown = embed_images(report.read_text(), report.parent)
        create_markdown_artifact(markdown=markdown, key=f"{artifacts}-report",
                                 description=f"{report} (figures embedded)")
        logger.info("report: %s", report)
    else:
        logger.warning("%s: missing, no report artifact", report)
    return metrics


def _stages_artifact(stages: list[dict[str, Any]], artifacts: str) -> None:
    create_table_artifact(table=stages, key=f"{artifacts}-stages",
                          description="What DVC did with each stage of dvc.yaml in this run.")


def _failure(state) -> str:
    """The one-line message of a failed stage task's state."""
    if state.name in PERMANENT_EXIT.values():
        return state.message or "failed"
    error = state.result(raise_on_failure=False)
    return str(error) if isinstance(error, BaseException) else (state.message or "failed")


@flow(name="pinn-pipeline", description="The dvc.yaml stages, each through `dvc repro --single-item`.")
def pipeline(params_path: str = "params.yaml", force: bool = False,
             artifacts: str = ARTIFACTS) -> dict[str, Any]:
    """Run the DVC pipeline of the project whose params.yaml is `params_path`, stage by stage.

    Returns {"stages": {stage: "ran" | "skipped" | "restored"}, "metrics": metrics.json | None,
    "report": path of report.md}. Invalid params or a failed stage end the run in a Failed state
    whose message is the error (params: the one-line message naming the key). The artifacts are
    published under the keys `<artifacts>-report`, `-metrics`, `-stages`.
    """
    logger = get_run_logger()
    params = Path(params_path).absolute()
    root = params.parent
    if params.name != "params.yaml" or not (root / "dvc.yaml").exists():
        message = (f"error: {params_path}: must be the params.yaml next to the project's dvc.yaml "
                   "(the file the DVC stages read)")
        logger.error(message)
        return Failed(message=message, name=INVALID_PARAMS)
    problem = check_params(root, params.name)
    if problem is not None:
        logger.error(problem)
        return Failed(message=problem, name=INVALID_PARAMS)

    dag = read_dag(root)
    waits = run_graph(dag)
    hide_push_hint = not has_default_remote(root)
    logger.info("stages (from DVC's graph, in order): %s", ", ".join(node.name for node in dag))
    futures: dict[str, Any] = {}
    done: list[dict[str, Any]] = []
    for node in dag:
        # one stage at a time (DVC locks the repository); futures, not states, as `wait_for`: a
        # state would be searched for results of other tasks and grow edges that are not there
        future = run_stage.submit(node.name, str(root), force, hide_push_hint,
                                  wait_for=[futures[u] for u in waits[node.name]])
        future.wait()
        futures[node.name] = future
        state = future.state
        if not state.is_completed():
            message = _failure(state)
            done.append({"stage": node.name, "outcome": "failed", "seconds": None})
            done += [{"stage": n.name, "outcome": "not run", "seconds": None}
                     for n in dag[len(done):]]
            _stages_artifact(done, artifacts)
            logger.error(message)
            permanent = state.name in PERMANENT_EXIT.values()
            return Failed(message=message, name=state.name if permanent else "Failed")
        done.append(state.result())

    metrics = publish_report(str(root), done, artifacts)
    return {
        "stages": {row["stage"]: row["outcome"] for row in done},
        "metrics": metrics,
        "report": str(root / "report" / "report.md"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml",
                        help="the project's params.yaml (its directory is the DVC project root)")
    parser.add_argument("--force", action="store_true", help="rerun every stage")
    args = parser.parse_args(argv)
    state = pipeline(params_path=args.params, force=args.force, return_state=True)
    if not state.is_completed():
        message = state.message or "pipeline failed"
        print(message if message.startswith("error:") else f"error: {message}", file=sys.stderr)
        exits = {INVALID_PARAMS: 2, **{name: code for code, name in PERMANENT_EXIT.items()}}
        return exits.get(state.name, 1)
    result = state.result()
    for stage, outcome in result["stages"].items():
        print(f"{stage:<16} {outcome}")
    print(f"report: {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
