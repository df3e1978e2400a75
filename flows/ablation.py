"""Prefect flow of an ablation study: what `pinn ablate STUDY.yaml` does, as Prefect tasks.

    validate   the study file and every run's params (`pinn.ablate.load_study`): a bad file fails
               the flow at once with the one-line errors naming the keys; nothing runs
    prepare    the study's DVC project, baseline committed (`pinn.ablate.prepare_project`)
    phase-K    queue the phase's runs as DVC experiments (`dvc exp run --queue -S ...`), run them
               with `dvc queue start --jobs N`, wait (`pinn.ablate.run_phase`); with N > 1 the
               first run of each case is a phase of its own (its stages then come from the run
               cache for the others)
    collect    read every run back from DVC (`dvc exp show --json`, the experiments' commits,
               `dvc queue logs`)
    report     studies/results/<study>/report.md + figures, published as Prefect artifacts:
               `<key>-report` (markdown, figures embedded), `<key>-summary` (mean and spread per
               variant and budget) and `<key>-experiments` (every run's final rel L2 and what
               DVC reused), key = `pinn-ablation-<study>`

    python -m flows.ablation STUDY.yaml [--jobs N] [--workdir DIR] [--out DIR]   (ephemeral Prefect)
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.ablation STUDY.yaml   (a server's UI)
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.ablation [STUDY.yaml] --serve
        a deployment `pinn-ablation/ui` served by this process, run from the UI with the
        parameters `study_file` (default: STUDY.yaml), `jobs`, `workdir`, `out`; every run is
        DVC experiments as above (`--serve` without PREFECT_API_URL refuses, saying what to start)

Scale-out: the runs on the Prefect workers of a work pool, on several machines, sharing a DVC
remote as the cache (single machine, no server: the default above):

    prefect work-pool create POOL --type process                    # once
    prefect worker start --pool POOL --limit 1                      # on each machine (one run at
                                                                    #   a time per worker)
    PREFECT_API_URL=... python -m flows.ablation STUDY.yaml --pool POOL --remote URL
        [--git-remote URL] [--source DIR|GIT_URL]

    deploy     `pinn-study-run/POOL`: the flow `study_run` on the pool, its code `--source`
               (default: this checkout, which the workers' machines then have at the same path)
    share      the DVC remote URL (a directory, s3://, ssh://, ...) the study project's default
               remote; the baseline commit pushed to `--git-remote` (a git repository the workers
               can reach; default: they clone the study project itself: one machine, or a shared
               filesystem) (`pinn.ablate.share_project`)
    pool-K     each run of the phase a flow run of `pinn-study-run/POOL` (`run_deployment`); a
               worker runs it in its own clone of the study project (`pinn.ablate.run_here`):
               `dvc exp run --pull` (a stage another machine ran and pushed is restored from the
               remote's run cache, not rerun), then `dvc push --run-cache` and `dvc exp push`;
               what DVC did with each stage comes back as the flow run's artifact
               `pinn-study-run-<experiment>`; the study then `dvc exp pull`s the experiments. The
               first run of each case is a phase of its own, so the others restore its reference.
    collect, report   as above; the report says which worker ran each experiment and how many
               stage runs one worker restored from another's (through the remote)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from flows.pipeline import (  # first: sets the Prefect defaults (PREFECT_HOME, ...)
    DEPLOYMENT, embed_images, project_root, require_server,
)
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from pinn import ablate

#: state name of a flow run stopped by an invalid study file (exit status 2 from the command line)
INVALID_STUDY = "InvalidStudy"
#: the flow a work pool's workers run, one flow run per experiment (deployment `<RUN_FLOW>/<pool>`)
RUN_FLOW = "pinn-study-run"
#: the label Prefect gives a flow run with the name of the worker that ran it
WORKER_LABEL = "prefect.worker.name"


def artifact_key(study: str) -> str:
    """`pinn-ablation-<study>` in the characters Prefect allows in a key (lowercase, digits, -)."""
    return "pinn-ablation-" + re.sub(r"[^a-z0-9-]+", "-", study.lower()).strip("-")


@task(name="validate-study", cache_policy=NO_CACHE)
def validate(study_file: str, cases: list[str] | None = None) -> ablate.Study:
    """The validated study, only its `cases` when given (`pinn.ablate.only_cases`); raises
    `StudyError` naming the keys (or the unknown case)."""
    study = ablate.load_study(study_file)
    return ablate.only_cases(study, cases) if cases else study


@task(name="prepare-project", cache_policy=NO_CACHE)
def prepare(study: ablate.Study, workdir: str | None) -> ablate.Project:
    """The study's DVC project with its baseline committed; earlier runs' experiments removed."""
    project = ablate.prepare_project(study, workdir)
    removed = ablate.clear_previous(project, study.runs, ablate.study_env(study, project.root))
    if removed:
        get_run_logger().info("removed %d experiments of an earlier run (their stages stay in the "
                              "run cache)", len(removed))
    return project


@task(name="run-phase", task_run_name="phase-{index}", cache_policy=NO_CACHE)
def run_phase(study: ablate.Study, project: ablate.Project, runs: list[ablate.Run], jobs: int,
              index: int) -> dict[str, str]:
    """Queue the phase's runs, run DVC's queue with `jobs` workers, wait: {name: Success|Failed}."""
    logger = get_run_logger()
    return ablate.run_phase(project, study, runs, jobs, ablate.study_env(study, project.root),
                            logger.info)


@task(name="collect", cache_policy=NO_CACHE)
def collect(study: ablate.Study, project: ablate.Project, statuses: dict[str, str],
            logs: dict[str, str] | None = None, workers: dict[str, str] | None = None
            ) -> list[ablate.Result]:
    """Every run read back from DVC (`logs`, `workers`: of the runs a work pool's workers ran)."""
    return ablate.collect(project, study, statuses, ablate.study_env(study, project.root), logs,
                          workers)


@task(name="report", cache_policy=NO_CACHE)
def report(study: ablate.Study, project: ablate.Project, results: list[ablate.Result],
           out: str | None, meta: dict) -> ablate.StudyReport:
    """The study report, published as Prefect artifacts."""
    written = ablate.write_report(study, project, results, out or ablate.default_out(study), meta)
    publish(written)
    get_run_logger().info("report: %s", written.path)
    return written


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def publish(written: ablate.StudyReport) -> None:
    """`<key>-report`, `<key>-summary`, `<key>-experiments` artifacts of a written study report."""
    key = artifact_key(written.study)
    create_markdown_artifact(markdown=embed_images(written.markdown, written.directory),
                             key=f"{key}-report", description=f"{written.path} (figures embedded)")
    create_table_artifact(
        table=[{k: _clean(v) for k, v in row.items()}
               for row in written.summary.to_dict(orient="records")],
        key=f"{key}-summary",
        description="rel L2 over seeds per case, variant and budget (mean, min, max, std, n), "
                    "read back from DVC")
    create_table_artifact(
        table=[{"experiment": r.run.name, "case": r.run.case, "variant": r.run.variant,
                "seed": r.run.seed, "status": r.status, "commit": r.rev,
                "final_rel_l2": _clean(r.final_rel_l2) if r.status == "Success" else None,
                "stages_ran": sum(o == ablate.RAN for s, o in r.outcomes.items()
                                  if s != ablate.GATE_STAGE),
                "stages_reused": sum(o != ablate.RAN for s, o in r.outcomes.items()
                                     if s != ablate.GATE_STAGE),
                "error": r.error} for r in written.results],
        key=f"{key}-experiments", description="Every experiment of the study as DVC has it.")


# ----------------------------------------------------------------------------------------------
# scale-out: the runs on a work pool's workers, sharing a DVC remote


def run_artifact_key(name: str) -> str:
    """`pinn-study-run-<experiment>` in the characters Prefect allows in a key."""
    return "pinn-study-run-" + re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


def run_markdown(record: dict[str, Any]) -> str:
    """A worker's run as its flow run's artifact: readable, and its record as JSON (what the study
    reads back, `read_record`)."""
    outcomes = ablate.stage_outcomes(record["log"])
    lines = [f"**{record['name']}** on worker `{record['worker']}` (host `{record['host']}`, "
             f"clone `{record['clone']}`): {record['status']} in {record['seconds']} s"
             + (f", commit `{record['rev'][:10]}`" if record["rev"] else f": {record['error']}"),
             "", "| stage | what DVC did |", "|---|---|"]
    lines += [f"| {stage} | {outcome} |" for stage, outcome in outcomes.items()]
    return "\n".join(lines + ["", "```json", json.dumps(record, indent=1), "```", ""])


def read_record(markdown: str) -> dict[str, Any] | None:
    m = re.search(r"```json\n(.*?)\n```", markdown or "", re.S)
    return json.loads(m.group(1)) if m else None


@flow(name=RUN_FLOW, description="One experiment of an ablation study, on a work pool's worker: "
      "dvc exp run --pull in the worker's clone of the study project, pushed to the shared "
      "DVC remote and the study's git repository.")
def study_run(git_url: str, baseline: str, study: str, name: str, args: list[str], remote: str,
              compile_cache: bool = False) -> dict[str, Any]:
    """Run experiment `name` (`dvc exp run -n NAME ARGS`) on this worker (`pinn.ablate.run_here`);
    publish what DVC did as the artifact `pinn-study-run-<name>`. A failed experiment fails the
    flow run, its message DVC's error."""
    import socket

    logger = get_run_logger()
    worker = os.environ.get("PREFECT__WORKER_NAME") or socket.gethostname()
    record = ablate.run_here(git_url, baseline, study, name, args, remote, compile_cache,
                             log=logger.info)
    record["worker"] = worker
    create_markdown_artifact(markdown=run_markdown(record), key=run_artifact_key(name),
                             description=f"experiment {name} of study {study} on worker {worker}")
    if record["status"] != "Success":
        return Failed(message=f"experiment {name} failed on worker {worker}: {record['error']}")
    return record


@task(name="deploy-runs", cache_policy=NO_CACHE)
def deploy_runs(pool: str, source: str | None = None) -> str:
    """The deployment `pinn-study-run/<pool>` of the work pool `pool` (created or updated): the
    flow its workers run per experiment, its code `source` (default: this checkout; the workers'
    machines then have it at the same path; or a git URL of this repository). Raises
    `StudyError` when the pool does not exist."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            raise ablate.StudyError(
                f"work pool {pool!r} not found: create it with `prefect work-pool create {pool} "
                f"--type process` and start workers with `prefect worker start --pool {pool} "
                "--limit 1`") from None
    remote = study_run.from_source(source=source or str(project_root()),
                                   entrypoint="flows/ablation.py:study_run")
    remote.deploy(name=pool, work_pool_name=pool, print_next_steps=False, ignore_warnings=True)
    return f"{RUN_FLOW}/{pool}"


@task(name="share-project", cache_policy=NO_CACHE)
def share(study: ablate.Study, project: ablate.Project, remote: str, git_remote: str | None
          ) -> str:
    """The DVC remote the project's default, the baseline on the git remote: the URL workers
    clone (`pinn.ablate.share_project`)."""
    return ablate.share_project(project, study, remote, git_remote)


def _final_record(client, flow_run) -> dict[str, Any]:
    """What the study needs of a finished flow run of `study_run`: its worker's record (its
    artifact), or, if it has none (the run crashed before it), a Failed record from its state."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    record = None
    for artifact in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))):
        record = read_record(artifact.data if isinstance(artifact.data, str) else "") or record
    state = flow_run.state
    worker = (flow_run.labels or {}).get(WORKER_LABEL, "")
    if record is None:
        record = {"name": flow_run.name, "status": "Failed", "rev": "", "log": "",
                  "error": f"flow run {flow_run.name} {state.name}: {state.message}",
                  "worker": worker}
    if not state.is_completed():
        record["status"] = "Failed"
    record["flow_run"] = str(flow_run.id)
    record["worker"] = record.get("worker") or worker
    return record


