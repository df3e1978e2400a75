"""The pipeline as a whole: DVC's graph of dvc.yaml, projects to run it in, and one way to run it.

There is one runner: the commands in dvc.yaml. `dvc repro` runs them (caching what did not
change); `run_in_process` runs the very same commands — parsed from DVC's graph, each stage
module's `main` called with the command's arguments — in this process, without DVC's cache (for
tests that compare runs in one process). `make_project` sets up a directory in which `dvc repro`
runs the pipeline on a given params file (`pinn run --params FILE`, benchmarks, regression).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, NamedTuple

#: what a project needs besides its params.yaml: the DAG, the package its stages run, and the
#: committed study results the report's comparison of techniques comes from
PROJECT_FILES = ("dvc.yaml", ".dvcignore", "pinn", "studies/results")
#: the page `dvc plots show/diff` fill: the `plots_page` stage's output, with the charting
#: libraries inline so it renders offline (relative to `.dvc/`, as DVC reads the setting)
PLOTS_PAGE = "../data/plots_page.html"


class StageNode(NamedTuple):
    """One stage of DVC's graph: its address, command and the stages it depends on."""

    name: str  # DVC address, e.g. "train@level0"
    cmd: str
    upstream: tuple[str, ...]
    deps: tuple[str, ...] = ()  # paths, relative to the project root
    outs: tuple[str, ...] = ()  # outs, metrics and plots


def source_root() -> Path:
    """The checkout this package belongs to (holding dvc.yaml)."""
    return Path(__file__).resolve().parents[1]


def read_dag(root: str | Path) -> list[StageNode]:
    """The project's stages from DVC's own graph (foreach expanded), in topological order (ties:
    dvc.yaml order); `upstream` are the stages whose outputs a stage depends on."""
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
                deps=tuple(d.def_path for d in stage.deps),
                outs=tuple(o.def_path for o in stage.outs),
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


def stage_module(cmd: str) -> tuple[str, list[str]]:
    """`python -m pinn.stages.X ARGS...` → ("pinn.stages.X", ARGS). Raises ValueError otherwise."""
    argv = shlex.split(cmd)
    if len(argv) < 3 or argv[0] != "python" or argv[1] != "-m" or not argv[2].startswith("pinn.stages."):
        raise ValueError(f"not a pinn stage command: {cmd!r}")
    return argv[2], argv[3:]


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_in_process(root: str | Path) -> list[str]:
    """Run every stage of `root`'s dvc.yaml, in order, in this process (no DVC cache: every stage
    runs). Returns the stage names. Exceptions of a stage propagate."""
    from pinn.stages.common import invoke

    ran = []
    for node in read_dag(root):
        module, args = stage_module(node.cmd)
        with _cwd(Path(root)):
            invoke(importlib.import_module(module).main, args)
        ran.append(node.name)
    return ran


def _replace(source: Path, dest: Path) -> None:
    if dest.is_dir():
        shutil.rmtree(dest)
    elif dest.exists():
        dest.unlink()
    if source.is_dir():
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(source, dest)


def _copy_problem_file(params: str | Path, workdir: Path) -> None:
    """A `problem.target` file, a `reference.file` and a `problem.observations.file` given by a
    relative path (relative to the directory `pinn run` is called from, the project root) are
    copied to the same relative path in `workdir`, where the stages run; an absolute path or a
    `package.module` target is used where it is."""
    import yaml

    try:
        data = yaml.safe_load(Path(params).read_text()) or {}
        target = (data.get("problem") or {}).get("target")
        reference = (data.get("reference") or {}).get("file")
        observed = ((data.get("problem") or {}).get("observations") or {}).get("file")
    except (OSError, yaml.YAMLError, AttributeError):
        return  # the gate reports a malformed params file
    if isinstance(target, str) and target.rpartition(":")[0].endswith(".py"):
        _copy_relative(Path(target.rpartition(":")[0]), workdir)
    for file in (reference, observed):
        if isinstance(file, str):
            _copy_relative(Path(file), workdir)


def _copy_relative(path: Path, workdir: Path) -> None:
    if path.is_absolute() or not path.is_file():
        return
    dest = workdir / path
    if dest.absolute() != path.absolute():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)


def make_project(workdir: str | Path, params: str | Path, source: Path | None = None) -> Path:
    """A DVC project (no git) in `workdir` holding this checkout's pipeline (dvc.yaml and the
    `pinn` package its stages run) and `params` as its params.yaml. Reusing a workdir keeps its
    outputs and DVC cache, so `dvc repro` there reruns only what changed."""
    source = source or source_root()
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        _replace(source / name, workdir / name)
    if Path(params).absolute() != (workdir / "params.yaml"):
        shutil.copyfile(params, workdir / "params.yaml")
    _copy_problem_file(params, workdir)
    if not (workdir / ".dvc").exists():
        subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=workdir,
                       check=True, env=subprocess_env())
    use_plots_page(workdir)
    return workdir


def use_plots_page(root: str | Path) -> None:
    """Point the DVC project at `root` to the offline plots page (`plots.html_template`), as this
    repository's own `.dvc/config` does. Other settings (remotes, ...) are kept."""
    from dvc.config import Config

    with Config(str(Path(root) / ".dvc")).edit("repo") as config:
        config["plots"]["html_template"] = PLOTS_PAGE


def subprocess_env() -> dict[str, str]:
    """Environment for `dvc` and stage subprocesses: this interpreter's scripts directory first on
    PATH (dvc.yaml's `python` is this environment's), DVC analytics off, unbuffered output."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


#: printed by `dvc repro` whenever a stage ran, remote or not
DVC_PUSH_HINT = "Use `dvc push` to send your updates to remote storage."


def has_default_remote(root: str | Path) -> bool:
    """Whether the DVC project at `root` has a default remote (`dvc remote default`)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return bool(repo.config["core"].get("remote"))


def repro(root: str | Path, *, force: bool = False) -> int:
    """`dvc repro` in `root`, its output streamed line by line (without DVC's `dvc push` hint
    when the project has no remote to push to); returns its exit status."""
    cmd = [sys.executable, "-m", "dvc", "repro"] + (["--force"] if force else [])
    hide = set() if has_default_remote(root) else {DVC_PUSH_HINT}
    with subprocess.Popen(cmd, cwd=root, env=subprocess_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            if line.strip() not in hide:
                sys.stdout.write(line)
                sys.stdout.flush()
    return proc.returncode
