"""The multilevel cascade in one place: build a level, start it from the previous one, train it.

Used by the DVC stages (`pinn stage init|train`) and by in-process experiments (benchmarks,
comparisons), so both run exactly the same code.

Level i of L has width `model.width · coarsening_factor^(L−1−i)`; level 0 starts from the `init`
export (the seeded random network); level i>0 starts from level i−1's export, widened by the
function-preserving prolongation of `pinn.multilevel` with the Adam state carried over.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from pinn import multilevel
from pinn.config import Params, level_widths
from pinn.evaluate import accuracy
from pinn.models import PINN, make_model, split
from pinn.train import Trainer, TrainState

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}
log = logging.getLogger("pinn.cascade")


class DivergenceError(RuntimeError):
    """Training produced non-finite losses or gradients and the retry policy is exhausted."""


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


def uses_fixed_points(cfg: Params) -> bool:
    """Whether the Adam-phase sampler trains on the fixed interior set (RAR-D, or fixed uniform)."""
    s = cfg.sampling
    return s.method == "rar_d" or (s.method == "uniform" and not s.uniform.resample)


def level_names(cfg: Params) -> list[str]:
    return list(cfg.multilevel.levels)


def level_model(cfg: Params, problem, level: str) -> PINN:
    """The network of `level` (seeded by `seed`; the non-trainable parts are shared by all levels)."""
    widths = level_widths(cfg)
    dtype = DTYPES[cfg.train.precision]
    return make_model(cfg.model, problem, seed=cfg.seed, width=widths[level], dtype=dtype)


def level_steps(cfg: Params, level: str) -> int:
    names = level_names(cfg)
    steps = cfg.multilevel.levels[level].steps
    if level == names[-1]:
        steps += cfg.multilevel.finest_warmup_steps
    return steps


def make_trainer(cfg: Params, problem, level: str, fixed_points=None) -> tuple[Trainer, PINN]:
    model = level_model(cfg, problem, level)
    trainer = Trainer(cfg, problem, model, fixed_points=fixed_points, dtype=DTYPES[cfg.train.precision])
    return trainer, model


def level_seed(cfg: Params, level: str) -> int:
    return cfg.seed * 1000 + level_names(cfg).index(level)


def state_template(trainer: Trainer, model: PINN, cfg: Params, level: str) -> TrainState:
    _, params, _ = split(model)
    return trainer.init(params, level_seed(cfg, level))


def start_level(
    cfg: Params,
    trainer: Trainer,
    model: PINN,
    level: str,
    previous: TrainState | None,
    previous_trainer: Trainer | None = None,
) -> TrainState:
    """The state a level starts from.

    Without `previous`: the freshly seeded network. Otherwise the previous level's network is
    widened (function-preserving) to this level's width; Adam moments carry over (new entries seeded
    so the first step does not jump), the balancer weights carry over, the sampler restarts.
    """
    fresh = state_template(trainer, model, cfg, level)
    if previous is None:
        return fresh
    fine_params = multilevel.prolongate(
        previous.params, fresh.params, coarse_rest=previous_trainer.rest if previous_trainer else None,
        fine_rest=trainer.rest,
    )
    # gradient at transfer for seeding Adam's second moment of the new entries
    probe = fresh._replace(params=fine_params)
    _, metrics_grads = _grads_at(trainer, probe)
    opt_state = multilevel.prolongate_adam_state(
        previous.opt_state, previous.params, fine_params, metrics_grads,
        b1=cfg.optimizer.b1, b2=cfg.optimizer.b2,
    )
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
    ic_x = trainer._ic_points(k1, trainer.cfg.sampling.ic_batch_size)
    bc_z = trainer._interior_points(k2, trainer.cfg.sampling.bc_batch_size)
    w = trainer.balancer.weights(state.balancer_state)

    def total(p):
        terms, _ = loss_terms(trainer.problem, trainer.spec, trainer.u, p, points, weights, ic_x, bc_z)
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
    reference=None,
    on_log: Callable[[dict], None] | None = None,
    on_chunk: Callable[[TrainState], None] | None = None,
    switch_loss_threshold: float | None = None,
    wall_budget_s: float | None = None,
    step_offset: int = 0,
    wall_offset: float = 0.0,
    progress: bool = False,
) -> tuple[TrainState, list[dict]]:
    """Run `num_steps` (minus `state.step` already done) in jitted chunks of `log_every` steps.

    Logs every chunk: each loss term, weights, sampler statistics, rel L2 against `reference`,
    wall time and steps/s. Stops early when the loss falls below `switch_loss_threshold` (hybrid
    switch) or `wall_budget_s` is spent. Raises `DivergenceError` if a step was non-finite.
    """
    from tqdm.auto import tqdm

    rows: list[dict] = []
    done = int(state.step)
    bar = tqdm(total=num_steps, initial=done, desc=f"train {level}", disable=not progress, leave=False)
    t_start = time.perf_counter()
    tcfg = trainer.cfg.train
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
            lr_scale = float(last_good.lr_scale) * tcfg.divergence_lr_factor
            if retries > tcfg.max_divergence_retries:
                bar.close()
                raise DivergenceError(
                    f"level {level}: training diverged (non-finite loss or gradient) between steps "
                    f"{int(last_good.step)} and {int(state.step)}; gave up after "
                    f"{tcfg.max_divergence_retries} retries with the learning rate lowered to "
                    f"{float(last_good.lr_scale):.3g}x (train.max_divergence_retries, "
                    "train.divergence_lr_factor)"
                )
            log.warning("level %s: non-finite loss/gradient after step %d: rolling back to step %d, "
                        "learning rate x%.3g (retry %d of %d)", level, int(state.step),
                        int(last_good.step), lr_scale, retries, tcfg.max_divergence_retries)
            state = last_good._replace(lr_scale=jnp.asarray(lr_scale, jnp.float32))
            continue
        done = int(state.step)
        bar.update(n)
        row = {"level": level, "step": step_offset + done, "level_step": done}
        row.update({k: _to_float(v) for k, v in m.items()})
        row["steps_per_s"] = n / dt if dt > 0 else float("nan")
        row["wall_s"] = wall_offset + time.perf_counter() - t_start
        row["lr_scale"] = float(state.lr_scale)
        if reference is not None:
            row["rel_l2"] = accuracy(trainer.field(state.params), reference, dtype=trainer.dtype).rel_l2
        rows.append(row)
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
