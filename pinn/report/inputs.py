"""The report's inputs: where they live (`ReportInputs`), and reading them — the prediction and
error on the reference's grid or points (`load_grid`), the histories, the samples, metrics.json —
into plain arrays and data frames. A malformed file is a `UserError` naming it; a missing one is
`None`/absent (the report notes it instead of drawing)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pinn.errors import UserError

#: history columns that are neither sampler statistics nor per-term columns
_TRAIN_COLUMNS = {"level", "step", "level_step", "loss", "grad_norm", "steps_per_s", "wall_s",
                  "rel_l2", "causal_min_weight", "lr_scale"}
#: prefixes of per-loss-term history columns
_TERM_PREFIXES = ("loss_", "weight_", "ntk_")
#: prefix of the trainable coefficients' columns (history) and keys (metrics.json)
_COEF = "coef_"



@dataclass(frozen=True)
class ReportInputs:
    """Where every input of the report lives (any of them may be missing)."""

    reference: Path
    errors: Path
    metrics: Path
    histories: dict[str, Path]  # level -> history.csv, coarse to fine
    samples: dict[str, Path]  # level -> samples.npz
    refine_history: Path
    root: Path = Path(".")  # paths are shown relative to this directory when inside it
    #: time-marching windows after the first (`windows.later`, in order): window -> its
    #: `(history.csv, refine.csv)` (the window stage's logs); empty with windows off
    windows: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    @classmethod
    def of(cls, *, reference: Path, errors: Path, metrics: Path, train_dir: Path,
           refine_history: Path, levels: Sequence[str], root: Path = Path("."),
           window_logs: Path = Path("data") / "window_logs", windows: Sequence[str] = ()
           ) -> "ReportInputs":
        """Explicit paths; `train_dir/<level>/history.csv` and `samples.npz` per level, and
        `window_logs/<window>/history.csv` and `refine.csv` per later window (`windows`)."""
        train_dir = Path(train_dir)
        return cls(
            reference=Path(reference), errors=Path(errors), metrics=Path(metrics),
            histories={lv: train_dir / lv / "history.csv" for lv in levels},
            samples={lv: train_dir / lv / "samples.npz" for lv in levels},
            refine_history=Path(refine_history), root=Path(root),
            windows={w: (Path(window_logs) / w / "history.csv", Path(window_logs) / w / "refine.csv")
                     for w in windows},
        )

    @classmethod
    def at(cls, root: Path, levels: Sequence[str], windows: Sequence[str] = ()) -> "ReportInputs":
        """The pipeline's default layout under `root` (data/..., metrics.json)."""
        root = Path(root)
        return cls.of(reference=root / "data" / "reference.npz",
                      errors=root / "data" / "evaluate" / "errors.npz",
                      metrics=root / "metrics.json", train_dir=root / "data" / "train",
                      refine_history=root / "data" / "refine" / "history.csv",
                      levels=levels, root=root, window_logs=root / "data" / "window_logs",
                      windows=windows)

    def rel(self, path: Path) -> str:
        """`path` as shown in the report: relative to the root when inside it."""
        rel = os.path.relpath(Path(path).absolute(), Path(self.root).absolute())
        return Path(rel).as_posix() if not rel.startswith("..") else str(path)


@dataclass
class _Field:
    """One field's values where the reference has them (a grid's shape, or `(N,)` at points)."""

    name: str
    reference: np.ndarray | None  # None: the reference file is missing
    prediction: np.ndarray
    error: np.ndarray  # prediction − reference


