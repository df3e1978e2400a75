"""Quasi-Newton refinement on a fixed loss, run in blocks compiled once.

The optimizers are optax transforms chained with the zoom line search, built from plain
hyperparameters: `lbfgs(memory_size, ...)` (optax's L-BFGS) and `ssbroyden(variant, ...)` (dense
BFGS / self-scaled BFGS / self-scaled Broyden, `pinn.optim.ssbroyden`); `refine_optimizer(method,
...)` picks one by name (`pinn.from_params.refine_optimizer_from_params` from params.yaml).

`quasi_newton_runner(loss_fn, opt, block_size=...)` returns `QuasiNewtonRunner(init, block,
reset_cache)`: `block(params, opt_state, *loss_args)` runs `block_size` iterations in one jitted
`lax.scan`; the loss data (`loss_args`, e.g. the collocation points) are arguments, so new points of
the same shapes reuse the compiled block. After the points change call `reset_cache`: it recomputes
the line search's cached value/gradient, drops the pending (s, y) pair (it would mix two losses) and,
for the dense methods, keeps H (symmetrised; reset to I if a Cholesky test fails), as Urbán,
Stefanou & Pons (J. Comput. Phys. 523, 2025) do between resampling blocks.

Inside a block no NaN is ever carried: an iteration is made only while ‖g‖ > grad_tol and the value
is finite; a step is accepted only if the new value and parameters are finite and the value strictly
decreased. A rejected step restarts the optimizer state (H = I / empty L-BFGS memory) at the current
parameters; a second rejection in a row (or ‖g‖ ≤ grad_tol) freezes the parameters for the rest of the
block (reported in `QuasiNewtonBlockInfo.status`); the next block checks again from its first
iteration (after new points it usually makes progress again).

Memory: a dense n×n H lives only in the scan carry. The step / no-step / restart `lax.cond`s read it
and return the rest of the state, whose `last_update` holds the update's O(n) factors; H is then
updated once per iteration, in place (`pinn.optim.ssbroyden.apply_update`). A block therefore holds
H twice (the argument and the carry; once with `donate_state=True`) and no n×n temporary.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pinn.optim.ssbroyden import (
    VARIANTS,
    ScaleByDenseQuasiNewtonState,
    apply_update,
    identity_update,
    ssbroyden,
    zoom_linesearch,
)
from pinn.trees import all_finite

LossFn = Callable[..., jax.Array]

# per-iteration status codes of QuasiNewtonBlockInfo.status
STEPPED = 0  #: an accepted step (the value strictly decreased)
IDLE = 1  #: no iteration: past `num_steps`, or frozen earlier in the block
CONVERGED = 2  #: ‖g‖ ≤ grad_tol at the iterate: frozen for the rest of the block
RESTARTED = 3  #: step rejected (no decrease or not finite): state restarted, parameters kept
STOPPED = 4  #: rejected right after a restart, or non-finite value/gradient: frozen for the block


def lbfgs(memory_size: int = 20, *, max_linesearch_steps: int = 20) -> optax.GradientTransformationExtraArgs:
    """optax L-BFGS (memory `memory_size`) with the zoom line search (at most
    `max_linesearch_steps` loss evaluations per iteration), first trial step 1."""
    return optax.lbfgs(memory_size=memory_size, linesearch=zoom_linesearch(max_linesearch_steps))


def refine_optimizer(method: str, *, memory_size: int = 20, max_linesearch_steps: int = 20
                     ) -> optax.GradientTransformationExtraArgs:
    """The refinement optimizer named by `method` ("lbfgs" | "bfgs" | "ssbfgs" | "ssbroyden"):
    `lbfgs(memory_size, ...)` or `ssbroyden(method, ...)`; the defaults are params.yaml's
    (`refine`). Raises `ValueError` for another name."""
    if method == "lbfgs":
        return lbfgs(memory_size, max_linesearch_steps=max_linesearch_steps)
    if method in VARIANTS:
        return ssbroyden(method, max_linesearch_steps=max_linesearch_steps)
    raise ValueError(f"method = {method!r}: no refinement optimizer (one of 'lbfgs', "
                     f"{', '.join(map(repr, VARIANTS))})")


class QuasiNewtonBlockInfo(NamedTuple):
    """Per-iteration record of one block, each of shape (block_size,)."""

    loss: jax.Array  # loss at the iterate after the iteration
    grad_norm: jax.Array  # ‖g‖ at the iterate where the iteration started
    stepsize: jax.Array  # accepted line-search step length (0 if no step was accepted)
    status: jax.Array  # int32, STEPPED | IDLE | CONVERGED | RESTARTED | STOPPED
    linesearch_steps: jax.Array  # int32, steps of the line search (loss evaluations; 0 without one)


class QuasiNewtonRunner(NamedTuple):
    """`init(params) -> opt_state`;
    `block(params, opt_state, *loss_args, num_steps=block_size) -> (params, opt_state, info)` (jitted;
    `num_steps <= block_size` iterations, the rest IDLE, without recompiling);
    `reset_cache(opt_state, params, *loss_args) -> opt_state` (jitted) after the loss data changed."""

    init: Callable[[optax.Params], optax.OptState]
    block: Callable[..., tuple[optax.Params, optax.OptState, QuasiNewtonBlockInfo]]
    reset_cache: Callable[..., optax.OptState]


def _cast_like(tree: Any, like: Any) -> Any:
    """Cast every leaf to the dtype of `like`'s leaf, strongly typed (scan/cond need equal types)."""
    return jax.tree.map(lambda x, ref: jnp.asarray(x, dtype=jnp.asarray(ref).dtype), tree, like)


