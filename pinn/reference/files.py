"""References from files (`reference.file`): `.npz`, MATLAB `.mat`, and whitespace (or comma)
separated text with `%` header lines, as COMSOL and PINNacle export them.

`read_reference(path, inputs, field="u", time="t", keys=None, columns=None, others=()) ->
Reference`, where `inputs` are the problem's input names in its column order
(`Problem.input_names`, time first), `field` its first field, `others` its further fields (a
system: each is evaluated too when the file holds it, found by its name or `keys`, and stored
under the problem's name) and `time` its time column (None: steady).
Every name below can be renamed with `keys` (`{name the pipeline uses: name in the file}`, e.g.
`{u: usol, t: tt}`); array and column names are matched exactly, after `keys`.

Layouts:

- `.npz` / `.mat`, a grid: 1-d axes named like the inputs (`t (Nt,)`, `x (Nx,)`[, `y (Ny,)`];
  MATLAB's `(N, 1)` / `(1, N)` vectors are fine) and `u` of shape `(Nt, Nx[, Ny])` — indexed in
  the inputs' order, as the built-in references store it. A `u` stored the other way round
  (`(Nx, Nt)`, MATLAB's habit, e.g. Raissi's `burgers_shock.mat`) is transposed when that is
  unambiguous (different axis lengths); an unsorted axis is sorted (with `u`).
- `.npz` / `.mat`, scattered points: `points (N, d)` (columns in the inputs' order) and `u (N,)`,
  or one `(N,)` array per input and `u (N,)`.
- text (`.txt`, `.dat`, `.csv`): one row per point, columns named by the last header line (the
  last line starting with `%` or `#`; COMSOL writes e.g. `% x   t   u (1)`, units in parentheses
  are dropped) or by `columns` (the file's column names in order, for a file without such a
  line); columns for every input and one per field, in any order. A COMSOL time-series export —
  spatial columns then `u (1) @ t=0.1`-style columns, one per field and time — is read as the
  points (t, x...) of every time. `% est_rel_error: 1e-6` in the header states the file's error.

All other arrays (or columns) of `u`'s shape are further fields, stored with the reference
(`Reference.fields`); `u` and the problem's other fields (`others`) are evaluated. An optional `est_rel_error` (0-d array, or the header
line) is the file's own error estimate; without it the error is unknown (None). Points that form
a full tensor grid over time-first inputs (t, x[, y]) are stored as that grid (same values; the
report then draws grid figures); other points stay scattered, as does any reference of a problem
whose inputs are not (t, x[, y]) (e.g. a steady one).

Every problem raises `ValueError("reference.file = '<path>': <what is wrong>")`: one line naming
the params key and the file — a missing or unreadable file, a missing array or column, a shape
mismatch, NaN or infinite values.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pinn.reference.solution import Reference

#: file suffixes `read_reference` reads (the params schema accepts exactly these)
TEXT_SUFFIXES = (".txt", ".dat", ".csv")
SUFFIXES = (".npz", ".mat") + TEXT_SUFFIXES
_HEADER = ("%", "#")
_EST = re.compile(r"^[%#]\s*est_rel_error\s*[:=]\s*(\S+)\s*$")
_AT_TIME = re.compile(r"^(?P<field>.*?)\s*@\s*(?P<var>[A-Za-z_]\w*)\s*=\s*(?P<value>\S+)$")


class _Bad(ValueError):
    """What is wrong with the file (the message without the key and path)."""


def read_reference(path: str | Path, inputs: Sequence[str], field: str = "u",
                   time: str | None = "t", keys: Mapping[str, str] | None = None,
                   columns: Sequence[str] | None = None, others: Sequence[str] = (),
                   key: str = "reference.file") -> Reference:
    """The reference stored in `path` (see the module doc); raises `ValueError` naming the
    params key `key` (`reference.file`, or `problem.observations.file` for observation data)
    and the file."""
    path = Path(path)
    keys = dict(keys or {})
    try:
        ref = _read(path, tuple(inputs), field, time, keys,
                    None if columns is None else tuple(columns))
        return _named(ref, {keys[f]: f for f in others if keys.get(f, f) != f})
    except ValueError as e:  # _Bad, or the `Reference` built from the file's data
        message = str(e)
        if key != "reference.file":  # the hints name the keys of the section `key` is in
            section = key.rpartition(".")[0]
            message = message.replace("reference.keys", f"{section}.keys").replace(
                "reference.columns", f"{section}.columns")
        raise ValueError(f"{key} = {path.as_posix()!r}: {message}") from None


def _named(ref: Reference, renames: dict[str, str]) -> Reference:
    """`ref` with its further fields named as the problem names them (`{file's name: field}`)."""
    if not any(name in ref.fields for name in renames):
        return ref
    import dataclasses

    fields = {}
    for name, values in ref.fields.items():
        if name in renames:
            fields[renames[name]] = values
        elif name not in fields:  # (a renamed field wins over a file array of its name)
            fields[name] = values
    return dataclasses.replace(ref, fields=fields)


def _read(path: Path, inputs: tuple[str, ...], field: str, time: str | None,
          keys: dict[str, str], columns: tuple[str, ...] | None) -> Reference:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise _Bad(f"unsupported format {path.suffix or '(no suffix)'!r} "
                   f"(supported: {', '.join(SUFFIXES)})")
    if not path.is_file():
        raise _Bad("file not found" if not path.exists() else "not a file")
    if suffix in TEXT_SUFFIXES:
        points, values, est = _read_text(path, inputs, field, time, keys, columns)
        return _reference(path, inputs, time, points, values, est)
    arrays = _read_npz(path) if suffix == ".npz" else _read_mat(path)
    return _from_arrays(path, arrays, inputs, field, time, keys)


# ----------------------------------------------------------------------------------------------
# .npz and .mat


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise _Bad("not an .npz archive (a single .npy array?)")
            return {key: np.asarray(data[key]) for key in data.files}
    except _Bad:
        raise
    except Exception as e:  # BadZipFile, OSError, an object array that would need pickle
        raise _Bad(f"not a readable .npz file ({type(e).__name__}: {e})") from None


def _read_mat(path: Path) -> dict[str, np.ndarray]:
    import scipy.io

    try:
        data = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3 is HDF5
        raise _Bad("a MATLAB v7.3 (HDF5) file, which scipy.io.loadmat cannot read: save it with "
                   "save(..., '-v7')") from None
    except Exception as e:
        raise _Bad(f"not a readable .mat file ({type(e).__name__}: {e})") from None
    return {k: np.asarray(v) for k, v in data.items() if not k.startswith("__")}


def _numeric(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise _Bad(f"array {name!r} is not numeric (dtype {arr.dtype})")
    arr = arr.astype(np.float64)
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise _Bad(f"array {name!r} has {bad} NaN or infinite value(s)")
    return arr


def _vector(name: str, arr: np.ndarray) -> np.ndarray:
    """A 1-d array; MATLAB's (N, 1) and (1, N) vectors too."""
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1 or arr.size == 0:
        raise _Bad(f"array {name!r} must be a non-empty vector, got shape {arr.shape}")
    return arr


