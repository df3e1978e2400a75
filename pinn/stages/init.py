"""Stage `init`: the seeded network of the coarsest cascade level — its parameters only.

Everything else a level starts with (optimizer, sampler and balancer state) is built by the train
stage from the current params, so this export depends only on the params declared here.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pinn import io
from pinn.precision import scope
from pinn.stages.common import PARAMS, command, problem_of, read_params


def main(
    params: Path = PARAMS,
    out: Path = typer.Option(..., "--out", help="Network parameters (.npz)."),
) -> None:
    from pinn.levels import level_model, level_names
    from pinn.models import split

    cfg = read_params(params)
    first = level_names(cfg)[0]
    with scope(cfg.train.precision):
        _, network, _ = split(level_model(cfg, problem_of(cfg), first))
        io.save_tree(out, network)
    print(f"init: {first} network -> {out}")


if __name__ == "__main__":
    command(main)
