"""`pinn` command line (typer). User errors print one line naming the key or file and exit 2.

    pinn run [--params FILE] [--workdir DIR]   the whole pipeline: `dvc repro`, then where the report is
    pinn check-params [FILE]                   validate a params file
    pinn ablate STUDY.yaml [--jobs N]          an ablation study as DVC experiments (pinn.ablate)
    pinn reference PROBLEM --out FILE.npz      reference solution (built-in or path.py:Class)

The stages themselves are `python -m pinn.stages.<stage> ...` (their commands are in dvc.yaml).
Set PINN_DEBUG=1 to see tracebacks of user errors too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from pinn.config import BUILTIN_PROBLEMS
from pinn.errors import one_line_errors

#: this package's import name: no project directory may be named so (`pinn run --workdir`): a
#: directory `pinn/` without `__init__.py` is a namespace package to Python started next to it, and
#: `import pinn` finds it before an editable install's package (setuptools' editable finder comes
#: after the path finder), so `pinn.Problem` & co. would be missing there
PACKAGE = "pinn"

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="PINN training pipeline.",
)



def _load(params: Path):
    from pinn.config import load_params

    return load_params(params)


@app.command()
@one_line_errors
def reference(
    problem: str = typer.Argument(..., help="A built-in problem (" + ", ".join(BUILTIN_PROBLEMS)
                                  + ") or a target path/to/file.py:Class (your own problem)."),
    out: Path = typer.Option(..., "--out", help="Output .npz file."),
    coefficient: list[str] = typer.Option(
        [], "--coefficient", "-c", help="A PDE coefficient NAME=VALUE (repeatable; default: "
                                        "the problem's own)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Compute a problem's reference solution (the built-ins' certified solvers, a problem's own
    `reference()` or its exact solution) and save it as .npz."""
    import yaml

    from pinn.errors import UserError
    from pinn.problems import make_problem

    coefficients = {}
    for item in coefficient:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--coefficient {item}: must be NAME=VALUE")
        coefficients[name] = yaml.safe_load(value)
        if not isinstance(coefficients[name], (int, float, list)):
            raise UserError(f"--coefficient {item}: {name} must be a number (or a list of numbers)")
    try:
        made = make_problem(problem, **coefficients)
    except (ValueError, TypeError, OSError, ImportError) as e:
        raise UserError(f"{problem}: {e}") from None
    ref = made.reference(progress=not quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    ref.save(out)
    est = "unknown" if ref.est_rel_error is None else f"{ref.est_rel_error:.2e}"
    typer.echo(f"{problem}: est. rel. L2 error {est} -> {out}")


def _check(params: Path, dvcfile: Path) -> None:
    """What the pipeline's gate checks: the values, what needs the library (dense refinement
    size), and — when there is a pipeline — that every key it declares is written in the file."""
    from pinn.stages.gate import check_declared, check_feasible

    cfg = _load(params)
    check_feasible(cfg, str(params))
    if dvcfile.exists():
        check_declared(cfg, params, dvcfile)


@app.command("check-params")
@one_line_errors
def check_params(
    params: Path = typer.Argument(Path("params.yaml")),
    dvcfile: Path = typer.Option(Path("dvc.yaml"), "--dvcfile",
                                 help="The pipeline whose declared keys must be written in the file."),
):
    """Validate a params file as the pipeline's gate does; prints 'ok' or one line per error."""
    _check(params, dvcfile)
    typer.echo(f"{params}: ok")


@app.command()
@one_line_errors
def run(
    params: Path = typer.Option(Path("params.yaml"), "--params",
                                help="Params file; other than ./params.yaml: run in --workdir."),
    workdir: Optional[Path] = typer.Option(
        None, "--workdir",
        help="Project directory for a --params file (default: runs/<file stem>, or "
             "runs/<folder> for a file named params.yaml)."),
    force: bool = typer.Option(False, "--force", help="Rerun every stage."),
):
    """Validate params, run the pipeline with `dvc repro`, and print where the report is.

    `--params params.yaml` (the default) runs here. Any other params file runs in its own
    project directory (`--workdir`) holding this pipeline and that file as its params.yaml; this
    project's params.yaml is left untouched.
    """
    from pinn import pipeline
    from pinn.errors import UserError

    _check(params, pipeline.source_root() / "dvc.yaml")
    root = Path(".")
    if workdir is not None or params.absolute() != Path("params.yaml").absolute():
        default = params.stem if params.stem != "params" else params.parent.name  # examples/x/params.yaml
        project = workdir or Path("runs") / default
        if Path(os.path.abspath(project)).name == PACKAGE:
            raise UserError(f"--workdir {project}: a project directory named {PACKAGE!r} would "
                            f"shadow the {PACKAGE} package for Python started in its parent "
                            "directory (an editable install is found after such a directory); "
                            "choose another name")
        root = pipeline.make_project(project, params)
        typer.echo(f"running {params} in {root}")
    elif not (Path("dvc.yaml").exists() and Path(".dvc").is_dir()):
        raise UserError(f"--params {params}: runs in place, but {Path.cwd()} is not a pipeline "
                        "project (no dvc.yaml and .dvc/ here); add --workdir DIR to run it in a "
                        "project of its own")
    rc = pipeline.repro(root, force=force)
    if rc != 0:
        raise typer.Exit(rc)
    typer.echo(f"report: {(root / 'report' / 'report.md').absolute()}")


@app.command()
@one_line_errors
def ablate(
    study: Path = typer.Argument(..., help="The study file (YAML; see pinn/ablate.py)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1,
                                       help="Experiments at a time (default: the study's `jobs`)."),
    workdir: Optional[Path] = typer.Option(None, "--workdir",
                                           help="The study's DVC project (default: runs/studies/<name>)."),
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="Report directory (default: studies/results/<name>)."),
    case: list[str] = typer.Option([], "--case",
                                   help="Run only this case of the study (repeatable); its "
                                        "report goes to studies/results/<name>-<case>."),
    pool: Optional[str] = typer.Option(
        None, "--pool", help="Run the experiments on the workers of this Prefect work pool "
                             "(needs a Prefect server and --remote; see studies/README.md)."),
    remote: Optional[str] = typer.Option(
        None, "--remote", help="With --pool: the DVC remote the workers share (URL or directory)."),
    git_remote: Optional[str] = typer.Option(
        None, "--git-remote", help="With --pool: a git repository the workers reach."),
    source: Optional[str] = typer.Option(
        None, "--source", help="With --pool: the code the workers run (default: this checkout)."),
):
    """Run an ablation study as DVC experiments (queued, run cache shared) and write its report.

    Validates the study file and every run's params first (one line naming the key), queues each
    case x variant x seed with `dvc exp run --queue -S ...`, runs the queue with `--jobs N`,
    reads the results back with `dvc exp show --json` and writes report.md + figures. With
    `--pool`, the same study runs as the Prefect flow `python -m flows.ablation ... --pool` (its
    experiments on the pool's workers, sharing the DVC remote)."""
    import sys

    extra = [flag for flag, value in (("--remote", remote), ("--git-remote", git_remote),
                                      ("--source", source)) if value is not None]
    if extra and not pool:
        raise typer.BadParameter(f"{extra[0]} is for the runs on a work pool: give --pool too")
    if pool and not remote:
        raise typer.BadParameter("--pool needs --remote (the DVC remote the workers share: a URL "
                                 "or a directory they all reach)")
    if pool:
        from flows.ablation import main as flow_main

        argv = [str(study)] + [a for flag, value in (
            ("--jobs", jobs), ("--workdir", workdir), ("--out", out), ("--pool", pool),
            ("--remote", remote), ("--git-remote", git_remote), ("--source", source))
            if value is not None for a in (flag, str(value))]
        argv += [a for c in case for a in ("--case", c)]
        raise typer.Exit(flow_main(argv))

    from pinn.ablate import run_study

    def log(line: str) -> None:
        typer.echo(line)
        sys.stdout.flush()

    report = run_study(study, jobs=jobs, workdir=workdir, out=out, log=log, cases=case)
    typer.echo(f"{len(report.results)} experiments; {report.reuse.reused} of "
               f"{report.reuse.reused + report.reuse.ran} stage runs reused; report: {report.path}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
