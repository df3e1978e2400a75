"""`Problem`: a PDE on a box, seen through *fields* `u: (N, d) -> (N,)` or `(N, k)`.

A problem class declares (ClassVars) its `box` (input names, bounds, periodic axes, the time axis
or None for a steady problem), its `fields` (network outputs), the `derivatives` its residuals
need by name (`"u_t"`, `"u_xxx"`, `"v_xy"`: `pinn.derivatives.named_derivatives`, forward mode),
the names of its `residuals`, and `coefficient_bounds`; it defines `residuals(d, z)` (named PDE
residuals from the derivatives), `conditions()` (initial, Dirichlet, Neumann, periodic,
observation data: each a soft-penalty loss term by name) and optionally `exact(z)` (an exact solution; the reference then
comes from it). PDE coefficients are the dataclass fields, so params set them and the instance
stays hashable (usable as a static argument of `jax.jit`).

A problem may live in the user's own file: `problem.target: path/to/file.py:Class`
(`pinn.problems.load_problem_class`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from pinn.derivatives import (Field, named_derivatives, nested_jvp, parse_derivative,
                              value_and_derivs)

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
class Box:
    """The domain: a box `[lower, upper]` over the input columns `names` (in column order).

    `periodic[i]`: column i is periodic with period `upper[i] - lower[i]`; `time`: the name of
    the time column (never periodic), or None for a steady problem."""

    names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    periodic: tuple[bool, ...] | None = None
    time: str | None = "t"

    def __post_init__(self) -> None:
        if self.periodic is None:
            object.__setattr__(self, "periodic", (False,) * len(self.names))

    @property
    def time_axis(self) -> int | None:
        return None if self.time is None else self.names.index(self.time)

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.names)) if i != self.time_axis)

    def axis(self, name: str | int) -> int:
        return name if isinstance(name, int) else self.names.index(name)


#: a condition's data: a function of the points on its face `z (N, d)` -> `(N,)` (None: zero)
Data = Callable[[jax.Array], jax.Array] | None
Side = Literal["lower", "upper", "both"]


@dataclass(frozen=True)
class Initial:
    """`∂^order field / ∂t^order (t0, x) = value(z)` on the initial face (order 0: the value,
    order 1: the time derivative, as for the wave equation). Soft penalty, loss term `term`."""

    value: Data = None
    field: str | None = None  # None: the problem's first field
    order: int = 0
    term: str = "ic"


@dataclass(frozen=True)
class Dirichlet:
    """`field = value(z)` on the face(s) `side` of input `axis`. Soft penalty, loss term `term`."""

    axis: str
    side: Side = "both"
    value: Data = None
    field: str | None = None  # None: the problem's first field
    term: str = "bc"


@dataclass(frozen=True)
class Neumann:
    """`∂field/∂axis = value(z)` on the face(s) `side` of input `axis` (the derivative along the
    axis, not the outward normal). Soft penalty, loss term `term`."""

    axis: str
    side: Side = "both"
    value: Data = None
    field: str | None = None  # None: the problem's first field
    term: str = "bc"


@dataclass(frozen=True)
class Periodic:
    """Each field and its derivative along `axis` equal on both faces of the (periodic) `axis`.
    Nothing to enforce when the network embeds the axis periodically (`exact_periodic`)."""

    axis: str
    term: str = "bc"


@dataclass(frozen=True)
class Observation:
    """Observed values of `field` at scattered points: the loss term `term` is the mean squared
    misfit `mean_i (field(z_i) - v_i)^2` over all the observation points, every step (they are
    data: never resampled). The points and values come from the problem
    (`Problem.observations`: `count` points uniform in the box drawn with `seed`, the exact
    solution there plus Gaussian noise of standard deviation `noise_std`, also drawn with `seed`)
    or, with `problem.observations.file` in params, from that file (the collocation stage stores
    them; `pinn.stages.collocation`)."""

    field: str | None = None  # None: the problem's first field
    term: str = "data"
    count: int = 1000
    noise_std: float = 0.0
    seed: int = 0


Condition = Initial | Dirichlet | Neumann | Periodic | Observation
#: one observation set: points `(N, d)` and observed values `(N,)`
ObservationData = tuple[jax.Array, jax.Array]


def observation_key(i: int, what: str) -> str:
    """The collocation file's array of observation set `i` (`observation_conditions()` order):
    `what` is "points" or "values" (written by the collocation stage, read by `pinn.loss`)."""
    return f"observation{i}_{what}"


@dataclass(frozen=True)
class Problem:
    """Base class of every PDE problem (see the module doc); subclasses set the ClassVars and
    define `residuals` (and usually `conditions`)."""

    name: ClassVar[str] = ""
    box: ClassVar[Box]
    fields: ClassVar[tuple[str, ...]] = ("u",)
    #: the derivatives `residuals` reads, by name (`pinn.derivatives.parse_derivative`)
    derivatives: ClassVar[tuple[str, ...]] = ()
    #: the names of the PDE residuals `residuals` returns (each its own loss term)
    residual_names: ClassVar[tuple[str, ...]] = ("pde",)
    #: the values each coefficient may take (the PDE, its residual and its reference solver are
    #: only defined or only computable there); checked by `make_problem` and by the params gate
    coefficient_bounds: ClassVar[dict[str, Bound]] = {}

    # --- what a problem defines -----------------------------------------------------------
    def residuals(self, d: Mapping[str, jax.Array], z: jax.Array) -> dict[str, jax.Array]:
        """Named PDE residuals `{name: (N,)}` (keys `residual_names`) from `d`: every field's
        value and every derivative of `derivatives`, by name, at `z (N, d)`."""
        raise NotImplementedError

    def conditions(self) -> tuple[Condition, ...]:
        """Initial and boundary conditions, in loss order (terms appear in first-use order)."""
        return ()

    def exact(self, z: jax.Array) -> jax.Array:
        """An exact solution at `z (N, d)` -> `(N,)` or `(N, k)`, when the problem has one."""
        raise NotImplementedError

    def observations(self, c: Observation) -> tuple["np.ndarray", "np.ndarray"]:
        """The data of the observation condition `c` when no file gives them: `c.count` points
        uniform in the box `(count, d)` and the exact solution's field `c.field` there plus
        N(0, noise_std^2) noise `(count,)`, float64; a NumPy generator seeded with `c.seed` draws
        the points, then the noise (so the points do not depend on `noise_std`)."""
        import numpy as np

        rng = np.random.default_rng(c.seed)
        lo, hi = np.asarray(self.lower, float), np.asarray(self.upper, float)
        z = lo + (hi - lo) * rng.random((c.count, len(lo)))
        with jax.enable_x64(True):
            exact = np.asarray(jax.jit(self.exact)(jnp.asarray(z, jnp.float64)), np.float64)
        k = self.fields.index(c.field or self.fields[0])
        clean = exact if exact.ndim == 1 else exact[:, k]
        return z, clean + c.noise_std * rng.standard_normal(c.count)

    def observation_conditions(self) -> tuple[Observation, ...]:
        """The `Observation` conditions of `conditions()`, in order (the order the observation
        data are given in: `condition_terms(..., observations=...)`)."""
        return tuple(c for c in self.conditions() if isinstance(c, Observation))

    def reference(self, progress: bool = True) -> "Reference":
        """Reference solution with this problem's coefficients (`pinn.reference`); by default
        `exact`, every field, on a grid of the box or, where a grid is too big (e.g. more than
        three inputs), at 2^15 fixed Sobol' points (`pinn.reference.from_exact`)."""
        from pinn.reference import from_exact

        return from_exact(self)

    # --- geometry -------------------------------------------------------------------------
    @property
    def input_names(self) -> tuple[str, ...]:
        return self.box.names

    @property
    def lower(self) -> tuple[float, ...]:
        return self.box.lower

    @property
    def upper(self) -> tuple[float, ...]:
        return self.box.upper

    @property
    def periodic(self) -> tuple[bool, ...]:
        return self.box.periodic

    @property
    def dim(self) -> int:
        return len(self.input_names)

    @property
    def steady(self) -> bool:
        return self.box.time is None

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        return self.box.spatial_axes

    @property
    def has_initial(self) -> bool:
        """Whether any condition is an `Initial` one (else no initial points are drawn: the
        collocation stage's `ic` set and the trainer's initial batch have no rows)."""
        return any(isinstance(c, Initial) for c in self.conditions())

    @property
    def domain(self) -> Domain:
        return Domain(jnp.asarray(self.lower), jnp.asarray(self.upper), tuple(self.periodic))

    @property
    def first(self) -> tuple[int, ...]:
        """Axes of the first derivatives `derivatives` names (any field), less those of `second`
        (a pure second derivative's pass yields the first one too)."""
        return tuple(dict.fromkeys(a[0] for a in self._parsed()
                                   if len(a) == 1 and a[0] not in self.second))

    @property
    def second(self) -> tuple[int, ...]:
        """Axes of the pure second derivatives `derivatives` names (any field)."""
        return tuple(dict.fromkeys(a[0] for a in self._parsed() if len(a) == 2 and a[0] == a[1]))

    def _parsed(self) -> list[tuple[int, ...]]:
        return [parse_derivative(n, self.fields, self.input_names)[1] for n in self.derivatives]

    @classmethod
    def check_declarations(cls) -> None:
        """Raises `ValueError` for fields that are not distinct names (a field named `u` must be
        the first: a reference stores the first field as `u`, the others by name) or a
        derivative name that is not `<field>_<inputs>` of this problem's fields and box (checked
        by the params gate, before any stage runs)."""
        fields = tuple(cls.fields)
        if (not fields or len(set(fields)) != len(fields)
                or not all(isinstance(f, str) and f.isidentifier() for f in fields)
                or "u" in fields[1:]):
            raise ValueError(f"{cls.__name__}: fields = {fields}: must be distinct identifiers, "
                             "at least one, and a field named 'u' must be the first (a reference "
                             "stores the first field as u, the others by name)")
        for n in cls.derivatives:
            parse_derivative(n, cls.fields, cls.box.names)

    def check_residuals(self) -> None:
        """Traces `residuals` abstractly (`jax.eval_shape`: no compute) on 4 points of a smooth
        stand-in field, once per problem class. Raises `ValueError` when a residual is not one
        value per point, shape `(N,)` — an `(N, 1)` residual would broadcast against the `(N,)`
        point weights into an `(N, N)` loss and train on a wrong objective without any error —
        when it reads a derivative that `derivatives` does not declare, or when it fails to
        trace at all. Run by the params gate (`pinn.config`), before any stage."""
        cls = type(self)
        if cls.__dict__.get("_residuals_checked"):
            return
        n, d, k = 4, len(self.input_names), len(self.fields)

        def stand_in(z):  # (n, d) -> (n,) or (n, k): smooth, every derivative defined
            s = jnp.sin(z @ jnp.linspace(1.0, 2.0, d, dtype=z.dtype))
            return s if k == 1 else jnp.stack([s * (i + 1.0) for i in range(k)], axis=-1)

        points = jax.ShapeDtypeStruct((n, d), jnp.float32)
        try:
            shapes = jax.eval_shape(lambda z: self.pde_residuals(stand_in, z), points)
        except KeyError as e:
            raise ValueError(f"residuals() reads d[{e.args[0]!r}], which derivatives = "
                             f"{tuple(self.derivatives)} does not declare (add it there)") from None
        except Exception as e:  # noqa: BLE001 — the user's code: any failure is one line
            raise ValueError(f"residuals() fails on {n} points: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
        for name, shape in shapes.items():
            if tuple(shape.shape) != (n,):
                raise ValueError(f"residuals()[{name!r}] has shape {tuple(shape.shape)} for {n} "
                                 f"points: each residual must be one value per point, shape (N,) "
                                 "(drop a trailing [:, None] or reshape(-1, 1))")
        cls._residuals_checked = True

    # --- coefficients ---------------------------------------------------------------------
    @property
    def coefficients(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def coefficient_names(cls) -> tuple[str, ...]:
        """The PDE coefficients (dataclass fields) that params may set."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def coefficient_errors(cls, coefficients: Mapping[str, Any]) -> dict[str, str]:
        """`{name: rule broken}` for every given coefficient outside its `coefficient_bounds`
        (a vector coefficient: every entry is checked)."""
        errors = {}
        for name, value in coefficients.items():
            bound = cls.coefficient_bounds.get(name)
            if bound is None:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                problem = bound.violation(float(v))
                if problem is not None:
                    errors[name] = problem
                    break
        return errors

    # --- the PDE through fields -----------------------------------------------------------
    def named_derivatives(self, u: Field, z: jax.Array, *, method: str | None = None
                          ) -> dict[str, jax.Array]:
        """Every field's value and every derivative of `derivatives` at `z (N, d)`."""
        return named_derivatives(u, z, self.derivatives, fields=self.fields,
                                 inputs=self.input_names, method=method)

    def pde_residuals(self, u: Field, z: jax.Array, *, method: str | None = None
                      ) -> dict[str, jax.Array]:
        """The named PDE residuals of field `u` at `z (N, d)`, each `(N,)` (forward mode)."""
        return self.residuals(self.named_derivatives(u, z, method=method), z)

    def residual(self, u: Field, z: jax.Array, *, method: str | None = None) -> jax.Array:
        """One residual per point `(N,)`: the PDE residual, or for several residuals the root of
        their sum of squares (what the adaptive samplers rank points by)."""
        r = self.pde_residuals(u, z, method=method)
        if len(r) == 1:
            return next(iter(r.values()))
        return jnp.sqrt(sum(jnp.square(v) for v in r.values()))

    def active_conditions(self, exact_periodic: bool, exact_initial: bool = False
                          ) -> tuple[Condition, ...]:
        """`conditions()` without those the network satisfies by construction (a periodic axis
        under the exact periodic embedding; an initial value under the hard initial condition,
        `hard_initial_values`)."""
        return tuple(c for c in self.conditions()
                     if not (isinstance(c, Periodic) and exact_periodic)
                     and not (exact_initial and isinstance(c, Initial) and c.order == 0))

    def hard_initial_values(self) -> tuple[tuple[int, Data], ...]:
        """`(field index, value)` of every initial condition on a value (`Initial`, order 0):
        what a network imposes exactly as `u(t, x) = value(t0, x) + (t - t0) N(t, x)` (Lagaris
        et al. 1998, IEEE TNN 9(5), eq. 11; the hard initial condition of Urbán et al. 2025)."""
        return tuple((self.fields.index(c.field or self.fields[0]), c.value)
                     for c in self.conditions() if isinstance(c, Initial) and c.order == 0)

    def condition_residual(self, c: Condition, u: Field, ic_x: jax.Array, bc_z: jax.Array,
                           data: ObservationData | None = None) -> jax.Array:
        """The mismatch of condition `c` `(M,)`. Initial conditions use the spatial points
        `ic_x (N, d-1)` (the time column inserted at the initial time); boundary conditions the
        interior points `bc_z (N, d)` with the condition's column moved onto its face(s), lower
        face first; an observation its `data`, points `(M, d)` and values `(M,)`: field − value."""
        k = self.fields.index(getattr(c, "field", None) or self.fields[0])

        def col(a: jax.Array) -> jax.Array:
            return a if a.ndim == 1 else a[:, k]

        def value(z: jax.Array) -> jax.Array:
            return jnp.zeros(z.shape[0], z.dtype) if c.value is None else c.value(z)

        if isinstance(c, Observation):
            if data is None:
                raise ValueError(f"{type(self).__name__}: an Observation condition (term "
                                 f"{c.term!r}) was given no observation data")
            points, values = data
            return col(u(points)) - values
        if isinstance(c, Initial):
            t = self.box.time_axis
            t0 = jnp.full((ic_x.shape[0], 1), self.lower[t], dtype=ic_x.dtype)
            z = jnp.concatenate([ic_x[:, :t], t0, ic_x[:, t:]], axis=1)
            got = u(z) if c.order == 0 else nested_jvp(u, z, (t,) * c.order)
            return col(got) - value(z)
        i = self.box.axis(c.axis)
        faces = [bc_z.at[:, i].set(self.lower[i]), bc_z.at[:, i].set(self.upper[i])]
        if isinstance(c, Periodic):
            lo, hi = (value_and_derivs(u, z, first=(i,)) for z in faces)
            if len(self.fields) == 1:
                return jnp.concatenate([col(lo.u) - col(hi.u), col(lo.first[i]) - col(hi.first[i])])
            return jnp.concatenate([(lo.u - hi.u).T.ravel(), (lo.first[i] - hi.first[i]).T.ravel()])
        sides = {"lower": faces[:1], "upper": faces[1:], "both": faces}[c.side]
        if isinstance(c, Dirichlet):
            return jnp.concatenate([col(u(z)) - value(z) for z in sides])
        return jnp.concatenate([col(nested_jvp(u, z, (i,))) - value(z) for z in sides])

    def condition_terms(self, u: Field, ic_x: jax.Array, bc_z: jax.Array, *,
                        exact_periodic: bool, exact_initial: bool = False,
                        observations: tuple[ObservationData, ...] = ()) -> dict[str, jax.Array]:
        """`{term: (M,)}`: the mismatches of the active conditions, concatenated per term;
        `observations`: the data of the `Observation` conditions, one `(points (N, d), values
        (N,))` pair each, in `observation_conditions()` order."""
        parts: dict[str, list[jax.Array]] = {}
        data = iter(observations)
        for c in self.active_conditions(exact_periodic, exact_initial):
            obs = next(data, None) if isinstance(c, Observation) else None
            parts.setdefault(c.term, []).append(self.condition_residual(c, u, ic_x, bc_z, obs))
        return {t: jnp.concatenate(p) for t, p in parts.items()}

    # --- the original interface, kept for callers that know only it -------------------------
    def ic_residual(self, u: Field, x: jax.Array) -> jax.Array:
        """Initial-condition mismatches for spatial points `x (N, d-1)`, concatenated."""
        return jnp.concatenate([self.condition_residual(c, u, x, x) for c in self.conditions()
                                if isinstance(c, Initial)])

    def boundary_residual(
        self, u: Field, z: jax.Array, *, exact_periodic: bool
    ) -> jax.Array | None:
        """Boundary mismatches at `z (N, d)` (every active non-initial condition, in order),
        concatenated `(M,)`; `None` when nothing is enforced (a static decision)."""
        parts = [self.condition_residual(c, u, z, z) for c in self.active_conditions(exact_periodic)
                 if not isinstance(c, (Initial, Observation))]
        return jnp.concatenate(parts) if parts else None

    def term_names(self, exact_periodic: bool, exact_initial: bool = False) -> tuple[str, ...]:
        """The loss terms, in order: the PDE residuals, then the active conditions' terms."""
        terms = dict.fromkeys(self.residual_names)
        terms.update(dict.fromkeys(
            c.term for c in self.active_conditions(exact_periodic, exact_initial)))
        return tuple(terms)


__all__ = ["Bound", "Box", "Condition", "Dirichlet", "Domain", "Initial", "Neumann", "Observation",
           "observation_key",
           "ObservationData", "Periodic", "Problem"]