def _from_arrays(path: Path, arrays: dict[str, np.ndarray], inputs: tuple[str, ...], field: str,
                 time: str | None, keys: dict[str, str]) -> Reference:
    def get(name: str) -> np.ndarray:
        key = keys.get(name, name)
        if key not in arrays:
            hint = "" if name in keys else f" (or set reference.keys.{name})"
            raise _Bad(f"array {key!r} is missing{hint}; the file has "
                       f"{', '.join(sorted(arrays)) or 'no arrays'}")
        return _numeric(key, arrays[key])

    u_key = keys.get(field, field)
    u_raw = get(field)
    est = None
    est_key = keys.get("est_rel_error", "est_rel_error")
    if est_key in arrays:
        est = _stated_error(est_key, arrays[est_key])
    used = {u_key, est_key}
    points_key = keys.get("points", "points")
    if points_key in arrays:  # scattered: points (N, d) + u (N,)
        points = get("points")
        if points.ndim != 2 or points.shape[1] != len(inputs) or points.shape[0] == 0:
            raise _Bad(f"array {points_key!r} must have shape (N, {len(inputs)}) (columns "
                       f"{', '.join(inputs)}), got {points.shape}")
        u = _vector(u_key, u_raw) if u_raw.ndim <= 2 else u_raw
        if u.shape != (len(points),):
            raise _Bad(f"array {u_key!r} has shape {u_raw.shape}, expected ({len(points)},) "
                       f"from {points_key!r}")
        used.add(points_key)
        values = {field: u} | _further(arrays, used | {keys.get(n, n) for n in inputs},
                                       u_raw.shape, u.shape, field)
        return _reference(path, inputs, time, points, values, est)

    axes = {name: _vector(keys.get(name, name), get(name)) for name in inputs}
    used |= {keys.get(n, n) for n in inputs}
    sizes = tuple(a.size for a in axes.values())
    names = ", ".join(keys.get(n, n) for n in inputs)
    u_vec = u_raw.reshape(-1) if u_raw.ndim == 2 and 1 in u_raw.shape and len(inputs) > 1 else u_raw
    if u_vec.ndim == 1 and len(set(sizes)) == 1 and u_vec.size == sizes[0] and (
            len(inputs) == 1 or u_raw.shape != sizes):  # scattered: one (N,) array per input
        points = np.stack(list(axes.values()), axis=-1)
        values = {field: u_vec} | _further(arrays, used, u_raw.shape, u_vec.shape, field)
        return _reference(path, inputs, time, points, values, est)
    transposed = False
    if u_raw.shape != sizes:
        if u_raw.shape == sizes[::-1] and len(set(sizes)) == len(sizes):
            transposed = True  # stored (x, t): MATLAB's habit, unambiguous here
        else:
            raise _Bad(f"array {u_key!r} has shape {u_raw.shape}, expected {sizes} from the "
                       f"axes {names} (or scattered points: 'points' (N, {len(inputs)}) and "
                       f"{u_key!r} (N,))")
    further = _further(arrays, used, u_raw.shape, u_raw.shape, field)
    grid = {k: (v.T if transposed else v) for k, v in ({field: u_raw} | further).items()}
    order = []
    for name, axis in axes.items():  # sort every axis (and the values with it)
        idx = np.argsort(axis, kind="stable")
        if np.any(np.diff(axis[idx]) == 0):
            raise _Bad(f"array {keys.get(name, name)!r} (an axis) has repeated values")
        order.append(idx)
    axes = {name: a[i] for (name, a), i in zip(axes.items(), order)}
    grid = {k: v[np.ix_(*order)] for k, v in grid.items()}
    meta = {"transposed": 1} if transposed else {}
    if _grid_ok(inputs, time):
        a = list(axes.values())
        return Reference(t=a[0], x=a[1], y=a[2] if len(a) == 3 else None, u=grid[field],
                         est_rel_error=est, meta=meta, source=path.as_posix(),
                         fields={k: v for k, v in grid.items() if k != field})
    mesh = np.meshgrid(*axes.values(), indexing="ij")
    points = np.stack([m.reshape(-1) for m in mesh], axis=-1)
    return Reference.at_points(points, inputs, grid[field].reshape(-1), est, meta=meta,
                               source=path.as_posix(),
                               fields={k: v.reshape(-1) for k, v in grid.items() if k != field})


