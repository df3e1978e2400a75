"""Shared fixtures and helpers for the pipeline-level tests (test_pipeline_dvc.py, test_flows.py,
test_reliability.py, test_params_errors.py, test_distributed.py).

`built_project` (once per session) is a temporary git + DVC project holding this repository's
dvc.yaml, the `pinn` package its stages run and the tiny benchmark params
(benchmarks/regression/params.yaml), after one `dvc repro`; `built_copy` is a fresh copy of it per
test (mtimes preserved, so DVC sees it unchanged), `tiny_project` the same project not yet built.

`stage(project, env, "train@level0")` runs one stage the way `dvc repro` does: its command line
is read from DVC's graph of dvc.yaml (`pinn.pipeline.read_dag`, foreach expanded with the
project's params), so the stages' paths are written in dvc.yaml only; `python` is this
environment's interpreter. Subprocesses share a persistent JAX compilation cache under pytest's
cache directory: every stage is a new process that would otherwise recompile the same training
step.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pinn import pipeline

ROOT = Path(__file__).resolve().parents[1]
TINY_PARAMS = ROOT / "benchmarks" / "regression" / "params.yaml"


def tiny_target_params(target: str, weights: dict, *, steps: int = 5, points: int = 128,
                       initial_points: int = 16, boundary_points: int = 32, batch: int = 64,
                       small_batches: int = 16, refine: dict | None = None,
                       problem: dict | None = None) -> dict:
    """The tiny params (`TINY_PARAMS`) for the user problem `target`: one level of `steps` Adam
    steps, `points`/`initial_points`/`boundary_points` fixed points, batches of `batch` (and
    `small_batches` initial/boundary), the loss `weights` by term, `refine` keys over the tiny
    refinement and `problem` keys over `{target, coefficients: {}}` (a dict, for YAML)."""
    data = yaml.safe_load(TINY_PARAMS.read_text())
    data["problem"] = {"target": target, "coefficients": {}, **(problem or {})}
    data["balancing"]["weights"] = weights
    data["multilevel"] = {"num_levels": 1, "coarsening_factor": 0.5, "finest_warmup_steps": 0,
                          "levels": {"level0": {"steps": steps, "init_from": "init"}}}
    data["collocation"].update(num_points=points, ic_points=initial_points,
                               bc_points=boundary_points)
    data["sampling"].update(batch_size=batch, ic_batch_size=small_batches,
                            bc_batch_size=small_batches)
    data["refine"].update(refine or {})
    return data


def check_params(path: Path):
    """`pinn check-params PATH` through typer's runner (the result: exit code and output)."""
    from typer.testing import CliRunner

    from pinn.cli import app

    return CliRunner().invoke(app, ["check-params", str(path)])


def refused_coefficient(params: Path, tmp_path: Path, name: str, value) -> str:
    """`params` with `problem.coefficients = {name: value}`, through `pinn check-params`: asserts
    exit status 2 and one line of output, and returns that line."""
    data = yaml.safe_load(params.read_text())
    data["problem"]["coefficients"] = {name: value}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    result = check_params(bad)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]

#: what a project needs besides params.yaml: the DAG, and the package its stages run
PROJECT_FILES = pipeline.PROJECT_FILES
#: the stages of dvc.yaml (foreach expanded) for the tiny params' two levels
STAGES = ["params", "plots_page", "reference", "collocation", "init", "train@level0",
          "train@level1", "refine", "window0", "evaluate", "report"]
#: every file a stage writes (files inside output directories are found by `snapshot`)
OUTPUTS = ("data", "metrics.json", "report", "dvc.lock")
SUBPROCESS_TIMEOUT_S = 900


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = SUBPROCESS_TIMEOUT_S
        ) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def dvc(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], project, env)


