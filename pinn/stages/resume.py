"""Resuming a killed stage: orbax checkpoints and the partial history, keyed by a fingerprint."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path

from pinn import io
from pinn.config import Params

log = logging.getLogger("pinn.stages")



def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(cfg: Params, stage: str, inputs: list[Path]) -> str:
    """Digest of the whole params and the stage's input files: a resume checkpoint is only used
    by a run with the same fingerprint."""
    h = hashlib.sha256(cfg.model_dump_json().encode())
    h.update(stage.encode())
    for p in inputs:
        h.update(_file_digest(p).encode())
    return h.hexdigest()[:16]


class Resume:
    """In-progress state of one stage: orbax checkpoints + the partial history, kept in
    `<directory>/<fingerprint>/`.

    Checkpoints of other params or inputs live under their own fingerprints and are left alone
    (switching back to those params resumes them); a directory whose history is unreadable
    (damaged) is removed and the stage starts over. `finish()` removes this run's directory only.
    """

    def __init__(self, directory: Path, fp: str):
        from pinn.checkpoint import Checkpointer

        self.directory = Path(directory) / fp
        ckpt = self.directory / "ckpt"
        history = self.directory / "history.json"
        damaged = None
        if self.directory.exists() and self._read_history() is None:
            damaged = "its history.json is damaged"
        elif ckpt.is_dir() and any(ckpt.iterdir()) and not history.exists():
            # a history is always written before its checkpoint: this is a half-removed directory
            damaged = "it holds checkpoints without their history"
        if damaged:
            log.warning("%s: %s: discarded, starting over", self.directory, damaged)
            print(f"{self.directory}: {damaged}: discarded, starting over", file=sys.stderr)
            self._remove()
        others = [p.name for p in Path(directory).glob("*") if p.is_dir() and p.name != fp]
        if others:
            print(f"{directory}: in-progress checkpoints of other params or inputs ({', '.join(others)}) "
                  "left alone", file=sys.stderr)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.checkpoints = Checkpointer(self.directory / "ckpt")

    def _read_history(self) -> list[dict] | None:
        """The saved rows; [] when there are none; None when the file is damaged."""
        path = self.directory / "history.json"
        if not path.exists():
            return []
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return None
        return rows

    def history(self, upto: int, key: str) -> list[dict]:
        """The saved rows with `row[key] <= upto` (those a restored checkpoint at `upto` covers)."""
        if upto == 0:
            return []
        return [r for r in self._read_history() or [] if r.get(key, 0) <= upto]

    def save(self, step: int, state, rows: list[dict]) -> None:
        # history first: a checkpoint (committed asynchronously) never gets ahead of it
        io.write_text(self.directory / "history.json", json.dumps(rows))
        self.checkpoints.save(step, state)

    def _remove(self) -> None:
        """Delete this run's directory, checkpoints first: a kill part-way through leaves older
        checkpoints with the history that covers them, or no checkpoint — never a checkpoint
        without its history (a rerun would resume from it with the rows before it lost). A plain
        rmtree deletes in directory order, which on tmpfs lists history.json first."""
        shutil.rmtree(self.directory / "ckpt", ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def finish(self) -> None:
        """The stage completed: this run's in-progress state is no longer needed."""
        self.checkpoints.close()
        self._remove()
        with contextlib.suppress(OSError):
            self.directory.parent.rmdir()  # when no other params' checkpoints are left
