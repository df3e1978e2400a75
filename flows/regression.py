"""Regression benchmark: the pipeline on fixed benchmark params, its metrics against a baseline.

The flow copies the project's pipeline (dvc.yaml, .dvcignore and every source file or directory
that a stage depends on but no stage produces, as DVC's index lists them) and the benchmark params
into a scratch DVC project, runs `flows.pipeline.pipeline` there (so the user's data/ is never
touched), and compares metrics.json with the baseline file:

    {"metrics": {"rel_l2": {"value": 0.74, "rtol": 0.25}, ...}, "hardware": {...}, ...}

Every baseline metric is an error (lower is better). A metric FAILS when the new value is
missing, not finite, or worse than `value * (1 + rtol)`; an improvement never fails (a large one
is logged as a hint to update the baseline). The flow raises `RegressionError` naming each failing
metric with its baseline, new value and change in %. A baseline that records `params_digest` is
only valid for those params: comparing other params fails too.

    python -m flows.regression                                  run once, compare with the baseline
    python -m flows.regression --update-baseline                run once, (re)write the baseline
    python -m flows.regression --serve --cron "0 3 * * *"       deployment on a cron schedule
                                                                (needs a Prefect server: start
                                                                `prefect server start` and set
                                                                PREFECT_API_URL)

Its artifacts are published under their own keys (`pinn-regression-*`, see `ARTIFACTS`), never
under the keys of the user's pipeline runs (`pinn-report`, `pinn-metrics`, `pinn-stages`).

`--workdir DIR` keeps the scratch project in DIR between runs, so DVC skips unchanged stages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from flows.pipeline import pipeline, project_root  # first: sets the Prefect defaults
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

DEFAULT_PARAMS = "benchmarks/regression/params.yaml"
DEFAULT_BASELINE = "benchmarks/regression/baseline.json"
#: metrics recorded by `--update-baseline` when the baseline does not list them yet
DEFAULT_METRICS = {"rel_l2": 0.25, "max_abs": 0.25}
#: prefix of this flow's artifact keys: `pinn-regression-report`, `-metrics`, `-stages` (the
#: benchmark pipeline's) and `pinn-regression-comparison` (metrics vs the baseline)
ARTIFACTS = "pinn-regression"
#: what `--serve` says when no Prefect server is configured
NO_SERVER = ("error: --serve needs a running Prefect server: start one with `prefect server start` "
             "and set PREFECT_API_URL (e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api)")
RULE = ("each metric is an error (lower is better); it fails when the new value is missing, not "
        "finite, or greater than value * (1 + rtol)")


class RegressionError(RuntimeError):
    """Benchmark metrics worse than the baseline allows (or the benchmark could not run)."""


class BaselineError(ValueError):
    """The baseline file is missing or malformed."""


# ----------------------------------------------------------------------------------------------
# baseline and comparison


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and check a baseline file: {"metrics": {name: {"value": finite, "rtol": >= 0}}}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BaselineError(f"{path}: baseline not found (create it with --update-baseline)") from None
    except json.JSONDecodeError as e:
        raise BaselineError(f"{path}: not valid JSON ({e})") from None
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or not metrics:
        raise BaselineError(f"{path}: needs a non-empty 'metrics' mapping")
    for name, spec in metrics.items():
        value = spec.get("value") if isinstance(spec, dict) else None
        rtol = spec.get("rtol") if isinstance(spec, dict) else None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BaselineError(f"{path}: metrics.{name}.value = {value!r}: must be a finite number")
        if not isinstance(rtol, (int, float)) or not rtol >= 0:
            raise BaselineError(f"{path}: metrics.{name}.rtol = {rtol!r}: must be a number >= 0")
    return data


def _percent(new: float, old: float) -> float:
    if old == 0:
        return 0.0 if new == 0 else math.copysign(math.inf, new)
    return 100.0 * (new - old) / abs(old)


def compare_metrics(metrics: dict[str, Any], baseline: dict[str, Any]) -> tuple[list[dict], list[str]]:
    """Compare `metrics` with `baseline["metrics"]`: (one table row per metric, failure messages)."""
    rows, failures = [], []
    for name, spec in baseline["metrics"].items():
        value, rtol = float(spec["value"]), float(spec["rtol"])
        limit = value * (1.0 + rtol)
        new = metrics.get(name)
        row = {"metric": name, "baseline": value, "new": new, "change_pct": None,
               "limit": limit, "status": "ok"}
        if not isinstance(new, (int, float)) or isinstance(new, bool):
            row["status"] = "missing"
            failures.append(f"{name}: missing from metrics.json (baseline {value:.4g})")
        elif not math.isfinite(new):
            row["status"] = "not finite"
            failures.append(f"{name}: new value {new} is not finite (baseline {value:.4g})")
        else:
            change = _percent(float(new), value)
            row["change_pct"] = round(change, 3) if math.isfinite(change) else str(change)
            if new > limit:
                row["status"] = "worse"
                failures.append(
                    f"{name}: new value {new:.4g} vs baseline {value:.4g} ({change:+.4g} %), "
                    f"allowed <= {limit:.4g} (rtol {rtol:g})"
                )
        rows.append(row)
    return rows, failures


from pinn.hardware import cpu_name  # noqa: E402  (re-exported: used by hardware())


def params_digest(path: str | Path) -> str:
    """Digest of the params' values (comments and formatting do not count)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def hardware() -> dict[str, Any]:
    """What the benchmark ran on (recorded in the baseline; numbers differ across machines)."""
    import jax

    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def write_baseline(path: Path, metrics: dict[str, Any], params: Path,
                   previous: dict[str, Any] | None) -> dict[str, Any]:
    """A baseline from `metrics`, keeping the tolerances of `previous` (else `DEFAULT_METRICS`)."""
    tolerances = {k: float(v["rtol"]) for k, v in (previous or {}).get("metrics", {}).items()}
    tolerances = tolerances or dict(DEFAULT_METRICS)
    data = {
        "rule": RULE,
        "params": _display(params),
        "params_digest": params_digest(params),
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "hardware": hardware(),
        "metrics": {name: {"value": float(metrics[name]), "rtol": rtol}
                    for name, rtol in tolerances.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


# ----------------------------------------------------------------------------------------------
# scratch project


def _display(path: Path) -> str:
    try:
        return path.resolve().relative_to(project_root().resolve()).as_posix()
    except ValueError:
        return str(path)


def _resolve(path: str | Path) -> Path:
    """A path as given, else (relative and absent here) relative to the project root."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path.absolute()
    return project_root() / path


def _copy(source: Path, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(source, dest)


def source_dependencies(root: Path) -> list[str]:
    """Deps of the project's stages that no stage produces (code, committed inputs), from DVC."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    def related(a: str, b: str) -> bool:  # equal, or one inside the other
        return a == b or a.startswith(b + "/") or b.startswith(a + "/")

    with Repo(str(root)) as repo:
        outs = [Path(os.path.relpath(out.fs_path, root)).as_posix() for out in repo.index.outs]
        deps = {Path(os.path.relpath(dep.fs_path, root)).as_posix()
                for stage in repo.index.stages for dep in stage.deps
                if not isinstance(dep, ParamsDependency)}
    return sorted(d for d in deps if not any(related(d, o) for o in outs))


@task(name="prepare-scratch-project")
def prepare_scratch(project: str, scratch: str, params: str) -> list[str]:
    """Make `scratch` a DVC project with the pipeline of `project` and `params` as params.yaml."""
    from dvc.repo import Repo

    logger = get_run_logger()
    project_path, scratch_path = Path(project), Path(scratch)
    scratch_path.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore"):
        if (project_path / name).exists():
            _copy(project_path / name, scratch_path / name)
    _copy(Path(params), scratch_path / "params.yaml")
    if not (scratch_path / ".dvc").is_dir():
        Repo.init(str(scratch_path), no_scm=not (scratch_path / ".git").exists()).close()
    copied = []
    for dep in source_dependencies(scratch_path):
        if dep == "params.yaml":  # the params gate's input: the benchmark params, copied above
            continue
        if (project_path / dep).exists():
            _copy(project_path / dep, scratch_path / dep)
            copied.append(dep)
        else:
            logger.warning("%s: a stage depends on it but it is not in %s", dep, project_path)
    logger.info("scratch project %s: dvc.yaml, params from %s, sources %s",
                scratch_path, params, ", ".join(copied))
    return copied


# ----------------------------------------------------------------------------------------------
# the flow


@flow(name="pinn-regression", description="The pipeline on benchmark params, compared with a baseline.")
def regression(
    params_path: str = DEFAULT_PARAMS,
    baseline_path: str = DEFAULT_BASELINE,
    workdir: str | None = None,
    update_baseline: bool = False,
) -> dict[str, Any]:
    """Run the benchmark in a scratch project and compare its metrics with the baseline.

    Raises `RegressionError` naming every metric worse than the baseline allows. With
    `update_baseline`, writes the baseline from this run instead of comparing. `workdir` keeps the
    scratch project (DVC then skips unchanged stages on the next run); by default a temporary
    directory is used, removed after a passing run and kept (its path logged) after a failure.
    """
    logger = get_run_logger()
    params = _resolve(params_path)
    baseline_file = _resolve(baseline_path)
    baseline = None
    if not (update_baseline and not baseline_file.exists()):
        baseline = load_baseline(baseline_file)
    digest = params_digest(params)
    if baseline and not update_baseline and baseline.get("params_digest") not in (None, digest):
        raise RegressionError(
            f"{baseline_file}: recorded for params digest {baseline['params_digest']}, but {params} "
            f"has {digest}: rerun with --update-baseline after changing the benchmark params"
        )
    scratch = Path(workdir).absolute() if workdir else Path(tempfile.mkdtemp(prefix="pinn-regression-"))
    passed = False
    try:
        prepare_scratch(str(project_root()), str(scratch), str(params))
        state = pipeline(params_path=str(scratch / "params.yaml"), artifacts=ARTIFACTS,
                         return_state=True)
        if not state.is_completed():
            raise RegressionError(f"the benchmark pipeline failed: {state.message}")
        metrics = state.result()["metrics"] or {}
        if update_baseline:
            data = write_baseline(baseline_file, metrics, params, baseline)
            logger.info("baseline written: %s", baseline_file)
            passed = True
            return {"metrics": metrics, "baseline": data, "workdir": str(scratch) if workdir else None}

        rows, failures = compare_metrics(metrics, baseline)
        create_table_artifact(table=rows, key=f"{ARTIFACTS}-comparison",
                              description=f"metrics vs {baseline_file}: {RULE}")
        recorded = (baseline.get("hardware") or {}).get("cpu")
        if recorded and recorded != cpu_name():
            logger.info("baseline recorded on %s; this machine: %s", recorded, cpu_name())
        for row in rows:
            logger.info("%s: new %s, baseline %s, change %s %%, limit %s: %s", row["metric"],
                        row["new"], row["baseline"], row["change_pct"], row["limit"], row["status"])
            change = row["change_pct"]
            if row["status"] == "ok" and isinstance(change, float) and change < -100 * float(
                    baseline["metrics"][row["metric"]]["rtol"]):
                logger.info("%s improved beyond its tolerance: consider --update-baseline",
                            row["metric"])
        if failures:
            raise RegressionError(
                f"{len(failures)} metric(s) worse than the baseline {_display(baseline_file)} allows: "
                + "; ".join(failures)
            )
        passed = True
        return {"metrics": metrics, "comparison": rows, "workdir": str(scratch) if workdir else None}
    finally:
        if workdir is None:
            if passed:
                shutil.rmtree(scratch, ignore_errors=True)
            else:
                logger.error("scratch project kept for inspection: %s", scratch)


def api_url() -> str | None:
    """The Prefect API this process talks to (`PREFECT_API_URL`); None: an ephemeral server."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def serve(cron: str, name: str = "pinn-regression-nightly",
          parameters: dict[str, Any] | None = None) -> None:
    """Serve `regression` as a deployment on a cron schedule (blocks; needs a Prefect server:
    an ephemeral one cannot schedule, so without `PREFECT_API_URL` this raises `RegressionError`
    saying what to start)."""
    if api_url() is None:
        raise RegressionError(NO_SERVER.removeprefix("error: "))
    regression.serve(name=name, cron=cron, parameters=parameters or {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.regression",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="benchmark params file")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="baseline JSON file")
    parser.add_argument("--workdir", default=None, help="keep the scratch project here")
    parser.add_argument("--update-baseline", action="store_true",
                        help="write the baseline from this run instead of comparing")
    parser.add_argument("--serve", action="store_true", help="serve as a cron-scheduled deployment")
    parser.add_argument("--cron", default="0 3 * * *", help="cron schedule for --serve")
    parser.add_argument("--name", default="pinn-regression-nightly", help="deployment name for --serve")
    args = parser.parse_args(argv)
    parameters = {"params_path": args.params, "baseline_path": args.baseline}
    if args.workdir:
        parameters["workdir"] = args.workdir
    if args.serve:
        if api_url() is None:
            print(NO_SERVER, file=sys.stderr)
            return 2
        serve(args.cron, name=args.name, parameters=parameters)
        return 0
    state = regression(**parameters, update_baseline=args.update_baseline, return_state=True)
    if not state.is_completed():
        print(f"error: {state.message}", file=sys.stderr)
        return 1
    result = state.result()
    for row in result.get("comparison", []):
        print(f"{row['metric']:<10} {row['status']:<10} new {row['new']} baseline {row['baseline']}")
    if args.update_baseline:
        print(f"baseline written: {_resolve(args.baseline)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
