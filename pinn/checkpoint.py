"""Orbax checkpoints of the whole training state (model, optimizer, sampler, balancer, step, key).

`Checkpointer` wraps an `orbax.checkpoint.CheckpointManager`. Restoring walks the saved steps from
newest to oldest and tells three cases apart:

- **damaged** (its files cannot be read, its contents do not match the SHA-256 digest saved with
  it — orbax itself does not notice flipped bytes in array data — or it holds values that no valid
  state holds, e.g. NaN parameters): reported and removed (the resumed run saves that step again,
  and orbax refuses to overwrite a step);
- **from other params** (intact, but its tree structure, shapes or dtypes do not fit the template
  of the current config): reported as such, never trained from and never deleted — it is moved
  aside to `<directory>.other-params/<step>` so the current run's steps cannot collide with it;
- **valid**: returned.

What counts as valid is decided per field (`state_problem`): a floating leaf must be finite unless
the state declares a *sentinel* for that field — a NamedTuple state class lists them in a class
attribute `CHECKPOINT_SENTINELS = {"field": (value, ...)}` (e.g. the hard-bank sampler marks empty
bank slots with `-inf`); third-party state classes are declared in `SENTINELS`. A NaN is never a
sentinel. `Checkpointer(..., valid=fn)` replaces the rule altogether.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp

log = logging.getLogger("pinn.checkpoint")

#: Sentinel declarations of state classes we do not own: {class: {field: allowed values}}.
#: optax's zoom line search records `inf` errors for "no line search yet / the last one failed"
#: (its init, and the quasi-Newton runner's restart after a rejected step, leave them there).
SENTINELS: dict[type, Mapping[str, tuple[float, ...]]] = {
    optax.ZoomLinesearchInfo: {"decrease_error": (math.inf,), "curvature_error": (math.inf,)},
}

#: `valid(state) -> None | str`: None when `state` may be trained from, else what is wrong with it
Validator = Callable[[Any], Optional[str]]


def sentinels_of(node: Any) -> Mapping[str, tuple[float, ...]] | None:
    """The sentinel declaration of a state node's class (`CHECKPOINT_SENTINELS` or `SENTINELS`),
    or None when it declares none."""
    declared = getattr(type(node), "CHECKPOINT_SENTINELS", None)
    if declared is None:
        declared = SENTINELS.get(type(node))
    return declared if isinstance(node, tuple) and hasattr(node, "_fields") else None


def invalid_leaves(tree: Any) -> list[str]:
    """Key paths of the floating leaves of `tree` holding a value that no valid state holds: a
    non-finite value that is not a declared sentinel of its field (see the module doc)."""
    bad: list[str] = []

    def visit(node: Any, prefix: str) -> None:
        declared = sentinels_of(node) or {}
        is_declared = lambda x: x is not node and sentinels_of(x) is not None  # noqa: E731
        for path, leaf in jax.tree_util.tree_flatten_with_path(node, is_leaf=is_declared)[0]:
            name = prefix + jax.tree_util.keystr(path)
            if is_declared(leaf):
                visit(leaf, name)
                continue
            x = np.asarray(leaf)
            if not np.issubdtype(x.dtype, np.floating):
                continue
            ok = np.isfinite(x)
            field = getattr(path[0], "name", None) if path else None
            for value in declared.get(field, ()):
                ok |= x == value
            if not np.all(ok):
                bad.append(name)

    visit(tree, "")
    return bad


def state_problem(state: Any) -> str | None:
    """The default validity rule: None if every floating leaf is finite or a declared sentinel,
    else a description naming the offending leaves."""
    bad = invalid_leaves(state)
    if not bad:
        return None
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"holds non-finite values (in {', '.join(bad[:3])}{more})"


def tree_digest(tree: Any) -> np.ndarray:
    """SHA-256 over every leaf's dtype, shape and bytes in tree order, as 32 uint8."""
    h = hashlib.sha256()
    for x in jax.tree_util.tree_leaves(tree):
        x = np.ascontiguousarray(np.asarray(x))
        h.update(f"{x.dtype.str}{x.shape}".encode())
        h.update(x.tobytes())
    return np.frombuffer(h.digest(), np.uint8).copy()


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _layout(tree: Any) -> dict[tuple[str, ...], tuple[tuple[int, ...], str]]:
    """`{path: (shape, dtype)}` of every leaf, with paths spelled as orbax's metadata spells them
    (NamedTuple fields and sequence indices become plain names)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = tuple(int(n) for n in getattr(leaf, "shape", np.shape(leaf)))
        dtype = np.dtype(getattr(leaf, "dtype", None) or np.asarray(leaf).dtype).str
        out[tuple(_key_name(e) for e in path)] = (shape, dtype)
    return out


def layout_mismatch(saved: Any, template: Any) -> str | None:
    """How the saved layout (orbax metadata tree, or any pytree of arrays) differs from
    `template`'s — missing or extra leaves, other shapes or dtypes — or None when it fits."""
    have, want = _layout(saved), _layout(template)
    show = lambda path: "/".join(path)  # noqa: E731
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    if missing or extra:
        parts = [f"{len(missing)} leaves missing (e.g. {show(missing[0])})"] if missing else []
        parts += [f"{len(extra)} unexpected (e.g. {show(extra[0])})"] if extra else []
        return ", ".join(parts)
    for path in want:
        if have[path] != want[path]:
            (s0, d0), (s1, d1) = have[path], want[path]
            return (f"{show(path)} is {np.dtype(d0).name}{list(s0)}, the current config needs "
                    f"{np.dtype(d1).name}{list(s1)}")
    return None


