"""Trainable PDE coefficients for inverse problems (issue 11 A, `problem.trainable`).

Checked: the parametrisation (lower bound -> log, upper, both, none) and its inverse; the loss's
gradient reaches the coefficient and equals a hand-derived one; one Adam step moves it against
the gradient; a few hundred Adam steps on a tiny manufactured inverse heat problem recover the
diffusivity; the coefficient survives export/reload and the level transfer; the params gate
refuses an unknown name or a bad initial guess in one line naming `problem.trainable.<name>`;
networks without trainable coefficients have exactly the parameters they had; evaluate's metrics
and the report's table."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from conftest import tiny_target_params
from pinn.config import ConfigError, validate_params
from pinn.problems import make_problem

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "benchmarks" / "regression" / "params.yaml"

SOURCE = textwrap.dedent('''
    import math
    from dataclasses import dataclass
    from typing import ClassVar

    import jax.numpy as jnp

    from pinn.problems import Bound, Box, Dirichlet, Initial, Observation, Problem


    @dataclass(frozen=True)
    class Heat(Problem):
        """u_t = k u_xx on (t, x) in [0, 1]^2, u = exp(-k pi^2 t) sin(pi x); 256 exact
        observations of u."""

        k: float = 0.2
        gain: tuple = (1.0, 2.0)   # a vector coefficient (never trainable)

        box: ClassVar[Box] = Box(("t", "x"), (0.0, 0.0), (1.0, 1.0))
        derivatives: ClassVar[tuple] = ("u_t", "u_xx")
        coefficient_bounds: ClassVar[dict] = {"k": Bound(gt=0.0, why="a diffusivity")}

        def residuals(self, d, z):
            return {"pde": d["u_t"] - self.k * d["u_xx"]}

        def conditions(self):
            return (Initial(lambda z: jnp.sin(jnp.pi * z[:, 1])), Dirichlet("x"),
                    Observation(count=256, seed=1))

        def exact(self, z):
            return jnp.exp(-self.k * jnp.pi**2 * z[:, 0]) * jnp.sin(jnp.pi * z[:, 1])


    @dataclass(frozen=True)
    class Level(Problem):
        """u = level: the residual is linear in the coefficient, which has no bound."""

        level: float = 0.0

        box: ClassVar[Box] = Box(("t", "x"), (0.0, 0.0), (1.0, 1.0))

        def residuals(self, d, z):
            return {"pde": d["u"] - self.level}
''')


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "problems.py").write_text(SOURCE)
    return "problems.py"


def tiny_params(target: str, trainable: dict, steps: int = 5, **weights: float) -> dict:
    return tiny_target_params(target, weights or {"pde": 1.0}, steps=steps,
                              refine={"method": "lbfgs", "iterations": 5, "block_size": 5},
                              problem={"trainable": trainable})


def trainer_of(cfg, problem):
    from pinn.cascade import make_trainer, state_template

    trainer, model = make_trainer(cfg, problem, "level0")
    return trainer, state_template(trainer, model, cfg, "level0")


# --- the parametrisation -----------------------------------------------------------------


def test_each_bound_gets_a_parametrisation_that_stays_inside_it_and_inverts():
    from pinn.problems.trainable import TrainableCoefficients

    spec = TrainableCoefficients(("a", "b", "c", "d"), (0.05, -2.0, 0.3, 1.5),
                                 (0.0, None, 0.0, None), (None, 1.0, 1.0, None))
    np.testing.assert_allclose(spec.raw_initial(), [math.log(0.05), math.log(3.0),
                                                    math.log(0.3 / 0.7), 1.5], rtol=1e-12)
    with jax.enable_x64(True):
        values = spec.values(jnp.asarray(spec.raw_initial(), jnp.float64))
        np.testing.assert_allclose([float(values[n]) for n in "abcd"], [0.05, -2.0, 0.3, 1.5],
                                   rtol=1e-12)
    for r in (-8.0, 8.0):  # any raw value stays inside the bound
        far = spec.values(jnp.full((4,), r))
        assert 0 < float(far["a"]) and float(far["b"]) < 1 and 0 < float(far["c"]) < 1


# --- gradients and training ----------------------------------------------------------------


def test_the_loss_gradient_reaches_the_coefficient_as_derived_by_hand(user_file):
    """d/draw mean((u_t - k u_xx)^2) with k = exp(raw) is -2 mean((u_t - k u_xx) u_xx) k; u_t,
    u_xx from plain jax.grad of the network, independently of the library's forward mode."""
    from pinn.loss import loss_terms
    from pinn.models import apply_fn, split

    cfg = validate_params(tiny_params("problems.py:Heat", {"k": 0.5}))
    problem = make_problem("problems.py:Heat")
    trainer, state = trainer_of(cfg, problem)
    z = jax.random.uniform(jax.random.PRNGKey(3), (32, 2))
    empty = jnp.zeros((0, 1)), jnp.zeros((0, 2))
    grads = jax.grad(lambda p: loss_terms(problem, trainer.spec, trainer.u, p, z, jnp.ones(32),
                                          *empty, trainer.obs)[0][0])(state.params)
    got = float(np.asarray(grads["coefficients"][...])[0])

    u1 = lambda p: trainer.u(state.params, p[None])[0]  # noqa: E731
    u_t = jax.vmap(lambda p: jax.grad(u1)(p)[0])(z)
    u_xx = jax.vmap(lambda p: jax.hessian(u1)(p)[1, 1])(z)
    k = 0.5
    by_hand = float(-2 * jnp.mean((u_t - k * u_xx) * u_xx) * k)
    assert abs(by_hand) > 1e-4  # a real gradient, not a vanishing one
    np.testing.assert_allclose(got, by_hand, rtol=2e-3)


