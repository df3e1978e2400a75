"""Stage `reference`: the certified reference solution of the configured problem."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from pinn.errors import UserError
from pinn.stages.common import PARAMS, QUIET, command, problem_of, progress_wanted, read_params


def main(
    params: Path = PARAMS,
    out: Path = typer.Option(..., "--out", help="Reference solution (.npz)."),
    quiet: bool = QUIET,
) -> None:
    cfg = read_params(params)
    ref = problem_of(cfg).reference(progress=progress_wanted(quiet))
    limits = cfg.reference
    error = float(ref.est_rel_error)
    if not error <= limits.fail_above and not limits.allow_inaccurate:  # (NaN fails too)
        raise UserError(
            f"reference {cfg.problem.identifier}: its estimated relative error {error:.2e} is above "
            f"reference.fail_above = {limits.fail_above:g}: accuracy figures against it would "
            "mean nothing (refine the solver grid, change problem.coefficients, or set "
            "reference.allow_inaccurate: true)")
    ref.save(out)
    if not error <= limits.warn_above:
        print(f"warning: reference {cfg.problem.identifier}: estimated relative error {error:.2e} is "
              f"above reference.warn_above = {limits.warn_above:g}; accuracy figures below that "
              "level are limited by the reference", file=sys.stderr)
    print(f"reference {cfg.problem.identifier}: est. rel. L2 error {error:.2e} -> {out}")


if __name__ == "__main__":
    command(main)