def _further(arrays: dict[str, np.ndarray], used: set[str], shape: tuple[int, ...],
             as_shape: tuple[int, ...], field: str) -> dict[str, np.ndarray]:
    """The file's other numeric arrays of `u`'s shape: further fields (by their names; one named
    like the evaluated field, when that is not it, is not stored)."""
    out = {}
    for name, arr in arrays.items():
        if name not in used and arr.shape == shape and arr.dtype.kind in "biuf" and name != field:
            out[name] = _numeric(name, arr).reshape(as_shape)
    return out


def _stated_error(name: str, arr: Any) -> float | None:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf" or arr.size != 1:
        raise _Bad(f"array {name!r} must be one number, got shape {arr.shape} of {arr.dtype}")
    value = float(arr.reshape(-1)[0])
    if math.isnan(value):
        return None  # stated as unknown
    if not (math.isfinite(value) and value >= 0):
        raise _Bad(f"array {name!r} = {value}: must be >= 0 (or NaN: unknown)")
    return value


def _grid_ok(inputs: tuple[str, ...], time: str | None) -> bool:
    """Whether `Reference`'s grid form (t × x [× y], time first) fits these inputs."""
    return time is not None and inputs[0] == time and len(inputs) in (2, 3)


def _reference(path: Path, inputs: tuple[str, ...], time: str | None, points: np.ndarray,
               values: dict[str, np.ndarray], est: float | None) -> Reference:
    """Scattered points (columns `inputs`) and their field values (the evaluated one first); the
    grid they form when they form one."""
    field, *_ = values
    fields = {k: v for k, v in values.items() if k != field}
    if _grid_ok(inputs, time):
        axes = [np.unique(points[:, j]) for j in range(points.shape[1])]
        if math.prod(a.size for a in axes) == len(points):
            idx = tuple(np.searchsorted(a, points[:, j]) for j, a in enumerate(axes))
            flat = np.ravel_multi_index(idx, tuple(a.size for a in axes))
            if np.unique(flat).size == len(points):  # every node exactly once: a full grid
                shape = tuple(a.size for a in axes)

                def on_grid(v: np.ndarray) -> np.ndarray:
                    out = np.empty(len(points))
                    out[flat] = v
                    return out.reshape(shape)

                return Reference(t=axes[0], x=axes[1], y=axes[2] if len(axes) == 3 else None,
                                 u=on_grid(values[field]), est_rel_error=est,
                                 source=path.as_posix(),
                                 fields={k: on_grid(v) for k, v in fields.items()})
    return Reference.at_points(points, inputs, values[field], est, source=path.as_posix(),
                               fields=fields)


