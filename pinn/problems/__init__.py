"""PDE problems: `make_problem(name, **coefficients) -> Problem` (see docs/architecture.md)."""

from __future__ import annotations

from typing import Any

from pinn.problems.allen_cahn import AllenCahn1D, AllenCahn2D
from pinn.problems.base import Bound, Domain, Problem
from pinn.problems.burgers import Burgers1D

PROBLEMS: dict[str, type[Problem]] = {
    cls.name: cls for cls in (AllenCahn1D, AllenCahn2D, Burgers1D)
}


def make_problem(name: str, **coefficients: Any) -> Problem:
    """Instantiate problem `name` with PDE `coefficients` (unset ones keep their defaults).

    Raises `ValueError` naming an unknown problem or coefficient and listing the allowed ones, or a
    coefficient outside the problem's `coefficient_bounds`.
    """
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}: must be one of {sorted(PROBLEMS)}")
    cls = PROBLEMS[name]
    allowed = cls.coefficient_names()
    unknown = sorted(set(coefficients) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown coefficient(s) {unknown} for problem {name!r}: allowed {list(allowed)}"
        )
    errors = cls.coefficient_errors(coefficients)
    if errors:
        name_, rule = next(iter(errors.items()))
        raise ValueError(f"coefficient {name_} = {coefficients[name_]!r} of {name!r}: {rule}")
    return cls(**{k: float(v) for k, v in coefficients.items()})


__all__ = [
    "PROBLEMS",
    "make_problem",
    "Problem",
    "Bound",
    "Domain",
    "AllenCahn1D",
    "AllenCahn2D",
    "Burgers1D",
]
