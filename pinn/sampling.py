"""Collocation-point samplers for the PDE residual loss, optax style.

A `Sampler` is a NamedTuple of pure functions over a pytree state (a NamedTuple of arrays whose
shapes and dtypes never change, so it checkpoints as-is and never triggers recompilation):

- `init(key) -> state`
- `update(state, key, step, residual_fn) -> state`, called every step inside the jitted training
  step with the int32 step counter, *before* `batch`; `residual_fn: (M, d) -> (M,)` evaluates the
  current network's PDE residual. Periodic work (evaluating a candidate pool) runs under
  `lax.cond(step % every == 0, ...)`, so it is only paid on those steps.
- `batch(state) -> (points (B, d), weights (B,))`; the residual loss is `Σ w r² / Σ w`.
- `stats(state, step) -> dict[str, scalar]` for logging.

Factories, from plain hyperparameters (their defaults are params.yaml's): `uniform`, `rad` (Wu et
al. 2023), `rar_d` (Wu et al. 2023), `hard_bank` (seed 001's persistent bank of high-residual
points). `pinn.from_params.sampler_from_params` picks one from params.yaml's `sampling` section.
Non-finite residuals (a diverged network) count as magnitude 0 everywhere below, so they never
attract points or poison the sampling distributions.

Reference: C. Wu, M. Zhu, Q. Tan, Y. Kartha, L. Lu, "A comprehensive study of non-adaptive and
residual-based adaptive sampling for physics-informed neural networks", CMAME 403 (2023) 115671.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Literal, NamedTuple, Optional, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ResidualFn = Callable[[jax.Array], jax.Array]
ArrayLike = Any


class DomainLike(Protocol):
    """A box `[lower, upper]` (array-likes `(d,)`) with per-column periodicity; column 0 is time."""

    lower: ArrayLike
    upper: ArrayLike
    periodic: Sequence[bool]


class Sampler(NamedTuple):
    init: Callable[[jax.Array], Any]
    update: Callable[[Any, jax.Array, jax.Array, ResidualFn], Any]
    batch: Callable[[Any], tuple[jax.Array, jax.Array]]
    stats: Callable[[Any, jax.Array], dict[str, jax.Array]]


# ----------------------------------------------------------------------------------------------
# helpers


def _float_dtype() -> jnp.dtype:
    """float64 when x64 is enabled, else float32 (decided at call/trace time, not import time)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


class _Box(NamedTuple):
    lower: np.ndarray  # (d,) float64
    upper: np.ndarray
    periodic: tuple[bool, ...]

    @property
    def dim(self) -> int:
        return self.lower.shape[0]


def _box(domain: DomainLike) -> _Box:
    lower = np.asarray(domain.lower, dtype=np.float64).reshape(-1)
    upper = np.asarray(domain.upper, dtype=np.float64).reshape(-1)
    periodic = tuple(bool(p) for p in domain.periodic)
    if not (lower.shape == upper.shape and len(periodic) == lower.shape[0]):
        raise ValueError(
            f"domain: lower {lower.shape}, upper {upper.shape} and periodic (len {len(periodic)}) "
            "must all have one entry per input column"
        )
    if not np.all(upper > lower):
        raise ValueError(f"domain: need upper > lower on every axis, got {lower} .. {upper}")
    return _Box(lower, upper, periodic)


def _every(step: jax.Array, every: int, fn: Callable[[Any], Any], state: Any) -> Any:
    """`fn(state)` when `step % every == 0`, else `state` (one `lax.cond`; none if every == 1)."""
    if every == 1:
        return fn(state)
    return lax.cond(step % every == 0, fn, lambda s: s, state)


def _magnitude(residual_fn: ResidualFn, points: jax.Array) -> jax.Array:
    """`|r(points)|` with non-finite values replaced by 0; checks the `(M,)` output shape."""
    r = residual_fn(points)
    if r.shape != (points.shape[0],):
        raise ValueError(f"residual_fn must map (M, d) -> (M,), got {points.shape} -> {r.shape}")
    mag = jnp.abs(r)
    return lax.stop_gradient(jnp.where(jnp.isfinite(mag), mag, 0.0))


def _wrap_and_clip(points: jax.Array, box: _Box) -> jax.Array:
    """Periodic axes wrapped into `[lower, upper)`; the others (time too) clipped to the box."""
    dtype = points.dtype
    lo = jnp.asarray(box.lower, dtype)
    hi = jnp.asarray(box.upper, dtype)
    periodic = jnp.asarray(box.periodic)
    wrapped = lo + jnp.mod(points - lo, hi - lo)
    return jnp.where(periodic, wrapped, jnp.clip(points, lo, hi))


