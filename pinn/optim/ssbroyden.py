"""Dense inverse-Hessian quasi-Newton: BFGS, self-scaled BFGS and self-scaled Broyden.

H approximates the inverse Hessian on the raveled parameter vector (n entries, H dense n×n) and the
search direction is d = −H g. After each accepted step, with s = x₊ − x, y = g₊ − g, ρ = 1/(yᵀs),
b = sᵀBs/(yᵀs) (B = H⁻¹) and h = ρ yᵀHy, the self-scaled Broyden family updates (Urbán, Stefanou &
Pons, J. Comput. Phys. 523 (2025) 113656, eqs. 13–23; Al-Baali & Khalfan):

    v  = ρ s − H y / (yᵀHy)
    H₊ = [ H − H y yᵀH / (yᵀHy) + φ (yᵀHy) v vᵀ ] / τ + ρ s sᵀ

with (θ, φ, τ) from `self_scaled_coefficients`. Special cases: self-scaled BFGS (θ = 0, φ = 1,
τ = min(1, 1/b)) and plain BFGS (τ = 1, φ = 1). Every member satisfies the secant equation H₊ y = s.

`scale_by_dense_quasi_newton` is the direction transform, structured like `optax.scale_by_lbfgs`: its
state stores the previous parameters, gradient and direction, and each `update(grad, state, params)`
first updates H from the step just taken and then returns d = −H g. Chain it with a line search
(`ssbroyden(cfg)` does, with optax's zoom line search, strong Wolfe c1 = 1e-4, c2 = 0.9).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from pinn.config import RefineConfig

Variant = Literal["bfgs", "ssbfgs", "ssbroyden"]
VARIANTS: tuple[str, ...] = ("bfgs", "ssbfgs", "ssbroyden")

#: Wolfe constants of the line search (sufficient decrease c1, curvature c2), as in Urbán et al.
WOLFE_C1 = 1e-4
WOLFE_C2 = 0.9


class SelfScaledCoefficients(NamedTuple):
    theta: jax.Array  # Broyden-family parameter θ (0: BFGS)
    phi: jax.Array  # weight φ of the v vᵀ term
    tau: jax.Array  # self-scaling τ: H is divided by τ before the rank-two correction


def self_scaled_coefficients(b: jax.Array, h: jax.Array, n: int, variant: Variant) -> SelfScaledCoefficients:
    """θ, φ, τ of the update for b = sᵀBs/yᵀs, h = ρ yᵀHy (Urbán et al. 2025, eqs. 13–23).

    a = b h − 1 (≥ 0 by Cauchy–Schwarz), c = √(a/(1+a)), ρ⁻ = min(1, h(1−c)), θ⁻ = (ρ⁻−1)/a,
    θ⁺ = 1/ρ⁻, θ = max(θ⁻, min(θ⁺, (1−b)/b)), σ = 1 + aθ, ρ̂ = min(1, 1/b),
    τ = min(ρ̂ |σ|^{1/(1−n)}, σ) if θ ≤ 0 else ρ̂ min(|σ|^{1/(1−n)}, 1/θ), φ = (1−θ)/σ.
    When a ≈ 0 (y ∥ Bs) every family member gives the same H₊, so θ = 0 is used there.
    """
    one = jnp.ones_like(b)
    if variant == "bfgs":
        return SelfScaledCoefficients(theta=0 * one, phi=one, tau=one)
    rho_hat = jnp.minimum(1.0, 1.0 / b)
    if variant == "ssbfgs":
        return SelfScaledCoefficients(theta=0 * one, phi=one, tau=rho_hat)
    if variant != "ssbroyden":
        raise ValueError(f"variant = {variant!r}: must be one of {VARIANTS}")
    a = jnp.maximum(b * h - 1.0, 0.0)
    tiny = jnp.finfo(jnp.result_type(b)).eps
    degenerate = a <= tiny
    a_safe = jnp.where(degenerate, 1.0, a)
    c = jnp.sqrt(a_safe / (1.0 + a_safe))
    rho_minus = jnp.minimum(1.0, h * (1.0 - c))
    theta_minus = (rho_minus - 1.0) / a_safe
    theta_plus = 1.0 / rho_minus
    theta = jnp.maximum(theta_minus, jnp.minimum(theta_plus, (1.0 - b) / b))
    theta = jnp.where(degenerate, 0.0, theta)
    sigma = 1.0 + a * theta
    # |σ|^{1/(1−n)}; for n = 1 the exponent is undefined and the factor is taken as 1
    sigma_root = jnp.exp(jnp.log(jnp.abs(sigma)) / (1.0 - n)) if n > 1 else one
    tau_nonpositive = jnp.minimum(rho_hat * sigma_root, sigma)
    tau_positive = rho_hat * jnp.minimum(sigma_root, 1.0 / jnp.where(theta > 0, theta, 1.0))
    tau = jnp.where(theta <= 0, tau_nonpositive, tau_positive)
    phi = (1.0 - theta) / sigma
    return SelfScaledCoefficients(theta=theta, phi=phi, tau=tau)


def _rank_two_update(inverse_hessian: jax.Array, hy: jax.Array, yhy: jax.Array, s: jax.Array, y: jax.Array,
                     b: jax.Array, variant: Variant) -> jax.Array:
    rho = 1.0 / jnp.dot(y, s)
    coef = self_scaled_coefficients(b, rho * yhy, s.shape[0], variant)
    v = rho * s - hy / yhy
    inv_tau = 1.0 / coef.tau
    return (
        inverse_hessian * inv_tau
        - (inv_tau / yhy) * jnp.outer(hy, hy)
        + (coef.phi * yhy * inv_tau) * jnp.outer(v, v)
        + rho * jnp.outer(s, s)
    )


def inverse_hessian_update(
    inverse_hessian: jax.Array, s: jax.Array, y: jax.Array, b: jax.Array, variant: Variant
) -> jax.Array:
    """H₊ = [H − H y yᵀH/(yᵀHy) + φ (yᵀHy) v vᵀ]/τ + ρ s sᵀ, v = ρ s − H y/(yᵀHy) (Urbán et al. 2025).

    `b = sᵀBs/yᵀs` is supplied by the caller (it needs the step length; see the module docstring).
    No guards here: the caller skips the update when yᵀs ≤ 0 or the result would not be finite.
    """
    hy = inverse_hessian @ y
    return _rank_two_update(inverse_hessian, hy, jnp.dot(y, hy), s, y, b, variant)


class ScaleByDenseQuasiNewtonState(NamedTuple):
    """State of `scale_by_dense_quasi_newton` (fixed shapes; n = number of parameters).

    Field names avoid `value`/`grad`, which `optax.value_and_grad_from_state` looks up.
    """

    count: jax.Array  # directions since the last (re)start or qn_reset_cache; H is updated only if > 0
    inverse_hessian: jax.Array  # H (n, n)
    fresh: jax.Array  # bool: H is the initial identity, not yet updated
    prev_params: jax.Array  # x where the last direction was computed (n,)
    prev_gradient: jax.Array  # g at prev_params (n,)
    prev_direction: jax.Array  # the direction d returned there (n,)
    prev_direction_scale: jax.Array  # c with d = −c H g (c < 1 only for a first step)
    num_skipped: jax.Array  # updates skipped by the guards, int32
    num_resets: jax.Array  # resets of H to I (−gᵀd ≤ 0, d not finite, or a failed Cholesky test), int32


def scale_by_dense_quasi_newton(variant: Variant = "ssbroyden") -> optax.GradientTransformation:
    """Direction d = −H g of a dense BFGS / self-scaled BFGS / self-scaled Broyden method.

    Each `update(grad, state, params)`:
    1. s = x − x_prev, y = g − g_prev, b = sᵀBs/yᵀs computed without B: the step was s = t d_prev
       with t = sᵀd_prev/‖d_prev‖² (the line search's step length), and B d_prev = −c g_prev, so
       b = −t c ρ sᵀg_prev;
    2. updates H by `inverse_hessian_update`, skipped when count = 0, yᵀs ≤ ε‖y‖‖s‖, b ≤ 0 or its
       ingredients (H y, yᵀHy, s) are not finite. The initial H is I, not rescaled to
       (yᵀs/yᵀy) I as in Nocedal & Wright eq. 6.20 (as Urbán et al.; the rescaling was slower on
       our tests);
    3. d = −c H g with c = min(1, 1/‖g‖) while H is the initial identity (as optax's L-BFGS first
       step), else c = 1; if −gᵀd ≤ 0 or d is not finite, H is reset to I (not positive definite).
    The positive-definiteness test by Cholesky is done between blocks (`qn_reset_cache`), not here.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant = {variant!r}: must be one of {VARIANTS}")

    def init_fn(params: optax.Params) -> ScaleByDenseQuasiNewtonState:
        flat, _ = ravel_pytree(params)
        n = flat.shape[0]
        zeros = jnp.zeros_like(flat)
        return ScaleByDenseQuasiNewtonState(
            count=jnp.asarray(0, jnp.int32),
            inverse_hessian=jnp.eye(n, dtype=flat.dtype),
            fresh=jnp.asarray(True),
            prev_params=zeros,
            prev_gradient=zeros,
            prev_direction=zeros,
            prev_direction_scale=jnp.asarray(1.0, flat.dtype),
            num_skipped=jnp.asarray(0, jnp.int32),
            num_resets=jnp.asarray(0, jnp.int32),
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByDenseQuasiNewtonState, params: Optional[optax.Params] = None
    ) -> tuple[optax.Updates, ScaleByDenseQuasiNewtonState]:
        if params is None:
            raise ValueError("scale_by_dense_quasi_newton needs `params` in update()")
        x, _ = ravel_pytree(params)
        g, unravel = ravel_pytree(updates)
        dtype = g.dtype
        eps = jnp.finfo(dtype).eps
        n = g.shape[0]
        inverse_hessian = state.inverse_hessian

        # 1. the pair (s, y) of the step just taken and b = sᵀBs/yᵀs
        s = x - state.prev_params
        y = g - state.prev_gradient
        ys = jnp.dot(y, s)
        d_prev = state.prev_direction
        step_length = jnp.dot(s, d_prev) / jnp.maximum(jnp.dot(d_prev, d_prev), jnp.finfo(dtype).tiny)
        rho = 1.0 / jnp.where(ys > 0, ys, 1.0)
        b = -step_length * state.prev_direction_scale * rho * jnp.dot(s, state.prev_gradient)

        # 2. H update, skipped when the pair is unusable (the scalars and vectors it is built from
        #    are checked instead of the n×n result, so H is read and written once)
        hy = inverse_hessian @ y
        yhy = jnp.dot(y, hy)
        valid_pair = (
            (state.count > 0)
            & (ys > eps * jnp.linalg.norm(y) * jnp.linalg.norm(s))
            & (b > 0)
            & (yhy > 0)
            & jnp.isfinite(b)
            & jnp.isfinite(yhy)
            & jnp.all(jnp.isfinite(hy))
            & jnp.all(jnp.isfinite(s))
        )
        inverse_hessian = jax.lax.cond(
            valid_pair,
            lambda h: _rank_two_update(h, hy, yhy, s, y, b, variant),
            lambda h: h,
            inverse_hessian,
        )
        fresh = state.fresh & ~valid_pair
        num_skipped = state.num_skipped + ((state.count > 0) & ~valid_pair).astype(jnp.int32)

        # 3. direction d = −c H g; H is reset to I when d is not a descent direction
        first_step_scale = jnp.minimum(1.0, 1.0 / jnp.linalg.norm(g)).astype(dtype)
        scale = jnp.where(fresh, first_step_scale, jnp.ones((), dtype))
        d = -scale * (inverse_hessian @ g)
        reset = ~fresh & ~((jnp.dot(g, d) < 0) & jnp.all(jnp.isfinite(d)))
        inverse_hessian = jax.lax.cond(reset, lambda h: jnp.eye(n, dtype=dtype), lambda h: h, inverse_hessian)
        fresh = fresh | reset
        scale = jnp.where(reset, first_step_scale, scale)
        d = jnp.where(reset, -first_step_scale * g, d)

        new_state = ScaleByDenseQuasiNewtonState(
            count=optax.safe_increment(state.count),
            inverse_hessian=inverse_hessian,
            fresh=fresh,
            prev_params=x,
            prev_gradient=g,
            prev_direction=d,
            prev_direction_scale=scale,
            num_skipped=num_skipped,
            num_resets=state.num_resets + reset.astype(jnp.int32),
        )
        return unravel(d), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def zoom_linesearch(cfg: RefineConfig) -> optax.GradientTransformationExtraArgs:
    """optax's zoom line search (strong Wolfe, c1 = 1e-4, c2 = 0.9), first trial step 1."""
    return optax.scale_by_zoom_linesearch(
        max_linesearch_steps=cfg.max_linesearch_steps,
        slope_rtol=WOLFE_C1,
        curv_rtol=WOLFE_C2,
        initial_guess_strategy="one",
    )


def ssbroyden(cfg: RefineConfig, variant: Optional[Variant] = None) -> optax.GradientTransformationExtraArgs:
    """Dense quasi-Newton (`variant`: "bfgs" | "ssbfgs" | "ssbroyden"; default `cfg.method` when it is
    one of these, else "ssbroyden") chained with the zoom line search. Use with
    `optax.value_and_grad_from_state` and `update(..., value=, grad=, value_fn=)`."""
    if variant is None:
        variant = cfg.method if cfg.method in VARIANTS else "ssbroyden"
    return optax.chain(
        scale_by_dense_quasi_newton(variant),
        zoom_linesearch(cfg),
    )
