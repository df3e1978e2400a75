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

Runs with overrides: DVC experiments. Given `overrides` (dotted params keys, as `dvc exp run -S`
takes them: {"sampling.method": "rad", "optimizer.learning_rate": 1e-3}; `~key: null` deletes
one) and/or an experiment `name`, the flow first validates params.yaml with the overrides applied
(in memory; `pinn check-params` on the result: a bad key or value fails the run, state
`InvalidParams`, with the one-line message naming the key, before anything runs), then runs

    dvc exp run --temp -n <name> -S key=value ...          (one task, `dvc-experiment`)

DVC runs the whole pipeline in a temporary copy of the project (HEAD plus the workspace's changes
to tracked files): params.yaml, the lock file and the outputs in the workspace are left as they
are, unchanged stages come from DVC's run cache, and the experiment is a git ref listed by
`dvc exp show` beside the ones run with `dvc exp run` (it needs a git repository with a commit). A
stage inside `dvc exp run` is not a Prefect task of its own: DVC alone knows the temporary copy;
its output streams to the task's log, and the `<artifacts>-exp-<name>-stages` artifact says what
DVC did with each stage (`-metrics` and `-report` come from the experiment's commit). An existing
experiment of that name fails the run before anything runs, unless `force` (which also reruns
every stage). Without overrides or name, the stages run in the workspace as above.

    python -m flows.pipeline [--params params.yaml] [--force]       ephemeral Prefect server
    python -m flows.pipeline -S sampling.method=rad [--experiment NAME]    a DVC experiment
    prefect server start      # then, in another shell:
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.pipeline     # UI: http://127.0.0.1:4200
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.pipeline --serve [--name ui]
        a deployment `pinn-pipeline/ui` served by this process: "Run" in the UI, with parameters
        `overrides` and `name`, makes a DVC experiment (`--serve` without PREFECT_API_URL refuses,
        saying what to start)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping


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
from prefect.cache_policies import NO_CACHE  # noqa: E402
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
#: what `--serve` says when no Prefect server is configured (every flow's `--serve`: `require_server`)
NO_SERVER = ("error: --serve needs a running Prefect server: start one with `prefect server start` "
             "and set PREFECT_API_URL (e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api)")
#: the deployment `python -m flows.pipeline --serve` serves by default (`pinn-pipeline/ui`)
DEPLOYMENT = "ui"


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


def check_params(root: Path, params_name: str = "params.yaml", dvcfile: str = "dvc.yaml"
                 ) -> str | None:
    """Run `pinn check-params` in `root`; None when valid, else its error message (one line per
    problem). `params_name` and `dvcfile` are relative to `root` (or absolute)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pinn.cli", "check-params", str(params_name), "--dvcfile",
         str(dvcfile)],
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


# ----------------------------------------------------------------------------------------------
# runs with overrides: DVC experiments


class OverrideError(ValueError):
    """Overrides that cannot apply to the params file, or make it invalid (one line per problem,
    each naming the key)."""


def override_args(root: Path, overrides: Mapping[str, Any], params_name: str = "params.yaml"
                  ) -> list[str]:
    """Validate `overrides` (dotted key: value) against the project's params file and return them
    as `dvc exp run -S` arguments (`key=value`, `+key=value` for a key not written in the file,
    `~key` to delete one).

    The overrides are applied to the file's content in memory, as DVC applies them, and the
    result is checked by `pinn check-params` (the schema, what needs the library, the keys the
    stages declare), exactly as the pipeline's gate would; nothing is written in the project.
    Raises `OverrideError` whose message is `error: ...` lines, each naming its key."""
    from pinn.ablate import KEY_PATTERN, apply_overrides, dvc_overrides, hydra_value
    from pinn.config import ConfigError, read_yaml

    if not isinstance(overrides, Mapping):
        raise OverrideError(f"error: overrides = {overrides!r}: must be a mapping of dotted params "
                            "keys to values, e.g. {\"sampling.method\": \"rad\"}")
    problems = []
    for key, value in overrides.items():
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            problems.append(f"error: overrides: {key!r}: not a dotted params key (e.g. "
                            "sampling.method; ~key: null deletes one)")
        elif key.startswith("~") and value is not None:
            problems.append(f"error: overrides: {key} = {value!r}: a deletion (~key) takes no "
                            "value (write null)")
        else:
            try:
                hydra_value(value)
            except ValueError as e:
                problems.append(f"error: overrides: {key} = {value!r}: {e}")
    if problems:
        raise OverrideError("\n".join(problems))
    try:
        base = read_yaml(root / params_name, "params file")
    except ConfigError as e:
        raise OverrideError(f"error: {e}") from None
    if not isinstance(base, dict):
        raise OverrideError(f"error: {params_name}: must be a mapping of sections")
    items = list(overrides.items())
    merged = base
    for key, value in items:  # one at a time, as DVC applies them: the error names its key
        try:
            merged = apply_overrides(merged, [(key, value)])
        except KeyError:
            why = ("no such key to delete" if key.startswith("~")
                   else "a key above it is not a mapping")
            raise OverrideError(f"error: overrides: {key}: {why} in {params_name}") from None
    label = f"{params_name} with the overrides"
    with tempfile.TemporaryDirectory(prefix="pinn-overrides-") as scratch:
        candidate = Path(scratch) / params_name
        candidate.write_text(_dump_yaml(merged))
        problem = check_params(root, str(candidate), "dvc.yaml")
    if problem is not None:
        raise OverrideError(problem.replace(str(candidate), label))
    return dvc_overrides(base, items)


def _dump_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _git_output(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, env=subprocess_env(), capture_output=True,
                          text=True)


def experiment_problem(root: Path, name: str | None, force: bool) -> str | None:
    """Why `dvc exp run` cannot start an experiment named `name` in `root` (None: it can): no git
    repository with a commit, or an experiment of that name on this commit (unless `force`)."""
    if _git_output(root, "rev-parse", "--verify", "-q", "HEAD").returncode != 0:
        return (f"error: {root}: runs with overrides are DVC experiments, which need a git "
                "repository with a commit (git init, then commit dvc.yaml, params.yaml, ...)")
    if name is None or force:
        return None
    proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "ls", "--name-only"], cwd=root,
                          env=subprocess_env(), capture_output=True, text=True)
    if proc.returncode == 0 and name in proc.stdout.split():
        return (f"error: name = {name!r}: an experiment of that name exists on this commit: "
                f"choose another name, remove it (`dvc exp remove {name}`) or run with force")
    return None


def outcomes_in_order(output: str) -> list[tuple[str, str]]:
    """[(stage, ran | skipped | restored)] in the order DVC reported them (`dvc exp run`)."""
    found: dict[str, str] = {}
    pattern = re.compile(r"Running stage '([^']+)'|Stage '([^']+)' is cached - skipping run"
                         r"|Stage '([^']+)' didn't change, skipping")
    for m in pattern.finditer(output):
        ran, restored, skipped = m.groups()
        stage = ran or restored or skipped
        found[stage] = RAN if ran else RESTORED if restored else SKIPPED
    return list(found.items())


def experiment_failure(returncode: int, lines: list[str]) -> tuple[int | None, str]:
    """(the failed stage command's exit status, the one-line message) of a failed `dvc exp run`:
    the failed stage's message as `failure_message` gives it, else DVC's error lines."""
    for line in reversed(lines):
        m = re.search(r"failed to reproduce '([^']+)'", line)
        if m:
            return failure_message(m.group(1), returncode, lines)
    errors = [ln.removeprefix("ERROR: ") for ln in lines if ln.startswith("ERROR")] or lines[-3:]
    return None, f"`dvc exp run` exited with {returncode}: " + " | ".join(dict.fromkeys(errors))


@task(name="dvc-experiment", task_run_name="exp-{label}", retries=RETRIES, retry_delay_seconds=1,
      retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def run_experiment(root: str, set_args: list[str], name: str | None, label: str,
                   force: bool = False, hide_push_hint: bool = True):
    """`dvc exp run --temp [-n name] [-f] -S ...` in `root`, its output streamed to the log;
    returns {"experiment": its name, "stages": [{stage, outcome}]}.

    Failures as `run_stage`'s: a stage command's permanent failure returns a Failed state named
    after it (no retry), anything else raises `StageFailed` (retried once)."""
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "--temp"]
    cmd += (["-n", name] if name else []) + (["-f"] if force else [])
    cmd += [a for arg in set_args for a in ("-S", arg)]
    logger.info("dvc %s", " ".join(cmd[3:]))
    start = time.monotonic()
    hide = frozenset([DVC_PUSH_HINT]) if hide_push_hint else frozenset()
    returncode, lines = _run_logged(cmd, Path(root), logger, hide)
    seconds = time.monotonic() - start
    if returncode != 0:
        status, message = experiment_failure(returncode, lines)
        if status in PERMANENT_EXIT:
            logger.error(message)
            return Failed(message=message, name=PERMANENT_EXIT[status])
        raise StageFailed(message)
    output = "\n".join(lines)
    ran = re.findall(r"Ran experiment\(s\): (\S+)", output)
    experiment = name or (ran[-1].rstrip(",") if ran else None)
    stages = [{"stage": stage, "outcome": outcome} for stage, outcome in outcomes_in_order(output)]
    logger.info("experiment %s: %d stages (%s) in %.1f s", experiment, len(stages),
                ", ".join(f"{row['stage']} {row['outcome']}" for row in stages), seconds)
    return {"experiment": experiment, "stages": stages, "seconds": round(seconds, 2)}


def find_experiment(root: Path, name: str) -> dict[str, Any] | None:
    """{"rev", "baseline", "params", "metrics"} of the experiment `name` from `dvc exp show
    --json` (params: params.yaml's; metrics: metrics.json's), None when DVC lists none."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=root,
                          env=subprocess_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    for commit in json.loads(proc.stdout or "[]"):
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if (exp.get("name") or rev.get("name")) != name:
                    continue
                data = rev.get("data") or {}
                files = data.get("params") or {}
                metrics = data.get("metrics") or {}
                return {"rev": rev["rev"], "baseline": commit.get("rev"),
                        "params": (files.get("params.yaml") or {}).get("data") or {},
                        "metrics": (metrics.get("metrics.json") or {}).get("data")}
    return None


def experiment_key(artifacts: str, name: str) -> str:
    """`<artifacts>-exp-<name>` in the characters Prefect allows in an artifact key."""
    return f"{artifacts}-exp-" + (re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "x")


@task(name="publish-experiment", cache_policy=NO_CACHE)
def publish_experiment(root: str, run: dict[str, Any], overrides: dict[str, Any],
                       artifacts: str = ARTIFACTS) -> dict[str, Any]:
    """The experiment as DVC has it (`dvc exp show --json`), published as the artifacts
    `<key>-stages`, `<key>-metrics` and `<key>-report` (report/ of the experiment's commit,
    figures embedded), key = `<artifacts>-exp-<name>`."""
    logger = get_run_logger()
    root_path, name = Path(root), run["experiment"]
    key = experiment_key(artifacts, name or "unnamed")
    create_table_artifact(table=run["stages"], key=f"{key}-stages",
                          description=f"What DVC did with each stage of experiment {name}.")
    found = find_experiment(root_path, name) if name else None
    if found is None:
        logger.warning("experiment %s: not in `dvc exp show`", name)
        return {"experiment": name, "rev": None, "metrics": None}
    metrics = found["metrics"]
    if metrics:
        create_table_artifact(
            table=[{"metric": k, "value": v} for k, v in sorted(metrics.items())],
            key=f"{key}-metrics",
            description=f"metrics.json of experiment {name} ({found['rev'][:7]}); overrides "
                        + json.dumps(overrides, sort_keys=True))
    with tempfile.TemporaryDirectory(prefix="pinn-exp-report-") as scratch:
        archive = subprocess.run(["git", "archive", "--format=tar", found["rev"], "report"],
                                 cwd=root_path, capture_output=True)
        report = Path(scratch) / "report" / "report.md"
        if archive.returncode == 0:
            import io
            import tarfile

            with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                tar.extractall(scratch, filter="data")
        if report.exists():
            create_markdown_artifact(
                markdown=embed_images(report.read_text(), report.parent), key=f"{key}-report",
                description=f"report/report.md of experiment {name} ({found['rev'][:7]}; "
                            f"`git show {found['rev'][:7]}:report/report.md`)")
        else:
            logger.warning("experiment %s: no report/report.md in its commit", name)
    logger.info("experiment %s (%s): rel L2 %s; `dvc exp show` lists it", name, found["rev"][:7],
                (metrics or {}).get("rel_l2"))
    return {"experiment": name, "rev": found["rev"], "metrics": metrics}


def _experiment(root: Path, overrides: dict[str, Any], name: str | None, force: bool,
                artifacts: str, logger) -> dict[str, Any] | Failed:
    """The body of the flow for a run with overrides (or a name): validate, `dvc exp run`."""
    try:
        set_args = override_args(root, overrides)
    except OverrideError as e:
        logger.error(str(e))
        return Failed(message=str(e), name=INVALID_PARAMS)
    problem = experiment_problem(root, name, force)
    if problem is not None:
        logger.error(problem)
        return Failed(message=problem, name=INVALID_PARAMS)
    logger.info("experiment %s: params.yaml with %s", name or "(named by DVC)",
                " ".join(set_args) or "no overrides")
    future = run_experiment.submit(str(root), set_args, name, name or "unnamed", force,
                                   not has_default_remote(root))
    future.wait()
    state = future.state
    if not state.is_completed():
        message = _failure(state)
        logger.error(message)
        permanent = state.name in PERMANENT_EXIT.values()
        return Failed(message=message, name=state.name if permanent else "Failed")
    run = state.result()
    published = publish_experiment(str(root), run, overrides, artifacts)
    return {"experiment": run["experiment"], "rev": published["rev"], "overrides": overrides,
            "stages": {row["stage"]: row["outcome"] for row in run["stages"]},
            "metrics": published["metrics"]}


@flow(name="pinn-pipeline",
      description="The dvc.yaml stages, each through `dvc repro --single-item`; with `overrides` "
                  "(dotted params keys) or a `name`, a DVC experiment (`dvc exp run --temp`).")
def pipeline(params_path: str = "params.yaml", force: bool = False,
             artifacts: str = ARTIFACTS, overrides: dict[str, Any] | None = None,
             name: str | None = None) -> dict[str, Any]:
    """Run the DVC pipeline of the project whose params.yaml is `params_path`, stage by stage.

    Returns {"stages": {stage: "ran" | "skipped" | "restored"}, "metrics": metrics.json | None,
    "report": path of report.md}. Invalid params or a failed stage end the run in a Failed state
    whose message is the error (params: the one-line message naming the key). The artifacts are
    published under the keys `<artifacts>-report`, `-metrics`, `-stages`.

    With `overrides` ({"sampling.method": "rad", ...}, as `dvc exp run -S` takes them) or a
    `name`, the run is the DVC experiment `name` (DVC names it when None): the overrides are
    validated first (params.yaml with them applied, checked as `pinn check-params` does; a bad
    key fails the run, state `InvalidParams`, naming the key), then `dvc exp run --temp` runs it,
    leaving the workspace as it is. Returns {"experiment", "rev", "overrides", "stages",
    "metrics"}; artifacts `<artifacts>-exp-<name>-stages`, `-metrics`, `-report`.
    """
    logger = get_run_logger()
    params = Path(params_path).absolute()
    root = params.parent
    if params.name != "params.yaml" or not (root / "dvc.yaml").exists():
        message = (f"error: {params_path}: must be the params.yaml next to the project's dvc.yaml "
                   "(the file the DVC stages read)")
        logger.error(message)
        return Failed(message=message, name=INVALID_PARAMS)
    if overrides or name:
        return _experiment(root, dict(overrides or {}), name or None, force, artifacts, logger)
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


def api_url() -> str | None:
    """The Prefect API this process talks to (`PREFECT_API_URL`); None: an ephemeral server."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def require_server(option: str = "--serve") -> str | None:
    """None when a Prefect server is configured (`PREFECT_API_URL`); else the one-line refusal
    for `option` (an ephemeral server lives only as long as this process: nothing could be
    started from its UI). Shared by the flows' `--serve`."""
    return None if api_url() is not None else NO_SERVER.replace("--serve", option)


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """`-S key=value` arguments as overrides; values are read as YAML (`true`, `[1, 2]`, `rad`),
    and a number in exponent form is a number, as DVC (Hydra) reads it (`1e-3`; YAML 1.1 would
    read a string); `~key` deletes."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if key.startswith("~") and not sep:
            overrides[key] = None
        elif not sep or not key:
            raise ValueError(f"-S {item}: must be KEY=VALUE (or ~KEY to delete a key)")
        else:
            parsed = yaml.safe_load(value) if value else ""
            if isinstance(parsed, str) and re.fullmatch(
                    r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", parsed.strip()):
                parsed = float(parsed)
            overrides[key] = parsed
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml",
                        help="the project's params.yaml (its directory is the DVC project root)")
    parser.add_argument("--force", action="store_true", help="rerun every stage")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a params override (dotted key, as `dvc exp run -S`): the run is a "
                             "DVC experiment, params.yaml is left as it is (repeatable)")
    parser.add_argument("--experiment", default=None, metavar="NAME",
                        help="the DVC experiment's name (with -S; alone: an experiment of "
                             "params.yaml as it is)")
    parser.add_argument("--serve", action="store_true",
                        help="serve the flow as a deployment, to be run from the Prefect UI "
                             "(needs `prefect server start` and PREFECT_API_URL)")
    parser.add_argument("--name", default=DEPLOYMENT,
                        help="the deployment's name for --serve (pinn-pipeline/NAME)")
    args = parser.parse_args(argv)
    try:
        overrides = parse_set(args.overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.serve:
        refusal = require_server()
        if refusal is not None:
            print(refusal, file=sys.stderr)
            return 2
        parameters: dict[str, Any] = {"params_path": str(Path(args.params).absolute())}
        if args.force:
            parameters["force"] = True
        if overrides:
            parameters["overrides"] = overrides
        if args.experiment:
            parameters["name"] = args.experiment
        pipeline.serve(name=args.name, parameters=parameters)
        return 0
    state = pipeline(params_path=args.params, force=args.force, overrides=overrides or None,
                     name=args.experiment, return_state=True)
    if not state.is_completed():
        message = state.message or "pipeline failed"
        print(message if message.startswith("error:") else f"error: {message}", file=sys.stderr)
        exits = {INVALID_PARAMS: 2, **{name: code for code, name in PERMANENT_EXIT.items()}}
        return exits.get(state.name, 1)
    result = state.result()
    for stage, outcome in result["stages"].items():
        print(f"{stage:<16} {outcome}")
    if "experiment" in result:
        rel_l2 = (result.get("metrics") or {}).get("rel_l2")
        print(f"experiment: {result['experiment']} (rel L2 {rel_l2}; `dvc exp show`)")
    else:
        print(f"report: {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
