"""The `Reference` container: a reference solution on a tensor grid or at scattered points, stored
as `.npz`.

File format (a plain, pickle-free `.npz`, readable with `numpy.load(path, allow_pickle=False)`):

- a grid: `t (Nt,)`, `x (Nx,)`, `y (Ny,)` (2D problems only) — float64 grid axes, and
  `u (Nt, Nx)` or `(Nt, Nx, Ny)` — float64 solution indexed `[t, x(, y)]`;
- or scattered points: `points (N, d)` — float64, columns named by `columns (d,)` (a string
  array: the problem's input names, in its column order), and `u (N,)`;
- `est_rel_error` — 0-d float64, the relative L2 error estimate: self-certified by a built-in
  solver; for a reference read from a file (`source`), the estimate the file states, or NaN when
  it states none (unknown: `est_rel_error` is then None in Python);
- `meta_<name>` — 0-d numeric arrays describing the solve (modes, dt, quadrature nodes, ...);
- `field_<name>` — further fields, each of `u`'s shape: a system's other fields (`u` is the
  problem's first field; evaluated with it) or a file's further arrays (stored);
- `source` — 0-d string, only for a reference read from a file (`pinn.reference.files`): that
  file's path. Such a reference is *not certified* here (no self-convergence check).

`save` is atomic (temporary file in the target directory, then `os.replace`) and byte-for-byte
deterministic (fixed zip timestamps, keys in sorted order): identical solves give identical files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pinn.io import save_npz

META_PREFIX = "meta_"
FIELD_PREFIX = "field_"
#: the string members of a reference file (everything else is numeric)
_STRINGS = ("columns", "source")


def rel_l2(a: np.ndarray, b: np.ndarray, *, zero_reference: float | None = None) -> float:
    """Relative L2 difference `||a - b||_2 / ||b||_2` over all entries, in float64 (`b` is the
    reference). Where `||b|| = 0`: `zero_reference` when given (evaluate: NaN, no relative error),
    else `0/0` is taken as 0 and `x/0` as inf. Raises `ValueError` when the shapes differ.

    The one relative L2 of the package: the reference solvers' self-check (`by_doubling`), the
    evaluation of a network against the reference (`pinn.evaluate`)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_l2: shape mismatch {a.shape} vs {b.shape}")
    num = float(np.linalg.norm((a - b).ravel()))
    den = float(np.linalg.norm(b.ravel()))
    if den == 0.0:
        if zero_reference is not None:
            return zero_reference
        return 0.0 if num == 0.0 else math.inf
    return num / den


def by_doubling(solve: Callable[[int], tuple[np.ndarray, Any]]) -> tuple[np.ndarray, Any, float]:
    """How every built-in reference solver certifies itself: `solve(1)` at the stated resolution,
    `solve(2)` at the doubled one (`solve(r)` scales its own resolution: `r·modes` and `dt/r`, or
    `r·nodes`), each returning `(u, extra)`. Returns the finer `u`, its `extra` (e.g. the number
    of steps taken) and `rel_l2(coarse, fine)`, the finer solution's estimated relative error
    (`est_rel_error`)."""
    coarse, _ = solve(1)
    fine, extra = solve(2)
    return fine, extra, rel_l2(coarse, fine)


