"""Orbax checkpoints of the whole training state (model, optimizer, sampler, balancer, step, key).

`Checkpointer` wraps an `orbax.checkpoint.CheckpointManager`. Restoring walks the saved steps from
newest to oldest and skips any that fail to restore or that hold non-finite parameters (a
truncated or corrupt checkpoint is never trained from); each skip is reported.
"""

from __future__ import annotations

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


class Checkpointer:
    def __init__(self, directory: str | Path, *, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
        )

    def save(self, step: int, state: Any, *, wait: bool = False) -> None:
        self.manager.save(int(step), args=ocp.args.StandardSave(state), force=True)
        if wait:
            self.manager.wait_until_finished()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, template: Any) -> tuple[int, Any] | None:
        """Newest checkpoint that restores and is finite, as `(step, state)`; None if there is none."""
        for step in reversed(self.steps()):
            try:
                state = self.manager.restore(step, args=ocp.args.StandardRestore(template))
            except Exception as e:  # corrupt / truncated / incompatible
                log.warning("checkpoint %s/%d is unreadable (%s); trying an older one",
                            self.directory, step, type(e).__name__)
                continue
            if not _finite(state):
                log.warning("checkpoint %s/%d holds non-finite values; trying an older one",
                            self.directory, step)
                continue
            return step, state
        return None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
