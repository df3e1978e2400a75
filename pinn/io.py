"""Atomic, data-only file I/O: a killed stage never leaves a half-written file behind.

Every writer writes to a temporary file in the destination directory and `os.replace`s it into
place (atomic on POSIX); a directory written whole (a report) is built next to its destination and
renamed into place (`atomic_dir`). Pytrees are stored as `.npz` of their leaves keyed by their paths, and read
back with `allow_pickle=False` into a template of the same structure.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np

from pinn.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a new empty directory next to `path` (a hidden sibling, created like `mkdir`: mode
    `0o777 & ~umask`, not a private temporary directory's); on success it replaces the directory
    (or file) `path` whole — two renames, so `path` is never partly written — else it is deleted.
    Siblings left behind by a killed process are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    os.mkdir(tmp)
    try:
        yield tmp
        old = None
        if path.is_dir() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rename(path, old / path.name)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _check_finite(obj: Any, where: str = "") -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"refusing to write non-finite metric {where or '<root>'} = {obj}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


def write_json(path: str | Path, obj: Any, *, allow_nonfinite: bool = False,
               sort_keys: bool = True) -> None:
    """Atomic JSON. Metrics are never written with NaN/inf unless explicitly allowed. With
    `sort_keys=False` the keys keep their order (headline metrics first in `dvc exp show`)."""
    if not allow_nonfinite:
        _check_finite(obj)
    text = json.dumps(obj, indent=2, sort_keys=sort_keys, allow_nan=allow_nonfinite)
    write_text(path, text + "\n")


def _leaf_key(path) -> str:
    return jax.tree_util.keystr(path)


#: the timestamp of every member of the npz files we write: same arrays, same bytes
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(path: str | Path, arrays: dict[str, Any]) -> None:
    """Write `arrays` as an uncompressed `.npz` (readable by `np.load`), atomically and
    byte-deterministically: members sorted by name, fixed timestamps, no pickled objects. Same
    arrays give the same bytes, so an unchanged export never invalidates a downstream DVC stage
    (`np.savez` stamps every member with the current time)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED) as zf:
                for key in sorted(arrays):
                    info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_EPOCH)
                    info.external_attr = 0o644 << 16
                    with zf.open(info, mode="w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asarray(arrays[key]), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())


def save_tree(path: str | Path, tree: Any, **extra: np.ndarray) -> None:
    """Save a pytree's leaves (plus `extra` arrays under `extra/<name>`) to an npz, atomically
    and byte-deterministically (`save_npz`)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    arrays = {f"tree{_leaf_key(p)}": np.asarray(x) for p, x in leaves}
    arrays.update({f"extra/{k}": np.asarray(v) for k, v in extra.items()})
    save_npz(path, arrays)


def load_tree(path: str | Path, template: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """Load leaves saved by `save_tree` into `template`'s structure; also return the extras.

    Raises ValueError naming the file and the key when the file is unreadable or does not match.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        files = set(data.files)
    except Exception as e:  # truncated / not an npz
        raise UserError(f"{path}: not a readable parameter file ({type(e).__name__}: {e})") from None
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    with data:
        for p, ref in leaves:
            k = f"tree{_leaf_key(p)}"
            if k not in files:
                raise UserError(f"{path}: missing array {k!r} (file does not match this model/config)")
            arr = _read_member(path, data, k)
            if arr.shape != np.shape(ref):
                raise UserError(
                    f"{path}: array {k!r} has shape {arr.shape}, expected {np.shape(ref)}"
                )
            out.append(arr.astype(np.asarray(ref).dtype) if hasattr(ref, "dtype") else arr)
        extras = {k[len("extra/") :]: _read_member(path, data, k) for k in files if k.startswith("extra/")}
    return jax.tree_util.tree_unflatten(treedef, out), extras


def _read_member(path: Path, data, key: str) -> np.ndarray:
    """One array of an open npz; a corrupt member (bad CRC, garbled header, an object array that
    would need pickle) is a `UserError` naming the file and the key."""
    try:
        arr = data[key]
    except Exception as e:
        raise UserError(f"{path}: array {key!r} is unreadable ({type(e).__name__}: {e})") from None
    if arr.dtype.kind not in "biuf":
        raise UserError(f"{path}: array {key!r} has non-numeric dtype {arr.dtype}")
    return arr
