"""A whole training run in one process — every cascade level, then the refinement — on the same code
the DVC stages use (`pinn.cascade`, `pinn.refine`). For benchmarks and comparisons of variants.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from pinn import cascade
from pinn.config import Params
from pinn.evaluate import accuracy
from pinn.problems import make_problem
from pinn.refine import refine


@dataclass
class RunResult:
    rel_l2: float
    max_abs: float
    steps: int  # Adam steps over all levels
    refine_iterations: int
    wall_s: float
    history: list[dict] = field(default_factory=list)  # one row per log interval, all phases
    diverged: bool = False


def run(
    cfg: Params,
    reference,
    *,
    wall_budget_s: float | None = None,
    progress: bool = False,
) -> RunResult:
    """Train `cfg` end to end. With `wall_budget_s`, every phase stops once the budget is spent
    (the time is shared: Adam levels first, then the refinement gets what is left)."""
    problem = make_problem(cfg.problem.name, **cfg.problem.coefficients)
    points = cascade.collocation_sets(cfg, problem)
    fixed = points["interior"] if cascade.uses_fixed_points(cfg) else None
    history: list[dict] = []
    t0 = time.perf_counter()
    state = trainer = None
    steps_done = 0
    for level in cascade.level_names(cfg):
        new_trainer, model = cascade.make_trainer(cfg, problem, level, fixed_points=fixed)
        state = cascade.start_level(cfg, new_trainer, model, level, state, trainer)
        trainer = new_trainer
        left = None if wall_budget_s is None else wall_budget_s - (time.perf_counter() - t0)
        if left is not None and left <= 0:
            break
        try:
            state, rows = cascade.train_level(
                trainer, state, cascade.level_steps(cfg, level), level=level,
                log_every=cfg.train.log_every, reference=reference, step_offset=steps_done,
                wall_offset=time.perf_counter() - t0, wall_budget_s=left, progress=progress,
                switch_loss_threshold=cfg.optimizer.switch_loss_threshold,
            )
        except cascade.DivergenceError:
            return RunResult(float("nan"), float("nan"), steps_done, 0, time.perf_counter() - t0,
                             history, diverged=True)
        history += [dict(r, phase="adam") for r in rows]
        steps_done += int(state.step)
    params = state.params
    u, dtype = trainer.u, trainer.dtype
    iterations = 0
    left = None if wall_budget_s is None else wall_budget_s - (time.perf_counter() - t0)
    if cfg.refine.method != "none" and cfg.refine.iterations > 0 and (left is None or left > 0):
        weights = np.asarray(trainer.balancer.weights(state.balancer_state))
        t_refine = time.perf_counter() - t0
        params, rows, dtype = refine(
            cfg, problem, trainer.graphdef, trainer.rest, params, weights, points,
            reference=reference, wall_budget_s=left, progress=progress,
        )
        from pinn.models import apply_fn, cast

        u = apply_fn(trainer.graphdef, cast(trainer.rest, dtype))
        for r in rows:
            history.append(dict(r, phase="refine", step=steps_done + r["iteration"],
                                wall_s=t_refine + r["wall_s"]))
        iterations = rows[-1]["iteration"] if rows else 0
    wall = time.perf_counter() - t0
    acc = accuracy(lambda z: u(params, z), reference, dtype=dtype)
    return RunResult(acc.rel_l2, acc.max_abs, steps_done, iterations, wall, history,
                     diverged=not acc.finite)


def with_overrides(cfg: Params, overrides: dict) -> Params:
    """A copy of `cfg` with dotted-key overrides, re-validated: {"sampling.method": "rad"}."""
    from pinn.config import validate_params

    data = cfg.model_dump()
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return validate_params(data, source="overrides")
