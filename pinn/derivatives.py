"""Forward-mode derivatives of a *field* `u: (N, d) -> (N,)` at points `z (N, d)`.

Networks are pointwise (row n of the output depends only on row n of the input), so a jvp with
the constant tangent `e_i` broadcast to all N rows gives the per-point directional derivative
`∂u/∂z_i` for the whole batch at once — no `vmap`, no Hessian.

Two interchangeable routes (`method=`):

- ``"jvp"`` — nested `jax.jvp`: the inner jvp gives `(u, u_i)`, the outer jvp of that gives
  `(u_i, u_ii)`, so one nested pass returns `u, u_i, u_ii` (XLA merges the duplicated `u_i`
  stream under `jit`).
- ``"jet"`` — Taylor mode (`jax.experimental.jet`) with input series `([e_i], [0])`: one call
  propagates the second-order Taylor polynomial and returns `u, [u_i, u_ii]`.

`value_and_derivs` stacks the directions of one derivative order on a vmapped leading axis, so
the primal is evaluated once and each layer's tangent streams are a single larger matmul.
`DEFAULT_METHOD` is the faster route on CPU (`benchmarks/derivatives.py`: nested jvp).

Derivatives by name (`named_derivatives`): `"u_t"`, `"u_xx"`, `"u_xxx"`, `"u_xy"`, `"v_y"`, ...
(field name, underscore, one input name per differentiation). Pure first and second orders take
the vmapped passes above; every other multi-index (mixed, third order and up) is one nested jvp
per derivative, innermost direction first — forward mode throughout, never a Hessian.
"""

from __future__ import annotations

from typing import Callable, Iterable, Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import jet as _jet

Field = Callable[[jax.Array], jax.Array]
Method = Literal["jvp", "jet"]
METHODS: tuple[str, ...] = ("jvp", "jet")
DEFAULT_METHOD: Method = "jvp"


class Derivs(NamedTuple):
    """`u (N,)`, `first[i] = ∂u/∂z_i (N,)`, `second[i] = ∂²u/∂z_i² (N,)` (pure, no mixed terms)."""

    u: jax.Array
    first: dict[int, jax.Array]
    second: dict[int, jax.Array]


def unit_tangent(z: jax.Array, i: int) -> jax.Array:
    """The constant tangent `e_i` broadcast to every point: shape and dtype of `z`."""
    return jnp.broadcast_to(jax.nn.one_hot(i, z.shape[-1], dtype=z.dtype), z.shape)


def _order1(u: Field, z: jax.Array, e: jax.Array, method: str) -> tuple[jax.Array, jax.Array]:
    if method == "jet":
        u0, (u1,) = _jet.jet(u, (z,), ((e,),))
        return u0, u1
    return jax.jvp(u, (z,), (e,))


def _order2(
    u: Field, z: jax.Array, e: jax.Array, method: str
) -> tuple[jax.Array, jax.Array, jax.Array]:
    if method == "jet":
        u0, (u1, u2) = _jet.jet(u, (z,), ((e, jnp.zeros_like(e)),))
        return u0, u1, u2
    (u0, u1), (_, u2) = jax.jvp(lambda w: jax.jvp(u, (w,), (e,)), (z,), (e,))
    return u0, u1, u2


def _check_method(method: str | None) -> str:
    method = DEFAULT_METHOD if method is None else method
    if method not in METHODS:
        raise ValueError(f"derivative method {method!r}: must be one of {list(METHODS)}")
    return method


def value_and_derivs(
    u: Field,
    z: jax.Array,
    first: Iterable[int] = (),
    second: Iterable[int] = (),
    *,
    method: str | None = None,
) -> Derivs:
    """`u(z)` with first derivatives along `first` and pure second derivatives along `second`.

    Every axis in `second` also yields its first derivative (it comes free with the nested pass).
    One second-order pass over the `second` axes and one first-order pass over the remaining
    `first` axes (directions vmapped, primal shared); with no axes at all this is just `u(z)`.
    """
    method = _check_method(method)
    second = tuple(dict.fromkeys(int(i) for i in second))
    first = tuple(i for i in dict.fromkeys(int(i) for i in first) if i not in second)
    d1: dict[int, jax.Array] = {}
    d2: dict[int, jax.Array] = {}
    value = None
    # One vmapped pass per derivative order: the tangent directions are stacked on a leading
    # axis while the primal stays unbatched (computed once), and each layer's tangent streams
    # become one larger matmul instead of one per direction.
    # A single direction skips the vmap: a batch axis of size 1 costs ~30% on CPU (measured,
    # 4x256 MLP, 4096 points).
    if len(second) == 1:
        value, d1[second[0]], d2[second[0]] = _order2(u, z, unit_tangent(z, second[0]), method)
    elif second:
        e2 = jnp.stack([unit_tangent(z, i) for i in second])
        value, u1, u2 = jax.vmap(
            lambda e: _order2(u, z, e, method), out_axes=(None, 0, 0)
        )(e2)
        for k, i in enumerate(second):
            d1[i], d2[i] = u1[k], u2[k]
    if len(first) == 1:
        value, d1[first[0]] = _order1(u, z, unit_tangent(z, first[0]), method)
    elif first:
        e1 = jnp.stack([unit_tangent(z, i) for i in first])
        value, v1 = jax.vmap(lambda e: _order1(u, z, e, method), out_axes=(None, 0))(e1)
        for k, i in enumerate(first):
            d1[i] = v1[k]
    if value is None:
        value = u(z)
    return Derivs(value, d1, d2)