@dataclass
class _Grid:
    """Prediction and error on a time-first reference grid `t × x (× y)`, per field."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray | None
    fields: list[_Field]

    @property
    def complete(self) -> bool:
        return all(f.reference is not None for f in self.fields)


@dataclass
class _Points:
    """Prediction and error at the scattered points of a reference (read from a file, or a steady
    or higher-dimensional problem's exact solution), per field. `axes`: when the points are the
    nodes of a tensor grid over one or two columns (a steady problem's exact reference), its axes,
    and `flat` the node of each point (C order), so the values can be drawn as curves or maps."""

    points: np.ndarray  # (N, d)
    columns: tuple[str, ...]
    fields: list[_Field]
    axes: list[np.ndarray] | None = None
    flat: np.ndarray | None = None

    @property
    def complete(self) -> bool:
        return all(f.reference is not None for f in self.fields)

    def on_grid(self, values: np.ndarray) -> np.ndarray:
        """Values at the points arranged on the tensor grid `axes` (indexed like the columns)."""
        out = np.empty(len(self.points))
        out[self.flat] = values
        return out.reshape(tuple(a.size for a in self.axes))


def _tensor_grid(points: np.ndarray) -> tuple[list[np.ndarray], np.ndarray] | None:
    """`(axes, flat)` when `points (N, d)`, d <= 2, are every node of a tensor grid exactly once
    (`flat`: each point's node in C order); else None."""
    if points.ndim != 2 or not 1 <= points.shape[1] <= 2 or len(points) < 2:
        return None
    axes = [np.unique(points[:, j]) for j in range(points.shape[1])]
    if math.prod(a.size for a in axes) != len(points) or min(a.size for a in axes) < 2:
        return None
    idx = tuple(np.searchsorted(a, points[:, j]) for j, a in enumerate(axes))
    flat = np.ravel_multi_index(idx, tuple(a.size for a in axes))
    if np.unique(flat).size != len(points):
        return None
    return axes, flat


def _not_found(inputs: ReportInputs, path: Path, what: str) -> str:
    """The sentence written where an input is missing."""
    return f"*Not available: `{inputs.rel(path)}` not found; {what}.*"


def _load_npz(path: Path, required: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in required if k not in data.files]
            if missing:
                raise UserError(f"{path}: missing array(s) {', '.join(missing)}")
            return {k: np.asarray(data[k]) for k in data.files}
    except UserError:
        raise
    except Exception as e:  # truncated, not a zip, pickled objects
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable JSON file ({type(e).__name__}: {e})") from None


def _load_csv(path: Path):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as e:
        raise UserError(f"{path}: not a readable CSV file ({type(e).__name__}: {e})") from None


def _numeric(df, column: str) -> np.ndarray:
    """A column as float64 (NaN where absent or not a number)."""
    import pandas as pd

    if column not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)


def _last_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else None


def _float(v: Any) -> float | None:
    """`v` as a finite float, else None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def is_constant(values: np.ndarray) -> bool:
    """True when the finite values are all equal (or there are none): nothing to plot."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return finite.size == 0 or bool(np.all(finite == finite[0]))



def sampler_stat_columns(histories: dict) -> list[str]:
    """History columns that are sampler statistics (not loss/weight/NTK/timing columns)."""
    cols: list[str] = []
    for df in histories.values():
        for c in df.columns:
            if (c in _TRAIN_COLUMNS or c.startswith(_TERM_PREFIXES) or c.startswith(_COEF)
                    or c in cols):
                continue
            if np.isfinite(_numeric(df, c)).any():
                cols.append(c)
    return cols


def _fields(inputs: ReportInputs, ref: dict | None, err: dict, shape: tuple[int, ...]
            ) -> list[_Field]:
    """The fields of errors.npz (`fields`, default `u`: the first as `prediction`/`error`, the
    others as `prediction_<name>`/`error_<name>`) with the reference's values of each (`u`, then
    `field_<name>`), every array checked against `shape`."""
    names = [str(n) for n in np.atleast_1d(err["fields"])] if "fields" in err else ["u"]
    out = []
    for k, name in enumerate(names):
        suffix = "" if k == 0 else f"_{name}"
        missing = [key for key in (f"prediction{suffix}", f"error{suffix}") if key not in err]
        if missing:
            raise UserError(f"{inputs.errors}: missing array(s) {', '.join(missing)} (field "
                            f"{name!r} of its fields)")
        prediction, error = err[f"prediction{suffix}"], err[f"error{suffix}"]
        if prediction.shape != error.shape:
            raise UserError(f"{inputs.errors}: prediction {prediction.shape} and error "
                            f"{error.shape} differ in shape")
        if error.shape != shape:
            raise UserError(f"{inputs.errors}: error{suffix} shape {error.shape} does not match "
                            f"its points or axes {shape}")
        reference = None
        if ref is not None:
            key = "u" if k == 0 else f"field_{name}"
            if key not in ref:
                raise UserError(f"{inputs.reference}: no array {key!r} (field {name!r}, which "
                                f"{inputs.errors} holds)")
            if ref[key].shape != error.shape:
                raise UserError(f"{inputs.errors}: error shape {error.shape} does not match "
                                f"the reference's {key} {ref[key].shape} ({inputs.reference})")
            reference = ref[key]
        out.append(_Field(name, reference, prediction, error))
    return out


def _load_grid(inputs: ReportInputs, notes: list[str]) -> _Grid | _Points | None:
    ref = _load_npz(inputs.reference, ("u",)) if inputs.reference.exists() else None
    err = (_load_npz(inputs.errors, ("prediction", "error")) if inputs.errors.exists() else None)
    if ref is None:
        notes.append(_not_found(inputs, inputs.reference, "no reference solution is shown"))
    if err is None:
        notes.append(_not_found(inputs, inputs.errors, "no prediction or error map"))
        return None
    if "points" in err:
        return _load_points(inputs, ref, err)
    missing = [k for k in ("t", "x") if k not in err]
    if missing:
        raise UserError(f"{inputs.errors}: missing array(s) {', '.join(missing)} (or points)")
    y = err.get("y")
    want = (len(err["t"]), len(err["x"])) + ((len(y),) if y is not None else ())
    return _Grid(t=err["t"], x=err["x"], y=y, fields=_fields(inputs, ref, err, want))


def _load_points(inputs: ReportInputs, ref: dict | None, err: dict) -> _Points:
    points = err["points"]
    if points.ndim != 2:
        raise UserError(f"{inputs.errors}: points {points.shape} must be (N, d)")
    columns = tuple(str(c) for c in err.get("columns", [f"z{i}" for i in range(points.shape[1])]))
    if len(columns) != points.shape[1]:
        raise UserError(f"{inputs.errors}: {len(columns)} columns for points {points.shape}")
    grid = _tensor_grid(points)
    return _Points(points=points, columns=columns,
                   fields=_fields(inputs, ref, err, (len(points),)),
                   axes=None if grid is None else grid[0], flat=None if grid is None else grid[1])



@dataclass
class RunData:
    """Everything the report shows, read from its inputs (absent inputs: None or left out)."""

    metrics: dict  # metrics.json ({} when missing)
    grid: _Grid | _Points | None  # prediction and error where the reference has them
    grid_notes: list[str]  # sentences about missing reference / errors files
    histories: dict[str, Any]  # level -> history (pandas.DataFrame), the present ones
    refine: Any  # the refinement's history, or None when its file is missing
    samples: dict[str, dict[str, np.ndarray]]  # level -> last batch (points, weights)
    #: later time-marching window -> (its Adam history or None, its refinement's or None)
    windows: dict[str, tuple[Any, Any]]
    est: float | None  # the reference's estimated relative error
    reference_file: str | None  # the file a reference was read from (not certified here)


def _history(path: Path, column: str):
    """A history CSV (None when missing) that must have `column` (when it has any columns)."""
    if not path.exists():
        return None
    df = _load_csv(path)
    if len(df.columns) and column not in df:
        raise UserError(f"{path}: no `{column}` column")
    return df


def load_run(inputs: ReportInputs) -> RunData:
    """Read every input of the report that exists; raises `UserError` naming a malformed file."""
    metrics = _load_json(inputs.metrics) if inputs.metrics.exists() else {}
    if not isinstance(metrics, dict):
        raise UserError(f"{inputs.metrics}: must be a JSON object")
    grid_notes: list[str] = []
    grid = _load_grid(inputs, grid_notes)
    histories = {lv: _history(p, "step") for lv, p in inputs.histories.items() if p.exists()}
    refine = _history(inputs.refine_history, "iteration")
    samples = {lv: _load_npz(p, ("points", "weights"))
               for lv, p in inputs.samples.items() if p.exists()}
    windows = {w: (_history(h, "step"), _history(r, "iteration"))
               for w, (h, r) in inputs.windows.items()}
    est = _float(metrics.get("reference_est_rel_error"))
    reference_file = None
    if inputs.reference.exists():
        stored = _load_npz(inputs.reference, ("est_rel_error",) if est is None else ())
        if est is None:
            est = _float(stored["est_rel_error"])
        if "source" in stored:
            reference_file = str(stored["source"])
    return RunData(metrics=metrics, grid=grid, grid_notes=grid_notes, histories=histories,
                   refine=refine, samples=samples, windows=windows, est=est,
                   reference_file=reference_file)
