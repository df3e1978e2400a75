"""Stage `collocation`: the fixed point sets (interior, initial, boundary) of `collocation.*`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from pinn import io
from pinn.config import Params
from pinn.stages.common import PARAMS, command, problem_of, read_params


def collocation_sets(cfg: Params, problem) -> dict[str, np.ndarray]:
    """The fixed point sets of `cfg.collocation` (float64): interior, initial (spatial) and boundary."""
    from pinn.sampling import collocation_points

    c = cfg.collocation
    lo, hi = np.asarray(problem.lower, float), np.asarray(problem.upper, float)
    return {
        "interior": collocation_points(c.method, c.num_points, lo, hi, cfg.seed),
        "ic": collocation_points(c.method, c.ic_points, lo[1:], hi[1:], cfg.seed + 1),
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
