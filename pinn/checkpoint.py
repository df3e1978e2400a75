"""Orbax checkpoints of the whole training state (model, optimizer, sampler, balancer, step, key).

`Checkpointer` wraps an `orbax.checkpoint.CheckpointManager`. Restoring walks the saved steps from
newest to oldest and skips any that fail to restore, whose contents do not match the SHA-256 digest
saved with them (orbax itself does not notice flipped bytes in array data), or that hold non-finite
parameters: a truncated or corrupt checkpoint is never trained from; each skip is reported.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger("pinn.checkpoint")


def _finite(tree: Any) -> bool:
    for x in jax.tree_util.tree_leaves(tree):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            return False
    return True


def tree_digest(tree: Any) -> np.ndarray:
    """SHA-256 over every leaf's dtype, shape and bytes in tree order, as 32 uint8."""
    h = hashlib.sha256()
    for x in jax.tree_util.tree_leaves(tree):
        x = np.ascontiguousarray(np.asarray(x))
        h.update(f"{x.dtype.str}{x.shape}".encode())
        h.update(x.tobytes())
    return np.frombuffer(h.digest(), np.uint8).copy()


class Checkpointer:
    def __init__(self, directory: str | Path, *, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
        )

    def save(self, step: int, state: Any, *, wait: bool = False) -> None:
        item = {"state": state, "sha256": tree_digest(state)}
        self.manager.save(int(step), args=ocp.args.StandardSave(item), force=True)
        if wait:
            self.manager.wait_until_finished()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, template: Any) -> tuple[int, Any] | None:
        """Newest checkpoint that restores, matches its digest and is finite, as `(step, state)`;
        None if there is none."""
        for step in reversed(self.steps()):
            try:
                item = self.manager.restore(step, args=ocp.args.StandardRestore(
                    {"state": template, "sha256": np.zeros(32, np.uint8)}))
            except Exception as e:  # corrupt / truncated / incompatible
                problem = f"is unreadable ({type(e).__name__})"
            else:
                state = item["state"]
                if not np.array_equal(np.asarray(item["sha256"]), tree_digest(state)):
                    problem = "does not match its checksum (corrupt)"
                elif not _finite(state):
                    problem = "holds non-finite values"
                else:
                    return step, state
            # removed: the resumed run saves this step again, and orbax refuses existing steps
            log.warning("checkpoint %s/%d %s: removed; trying an older one", self.directory, step,
                        problem)
            self._discard(step)
        return None

    def _discard(self, step: int) -> None:
        try:
            self.manager.delete(step)
        except Exception:
            shutil.rmtree(self.directory / str(step), ignore_errors=True)
            self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
