"""Stage `reference`: the certified reference solution of the configured problem."""

from __future__ import annotations

from pathlib import Path

import typer

from pinn.stages.common import PARAMS, QUIET, command, problem_of, progress_wanted, read_params


def main(
    params: Path = PARAMS,
    out: Path = typer.Option(..., "--out", help="Reference solution (.npz)."),
    quiet: bool = QUIET,
) -> None:
    cfg = read_params(params)
    ref = problem_of(cfg).reference(progress=progress_wanted(quiet))
    out.parent.mkdir(parents=True, exist_ok=True)
    ref.save(out)
    print(f"reference {cfg.problem.name}: est. rel. L2 error {ref.est_rel_error:.2e} -> {out}")


if __name__ == "__main__":
    command(main)
