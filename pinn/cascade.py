"""The multilevel cascade in one place: build a level, start it from the previous one, train it.

Used by the stages `init` and `train` (`pinn.stages`). Level i of L has width
`model.width · coarsening_factor^(L−1−i)`; level 0 starts from the `init` export (the seeded
network); level i>0 starts from level i−1's export (`Carry`), widened by the function-preserving
prolongation of `pinn.multilevel` with the Adam state carried over.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pinn import multilevel, optim
from pinn.config import Params
from pinn.errors import DivergenceError
from pinn.evaluate import accuracy
from pinn.levels import level_model, level_names, level_seed, level_steps  # noqa: F401 (re-exported)
from pinn.models import PINN, split
from pinn.precision import DTYPES
from pinn.progress import Progress, ProgressMode
from pinn.train import Trainer, TrainState

log = logging.getLogger("pinn.cascade")

def uses_fixed_points(cfg: Params) -> bool:
    """Whether the Adam-phase sampler trains on the fixed interior set (RAR-D, or fixed uniform)."""
    s = cfg.sampling
    return s.method == "rar_d" or (s.method == "uniform" and not s.uniform.resample)


def make_trainer(cfg: Params, problem, level: str, fixed_points=None, observations=None
                 ) -> tuple[Trainer, PINN]:
    model = level_model(cfg, problem, level)
    trainer = Trainer.from_params(cfg, problem, model, fixed_points=fixed_points,
                                  dtype=DTYPES[cfg.train.precision], observations=observations)
    return trainer, model


def state_template(trainer: Trainer, model: PINN, cfg: Params, level: str) -> TrainState:
    _, params, _ = split(model)
    return trainer.init(params, level_seed(cfg, level))


class Carry(NamedTuple):
    """What a level hands to the next (its export, besides the count of steps taken so far).

    The cascade carries the network (widened), Adam's moments and step count (widened, new
    entries seeded), the balancer's state (its weights) and the PRNG key; the learning-rate
    scale in Adam's state belongs to one level (lowered by its divergence retries) and restarts
    at the next level's initial value. The sampler always
    restarts from the current params: its state (pools, banks, RAD points) belongs to one width's
    residual and is not carried.
    """

    params: Any
    opt_state: Any
    balancer_state: Any
    key: jax.Array


def carry_of(state: TrainState) -> Carry:
    return Carry(state.params, state.opt_state, state.balancer_state, state.key)


def carry_template(trainer: Trainer, model: PINN, cfg: Params, level: str) -> Carry:
    """The structure (shapes, dtypes) of `level`'s export, for loading it (`pinn.io.load_tree`)."""
    return carry_of(state_template(trainer, model, cfg, level))


def start_level(
    cfg: Params,
    trainer: Trainer,
    model: PINN,
    level: str,
    *,
    network: Any = None,
    previous: Carry | None = None,
    previous_trainer: Trainer | None = None,
) -> TrainState:
    """The state a level starts from: every component initialised from the current params, then

    - with `network` (the `init` export): that network's parameters;
    - with `previous` (the previous level's `Carry`): its network widened (function-preserving) to
      this level's width, Adam's moments carried over (new entries seeded so the first step does
      not jump, using the carried balancer weights), the balancer state and PRNG key carried over;
      the learning-rate scale is the fresh state's (a divergence's cut stays in its level).
    """
    fresh = state_template(trainer, model, cfg, level)
    if network is not None:
        return fresh._replace(params=network)
    if previous is None:
        return fresh
    fine_params = multilevel.prolongate(
        previous.params, fresh.params, coarse_rest=previous_trainer.rest if previous_trainer else None,
        fine_rest=trainer.rest,
    )
    # gradient at transfer (with the weights training will use) for seeding Adam's second moment
    # of the new entries
    probe = fresh._replace(params=fine_params, balancer_state=previous.balancer_state)
    _, metrics_grads = _grads_at(trainer, probe)
    opt_state = multilevel.prolongate_adam_state(
        previous.opt_state, previous.params, fine_params, metrics_grads,
        b1=cfg.optimizer.b1, b2=cfg.optimizer.b2,
    )
    opt_state = optim.with_lr_scale(opt_state, optim.lr_scale_of(fresh.opt_state))
    return fresh._replace(
        params=fine_params,
        opt_state=opt_state,
        balancer_state=previous.balancer_state,
        key=previous.key,
    )