@pytest.mark.parametrize("start", [5.0, -5.0])
def test_one_adam_step_moves_the_coefficient_against_the_gradient(user_file, start):
    """Residual u - level, a fresh network with |u| << 5: d loss/d level = -2 mean(u - level) has
    the sign of `level`, so one Adam step (size lr on its first step) moves it towards 0."""
    cfg = validate_params(tiny_params("problems.py:Level", {"level": start}))
    problem = make_problem("problems.py:Level")
    trainer, state = trainer_of(cfg, problem)
    assert abs(float(trainer.u(state.params, jnp.zeros((4, 2))).max())) < 3.0
    state, metrics = trainer.run(state, 1)
    moved = float(metrics["coef_level"]) - start
    lr = cfg.optimizer.learning_rate
    assert np.sign(moved) == -np.sign(start)
    assert 0.5 * lr < abs(moved) <= 1.01 * lr


def test_adam_recovers_the_diffusivity_of_a_manufactured_inverse_problem(user_file):
    """u_t = k u_xx with k = 0.2, 256 exact observations, from the guess k = 0.5: 600 Adam steps
    of a 2x16 network bring k within 10% of the truth (measured on CPU: k = 0.1897, 5.1%).
    The tolerance: after 600 steps the network fits u to about 1e-2, and k is fixed by the ratio
    u_t / u_xx of the fitted network, whose derivatives are less accurate than its values."""
    data = tiny_params("problems.py:Heat", {"k": 0.5}, pde=1.0, ic=1.0, bc=1.0, data=10.0)
    data["model"].update(width=16, depth=2)
    data["optimizer"].update(learning_rate=1e-2)
    cfg = validate_params(data)
    problem = make_problem("problems.py:Heat")
    trainer, state = trainer_of(cfg, problem)
    state, metrics = trainer.run(state, 600)
    k = float(metrics["coef_k"])
    print(f"recovered k = {k:.5f}")
    assert abs(k - 0.2) / 0.2 < 0.10, f"recovered k = {k:.4f} (true 0.2, guess 0.5)"


# --- exports, level transfer, refinement -------------------------------------------------------


def test_the_coefficient_survives_export_reload_and_the_level_transfer(user_file, tmp_path):
    from pinn import io
    from pinn.cascade import carry_of, carry_template, make_trainer, start_level
    from pinn.problems.trainable import raw_of

    data = tiny_params("problems.py:Heat", {"k": 0.5})
    data["multilevel"] = {"num_levels": 2, "coarsening_factor": 0.5, "finest_warmup_steps": 0,
                          "levels": {"level0": {"steps": 3, "init_from": "init"},
                                     "level1": {"steps": 3, "init_from": "level0"}}}
    cfg = validate_params(data)
    problem = make_problem("problems.py:Heat")
    trainer, state = trainer_of(cfg, problem)
    state.params["coefficients"][...] = jnp.asarray([math.log(0.3)])  # as if trained
    trained = float(np.asarray(raw_of(state.params))[0])
    io.save_tree(tmp_path / "level0.npz", carry_of(state))
    template_trainer, model = make_trainer(cfg, problem, "level0")
    coarse, _ = io.load_tree(tmp_path / "level0.npz",
                             carry_template(template_trainer, model, cfg, "level0"))
    assert float(np.asarray(raw_of(coarse.params))[0]) == trained
    fine_trainer, fine_model = make_trainer(cfg, problem, "level1")

    fine = start_level(cfg, fine_trainer, fine_model, "level1", previous=coarse,
                       previous_trainer=template_trainer)
    assert float(np.asarray(raw_of(fine.params))[0]) == trained
    assert float(fine_trainer.coefficient_metrics(fine.params)["coef_k"]) == pytest.approx(
        math.exp(trained), rel=1e-6)


