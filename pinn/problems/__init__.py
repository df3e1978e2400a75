"""PDE problems: `make_problem(name_or_target, **coefficients) -> Problem` (docs/architecture.md).

A problem is a built-in (`allen_cahn_1d`, `allen_cahn_2d`, `burgers_1d`: aliases of the classes
below) or a class in the user's own file, named by a *target*: `path/to/file.py:Class` (a path
relative to the project root, where dvc.yaml is) or `package.module:Class`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from pinn.problems.allen_cahn import AllenCahn1D, AllenCahn2D
from pinn.problems.base import (Bound, Box, Condition, Dirichlet, Domain, Initial, Neumann,
                                Observation, Periodic, Problem)
from pinn.problems.burgers import Burgers1D

PROBLEMS: dict[str, type[Problem]] = {
    cls.name: cls for cls in (AllenCahn1D, AllenCahn2D, Burgers1D)
}
#: the directory of the built-in problems (their code dependency in dvc.yaml)
BUILTIN_DIR = Path(__file__).parent


def target_file(target: str) -> Path | None:
    """The source file a target names: `path.py` of `path.py:Class`, the module's file of
    `package.module:Class`; None for a built-in alias. Raises `ValueError` when there is none."""
    if target in PROBLEMS:
        return None
    module, sep, cls = target.rpartition(":")
    if not sep or not module or not cls.isidentifier():
        raise ValueError(f"{target!r}: must be a built-in problem ({', '.join(sorted(PROBLEMS))}) "
                         "or path/to/file.py:Class or package.module:Class")
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise ValueError(f"{target!r}: file {module} not found (relative to {Path.cwd()})")
        return path
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as e:
        raise ValueError(f"{target!r}: cannot find module {module} ({e})") from None
    if spec is None or spec.origin is None:
        raise ValueError(f"{target!r}: cannot find module {module}")
    return Path(spec.origin)


_LOADED: dict[tuple[str, str], Any] = {}


def load_problem_class(target: str) -> type[Problem]:
    """The `Problem` subclass a built-in alias or a target names (see the module doc). A file is
    executed once per content (an edited file is loaded again). Raises `ValueError` naming what
    is wrong (no such file, module or class; not a `Problem` subclass)."""
    if target in PROBLEMS:
        return PROBLEMS[target]
    path = target_file(target)
    module_name, _, cls_name = target.rpartition(":")
    if module_name.endswith(".py"):
        text = path.read_bytes()
        key = (str(path.resolve()), hashlib.sha256(text).hexdigest())
        if key not in _LOADED:
            name = f"pinn_user_problem_{key[1][:16]}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[name]
                raise ValueError(f"{target!r}: {path} fails to load "
                                 f"({type(e).__name__}: {e})") from None
            _LOADED[key] = module
        module = _LOADED[key]
    else:
        module = importlib.import_module(module_name)
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Problem)):
        raise ValueError(f"{target!r}: {cls_name} is not a pinn.problems.Problem subclass "
                         f"defined in {path}")
    return cls


def coefficient_value(value: Any) -> Any:
    """A coefficient as the problem stores it: a float, or a tuple of floats for a vector (so the
    problem stays hashable)."""
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else float(value)


def make_problem(name: str, **coefficients: Any) -> Problem:
    """Instantiate problem `name` (a built-in alias or a target) with PDE `coefficients` (unset
    ones keep their defaults).

    Raises `ValueError` naming an unknown problem or coefficient and listing the allowed ones (with
    the closest built-in name for a misspelt one), or a coefficient outside the problem's
    `coefficient_bounds`.
    """
    if name not in PROBLEMS and ":" not in name:
        close = difflib.get_close_matches(name, PROBLEMS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown problem {name!r}: must be one of {sorted(PROBLEMS)} "
                         f"or a target path/to/file.py:Class{hint}")
    cls = load_problem_class(name)
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
    return cls(**{k: coefficient_value(v) for k, v in coefficients.items()})


__all__ = [
    "PROBLEMS",
    "BUILTIN_DIR",
    "make_problem",
    "load_problem_class",
    "target_file",
    "Problem",
    "Bound",
    "Box",
    "Condition",
    "Dirichlet",
    "Domain",
    "Initial",
    "Neumann",
    "Observation",
    "Periodic",
    "AllenCahn1D",
    "AllenCahn2D",
    "Burgers1D",
]
