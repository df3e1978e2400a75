"""`pinn` command line (typer). User errors print one line naming the key or file and exit 2.

    pinn reference PROBLEM --out FILE.npz      certified reference solution
    pinn stage NAME [--level L]                one pipeline stage (what dvc.yaml runs)
    pinn run                                   the whole pipeline: `dvc repro`, then where the report is
    pinn check-params [FILE]                   validate a params file

Set PINN_DEBUG=1 to see tracebacks of user errors too.
"""

from __future__ import annotations

import functools
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from pinn.errors import UserError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="PINN training pipeline.",
)


class ProblemName(str, Enum):
    allen_cahn_1d = "allen_cahn_1d"
    allen_cahn_2d = "allen_cahn_2d"
    burgers_1d = "burgers_1d"


class StageName(str, Enum):
    reference = "reference"
    collocation = "collocation"
    init = "init"
    train = "train"
    refine = "refine"
    evaluate = "evaluate"
    report = "report"


def user_errors(fn):
    """Turn `UserError` into a one-line message on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if os.environ.get("PINN_DEBUG"):
                raise
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        except Exception as e:
            from pinn.cascade import DivergenceError

            if not isinstance(e, DivergenceError) or os.environ.get("PINN_DEBUG"):
                raise
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(3)

    return wrapper


def _compilation_cache() -> None:
    """Persistent XLA compilation cache (project-local `.jax_cache/`, or $PINN_JAX_CACHE; "" = off):
    reruns of a stage skip recompiling. Compiled code is the same, so results are too."""
    import jax

    where = os.environ.get("PINN_JAX_CACHE", ".jax_cache")
    if where:
        jax.config.update("jax_compilation_cache_dir", str(Path(where).absolute()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _load(params: Path):
    from pinn.config import load_params

    return load_params(params)


@app.command()
@user_errors
def reference(
    problem: ProblemName = typer.Argument(..., help="Which problem to solve."),
    out: Path = typer.Option(..., "--out", help="Output .npz file."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Compute a certified reference solution (default coefficients) and save it as .npz."""
    from pinn.problems import make_problem

    ref = make_problem(problem.value).reference(progress=not quiet)
    out.parent.mkdir(parents=True, exist_ok=True)
    ref.save(out)
    typer.echo(f"{problem.value}: est. rel. L2 error {ref.est_rel_error:.2e} -> {out}")


@app.command()
@user_errors
def stage(
    name: StageName = typer.Argument(..., help="Which stage to run."),
    level: Optional[str] = typer.Option(None, "--level", help="Cascade level (train stage)."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Params file."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
):
    """Run one pipeline stage (this is what each dvc.yaml stage calls)."""
    from pinn import stages

    cfg = _load(params)
    _compilation_cache()
    from pinn import distributed

    distributed.initialize(cfg)  # multi-host: joins the runtime (no-op for one process)
    progress = not quiet and sys.stderr.isatty()
    if name is StageName.train:
        if level is None:
            raise UserError("stage train: --level is required (one of multilevel.levels)")
        stages.stage_train(cfg, level, progress=progress)
    elif name in (StageName.reference, StageName.refine):
        getattr(stages, f"stage_{name.value}")(cfg, progress=progress)
    else:
        getattr(stages, f"stage_{name.value}")(cfg)


@app.command("check-params")
@user_errors
def check_params(
    params: Path = typer.Argument(Path("params.yaml")),
    stamp: Optional[Path] = typer.Option(
        None, "--stamp", help="On success write this file (constant content; the pipeline's gate)."
    ),
):
    """Validate a params file; prints 'ok' or the errors (naming each key)."""
    _load(params)
    if stamp is not None:
        from pinn.io import write_text

        write_text(stamp, "params valid\n")
    typer.echo(f"{params}: ok")


@app.command()
@user_errors
def run(
    params: Path = typer.Option(Path("params.yaml"), "--params"),
    force: bool = typer.Option(False, "--force", help="Rerun every stage."),
):
    """Validate params, run the pipeline with `dvc repro`, and print where the report is."""
    import subprocess

    _load(params)
    env = dict(os.environ)
    # stages call `pinn`: make this interpreter's scripts directory visible even without activation
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "dvc", "repro"] + (["--force"] if force else [])
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        raise typer.Exit(rc)
    typer.echo(f"report: {Path('report/report.md').absolute()}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
