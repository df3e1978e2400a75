"""Observation data as a loss term (issue 11 A) and the inverse heat example (issue 11 C.4).

Checked: the `data` term is the mean squared misfit of the observed field at the observation
points (against a hand computation on a tiny network, and through `Trainer`, which uses every
point every step); the problem's data are seeded and carry noise of the requested standard
deviation; `balancing.weights.data` reaches the term (fixed and GradNorm); data from a file
(`problem.observations.file`) are read by the gate, which stops a bad file in one line naming the
key and the file before any compute, and stored by the collocation stage; the inverse heat
residual, boundary and data terms vanish at the exact (u, a). The slow test edits the observation
file and checks that `dvc repro` reruns collocation and training (and not the reference)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from conftest import tiny_target_params
from pinn.config import ConfigError, validate_params
from pinn.problems import Observation, make_problem

ROOT = Path(__file__).resolve().parents[1]
HEAT = f"{ROOT / 'examples' / 'inverse_heat' / 'heat.py'}:InverseHeat"

# A problem with observations, as a user writes it in their own file: the 1-D heat equation with
# u observed (no initial condition: the data replace it).
SOURCE = textwrap.dedent('''
    from dataclasses import dataclass
    from typing import ClassVar

    import jax.numpy as jnp

    from pinn.problems import Box, Dirichlet, Observation, Problem


    @dataclass(frozen=True)
    class ObservedHeat(Problem):
        """u_t = u_xx on (t, x) in [0, 1]^2, u = exp(-pi^2 t) sin(pi x); u = 0 on x = 0, 1 and
        64 noisy observations of u."""

        noise_std: float = 0.05

        box: ClassVar[Box] = Box(("t", "x"), (0.0, 0.0), (1.0, 1.0))
        derivatives: ClassVar[tuple] = ("u_t", "u_xx")

        def residuals(self, d, z):
            return {"pde": d["u_t"] - d["u_xx"]}

        def conditions(self):
            return (Dirichlet("x"), Observation(count=64, noise_std=self.noise_std, seed=3))

        def exact(self, z):
            return jnp.exp(-jnp.pi**2 * z[:, 0]) * jnp.sin(jnp.pi * z[:, 1])


    @dataclass(frozen=True)
    class NoData(Problem):
        box: ClassVar[Box] = Box(("t", "x"), (0.0, 0.0), (1.0, 1.0))
        derivatives: ClassVar[tuple] = ("u_t",)

        def residuals(self, d, z):
            return {"pde": d["u_t"]}
''')


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    """The problems' file in a scratch working directory (targets and files relative to it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "problems.py").write_text(SOURCE)
    return "problems.py"


def tiny_params(target: str, **weights: float) -> dict:
    return tiny_target_params(target, weights, refine={"method": "lbfgs", "iterations": 5,
                                                       "block_size": 5})


# --- the data term ------------------------------------------------------------------------


def test_the_data_term_is_the_mean_squared_misfit_of_the_observed_field():
    """A hand-written two-output network (u, a): the `data` term of the inverse heat problem is
    mean_i (u(z_i) - v_i)^2 over every observation point (the u column, not a), the `bc` term
    is the misfit of a alone; computed by hand in NumPy."""
    from pinn.from_params import loss_from_params
    from pinn.loss import loss_dict

    problem = make_problem(HEAT)
    cfg = validate_params({"problem": {"target": HEAT},
                           "balancing": {"weights": {"pde": 1.0, "bc": 1.0, "data": 1.0}}})
    rng = np.random.default_rng(0)
    w1, b1, w2 = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=(4, 2))

    def net(z):
        return jnp.tanh(z @ w1 + b1) @ w2

    z_obs = rng.uniform(-1, 1, size=(7, 3))
    v_obs = rng.normal(size=7)
    points = jnp.asarray(rng.uniform(-1, 1, size=(5, 3)))
    bc_z = jnp.asarray(rng.uniform(-1, 1, size=(3, 3)))
    losses, _ = loss_dict(problem, loss_from_params(cfg, problem), net, points, jnp.ones(5),
                          jnp.zeros((0, 2)), bc_z, ((jnp.asarray(z_obs), jnp.asarray(v_obs)),))
    assert list(losses) == ["pde", "bc", "data"]
    by_hand = np.mean((np.tanh(z_obs @ w1 + b1) @ w2[:, 0] - v_obs) ** 2)
    np.testing.assert_allclose(float(losses["data"]), by_hand, rtol=1e-6)
    faces = [np.asarray(bc_z).copy() for _ in range(4)]
    for k, (axis, side) in enumerate([(1, -1), (1, 1), (2, -1), (2, 1)]):
        faces[k][:, axis] = side
    faces = np.concatenate(faces)  # a = 2 + sin(pi x) sin(pi y) = 2 on every face
    a_exact = 2 + np.sin(np.pi * faces[:, 1]) * np.sin(np.pi * faces[:, 2])
    np.testing.assert_allclose(float(losses["bc"]),
                               np.mean((np.tanh(faces @ w1 + b1) @ w2[:, 1] - a_exact) ** 2),
                               rtol=1e-5)


