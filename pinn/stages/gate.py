"""The params gate: validate the whole params file before any other stage runs.

DVC deletes a stage's outputs before running it, so a malformed params.yaml must stop the DAG
upstream of everything; the stamp's content is constant, so a valid edit does not by itself
invalidate later stages. Besides validating the values, the gate checks that every key a stage of
`--dvcfile` declares is written in the params file: DVC can only track (and rerun on) keys that
are there, and fails mid-pipeline on a missing one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from pinn import io
from pinn.config import ConfigError, Params
from pinn.errors import UserError
from pinn.stages.common import PARAMS, command, read_params, read_reference_file

#: the refinement methods with a dense n×n inverse Hessian: `pinn.optim.ssbroyden.VARIANTS`
#: (tests/test_gate.py checks that the two agree)
DENSE_REFINE_METHODS = ("bfgs", "ssbfgs", "ssbroyden")


def check_feasible(params: Params, source: str = "params.yaml") -> None:
    """Checks that need the library, not only the schema (`pinn.config` validates that): a
    reference file (`check_reference_file`), and a dense quasi-Newton refinement whose n×n
    inverse Hessian is too large for its parameter count (`pinn.optim.check_dense_size`; the
    memory part needs the device and is checked where the refinement runs). Raises `ConfigError`
    naming the key. Run by the gate and `pinn check-params`, so the stages' own imports (and code
    dependencies) stay those of the schema."""
    check_reference_file(params, source)
    check_observations_file(params, source)
    if params.refine.method not in DENSE_REFINE_METHODS:
        return
    import sys

    from flax import nnx

    from pinn.models import count_params, make_model, split
    from pinn.optim import check_dense_size
    from pinn.problems import make_problem

    problem = make_problem(params.problem.identifier, **params.problem.coefficients)
    model = nnx.eval_shape(lambda: make_model(params.model, problem, seed=params.seed))
    try:
        check_dense_size(count_params(split(model)[1]), params.refine.method, memory_bytes=sys.maxsize)
    except UserError as e:
        raise ConfigError(f"{source}: {e}") from None


def check_reference_file(params: Params, source: str = "params.yaml") -> None:
    """`reference.file`, when set, is read whole before any stage runs: a missing or unreadable
    file, a missing array or column, a shape mismatch, NaNs are one line naming the key and the
    file (`ConfigError`)."""
    if params.reference.file is None:
        return
    try:
        read_reference_file(params)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def check_observations_file(params: Params, source: str = "params.yaml") -> None:
    """`problem.observations.file`, when set, is read whole before any stage runs (as the
    collocation stage reads it): a missing or unreadable file, a missing array or column, a
    shape mismatch, NaNs are one line naming the key and the file (`ConfigError`)."""
    if params.problem.observations.file is None:
        return
    from pinn.stages.common import problem_of, read_observations

    try:
        read_observations(params, problem_of(params))
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def observations_stamp(params: Params) -> str:
    """What the observation data's source is, for DVC: the collocation stage (which stores the
    data for training) depends on this text (`--observations-stamp`), so editing the file of
    `problem.observations.file` reruns it and, through its output, training. Without a file the
    data come from the problem's code (`data/problem.stamp`): the stamp is constant."""
    file = params.problem.observations.file
    if file is None:
        return "no observation file: the problem's own data (or none)\n"
    return _file_stamp("problem.observations.file", file, Path(file))


def _file_stamp(key: str, value: Any, path: Path) -> str:
    """The stamp text of a params key naming a file: the key's value and the file's sha256."""
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"{key}: {value}\nsha256 of {path.as_posix()}: {digest}\n"


def reference_stamp(params: Params) -> str:
    """What the reference's source is, for DVC: the reference stage depends on this text
    (`--reference-stamp`), so editing the file of `reference.file` reruns it (and, through its
    output, what follows) and nothing else does. A built-in solver's code is `pinn/reference`,
    already a dependency: its stamp is constant (`reference.file` itself is a params key the
    reference stage declares)."""
    if params.reference.file is None:
        return "built-in reference: its code is pinn/reference, a dependency of the stage\n"
    return _file_stamp("reference.file", params.reference.file, Path(params.reference.file))


def problem_stamp(params: Params) -> str:
    """What the problem's code is, for DVC: the stages that build the problem depend on this
    text (`--problem-stamp`), so editing the user's problem file (`problem.target`) reruns them
    and nothing else does. A built-in problem's code is `pinn/problems`, already a dependency: its
    stamp is constant (the alias itself is a params key the stages declare)."""
    from pinn.problems import target_file

    path = target_file(params.problem.identifier)
    if path is None:
        return "built-in problem: its code is pinn/problems, a dependency of every stage\n"
    return _file_stamp("problem.target", params.problem.target, path)


def declared_params(dvcfile: Path, cfg: Params) -> dict[str, str]:
    """Every params.yaml key a stage of `dvcfile` declares → the (first) stage declaring it;
    `${key}` in a foreach stage is expanded over the keys of the mapping its `foreach` names
    (`${multilevel.levels}`: the levels, `${windows.later}`: the later windows)."""
    stages = (yaml.safe_load(Path(dvcfile).read_text()) or {}).get("stages", {})
    data = cfg.model_dump()
    keys: dict[str, str] = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        over = str(stage.get("foreach", "")).strip()
        items: Any = data
        if over.startswith("${") and over.endswith("}"):
            for part in over[2:-1].split("."):
                items = items.get(part, {}) if isinstance(items, dict) else {}
        names = list(items) if isinstance(items, dict) and over else []
        for entry in body.get("params", []) or []:
            if not isinstance(entry, str):
                continue  # {other_file.yaml: [...]}: not ours
            for key in ([entry.replace("${key}", n) for n in names] if "${key}" in entry else [entry]):
                keys.setdefault(key, name)
    return keys


def _present(data: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def check_declared(cfg: Params, params: Path, dvcfile: Path) -> None:
    """Every key a stage of `dvcfile` declares is written in the params file `params` (DVC can
    only track keys that are there, and fails mid-pipeline on a missing one). Raises `UserError`
    naming the first missing key."""
    data = yaml.safe_load(Path(params).read_text())
    for key, stage in declared_params(dvcfile, cfg).items():
        if not _present(data, key):
            raise UserError(
                f"{params}: {key}: missing (stage '{stage}' of {dvcfile} declares it, and DVC can "
                f"only track keys written in {params}; copy it from the default params.yaml)")


def main(
    params: Path = PARAMS,
    dvcfile: Path = typer.Option(..., "--dvcfile", help="The pipeline whose declared keys must be present."),
    stamp: Path = typer.Option(..., "--stamp", help="Written (constant content) when valid."),
    problem: Path = typer.Option(None, "--problem-stamp",
                                 help="Written: the problem's code identity (`problem_stamp`)."),
    reference: Path = typer.Option(None, "--reference-stamp",
                                   help="Written: the reference file's identity (`reference_stamp`)."),
    observations: Path = typer.Option(
        None, "--observations-stamp",
        help="Written: the observation file's identity (`observations_stamp`)."),
) -> None:
    cfg = read_params(params)
    check_feasible(cfg, str(params))
    check_declared(cfg, params, dvcfile)
    if problem is not None:
        io.write_text(problem, problem_stamp(cfg))
    if reference is not None:
        io.write_text(reference, reference_stamp(cfg))
    if observations is not None:
        io.write_text(observations, observations_stamp(cfg))
    io.write_text(stamp, "params valid\n")
    print(f"{params}: ok")


if __name__ == "__main__":
    command(main)
