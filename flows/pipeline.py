"""Prefect flow over the DVC pipeline: one Prefect task per dvc.yaml stage.

The stages and their order come from DVC itself: `dvc.repo.Repo(root).index.graph` is the graph DVC
builds from dvc.yaml (foreach expanded, so `train` is `train@level0`, `train@level1`, ...; an edge
runs from a stage to each stage whose outputs it depends on). The flow runs the stages in a
topological order of that graph (ties in dvc.yaml order), each as one task that calls

    dvc repro --single-item <stage>          (subprocess, in the project root)

so DVC's lock file and cache decide whether the stage runs; the task reports which happened:

    ran        DVC ran the stage's command
    skipped    deps, params and outs unchanged ("Stage 'x' didn't change, skipping")
    restored   DVC restored the outputs from its run cache instead of running the command

Before any stage, `pinn check-params` validates params.yaml: a bad file fails the flow with the
one-line error naming the key, and touches nothing. The train and refine stages are retried once
(a retried train stage resumes from its checkpoint). At the end the report is attached as Prefect
artifacts: `pinn-report` (report/report.md with its figures embedded as base64 PNG), `pinn-metrics`
(metrics.json as a table) and `pinn-stages` (what each stage did).

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
from typing import Any, NamedTuple



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

RAN, SKIPPED, RESTORED = "ran", "skipped", "restored"
#: stages retried once on failure, by base name (a foreach stage `train@level0` has base `train`)
RETRIES = {"train": 1, "refine": 1}
#: figures larger than this are linked by path instead of embedded in the report artifact
MAX_EMBEDDED_IMAGE_BYTES = 2_000_000
#: state name of a flow run stopped by invalid params (exit status 2 from `python -m flows.pipeline`)
INVALID_PARAMS = "InvalidParams"


class StageFailed(RuntimeError):
    """`dvc repro --single-item <stage>` exited with a non-zero status."""


class StageNode(NamedTuple):
    """One stage of DVC's graph: its address, command and the stages it depends on."""

    name: str  # DVC address, e.g. "train@level0"
    cmd: str
    upstream: tuple[str, ...]


def subprocess_env() -> dict[str, str]:
    """Environment for `dvc`/`pinn` subprocesses: this interpreter's scripts directory on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def read_dag(root: str | Path) -> list[StageNode]:
    """The project's stages from DVC's own graph, in topological order (ties: dvc.yaml order)."""
    import networkx as nx
    from dvc.repo import Repo

    root = Path(root).absolute()
    with Repo(str(root)) as repo:
        index = repo.index
        names = {stage: stage_address(stage, root) for stage in index.stages}
        position = {name: i for i, name in enumerate(names.values())}
        graph = index.graph  # edge: stage -> a stage whose outputs it depends on
        order = nx.lexicographical_topological_sort(
            graph.reverse(copy=True), key=lambda stage: position[names[stage]]
        )
        return [
            StageNode(
                name=names[stage],
                cmd=" && ".join(stage.cmd) if isinstance(stage.cmd, list) else (stage.cmd or ""),
                upstream=tuple(sorted(names[dep] for dep in graph.successors(stage))),
            )
            for stage in order
        ]


def stage_address(stage, root: Path) -> str:
    """How `dvc repro` run in `root` names a stage: `name` for root dvc.yaml, else `file:name`."""
    from dvc.stage import PipelineStage

    relative = Path(os.path.relpath(stage.path, root)).as_posix()
    if not isinstance(stage, PipelineStage):
        return relative  # a .dvc file
    return stage.name if relative == "dvc.yaml" else f"{relative}:{stage.name}"


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


def _run_logged(cmd: list[str], cwd: Path, logger) -> tuple[int, list[str]]:
    """Run `cmd`, sending each line of its stdout+stderr to the Prefect logger as it comes."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            lines.append(line)
            logger.info(line)
    return proc.wait(), lines


@task(name="dvc-stage", task_run_name="{stage}")
def run_stage(stage: str, root: str, force: bool = False) -> dict[str, Any]:
    """`dvc repro --single-item <stage>`: DVC runs it or skips it; returns what it did."""
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    start = time.monotonic()
    returncode, lines = _run_logged(cmd, Path(root), logger)
    seconds = time.monotonic() - start
    if returncode != 0:
        errors = [ln for ln in lines if ln.lower().startswith("error")] or lines[-3:]
        raise StageFailed(f"stage {stage}: `dvc repro --single-item {stage}` exited with "
                          f"{returncode}: " + " | ".join(errors))
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
def publish_report(root: str, stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Attach stage outcomes, metrics.json and report/report.md (figures embedded) as artifacts."""
    logger = get_run_logger()
    root_path = Path(root)
    create_table_artifact(table=stages, key="pinn-stages",
                          description="What DVC did with each stage of dvc.yaml in this run.")
    metrics = None
    metrics_path = root_path / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        create_table_artifact(
            table=[{"metric": k, "value": v} for k, v in sorted(metrics.items())],
            key="pinn-metrics", description=f"{metrics_path}",
        )
    else:
        logger.warning("%s: missing, no metrics artifact", metrics_path)
    report = root_path / "report" / "report.md"
    if report.exists():
        markdown = embed_images(report.read_text(), report.parent)
        create_markdown_artifact(markdown=markdown, key="pinn-report",
                                 description=f"{report} (figures embedded)")
        logger.info("report: %s", report)
    else:
        logger.warning("%s: missing, no report artifact", report)
    return metrics


@flow(name="pinn-pipeline", description="The dvc.yaml stages, each through `dvc repro --single-item`.")
def pipeline(params_path: str = "params.yaml", force: bool = False) -> dict[str, Any]:
    """Run the DVC pipeline of the project whose params.yaml is `params_path`, stage by stage.

    Returns {"stages": {stage: "ran" | "skipped" | "restored"}, "metrics": metrics.json | None,
    "report": path of report.md}. Invalid params or a failed stage end the run in a Failed state
    whose message is the error (params: the one-line message naming the key).
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
    logger.info("stages (from DVC's graph, in order): %s", ", ".join(node.name for node in dag))
    states: dict[str, Any] = {}
    done: list[dict[str, Any]] = []
    for node in dag:
        retries = RETRIES.get(node.name.split("@")[0], 0)
        state = run_stage.with_options(retries=retries, retry_delay_seconds=1)(
            node.name, str(root), force,
            wait_for=[states[u] for u in node.upstream if u in states], return_state=True,
        )
        states[node.name] = state
        if not state.is_completed():
            error = state.result(raise_on_failure=False)
            message = str(error) if isinstance(error, BaseException) else (state.message or "failed")
            done.append({"stage": node.name, "outcome": "failed", "seconds": None})
            done += [{"stage": n.name, "outcome": "not run", "seconds": None}
                     for n in dag[len(done):]]
            create_table_artifact(table=done, key="pinn-stages",
                                  description="What DVC did with each stage of dvc.yaml in this run.")
            logger.error(message)
            return Failed(message=message)
        done.append(state.result())

    metrics = publish_report(str(root), done)
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
        return 2 if state.name == INVALID_PARAMS else 1
    result = state.result()
    for stage, outcome in result["stages"].items():
        print(f"{stage:<16} {outcome}")
    print(f"report: {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
