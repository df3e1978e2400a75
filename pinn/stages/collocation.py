"""Stage `collocation`: the fixed point sets (interior, initial, boundary) of `collocation.*`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from pinn import io
from pinn.config import Params
from pinn.stages.common import PARAMS, command, problem_of, read_params


def collocation_sets(cfg: Params, problem) -> dict[str, np.ndarray]:
    """The fixed point sets of `cfg.collocation` (float64): interior, initial (the spatial columns,
    all but time; no rows when the problem has no initial condition, e.g. a steady one) and
    boundary (interior points the conditions move onto their faces)."""
    from pinn.sampling import collocation_points

    c = cfg.collocation
    lo, hi = np.asarray(problem.lower, float), np.asarray(problem.upper, float)
    space = list(problem.spatial_axes)
    if problem.has_initial:
        ic = collocation_points(c.method, c.ic_points, lo[space], hi[space], cfg.seed + 1)
    else:
        ic = np.zeros((0, len(space)))
    return {
        "interior": collocation_points(c.method, c.num_points, lo, hi, cfg.seed),
        "ic": ic,
        "bc": collocation_points(c.method, c.bc_points, lo, hi, cfg.seed + 2),
    }


def main(
    params: Path = PARAMS,
    out: Path = typer.Option(..., "--out", help="Point sets (.npz: interior, ic, bc)."),
) -> None:
    cfg = read_params(params)
    sets = collocation_sets(cfg, problem_of(cfg))
    io.save_npz(out, sets)
    print(f"collocation: {len(sets['interior'])} interior, {len(sets['ic'])} initial, "
          f"{len(sets['bc'])} boundary -> {out}")


if __name__ == "__main__":
    command(main)
