"""Flax NNX networks for PINNs. Modules are small and know nothing of training.

`PINN` maps points `z (N, d)` (the problem's input columns) to `u (N,)`, or to `(N, k)` for a
problem with `k` fields (one output per field, in the problem's `fields` order):

1. input embedding — a periodic column x with period P enters *exactly* as
   `cos(2πx/P), sin(2πx/P)` so the network is periodic by construction (Dong & Ni 2021);
   every other column is mapped affinely from its domain interval onto [-1, 1];
2. optional random Fourier features `[cos(B e), sin(B e)]`, `B ~ N(0, σ²)` fixed, not trained
   (Tancik et al. 2020; Wang, Wang & Perdikaris 2021);
3. `depth` hidden `Dense` layers of `width` units with activation, each optionally with random
   weight factorization `W = diag(exp(s)) V` acting on output units (Wang et al. 2022, "Random
   weight factorization"), `s ~ N(μ, σ)`, `V = W₀ / exp(s)`;
4. a linear output layer of one unit per field (also factorized when RWF is on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "sin": jnp.sin,
    "gelu": jax.nn.gelu,
    "swish": jax.nn.swish,
    "softplus": jax.nn.softplus,
}


@dataclass(frozen=True)
class Embedding:
    """Static description of the input embedding (hashable; not a parameter)."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    periodic: tuple[bool, ...]

    @property
    def out_features(self) -> int:
        return sum(2 if p else 1 for p in self.periodic)

    def __call__(self, z: jax.Array) -> jax.Array:
        cols = []
        for i, (lo, hi, per) in enumerate(zip(self.lower, self.upper, self.periodic)):
            zi = z[:, i]
            if per:
                omega = 2.0 * jnp.pi / (hi - lo)
                cols += [jnp.cos(omega * zi), jnp.sin(omega * zi)]
            else:
                cols.append(2.0 * (zi - lo) / (hi - lo) - 1.0)
        return jnp.stack(cols, axis=-1)


