"""Loss-term balancing: fixed weights, GradNorm, gradient-norm ratios, and causal time weighting.

A `Balancer` is an optax-style bundle of pure functions over a pytree state (`BalancerState`):

    state = balancer.init(num_terms)
    w = balancer.weights(state)                       # (K,) weights of the loss terms
    state = balancer.update(state, step, losses, grad_norms_fn)

`grad_norms_fn()` returns the *unweighted* per-term gradient norms `||∇θ L_i||` (K,). It costs K
backward passes, so `update` calls it only inside the taken branch of a `lax.cond` on
`step % update_every == 0`: on other steps no gradient norm is computed at run time (both branches
are traced once, at compile time). All state shapes/dtypes are fixed at `init`, so a jitted training
step compiles once. Updates never emit non-finite weights: if the measured losses or gradient norms
are not all finite, the update is skipped and the state is returned unchanged.

Factories, from plain hyperparameters (their defaults are params.yaml's): `fixed`, `gradnorm`,
`grad_ratio`; `pinn.from_params.balancer_from_params` picks one from params.yaml's `balancing`.

`causal_residual_loss` implements causal time weighting (Wang, Sankaran & Perdikaris 2022) of the
PDE residual; it is a loss function, not a `Balancer`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
GradNormsFn = Callable[[], Array]


class BalancerState(NamedTuple):
    """State shared by all balancers (so checkpoints have one structure).

    weights: (K,) current term weights.
    initial_losses: (K,) losses at the first update (GradNorm's `L_i(0)`; zeros before it).
    initialized: () bool, whether `initial_losses` has been recorded.
    grad_norms: (K,) unweighted gradient norms measured at the last update (zeros before it).
    num_updates: () int32, number of update steps taken (skipped non-finite updates not counted).
    """

    weights: Array
    initial_losses: Array
    initialized: Array
    grad_norms: Array
    num_updates: Array


class Balancer(NamedTuple):
    """`init(num_terms) -> state`, `update(state, step, losses, grad_norms_fn) -> state`,
    `weights(state) -> (K,)`, `stats(state) -> dict[str, scalar]`."""

    init: Callable[..., BalancerState]
    update: Callable[[BalancerState, Any, Array, GradNormsFn], BalancerState]
    weights: Callable[[BalancerState], Array]
    stats: Callable[[BalancerState], dict[str, Array]]


# ----------------------------------------------------------------------------------------------
# helpers


def _init_state(weights: Sequence[float], dtype: Any) -> BalancerState:
    k = len(weights)
    return BalancerState(
        weights=jnp.asarray(weights, dtype=dtype),
        initial_losses=jnp.zeros((k,), dtype),
        initialized=jnp.zeros((), jnp.bool_),
        grad_norms=jnp.zeros((k,), dtype),
        num_updates=jnp.zeros((), jnp.int32),
    )


def _check_num_terms(num_terms: int, term_names: Sequence[str]) -> None:
    if num_terms != len(term_names):
        raise ValueError(
            f"num_terms = {num_terms}: must equal the number of term names {tuple(term_names)}"
        )


def _weights(state: BalancerState) -> Array:
    return state.weights


def _make_stats(
    term_names: Sequence[str], with_grad_norms: bool
) -> Callable[[BalancerState], dict[str, Array]]:
    names = tuple(term_names)

    def stats(state: BalancerState) -> dict[str, Array]:
        out = {f"w_{n}": state.weights[i] for i, n in enumerate(names)}
        if with_grad_norms:
            out.update({f"grad_norm_{n}": state.grad_norms[i] for i, n in enumerate(names)})
        return out

    return stats


def _periodic_update(
    update_every: int,
    measured_update: Callable[[BalancerState, Array, Array], BalancerState],
) -> Callable[[BalancerState, Any, Array, GradNormsFn], BalancerState]:
    """Wrap `measured_update(state, losses, grad_norms)` so it runs (and `grad_norms_fn` is called)
    only on steps with `step % update_every == 0`, inside `lax.cond`; non-finite inputs skip it."""

    def update(
        state: BalancerState, step: Any, losses: Array, grad_norms_fn: GradNormsFn
    ) -> BalancerState:
        def on_update_step() -> BalancerState:
            dtype = state.weights.dtype
            loss_values = jax.lax.stop_gradient(jnp.asarray(losses)).astype(dtype)
            grad_norms = jax.lax.stop_gradient(jnp.asarray(grad_norms_fn())).astype(dtype)
            new_state = measured_update(state, loss_values, grad_norms)
            new_state = jax.tree.map(lambda new, old: new.astype(old.dtype), new_state, state)
            ok = (
                jnp.all(jnp.isfinite(loss_values))
                & jnp.all(jnp.isfinite(grad_norms))
                & jnp.all(jnp.isfinite(new_state.weights))
            )
            return jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)

        return jax.lax.cond(jnp.asarray(step) % update_every == 0, on_update_step, lambda: state)

    return update


def _safe_divide(num: Array, den: Array, fallback: Array | float) -> Array:
    """`num / den` where `den > 0`, else `fallback` (no NaN in values or gradients)."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), fallback)


def _renormalize_with_bounds(w: Array, total: float, lo: float, hi: float) -> Array:
    """Clip `w` to [lo, hi], then rescale the entries not held at the binding bound so that
    `Σ w = total`, re-clipping; repeated K times, which makes it exact (each pass either meets the
    total or pins at least one more entry to a bound). Needs `K·lo <= total <= K·hi`."""
    w = jnp.clip(w, lo, hi)
    for _ in range(w.shape[0]):
        current = jnp.sum(w)
        # growing: entries at `hi` cannot take more; shrinking: entries at `lo` cannot give more
        pinned = jnp.where(current < total, w >= hi, w <= lo)
        free_sum = jnp.sum(jnp.where(pinned, 0.0, w))
        scale = _safe_divide(total - (current - free_sum), free_sum, 1.0)
        w = jnp.clip(jnp.where(pinned, w, w * scale), lo, hi)
    return w


# ----------------------------------------------------------------------------------------------
# balancers


def fixed(weights: Sequence[float] | Mapping[str, float],
          term_names: Optional[Sequence[str]] = None) -> Balancer:
    """Constant weights `w_i`; `update` is the identity and never calls `grad_norms_fn`.

    `weights`: one per term in `term_names` order, or `{term: weight}` as params.yaml's
    `balancing.weights` writes them (then `term_names` is required; a term it omits gets weight
    1). Raises `ValueError` for a name not in `term_names`, a count mismatch, or a weight that is
    negative or not finite."""
    if isinstance(weights, Mapping):
        if term_names is None:
            raise ValueError("weights given by name: term_names must be given too")
        unknown = sorted(set(weights) - set(term_names))
        if unknown:
            raise ValueError(f"weights {unknown}: not among term_names {tuple(term_names)}")
        weights = [weights.get(n, 1.0) for n in term_names]
    weights = tuple(float(w) for w in weights)
    for i, w in enumerate(weights):
        if not (w >= 0 and w < float("inf")):
            raise ValueError(f"weights[{i}] = {w}: must be finite and >= 0")
    if term_names is None:
        term_names = [f"term{i}" for i in range(len(weights))]
    names = tuple(term_names)
    if len(names) != len(weights):
        raise ValueError(f"term_names {names}: must have one name per weight ({len(weights)})")

    def init(num_terms: int, dtype: Any = jnp.float32) -> BalancerState:
        _check_num_terms(num_terms, names)
        return _init_state(weights, dtype)

    def update(
        state: BalancerState, step: Any, losses: Array, grad_norms_fn: GradNormsFn
    ) -> BalancerState:
        del step, losses, grad_norms_fn
        return state

    return Balancer(init, update, _weights, _make_stats(names, with_grad_norms=False))


def gradnorm_step(
    weights: Array,
    losses: Array,
    initial_losses: Array,
    grad_norms: Array,
    *,
    alpha: float,
    learning_rate: float,
    min_weight: float,
    max_weight: float,
) -> Array:
    """One GradNorm weight update (Chen, Badrinarayanan, Lee & Rabinovich 2018, ICML).

    With `n_i = ||∇θ L_i||` (unweighted), `G_i = w_i n_i`, `Ḡ = mean_i G_i`,
    `L̃_i = L_i / L_i(0)` (1 where `L_i(0) = 0`), `r_i = L̃_i / mean_j L̃_j` (1 if the mean is 0),
    target `T_i = Ḡ r_i^α` held constant, and `L_grad = Σ_i |G_i - T_i|`:

        ∂L_grad/∂w_i = sign(G_i - T_i) n_i,
        w_i ← w_i - lr · sign(G_i - T_i) n_i / n̄,   n̄ = mean_j n_j,

    i.e. a gradient step on `L_grad / n̄` (n̄ held constant). The division makes `lr` dimensionless:
    the step does not change when every loss is scaled by a constant, and `|Δw_i| <= lr·K` however
    large the PINN gradients are (with raw gradients a residual norm of 1e3 would fling the weights
    to the bounds in one step). If `n̄ = 0` the weights do not move. Then `w` is clipped to
    [min_weight, max_weight] and renormalized to `Σ w = K` (see `_renormalize_with_bounds`).
    """
    k = weights.shape[0]
    relative_losses = _safe_divide(losses, initial_losses, 1.0)
    inverse_rates = _safe_divide(relative_losses, jnp.mean(relative_losses), 1.0)
    weighted_norms = weights * grad_norms
    target = jax.lax.stop_gradient(jnp.mean(weighted_norms) * inverse_rates**alpha)
    grad_w = jnp.sign(weighted_norms - target) * grad_norms
    step = learning_rate * _safe_divide(grad_w, jnp.mean(grad_norms), 0.0)
    return _renormalize_with_bounds(weights - step, float(k), min_weight, max_weight)


def gradnorm(term_names: Sequence[str], *, alpha: float = 1.5, learning_rate: float = 0.025,
             update_every: int = 10, min_weight: float = 0.1, max_weight: float = 10.0) -> Balancer:
    """GradNorm weights (see `gradnorm_step` for `alpha`, `learning_rate` and the bounds), updated
    every `update_every` steps; initial weights 1; the losses at the first update are recorded as
    `L_i(0)`.

    Requires `min_weight <= 1 <= max_weight` so that `Σ w = K` is reachable within the bounds
    (`ValueError` otherwise).
    """
    names = tuple(term_names)
    if not min_weight <= 1.0 <= max_weight:
        raise ValueError(
            f"min_weight = {min_weight}, max_weight = {max_weight}: "
            "must satisfy min_weight <= 1 <= max_weight (GradNorm keeps the mean weight at 1)"
        )

    def init(num_terms: int, dtype: Any = jnp.float32) -> BalancerState:
        _check_num_terms(num_terms, names)
        return _init_state([1.0] * num_terms, dtype)

    def measured_update(state: BalancerState, losses: Array, grad_norms: Array) -> BalancerState:
        initial_losses = jnp.where(state.initialized, state.initial_losses, losses)
        weights = gradnorm_step(
            state.weights,
            losses,
            initial_losses,
            grad_norms,
            alpha=alpha,
            learning_rate=learning_rate,
            min_weight=min_weight,
            max_weight=max_weight,
        )
        return BalancerState(
            weights=weights,
            initial_losses=initial_losses,
            initialized=jnp.ones((), jnp.bool_),
            grad_norms=grad_norms,
            num_updates=state.num_updates + 1,
        )

    return Balancer(
        init,
        _periodic_update(update_every, measured_update),
        _weights,
        _make_stats(names, with_grad_norms=True),
    )


def grad_ratio_targets(grad_norms: Array, previous: Array) -> Array:
    """`λ̂_i = (Σ_j ||∇L_j||) / ||∇L_i||` (Wang, Teng & Perdikaris 2021, SIAM J. Sci. Comput.;
    Wang et al. 2023, "An expert's guide to training PINNs", eq. for λ̂ with the sum).

    A term with zero gradient norm carries no information and keeps its `previous` weight.
    (jaxpi's code uses the mean instead of the sum, i.e. λ̂/K; only the overall scale differs.)
    """
    return _safe_divide(jnp.sum(grad_norms), grad_norms, previous)


def grad_ratio(term_names: Sequence[str], *, momentum: float = 0.9, update_every: int = 100
               ) -> Balancer:
    """Gradient-norm ratio (learning-rate annealing) weights: every `update_every` steps,
    `λ_i ← m λ_i + (1 - m) λ̂_i` with `λ̂` from `grad_ratio_targets` and `m = momentum`;
    initial `λ = 1`."""
    names = tuple(term_names)

    def init(num_terms: int, dtype: Any = jnp.float32) -> BalancerState:
        _check_num_terms(num_terms, names)
        return _init_state([1.0] * num_terms, dtype)

    def measured_update(state: BalancerState, losses: Array, grad_norms: Array) -> BalancerState:
        del losses
        targets = grad_ratio_targets(grad_norms, state.weights)
        return state._replace(
            weights=momentum * state.weights + (1.0 - momentum) * targets,
            grad_norms=grad_norms,
            num_updates=state.num_updates + 1,
        )

    return Balancer(
        init,
        _periodic_update(update_every, measured_update),
        _weights,
        _make_stats(names, with_grad_norms=True),
    )


# ----------------------------------------------------------------------------------------------
# causal time weighting


class CausalWeighting(NamedTuple):
    """Causal time weighting of the PDE residual terms (`causal_residual_loss`): `num_chunks`
    equal time chunks, `tolerance` ε of `w_k = exp(-ε Σ_{j<k} L_j)`. Defaults are params.yaml's
    (`balancing.causal`); a `pinn.loss.LossSpec` holds one, or None for none."""

    num_chunks: int = 16
    tolerance: float = 1.0


def causal_residual_loss(
    r2: Array,
    t: Array,
    t_min: float | Array,
    t_max: float | Array,
    num_chunks: int,
    tolerance: float | Array,
    weights: Optional[Array] = None,
) -> tuple[Array, Array]:
    """Causally weighted residual loss (Wang, Sankaran & Perdikaris 2022, "Respecting causality is
    all you need for training physics-informed neural networks").

    Points are assigned to `M = num_chunks` equal time chunks of [t_min, t_max] by `t` (points
    outside are clamped to the first/last chunk). With validity weights `v` (default 1):

        L_k = Σ_{p∈k} v_p r²_p / Σ_{p∈k} v_p     (0 for an empty chunk),
        w_k = exp(-tolerance · Σ_{j<k} L_j)      (stop-gradient; w_0 = 1),
        loss = (1/M) Σ_k w_k L_k.

    Returns `(loss, w (M,))`; `min(w)` is the usual progress signal (`causal_min_weight`).
    """
    if num_chunks <= 0:
        raise ValueError(f"num_chunks = {num_chunks}: must be > 0")
    if isinstance(t_min, (int, float)) and isinstance(t_max, (int, float)) and not t_max > t_min:
        raise ValueError(f"t_max = {t_max}: must be > t_min ({t_min})")
    r2 = jnp.asarray(r2)
    t = jnp.asarray(t)
    v = jnp.ones_like(r2) if weights is None else jnp.asarray(weights, r2.dtype)
    position = (t - t_min) / (t_max - t_min) * num_chunks
    chunk = jnp.clip(jnp.floor(position), 0, num_chunks - 1).astype(jnp.int32)
    chunk_sums = jax.ops.segment_sum(v * r2, chunk, num_segments=num_chunks)
    chunk_counts = jax.ops.segment_sum(v, chunk, num_segments=num_chunks)
    chunk_losses = _safe_divide(chunk_sums, chunk_counts, 0.0)
    preceding = jnp.cumsum(chunk_losses) - chunk_losses  # Σ_{j<k} L_j
    chunk_weights = jax.lax.stop_gradient(jnp.exp(-tolerance * preceding))
    return jnp.mean(chunk_weights * chunk_losses), chunk_weights