def test_the_refinement_trains_and_logs_the_coefficient(user_file):
    from pinn.levels import level_model
    from pinn.models import split
    from pinn.precision import scope
    from pinn.refine import refine
    from pinn.problems.trainable import raw_of

    data = tiny_params("problems.py:Heat", {"k": 0.5}, pde=1.0, ic=1.0, bc=1.0, data=10.0)
    data["refine"].update(iterations=10, block_size=10)
    cfg = validate_params(data)
    problem = make_problem("problems.py:Heat")
    trainer, state = trainer_of(cfg, problem)
    rng = np.random.default_rng(0)
    collocation = {"interior": rng.random((128, 2)), "ic": rng.random((16, 1)),
                   "bc": rng.random((32, 2)), "observation0_points": np.asarray(trainer.obs[0][0]),
                   "observation0_values": np.asarray(trainer.obs[0][1])}
    graphdef, _, rest = split(level_model(cfg, problem, "level0"))
    with scope("float64"):
        params, rows, _ = refine(cfg, problem, graphdef, rest, state.params,
                                 np.ones(len(trainer.term_names)), collocation)
    assert "coef_k" in rows[-1]
    assert rows[-1]["coef_k"] != pytest.approx(0.5, rel=1e-9)
    assert rows[-1]["coef_k"] == pytest.approx(float(np.exp(np.asarray(raw_of(params))[0])))


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("trainable, key, words", [
    ({"kk": 0.5}, "problem.trainable.kk", "not a coefficient"),
    ({"k": -0.5}, "problem.trainable.k", "must be > 0"),
    ({"k": 0.0}, "problem.trainable.k", "must be > 0"),
    ({"k": "a"}, "problem.trainable.k", "must be a number"),
    ({"k": True}, "problem.trainable.k", "must be a number"),
    ({"gain": 1.0}, "problem.trainable.gain", "scalar"),
])
def test_the_gate_names_a_bad_trainable_entry_in_one_line(user_file, trainable, key, words):
    with pytest.raises(ConfigError) as e:
        validate_params(tiny_params("problems.py:Heat", trainable))
    lines = str(e.value).splitlines()
    assert len(lines) == 1 and key in lines[0] and words in lines[0], lines


def test_trainable_coefficients_are_refused_with_time_windows(user_file):
    data = tiny_params("problems.py:Level", {"level": 1.0})
    data["problem"]["target"] = "problems.py:Heat"
    data["problem"]["trainable"] = {"k": 0.5}
    data["problem"]["coefficients"] = {}
    data["windows"] = {"count": 2, "later": {"window1": {"after": "window0", "steps": 5,
                                                         "refine_iterations": 5}}}
    with pytest.raises(ConfigError, match="problem.trainable"):
        validate_params(data)


def test_without_trainable_coefficients_the_network_is_unchanged():
    """The parameter tree of a built-in problem's network has no `coefficients` entry and the
    same leaves as the network built without the new argument."""
    from pinn.models import make_model, split

    cfg = validate_params(yaml.safe_load(TINY.read_text()))
    problem = make_problem("burgers_1d")
    _, plain, _ = split(make_model(cfg.model, problem, seed=0))
    from pinn.levels import level_model

    _, via_levels, _ = split(level_model(cfg, problem, "level0"))
    assert "coefficients" not in via_levels
    assert jax.tree_util.tree_structure(plain) == jax.tree_util.tree_structure(via_levels)


# --- metrics and report ------------------------------------------------------------------------


def test_report_reports_true_value_and_relative_error(user_file):
    from pinn.problems.trainable import trainable_coefficients
    from pinn.report import coefficient_table

    problem = make_problem("problems.py:Heat")
    spec = trainable_coefficients({"k": 0.5}, problem)
    params = {"coefficients": jnp.asarray([math.log(0.21)])}
    got = spec.report(params, problem, known=True)
    assert got["coef_k"] == pytest.approx(0.21) and got["coef_k_true"] == 0.2
    assert got["coef_k_rel_error"] == pytest.approx(0.05)
    assert set(spec.report(params, problem, known=False)) == {"coef_k"}
    table = "\n".join(coefficient_table({"rel_l2": 0.1, **got}))
    assert "| k | 2.100e-01 | 2.000e-01 | 5.000e-02 |" in table
    assert "| k | 2.100e-01 | unknown | n/a |" in "\n".join(coefficient_table({"coef_k": 0.21}))
    assert coefficient_table({"rel_l2": 0.1}) == []