def test_the_trainer_uses_every_observation_every_step_and_weights_reach_the_term(user_file):
    """`balancing.weights.data` is the data term's weight, the total is Σ w_i L_i, and the
    logged data loss is the misfit over all the (never resampled) observation points."""
    from flax import nnx

    from pinn.models import make_model
    from pinn.train import Trainer

    cfg = validate_params(tiny_params("problems.py:ObservedHeat", pde=1.0, bc=2.0, data=7.0))
    problem = make_problem("problems.py:ObservedHeat")
    model = make_model(cfg.model, problem, seed=0)
    trainer = Trainer.from_params(cfg, problem, model)
    (z_obs, v_obs), = trainer.obs
    assert z_obs.shape == (64, 2)
    state = trainer.init(nnx.state(model, nnx.Param), 0)
    for _ in range(2):  # the same points at every step: the logged term is their full misfit
        params = state.params
        state, m = trainer.run(state, 1)
        u = np.asarray(trainer.u(params, z_obs))
        np.testing.assert_allclose(float(m["loss_data"]), np.mean((u - np.asarray(v_obs)) ** 2),
                                   rtol=1e-5)
    assert float(m["weight_data"]) == 7.0 and float(m["weight_bc"]) == 2.0
    total = sum(float(m[f"weight_{n}"]) * float(m[f"loss_{n}"]) for n in ("pde", "bc", "data"))
    np.testing.assert_allclose(float(m["loss"]), total, rtol=1e-5)
    # the adaptive balancers get the data term by name like the others: GradNorm lowers the weight
    # of the term with the largest gradient norm (here `data`), grad-ratio too
    from pinn.from_params import balancer_from_params

    for method in ("gradnorm", "grad_ratio"):
        cfg = validate_params({**tiny_params("problems.py:ObservedHeat"),
                               "balancing": {"method": method, "weights": {},
                                             "gradnorm": {"update_every": 1},
                                             "grad_ratio": {"update_every": 1}}})
        balancer = balancer_from_params(cfg, trainer.term_names)
        state = balancer.init(3)
        state = balancer.update(state, 0, jnp.ones(3), lambda: jnp.asarray([1.0, 1.0, 10.0]))
        w = np.asarray(balancer.weights(state))
        assert w[2] < min(w[0], w[1]), (method, w)


