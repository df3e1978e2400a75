"""Coarse-to-fine cascade: train a narrow network, widen it without changing its function, go on.

Level `i` of `L` has `width_i = max(1, round(finest_width * factor**(L-1-i)))` hidden units per
layer (same depth, embedding and Fourier features at every level). Moving to the next level:

- `prolongate` widens the parameters *function-preservingly* (Net2Net, Chen, Goodfellow & Shlens
  2016, in its "zero outgoing weights" form): old entries are copied into the leading block of a
  freshly initialized wider network, new units keep their random incoming weights, bias and scale,
  and every weight that *reads* a new unit is set to zero, so `u_fine(z) == u_coarse(z)`.
- `prolongate_adam_state` carries the Adam state over (`mu`, `nu`, step counts) and seeds the new
  entries so they move like their trained neighbours (first update `≈ 0.1 ρ lr`, `ρ ≤ 1`) instead
  of Adam's `(1-b1)/sqrt(1-b2) lr = 3.16 lr` step for a fresh entry when the step count is large.

Both are called once per level transfer, eagerly, outside the jitted training step; they return
pytrees with exactly the structure, shapes and dtypes that `init` of the fine level would give, so
the fine level's jitted step compiles once.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def level_widths(finest_width: int, num_levels: int, coarsening_factor: float) -> list[int]:
    """Hidden widths of the cascade, coarse to fine: `max(1, round(finest * factor**(L-1-i)))`.

    `pinn.levels.level_widths(params)` maps it onto params.yaml's levels; the last entry is
    `finest_width`.
    """
    if finest_width < 1:
        raise ValueError(f"finest_width = {finest_width}: must be >= 1")
    if num_levels < 1:
        raise ValueError(f"num_levels = {num_levels}: must be >= 1")
    if not 0.0 < coarsening_factor <= 1.0:
        raise ValueError(f"coarsening_factor = {coarsening_factor}: must be in (0, 1]")
    return [
        max(1, int(round(finest_width * coarsening_factor ** (num_levels - 1 - i))))
        for i in range(num_levels)
    ]


def _leading_block(shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in shape)


def _check_embeds(coarse: PyTree, fine: PyTree, what: str) -> None:
    """Raise ValueError unless `coarse` and `fine` have one tree structure and every coarse leaf
    fits in the leading block of its fine leaf (same rank, no dimension shrinks)."""
    coarse_def = jax.tree_util.tree_structure(coarse)
    fine_def = jax.tree_util.tree_structure(fine)
    if coarse_def != fine_def:
        raise ValueError(
            f"{what}: coarse and fine trees differ in structure (depth, RWF or Fourier features "
            f"changed between levels?):\n  coarse {coarse_def}\n  fine   {fine_def}"
        )
    paths = jax.tree_util.tree_flatten_with_path(coarse)[0]
    for (path, c), f in zip(paths, jax.tree_util.tree_leaves(fine)):
        name = jax.tree_util.keystr(path)
        if jnp.ndim(c) != jnp.ndim(f) or any(a > b for a, b in zip(jnp.shape(c), jnp.shape(f))):
            raise ValueError(
                f"{what}{name}: coarse shape {jnp.shape(c)} does not fit in fine shape "
                f"{jnp.shape(f)} (the fine level must be at least as wide in every dimension)"
            )


def _check_same_rest(coarse_rest: PyTree, fine_rest: PyTree) -> None:
    """The non-trainable state (Fourier feature matrix) must be identical at both levels."""
    coarse_def = jax.tree_util.tree_structure(coarse_rest)
    fine_def = jax.tree_util.tree_structure(fine_rest)
    if coarse_def != fine_def:
        raise ValueError(
            f"rest: coarse and fine non-trainable state differ in structure: "
            f"{coarse_def} vs {fine_def}"
        )
    paths = jax.tree_util.tree_flatten_with_path(coarse_rest)[0]
    for (path, c), f in zip(paths, jax.tree_util.tree_leaves(fine_rest)):
        if np.shape(c) != np.shape(f) or not np.array_equal(np.asarray(c), np.asarray(f)):
            raise ValueError(
                f"rest{jax.tree_util.keystr(path)}: differs between the coarse and fine model "
                "(build every level with the same seed so the Fourier features agree); the wider "
                "network would not compute the coarse network's function"
            )


def prolongate(
    coarse_params: PyTree,
    fine_params_init: PyTree,
    *,
    coarse_rest: PyTree | None = None,
    fine_rest: PyTree | None = None,
) -> PyTree:
    """Function-preserving widening of a `pinn.models.PINN` (Net2Net with zero outgoing weights).

    For every leaf, the coarse values fill the leading block of the fine leaf; the rest keeps the
    fine random init, except that in every 2-D leaf, a `(in, out)` kernel, the rows `>= in_coarse`
    (the weights that read the new units of the previous layer, the output layer included) are 0:

        W_fine = [[W_coarse, V_new], [0, 0]], b_fine = [b_coarse, b_new], s_fine = [s_coarse, s_new]

    Old units therefore see exactly the old inputs and `u_fine = u_coarse` (to rounding: the
    matmuls add exact zeros). With RWF the weight `V * exp(s)` of a zero row is zero as well.

    The new units stay trainable: their activations `h_new = act(x V_new + b_new)` are nonzero, so
    `∂L/∂W[new rows] = h_new ⊗ δ ≠ 0` at the first step; once those rows are nonzero the new units'
    incoming weights `V_new`, `b_new`, `s_new` (zero gradient at transfer, since nothing reads the
    new units yet) receive gradient from the second step on.

    `coarse_rest`/`fine_rest` (the non-`Param` state of `pinn.models.split`, i.e. the fixed Fourier
    matrix), when given, must be equal — otherwise `ValueError`: the levels must be built with the
    same seed. Leaves must fit (same structure, no dimension shrinks) — otherwise `ValueError`.
    The result has the fine params' structure and dtypes.
    """
    _check_embeds(coarse_params, fine_params_init, "params")
    if (coarse_rest is None) != (fine_rest is None):
        raise ValueError("coarse_rest and fine_rest: give both or neither")
    if coarse_rest is not None:
        _check_same_rest(coarse_rest, fine_rest)
    return _widen(coarse_params, fine_params_init)


def _widen_leaf(coarse: jax.Array, fine: jax.Array) -> jax.Array:
    out = fine.at[_leading_block(coarse.shape)].set(coarse.astype(fine.dtype))
    if out.ndim == 2:  # (in, out) kernel: nothing may read a new input unit
        out = out.at[coarse.shape[0]:, :].set(0)
    return out


@jax.jit
def _widen(coarse_params: PyTree, fine_params_init: PyTree) -> PyTree:
    return jax.tree_util.tree_map(_widen_leaf, coarse_params, fine_params_init)


def _embed_with_fill(coarse: jax.Array, fill: jax.Array) -> jax.Array:
    """`fill` (fine shape) with its leading block replaced by `coarse`, in `coarse`'s dtype."""
    return fill.astype(coarse.dtype).at[_leading_block(coarse.shape)].set(coarse)