# ----------------------------------------------------------------------------------------------
# text


def _split_names(line: str, n: int, comma: bool) -> list[str] | None:
    """The column names of a header line, if it names `n` columns: COMSOL separates names by two
    or more spaces (a name may hold one: `u (1) @ t=0`), others by any whitespace or commas."""
    body = line.lstrip("%#").strip()
    candidates = [body.split(",")] if comma else [re.split(r"\s{2,}|\t", body), body.split()]
    for names in candidates:
        names = [s.strip() for s in names if s.strip()]
        if len(names) == n:
            return names
    return None


def _plain(name: str) -> str:
    """A column name without its unit in parentheses: `u (1)` -> `u`, `T (K)` -> `T`."""
    return re.sub(r"\s*\([^)]*\)", "", name).strip()


def _read_text(path: Path, inputs: tuple[str, ...], field: str, time: str | None,
               keys: dict[str, str], columns: tuple[str, ...] | None):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _Bad(f"not a readable text file ({type(e).__name__}: {e})") from None
    header, rows, first_row = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(_HEADER):
            if not rows:
                header.append(stripped)
            continue
        if first_row is None:
            first_row = number
        rows.append((number, stripped))
    comma = path.suffix.lower() == ".csv" or bool(rows and "," in rows[0][1])
    if rows:  # a plain first row of names (a CSV header)
        first = rows[0][1].replace(",", " ").split()
        if first and not all(_is_number(s) for s in first):
            header.append(rows.pop(0)[1])
    if not rows:
        raise _Bad("no data rows (only header lines, or nothing)")
    try:
        data = np.loadtxt([r for _, r in rows], delimiter="," if comma else None, ndmin=2,
                          dtype=np.float64)
    except ValueError as e:
        why = _not_a_table(rows, comma) or f"data rows are not a table of numbers ({e})"
        raise _Bad(why) from None
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        row = rows[int(np.argwhere(~np.isfinite(data))[0][0])][0]
        raise _Bad(f"{bad} NaN or infinite value(s) (the first on line {row})")
    est = None
    for line in header:
        if (m := _EST.match(line)):
            est = _stated_error("est_rel_error", np.asarray(_float(m.group(1), "est_rel_error")))
    naming = [h for h in header if not _EST.match(h)]
    ncol = data.shape[1]
    if columns is not None:
        names = list(columns)
        if len(names) != ncol:
            raise _Bad(f"reference.columns names {len(names)} columns, the data has {ncol}")
    elif naming and (names := _split_names(naming[-1], ncol, comma)) is not None:
        pass
    elif not naming and ncol == len(inputs) + 1:
        names = [*inputs, field]  # no header at all: the inputs in order, then the field
    else:
        where = "its last header line does not" if naming else "no header line does"
        raise _Bad(f"{where} name its {ncol} columns (set reference.columns to their names, "
                   "in order)")
    wide = [i for i, n in enumerate(names) if "@" in n]
    if wide:
        return (*_wide(data, names, wide, inputs, field, time, keys), est)
    names = [_plain(n) for n in names]
    return (*_long(data, names, inputs, field, keys), est)