def test_problem_data_are_seeded_and_have_the_requested_noise(user_file):
    heat = make_problem(HEAT)  # 2500 observations of u, noise std 0.1, seed 0
    (c,) = heat.observation_conditions()
    assert (c.field, c.count, c.noise_std, c.term) == ("u", 2500, 0.1, "data")
    z, v = heat.observations(c)
    z2, v2 = heat.observations(c)
    np.testing.assert_array_equal(z, z2)
    np.testing.assert_array_equal(v, v2)
    assert z.shape == (2500, 3) and np.all(z >= heat.lower) and np.all(z <= heat.upper)
    with jax.enable_x64(True):
        clean = np.asarray(heat.exact(jnp.asarray(z)))[:, 0]
    noise = v - clean
    # the sample std of 2500 N(0, 0.1^2) draws: 0.1 +- 0.0014 (one standard error)
    assert abs(np.std(noise) - 0.1) < 0.006 and abs(np.mean(noise)) < 0.01
    zc, vc = heat.observations(Observation(field="u", count=2500, noise_std=0.0, seed=0))
    np.testing.assert_array_equal(zc, z)  # the points do not depend on the noise
    np.testing.assert_allclose(vc, clean, atol=1e-15)
    z3, _ = heat.observations(Observation(field="u", count=2500, noise_std=0.1, seed=1))
    assert not np.allclose(z3, z)
    # the noise level is a coefficient of the example, bounded
    assert make_problem(HEAT, noise_std=0.0).observation_conditions()[0].noise_std == 0.0
    with pytest.raises(ConfigError, match=r"problem\.coefficients\.noise_std = -0\.1: must be >= 0"):
        validate_params({"problem": {"target": HEAT, "coefficients": {"noise_std": -0.1}}})


# --- the inverse heat example -------------------------------------------------------------


def test_the_inverse_heat_residual_and_conditions_vanish_at_the_exact_solution():
    heat = make_problem(HEAT, noise_std=0.0)
    rng = np.random.default_rng(1)
    lo, hi = np.asarray(heat.lower), np.asarray(heat.upper)
    with jax.enable_x64(True):
        z = jnp.asarray(lo + (hi - lo) * rng.random((256, 3)))
        r = heat.pde_residuals(heat.exact, z)["pde"]
        np.testing.assert_allclose(r, 0.0, atol=1e-11)
        assert float(jnp.max(jnp.abs(heat.source(z)))) > 1.0  # f is not trivially zero
        obs = tuple(heat.observations(c) for c in heat.observation_conditions())
        terms = heat.condition_terms(heat.exact, z[:, 1:], z, exact_periodic=False,
                                     observations=obs)
        assert set(terms) == {"bc", "data"} and terms["bc"].shape == (4 * 256,)
        for name, t in terms.items():
            np.testing.assert_allclose(t, 0.0, atol=1e-12, err_msg=name)
        # a wrong diffusivity is seen by the residual: a + 0.1 leaves 0.1 Δu = -0.2π² u
        wrong = lambda zz: heat.exact(zz) + jnp.asarray([0.0, 0.1])
        r = heat.pde_residuals(wrong, z)["pde"]
        np.testing.assert_allclose(r, 0.2 * np.pi**2 * heat.exact(z)[:, 0], atol=1e-10)
    # the example's params pass the gate; the reference holds both fields
    cfg = validate_params(yaml.safe_load((ROOT / "examples/inverse_heat/params.yaml").read_text())
                          | {"problem": {"target": HEAT, "coefficients": {"noise_std": 0.1}}})
    assert dict(cfg.balancing.weights) == {"pde": 1.0, "bc": 10.0, "data": 10.0}


# --- data from a file -----------------------------------------------------------------------


def write_observations(path: Path, n: int = 40, seed: int = 0, **drop) -> tuple:
    rng = np.random.default_rng(seed)
    points = rng.random((n, 2))
    u = np.exp(-np.pi**2 * points[:, 0]) * np.sin(np.pi * points[:, 1])
    arrays = {"points": points, "u": u}
    for key in drop:
        arrays.pop(key)
    np.savez(path, **arrays)
    return points, u


