"""`pinn.stages.resume.Resume`: never resume from a checkpoint whose history is gone or damaged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import pytest

from pinn.stages.resume import Resume

STATE = {"w": jnp.arange(3.0), "step": jnp.asarray(0, jnp.int32)}


def _saved(root: Path) -> Resume:
    saved = Resume(root, "fp")
    rows = [{"level_step": 10, "loss": 1.0}, {"level_step": 20, "loss": 0.5}]
    saved.save(20, dict(STATE, step=jnp.asarray(20, jnp.int32)), rows)
    saved.checkpoints.wait()
    saved.checkpoints.close()
    return saved


def test_a_saved_run_resumes_with_its_history(tmp_path):
    _saved(tmp_path)
    again = Resume(tmp_path, "fp")
    step, state = again.checkpoints.restore_latest(STATE)
    assert step == 20 and [r["level_step"] for r in again.history(step, "level_step")] == [10, 20]


@pytest.mark.parametrize("damage", ["history removed", "history garbled"])
def test_checkpoints_without_a_readable_history_are_discarded(tmp_path, damage, capsys):
    saved = _saved(tmp_path)
    history = saved.directory / "history.json"
    if damage == "history removed":  # a kill part-way through removing the directory
        history.unlink()
    else:
        history.write_text("[{\"level_step\": 1")
    again = Resume(tmp_path, "fp")
    assert again.checkpoints.restore_latest(STATE) is None  # starts over, rows never lost
    assert "discarded, starting over" in capsys.readouterr().err


def test_removal_deletes_checkpoints_before_the_history(tmp_path, monkeypatch):
    """A kill after the first deletion leaves a history without checkpoints (harmless), never
    checkpoints without their history."""
    saved = _saved(tmp_path)
    calls = []
    real = shutil.rmtree

    def first_only(path, *args, **kwargs):
        calls.append(Path(path))
        if len(calls) > 1:
            raise KeyboardInterrupt  # killed here
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", first_only)
    with pytest.raises(KeyboardInterrupt):
        saved._remove()
    monkeypatch.setattr(shutil, "rmtree", real)
    assert not (saved.directory / "ckpt").exists()
    assert json.loads((saved.directory / "history.json").read_text())
    assert Resume(tmp_path, "fp").checkpoints.restore_latest(STATE) is None


def test_other_fingerprints_are_left_alone(tmp_path):
    _saved(tmp_path)
    other = Resume(tmp_path, "another")
    other.finish()
    assert (tmp_path / "fp" / "history.json").exists()