def uniform_points(key: jax.Array, n: int, lower: ArrayLike, upper: ArrayLike) -> jax.Array:
    """`n` i.i.d. points uniform on the box `[lower, upper)`, shape `(n, d)`."""
    dtype = _float_dtype()
    lo = jnp.asarray(lower, dtype).reshape(-1)
    hi = jnp.asarray(upper, dtype).reshape(-1)
    return lo + (hi - lo) * jax.random.uniform(key, (n, lo.shape[0]), dtype)


def collocation_points(
    method: Literal["uniform", "sobol"],
    n: int,
    lower: ArrayLike,
    upper: ArrayLike,
    seed: int,
) -> np.ndarray:
    """A fixed point set `(n, d)` float64 on the box: i.i.d. uniform, or scrambled Sobol'.

    Sobol' (`scipy.stats.qmc.Sobol`, Owen-scrambled with `seed`) is best balanced when `n` is a
    power of two; other `n` are allowed (scipy's balance warning is silenced).
    """
    lo = np.asarray(lower, dtype=np.float64).reshape(-1)
    hi = np.asarray(upper, dtype=np.float64).reshape(-1)
    if method == "uniform":
        unit = np.random.default_rng(seed).random((n, lo.shape[0]))
    elif method == "sobol":
        from scipy.stats import qmc

        engine = qmc.Sobol(d=lo.shape[0], scramble=True, rng=np.random.default_rng(seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "balance properties ... power of 2"
            unit = engine.random(n)
    else:
        raise ValueError(f"collocation method = {method!r}: must be one of 'uniform', 'sobol'")
    return lo + (hi - lo) * unit


# ----------------------------------------------------------------------------------------------
# uniform


class UniformState(NamedTuple):
    points: jax.Array  # (B, d) the current batch


def uniform(
    domain: DomainLike,
    batch_size: int,
    *,
    resample: bool = True,
    fixed_points: Optional[ArrayLike] = None,
) -> Sampler:
    """Uniform collocation points, all with weight 1.

    `resample=True`: `batch_size` fresh i.i.d. uniform points every step (`fixed_points` must be
    None). `resample=False`: a fixed set `fixed_points (N, d)`; if `N <= batch_size` the batch is
    the whole set every step (B = N), else a fresh random subset of `batch_size` distinct points
    is drawn from it every step (mini-batching over the set, B = batch_size).
    """
    box = _box(domain)
    if resample:
        if fixed_points is not None:
            raise ValueError("uniform sampler: fixed_points given but resample=True (pick one)")
        size = batch_size

        def draw(key: jax.Array) -> jax.Array:
            return uniform_points(key, size, box.lower, box.upper)

    else:
        if fixed_points is None:
            raise ValueError("uniform sampler: resample=False needs fixed_points (N, d)")
        fixed = np.asarray(fixed_points, dtype=np.float64)
        if fixed.ndim != 2 or fixed.shape[1] != box.dim:
            raise ValueError(f"fixed_points: expected shape (N, {box.dim}), got {fixed.shape}")
        num_fixed = fixed.shape[0]
        size = min(batch_size, num_fixed)

        def draw(key: jax.Array) -> jax.Array:
            points = jnp.asarray(fixed, _float_dtype())
            if size == num_fixed:
                return points
            return points[jax.random.permutation(key, num_fixed)[:size]]

    def init(key: jax.Array) -> UniformState:
        return UniformState(draw(key))

    def update(state: UniformState, key: jax.Array, step: jax.Array, residual_fn: ResidualFn):
        del state, step, residual_fn
        return UniformState(draw(key))

    def batch(state: UniformState) -> tuple[jax.Array, jax.Array]:
        return state.points, jnp.ones(state.points.shape[0], state.points.dtype)

    def stats(state: UniformState, step: jax.Array) -> dict[str, jax.Array]:
        return {}

    return Sampler(init, update, batch, stats)


# ----------------------------------------------------------------------------------------------
# RAD


class RADState(NamedTuple):
    points: jax.Array  # (B, d) batch drawn at the last resample (uniform before the first)
    pool_mean_residual: jax.Array  # mean |r| over the last candidate pool (0 before the first)
    batch_mean_residual: jax.Array  # mean |r| over the drawn batch at that resample


def rad_probabilities(magnitude: jax.Array, k: float, c: float) -> jax.Array:
    """RAD density over a pool (Wu et al. 2023, eq. 5): `p ∝ |r|^k / mean(|r|^k) + c`, normalized.

    Computed on `|r| / max|r|` (the ratio is scale-free) so `|r|^k` cannot overflow; if every
    `|r|` is 0 and `c = 0` the density falls back to uniform.
    """
    scale = jnp.max(magnitude)
    scaled = jnp.where(scale > 0, magnitude / jnp.where(scale > 0, scale, 1.0), 0.0) ** k
    mean = jnp.mean(scaled)
    density = jnp.where(mean > 0, scaled / jnp.where(mean > 0, mean, 1.0), 0.0) + c
    total = jnp.sum(density)
    return jnp.where(total > 0, density / jnp.where(total > 0, total, 1.0), 1.0 / density.shape[0])


def rad(domain: DomainLike, batch_size: int, *, k: float = 1.0, c: float = 1.0,
        pool_size: int = 16384, resample_every: int = 100) -> Sampler:
    """Residual-based adaptive distribution, RAD (Wu et al. 2023).

    Every `resample_every` steps: draw a fresh uniform pool of `pool_size` points and
    draw `batch_size` points from it with replacement by `p ∝ |r|^k / mean|r|^k + c`
    (`rad_probabilities`); between resamples the batch stays fixed. `init` gives a uniform batch.
    """
    box = _box(domain)

    def init(key: jax.Array) -> RADState:
        zero = jnp.zeros((), _float_dtype())
        return RADState(uniform_points(key, batch_size, box.lower, box.upper), zero, zero)

    def update(state: RADState, key: jax.Array, step: jax.Array, residual_fn: ResidualFn):
        def resample(state: RADState) -> RADState:
            key_pool, key_pick = jax.random.split(key)
            pool = uniform_points(key_pool, pool_size, box.lower, box.upper)
            magnitude = _magnitude(residual_fn, pool)
            prob = rad_probabilities(magnitude, k, c)
            idx = jax.random.choice(key_pick, pool_size, (batch_size,), replace=True, p=prob)
            dtype = state.pool_mean_residual.dtype
            return RADState(
                pool[idx].astype(state.points.dtype),
                jnp.mean(magnitude).astype(dtype),
                jnp.mean(magnitude[idx]).astype(dtype),
            )

        return _every(step, resample_every, resample, state)

    def batch(state: RADState) -> tuple[jax.Array, jax.Array]:
        return state.points, jnp.ones(batch_size, state.points.dtype)

    def stats(state: RADState, step: jax.Array) -> dict[str, jax.Array]:
        return {
            "pool_mean_residual": state.pool_mean_residual,
            "batch_mean_residual": state.batch_mean_residual,
        }

    return Sampler(init, update, batch, stats)


# ----------------------------------------------------------------------------------------------
# RAR-D


class RARDState(NamedTuple):
    points: jax.Array  # (capacity, d): initial points, then added points, then unused filler
    weights: jax.Array  # (capacity,) 1 for valid slots, 0 for unused ones
    num_added: jax.Array  # int32, total points ever added (the ring position)


def rar_d(domain: DomainLike, initial_points: ArrayLike, *, capacity: int = 4096, every: int = 200,
          pool_size: int = 8192, percentile: float = 90.0, num_new_points: int = 64,
          noise_scale: float = 0.05) -> Sampler:
    """Residual-based adaptive refinement with distribution, RAR-D (Wu et al. 2023), static shapes.

    A buffer of `capacity` slots holds the `N0` initial points (never overwritten) and a 0/1
    validity mask. Every `every` steps: evaluate `|r|` on a fresh uniform pool of
    `pool_size`; keep the points with `|r| >= percentile(|r|, percentile)`; draw
    `num_new_points` of those with replacement with probability `∝ |r|` (so several peaks
    are refined, not only the single largest); add Gaussian jitter of std
    `noise_scale * (upper - lower)` per axis; wrap periodic axes into `[lower, upper)` and clip
    the others (time too) into the box; write them into the next free slots. Once the buffer is
    full, new points overwrite the oldest *added* points (a ring over slots `N0 .. capacity-1`),
    so the refinement keeps tracking the current residual. `batch` is the whole buffer with the
    mask as weights (B = capacity). Raises `ValueError` when `capacity < N0`.
    """
    box = _box(domain)
    initial = np.asarray(initial_points, dtype=np.float64)
    if initial.ndim != 2 or initial.shape[1] != box.dim or initial.shape[0] == 0:
        raise ValueError(f"initial_points: expected shape (N0 > 0, {box.dim}), got {initial.shape}")
    num_initial = initial.shape[0]
    if capacity < num_initial:
        raise ValueError(
            f"capacity = {capacity}: must be >= the number of initial points ({num_initial})"
        )
    free_slots = capacity - num_initial
    num_write = min(num_new_points, free_slots)  # per round; more would collide in the ring
    # unused slots hold copies of initial points (weight 0) so the residual there stays finite
    filler = initial[np.arange(free_slots) % num_initial]
    buffer0 = np.concatenate([initial, filler], axis=0)
    mask0 = (np.arange(capacity) < num_initial).astype(np.float64)
    noise_std = noise_scale * (box.upper - box.lower)

    def init(key: jax.Array) -> RARDState:
        del key  # deterministic: the buffer starts as the initial points
        dtype = _float_dtype()
        return RARDState(
            jnp.asarray(buffer0, dtype), jnp.asarray(mask0, dtype), jnp.zeros((), jnp.int32)
        )

    def update(state: RARDState, key: jax.Array, step: jax.Array, residual_fn: ResidualFn):
        if num_write == 0:
            return state

        def refine(state: RARDState) -> RARDState:
            dtype = state.points.dtype
            key_pool, key_pick, key_noise = jax.random.split(key, 3)
            pool = uniform_points(key_pool, pool_size, box.lower, box.upper).astype(dtype)
            magnitude = _magnitude(residual_fn, pool)
            threshold = jnp.percentile(magnitude, percentile)
            scale = jnp.max(magnitude)
            scaled = magnitude / jnp.where(scale > 0, scale, 1.0)  # in [0, 1]: sums cannot overflow
            tiny = jnp.finfo(magnitude.dtype).tiny  # all |r| = 0: uniform over the pool
            prob = jnp.where(magnitude >= threshold, jnp.maximum(scaled, tiny), 0.0)
            idx = jax.random.choice(key_pick, pool_size, (num_write,), p=prob / jnp.sum(prob))
            noise = jax.random.normal(key_noise, (num_write, box.dim), dtype)
            new = _wrap_and_clip(pool[idx] + noise * jnp.asarray(noise_std, dtype), box)
            slots = num_initial + (state.num_added + jnp.arange(num_write)) % free_slots
            return RARDState(
                state.points.at[slots].set(new),
                state.weights.at[slots].set(1.0),
                state.num_added + num_write,
            )

        return _every(step, every, refine, state)

    def batch(state: RARDState) -> tuple[jax.Array, jax.Array]:
        return state.points, state.weights

    def stats(state: RARDState, step: jax.Array) -> dict[str, jax.Array]:
        return {
            "num_points": jnp.sum(state.weights).astype(jnp.int32),
            "num_added": state.num_added,
        }

    return Sampler(init, update, batch, stats)


# ----------------------------------------------------------------------------------------------
# hard bank (seed 001)


class HardBankState(NamedTuple):
    bank_points: jax.Array  # (bank_size, d), sorted by residual, largest first
    bank_residuals: jax.Array  # (bank_size,) |r| at the last refresh; -inf marks an empty slot
    points: jax.Array  # (B, d) the current batch; its first `num_from_bank` rows come from the bank
    num_from_bank: jax.Array  # int32

    #: values that mark something rather than corrupt it (`pinn.checkpoint`): an empty bank slot
    CHECKPOINT_SENTINELS = {"bank_residuals": (-math.inf,)}


def mixing_probability(
    step: jax.Array, p_max: float, p_start_step: int, p_ramp_steps: int
) -> jax.Array:
    """Bank share of the batch (seed 001's schedule):
    `p(step) = p_max · clip((step - p_start_step) / p_ramp_steps, 0, 1)`;
    with `p_ramp_steps = 0` a step function `p_max · [step >= p_start_step]`."""
    step = jnp.asarray(step, _float_dtype())
    if p_ramp_steps == 0:
        return jnp.where(step >= p_start_step, p_max, 0.0).astype(step.dtype)
    return p_max * jnp.clip((step - p_start_step) / p_ramp_steps, 0.0, 1.0)


def hard_bank(domain: DomainLike, batch_size: int, *, pool_size: int = 8192, bank_size: int = 1024,
              top_k: int = 256, refresh_every: int = 100, p_start_step: int = 0,
              p_ramp_steps: int = 1000, p_max: float = 0.2) -> Sampler:
    """Seed 001's hybrid sampler: batch = (1 - p) fresh uniform + p from a bank of hard points.

    Bank: `bank_size` points with their `|r|`, initially empty (`-inf`). Every
    `refresh_every` steps, `|r|` is evaluated (one call) on a fresh uniform pool of
    `pool_size` points and on the bank; the bank becomes the `bank_size` largest of
    (bank re-scored at the current params) ∪ (top-`top_k` of the pool) — so it always holds
    the true top points of that union, sorted largest first.

    Batch, every step: `n_slots = ceil(p_max · B)` bank draws (uniform over the valid entries)
    are made always (static shapes); the first `n = floor(p · B + u)`, `u ~ U[0, 1)`, of them are
    used and every other row is a fresh uniform point, so `E[n] = p · B` exactly (stochastic
    rounding). `p = mixing_probability(step, ...)`, and `p = 0` while the bank is empty. All
    weights are 1. Logged residuals are those of the last refresh.
    """
    box = _box(domain)
    num_slots = min(batch_size, math.ceil(p_max * batch_size - 1e-9))

    def init(key: jax.Array) -> HardBankState:
        dtype = _float_dtype()
        return HardBankState(
            jnp.broadcast_to(jnp.asarray(box.lower, dtype), (bank_size, box.dim)),
            jnp.full((bank_size,), -jnp.inf, dtype),
            uniform_points(key, batch_size, box.lower, box.upper),
            jnp.zeros((), jnp.int32),
        )

    def bank_count(state: HardBankState) -> jax.Array:
        return jnp.sum(state.bank_residuals > -jnp.inf).astype(jnp.int32)

    def current_p(state: HardBankState, step: jax.Array) -> jax.Array:
        p = mixing_probability(step, p_max, p_start_step, p_ramp_steps)
        return jnp.where(bank_count(state) > 0, p, 0.0).astype(p.dtype)

    def update(state: HardBankState, key: jax.Array, step: jax.Array, residual_fn: ResidualFn):
        key_pool, key_uniform, key_round, key_pick = jax.random.split(key, 4)
        dtype = state.points.dtype

        def refresh(state: HardBankState) -> HardBankState:
            pool = uniform_points(key_pool, pool_size, box.lower, box.upper).astype(dtype)
            candidates = jnp.concatenate([pool, state.bank_points], axis=0)
            magnitude = _magnitude(residual_fn, candidates).astype(dtype)
            pool_top, pool_idx = lax.top_k(magnitude[:pool_size], top_k)
            bank_now = jnp.where(
                state.bank_residuals > -jnp.inf, magnitude[pool_size:], -jnp.inf
            )
            merged_points = jnp.concatenate([pool[pool_idx], state.bank_points], axis=0)
            merged = jnp.concatenate([pool_top, bank_now])
            keep, keep_idx = lax.top_k(merged, bank_size)
            return state._replace(bank_points=merged_points[keep_idx], bank_residuals=keep)

        state = _every(step, refresh_every, refresh, state)

        points = uniform_points(key_uniform, batch_size, box.lower, box.upper).astype(dtype)
        if num_slots == 0:
            return state._replace(points=points, num_from_bank=jnp.zeros((), jnp.int32))
        p = current_p(state, step)
        u = jax.random.uniform(key_round, (), p.dtype)
        num_from_bank = jnp.clip(jnp.floor(p * batch_size + u), 0, num_slots).astype(jnp.int32)
        count = jnp.maximum(bank_count(state), 1)
        drawn = state.bank_points[jax.random.randint(key_pick, (num_slots,), 0, count)]
        use_bank = (jnp.arange(num_slots) < num_from_bank)[:, None]
        head = jnp.where(use_bank, drawn, points[:num_slots])
        return state._replace(points=points.at[:num_slots].set(head), num_from_bank=num_from_bank)

    def batch(state: HardBankState) -> tuple[jax.Array, jax.Array]:
        return state.points, jnp.ones(batch_size, state.points.dtype)

    def stats(state: HardBankState, step: jax.Array) -> dict[str, jax.Array]:
        count = bank_count(state)
        residuals = state.bank_residuals
        has_bank = count > 0
        return {
            "bank_size": count,
            "p": current_p(state, step),
            "bank_share": state.num_from_bank.astype(residuals.dtype) / batch_size,
            "bank_max_residual": jnp.where(has_bank, residuals[0], 0.0),
            "bank_min_residual": jnp.where(has_bank, residuals[jnp.maximum(count - 1, 0)], 0.0),
        }

    return Sampler(init, update, batch, stats)