def d1(u: Field, z: jax.Array, i: int, *, method: str | None = None) -> jax.Array:
    """`∂u/∂z_i (N,)`."""
    return _order1(u, z, unit_tangent(z, i), _check_method(method))[1]


def d2(u: Field, z: jax.Array, i: int, *, method: str | None = None) -> jax.Array:
    """`∂²u/∂z_i² (N,)`."""
    return _order2(u, z, unit_tangent(z, i), _check_method(method))[2]


def laplacian(
    u: Field, z: jax.Array, axes: Iterable[int], *, method: str | None = None
) -> jax.Array:
    """`Σ_i ∂²u/∂z_i²` over `axes` (e.g. the spatial columns), `(N,)`."""
    d = value_and_derivs(u, z, second=axes, method=method)
    return sum(d.second.values(), jnp.zeros_like(d.u))


def parse_derivative(
    name: str, fields: Sequence[str], inputs: Sequence[str]
) -> tuple[int, tuple[int, ...]]:
    """`"v_xy"` -> `(field index of v, (axis of x, axis of y))`, axes sorted (derivatives of smooth
    fields commute). Input names may have several characters (`x1`, `x2`): the suffix is split
    greedily, longest name first. Raises `ValueError` naming what is unknown."""
    field, sep, suffix = name.rpartition("_")
    if not sep or field not in fields or not suffix:
        raise ValueError(f"derivative {name!r}: must be <field>_<inputs> with a field of "
                         f"{list(fields)} and inputs of {list(inputs)}, e.g. {fields[0]}_{inputs[0]}")
    by_length = sorted(inputs, key=len, reverse=True)
    axes = []
    rest = suffix
    while rest:
        match = next((n for n in by_length if rest.startswith(n)), None)
        if match is None:
            raise ValueError(f"derivative {name!r}: {rest!r} does not start with an input name "
                             f"of {list(inputs)}")
        axes.append(list(inputs).index(match))
        rest = rest[len(match):]
    return list(fields).index(field), tuple(sorted(axes))


def nested_jvp(u: Field, z: jax.Array, axes: Sequence[int]) -> jax.Array:
    """`∂^n u / ∂z_{a1} … ∂z_{an}` at `z (N, d)` by `n` nested jvps (`axes = (a1, …, an)`),
    shape of `u(z)`. Forward mode only: the cost grows with the order, not with `d`."""
    f = u
    for a in axes:
        f = (lambda g, e: lambda w: jax.jvp(g, (w,), (e,))[1])(f, unit_tangent(z, a))
    return f(z)


def named_derivatives(
    u: Field,
    z: jax.Array,
    names: Iterable[str],
    *,
    fields: Sequence[str] = ("u",),
    inputs: Sequence[str],
    method: str | None = None,
) -> dict[str, jax.Array]:
    """The fields' values and the derivatives `names` (see `parse_derivative`) at `z (N, d)`.

    `u: (N, d) -> (N,)` for one field or `(N, k)` for `k = len(fields)` fields. Returns
    `{field: (N,), name: (N,)}` for every field and every requested name. Pure first and second
    derivatives come from `value_and_derivs` (one vmapped pass per order, shared by all fields);
    any other multi-index from `nested_jvp` (one per distinct multi-index, shared by all fields).
    """
    parsed = {n: parse_derivative(n, fields, inputs) for n in dict.fromkeys(names)}
    first = [axes[0] for _, axes in parsed.values() if len(axes) == 1]
    second = [axes[0] for _, axes in parsed.values() if len(axes) == 2 and axes[0] == axes[1]]
    base = value_and_derivs(u, z, first, second, method=method)
    other = {axes: None for _, axes in parsed.values()
             if len(axes) > 2 or (len(axes) == 2 and axes[0] != axes[1])}
    for axes in other:
        other[axes] = nested_jvp(u, z, axes)

    def column(a: jax.Array, k: int) -> jax.Array:
        return a if a.ndim == 1 else a[:, k]

    out = {f: column(base.u, k) for k, f in enumerate(fields)}
    for n, (k, axes) in parsed.items():
        if len(axes) == 1:
            out[n] = column(base.first[axes[0]], k)
        elif axes in other:
            out[n] = column(other[axes], k)
        else:
            out[n] = column(base.second[axes[0]], k)
    return out


__all__ = [
    "parse_derivative",
    "nested_jvp",
    "named_derivatives",
    "Derivs",
    "Field",
    "METHODS",
    "DEFAULT_METHOD",
    "unit_tangent",
    "value_and_derivs",
    "d1",
    "d2",
    "laplacian",
]
