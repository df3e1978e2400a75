"""Stage `reference`: the certified reference solution of the configured problem, or the reference
read from `reference.file` (not certified here).

A built-in solver's solution carries its own error estimate (a second solve at doubled
resolution): above `reference.warn_above` the stage warns, above `reference.fail_above` it fails
(unless `reference.allow_inaccurate`). A file's reference carries no such certificate: the limits
apply to the error the file states (`est_rel_error`), and nothing is checked when it states none
(unknown; evaluate then reports the error as null). The file's content reaches DVC through the
gate's `--reference-stamp` (its hash), a dependency of this stage.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from pinn.errors import UserError
from pinn.stages.common import (PARAMS, QUIET, command, problem_of, progress_wanted, read_params,
                                read_reference_file)


def main(
    params: Path = PARAMS,
    out: Path = typer.Option(..., "--out", help="Reference solution (.npz)."),
    quiet: bool = QUIET,
) -> None:
    cfg = read_params(params)
    limits = cfg.reference
    if limits.file is not None:
        try:
            ref = read_reference_file(cfg)
        except ValueError as e:
            raise UserError(str(e)) from None
    else:
        ref = problem_of(cfg).reference(progress=progress_wanted(quiet))
    source = f" from {limits.file}" if limits.file is not None else ""
    what = f"reference {cfg.problem.identifier}{source}"
    error = ref.est_rel_error
    if error is not None and not error <= limits.fail_above and not limits.allow_inaccurate:
        raise UserError(  # (NaN fails too)
            f"reference {cfg.problem.identifier}{source}: its estimated relative error "
            f"{error:.2e} is above reference.fail_above = {limits.fail_above:g}: accuracy "
            "figures against it would "
            "mean nothing (refine the solver grid, change problem.coefficients, or set "
            "reference.allow_inaccurate: true)")
    ref.save(out)
    if error is not None and not error <= limits.warn_above:
        print(f"warning: {what}: estimated relative error {error:.2e} is "
              f"above reference.warn_above = {limits.warn_above:g}; accuracy figures below that "
              "level are limited by the reference", file=sys.stderr)
    where = "a grid " + " × ".join(str(n) for n in ref.shape) if ref.is_grid else (
        f"{ref.shape[0]} scattered points")
    if ref.certified:
        print(f"{what}: est. rel. L2 error {error:.2e} -> {out}")
    else:
        stated = (f"its stated rel. L2 error {error:.2e}" if error is not None
                  else "its error is unknown")
        print(f"{what} ({where}{', fields ' + ', '.join(ref.fields) if ref.fields else ''}): "
              f"not certified here (no self-convergence check; {stated}) -> {out}")


if __name__ == "__main__":
    command(main)
