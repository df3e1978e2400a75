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
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any

from flows.pipeline import (  # first: sets the Prefect defaults (PREFECT_HOME, ...)
    DEPLOYMENT, embed_images, require_server,
)
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from pinn import ablate

#: state name of a flow run stopped by an invalid study file (exit status 2 from the command line)
INVALID_STUDY = "InvalidStudy"


def artifact_key(study: str) -> str:
    """`pinn-ablation-<study>` in the characters Prefect allows in a key (lowercase, digits, -)."""
    return "pinn-ablation-" + re.sub(r"[^a-z0-9-]+", "-", study.lower()).strip("-")


@task(name="validate-study", cache_policy=NO_CACHE)
def validate(study_file: str) -> ablate.Study:
    """The validated study (raises `StudyError` naming the keys)."""
    return ablate.load_study(study_file)


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
def collect(study: ablate.Study, project: ablate.Project, statuses: dict[str, str]
            ) -> list[ablate.Result]:
    """Every run read back from DVC."""
    return ablate.collect(project, study, statuses, ablate.study_env(study, project.root))


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


@flow(name="pinn-ablation", description="An ablation study as DVC experiments, with its report.")
def ablation(study_file: str, jobs: int | None = None, workdir: str | None = None,
             out: str | None = None) -> dict[str, Any]:
    """Run the study `study_file` (see `pinn.ablate`) and publish its report.

    Returns {"report": path, "experiments": n, "reused": stage runs reused, "ran": stage runs
    run, "summary": rows}. An invalid study file ends the run in a Failed state named
    `InvalidStudy` whose message is the one-line errors; a failed experiment fails the run after
    the report is published."""
    import os
    import time

    logger = get_run_logger()
    try:
        study = validate(study_file)
    except ablate.StudyError as e:
        logger.error("error: %s", e)
        return Failed(message=f"error: {e}", name=INVALID_STUDY)
    jobs = jobs or study.spec.jobs
    t0, started, load_start = time.time(), ablate._now(), os.getloadavg()[0]
    project = prepare(study, workdir)
    logger.info("study %s: %d experiments in %s, %d at a time", study.name, len(study.runs),
                project.root, jobs)
    statuses: dict[str, str] = {}
    for i, phase in enumerate(ablate.phases(study, jobs)):
        statuses.update(run_phase(study, project, phase, jobs, i))
    results = collect(study, project, statuses)
    meta = {"study_file": str(study.path), "started": started, "finished": ablate._now(),
            "wall_s": time.time() - t0, "load_start": load_start,
            "load_end": os.getloadavg()[0], "jobs": jobs, "hardware": ablate.hardware()}
    written = report(study, project, results, out, meta)
    if written.failed:
        message = "; ".join(f"experiment {r.run.name} failed: {r.error}" for r in written.failed)
        logger.error(message)
        return Failed(message=message)
    return {"report": str(written.path), "experiments": len(written.results),
            "reused": written.reuse.reused, "ran": written.reuse.ran,
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
    parser.add_argument("--serve", action="store_true",
                        help="serve the flow as a deployment, to be run from the Prefect UI "
                             "(needs `prefect server start` and PREFECT_API_URL)")
    parser.add_argument("--name", default=DEPLOYMENT,
                        help="the deployment's name for --serve (pinn-ablation/NAME)")
    args = parser.parse_args(argv)
    if args.serve:
        refusal = require_server()
        if refusal is not None:
            print(refusal, file=sys.stderr)
            return 2
        from pathlib import Path

        parameters = {k: v for k, v in (
            ("study_file", str(Path(args.study).absolute()) if args.study else None),
            ("jobs", args.jobs),
            ("workdir", str(Path(args.workdir).absolute()) if args.workdir else None),
            ("out", str(Path(args.out).absolute()) if args.out else None)) if v is not None}
        ablation.serve(name=args.name, parameters=parameters)
        return 0
    if args.study is None:
        parser.error("the study file is required (except with --serve)")
    state = ablation(study_file=args.study, jobs=args.jobs, workdir=args.workdir, out=args.out,
                     return_state=True)
    if not state.is_completed():
        message = state.message or "study failed"
        print(message if message.startswith("error:") else f"error: {message}", file=sys.stderr)
        return 2 if state.name == INVALID_STUDY else 1
    result = state.result()
    print(f"{result['experiments']} experiments; {result['reused']} of "
          f"{result['reused'] + result['ran']} stage runs reused; report: {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