def _strong(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


def _is_qn_state(x: Any) -> bool:
    return isinstance(x, (optax.ScaleByLBFGSState, ScaleByDenseQuasiNewtonState))


def _is_dense(x: Any) -> bool:
    return isinstance(x, ScaleByDenseQuasiNewtonState)


def _map_dense(fn: Callable[[ScaleByDenseQuasiNewtonState], Any], state: optax.OptState) -> optax.OptState:
    """`state` with every dense quasi-Newton sub-state replaced by `fn(sub_state)`."""
    return jax.tree.map(lambda s: fn(s) if _is_dense(s) else s, state, is_leaf=_is_dense)


def _split_hessians(state: optax.OptState) -> tuple[optax.OptState, list[jax.Array]]:
    """(`state` without its n×n inverse Hessians (fields set to None), the Hessians in tree order)."""
    hessians = [s.inverse_hessian for s in jax.tree.leaves(state, is_leaf=_is_dense) if _is_dense(s)]
    return _map_dense(lambda s: s._replace(inverse_hessian=None), state), hessians


def _join_hessians(small: optax.OptState, hessians: list[jax.Array], *, apply: bool = False) -> optax.OptState:
    """Put the Hessians back into `small` (from `_split_hessians`); with `apply`, each is first
    updated by its state's `last_update` (one fused pass over H, `apply_update`)."""
    it = iter(hessians)

    def put(s: ScaleByDenseQuasiNewtonState) -> ScaleByDenseQuasiNewtonState:
        h = next(it)
        return s._replace(inverse_hessian=apply_update(h, s.last_update) if apply else h)

    return _map_dense(put, small)


def _no_update(state: optax.OptState) -> optax.OptState:
    """`state` whose dense sub-states' `last_update` leaves H unchanged."""
    return _map_dense(
        lambda s: s._replace(last_update=identity_update(s.prev_params.shape[0], s.prev_params.dtype)), state)


def _restart_state(opt: optax.GradientTransformationExtraArgs, params: optax.Params, value: jax.Array,
                   grad: optax.Updates, like: optax.OptState) -> optax.OptState:
    """A fresh optimizer state at `params` whose line-search cache holds (value, grad)."""
    return _cast_like(optax.tree.set(opt.init(params), value=value, grad=grad), like)


def qn_reset_cache(opt_state: optax.OptState, params: optax.Params, loss_fn: LossFn,
                   *loss_args: Any) -> optax.OptState:
    """Make `opt_state` valid for a changed loss `loss_fn(params, *loss_args)` at the same `params`.

    - line search cache: value and gradient recomputed with the new loss;
    - the pending (s, y) pair is dropped (its y would mix the old and the new loss): L-BFGS stores the
      current params/gradient as the previous ones (so s = y = 0 gives a zero-weight memory slot);
      the dense methods set `count = 0` (the next update of H is skipped);
    - dense H is kept, symmetrised (H + Hᵀ)/2, and reset to I if its Cholesky factorisation fails
      (not positive definite), as Urbán et al. (2025) between resampling blocks.
    Pure; usable inside jit (the runner's `reset_cache` is this function jitted).
    """
    value, grad = jax.value_and_grad(loss_fn)(params, *loss_args)
    new_state = optax.tree.set(opt_state, value=value, grad=grad)

    def reset(state: Any) -> Any:
        if isinstance(state, optax.ScaleByLBFGSState):
            return state._replace(params=params, updates=grad)
        if isinstance(state, ScaleByDenseQuasiNewtonState):
            h = state.inverse_hessian
            h = 0.5 * (h + h.T)
            positive_definite = jnp.all(jnp.isfinite(jnp.linalg.cholesky(h)))
            eye = jnp.eye(h.shape[0], dtype=h.dtype)
            return state._replace(
                count=jnp.zeros_like(state.count),
                inverse_hessian=jnp.where(positive_definite, h, eye),
                fresh=state.fresh | ~positive_definite,
                num_resets=state.num_resets + (~positive_definite).astype(state.num_resets.dtype),
            )
        return state

    new_state = jax.tree.map(reset, new_state, is_leaf=_is_qn_state)
    return _cast_like(new_state, opt_state)


def qn_block(params: optax.Params, opt_state: optax.OptState, num_steps: jax.Array, *loss_args: Any,
             loss_fn: LossFn, opt: optax.GradientTransformationExtraArgs, block_size: int,
             grad_tol: float = 0.0) -> tuple[optax.Params, optax.OptState, QuasiNewtonBlockInfo]:
    """`block_size` quasi-Newton iterations of `loss_fn(params, *loss_args)` in one `lax.scan`
    (iterations with index ≥ `num_steps` are IDLE). Unjitted; see `quasi_newton_runner`."""
    fn = lambda p: loss_fn(p, *loss_args)  # noqa: E731  (closes over the traced loss data)
    value_and_grad = optax.value_and_grad_from_state(fn)
    opt_state = _strong(opt_state)

    def iteration(carry, index):
        params, state, stopped, restarted = carry
        # The dense n×n inverse Hessians never pass through a lax.cond: the branches read them (as
        # operands) and return the rest of the state, whose `last_update` holds the update's factors
        # (the identity update without a step, H = I after a restart); H is then updated once, in
        # place in the scan carry (`_join_hessians`).
        small, hessians = _split_hessians(state)
        value, grad = value_and_grad(params, state=small)
        grad_norm = optax.tree.norm(grad)
        in_range = index < num_steps
        bad_start = ~jnp.isfinite(value) | ~jnp.isfinite(grad_norm)
        converged = ~bad_start & (grad_norm <= grad_tol)
        run = in_range & ~stopped & ~bad_start & ~converged

        def take_step(_):
            full = _join_hessians(small, hessians)
            updates, new_state = opt.update(grad, full, params, value=value, grad=grad, value_fn=fn)
            new_state = _split_hessians(_cast_like(new_state, full))[0]
            new_params = optax.apply_updates(params, updates)
            new_value = jnp.asarray(optax.tree.get(new_state, "value"), value.dtype)
            accept = jnp.isfinite(new_value) & all_finite(new_params) & (new_value < value)
            stepsize = jnp.asarray(optax.tree.get(new_state, "learning_rate"), value.dtype)
            ls_steps = jnp.asarray(optax.tree.get(new_state, "num_linesearch_steps"), jnp.int32)
            # a restart's state says `last_update.reset`: H = I once applied
            restart = _split_hessians(_restart_state(opt, params, value, grad, full))[0]
            return jax.lax.cond(
                accept,
                lambda: (new_params, new_state, new_value, stepsize, jnp.asarray(STEPPED), ls_steps),
                lambda: (params, restart, value, jnp.zeros_like(value), jnp.where(restarted, STOPPED, RESTARTED),
                         ls_steps),
            )

        def no_step(_):
            status = jnp.where(in_range & ~stopped & bad_start, STOPPED,
                               jnp.where(in_range & ~stopped & converged, CONVERGED, IDLE))
            # keep the computed value/gradient in the cache unless they are not finite
            cached = _cast_like(optax.tree.set(small, value=value, grad=grad), small)
            cached = jax.tree.map(lambda old, new: jnp.where(bad_start, old, new), small, cached)
            return params, _no_update(cached), value, jnp.zeros_like(value), jnp.asarray(status), jnp.zeros((), jnp.int32)

        new_params, new_small, new_value, stepsize, status, ls_steps = jax.lax.cond(run, take_step, no_step, None)
        new_state = _join_hessians(new_small, hessians, apply=True)
        status = status.astype(jnp.int32)
        new_stopped = stopped | (status == STOPPED) | (status == CONVERGED)
        new_restarted = jnp.where(status == STEPPED, False, restarted | (status == RESTARTED))
        info = QuasiNewtonBlockInfo(loss=new_value, grad_norm=grad_norm, stepsize=stepsize, status=status,
                                    linesearch_steps=ls_steps)
        return (new_params, new_state, new_stopped, new_restarted), info

    init = (params, opt_state, jnp.asarray(False), jnp.asarray(False))
    (params, opt_state, _, _), info = jax.lax.scan(iteration, init, jnp.arange(block_size))
    return params, opt_state, info


def quasi_newton_runner(loss_fn: LossFn, opt: optax.GradientTransformationExtraArgs, *, block_size: int,
                        grad_tol: float = 0.0, donate_state: bool = False) -> QuasiNewtonRunner:
    """Blocks of quasi-Newton iterations on `loss_fn(params, *loss_args) -> scalar`, compiled once.

    Typical use (points changed between blocks, same shapes, no recompilation)::

        qn = quasi_newton_runner(loss_fn, ssbroyden("ssbroyden"), block_size=100)
        state = qn.init(params)
        for points in point_sets:
            state = qn.reset_cache(state, params, points)
            params, state, info = qn.block(params, state, points)

    `donate_state=True` donates the optimizer state passed to `block` and `reset_cache` to XLA: the
    dense n×n H is then updated in the caller's buffer instead of a copy (peak memory one H instead
    of two; `benchmarks/refine_speed.py` measures both), and the state passed in must not be used
    again — nor still be read by anything else, e.g. an asynchronous checkpoint save of it.
    """
    if block_size <= 0:
        raise ValueError(f"block_size = {block_size}: must be > 0")

    def init(params: optax.Params) -> optax.OptState:
        return _strong(opt.init(params))

    donate = (1,) if donate_state else ()
    block_jit = jax.jit(
        lambda params, opt_state, num_steps, *loss_args: qn_block(
            params, opt_state, num_steps, *loss_args, loss_fn=loss_fn, opt=opt, block_size=block_size,
            grad_tol=grad_tol,
        ),
        donate_argnums=donate,
    )

    def block(params: optax.Params, opt_state: optax.OptState, *loss_args: Any,
              num_steps: Optional[int] = None):
        steps = block_size if num_steps is None else num_steps
        if isinstance(steps, int) and not 0 <= steps <= block_size:
            raise ValueError(f"num_steps = {steps}: must be in [0, block_size = {block_size}]")
        return block_jit(params, opt_state, jnp.asarray(steps, jnp.int32), *loss_args)

    reset_jit = jax.jit(lambda opt_state, params, *loss_args: qn_reset_cache(opt_state, params, loss_fn, *loss_args),
                        donate_argnums=(0,) if donate_state else ())
    return QuasiNewtonRunner(init=init, block=block, reset_cache=reset_jit)


def run_quasi_newton(loss_fn: LossFn, params: optax.Params, opt: optax.GradientTransformationExtraArgs,
                     num_iterations: int, *, block_size: int, loss_args: tuple = (),
                     grad_tol: float = 0.0) -> tuple[optax.Params, optax.OptState, QuasiNewtonBlockInfo]:
    """Minimise the fixed loss `loss_fn(params, *loss_args)` for `num_iterations` iterations, in
    ⌈num_iterations / block_size⌉ jitted blocks. Returns the parameters, the optimizer state and the
    concatenated per-iteration record (numpy arrays of length `num_iterations`)."""
    runner = quasi_newton_runner(loss_fn, opt, block_size=block_size, grad_tol=grad_tol)
    opt_state = runner.init(params)
    records = []
    for start in range(0, num_iterations, block_size):
        steps = min(block_size, num_iterations - start)
        params, opt_state, info = runner.block(params, opt_state, *loss_args, num_steps=steps)
        records.append(jax.tree.map(lambda x: np.asarray(x)[:steps], info))
    if not records:
        empty = QuasiNewtonBlockInfo(*(np.zeros(0) for _ in QuasiNewtonBlockInfo._fields))
        return params, opt_state, empty
    history = jax.tree.map(lambda *xs: np.concatenate(xs), *records)
    return params, opt_state, history


__all__ = [
    "CONVERGED", "IDLE", "RESTARTED", "STEPPED", "STOPPED", "QuasiNewtonBlockInfo", "QuasiNewtonRunner",
    "lbfgs", "qn_block", "qn_reset_cache", "quasi_newton_runner", "refine_optimizer", "run_quasi_newton",
]
