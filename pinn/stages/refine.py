"""Stage `refine`: quasi-Newton refinement of the finest level on the collocation set.

Runs in `refine.precision` (float64 by default) inside a precision scope; with `refine.method:
none` (or 0 iterations) it passes the finest network through. Resumable per block.
Input: `<--exports>/<finest level>.npz`. Outputs: `--out` (the refined network's parameters + `refine_iterations`; deterministic .npz) and
`--history` (one row per block: loss, rel L2, accepted steps, wall seconds).
With time-marching windows (`windows.count` > 1) it refines window 0 (`pinn.windows`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from pinn import io, windows
from pinn.errors import DivergenceError
from pinn.loss import observation_sets
from pinn.precision import refined_precision, scope
from pinn.stages.common import (
    PARAMS, QUIET, command, load_collocation, load_reference, problem_of,
    progress_wanted, read_params, require, write_history,
)
from pinn.stages.resume import Resume, fingerprint

HISTORY_COLUMNS = ["iteration", "loss", "rel_l2", "wall_s", "method"]


def output_precision(cfg) -> str:
    r = cfg.refine
    return refined_precision(r.method, r.iterations, r.precision, cfg.train.precision)


def main(
    params: Path = PARAMS,
    exports: Path = typer.Option(..., "--exports", help="Directory of the levels' exports."),
    collocation: Path = typer.Option(..., "--collocation", help="Fixed point sets."),
    reference: Path = typer.Option(..., "--reference", help="Reference solution (rel L2 logging)."),
    out: Path = typer.Option(..., "--out", help="Refined network parameters (.npz)."),
    history: Path = typer.Option(..., "--history", help="Refinement history (.csv)."),
    resume: Path = typer.Option(..., "--resume", help="In-progress checkpoints (not an output)."),
    quiet: bool = QUIET,
) -> None:
    from pinn import cascade
    from pinn.refine import refine

    cfg = read_params(params)
    finest = cascade.level_names(cfg)[-1]
    start = require(exports / f"{finest}.npz", f"train@{finest}")
    skipped = cfg.refine.method == "none" or cfg.refine.iterations == 0
    rows: list[dict] = []
    with scope(output_precision(cfg)):
        # time-marching (windows.count > 1): window 0, on the first time slab
        whole = problem_of(cfg)
        problem = windows.window_problem(cfg, whole, 0)
        sets = windows.collocation_in_window(cfg, whole, load_collocation(collocation), 0)
        fixed = sets["interior"] if cascade.uses_fixed_points(cfg) else None
        observations = observation_sets(problem, sets)
        trainer, model = cascade.make_trainer(cfg, problem, finest, fixed_points=fixed,
                                              observations=observations)
        template = cascade.carry_template(trainer, model, cfg, finest)
        carry, _ = io.load_tree(start, template)
        if skipped:
            params_out = carry.params
        else:
            from pinn.models import count_params
            from pinn.optim import check_dense_size

            # the memory part of the dense check (the gate checked the parameter count)
            check_dense_size(count_params(carry.params), cfg.refine.method,
                             bytes_per_entry=8 if cfg.refine.precision == "float64" else 4)
            weights = np.asarray(trainer.balancer.weights(carry.balancer_state))
            saved = Resume(resume, fingerprint(cfg, "refine", [start, collocation, reference]))

            def restore(template):
                found = saved.checkpoints.restore_latest(template)
                if found is None:
                    return None
                step, state = found
                rows.extend(saved.history(int(state.iteration), key="iteration"))
                print(f"refine: resuming from checkpoint at iteration {step}")
                return state

            params_out, _, _ = refine(
                cfg, problem, trainer.graphdef, trainer.rest, carry.params, weights,
                sets, reference=windows.reference_in_window(cfg, whole, load_reference(reference), 0),
                on_log=rows.append, progress=progress_wanted(quiet),
                on_block=lambda s: saved.save(int(s.iteration), s, rows), restore=restore,
            )
            saved.checkpoints.wait()
        final_loss = rows[-1]["loss"] if rows else float("nan")
        if rows and not np.isfinite(final_loss):
            # (the quasi-Newton blocks never accept a non-finite step: a last line of defence)
            raise DivergenceError(f"refine: loss is not finite ({final_loss}); nothing written")
        write_history(history, rows, columns=HISTORY_COLUMNS)
        io.save_tree(out, params_out, refine_iterations=np.asarray(rows[-1]["iteration"] if rows else 0))
    if not skipped:
        saved.finish()
        print(f"refine {cfg.refine.method}: {rows[-1]['iteration']} iterations, loss {final_loss:.3e}, "
              f"rel L2 {rows[-1].get('rel_l2', float('nan')):.3e} -> {out}")
    else:
        print(f"refine: skipped (method {cfg.refine.method}) -> {out}")


if __name__ == "__main__":
    command(main)