def pinn(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The `pinn` console script of this environment (`pinn check-params`, `pinn run`)."""
    return run([str(Path(sys.executable).parent / "pinn"), *args], project, env)


_COMMANDS: dict[tuple[bytes, bytes], dict[str, str]] = {}
_COMMANDS_LOCK = threading.Lock()  # (stages may be started from several threads)


def stage_commands(project: Path, dag_of: Path | None = None) -> dict[str, str]:
    """{DVC stage address ("params", "train@level0", ...): its command} of `project`'s pipeline:
    its own dvc.yaml, or this checkout's for a project of stage inputs only; foreach is expanded
    with the params.yaml of `dag_of` (default: `project`). Read by DVC itself
    (`pinn.pipeline.read_dag`), in a scratch copy so that the project is not touched."""
    source = dag_of if dag_of is not None else project
    dvcfile = project / "dvc.yaml" if (project / "dvc.yaml").is_file() else ROOT / "dvc.yaml"
    key = (dvcfile.read_bytes(), (source / "params.yaml").read_bytes())
    with _COMMANDS_LOCK:
        if key not in _COMMANDS:
            with tempfile.TemporaryDirectory() as scratch:
                (Path(scratch) / ".dvc").mkdir()
                (Path(scratch) / ".dvc" / "config").write_text("[core]\n    no_scm = True\n")
                (Path(scratch) / "dvc.yaml").write_bytes(key[0])
                (Path(scratch) / "params.yaml").write_bytes(key[1])
                _COMMANDS[key] = {node.name: node.cmd for node in pipeline.read_dag(scratch)}
        return _COMMANDS[key]


def stage_argv(project: Path, name: str, dag_of: Path | None = None) -> list[str]:
    """Stage `name`'s command line in dvc.yaml, `python -m pinn.stages.<module> ARGS...`, with this
    environment's interpreter for `python`."""
    commands = stage_commands(project, dag_of)
    assert name in commands, f"no stage {name!r} in dvc.yaml (stages: {', '.join(commands)})"
    module, args = pipeline.stage_module(commands[name])
    return [sys.executable, "-m", module, *args]


def stage_option(project: Path, name: str, option: str, dag_of: Path | None = None) -> Path:
    """The path given to `option` ("--resume", "--export", ...) on stage `name`'s command line in
    dvc.yaml, relative to the project."""
    argv = stage_argv(project, name, dag_of)
    assert argv.count(option) == 1, f"{option} not once in {argv}"
    return Path(argv[argv.index(option) + 1])


def stage(project: Path, env: dict[str, str], name: str, *args: str,
          dag_of: Path | None = None) -> subprocess.CompletedProcess:
    """Run stage `name` ("reference", "train@level0", ...) in `project` as `dvc repro` would (its
    command from dvc.yaml, see `stage_argv`), followed by `args` (an option given again there
    overrides the command's own: `stage(p, env, "refine", "--params", "other.yaml")`)."""
    return run([*stage_argv(project, name, dag_of), *args], project, env)


def output_of(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout or "") + (proc.stderr or "")


def stages_ran(output: str) -> list[str]:
    """Stages `dvc repro` ran, in order, from its "Running stage 'x':" lines."""
    return re.findall(r"Running stage '([^']+)':", output)


def stages_skipped(output: str) -> list[str]:
    return re.findall(r"Stage '([^']+)' didn't change, skipping", output)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(project: Path) -> dict[str, tuple[int, str]]:
    """(mtime in ns, sha256) of every output file (resume checkpoints and DVC's .gitignore
    files excluded)."""
    files = {}
    for name in OUTPUTS:
        top = project / name
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for p in paths:
            rel = p.relative_to(project).as_posix()
            if not rel.startswith("data/resume/") and p.name != ".gitignore":
                files[rel] = (p.stat().st_mtime_ns, sha256(p))
    return files


def set_params(project: Path, **dotted: object) -> None:
    """Change params.yaml in place: set_params(p, **{"report.dpi": 41})."""
    path = project / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in dotted.items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def make_tiny_project(dest: Path, env: dict[str, str], params: Path = TINY_PARAMS) -> Path:
    """A git repository with dvc.yaml, the `pinn` package, `params` as params.yaml, DVC initialised
    and everything committed: `dvc repro` (and `dvc exp`) work in it."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    shutil.copy2(params, dest / "params.yaml")
    git = ["git", "-c", "user.name=pinn tests", "-c", "user.email=tests@pinn.invalid"]
    # a repository-local identity: DVC commits experiments too, and CI may have no global one
    for cmd in (git + ["init", "-q"], ["git", "config", "user.name", "pinn tests"],
                ["git", "config", "user.email", "tests@pinn.invalid"],
                [sys.executable, "-m", "dvc", "init", "-q"],
                "plots page", git + ["add", "-A"], git + ["commit", "-q", "-m", "tiny project"]):
        if cmd == "plots page":
            pipeline.use_plots_page(dest)
            continue
        proc = run(cmd, dest, env, timeout=120)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{output_of(proc)}"
    return dest


@pytest.fixture(scope="session")
def pipeline_env(pytestconfig, tmp_path_factory) -> dict[str, str]:
    """Environment for `dvc`/`pinn`/stage subprocesses: this venv's scripts first on PATH, a shared
    persistent JAX compilation cache, DVC's per-repo state kept in a temporary directory."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cache = getattr(pytestconfig, "cache", None)  # None under `-p no:cacheprovider`
    jax_cache = (cache.mkdir("pinn-jax-compilation-cache") if cache is not None
                 else tmp_path_factory.mktemp("jax-compilation-cache"))
    env["JAX_COMPILATION_CACHE_DIR"] = str(jax_cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["DVC_SITE_CACHE_DIR"] = str(tmp_path_factory.mktemp("dvc-site-cache"))
    env["DVC_NO_ANALYTICS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PINN_DEBUG", None)
    return env


@pytest.fixture
def pipeline_environ(pipeline_env, monkeypatch) -> dict[str, str]:
    """`pipeline_env` applied to this process (flows run in-process and spawn `dvc`)."""
    for key, value in pipeline_env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("PINN_DEBUG", raising=False)
    return pipeline_env


@pytest.fixture(scope="session")
def built_project(tmp_path_factory, pipeline_env) -> SimpleNamespace:
    """The tiny project after one full `dvc repro` (shared: tests change only copies of it)."""
    project = make_tiny_project(tmp_path_factory.mktemp("built") / "project", pipeline_env)
    start = time.monotonic()
    proc = dvc(project, pipeline_env, "repro")
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"dvc repro failed:\n{output_of(proc)[-4000:]}"
    return SimpleNamespace(path=project, output=output_of(proc), seconds=seconds)


@pytest.fixture
def built_copy(built_project, tmp_path) -> Path:
    """A private copy of the built project (git, DVC cache, lock file and outputs; mtimes kept)."""
    dest = tmp_path / "project"
    shutil.copytree(built_project.path, dest, symlinks=True)
    return dest


@pytest.fixture
def tiny_project(tmp_path, pipeline_env) -> Path:
    """The tiny project, committed and not built."""
    return make_tiny_project(tmp_path / "project", pipeline_env)


@pytest.fixture
def figures(monkeypatch) -> dict:
    """{png name: matplotlib Figure} of every figure the report (`pinn.report`) saves while the
    test runs."""
    from pinn.report import canvas

    saved = {}
    real = canvas._save

    def capture(fig, path, dpi):
        saved[Path(path).name] = fig
        real(fig, path, dpi)

    monkeypatch.setattr(canvas, "_save", capture)
    return saved
