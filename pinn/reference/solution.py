"""The `Reference` container: a certified reference solution on a tensor grid, stored as `.npz`.

File format (a plain, pickle-free `.npz`, readable with `numpy.load(path, allow_pickle=False)`):

- `t (Nt,)`, `x (Nx,)`, `y (Ny,)` (2D problems only) — float64 grid axes;
- `u (Nt, Nx)` or `(Nt, Nx, Ny)` — float64 solution indexed `[t, x(, y)]`;
- `est_rel_error` — 0-d float64, the self-certified relative L2 error estimate;
- `meta_<name>` — 0-d numeric arrays describing the solve (modes, dt, quadrature nodes, ...).

`save` is atomic (temporary file in the target directory, then `os.replace`) and byte-for-byte
deterministic (fixed zip timestamps, keys in sorted order): identical solves give identical files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pinn.io import save_npz

META_PREFIX = "meta_"


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """Relative L2 difference `||a - b||_2 / ||b||_2` over all entries (`b` is the reference;
    `0/0` is taken as 0, `x/0` as inf)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_l2: shape mismatch {a.shape} vs {b.shape}")
    num = float(np.linalg.norm((a - b).ravel()))
    den = float(np.linalg.norm(b.ravel()))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def _as_axis(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


@dataclass(frozen=True, eq=False)
class Reference:
    """Reference solution `u[t, x(, y)]` on the tensor grid `t × x (× y)` (float64).

    `est_rel_error` is the relative L2 difference (over the whole grid) between this solution and
    an independent solve at half the resolution; `meta` maps str -> number (solver settings).
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray | None
    u: np.ndarray
    est_rel_error: float
    meta: dict[str, float | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "t", _as_axis("t", self.t))
        set_(self, "x", _as_axis("x", self.x))
        if self.y is not None:
            set_(self, "y", _as_axis("y", self.y))
        u = np.asarray(self.u, dtype=np.float64)
        if u.shape != self.shape:
            raise ValueError(f"u must have shape {self.shape} (t, x[, y]), got {u.shape}")
        if not np.all(np.isfinite(u)):
            raise ValueError("u contains non-finite values")
        set_(self, "u", u)
        err = float(self.est_rel_error)
        if not np.isfinite(err) or err < 0:
            raise ValueError(f"est_rel_error must be finite and >= 0, got {err}")
        set_(self, "est_rel_error", err)
        meta: dict[str, float | int] = {}
        for key, value in dict(self.meta).items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"meta keys must be non-empty strings, got {key!r}")
            arr = np.asarray(value)
            if arr.ndim != 0 or arr.dtype.kind not in "biuf":
                raise ValueError(f"meta[{key!r}] must be a real number, got {value!r}")
            meta[key] = arr.item()
        set_(self, "meta", meta)

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape `(Nt, Nx)` or `(Nt, Nx, Ny)`."""
        axes = (self.t, self.x) if self.y is None else (self.t, self.x, self.y)
        return tuple(a.size for a in axes)

    @property
    def input_names(self) -> tuple[str, ...]:
        """Column order of `points()`: `("t", "x")` or `("t", "x", "y")` (time first)."""
        return ("t", "x") if self.y is None else ("t", "x", "y")

    def points(self) -> np.ndarray:
        """All grid points as `(N, d)` (time first), in the C order of `u.reshape(-1)`."""
        axes = (self.t, self.x) if self.y is None else (self.t, self.x, self.y)
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.reshape(-1) for m in mesh], axis=-1)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an `.npz` atomically: a temp file in the same directory, then `os.replace`."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"t": self.t, "x": self.x, "u": self.u}
        if self.y is not None:
            arrays["y"] = self.y
        arrays["est_rel_error"] = np.asarray(self.est_rel_error, dtype=np.float64)
        for key, value in self.meta.items():
            arrays[META_PREFIX + key] = np.asarray(value)
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

        for key in ("t", "x", "u", "est_rel_error"):
            if key not in contents:
                raise bad(key, f"is missing (found keys {sorted(contents)})")
        for key, arr in contents.items():
            if arr.dtype.kind not in "biuf":
                raise bad(key, f"has non-numeric dtype {arr.dtype}")
        for key in ("t", "x", "y"):
            if key in contents and (contents[key].ndim != 1 or contents[key].size == 0):
                raise bad(key, f"must be a non-empty 1-d array, got shape {contents[key].shape}")
        if contents["est_rel_error"].ndim != 0:
            raise bad("est_rel_error", f"must be 0-d, got shape {contents['est_rel_error'].shape}")
        y = contents.get("y")
        expected = (contents["t"].size, contents["x"].size) + (() if y is None else (y.size,))
        if contents["u"].shape != expected:
            raise bad("u", f"has shape {contents['u'].shape}, expected {expected} from t, x(, y)")
        meta = {}
        for key, arr in contents.items():
            if key.startswith(META_PREFIX):
                if arr.ndim != 0:
                    raise bad(key, f"must be 0-d, got shape {arr.shape}")
                meta[key[len(META_PREFIX):]] = arr.item()
            elif key not in ("t", "x", "y", "u", "est_rel_error"):
                raise bad(key, "is unexpected")
        try:
            return cls(
                t=contents["t"],
                x=contents["x"],
                y=y,
                u=contents["u"],
                est_rel_error=float(contents["est_rel_error"]),
                meta=meta,
            )
        except ValueError as exc:
            raise ValueError(f"{str(path)!r} is not a valid reference file: {exc}") from exc


__all__ = ["Reference", "rel_l2", "META_PREFIX"]