def _as_axis(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _check_scattered(ref: "Reference") -> None:
    set_ = object.__setattr__
    if ref.t is not None or ref.x is not None or ref.y is not None:
        raise ValueError("scattered points: t, x and y must be None (the columns are `columns`)")
    points = np.asarray(ref.scattered, dtype=np.float64)
    columns = tuple(str(c) for c in ref.columns)
    if points.ndim != 2 or points.shape[0] == 0 or points.shape[1] != len(columns):
        raise ValueError(f"points must have shape (N > 0, {len(columns)}) for columns "
                         f"{columns}, got {points.shape}")
    if len(set(columns)) != len(columns) or not all(columns):
        raise ValueError(f"columns must be distinct non-empty names, got {columns}")
    if not np.all(np.isfinite(points)):
        raise ValueError("points contains non-finite values")
    set_(ref, "scattered", points)
    set_(ref, "columns", columns)


@dataclass(frozen=True, eq=False)
class Reference:
    """Reference solution `u[t, x(, y)]` on the tensor grid `t × x (× y)` (float64), or `u (N,)`
    at scattered points `scattered (N, d)` whose columns are named `columns` (then `t`, `x`, `y`
    are None; build it with `Reference.at_points`).

    `est_rel_error` is the relative L2 difference (over the whole grid) between this solution and
    an independent solve at half the resolution; `meta` maps str -> number (solver settings).
    A reference read from a file (`source`: its path) is not certified here: `est_rel_error` is
    what the file states, or None (unknown). `fields` holds further fields (by name, each of `u`'s
    shape): a system's fields after its first (`u`), evaluated with it, or a file's further arrays.
    """

    t: np.ndarray | None
    x: np.ndarray | None
    y: np.ndarray | None
    u: np.ndarray
    est_rel_error: float | None
    meta: dict[str, float | int] = field(default_factory=dict)
    scattered: np.ndarray | None = None
    columns: tuple[str, ...] = ()
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.scattered is None:
            set_(self, "t", _as_axis("t", self.t))
            set_(self, "x", _as_axis("x", self.x))
            if self.y is not None:
                set_(self, "y", _as_axis("y", self.y))
        else:
            _check_scattered(self)
        u = np.asarray(self.u, dtype=np.float64)
        if u.shape != self.shape:
            names = ", ".join(self.input_names) if self.scattered is None else "points"
            raise ValueError(f"u must have shape {self.shape} ({names}), got {u.shape}")
        if not np.all(np.isfinite(u)):
            raise ValueError("u contains non-finite values")
        set_(self, "u", u)
        if self.est_rel_error is None and not self.source:
            raise ValueError("est_rel_error is required (None, unknown, only for a reference "
                             "read from a file)")
        if self.est_rel_error is not None:
            err = float(self.est_rel_error)
            if not np.isfinite(err) or err < 0:
                raise ValueError(f"est_rel_error must be finite and >= 0, got {err}")
            set_(self, "est_rel_error", err)
        fields: dict[str, np.ndarray] = {}
        for key, value in dict(self.fields).items():
            arr = np.asarray(value, dtype=np.float64)
            if not isinstance(key, str) or not key or key == "u":
                raise ValueError(f"field names must be non-empty strings other than 'u', got {key!r}")
            if arr.shape != u.shape or not np.all(np.isfinite(arr)):
                raise ValueError(f"field {key!r} must be finite with u's shape {u.shape}")
            fields[key] = arr
        set_(self, "fields", fields)
        set_(self, "source", str(self.source))
        meta: dict[str, float | int] = {}
        for key, value in dict(self.meta).items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"meta keys must be non-empty strings, got {key!r}")
            arr = np.asarray(value)
            if arr.ndim != 0 or arr.dtype.kind not in "biuf":
                raise ValueError(f"meta[{key!r}] must be a real number, got {value!r}")
            meta[key] = arr.item()
        set_(self, "meta", meta)

    @classmethod
    def at_points(cls, points: Any, columns: tuple[str, ...], u: Any, est_rel_error: float | None,
                  **kwargs: Any) -> "Reference":
        """A reference `u (N,)` at scattered points `points (N, d)` with columns `columns`."""
        return cls(t=None, x=None, y=None, u=u, est_rel_error=est_rel_error,
                   scattered=points, columns=tuple(columns), **kwargs)

    @property
    def is_grid(self) -> bool:
        """True on a tensor grid `t × x (× y)`, False at scattered points."""
        return self.scattered is None

    @property
    def certified(self) -> bool:
        """True when computed and self-certified here (a built-in solver or an exact solution);
        False for a reference read from a file (`source`)."""
        return not self.source

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape `(Nt, Nx)` or `(Nt, Nx, Ny)`; `(N,)` at scattered points."""
        if self.scattered is not None:
            return (len(self.scattered),)
        axes = (self.t, self.x) if self.y is None else (self.t, self.x, self.y)
        return tuple(a.size for a in axes)

    @property
    def input_names(self) -> tuple[str, ...]:
        """Column order of `points()`: `("t", "x")` or `("t", "x", "y")` (time first) on a grid;
        `columns` at scattered points."""
        if self.scattered is not None:
            return self.columns
        return ("t", "x") if self.y is None else ("t", "x", "y")

    def points(self) -> np.ndarray:
        """All grid points as `(N, d)` (time first), in the C order of `u.reshape(-1)`; or the
        scattered points."""
        if self.scattered is not None:
            return self.scattered.copy()
        axes = (self.t, self.x) if self.y is None else (self.t, self.x, self.y)
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.reshape(-1) for m in mesh], axis=-1)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an `.npz` atomically: a temp file in the same directory, then `os.replace`."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"u": self.u}
        if self.scattered is None:
            arrays.update(t=self.t, x=self.x)
            if self.y is not None:
                arrays["y"] = self.y
        else:
            arrays["points"] = self.scattered
            arrays["columns"] = np.asarray(self.columns, dtype=np.str_)
        error = math.nan if self.est_rel_error is None else self.est_rel_error
        arrays["est_rel_error"] = np.asarray(error, dtype=np.float64)
        for key, value in self.meta.items():
            arrays[META_PREFIX + key] = np.asarray(value)
        for key, value in self.fields.items():
            arrays[FIELD_PREFIX + key] = value
        if self.source:
            arrays["source"] = np.asarray(self.source, dtype=np.str_)
        save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Reference":
        """Read a file written by `save`. Raises `ValueError` naming the file and the missing or
        bad key if it is not a valid reference (`FileNotFoundError` if it does not exist)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"reference file {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                if not hasattr(data, "files"):
                    raise ValueError("not an .npz archive")
                contents = {key: data[key] for key in data.files}
        except ValueError as exc:
            raise ValueError(f"{str(path)!r} is not a valid reference file: {exc}") from exc
        except Exception as exc:  # BadZipFile, OSError, EOFError, ...
            raise ValueError(
                f"{str(path)!r} is not a valid reference file: {type(exc).__name__}: {exc}"
            ) from exc

        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"{str(path)!r} is not a valid reference file: key {key!r} {why}")

        scattered = "points" in contents
        required = ("points", "columns", "u") if scattered else ("t", "x", "u")
        for key in required + ("est_rel_error",):
            if key not in contents:
                raise bad(key, f"is missing (found keys {sorted(contents)})")
        for key, arr in contents.items():
            if key in _STRINGS:
                if arr.dtype.kind != "U":
                    raise bad(key, f"must be a string array, got dtype {arr.dtype}")
            elif arr.dtype.kind not in "biuf":
                raise bad(key, f"has non-numeric dtype {arr.dtype}")
        for key in ("t", "x", "y"):
            if key in contents and (contents[key].ndim != 1 or contents[key].size == 0):
                raise bad(key, f"must be a non-empty 1-d array, got shape {contents[key].shape}")
        if contents["est_rel_error"].ndim != 0:
            raise bad("est_rel_error", f"must be 0-d, got shape {contents['est_rel_error'].shape}")
        y = contents.get("y")
        if scattered:
            if contents["columns"].ndim != 1:
                raise bad("columns", f"must be 1-d, got shape {contents['columns'].shape}")
            expected = (len(contents["points"]),)
            if contents["u"].shape != expected:
                raise bad("u", f"has shape {contents['u'].shape}, expected {expected} from points")
        else:
            expected = (contents["t"].size, contents["x"].size) + (() if y is None else (y.size,))
            if contents["u"].shape != expected:
                raise bad("u", f"has shape {contents['u'].shape}, expected {expected} from t, x(, y)")
        meta, fields = {}, {}
        known = {"u", "est_rel_error", "source"} | (
            {"points", "columns"} if scattered else {"t", "x", "y"})
        for key, arr in contents.items():
            if key.startswith(META_PREFIX):
                if arr.ndim != 0:
                    raise bad(key, f"must be 0-d, got shape {arr.shape}")
                meta[key[len(META_PREFIX):]] = arr.item()
            elif key.startswith(FIELD_PREFIX):
                if arr.shape != contents["u"].shape:
                    raise bad(key, f"has shape {arr.shape}, expected u's {contents['u'].shape}")
                fields[key[len(FIELD_PREFIX):]] = arr
            elif key not in known:
                raise bad(key, "is unexpected")
        error = float(contents["est_rel_error"])
        source = str(contents["source"]) if "source" in contents else ""
        common = dict(u=contents["u"], est_rel_error=None if math.isnan(error) and source else error,
                      meta=meta, fields=fields, source=source)
        try:
            if scattered:
                return cls.at_points(contents["points"], tuple(str(c) for c in contents["columns"]),
                                     **common)
            return cls(t=contents["t"], x=contents["x"], y=y, **common)
        except ValueError as exc:
            raise ValueError(f"{str(path)!r} is not a valid reference file: {exc}") from exc


__all__ = ["Reference", "rel_l2", "META_PREFIX", "FIELD_PREFIX"]