def _is_adam_state(node: Any, coarse_def: jax.tree_util.PyTreeDef) -> bool:
    fields = getattr(node, "_fields", None)
    return (
        fields is not None
        and {"count", "mu", "nu"} <= set(fields)
        and jax.tree_util.tree_structure(node.mu) == coarse_def
        and jax.tree_util.tree_structure(node.nu) == coarse_def
    )


def _typical_step_ratio(
    mu: jax.Array, nu: jax.Array, count: jax.Array, b1: float, b2: float
) -> jax.Array:
    """`ρ = median |m̂| / √v̂` over a leaf's trained entries, clipped to [1e-3, 1]: how large a
    step, in units of `lr`, Adam currently takes there (≈1 while the gradient keeps its sign, ≪1
    once it oscillates near a minimum)."""
    t = jnp.asarray(count, nu.dtype)
    m_hat = jnp.abs(mu) / (1.0 - jnp.power(jnp.asarray(b1, nu.dtype), t))
    v_hat = nu / (1.0 - jnp.power(jnp.asarray(b2, nu.dtype), t))
    ratio = m_hat / (jnp.sqrt(v_hat) + jnp.finfo(nu.dtype).tiny)
    return jnp.clip(jnp.nan_to_num(jnp.median(ratio)), 1e-3, 1.0)


