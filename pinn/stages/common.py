"""What every stage shares: reading params and inputs, writing histories, running as a command.

A stage module defines one typed function `main(...)` whose options are the stage's paths (given on
the command line in dvc.yaml, nowhere else) and runs it with `command(main)`. The same function
runs in-process through `invoke(main, argv)` (`pinn.pipeline.run_in_process`), with exceptions
propagating instead of exit statuses.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import typer

from pinn import io
from pinn.config import Params, load_params
from pinn.errors import UserError, one_line_errors

#: options every stage takes
PARAMS = typer.Option(..., "--params", help="The params file (params.yaml).")
QUIET = typer.Option(False, "--quiet", help="No progress bars.")


def command(main: Callable, argv: list[str] | None = None) -> None:
    """Run `main` as a command line program: user errors are one line and exit status 2,
    divergence exit status 3 (`pinn.errors`); the persistent XLA compile cache is on."""
    _compilation_cache()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(one_line_errors(main))
    app(args=argv, prog_name=f"python -m {main.__module__}")


def invoke(main: Callable, argv: list[str]) -> None:
    """Run `main` in this process with command-line `argv`; exceptions propagate."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(main)
    code = app(args=argv, standalone_mode=False)
    if code not in (None, 0):
        raise RuntimeError(f"{main.__module__} {' '.join(argv)}: exit status {code}")


def _compilation_cache() -> None:
    """Persistent XLA compilation cache (project-local `.jax_cache/`, or $PINN_JAX_CACHE; "" = off):
    reruns of a stage skip recompiling. Compiled code is the same, so results are too."""
    import jax

    where = os.environ.get("PINN_JAX_CACHE", ".jax_cache")
    if where and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(Path(where).absolute()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def progress_wanted(quiet: bool) -> str:
    """How a stage shows progress (`pinn.progress.progress_mode`): nothing with `--quiet`, a bar on
    a terminal, one line per log interval when piped (under DVC, Prefect, a log file)."""
    if quiet:
        return "off"
    return "bar" if sys.stderr.isatty() else "lines"


def read_params(path: Path) -> Params:
    """The validated params (a `ConfigError` names the key); joins a multi-host runtime if set."""
    from pinn import distributed

    cfg = load_params(path)
    distributed.initialize(cfg)  # multi-host: joins the runtime (no-op for one process)
    return cfg


def problem_of(cfg: Params):
    from pinn.problems import make_problem

    return make_problem(cfg.problem.identifier, **cfg.problem.coefficients)


def read_reference_file(cfg: Params):
    """The reference `reference.file` holds, read for the configured problem
    (`pinn.reference.files.read_reference`; relative paths from the project root): what the
    reference stage stores, and what the gate checks. Raises `ValueError` naming `reference.file`
    and the file."""
    from pinn.reference.files import read_reference

    problem = problem_of(cfg)
    ref = cfg.reference
    return read_reference(ref.file, problem.input_names, field=problem.fields[0],
                          time=problem.box.time, keys=ref.keys, columns=ref.columns,
                          others=problem.fields[1:])


def read_observations(cfg: Params, problem) -> dict[str, np.ndarray]:
    """The data of `problem`'s `Observation` conditions as the collocation stage stores them
    (`observation<i>_points (N, d)`, `observation<i>_values (N,)`, float64; `pinn.problems.base.
    observation_key`): from `problem.observations.file` (read like `reference.file`, every
    observed field at the file's points; relative paths from the project root), else generated
    by the problem (`Problem.observations`). `{}` without observations. Raises `ValueError`
    naming `problem.observations.file` and the file (what the gate checks)."""
    from pinn.problems.base import observation_key
    from pinn.reference.files import read_reference

    conditions = problem.observation_conditions()
    obs = cfg.problem.observations
    if not conditions:
        return {}
    if obs.file is None:
        data = [problem.observations(c) for c in conditions]
    else:
        fields = list(dict.fromkeys(c.field or problem.fields[0] for c in conditions))
        ref = read_reference(obs.file, problem.input_names, field=fields[0],
                             time=problem.box.time, keys=obs.keys, columns=obs.columns,
                             others=fields[1:], key="problem.observations.file")
        values = {fields[0]: ref.u.reshape(-1),
                  **{f: v.reshape(-1) for f, v in ref.fields.items()}}
        for f in fields[1:]:
            if f not in values:
                raise ValueError(f"problem.observations.file = {Path(obs.file).as_posix()!r}: no "
                                 f"array or column {obs.keys.get(f, f)!r} (the observed field {f})")
        points = ref.points()
        data = [(points, values[c.field or problem.fields[0]]) for c in conditions]
    out: dict[str, np.ndarray] = {}
    for i, (z, v) in enumerate(data):
        out[observation_key(i, "points")] = np.asarray(z, np.float64)
        out[observation_key(i, "values")] = np.asarray(v, np.float64)
    return out


def require(path: Path, made_by: str) -> Path:
    if not Path(path).exists():
        raise UserError(f"{path}: missing (run the {made_by} stage first)")
    return Path(path)


def load_reference(path: Path):
    from pinn.reference import Reference

    require(path, "reference")
    try:
        return Reference.load(path)
    except ValueError as e:
        raise UserError(str(e)) from None


def load_collocation(path: Path) -> dict[str, np.ndarray]:
    """The collocation stage's sets: `interior`, `ic`, `bc`, and the observation data
    (`observation<i>_points`, `observation<i>_values`) when the problem has any."""
    require(path, "collocation")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in ("interior", "ic", "bc", *(
                name for name in data.files if name.startswith("observation")))}
    except Exception as e:
        raise UserError(f"{path}: not a valid collocation file ({type(e).__name__}: {e})") from None


def write_history(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """Metrics history as CSV (DVC plots); with no rows, just the header (never NaN placeholders)."""
    import pandas as pd

    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns or [])
    with io.atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
