"""The reference stage warns when the reference's own error is above `reference.warn_above`,
and fails above `reference.fail_above` (one line naming the key, nothing written) unless
`reference.allow_inaccurate` (issue 15 item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pinn.config import load_params
from pinn.errors import UserError
from pinn.reference import Reference
from pinn.stages import reference as stage
from pinn.stages.common import invoke

TINY = Path(__file__).resolve().parents[1] / "benchmarks" / "regression" / "params.yaml"


class _Problem:
    def __init__(self, error: float):
        self.error = error

    def reference(self, progress: bool = False) -> Reference:
        t, x = np.linspace(0, 1, 3), np.linspace(-1, 1, 5)
        return Reference(t=t, x=x, y=None, u=np.zeros((3, 5)), est_rel_error=self.error)


def _run(tmp_path, monkeypatch, error: float, **limits):
    data = load_params(TINY).model_dump()
    data["reference"].update(limits)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data))
    monkeypatch.setattr(stage, "problem_of", lambda cfg: _Problem(error))
    out = tmp_path / "reference.npz"
    invoke(stage.main, ["--params", str(params), "--out", str(out), "--quiet"])
    return out


def test_accurate_reference_is_written_silently(tmp_path, monkeypatch, capsys):
    assert _run(tmp_path, monkeypatch, 1e-9).is_file()
    assert "warning" not in capsys.readouterr().err


def test_inaccurate_reference_warns(tmp_path, monkeypatch, capsys):
    assert _run(tmp_path, monkeypatch, 1e-4).is_file()
    err = capsys.readouterr().err
    assert "reference.warn_above" in err and "1.00e-04" in err


def test_useless_reference_fails_naming_the_key_and_writes_nothing(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"reference\.fail_above = 0\.01") as e:
        _run(tmp_path, monkeypatch, 0.15)
    assert len(str(e.value).splitlines()) == 1
    assert not (tmp_path / "reference.npz").exists()


def test_useless_reference_allowed_on_request(tmp_path, monkeypatch, capsys):
    assert _run(tmp_path, monkeypatch, 0.15, allow_inaccurate=True).is_file()
    assert "reference.warn_above" in capsys.readouterr().err
