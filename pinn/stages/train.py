"""Stage `train@<level>`: one cascade level, from the previous level's export (or `init`'s).

Every component (sampler, balancer, optimizer) starts from the current params; from the previous
level only `pinn.cascade.Carry` comes over (network, Adam moments, balancer state, PRNG key). A
killed run resumes from its newest valid checkpoint in `--resume` when rerun with the same params
and inputs, bit-identically on CPU.

Outputs: `--export` (the level's `Carry` + `steps_done`, the Adam steps of all levels so far; a
deterministic .npz), `--checkpoint` (orbax, the level's whole final state), and under `--logs`:
`history.csv` (one row per log interval), `metrics.json` (the last row, plus the network size),
`samples.npz` (the last batch's points and weights).

With time-marching windows (`windows.count` > 1) the level trains window 0 only: its problem,
points and logged rel L2 restricted to the first time slab (`pinn.windows`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import typer

from pinn import io, windows
from pinn.errors import UserError
from pinn.loss import observation_sets
from pinn.precision import scope
from pinn.stages.common import (
    PARAMS, QUIET, command, load_collocation, load_reference, problem_of,
    progress_wanted, read_params, require, write_history,
)
from pinn.stages.resume import Resume, fingerprint


def main(
    params: Path = PARAMS,
    level: str = typer.Option(..., "--level", help="Which level of multilevel.levels."),
    start: Path = typer.Option(..., "--start", help="The export this level starts from."),
    reference: Path = typer.Option(..., "--reference", help="Reference solution (rel L2 logging)."),
    collocation: Path = typer.Option(..., "--collocation", help="Fixed point sets."),
    export: Path = typer.Option(..., "--export", help="This level's export (.npz)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Orbax checkpoint directory."),
    logs: Path = typer.Option(..., "--logs", help="Directory for history.csv, metrics.json, samples.npz."),
    resume: Path = typer.Option(..., "--resume", help="In-progress checkpoints (not an output)."),
    quiet: bool = QUIET,
) -> None:
    from pinn import cascade
    from pinn.checkpoint import Checkpointer
    from pinn.models import count_params, split

    cfg = read_params(params)
    if level not in cfg.multilevel.levels:
        raise UserError(f"--level {level}: not in multilevel.levels ({', '.join(cfg.multilevel.levels)})")
    names = cascade.level_names(cfg)
    source = cfg.multilevel.levels[level].init_from
    require(start, "init" if source == "init" else f"train@{source}")
    with scope(cfg.train.precision):
        # time-marching (windows.count > 1): the cascade trains window 0, on the first time slab
        whole = problem_of(cfg)
        problem = windows.window_problem(cfg, whole, 0)
        ref = windows.reference_in_window(cfg, whole, load_reference(reference), 0)
        sets = windows.collocation_in_window(cfg, whole, load_collocation(collocation), 0)
        fixed = sets["interior"] if cascade.uses_fixed_points(cfg) else None
        observations = observation_sets(problem, sets)
        trainer, model = cascade.make_trainer(cfg, problem, level, fixed_points=fixed,
                                              observations=observations)
        if source == "init":
            network, _ = io.load_tree(start, split(model)[1])
            state = cascade.start_level(cfg, trainer, model, level, network=network)
            steps_before = 0
        else:
            prev_trainer, prev_model = cascade.make_trainer(
                cfg, problem, source, fixed_points=fixed, observations=observations)
            template = cascade.carry_template(prev_trainer, prev_model, cfg, source)
            previous, extras = io.load_tree(start, template)
            if "steps_done" not in extras:
                raise UserError(f"{start}: missing array 'extra/steps_done' (not a level export)")
            steps_before = int(extras["steps_done"])
            state = cascade.start_level(cfg, trainer, model, level, previous=previous,
                                        previous_trainer=prev_trainer)

        saved = Resume(resume, fingerprint(cfg, f"train-{level}", [start, reference, collocation]))
        restored = saved.checkpoints.restore_latest(state)
        if restored is not None:
            step, state = restored
            print(f"train {level}: resuming from checkpoint at step {step}")
        rows = saved.history(int(state.step), key="level_step")
        total = cascade.level_steps(cfg, level)
        last_saved = [int(state.step)]

        def on_chunk(s):
            step = int(s.step)
            if step - last_saved[0] >= cfg.train.checkpoint_every or step >= total:
                saved.save(step, s, rows)
                last_saved[0] = step

        state, _ = cascade.train_level(
            trainer, state, total, level=level, log_every=cfg.train.log_every, reference=ref,
            max_divergence_retries=cfg.train.max_divergence_retries,
            divergence_lr_factor=cfg.train.divergence_lr_factor,
            on_log=rows.append, on_chunk=on_chunk, progress=progress_wanted(quiet),
            # the hybrid switch ends the Adam phase: it applies where the refinement follows
            switch_loss_threshold=cfg.optimizer.switch_loss_threshold if level == names[-1] else None,
            step_offset=steps_before,
        )
        saved.checkpoints.wait()
        points, weights = trainer.sampler.batch(state.sampler_state)

        write_history(logs / "history.csv", rows)
        io.save_npz(logs / "samples.npz", {"points": np.asarray(points), "weights": np.asarray(weights)})
        shutil.rmtree(checkpoint, ignore_errors=True)  # this stage's output: replaced whole
        final = Checkpointer(checkpoint, max_to_keep=1)
        final.save(int(state.step), state, wait=True)
        final.close()
        steps_done = steps_before + int(state.step)
        io.save_tree(export, cascade.carry_of(state), steps_done=np.asarray(steps_done, np.int64))
        last = rows[-1] if rows else {}
        summary = {k: v for k, v in last.items() if isinstance(v, (int, float))}
        summary.update(num_params=count_params(state.params), batch_points=int(points.shape[0]))
        io.write_json(logs / "metrics.json", summary)
    saved.finish()
    print(f"train {level}: {int(state.step)} steps, loss {last.get('loss', float('nan')):.3e}, "
          f"rel L2 {last.get('rel_l2', float('nan')):.3e} -> {export}")


if __name__ == "__main__":
    command(main)