def _not_a_table(rows: list[tuple[int, str]], comma: bool) -> str | None:
    """Where the data rows stop being a table of numbers: the first line with another number of
    columns than the first row, or a value that is not a number."""
    width = None
    for number, row in rows:
        cells = [c.strip() for c in row.split(",")] if comma else row.split()
        if width is None:
            width = (number, len(cells))
        elif len(cells) != width[1]:
            return (f"line {number} has {len(cells)} columns, line {width[0]} has {width[1]}")
        for cell in cells:
            if not _is_number(cell):
                return f"line {number}: {cell!r} is not a number"
    return None


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _float(s: str, what: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise _Bad(f"{what} {s!r} is not a number") from None


def _unique(names: Sequence[str], kind: str) -> None:
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise _Bad(f"{kind} named more than once: {', '.join(repeated)}")


def _find_inputs(names: Sequence[str], inputs: Sequence[str], keys: dict[str, str],
                 kind: str) -> list[int]:
    found = []
    for name in inputs:
        key = keys.get(name, name)
        if key not in names:
            hint = f"reference.keys.{name}" if name not in keys else "reference.keys"
            raise _Bad(f"{kind} {key!r} is missing (the {kind}s are {', '.join(names)}; set "
                       f"{hint} or reference.columns)")
        found.append(list(names).index(key))
    return found


def _main_field(candidates: Sequence[str], field: str, keys: dict[str, str], kind: str) -> str:
    """The evaluated field's name among `candidates`: `keys[field]`, `field`, or the only one."""
    key = keys.get(field, field)
    if key in candidates:
        return key
    if field not in keys and len(candidates) == 1:
        return candidates[0]  # the only field, whatever it is called
    raise _Bad(f"{kind} {key!r} (the field) is missing (the field {kind}s are "
               f"{', '.join(candidates) or 'none'}; set reference.keys.{field})")


def _values(main: str, field: str, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The evaluated field first (as `field`), then the others by name (one named like the
    evaluated field, when that is not it, is not stored)."""
    return {field: columns[main]} | {k: v for k, v in columns.items() if k not in (main, field)}


def _long(data: np.ndarray, names: list[str], inputs: tuple[str, ...], field: str,
          keys: dict[str, str]):
    _unique(names, "columns")
    cols = _find_inputs(names, inputs, keys, "column")
    rest = {n: data[:, i] for i, n in enumerate(names) if i not in cols}
    return data[:, cols], _values(_main_field(list(rest), field, keys, "column"), field, rest)


def _wide(data: np.ndarray, names: list[str], wide: list[int], inputs: tuple[str, ...],
          field: str, time: str | None, keys: dict[str, str]):
    """COMSOL's time series: spatial columns, then `<field> @ t=<value>` columns."""
    if time is None:
        raise _Bad("its columns hold values at times ('@ t='), but the problem is steady")
    spatial = {_plain(names[i]): i for i in range(len(names)) if i not in wide}
    _unique([_plain(names[i]) for i in range(len(names)) if i not in wide], "columns")
    series: dict[str, dict[float, int]] = {}
    for i in wide:
        m = _AT_TIME.match(names[i])
        if m is None:
            raise _Bad(f"column {names[i]!r}: expected '<field> @ {time}=<value>'")
        value = _float(m.group("value"), f"column {names[i]!r}: time")
        by_time = series.setdefault(_plain(m.group("field")), {})
        if value in by_time:
            raise _Bad(f"column {names[i]!r}: time {value:g} appears twice")
        by_time[value] = i
    first, times = next(iter(series)), sorted(next(iter(series.values())))
    for name, by_time in series.items():
        if sorted(by_time) != times:
            raise _Bad(f"field {name!r} is given at other times than field {first!r}")
    space = tuple(n for n in inputs if n != time)
    cols = _find_inputs(list(spatial), space, keys, "spatial column")
    extra = [n for k, n in enumerate(spatial) if k not in cols]
    if extra:
        raise _Bad(f"columns {', '.join(extra)} are neither inputs ({', '.join(space)}) nor "
                   f"time series ('@ {time}=')")
    xs = data[:, [list(spatial.values())[c] for c in cols]]
    n, nt = len(data), len(times)
    blocks = {time: np.repeat(np.asarray(times), n)}
    blocks |= {name: np.tile(xs[:, j], nt) for j, name in enumerate(space)}
    points = np.stack([blocks[name] for name in inputs], axis=-1)
    stacked = {name: np.concatenate([data[:, by_time[t]] for t in times])
               for name, by_time in series.items()}
    return points, _values(_main_field(list(series), field, keys, "field column"), field, stacked)


__all__ = ["read_reference", "SUFFIXES", "TEXT_SUFFIXES"]
