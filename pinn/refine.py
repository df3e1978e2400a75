"""The quasi-Newton refinement phase (hybrid Adam → L-BFGS / BFGS / self-scaled Broyden).

Minimises the weighted loss Σ wᵢ Lᵢ (weights frozen at the end of the Adam phase) on a fixed point
set — the collocation stage's Sobol points — in float64 by default (float32 makes quasi-Newton stop
early: Xu et al. 2025). Iterations run in blocks compiled once (`pinn.optim.quasi_newton_runner`);
optionally the interior points are redrawn with RAD between blocks (Urbán et al. 2025: the dense
inverse-Hessian approximation is kept across resampling).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pinn.config import Params
from pinn.evaluate import accuracy
from pinn.models import apply_fn, cast
from pinn.from_params import loss_from_params, refine_optimizer_from_params
from pinn.optim import quasi_newton_runner
from pinn.precision import DTYPES
from pinn.progress import Progress, ProgressMode
from pinn.sampling import rad_probabilities
from pinn.loss import observation_sets
from pinn.problems.trainable import raw_of
from pinn.loss import loss_terms


def _rad_redraw(key, residual_fn, n: int, lower, upper, k: float, c: float, dtype):
    """n points drawn from a 4n uniform pool with p ∝ |r|^k / mean|r|^k + c (Wu et al. 2023)."""
    k_pool, k_pick = jax.random.split(key)
    d = lower.shape[0]
    pool = lower + (upper - lower) * jax.random.uniform(k_pool, (4 * n, d), dtype)
    mag = jnp.abs(residual_fn(pool))
    p = rad_probabilities(mag, k, c)
    idx = jax.random.choice(k_pick, 4 * n, (n,), replace=False, p=p)
    return pool[idx]


class RefineState(NamedTuple):
    """Everything the refinement needs to resume: checkpointed after every block."""

    params: Any
    opt_state: Any
    points: jax.Array  # current interior points (redrawn by RAD between blocks)
    key: jax.Array
    iteration: jax.Array  # int32: iterations done
    block: jax.Array  # int32: blocks done


def refine(
    cfg: Params,
    problem,
    graphdef,
    rest,
    params,
    term_weights: np.ndarray,
    collocation: dict[str, np.ndarray],
    *,
    reference=None,
    on_log: Callable[[dict], None] | None = None,
    on_block: Callable[[RefineState], None] | None = None,
    restore: Callable[[RefineState], RefineState | None] | None = None,
    wall_budget_s: float | None = None,
    progress: bool | ProgressMode = False,
):
    """Run `cfg.refine.iterations` quasi-Newton iterations; returns `(params, rows, dtype)`.

    Must run inside `pinn.precision.scope(cfg.refine.precision)` (precision is never switched
    process-wide; a RuntimeError says so otherwise).

    `on_block(state)` is called after every block (checkpointing); `restore(template)` may return a
    saved `RefineState` to continue from (resuming a killed run). `progress`: a bar, or a line
    per block (`pinn.progress.progress_mode`; iterations, loss, rel L2, iterations/s).
    """
    rcfg = cfg.refine
    dtype = DTYPES[rcfg.precision]
    if jnp.dtype(dtype) != jax.dtypes.canonicalize_dtype(dtype):
        raise RuntimeError(f"refine: refine.precision = {rcfg.precision} needs x64: call it inside "
                           "`pinn.precision.scope(cfg.refine.precision)`")
    params = cast(params, dtype)
    rest = cast(rest, dtype)
    u = apply_fn(graphdef, rest)
    spec = loss_from_params(cfg, problem)
    # the refinement minimises the plain loss on its fixed point set (no causal weighting)
    spec = dataclasses.replace(spec, causal=None)
    w = jnp.asarray(term_weights, dtype)
    points = jnp.asarray(collocation["interior"], dtype)
    ic_x = jnp.asarray(collocation["ic"], dtype)
    bc_z = jnp.asarray(collocation["bc"], dtype)
    ones = jnp.ones((points.shape[0],), dtype)
    obs = tuple((jnp.asarray(z, dtype), jnp.asarray(v, dtype))
                for z, v in observation_sets(problem, collocation))

    def loss_fn(p, pts, icx, bcz):
        terms, _ = loss_terms(problem, spec, u, p, pts, ones, icx, bcz, obs)
        return jnp.dot(w, terms)

    runner = quasi_newton_runner(loss_fn, refine_optimizer_from_params(cfg), block_size=rcfg.block_size)
    state = runner.init(params)
    lower = jnp.asarray(problem.lower, dtype)
    upper = jnp.asarray(problem.upper, dtype)
    redraw = jax.jit(
        lambda key, p: _rad_redraw(
            key, lambda z: spec.problem_at(problem, p).residual(lambda zz: u(p, zz), z),
            points.shape[0], lower, upper,
            rcfg.rad_k, rcfg.rad_c, dtype,
        )
    )
    key = jax.random.PRNGKey(cfg.seed + 7919)
    rows: list[dict] = []
    done = 0
    block_index = 0
    if restore is not None:
        template = RefineState(params, state, points, key, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        saved = restore(template)
        if saved is not None:
            params, state, points, key = saved.params, saved.opt_state, saved.points, saved.key
            done, block_index = int(saved.iteration), int(saved.block)
            # the saved line-search cache matches the saved params and points: resuming continues
            # bit-identically (a redraw at the next block boundary resets the cache itself)
    t_start = time.perf_counter()
    bar = Progress(progress, phase=f"refine {rcfg.method}", total=rcfg.iterations, initial=done,
                   unit="iteration", rate_unit="iterations/s")
    while done < rcfg.iterations:
        t_block = time.perf_counter()
        if rcfg.resample_every_blocks and block_index > 0 and block_index % rcfg.resample_every_blocks == 0:
            key, sub = jax.random.split(key)
            points = redraw(sub, params)
            state = runner.reset_cache(state, params, points, ic_x, bc_z)
        n = min(rcfg.block_size, rcfg.iterations - done)
        params, state, info = runner.block(params, state, points, ic_x, bc_z, num_steps=n)
        losses = np.asarray(info.loss)[:n]
        done += n
        block_index += 1
        row = {
            "iteration": done,
            "loss": float(losses[-1]),
            "grad_norm": float(np.asarray(info.grad_norm)[n - 1]),
            "accepted_steps": int(np.sum(np.asarray(info.status)[:n] == 0)),
            "wall_s": time.perf_counter() - t_start,
            "method": rcfg.method,
        }
        if spec.trainable is not None:  # the recovered coefficients (`pinn.problems.trainable`)
            row.update({f"coef_{k}": float(np.asarray(v)) for k, v in
                        spec.trainable.values(raw_of(params)).items()})
        if reference is not None:
            row["rel_l2"] = accuracy(lambda z: u(params, z), reference, dtype=dtype,
                                     fields=problem.fields).rel_l2
        rows.append(row)
        seconds = time.perf_counter() - t_block  # the block, its redraw and rel L2 included
        bar.update(n, done, loss=row["loss"], rel_l2=row.get("rel_l2"),
                   rate=n / seconds if seconds > 0 else float("nan"))
        if on_log is not None:
            on_log(row)
        if on_block is not None:
            on_block(RefineState(params, state, points, key, jnp.asarray(done, jnp.int32),
                                 jnp.asarray(block_index, jnp.int32)))
        if row["accepted_steps"] == 0:
            break  # converged or stalled: further blocks would do nothing
        if wall_budget_s is not None and row["wall_s"] >= wall_budget_s:
            break
    bar.close()
    return params, rows, dtype
