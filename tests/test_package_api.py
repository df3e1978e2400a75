"""`import pinn` gives the user API (pinn/__init__.py) without loading the package's modules: a
name is imported on first use, so the stages' dependencies stay their import closures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import pinn

ROOT = Path(__file__).resolve().parents[1]


def test_import_pinn_loads_no_module_of_the_package():
    code = ("import sys, pinn; loaded = sorted(m for m in sys.modules if m.startswith('pinn.'));"
            "print(loaded); assert not loaded, loaded;"
            "pinn.Problem; assert 'pinn.problems' in sys.modules and 'pinn.train' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("name", pinn.__all__)
def test_every_exported_name_is_the_object_of_its_module(name):
    import importlib

    module = importlib.import_module(pinn._EXPORTS[name])
    assert getattr(pinn, name) is getattr(module, name)
    assert name in dir(pinn)


def test_submodules_and_unknown_names():
    from pinn import io, refine  # modules still import as before (no export shadows one)

    assert io.__name__ == "pinn.io" and refine.__name__ == "pinn.refine"
    # a submodule is reachable as an attribute without importing it first (help(pinn.sampling.rad))
    code = "import pinn; print(pinn.sampling.rad.__module__, pinn.curves.time_to.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["pinn.sampling", "pinn.curves"]
    with pytest.raises(AttributeError, match="module 'pinn' has no attribute 'Problme'"):
        pinn.Problme  # noqa: B018


def test_a_problem_can_be_written_against_the_top_level_names():
    from dataclasses import dataclass
    from typing import ClassVar

    @dataclass(frozen=True)
    class Decay(pinn.Problem):
        """u_t = -u, u(0) = 1 on t in [0, 1] (the exact solution exp(-t))."""

        box: ClassVar[pinn.Box] = pinn.Box(("t", "x"), (0.0, 0.0), (1.0, 1.0), (False, False))
        derivatives: ClassVar[tuple[str, ...]] = ("u_t",)

        def residuals(self, d, z):
            return {"pde": d["u_t"] + d["u"]}

        def conditions(self):
            return (pinn.Initial(lambda z: 1.0 + 0.0 * z[:, 1]),)

    import jax.numpy as jnp

    z = jnp.array([[0.0, 0.3], [0.5, 0.1]])
    r = Decay().pde_residuals(lambda zz: jnp.exp(-zz[:, 0]), z)["pde"]
    assert float(jnp.max(jnp.abs(r))) < 1e-6


def test_dir_lists_the_api_not_the_helper_imports():
    import pinn

    names = dir(pinn)
    assert {"Problem", "Trainer", "fixed", "rad"} <= set(names)
    assert not {"Any", "annotations", "import_module"} & set(names)
