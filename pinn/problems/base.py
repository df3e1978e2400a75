"""`Problem`: a time-dependent PDE on a box, seen through *fields* `u: (N, d) -> (N,)`.

Columns of points `z (N, d)` follow `input_names`, time first. Geometry (`name`, `input_names`,
`lower`, `upper`, `periodic`) is fixed per class; PDE coefficients are the dataclass fields, so
`make_problem(name, **coefficients)` / params set them and the instance stays hashable (usable as
a static argument of `jax.jit`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from pinn.derivatives import Derivs, Field, value_and_derivs

if TYPE_CHECKING:  # pragma: no cover
    from pinn.reference import Reference


@dataclass(frozen=True)
class Bound:
    """The allowed values of one PDE coefficient: `gt < value`, `ge <= value`, `value <= le`
    (None: no such bound); `why` says what breaks outside (shown in the error)."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    why: str = ""

    def violation(self, value: float) -> str | None:
        """None when `value` is allowed, else the rule it breaks, e.g. "must be > 0 (...)"."""
        broken = None
        if not math.isfinite(value):
            broken = "must be a finite number"
        elif self.gt is not None and not value > self.gt:
            broken = f"must be > {self.gt:g}"
        elif self.ge is not None and not value >= self.ge:
            broken = f"must be >= {self.ge:g}"
        elif self.le is not None and not value <= self.le:
            broken = f"must be <= {self.le:g}"
        if broken is None:
            return None
        return f"{broken} ({self.why})" if self.why else broken


class Domain(NamedTuple):
    """Box `[lower, upper]` (arrays `(d,)`) and per-column periodicity, for samplers."""

    lower: jax.Array
    upper: jax.Array
    periodic: tuple[bool, ...]


@dataclass(frozen=True)
class Problem:
    """Base class. Subclasses set the ClassVars, `first`/`second` and the PDE methods."""

    name: ClassVar[str]
    input_names: ClassVar[tuple[str, ...]]
    lower: ClassVar[tuple[float, ...]]
    upper: ClassVar[tuple[float, ...]]
    periodic: ClassVar[tuple[bool, ...]]
    #: axes whose first / pure second derivatives `residual_from_derivs` needs
    first: ClassVar[tuple[int, ...]] = ()
    second: ClassVar[tuple[int, ...]] = ()
    #: the values each coefficient may take (the PDE, its residual and its reference solver are
    #: only defined or only computable there); checked by `make_problem` and by the params gate
    coefficient_bounds: ClassVar[dict[str, Bound]] = {}

    # --- geometry -------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return len(self.input_names)

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        return tuple(range(1, self.dim))

    @property
    def domain(self) -> Domain:
        return Domain(jnp.asarray(self.lower), jnp.asarray(self.upper), tuple(self.periodic))

    @property
    def coefficients(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def coefficient_names(cls) -> tuple[str, ...]:
        """The PDE coefficients (dataclass fields) that params may set."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def coefficient_errors(cls, coefficients: Mapping[str, float]) -> dict[str, str]:
        """`{name: rule broken}` for every given coefficient outside its `coefficient_bounds`."""
        errors = {}
        for name, value in coefficients.items():
            bound = cls.coefficient_bounds.get(name)
            problem = bound.violation(float(value)) if bound is not None else None
            if problem is not None:
                errors[name] = problem
        return errors

    # --- PDE ------------------------------------------------------------------------------
    def initial_condition(self, x: jax.Array) -> jax.Array:
        """`u(t=lower[0], x)` for spatial points `x (N, d-1)` -> `(N,)`."""
        raise NotImplementedError

    def residual_from_derivs(self, d: Derivs, z: jax.Array) -> jax.Array:
        """PDE residual from precomputed derivatives (`first`, `second` axes) -> `(N,)`."""
        raise NotImplementedError

    def residual(self, u: Field, z: jax.Array, *, method: str | None = None) -> jax.Array:
        """PDE residual of field `u` at `z (N, d)` -> `(N,)` (forward mode, no Hessian)."""
        d = value_and_derivs(u, z, self.first, self.second, method=method)
        return self.residual_from_derivs(d, z)

    def ic_residual(self, u: Field, x: jax.Array) -> jax.Array:
        """`u(t0, x) - initial_condition(x)` for spatial points `x (N, d-1)` -> `(N,)`."""
        t0 = jnp.full((x.shape[0], 1), self.lower[0], dtype=x.dtype)
        return u(jnp.concatenate([t0, x], axis=1)) - self.initial_condition(x)

    def boundary_residual(
        self, u: Field, z: jax.Array, *, exact_periodic: bool
    ) -> jax.Array | None:
        """Boundary mismatch at `z (N, d)` with spatial coordinates moved to the boundary.

        For each spatial axis in order: periodic axes give `u(lo) - u(hi)` and
        `u_i(lo) - u_i(hi)` (skipped when `exact_periodic`); non-periodic axes give the Dirichlet
        mismatch `u(lo) - g_lo`, `u(hi) - g_hi` (see `dirichlet`). Concatenated, `(M,)`; `None`
        when nothing is enforced (a static decision).
        """
        parts: list[jax.Array] = []
        for i in self.spatial_axes:
            lo = z.at[:, i].set(self.lower[i])
            hi = z.at[:, i].set(self.upper[i])
            if self.periodic[i]:
                if exact_periodic:
                    continue
                d_lo = value_and_derivs(u, lo, first=(i,))
                d_hi = value_and_derivs(u, hi, first=(i,))
                parts += [d_lo.u - d_hi.u, d_lo.first[i] - d_hi.first[i]]
            else:
                parts += [u(lo) - self.dirichlet(lo, i, 0), u(hi) - self.dirichlet(hi, i, 1)]
        return jnp.concatenate(parts) if parts else None

    def dirichlet(self, z: jax.Array, axis: int, side: int) -> jax.Array:
        """Dirichlet data on face `side` (0 = lower, 1 = upper) of `axis` at `z` -> `(N,)`."""
        return jnp.zeros(z.shape[0], dtype=z.dtype)

    def reference(self, progress: bool = True) -> "Reference":
        """Certified reference solution with this problem's coefficients (`pinn.reference`)."""
        raise NotImplementedError


__all__ = ["Bound", "Domain", "Problem"]
