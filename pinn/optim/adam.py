"""Adam with linear warm-up and exponential decay, and the hybrid Adam → quasi-Newton switch."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax

from pinn.config import OptimizerConfig


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """η(k) = lr·k/W for k < W (linear warm-up from 0 over W = `warmup_steps`), then
    η(k) = lr · decay_rate^((k − W)/decay_steps) (smooth exponential decay)."""
    decay = optax.exponential_decay(
        init_value=cfg.learning_rate, transition_steps=cfg.decay_steps, decay_rate=cfg.decay_rate
    )
    if cfg.warmup_steps == 0:
        return decay
    return optax.warmup_exponential_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        transition_steps=cfg.decay_steps,
        decay_rate=cfg.decay_rate,
    )


def adam(cfg: OptimizerConfig, total_steps: Optional[int] = None) -> optax.GradientTransformation:
    """Adam (Kingma & Ba 2015) with β₁, β₂ from `cfg` and `learning_rate_schedule(cfg)`.

    `total_steps`, when given, is only checked against the warm-up (the schedule needs no horizon).
    """
    if total_steps is not None and cfg.warmup_steps > total_steps:
        raise ValueError(
            f"optimizer.warmup_steps = {cfg.warmup_steps}: must be <= the number of Adam steps ({total_steps})"
        )
    return optax.adam(learning_rate=learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2)


def should_switch(loss: jax.typing.ArrayLike, step: jax.typing.ArrayLike, cfg: OptimizerConfig,
                  max_steps: int) -> jax.Array:
    """Hybrid switch Adam → quasi-Newton: `step >= max_steps`, or `loss < switch_loss_threshold`
    when a threshold is set. Works on Python numbers and traced arrays (returns a bool array)."""
    done = jnp.asarray(step) >= max_steps
    if cfg.switch_loss_threshold is None:
        return done
    return done | (jnp.asarray(loss) < cfg.switch_loss_threshold)
