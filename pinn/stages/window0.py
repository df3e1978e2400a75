"""Stage `window0`: window 0's network, where the later time-marching windows look for it.

Window 0 is the cascade and the refinement (stages `train@<level>`, `refine`) on the first time
slab (`pinn.windows`); this stage copies the refine stage's output (`--refined`) byte for byte to
`--out` (`data/windows/window0.npz`), so that window k's stage starts from
`data/windows/window{k-1}.npz` for every k and the evaluation reads every window from one
directory. It runs (a copy of a small file) with windows off too: `data/windows` then holds
window 0 alone, the whole time interval's network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from pinn import io
from pinn.stages.common import command, require


def main(
    refined: Path = typer.Option(..., "--refined", help="The refine stage's network (.npz)."),
    out: Path = typer.Option(..., "--out", help="Window 0's network (.npz)."),
) -> None:
    require(refined, "refine")
    with io.atomic_path(out, suffix=".npz") as tmp:
        shutil.copyfile(refined, tmp)
    print(f"window0: {refined} -> {out}")


if __name__ == "__main__":
    command(main)