@task(name="pool-phase", task_run_name="pool-{index}", cache_policy=NO_CACHE)
def pool_phase(study: ablate.Study, project: ablate.Project, runs: list[ablate.Run],
               deployment: str, git_url: str, remote: str, index: int, poll_s: float = 2.0
               ) -> dict[str, dict[str, Any]]:
    """Each run a flow run of `deployment` on the work pool; wait until all are final; pull the
    experiments that succeeded. Returns {name: the worker's record (status, log, worker, ...)}."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    pending = {}
    for run in runs:
        args = ablate.exp_args(study, run)
        flow_run = run_deployment(
            deployment, timeout=0, flow_run_name=run.name, tags=[f"pinn-study-{study.name}"],
            parameters={"git_url": git_url, "baseline": project.baseline, "study": study.name,
                        "name": run.name, "args": args, "remote": remote,
                        "compile_cache": study.spec.compile_cache})
        pending[flow_run.id] = run.name
        logger.info("%s: flow run %s of %s (dvc exp run -n %s %s)", run.name, flow_run.id,
                    deployment, run.name, " ".join(args))
    records: dict[str, dict[str, Any]] = {}
    with get_client(sync_client=True) as client:
        while pending:
            time.sleep(poll_s)
            for flow_run in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=list(pending)))):
                if flow_run.state is None or not flow_run.state.is_final():
                    continue
                name = pending.pop(flow_run.id)
                records[name] = record = _final_record(client, flow_run)
                logger.info("%s: %s on worker %s (%d of %d done)%s", name,
                            record["status"].lower(), record["worker"] or "?", len(records),
                            len(runs), "" if record["status"] == "Success"
                            else f": {record['error']}")
    ablate.pull_experiments(project, git_url, [n for n, r in records.items()
                                               if r["status"] == "Success"],
                            ablate.study_env(study, project.root))
    return records


@flow(name="pinn-ablation", description="An ablation study as DVC experiments, with its report.")
def ablation(study_file: str, jobs: int | None = None, workdir: str | None = None,
             out: str | None = None, pool: str | None = None, remote: str | None = None,
             git_remote: str | None = None, source: str | None = None,
             cases: list[str] | None = None) -> dict[str, Any]:
    """Run the study `study_file` (see `pinn.ablate`) and publish its report; `cases`: only these
    of its cases (as `pinn ablate --case`, reported under `studies/results/<name>-<case>`).

    With `pool`, the runs are flow runs on that work pool's workers, sharing the DVC remote
    `remote` (and the git repository `git_remote`; `source`: the code the workers run), see the
    module docstring; it needs a Prefect server. Returns {"report": path, "experiments": n,
    "reused": stage runs reused, "ran": stage runs run, "across_workers": stage runs one worker
    restored from another's, "summary": rows}. An invalid study file (or `pool` without `remote`
    or without a server) ends the run in a Failed state named `InvalidStudy` whose message is the
    one-line errors (so does a `pool` that does not exist); a failed experiment fails the run
    after the report is published."""
    logger = get_run_logger()
    try:
        study = validate(study_file, cases)
        if pool and not remote:
            raise ablate.StudyError("pool: the runs on a work pool share a DVC remote: give "
                                    "remote (--remote URL or directory)")
        if pool and require_server("--pool"):
            raise ablate.StudyError(require_server("--pool").removeprefix("error: ")
                                    + " (the workers need the server)")
        deployment = deploy_runs(pool, source) if pool else None
    except ablate.StudyError as e:
        logger.error("error: %s", e)
        return Failed(message=f"error: {e}", name=INVALID_STUDY)
    jobs = jobs or study.spec.jobs
    t0, started, load_start = time.time(), ablate._now(), os.getloadavg()[0]
    project = prepare(study, workdir)
    statuses: dict[str, str] = {}
    if pool:
        git_url = share(study, project, remote, git_remote)
        logger.info("study %s: %d experiments of %s, run by the workers of work pool %s "
                    "(`prefect worker start --pool %s --limit 1` on each machine), DVC remote "
                    "%s, git %s", study.name, len(study.runs), project.root, pool, pool,
                    ablate.location(remote), git_url)
        records: dict[str, dict[str, Any]] = {}
        for i, phase in enumerate(ablate.phases(study, 2)):
            records.update(pool_phase(study, project, phase, deployment, git_url,
                                      ablate.location(remote), i))
        statuses = {n: r["status"] for n, r in records.items()}
        results = collect(study, project, statuses, {n: r["log"] for n, r in records.items()},
                          {n: r["worker"] for n, r in records.items()})
    else:
        logger.info("study %s: %d experiments in %s, %d at a time", study.name, len(study.runs),
                    project.root, jobs)
        for i, phase in enumerate(ablate.phases(study, jobs)):
            statuses.update(run_phase(study, project, phase, jobs, i))
        results = collect(study, project, statuses)
    meta = {"study_file": str(study.path), "started": started, "finished": ablate._now(),
            "wall_s": time.time() - t0, "load_start": load_start,
            "load_end": os.getloadavg()[0], "jobs": jobs, "hardware": ablate.hardware()}
    if pool:
        meta.update(pool=pool, remote=ablate.location(remote))
    written = report(study, project, results, out, meta)
    if written.failed:
        message = "; ".join(f"experiment {r.run.name} failed: {r.error}" for r in written.failed)
        logger.error(message)
        return Failed(message=message)
    return {"report": str(written.path), "experiments": len(written.results),
            "reused": written.reuse.reused, "ran": written.reuse.ran,
            "across_workers": written.reuse.across,
            "summary": [{k: _clean(v) for k, v in row.items()}
                        for row in written.summary.to_dict(orient="records")]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.ablation",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("study", nargs="?", default=None,
                        help="the study file (YAML; with --serve: the deployment's default)")
    parser.add_argument("--jobs", type=int, default=None, help="experiments at a time")
    parser.add_argument("--workdir", default=None, help="the study's DVC project")
    parser.add_argument("--out", default=None, help="the report's directory")
    parser.add_argument("--case", action="append", default=None, dest="cases",
                        help="run only this case of the study (repeatable)")
    parser.add_argument("--serve", action="store_true",
                        help="serve the flow as a deployment, to be run from the Prefect UI "
                             "(needs `prefect server start` and PREFECT_API_URL)")
    parser.add_argument("--name", default=DEPLOYMENT,
                        help="the deployment's name for --serve (pinn-ablation/NAME)")
    parser.add_argument("--pool", default=None,
                        help="run the experiments on the workers of this Prefect work pool "
                             "(`prefect worker start --pool POOL --limit 1` on each machine; "
                             "needs a Prefect server and --remote)")
    parser.add_argument("--remote", default=None,
                        help="with --pool: the DVC remote the workers share (URL or directory)")
    parser.add_argument("--git-remote", default=None,
                        help="with --pool: a git repository the workers reach (URL or path, e.g. "
                             "a bare one); default: they clone the study project itself")
    parser.add_argument("--source", default=None,
                        help="with --pool: the code the workers run (default: this checkout, at "
                             "the same path on their machines; or a git URL of this repository)")
    args = parser.parse_args(argv)
    if args.pool and not args.remote:
        parser.error("--pool needs --remote (the DVC remote the workers share: a URL or a "
                     "directory they all reach)")

    def where(path: str | None) -> str | None:  # (paths are read by other processes)
        return str(Path(path).absolute()) if path else None

    def pathlike(url: str | None) -> str | None:
        return ablate.location(url) if url else None

    pooled = {"pool": args.pool, "remote": pathlike(args.remote),
              "git_remote": pathlike(args.git_remote),
              "source": pathlike(args.source)}
    if args.serve or args.pool:
        refusal = require_server("--serve" if args.serve else "--pool")
        if refusal is not None:
            print(refusal, file=sys.stderr)
            return 2
    if args.serve:
        parameters = {k: v for k, v in (
            ("study_file", where(args.study)), ("jobs", args.jobs),
            ("workdir", where(args.workdir)), ("out", where(args.out)), ("cases", args.cases),
            *pooled.items())
            if v is not None}
        ablation.serve(name=args.name, parameters=parameters)
        return 0
    if args.study is None:
        parser.error("the study file is required (except with --serve)")
    state = ablation(study_file=args.study, jobs=args.jobs, workdir=args.workdir, out=args.out,
                     cases=args.cases, **{k: v for k, v in pooled.items() if v is not None}, return_state=True)
    if not state.is_completed():
        message = state.message or "study failed"
        print(message if message.startswith("error:") else f"error: {message}", file=sys.stderr)
        return 2 if state.name == INVALID_STUDY else 1
    result = state.result()
    print(f"{result['experiments']} experiments; {result['reused']} of "
          f"{result['reused'] + result['ran']} stage runs reused"
          + (f" ({result['across_workers']} from another worker, through the DVC remote)"
             if args.pool else "") + f"; report: {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
