"""Adam with linear warm-up and exponential decay, a learning-rate scale held in the optimizer
state (lowered after a divergence), and the hybrid Adam → quasi-Newton switch.

Built from plain hyperparameters, optax-style; `pinn.from_params.adam_from_params` maps the
`optimizer` section of params.yaml onto `adam`.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

#: the name of the injected hyperparameter scaling the learning rate (`adam`, `lr_scale_of`)
LR_SCALE = "lr_scale"


def learning_rate_schedule(learning_rate: float, *, decay_steps: int, decay_rate: float,
                           warmup_steps: int = 0) -> optax.Schedule:
    """η(k) = lr·k/W for k < W (linear warm-up from 0 over W = `warmup_steps`), then
    η(k) = lr · decay_rate^((k − W)/decay_steps) (smooth exponential decay)."""
    decay = optax.exponential_decay(
        init_value=learning_rate, transition_steps=decay_steps, decay_rate=decay_rate
    )
    if warmup_steps == 0:
        return decay
    return optax.warmup_exponential_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=warmup_steps,
        transition_steps=decay_steps,
        decay_rate=decay_rate,
    )


def scale_updates(lr_scale: jax.typing.ArrayLike) -> optax.GradientTransformation:
    """Multiply every update by `lr_scale` (cast to the update's dtype), stateless. Wrapped by
    `optax.inject_hyperparams` in `adam`, so the factor lives in the optimizer state."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        scale = jnp.asarray(lr_scale)
        return jax.tree_util.tree_map(lambda x: x * scale.astype(x.dtype), updates), state

    return optax.GradientTransformation(init, update)


def adam(
    *,
    learning_rate: float = 1e-3,
    decay_steps: int = 1000,
    decay_rate: float = 0.9,
    warmup_steps: int = 0,
    b1: float = 0.9,
    b2: float = 0.999,
    lr_scale: float = 1.0,
    total_steps: Optional[int] = None,
) -> optax.GradientTransformation:
    """Adam (Kingma & Ba 2015) with β₁ = `b1`, β₂ = `b2` and the step size
    `learning_rate_schedule(...)` (η(k), see there), followed by a multiplication by the injected
    hyperparameter `lr_scale` (`optax.inject_hyperparams`; float32, in the state, 1 by default):

        chain(scale_by_adam(b1, b2), scale_by_learning_rate(η), inject_hyperparams(scale)(lr_scale))

    The first two are `optax.adam(η, b1, b2)` itself; the last multiplies its update `−η m̂/√v̂`
    by `lr_scale` (Adam's update is linear in η: this scales the learning rate). After a
    divergence the cascade lowers it in the state (`with_lr_scale`); `lr_scale_of` reads it.
    The defaults are params.yaml's (`optimizer`); `tests/test_from_params.py` keeps them equal.

    `total_steps`, when given, is only checked against the warm-up (the schedule needs no
    horizon). Raises `ValueError` when `warmup_steps > total_steps`.
    """
    if total_steps is not None and warmup_steps > total_steps:
        raise ValueError(
            f"warmup_steps = {warmup_steps}: must be <= the number of Adam steps ({total_steps})"
        )
    schedule = learning_rate_schedule(learning_rate, decay_steps=decay_steps,
                                      decay_rate=decay_rate, warmup_steps=warmup_steps)
    scale = optax.inject_hyperparams(scale_updates, hyperparam_dtype=jnp.float32)
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2),
        optax.scale_by_learning_rate(schedule),
        scale(**{LR_SCALE: lr_scale}),
    )


def _is_injected(node: Any) -> bool:
    return isinstance(node, optax.InjectStatefulHyperparamsState) and LR_SCALE in node.hyperparams


def _injected(opt_state: Any) -> list:
    return [n for n in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_injected) if _is_injected(n)]


def lr_scale_of(opt_state: Any) -> jax.Array:
    """The learning-rate scale held in an `adam` state (float32 scalar). Raises `ValueError`
    for a state without exactly one (another optimizer's)."""
    found = _injected(opt_state)
    if len(found) != 1:
        raise ValueError(f"the optimizer state holds {len(found)} injected {LR_SCALE!r} "
                         "hyperparameters: expected one (a state of pinn.optim.adam)")
    return found[0].hyperparams[LR_SCALE]


def with_lr_scale(opt_state: Any, value: jax.typing.ArrayLike) -> Any:
    """`opt_state` (of `adam`) with its learning-rate scale set to `value` (the divergence
    handler lowers it; the next updates use it). Everything else is kept as is."""
    lr_scale_of(opt_state)  # exactly one, else ValueError

    def put(node: Any) -> Any:
        if not _is_injected(node):
            return node
        old = node.hyperparams[LR_SCALE]
        hyperparams = {**node.hyperparams, LR_SCALE: jnp.asarray(value, old.dtype)}
        return node._replace(hyperparams=hyperparams)

    return jax.tree_util.tree_map(put, opt_state, is_leaf=_is_injected)


def should_switch(loss: jax.typing.ArrayLike, step: jax.typing.ArrayLike, max_steps: int,
                  switch_loss_threshold: Optional[float] = None) -> jax.Array:
    """Hybrid switch Adam → quasi-Newton: `step >= max_steps`, or `loss < switch_loss_threshold`
    when a threshold is set. Works on Python numbers and traced arrays (returns a bool array)."""
    done = jnp.asarray(step) >= max_steps
    if switch_loss_threshold is None:
        return done
    return done | (jnp.asarray(loss) < switch_loss_threshold)
