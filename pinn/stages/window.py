"""Stage `window@window<k>` (k >= 1): one later time-marching window (`pinn.windows`).

Window k starts from window k−1's network (`--start`; window 0's is the refine stage's output,
copied by the `window0` stage) and trains it on its own time slab `[t_k, t_{k+1}]`: the PDE and
boundary conditions as configured, the initial condition at `t = t_k` given by window k−1's
network there (Wight & Zhao 2020, §2.3). The network is the finest cascade level's (same width as
window k−1's, so it starts from those very parameters; its time input is embedded over the new
slab). Training: `windows.later.window<k>.steps` Adam steps (every other component as
configured: sampler, balancer incl. causal weighting within the slab, optimizer), then
`refine_iterations` iterations of `refine.method` on the collocation set moved into the slab
(0: none). Not resumable (a killed window restarts).

Outputs: `--export` (the network's parameters in the precision it ends in, + `steps` and
`refine_iterations`; a deterministic .npz) and under `--logs`: `history.csv` (Adam phase, one row
per log interval; rel L2 against the reference on the slab), `refine.csv` (one row per block) and
`metrics.json` (the last rows: steps, loss, rel L2 on the slab after each phase).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from pinn import io, windows
from pinn.errors import DivergenceError, UserError
from pinn.precision import refined_precision, scope
from pinn.stages.common import (
    PARAMS, QUIET, command, load_collocation, load_reference, problem_of,
    progress_wanted, read_params, require, write_history,
)

REFINE_COLUMNS = ["iteration", "loss", "rel_l2", "wall_s", "method"]


def window_seed(cfg, k: int) -> int:
    """Window k's PRNG seed: `seed·1000 + 100 + k` (the cascade levels use `seed·1000 + i`, i < 8)."""
    return cfg.seed * 1000 + 100 + k


def previous_field(cfg, whole, k: int, start: Path, dtype):
    """Window k−1's network as a field `u(z)` `(N, d) -> (N,)` / `(N, fields)` in `dtype`, and its
    parameters (loaded from `start`; the network embeds time over window k−1's slab)."""
    from pinn.levels import level_model, level_names
    from pinn.models import apply_fn, cast, split

    model = level_model(cfg, windows.window_problem(cfg, whole, k - 1), level_names(cfg)[-1])
    graphdef, template, rest = split(model)
    params, _ = io.load_tree(start, cast(template, dtype))
    u = apply_fn(graphdef, cast(rest, dtype))
    return (lambda z: u(params, z)), params


def main(
    params: Path = PARAMS,
    window: str = typer.Option(..., "--window", help="Which window of windows.later."),
    start: Path = typer.Option(..., "--start", help="The previous window's network (.npz)."),
    reference: Path = typer.Option(..., "--reference", help="Reference solution (rel L2 logging)."),
    collocation: Path = typer.Option(..., "--collocation", help="Fixed point sets."),
    export: Path = typer.Option(..., "--export", help="This window's network (.npz)."),
    logs: Path = typer.Option(..., "--logs", help="Directory for history.csv, refine.csv, metrics.json."),
    quiet: bool = QUIET,
) -> None:
    from pinn import cascade
    from pinn.levels import level_names
    from pinn.refine import refine

    cfg = read_params(params)
    if window not in cfg.windows.later:
        raise UserError(f"--window {window}: not in windows.later ({', '.join(cfg.windows.later) or 'none'})")
    settings = cfg.windows.later[window]
    k = int(window[len("window"):])
    require(start, "window0" if k == 1 else f"window@{settings.after}")
    finest = level_names(cfg)[-1]
    whole = problem_of(cfg)
    sets = windows.collocation_in_window(cfg, whole, load_collocation(collocation), k)
    ref = windows.reference_in_window(cfg, whole, load_reference(reference), k)
    fixed = sets["interior"] if cascade.uses_fixed_points(cfg) else None

    # Adam phase, in train.precision
    with scope(cfg.train.precision) as dtype:
        initial, start_params = previous_field(cfg, whole, k, start, dtype)
        problem = windows.window_problem(cfg, whole, k, initial)
        trainer, _ = cascade.make_trainer(cfg, problem, finest, fixed_points=fixed)
        state = trainer.init(start_params, window_seed(cfg, k))
        state, rows = cascade.train_level(
            trainer, state, settings.steps, level=window, log_every=cfg.train.log_every,
            max_divergence_retries=cfg.train.max_divergence_retries,
            divergence_lr_factor=cfg.train.divergence_lr_factor,
            reference=ref, progress=progress_wanted(quiet),
            switch_loss_threshold=cfg.optimizer.switch_loss_threshold,
        )
        trained = jax_to_numpy(state.params)
        weights = np.asarray(trainer.balancer.weights(state.balancer_state))
    summary = {"steps": int(state.step)}
    summary.update({f"adam_{k_}": v for k_, v in rows[-1].items() if isinstance(v, (int, float))})

    # quasi-Newton phase, in its own precision
    iterations = settings.refine_iterations
    precision = refined_precision(cfg.refine.method, iterations, cfg.refine.precision,
                                  cfg.train.precision)
    refine_rows: list[dict] = []
    with scope(precision) as dtype:
        out = trained
        if not (cfg.refine.method == "none" or iterations == 0):
            initial, _ = previous_field(cfg, whole, k, start, dtype)
            problem = windows.window_problem(cfg, whole, k, initial)
            trainer, _ = cascade.make_trainer(cfg, problem, finest, fixed_points=fixed)
            wcfg = cfg.model_copy(update={"refine": cfg.refine.model_copy(
                update={"iterations": iterations})})
            out, _, _ = refine(wcfg, problem, trainer.graphdef, trainer.rest, trained, weights,
                               sets, reference=ref, on_log=refine_rows.append,
                               progress=progress_wanted(quiet))
            if not np.isfinite(refine_rows[-1]["loss"]):
                raise DivergenceError(f"window {window}: refinement loss is not finite; nothing written")
            summary.update({f"refine_{k_}": v for k_, v in refine_rows[-1].items()
                            if isinstance(v, (int, float))})
        out = jax_to_numpy(out)
        io.save_tree(export, out, steps=np.asarray(int(state.step), np.int64),
                     refine_iterations=np.asarray(refine_rows[-1]["iteration"] if refine_rows else 0))
    summary["rel_l2"] = summary.get("refine_rel_l2", summary.get("adam_rel_l2", float("nan")))
    write_history(logs / "history.csv", rows)
    write_history(logs / "refine.csv", refine_rows, columns=REFINE_COLUMNS)
    io.write_json(logs / "metrics.json", summary)
    print(f"window {window}: {summary['steps']} Adam steps, {len(refine_rows) and refine_rows[-1]['iteration']} "
          f"refinement iterations, rel L2 on its slab {summary['rel_l2']:.3e} -> {export}")


def jax_to_numpy(tree):
    """A pytree's leaves as numpy arrays (to leave a precision scope)."""
    import jax

    return jax.tree_util.tree_map(np.asarray, tree)


if __name__ == "__main__":
    command(main)
