"""The hard initial condition `u = u0(t0, x) + (t - t0) N(t, x)` (`model.hard_initial_condition`):
exact at t0 for any parameters (values and spatial derivatives), no `ic` loss term, only the
columns of the fields with an initial value changed, refused where there is nothing to impose,
and trained through DVC (tests/test_overrides.py: `-S model.hard_initial_condition=true` reaches
training, no `ic` term logged)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from pinn.config import ConfigError, validate_params
from pinn.from_params import loss_from_params
from pinn.models import apply_fn, make_model, split
from pinn.problems import Box, Dirichlet, Initial, Problem, make_problem

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "benchmarks" / "regression" / "params.yaml"


def _params(hard: bool, **problem):
    data = yaml.safe_load(TINY.read_text())
    data["model"]["hard_initial_condition"] = hard
    if problem:
        data["problem"] = problem
    return validate_params(data)


def _network(cfg, problem, seed=3):
    g, params, rest = split(make_model(cfg.model, problem, seed=seed))
    return apply_fn(g, rest), params


@pytest.mark.parametrize("name", ["burgers_1d", "allen_cahn_1d"])
def test_the_network_equals_the_initial_condition_at_t0_whatever_its_parameters(name):
    cfg = _params(True, name=name, coefficients={})
    problem = make_problem(name)
    u, params = _network(cfg, problem)
    x = jnp.linspace(problem.lower[1], problem.upper[1], 33)[:, None]
    z0 = jnp.concatenate([jnp.full_like(x, problem.lower[0]), x], axis=1)
    u0 = problem.initial_condition(x)
    # random parameters, and the same network scaled: the value at t0 does not depend on them
    for p in (params, jax.tree_util.tree_map(lambda a: 3.0 * a + 0.1, params)):
        np.testing.assert_allclose(u(p, z0), u0, rtol=0, atol=1e-6)
        # spatial derivative at t0 is u0' (forward mode through the construction)
        du = jax.jvp(lambda zz: u(p, zz), (z0,), (jnp.zeros_like(z0).at[:, 1].set(1.0),))[1]
        du0 = jax.jvp(lambda xx: problem.initial_condition(xx), (x,), (jnp.ones_like(x),))[1]
        np.testing.assert_allclose(du, du0, rtol=0, atol=1e-4)
    # away from t0 the network is not the initial condition (it learns the rest)
    z1 = z0.at[:, 0].add(0.5)
    assert float(jnp.max(jnp.abs(u(params, z1) - u0))) > 1e-2
    assert "ic" not in loss_from_params(cfg, problem).term_names
    assert "ic" in loss_from_params(_params(False, name=name, coefficients={}), problem).term_names


@dataclass(frozen=True)
class TwoFields(Problem):
    """u_t = v, v_t = -u on [0, 1] x [0, 1] with an initial value for v only (u: Dirichlet)."""

    box: ClassVar[Box] = Box(("t", "x"), (0.0, 0.0), (1.0, 1.0), (False, False))
    fields: ClassVar[tuple[str, ...]] = ("u", "v")
    derivatives: ClassVar[tuple[str, ...]] = ("u_t", "v_t")
    residual_names: ClassVar[tuple[str, ...]] = ("pde_u", "pde_v")

    def residuals(self, d, z):
        return {"pde_u": d["u_t"] - d["v"], "pde_v": d["v_t"] + d["u"]}

    def conditions(self):
        return (Initial(lambda z: jnp.cos(z[:, 1]), field="v"), Dirichlet("x", field="u"))


def test_only_the_fields_with_an_initial_value_are_constrained():
    problem = TwoFields()
    on, off = _params(True), _params(False)
    (u_hard, params), (u_soft, _) = _network(on, problem), _network(off, problem)
    z = jnp.stack([jnp.array([0.0, 0.0, 0.4, 0.9]), jnp.array([0.1, 0.7, 0.3, 0.5])], axis=1)
    hard, soft = u_hard(params, z), u_soft(params, z)
    np.testing.assert_array_equal(hard[:, 0], soft[:, 0])  # u: no initial value, untouched
    np.testing.assert_allclose(hard[:2, 1], jnp.cos(z[:2, 1]), atol=1e-6)  # v(0, x) = cos x
    np.testing.assert_allclose(hard[2:, 1], jnp.cos(z[2:, 1]) + z[2:, 0] * soft[2:, 1], rtol=1e-6)
    assert problem.hard_initial_values()[0][0] == 1


def test_a_problem_without_an_initial_value_is_refused_naming_the_key():
    data = yaml.safe_load(TINY.read_text())
    data["model"]["hard_initial_condition"] = True
    data["problem"] = {"target": str(ROOT / "examples/poisson5d/poisson.py") + ":Poisson5D"}
    with pytest.raises(ConfigError) as e:
        validate_params(data)
    (line,) = str(e.value).splitlines()
    assert "model.hard_initial_condition = True" in line and "no initial value" in line
    data["model"]["hard_initial_condition"] = "yes"
    with pytest.raises(ConfigError, match="model.hard_initial_condition"):
        validate_params(data)