def _grads_at(trainer: Trainer, state: TrainState):
    """Loss gradient at `state.params` on a freshly drawn batch (not a training step)."""
    from pinn.train import loss_terms

    sampler_state = trainer.sampler.update(
        state.sampler_state, state.key, state.step, trainer.residual_fn(state.params)
    )
    points, weights = trainer.sampler.batch(sampler_state)
    k1, k2 = jax.random.split(state.key)
    ic_x = trainer._ic_points(k1, trainer.ic_batch_size)
    bc_z = trainer._interior_points(k2, trainer.bc_batch_size)
    w = trainer.balancer.weights(state.balancer_state)

    def total(p):
        terms, _ = loss_terms(trainer.problem, trainer.spec, trainer.u, p, points, weights, ic_x, bc_z,
                              trainer.obs)
        return jnp.dot(w.astype(terms.dtype), terms)

    return jax.value_and_grad(total)(state.params)


def _to_float(x) -> float:
    return float(np.asarray(x))


def train_level(
    trainer: Trainer,
    state: TrainState,
    num_steps: int,
    *,
    level: str,
    log_every: int,
    max_divergence_retries: int,
    divergence_lr_factor: float,
    reference=None,
    on_log: Callable[[dict], None] | None = None,
    on_chunk: Callable[[TrainState], None] | None = None,
    switch_loss_threshold: float | None = None,
    wall_budget_s: float | None = None,
    step_offset: int = 0,
    wall_offset: float = 0.0,
    progress: bool | ProgressMode = False,
) -> tuple[TrainState, list[dict]]:
    """Run `num_steps` (minus `state.step` already done) in jitted chunks of `log_every` steps.

    Logs every chunk: each loss term, weights, sampler statistics, rel L2 against `reference`,
    wall time and steps/s. Stops early when the loss falls below `switch_loss_threshold` (hybrid
    switch) or `wall_budget_s` is spent. A non-finite step (caught within one step, not applied)
    rolls back to the start of its interval and retries it with the learning-rate scale in the
    optimizer state (`pinn.optim.with_lr_scale`) multiplied by `divergence_lr_factor`; after
    `max_divergence_retries` such retries it raises `DivergenceError` (params `train.*`). Every
    row logs the scale in use as `lr_scale`.
    `progress`: a bar, or a line per log interval (`pinn.progress.progress_mode`; steps, loss, rel L2, steps/s).
    """
    rows: list[dict] = []
    done = int(state.step)
    bar = Progress(progress, phase=f"train {level}", total=num_steps, initial=done, unit="step",
                   rate_unit="steps/s")
    t_start = time.perf_counter()
    retries = 0
    while done < num_steps:
        n = min(log_every, num_steps - done)
        t0 = time.perf_counter()
        last_good = state
        state, m = trainer.run(state, n)
        jax.block_until_ready(state.params)
        dt = time.perf_counter() - t0
        if int(state.nonfinite) > int(last_good.nonfinite):
            # caught within one step (the non-finite update was not applied); roll back to the
            # state at the start of this interval and retry with a smaller learning rate
            retries += 1
            current = float(optim.lr_scale_of(last_good.opt_state))
            lowered = current * divergence_lr_factor  # held as float32 in the state
            if retries > max_divergence_retries:
                bar.close()
                raise DivergenceError(
                    f"level {level}: training diverged (non-finite loss or gradient) between steps "
                    f"{int(last_good.step)} and {int(state.step)}; gave up after "
                    f"{max_divergence_retries} retries with the learning rate lowered to "
                    f"{current:.3g}x (train.max_divergence_retries, "
                    "train.divergence_lr_factor)"
                )
            log.warning("level %s: non-finite loss/gradient after step %d: rolling back to step %d, "
                        "learning rate x%.3g (retry %d of %d)", level, int(state.step),
                        int(last_good.step), lowered, retries, max_divergence_retries)
            state = last_good._replace(opt_state=optim.with_lr_scale(last_good.opt_state, lowered))
            continue
        done = int(state.step)
        row = {"level": level, "step": step_offset + done, "level_step": done}
        row.update({k: _to_float(v) for k, v in m.items()})
        row["steps_per_s"] = n / dt if dt > 0 else float("nan")
        row["wall_s"] = wall_offset + time.perf_counter() - t_start
        row["lr_scale"] = float(optim.lr_scale_of(state.opt_state))
        if reference is not None:
            row["rel_l2"] = accuracy(trainer.field(state.params), reference, dtype=trainer.dtype,
                                     fields=trainer.problem.fields).rel_l2
        rows.append(row)
        bar.update(n, done, loss=row.get("loss", float("nan")), rel_l2=row.get("rel_l2"),
                   rate=row["steps_per_s"])
        if on_log is not None:
            on_log(row)
        if on_chunk is not None:
            on_chunk(state)
        if switch_loss_threshold is not None and row["loss"] < switch_loss_threshold:
            break
        if wall_budget_s is not None and time.perf_counter() - t_start >= wall_budget_s:
            break
    bar.close()
    return state, rows


def finite_rows(rows: list[dict]) -> bool:
    return all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))
