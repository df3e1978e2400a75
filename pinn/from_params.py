"""params.yaml → components: the one place that reads the schema (`pinn.config.Params`) to build
the library's components, which themselves take plain hyperparameters (optax-style).

    loss_from_params(cfg, problem)                    -> pinn.loss.LossSpec
    sampler_from_params(cfg, domain, fixed_points)    -> pinn.sampling.Sampler   (`sampling`)
    balancer_from_params(cfg, term_names)             -> pinn.balancing.Balancer (`balancing`)
    adam_from_params(cfg)                             -> optax transform          (`optimizer`)
    refine_optimizer_from_params(cfg)                 -> optax transform          (`refine`)
    trainer_from_params(cfg, problem, model, ...)     -> pinn.train.Trainer (= Trainer.from_params)

Every hyperparameter of a section is passed explicitly, so the library's defaults never decide
a pipeline run (`tests/test_from_params.py` also keeps them equal to the schema's). The pipeline
(stages, `pinn.cascade`, `pinn.refine`, `pinn.windows`) builds its components here; Python users
can call the factories of `pinn.sampling`, `pinn.balancing` and `pinn.optim` directly
(docs/architecture.md, "Components without params.yaml").
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import optax

from pinn import balancing, optim, sampling
from pinn.config import Params
from pinn.loss import LossSpec, loss_spec


def loss_from_params(cfg: Params, problem) -> LossSpec:
    """The loss description of `problem` under `cfg`: exact periodic axes and initial values as
    the network of `cfg.model` has them, causal weighting from `balancing.causal` (when enabled),
    the trainable coefficients of `problem.trainable` (`pinn.problems.trainable`)."""
    from pinn.problems.trainable import trainable_coefficients

    c = cfg.balancing.causal
    causal = (balancing.CausalWeighting(num_chunks=c.num_chunks, tolerance=c.tolerance)
              if c.enabled else None)
    return loss_spec(problem, exact_periodic=cfg.model.periodic_embedding,
                     exact_initial=cfg.model.hard_initial_condition, causal=causal,
                     trainable=trainable_coefficients(cfg.problem.trainable, problem))


def sampler_from_params(cfg: Params, domain: sampling.DomainLike,
                        fixed_points: Optional[Any] = None) -> sampling.Sampler:
    """The sampler named by `sampling.method`, batch size `sampling.batch_size`.

    `fixed_points` (the collocation stage's set) is used by `uniform` with `resample: false` and
    by `rar_d`, whose initial points are its first `batch_size` rows (a Sobol' prefix is itself
    well spread); the RAR-D batch then grows up to `rar_d.capacity`. Raises `ValueError` naming
    the key when the method needs the fixed points and has none, or cannot hold them.
    """
    s = cfg.sampling
    method = s.method
    if method == "uniform":
        if s.uniform.resample:
            return sampling.uniform(domain, s.batch_size)
        if fixed_points is None:
            raise ValueError(
                "sampling.uniform.resample = False: needs the fixed collocation points"
            )
        return sampling.uniform(domain, s.batch_size, resample=False, fixed_points=fixed_points)
    if method == "rad":
        r = s.rad
        return sampling.rad(domain, s.batch_size, k=r.k, c=r.c, pool_size=r.pool_size,
                            resample_every=r.resample_every)
    if method == "rar_d":
        if fixed_points is None:
            raise ValueError("sampling.method = 'rar_d': needs the fixed collocation points")
        r = s.rar_d
        initial = np.asarray(fixed_points)[: s.batch_size]
        if r.capacity < initial.shape[0]:
            raise ValueError(
                f"sampling.rar_d.capacity = {r.capacity}: must be >= the initial point "
                f"count min(sampling.batch_size, collocation points) = {initial.shape[0]}"
            )
        return sampling.rar_d(domain, initial, capacity=r.capacity, every=r.every,
                              pool_size=r.pool_size, percentile=r.percentile,
                              num_new_points=r.num_new_points, noise_scale=r.noise_scale)
    if method == "hard_bank":
        h = s.hard_bank
        return sampling.hard_bank(domain, s.batch_size, pool_size=h.pool_size,
                                  bank_size=h.bank_size, top_k=h.top_k,
                                  refresh_every=h.refresh_every, p_start_step=h.p_start_step,
                                  p_ramp_steps=h.p_ramp_steps, p_max=h.p_max)
    raise ValueError(f"sampling.method = {method!r}: unknown")


def balancer_from_params(cfg: Params, term_names: Sequence[str]) -> balancing.Balancer:
    """The balancer named by `balancing.method` for the loss terms `term_names` (e.g. pde, ic,
    bc). For `fixed`, a term missing from `balancing.weights` gets weight 1. Raises `ValueError`
    naming the key for an unknown method (the factories' own checks name their arguments)."""
    b = cfg.balancing
    names = tuple(term_names)
    if b.method == "fixed":
        return balancing.fixed([b.weights.get(n, 1.0) for n in names], names)
    if b.method == "gradnorm":
        g = b.gradnorm
        return balancing.gradnorm(names, alpha=g.alpha, learning_rate=g.learning_rate,
                                  update_every=g.update_every, min_weight=g.min_weight,
                                  max_weight=g.max_weight)
    if b.method == "grad_ratio":
        r = b.grad_ratio
        return balancing.grad_ratio(names, momentum=r.momentum, update_every=r.update_every)
    raise ValueError(
        f"balancing.method = {b.method!r}: must be one of fixed, gradnorm, grad_ratio"
    )


def adam_from_params(cfg: Params) -> optax.GradientTransformation:
    """`pinn.optim.adam` with the `optimizer` section (learning-rate scale 1)."""
    o = cfg.optimizer
    return optim.adam(learning_rate=o.learning_rate, decay_steps=o.decay_steps,
                      decay_rate=o.decay_rate, warmup_steps=o.warmup_steps, b1=o.b1, b2=o.b2)


def refine_optimizer_from_params(cfg: Params) -> optax.GradientTransformationExtraArgs:
    """`pinn.optim.refine_optimizer` with the `refine` section (`refine.method`, memory size,
    line-search steps). `refine.method: none` has no optimizer (`ValueError`)."""
    r = cfg.refine
    return optim.refine_optimizer(r.method, memory_size=r.memory_size,
                                  max_linesearch_steps=r.max_linesearch_steps)


def trainer_from_params(cfg: Params, problem, model, *, fixed_points=None, dtype=None,
                        mesh=None, observations=None):
    """The Adam-phase `pinn.train.Trainer` of `cfg` (what `Trainer.from_params` returns): loss,
    sampler, balancer and optimizer from their sections, batch sizes `sampling.ic_batch_size` /
    `sampling.bc_batch_size`, NTK diagnostics `train.ntk_every` / `train.ntk_points` (subsample
    seeded by `seed`), dtype `train.precision` unless given, a data-parallel mesh when
    `distributed.data_parallel` and none is given (every batch checked to split over it:
    `ConfigError` naming the key). See `Trainer` for `fixed_points` and `observations`."""
    import jax
    import jax.numpy as jnp

    from pinn import distributed
    from pinn.precision import DTYPES
    from pinn.train import Trainer

    dtype = DTYPES[cfg.train.precision] if dtype is None else dtype
    spec = loss_from_params(cfg, problem)
    if fixed_points is not None:
        fixed_points = jnp.asarray(fixed_points, dtype)
    sampler = sampler_from_params(cfg, problem.domain, fixed_points=fixed_points)
    if mesh is None and cfg.distributed.data_parallel:
        mesh = distributed.make_mesh()
    if mesh is not None:  # before any compute: every batch must split over the devices
        first_batch = lambda k: sampler.batch(sampler.init(k))[0]  # noqa: E731
        rows = jax.eval_shape(first_batch, jax.random.PRNGKey(0)).shape[0]
        distributed.check_batch_sizes(cfg, rows, mesh)
    return Trainer(
        problem, model, loss=spec, sampler=sampler,
        balancer=balancer_from_params(cfg, spec.term_names), optimizer=adam_from_params(cfg),
        ic_batch_size=cfg.sampling.ic_batch_size, bc_batch_size=cfg.sampling.bc_batch_size,
        dtype=dtype, mesh=mesh, observations=observations, ntk_every=cfg.train.ntk_every,
        ntk_points=cfg.train.ntk_points, ntk_seed=cfg.seed,
    )


__all__ = ["loss_from_params", "sampler_from_params", "balancer_from_params", "adam_from_params",
           "refine_optimizer_from_params", "trainer_from_params"]