class FactorizedDense(nnx.Module):
    """Dense layer `y = x (V * exp(s)) + b`; with `rwf=None` plain `y = x W + b` (s absent).

    Glorot-normal `W₀`; with RWF, `s ~ N(mean, std)` per output unit and `V = W₀ / exp(s)`,
    so at initialization both parametrizations compute the same function.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rwf: tuple[float, float] | None,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        w0 = jax.nn.initializers.glorot_normal()(rngs.params(), (in_features, out_features), dtype)
        if rwf is None:
            self.kernel = nnx.Param(w0)
            self.scale = None
        else:
            mean, std = rwf
            s = mean + std * jax.random.normal(rngs.params(), (out_features,), dtype)
            self.scale = nnx.Param(s)
            self.kernel = nnx.Param(w0 / jnp.exp(s))
        self.bias = nnx.Param(jnp.zeros((out_features,), dtype))

    def weight(self) -> jax.Array:
        if self.scale is None:
            return self.kernel[...]
        return self.kernel[...] * jnp.exp(self.scale[...])

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.weight() + self.bias[...]


class PINN(nnx.Module):
    """MLP with exact periodic embedding, optional Fourier features and RWF. `(N, d) -> (N,)`,
    or `(N, d) -> (N, out_features)` for `out_features > 1` (a system of fields)."""

    def __init__(
        self,
        embedding: Embedding,
        *,
        width: int,
        depth: int,
        activation: str = "tanh",
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        rwf: tuple[float, float] | None = None,
        dtype: jnp.dtype = jnp.float32,
        out_features: int = 1,
        hard_initial: tuple[tuple[int, Callable[[jax.Array], jax.Array] | None], ...] = (),
        time_axis: int = 0,
        t0: float = 0.0,
        coefficients: tuple[float, ...] = (),
        rngs: nnx.Rngs,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: must be one of {sorted(ACTIVATIONS)}")
        self.embedding = embedding
        self.activation = activation
        self.width = width
        self.out_features = out_features
        features = embedding.out_features
        if fourier_features > 0:
            b = fourier_scale * jax.random.normal(rngs.params(), (features, fourier_features), dtype)
            self.fourier = nnx.Variable(b)  # fixed: not an nnx.Param, so never trained
            features = 2 * fourier_features
        else:
            self.fourier = None
        sizes = [features] + [width] * depth
        self.hidden = nnx.List(
            [
                FactorizedDense(a, b, rwf=rwf, dtype=dtype, rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:])
            ]
        )
        self.output = FactorizedDense(width, out_features, rwf=rwf, dtype=dtype, rngs=rngs)
        # the hard initial condition: (output column, u0 of the points z (N, d) -> (N,) or None
        # for zero), imposed as u0(t0, x) + (t - t0) N(z) on the column (static, not a Param)
        self.hard_initial = tuple(hard_initial)
        self.time_axis = time_axis
        self.t0 = t0
        # trainable PDE coefficients (inverse problems, `pinn.problems.trainable`): their raw
        # values `(n,)`, trained with the network but not used by it (the loss reads them); absent
        # when there are none, so the parameters of every other network are unchanged
        if coefficients:
            self.coefficients = nnx.Param(jnp.asarray(coefficients, dtype))

    def features(self, z: jax.Array) -> jax.Array:
        e = self.embedding(z)
        if self.fourier is not None:
            proj = e @ self.fourier[...]
            e = jnp.concatenate([jnp.cos(proj), jnp.sin(proj)], axis=-1)
        return e

    def __call__(self, z: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        h = self.features(z)
        for layer in self.hidden:
            h = act(layer(h))
        out = self.output(h)
        if self.hard_initial:
            out = self._impose_initial(z, out)
        return out[:, 0] if self.out_features == 1 else out

    def _impose_initial(self, z: jax.Array, out: jax.Array) -> jax.Array:
        """`u0(t0, x) + (t - t0) N(t, x)` on each hard-initial column of `out (N, k)`."""
        t = z[:, self.time_axis]
        z0 = z.at[:, self.time_axis].set(self.t0)
        for column, value in self.hard_initial:
            u0 = jnp.zeros_like(t) if value is None else value(z0).astype(out.dtype)
            out = out.at[:, column].set(u0 + (t - self.t0) * out[:, column])
        return out


def make_model(
    cfg,
    problem,
    *,
    seed: int,
    width: int | None = None,
    dtype: jnp.dtype = jnp.float32,
    coefficients: tuple[float, ...] = (),
) -> PINN:
    """Build the network of `cfg` (a `pinn.config.ModelConfig`) for `problem`.

    `width` overrides `cfg.width` (the multilevel cascade builds coarser levels this way).
    Periodic embedding is applied to the problem's periodic columns when `cfg.periodic_embedding`.
    The network has one output per field of the problem (`problem.fields`; one: `(N,)`). With
    `cfg.hard_initial_condition`, every initial value the problem states (`Initial`, order 0) is
    imposed exactly: `u = u0 + (t - t0) N` (`Problem.hard_initial_values`). `coefficients`: the
    raw initial values of trainable PDE coefficients (`TrainableCoefficients.raw_initial`), held
    as the extra parameter vector `coefficients` (none: no such parameter).
    """
    periodic = tuple(bool(p) and cfg.periodic_embedding for p in problem.periodic)
    embedding = Embedding(tuple(problem.lower), tuple(problem.upper), periodic)
    hard = problem.hard_initial_values() if cfg.hard_initial_condition else ()
    time_axis = problem.box.time_axis if hard else 0
    return PINN(
        embedding,
        width=cfg.width if width is None else width,
        depth=cfg.depth,
        activation=cfg.activation,
        fourier_features=cfg.fourier_features,
        fourier_scale=cfg.fourier_scale,
        rwf=(cfg.rwf_mean, cfg.rwf_std) if cfg.rwf else None,
        dtype=dtype,
        out_features=len(getattr(problem, "fields", ("u",))),
        hard_initial=hard,
        time_axis=time_axis,
        t0=float(problem.lower[time_axis]) if hard else 0.0,
        coefficients=tuple(coefficients),
        rngs=nnx.Rngs(seed),
    )


def split(model: PINN):
    """`(graphdef, params, rest)`: `params` are the trainable `nnx.Param` leaves."""
    return nnx.split(model, nnx.Param, ...)


def apply_fn(graphdef, rest):
    """Return the pure function `u(params, z) -> (N,)` (or `(N, k)`: k fields) of a split model."""

    def u(params, z: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params, rest)(z)

    return u


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def cast(tree, dtype: jnp.dtype):
    """Cast every floating leaf of a pytree to `dtype`."""
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


__all__: Sequence[str] = [
    "Embedding",
    "FactorizedDense",
    "PINN",
    "make_model",
    "split",
    "apply_fn",
    "count_params",
    "cast",
    "ACTIVATIONS",
]