# --- through the pipeline ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_inverse_burgers_example_trains_the_viscosity_through_the_stages(tmp_path,
                                                                              monkeypatch):
    """The inverse Burgers example, shrunk (2 levels of 60 Adam steps, 10 refinement
    iterations), in process: the viscosity is logged in every level's history and the
    refinement's, moves from its guess, is in the level exports and the refined network (the
    value evaluate reports), and metrics.json and the report give it with its true value and
    error."""
    from pinn import pipeline

    monkeypatch.chdir(ROOT)  # the example's target is relative to the project root
    data = yaml.safe_load((ROOT / "examples/inverse_burgers/params.yaml").read_text())
    tiny = yaml.safe_load(TINY.read_text())
    for section in ("model", "collocation", "sampling", "train", "refine"):
        data[section] = tiny[section]
    data["multilevel"] = tiny["multilevel"]
    data["multilevel"]["levels"] = {"level0": {"steps": 60, "init_from": "init"},
                                    "level1": {"steps": 60, "init_from": "level0"}}
    data["train"].update(log_every=20, checkpoint_every=20)
    data["refine"].update(method="lbfgs", iterations=10, block_size=10)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data))
    root = pipeline.make_project(tmp_path / "run", params)
    pipeline.run_in_process(root)

    import csv

    rows = {lv: list(csv.DictReader(open(root / f"data/train/{lv}/history.csv")))
            for lv in ("level0", "level1")}
    refine_rows = list(csv.DictReader(open(root / "data/refine/history.csv")))
    nu = [float(r["coef_viscosity"]) for lv in ("level0", "level1") for r in rows[lv]]
    assert nu[0] < 0.05 and all(0 < v for v in nu)  # moved down from the guess, stays > 0
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["coef_viscosity_true"] == pytest.approx(0.01 / math.pi)
    got = metrics["coef_viscosity"]
    assert metrics["coef_viscosity_rel_error"] == pytest.approx(abs(got / (0.01 / math.pi) - 1))
    assert got == pytest.approx(float(refine_rows[-1]["coef_viscosity"]), rel=1e-12)
    # level1 started from level0's export: its coefficient is level0's last value
    with np.load(root / "data/export/level0.npz") as level0:
        raw = float(level0["tree.params['coefficients'].value"][0])
    assert math.exp(raw) == pytest.approx(nu[len(rows["level0"]) - 1], rel=1e-6)
    with np.load(root / "data/refined.npz") as refined:
        assert math.exp(float(refined["tree['coefficients'].value"][0])) == pytest.approx(got)
    report = (root / "report/report.md").read_text()
    assert "### Recovered coefficients" in report and "| viscosity |" in report



# --- the inverse Burgers example -------------------------------------------------------------


@pytest.mark.parametrize("name", ["params.yaml", "params_noise.yaml"])
def test_the_inverse_burgers_params_pass_the_gate(monkeypatch, name):
    from pinn.config import load_params

    monkeypatch.chdir(ROOT)
    cfg = load_params(ROOT / "examples/inverse_burgers" / name)
    assert cfg.problem.trainable == {"viscosity": 0.05}


def test_the_inverse_burgers_observations_are_the_cole_hopf_solution_plus_scaled_noise(
        monkeypatch):
    """The data: the solver's grid quadrature (`cole_hopf`, 256 nodes) at each point, and with
    noise_std = 0.01 the same points and values plus noise of std 0.01 rms(u) (sample std within
    10% for 2000 draws)."""
    from pinn.problems import Observation
    from pinn.reference.cole_hopf import cole_hopf

    monkeypatch.chdir(ROOT)
    clean = make_problem("examples/inverse_burgers/burgers.py:InverseBurgers")
    z, u = clean.observations(clean.observation_conditions()[0])
    assert z.shape == (2000, 2) and u.shape == (2000,)
    for i in range(0, 2000, 400):
        grid = cole_hopf(clean.viscosity, z[i:i + 1, 0], z[i:i + 1, 1], 256, progress=False)
        assert u[i] == pytest.approx(grid[0, 0], abs=1e-14)
    c = Observation(count=2000, noise_std=0.01, seed=0)
    z2, noisy = clean.observations(c)
    np.testing.assert_array_equal(z, z2)
    rms = np.sqrt(np.mean(u**2))
    assert np.std(noisy - u) == pytest.approx(0.01 * rms, rel=0.1)