def test_observations_from_a_file_are_read_and_stored_by_the_collocation_stage(user_file, tmp_path):
    from pinn.stages import collocation, gate
    from pinn.stages.common import invoke, load_collocation

    points, u = write_observations(tmp_path / "obs.npz")
    data = tiny_params("problems.py:ObservedHeat", pde=1.0, bc=1.0, data=1.0)
    data["problem"]["observations"] = {"file": "obs.npz", "keys": {}, "columns": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    invoke(collocation.main, ["--params", "params.yaml", "--out", "coll.npz"])
    sets = load_collocation(tmp_path / "coll.npz")
    np.testing.assert_array_equal(sets["observation0_points"], points)
    np.testing.assert_array_equal(sets["observation0_values"], u)
    cfg = validate_params(data)
    stamp = gate.observations_stamp(cfg)
    assert "problem.observations.file: obs.npz" in stamp
    write_observations(tmp_path / "obs.npz", seed=1)
    assert gate.observations_stamp(cfg) != stamp  # an edit changes the stamp (DVC reruns)
    # a problem without Observation conditions refuses a file, naming the key
    with pytest.raises(ConfigError, match=r"problem\.observations\.file = 'obs\.npz': "
                                          r"problems\.py:NoData has no Observation condition"):
        validate_params({**data, "problem": {**data["problem"], "target": "problems.py:NoData"},
                         "balancing": {"weights": {"pde": 1.0}}})


@pytest.mark.parametrize("bad, message", [
    ("missing", r"problem\.observations\.file = 'obs\.npz': file not found"),
    ("no_u", r"problem\.observations\.file = 'obs\.npz': array 'u' is missing \(or set "
             r"problem\.observations\.keys\.u\)"),
    ("nan", r"problem\.observations\.file = 'obs\.npz': array 'u' has 1 NaN"),
])
def test_a_bad_observation_file_stops_the_gate_in_one_line(user_file, tmp_path, bad, message):
    """Before any compute: the gate raises, naming the key and the file, and writes no stamp."""
    from pinn.stages import gate
    from pinn.stages.common import invoke

    if bad == "no_u":
        write_observations(tmp_path / "obs.npz", u=True)
    elif bad == "nan":
        points, u = write_observations(tmp_path / "obs.npz")
        u[3] = np.nan
        np.savez(tmp_path / "obs.npz", points=points, u=u)
    data = tiny_params("problems.py:ObservedHeat", pde=1.0, bc=1.0, data=1.0)
    data["problem"]["observations"] = {"file": "obs.npz", "keys": {}, "columns": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        invoke(gate.main, ["--params", "params.yaml", "--dvcfile", str(ROOT / "dvc.yaml"),
                           "--stamp", "ok", "--observations-stamp", "obs.stamp"])
    text = str(err.value)
    assert "\n" not in text and text.startswith("params.yaml: "), text
    assert __import__("re").search(message, text), text
    assert not (tmp_path / "ok").exists() and not (tmp_path / "obs.stamp").exists()


@pytest.mark.slow
def test_editing_the_observation_file_reruns_collocation_and_training(user_file, tmp_path,
                                                                     pipeline_env):
    """Through `dvc repro` in a project of its own (as `pinn run --params` makes it): the edit
    reruns collocation, train and what follows, not the reference; the new data are trained on."""
    import subprocess
    import sys

    from pinn import pipeline

    write_observations(tmp_path / "obs.npz")
    data = tiny_params("problems.py:ObservedHeat", pde=1.0, bc=1.0, data=1.0)
    data["problem"]["observations"] = {"file": "obs.npz", "keys": {}, "columns": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    project = pipeline.make_project(tmp_path / "project", tmp_path / "params.yaml")
    assert (project / "obs.npz").exists() and (project / "problems.py").exists()

    def repro():
        proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "train@level0"], cwd=project,
                              capture_output=True, text=True, env=pipeline_env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [line.split("'")[1] for line in proc.stdout.splitlines()
                if line.startswith("Running stage")]

    assert repro() == ["params", "reference", "collocation", "init", "train@level0"]
    before = json.loads((project / "data/train/level0/metrics.json").read_text())
    points, u = write_observations(project / "obs.npz", seed=5)
    assert repro() == ["params", "collocation", "train@level0"]
    with np.load(project / "data/collocation.npz") as sets:
        np.testing.assert_array_equal(sets["observation0_values"], u)
    after = json.loads((project / "data/train/level0/metrics.json").read_text())
    assert after["loss_data"] != before["loss_data"]
