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
(`ssbroyden(variant)` does, with optax's zoom line search, strong Wolfe c1 = 1e-4, c2 = 0.9).

Cost per update, H being the only O(n²) object: H is read for H y and for H g, and H₊ is written in
one fused pass from O(n) factors (`InverseHessianUpdate`, two outer products; `apply_update`); H₊ g
comes from H g in O(n). No n×n matrix is selected or copied, and the factors are kept in the state so
that the block runner (`pinn.optim.quasi_newton`) can keep H out of its `lax.cond`s.
`check_dense_size` refuses sizes at which a dense H does not fit the memory or a time budget.
"""

from __future__ import annotations

import os
from typing import Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from pinn.errors import UserError

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


class InverseHessianUpdate(NamedTuple):
    """One update of a dense inverse Hessian H (n×n) in factored form, applied in one pass over H:

        H₊ = I                                                          if reset
        H₊ = scale · H + left[0] right[0]ᵀ + left[1] right[1]ᵀ           otherwise

    For the self-scaled Broyden family (`self_scaled_update`) left = (H y, s) and right =
    (α H y + β s, β H y + γ s): the symmetric rank-two correction in span{H y, s}.
    `identity_update(n)` (scale 1, zero factors, reset False) leaves H unchanged exactly.
    """

    scale: jax.Array  # () multiplier of H
    left: jax.Array  # (2, n)
    right: jax.Array  # (2, n)
    reset: jax.Array  # () bool: H₊ = I


def identity_update(n: int, dtype: jnp.dtype, *, reset: bool = False) -> InverseHessianUpdate:
    """The update that leaves H (n×n) unchanged, or, with `reset=True`, sets H₊ = I."""
    zeros = jnp.zeros((2, n), dtype)
    return InverseHessianUpdate(scale=jnp.ones((), dtype), left=zeros, right=zeros, reset=jnp.asarray(reset))


def self_scaled_update(hy: jax.Array, yhy: jax.Array, s: jax.Array, y: jax.Array, b: jax.Array,
                       variant: Variant) -> InverseHessianUpdate:
    """Factors of the self-scaled Broyden update (Urbán, Stefanou & Pons 2025, eqs. 13–23)

        H₊ = [H − H y yᵀH/(yᵀHy) + φ (yᵀHy) v vᵀ]/τ + ρ s sᵀ,   v = ρ s − H y/(yᵀHy),

    from `hy = H y (n,)`, `yhy = yᵀHy ()`, `s, y (n,)`, `b = sᵀBs/yᵀs ()`, with θ, φ, τ from
    `self_scaled_coefficients`. Expanding v vᵀ gives H₊ = H/τ + α (Hy)(Hy)ᵀ + β (Hy sᵀ + s (Hy)ᵀ)
    + γ s sᵀ with α = (φ − 1)/(τ yᵀHy), β = −φρ/τ, γ = ρ (1 + φρ yᵀHy/τ) (for BFGS, α = 0: Nocedal &
    Wright eq. 6.17 expanded), returned as two outer products. O(n); H is not read. No guards here.
    """
    rho = 1.0 / jnp.dot(y, s)
    coef = self_scaled_coefficients(b, rho * yhy, s.shape[0], variant)
    inv_tau = 1.0 / coef.tau
    alpha = (coef.phi - 1.0) * inv_tau / yhy
    beta = -coef.phi * rho * inv_tau
    gamma = rho * (1.0 + coef.phi * rho * yhy * inv_tau)
    return InverseHessianUpdate(
        scale=inv_tau,
        left=jnp.stack([hy, s]),
        right=jnp.stack([alpha * hy + beta * s, beta * hy + gamma * s]),
        reset=jnp.zeros((), bool),
    )


def apply_update(inverse_hessian: jax.Array, update: InverseHessianUpdate) -> jax.Array:
    """H₊ of `update` (see `InverseHessianUpdate`) from H (n, n) -> (n, n).

    One fused loop over H (scale, two outer products by broadcasting, the reset as a select with a
    scalar predicate) that reads H once and writes H₊ in place of H when H is dead afterwards (a scan
    carry, a donated argument): no n×n temporary; the reset's unit diagonal is then added by an O(n)
    scatter. The factors pass an optimization barrier first: without it XLA fuses their producers
    (scalings, masks) into the n×n loop and recomputes them for every entry (≈ 30% slower at n = 5k).
    """
    n = inverse_hessian.shape[0]
    dtype = inverse_hessian.dtype
    scale, left, right, reset = jax.lax.optimization_barrier(
        (update.scale, update.left, update.right, update.reset))
    updated = inverse_hessian * scale
    for k in range(left.shape[0]):
        updated = updated + left[k][:, None] * right[k][None, :]
    updated = jnp.where(reset, jnp.zeros((), dtype), updated)
    diagonal = jnp.arange(n)
    return updated.at[diagonal, diagonal].add(reset.astype(dtype))


def apply_update_to_vector(update: InverseHessianUpdate, hg: jax.Array, g: jax.Array) -> jax.Array:
    """H₊ g (n,) from H g (n,) and g (n,) in O(n): scale·Hg + Σₖ leftₖ (rightₖᵀ g), or g after a reset."""
    return jnp.where(update.reset, g, update.scale * hg + update.left.T @ (update.right @ g))


def inverse_hessian_update(
    inverse_hessian: jax.Array, s: jax.Array, y: jax.Array, b: jax.Array, variant: Variant
) -> jax.Array:
    """H₊ = [H − H y yᵀH/(yᵀHy) + φ (yᵀHy) v vᵀ]/τ + ρ s sᵀ, v = ρ s − H y/(yᵀHy) (Urbán et al. 2025,
    eqs. 13–23), for H (n, n), s, y (n,), b = sᵀBs/yᵀs (); returns (n, n).

    `b` is supplied by the caller (it needs the step length; see the module docstring).
    No guards here: the caller skips the update when yᵀs ≤ 0 or the result would not be finite.
    """
    hy = inverse_hessian @ y
    return apply_update(inverse_hessian, self_scaled_update(hy, jnp.dot(y, hy), s, y, b, variant))


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
    last_update: InverseHessianUpdate  # the update that made `inverse_hessian` (reset after init)


def scale_by_dense_quasi_newton(variant: Variant = "ssbroyden") -> optax.GradientTransformation:
    """Direction d = −H g of a dense BFGS / self-scaled BFGS / self-scaled Broyden method.

    Each `update(grad, state, params)`:
    1. s = x − x_prev, y = g − g_prev, b = sᵀBs/yᵀs computed without B: the step was s = t d_prev
       with t = sᵀd_prev/‖d_prev‖² (the line search's step length), and B d_prev = −c g_prev, so
       b = −t c ρ sᵀg_prev;
    2. H y and H g (two products with H); the update of H (`self_scaled_update`)
       is skipped (zero coefficients) when count = 0, yᵀs ≤ ε‖y‖‖s‖, b ≤ 0 or its ingredients
       (H y, yᵀHy, s) are not finite. The initial H is I, not rescaled to (yᵀs/yᵀy) I as in
       Nocedal & Wright eq. 6.20 (as Urbán et al.; the rescaling was slower on our tests);
    3. d = −c H₊ g with H₊ g formed in O(n) from H g and the update's factors
       (`apply_update_to_vector`); c = min(1, 1/‖g‖) while H is the initial identity (as optax's
       L-BFGS first step), else c = 1; if −gᵀd ≤ 0 or d is not finite, H₊ = I instead (not
       positive definite);
    4. H₊ is written in one fused pass over H (`apply_update`), the reset included; the factors are
       kept in `state.last_update`, so a caller that holds H outside the state (the block runner)
       can apply the same update itself.
    So H is read three times and written once per update, and no n×n temporary is made. The
    positive-definiteness test by Cholesky is done between blocks (`qn_reset_cache`), not here.
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
            last_update=identity_update(n, flat.dtype, reset=True),
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

        # 1. the pair (s, y) of the step just taken and b = sᵀBs/yᵀs
        s = x - state.prev_params
        y = g - state.prev_gradient
        ys = jnp.dot(y, s)
        d_prev = state.prev_direction
        step_length = jnp.dot(s, d_prev) / jnp.maximum(jnp.dot(d_prev, d_prev), jnp.finfo(dtype).tiny)
        rho = 1.0 / jnp.where(ys > 0, ys, 1.0)
        b = -step_length * state.prev_direction_scale * rho * jnp.dot(s, state.prev_gradient)

        # 2. H y and H g (two matrix-vector products: as fast as one (n, 2) product, and faster than
        #    the transposed form XLA made of that); the update's factors, zeroed when the pair is
        #    unusable (scalars and vectors are selected, never the n×n matrix)
        hy = state.inverse_hessian @ y
        hg = state.inverse_hessian @ g
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
        safe = lambda a, fallback: jnp.where(valid_pair, a, fallback)  # noqa: E731
        update = self_scaled_update(safe(hy, 0.0), safe(yhy, 1.0), safe(s, 0.0), safe(y, 0.0), safe(b, 1.0),
                                    variant)
        update = InverseHessianUpdate(scale=safe(update.scale, 1.0), left=safe(update.left, 0.0),
                                      right=safe(update.right, 0.0), reset=update.reset)
        fresh = state.fresh & ~valid_pair
        num_skipped = state.num_skipped + ((state.count > 0) & ~valid_pair).astype(jnp.int32)

        # 3. direction d = −c H₊ g; H₊ = I when d is not a descent direction
        first_step_scale = jnp.minimum(1.0, 1.0 / jnp.linalg.norm(g)).astype(dtype)
        scale = jnp.where(fresh, first_step_scale, jnp.ones((), dtype))
        d = -scale * apply_update_to_vector(update, hg, g)
        reset = ~fresh & ~((jnp.dot(g, d) < 0) & jnp.all(jnp.isfinite(d)))
        fresh = fresh | reset
        scale = jnp.where(reset, first_step_scale, scale)
        d = jnp.where(reset, -first_step_scale * g, d)
        # after a reset the factors are zeroed: an update holds finite factors or is a reset
        update = jax.tree.map(lambda a, r: jnp.where(reset, r, a), update, identity_update(n, dtype, reset=True))

        # 4. H₊ in one pass
        new_state = ScaleByDenseQuasiNewtonState(
            count=optax.safe_increment(state.count),
            inverse_hessian=apply_update(state.inverse_hessian, update),
            fresh=fresh,
            prev_params=x,
            prev_gradient=g,
            prev_direction=d,
            prev_direction_scale=scale,
            num_skipped=num_skipped,
            num_resets=state.num_resets + reset.astype(jnp.int32),
            last_update=update,
        )
        return unravel(d), new_state

    return optax.GradientTransformation(init_fn, update_fn)


#: Largest parameter count for a dense inverse Hessian (time rule): per iteration H (8·n² bytes in
#: float64) is read twice and written once; `benchmarks/refine_speed.py` measures about 0.1 s per
#: iteration at n ≈ 5k on a 2-core CPU, so n = 20k costs ≈ 16× that: ~1.5 s per iteration, hours for
#: the 10⁴ iterations of a refinement. L-BFGS costs O(m n) per iteration instead.
DENSE_MAX_PARAMS = 20_000
#: Copies of H alive at once (memory rule): the caller's optimizer state, the block's working copy,
#: and one more between blocks (the Cholesky factor of `qn_reset_cache`, or a checkpoint's bytes).
DENSE_COPIES = 3
#: Share of the memory the dense copies may take.
DENSE_MEMORY_FRACTION = 0.5


def _memory_bytes() -> int:
    """Memory of the default JAX device: its allocator limit (accelerators), else the host's RAM."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # backends without memory statistics
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_dense_size(num_params: int, method: str, *, memory_bytes: Optional[int] = None,
                     bytes_per_entry: int = 8) -> None:
    """Refuse a dense quasi-Newton refinement (`method` in "bfgs" | "ssbfgs" | "ssbroyden") whose n×n
    inverse Hessian is too large; other methods ("lbfgs") always pass.

    Too large: `num_params` > `DENSE_MAX_PARAMS` (time per iteration grows as n²), or
    `DENSE_COPIES` · bytes_per_entry · n² > `DENSE_MEMORY_FRACTION` · `memory_bytes` (default: the
    default device's memory, `_memory_bytes()`). Raises `pinn.errors.UserError` with a one-line
    message naming `refine.method` and suggesting `lbfgs`.
    """
    if method not in VARIANTS:
        return
    n = int(num_params)
    one_copy = bytes_per_entry * n * n
    advice = "use refine.method = 'lbfgs' (memory and time per iteration O(n)) or a smaller model"
    if n > DENSE_MAX_PARAMS:
        raise UserError(
            f"refine.method = {method!r}: {n:,} parameters is above the dense inverse-Hessian limit of "
            f"{DENSE_MAX_PARAMS:,} (each iteration reads and writes its {one_copy / 1e9:.1f} GB; hours per "
            f"refinement); {advice}"
        )
    memory = _memory_bytes() if memory_bytes is None else int(memory_bytes)
    if DENSE_COPIES * one_copy > DENSE_MEMORY_FRACTION * memory:
        raise UserError(
            f"refine.method = {method!r}: a dense inverse Hessian for {n:,} parameters needs "
            f"{DENSE_COPIES} × {one_copy / 1e9:.1f} GB, more than {DENSE_MEMORY_FRACTION:.0%} of the "
            f"{memory / 1e9:.1f} GB memory; {advice}"
        )


def zoom_linesearch(max_linesearch_steps: int = 20) -> optax.GradientTransformationExtraArgs:
    """optax's zoom line search (strong Wolfe, c1 = 1e-4, c2 = 0.9), first trial step 1, at most
    `max_linesearch_steps` loss evaluations per iteration."""
    return optax.scale_by_zoom_linesearch(
        max_linesearch_steps=max_linesearch_steps,
        slope_rtol=WOLFE_C1,
        curv_rtol=WOLFE_C2,
        initial_guess_strategy="one",
    )


def ssbroyden(variant: Variant = "ssbroyden", *, max_linesearch_steps: int = 20
              ) -> optax.GradientTransformationExtraArgs:
    """Dense quasi-Newton (`variant`: "bfgs" | "ssbfgs" | "ssbroyden") chained with the zoom line
    search (`zoom_linesearch(max_linesearch_steps)`). Use with `optax.value_and_grad_from_state`
    and `update(..., value=, grad=, value_fn=)`."""
    return optax.chain(
        scale_by_dense_quasi_newton(variant),
        zoom_linesearch(max_linesearch_steps),
    )
