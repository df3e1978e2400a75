"""Trainable scalar PDE coefficients (inverse problems): `problem.trainable: {nu: 0.05}`.

The listed coefficients (dataclass fields of the problem, scalars) become trainable parameters
starting from the given initial guess. They live in the network as one extra `nnx.Param`, the
vector `coefficients` of their *raw* values (`pinn.models.PINN`), so every phase that trains the
network's parameters trains them too, with nothing of its own: the Adam phase, every cascade
level (the level transfer copies the vector, `pinn.multilevel.prolongate`, and carries its Adam
moments), the float64 quasi-Newton refinement (its flat parameter vector), and the exports and
checkpoints (resume and evaluation read them back). The loss sees the current values through a
copy of the problem with those fields replaced by traced values (`TrainableCoefficients.apply`),
so `residuals(d, z)` reads `self.<name>` as before.

Positivity and bounds: a coefficient's `Problem.coefficient_bounds` entry chooses the
parametrisation of its raw value `r` (the value stays inside the bound for any `r`):

- a lower bound `a` only (`gt` or `ge`):     value = a + exp(r)         (a viscosity: log ν)
- an upper bound `b` only (`le`):            value = b - exp(r)
- both:                                      value = a + (b - a) sigmoid(r)
- none:                                      value = r

Optimising log ν rather than ν also makes Adam's step relative (a step of lr in r changes ν by a
factor e^lr), which suits coefficients whose scale is unknown (ν = 0.01/π ≈ 3.2e-3 from a guess of
0.05). The problem's own value of the coefficient (params `problem.coefficients` or the class
default) is the *true* value: it is reported with the relative error of the recovered one when
the observations are generated from the problem's solution (no `problem.observations.file`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

#: the key of the raw coefficient vector in the network's parameters (`pinn.models.PINN`)
PARAM_KEY = "coefficients"


@dataclass(frozen=True)
class TrainableCoefficients:
    """The trainable coefficients of a problem (hashable, static): `names` in params order, the
    user's `initial` guesses and each one's `lower`/`upper` bound (None: none) that fixes its
    parametrisation (module doc)."""

    names: tuple[str, ...]
    initial: tuple[float, ...]
    lower: tuple[float | None, ...]
    upper: tuple[float | None, ...]

    def raw_initial(self) -> tuple[float, ...]:
        """The raw values `(n,)` at which training starts (the inverse of `values`)."""
        out = []
        for v, a, b in zip(self.initial, self.lower, self.upper):
            if a is not None and b is not None:
                p = (v - a) / (b - a)
                out.append(math.log(p / (1.0 - p)))
            elif a is not None:
                out.append(math.log(v - a))
            elif b is not None:
                out.append(math.log(b - v))
            else:
                out.append(float(v))
        return tuple(out)

    def values(self, raw: jax.Array) -> dict[str, jax.Array]:
        """`{name: value ()}` from the raw vector `raw (n,)` (module doc's parametrisation)."""
        out = {}
        for i, (name, a, b) in enumerate(zip(self.names, self.lower, self.upper)):
            r = raw[i]
            if a is not None and b is not None:
                out[name] = a + (b - a) * jax.nn.sigmoid(r)
            elif a is not None:
                out[name] = a + jnp.exp(r)
            elif b is not None:
                out[name] = b - jnp.exp(r)
            else:
                out[name] = r
        return out

    def apply(self, problem, params):
        """`problem` with its trainable coefficients replaced by their current (traced) values
        read from the network's `params` (the result is not hashable while traced: use it inside
        the loss, never as a static argument)."""
        return dataclasses.replace(problem, **self.values(raw_of(params)))

    def report(self, params, problem, *, known: bool) -> dict[str, float]:
        """`{coef_<name>: recovered value}` and, when the true value is `known`,
        `coef_<name>_true` and `coef_<name>_rel_error = |recovered − true| / |true|`."""
        out: dict[str, float] = {}
        for name, value in self.values(jnp.asarray(raw_of(params))).items():
            got = float(np.asarray(value))
            out[f"coef_{name}"] = got
            if known:
                true = float(getattr(problem, name))
                out[f"coef_{name}_true"] = true
                out[f"coef_{name}_rel_error"] = (abs(got - true) / abs(true) if true != 0
                                                 else abs(got - true))
        return out


def raw_of(params) -> jax.Array:
    """The raw coefficient vector `(n,)` in the network's parameters (an `nnx.State`, or the
    plain nested dict an export holds)."""
    from flax import nnx

    leaf = params[PARAM_KEY]
    return leaf[...] if isinstance(leaf, nnx.Variable) else leaf


def trainable_coefficients(trainable: Mapping[str, float], problem) -> TrainableCoefficients | None:
    """The `TrainableCoefficients` of params `problem.trainable` (`{name: initial guess}`) for
    `problem` (its `coefficient_bounds`); None when nothing is trainable. Validation (names,
    scalars, initial values strictly inside the bounds) is `pinn.config`'s."""
    if not trainable:
        return None
    bounds = type(problem).coefficient_bounds
    lower, upper = [], []
    for name in trainable:
        b = bounds.get(name)
        a = None if b is None else (b.gt if b.gt is not None else b.ge)
        lower.append(None if a is None else float(a))
        upper.append(None if b is None or b.le is None else float(b.le))
    return TrainableCoefficients(tuple(trainable), tuple(float(v) for v in trainable.values()),
                                 tuple(lower), tuple(upper))


def initial_errors(trainable: Mapping[str, Any], problem_class) -> list[str]:
    """One line per bad entry of params `problem.trainable` (`{name: initial}`), each starting
    `trainable.<name> = <value>: `: not a scalar coefficient of the problem, not a number, or an
    initial value not strictly inside the coefficient's bound (the parametrisation needs the
    open interval: `log(value - lower)` is -inf on the bound)."""
    allowed = problem_class.coefficient_names()
    defaults = {f.name: f.default for f in dataclasses.fields(problem_class)}
    lines = []
    for name, value in trainable.items():
        head = f"trainable.{name} = {value!r}"
        if name not in allowed:
            lines.append(f"{head}: not a coefficient of {problem_class.__name__} "
                         f"(allowed: {', '.join(allowed)})")
            continue
        if isinstance(defaults.get(name), (list, tuple)):
            lines.append(f"{head}: only a scalar coefficient can be trainable")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            lines.append(f"{head}: must be a number (the initial guess)")
            continue
        b = problem_class.coefficient_bounds.get(name)
        if b is None:
            if not math.isfinite(value):
                lines.append(f"{head}: must be a finite number")
            continue
        rule = b.violation(float(value))
        edge = next((e for e in (b.ge, b.le) if e is not None and float(value) == e), None)
        if rule is not None:
            lines.append(f"{head}: the initial guess {rule}")
        elif edge is not None:
            lines.append(f"{head}: the initial guess must be strictly inside the bound (not "
                         f"{edge:g}: the trained value is parametrised to stay inside it)")
    return lines


__all__ = ["PARAM_KEY", "TrainableCoefficients", "initial_errors", "raw_of",
           "trainable_coefficients"]