class Checkpointer:
    """Numbered checkpoints of a state pytree in `directory` (see the module doc).

    `valid(state) -> None | str` decides whether a restored state may be trained from (default
    `state_problem`: finite except declared sentinels); `max_to_keep` newest steps are kept.
    """

    def __init__(self, directory: str | Path, *, max_to_keep: int = 3,
                 valid: Validator = state_problem):
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.valid = valid
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep),
            item_handlers=ocp.StandardCheckpointHandler(),  # so its metadata can be read first
        )

    @property
    def aside(self) -> Path:
        """Where checkpoints that belong to other params are moved (never deleted)."""
        return self.directory.with_name(self.directory.name + ".other-params")

    def save(self, step: int, state: Any, *, wait: bool = False) -> None:
        """Save `state` as step `step` with its digest (asynchronous unless `wait`)."""
        item = {"state": state, "sha256": tree_digest(state)}
        self.manager.save(int(step), args=ocp.args.StandardSave(item), force=True)
        if wait:
            self.manager.wait_until_finished()

    def wait(self) -> None:
        """Block until every pending save is committed."""
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        """The committed steps, oldest first."""
        return sorted(self.manager.all_steps())

    def restore_latest(self, template: Any) -> tuple[int, Any] | None:
        """Newest checkpoint that fits `template`, is intact and valid, as `(step, state)`; None if
        there is none. Damaged ones are removed, ones from other params moved aside (module doc)."""
        for step in reversed(self.steps()):
            item_template = {"state": template, "sha256": np.zeros(32, np.uint8)}
            try:
                saved_layout = self.manager.item_metadata(step).tree
            except Exception as e:  # noqa: BLE001  (its metadata is unreadable: damaged)
                problem = f"is unreadable ({type(e).__name__})"
            else:
                mismatch = layout_mismatch(saved_layout, item_template)
                if mismatch is not None:
                    self._set_aside(step, mismatch)
                    continue
                state, problem = self._restore(step, item_template)
                if problem is None:
                    return step, state
            log.warning("checkpoint %s/%d %s: removed; trying an older one", self.directory, step,
                        problem)
            self._discard(step)
        return None

    def _restore(self, step: int, item_template: Any) -> tuple[Any, str | None]:
        """`(state, None)` when `step` restores intact and valid, else `(None, what is wrong)`."""
        try:
            item = self.manager.restore(step, args=ocp.args.StandardRestore(item_template))
        except Exception as e:  # noqa: BLE001  (the layout fits, so its data is damaged)
            return None, f"is unreadable ({type(e).__name__})"
        state = item["state"]
        if not np.array_equal(np.asarray(item["sha256"]), tree_digest(state)):
            return None, "does not match its checksum (corrupt)"
        problem = self.valid(state)
        return (state, None) if problem is None else (None, problem)

    def _set_aside(self, step: int, mismatch: str) -> None:
        target = self.aside / str(step)
        n = 1
        while target.exists():
            target, n = self.aside / f"{step}.{n}", n + 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.directory / str(step)), str(target))
        self.manager.reload()
        log.warning("checkpoint %s/%d does not fit the current state (%s): it belongs to other "
                    "params; left intact in %s and not used", self.directory, step, mismatch,
                    target)

    def _discard(self, step: int) -> None:
        try:
            self.manager.delete(step)
        except Exception:  # noqa: BLE001
            shutil.rmtree(self.directory / str(step), ignore_errors=True)
            self.manager.reload()

    def close(self) -> None:
        """Wait for pending saves and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()

    def remove(self) -> None:
        """Close and delete the directory (checkpoints set aside are kept)."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