def prolongate_adam_state(
    coarse_opt_state: PyTree,
    coarse_params: PyTree,
    fine_params: PyTree,
    fine_grads: PyTree | None = None,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
) -> PyTree:
    """Carry an optax state from the coarse to the fine level: no loss jump, new units not frozen.

    Walks the state pytree (`optax.adam`, any `optax.chain`, `optax.inject_hyperparams`, schedule
    states); scalars such as step counts pass through unchanged (a learning-rate schedule continues
    where the coarse level left it). Old entries keep their `mu`, `nu`, so they take exactly the
    steps the coarse network would have taken. Adam (Kingma & Ba 2015) with carried count `t`:
    `m ← b1 m + (1-b1) g`, `v ← b2 v + (1-b2) g²`, step `lr m̂/√v̂`, `m̂ = m/(1-b1^t)`,
    `v̂ = v/(1-b2^t)`. With `m = v = 0` and a large `t` a new entry's first step is
    `(1-b1)/√(1-b2) lr sign(g) ≈ 3.16 lr` on every new entry at once: the loss jumps (×50–×3000
    measured). New entries of an Adam state `(count, mu, nu)` are seeded instead with

    - `mu_new = 0`: momentum builds up over `~1/(1-b1)` steps;
    - `nu_new = (1-b2^t) g² / ρ²`, `g = fine_grads` (loss gradient at the prolongated params,
      computed by the caller), `ρ` the median `|m̂|/√v̂` of the trained entries of the same leaf
      (clipped to [1e-3, 1]). Then `v̂ = g²/ρ²` at the next step: a new entry moves like its
      trained neighbours, first step `≈ (1-b1) ρ lr ≤ 0.1 lr`, then `≈ ρ lr`, growing towards
      Adam's usual `lr` as `nu` forgets the seed (time constant `1/(1-b2)` steps). `b1`, `b2`
      must be the optimizer's. A fresh state (`t = 0`) gets `nu_new = 0`, as Adam would.

    Entries with zero gradient at transfer (the new units' incoming weights, see `prolongate`) get
    `nu_new = 0`: they move fast once they receive gradient, which changes `u` only to second order
    while the outgoing weights are still small; still, a transient can follow a few tens of steps
    in (measured on small regressions: ×16 at lr 1e-2 vs ×510 for the naive transfer, ≤ ×4 at
    lr 1e-3 vs ×26). Seeding `nu` more cautiously (the leaf's mean or max old `nu`)
    removes transients but leaves the new units nearly dormant: the wide network then only tracks
    the coarse one (measured over 200–3000 steps). Without `fine_grads`, `nu_new` is the mean old
    `nu` of the leaf — that conservative variant; pass `fine_grads`.

    Any other subtree shaped like the params (another transform's trace, AMSGrad's `nu_max`) gets
    zeros for its new entries. The result has the structure, shapes and dtypes of
    `opt.init(fine_params)`.
    """
    _check_embeds(coarse_params, fine_params, "params")
    if fine_grads is not None:
        _check_embeds(fine_params, fine_grads, "fine_grads")
    return _carry_state(coarse_opt_state, coarse_params, fine_params, fine_grads, b1=b1, b2=b2)


@functools.partial(jax.jit, static_argnames=("b1", "b2"))
def _carry_state(
    coarse_opt_state: PyTree,
    coarse_params: PyTree,
    fine_params: PyTree,
    fine_grads: PyTree | None,
    *,
    b1: float,
    b2: float,
) -> PyTree:
    coarse_def = jax.tree_util.tree_structure(coarse_params)

    def zeros_fill(coarse: PyTree) -> PyTree:
        return jax.tree_util.tree_map(
            lambda c, f: _embed_with_fill(c, jnp.zeros(f.shape, c.dtype)), coarse, fine_params
        )

    def seeded_nu(mu: PyTree, nu: PyTree, count: jax.Array) -> PyTree:
        if fine_grads is None:
            return jax.tree_util.tree_map(
                lambda c, f: _embed_with_fill(c, jnp.full(f.shape, jnp.mean(c), c.dtype)),
                nu,
                fine_params,
            )

        def leaf(m: jax.Array, v: jax.Array, g: jax.Array) -> jax.Array:
            bias = 1.0 - jnp.power(jnp.asarray(b2, v.dtype), jnp.asarray(count, v.dtype))
            rho = _typical_step_ratio(m, v, count, b1, b2)
            return _embed_with_fill(v, bias * jnp.square(g.astype(v.dtype)) / jnp.square(rho))

        return jax.tree_util.tree_map(leaf, mu, nu, fine_grads)

    def carry(node: Any) -> Any:
        if _is_adam_state(node, coarse_def):
            others = {
                name: zeros_fill(value)
                for name, value in zip(node._fields, node)
                if name not in ("mu", "nu") and jax.tree_util.tree_structure(value) == coarse_def
            }
            mu, nu = zeros_fill(node.mu), seeded_nu(node.mu, node.nu, node.count)
            return node._replace(mu=mu, nu=nu, **others)
        if jax.tree_util.tree_structure(node) == coarse_def:
            return zeros_fill(node)
        return node  # a leaf outside any params-shaped subtree (a count, a hyperparameter)

    def is_params_like(node: Any) -> bool:
        return _is_adam_state(node, coarse_def) or (
            not isinstance(node, (jax.Array, np.ndarray))
            and jax.tree_util.tree_structure(node) == coarse_def
        )

    return jax.tree_util.tree_map(carry, coarse_opt_state, is_leaf=is_params_like)


__all__: Sequence[str] = ["level_widths", "prolongate", "prolongate_adam_state"]
