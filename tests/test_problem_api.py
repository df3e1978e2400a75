"""The open problem API (issue 11): derivatives by name against analytic ones (every order, mixed
terms, vector fields), the built-in problems ported onto the API (the same residuals as the old
formulas), conditions (initial on u and u_t, Dirichlet, Neumann, periodic), problems from the
user's file (`problem.target`), named loss terms and the gate's checks."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pinn import derivatives as D
from pinn.config import ConfigError, validate_params
from pinn.from_params import loss_from_params
from pinn.loss import loss_dict
from pinn.problems import PROBLEMS, Box, Dirichlet, Initial, Neumann, Periodic, Problem, make_problem

ROOT = Path(__file__).resolve().parents[1]

A, B, C = 1.3, 0.7, 0.9


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def pts(n=64, d=3, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, d), jnp.float64, -1.0, 1.0)


# --- derivatives by name ---------------------------------------------------------------------
# u = sin(a x) e^{b t} cos(c y): every derivative is a closed form; v = x² y³ t (a polynomial, so
# mixed terms are non-trivial and high orders vanish exactly where they should).


def uv(z):
    t, x, y = z[:, 0], z[:, 1], z[:, 2]
    u = jnp.sin(A * x) * jnp.exp(B * t) * jnp.cos(C * y)
    v = x**2 * y**3 * t
    return jnp.stack([u, v], axis=1)


def analytic(z):
    t, x, y = (np.asarray(z[:, i]) for i in range(3))
    s, c, e, cy, sy = np.sin(A * x), np.cos(A * x), np.exp(B * t), np.cos(C * y), np.sin(C * y)
    return {
        "u": s * e * cy, "v": x**2 * y**3 * t,
        "u_t": B * s * e * cy, "u_tt": B**2 * s * e * cy,
        "u_x": A * c * e * cy, "u_xx": -(A**2) * s * e * cy, "u_xxx": -(A**3) * c * e * cy,
        "u_xxxx": A**4 * s * e * cy, "u_xy": -A * C * c * e * sy, "u_tx": A * B * c * e * cy,
        "u_txx": -B * A**2 * s * e * cy, "u_xxy": A**2 * C * s * e * sy,
        "v_x": 2 * x * y**3 * t, "v_y": 3 * x**2 * y**2 * t, "v_xy": 6 * x * y**2 * t,
        "v_yyy": 6 * x**2 * t, "v_xxyy": 12 * y * t, "v_xxx": 0 * x, "v_txyy": 12 * x * y,
    }


@pytest.mark.parametrize("method", D.METHODS)
def test_named_derivatives_match_analytic(method):
    z = pts()
    want = analytic(z)
    names = [n for n in want if "_" in n]
    got = jax.jit(lambda z: D.named_derivatives(uv, z, names, fields=("u", "v"),
                                                inputs=("t", "x", "y"), method=method))(z)
    assert set(got) == set(want)
    for n in want:
        np.testing.assert_allclose(got[n], want[n], rtol=1e-12, atol=1e-12, err_msg=n)


def test_named_derivatives_scalar_field_and_order_independence():
    z = pts()
    u = lambda z: uv(z)[:, 0]  # noqa: E731
    got = D.named_derivatives(u, z, ["u_xy", "u_yx", "u_xxxx"], inputs=("t", "x", "y"))
    np.testing.assert_allclose(got["u_xy"], got["u_yx"], rtol=0, atol=1e-14)
    np.testing.assert_allclose(got["u_xxxx"], analytic(z)["u_xxxx"], rtol=1e-12, atol=1e-12)


def test_named_derivatives_multi_character_inputs():
    z = pts(d=2)
    f = lambda z: jnp.sin(z[:, 0]) * z[:, 1] ** 3  # noqa: E731
    got = D.named_derivatives(f, z, ["u_x1x2x2", "u_x2x2x2"], inputs=("x1", "x2"))
    x1, x2 = np.asarray(z[:, 0]), np.asarray(z[:, 1])
    np.testing.assert_allclose(got["u_x1x2x2"], 6 * np.cos(x1) * x2, rtol=1e-12)
    np.testing.assert_allclose(got["u_x2x2x2"], 6 * np.sin(x1), rtol=1e-12)


@pytest.mark.parametrize("name", ["w_x", "u_q", "u", "ux"])
def test_bad_derivative_names(name):
    with pytest.raises(ValueError, match="derivative"):
        D.parse_derivative(name, ("u", "v"), ("t", "x"))


def test_no_hessian_in_the_graph():
    """Forward mode only: the jaxpr of a fourth derivative has no transpose (reverse) step."""
    jaxpr = str(jax.make_jaxpr(lambda z: D.nested_jvp(lambda w: uv(w)[:, 0], z, (1, 1, 1, 1)))(pts()))
    assert "transpose" not in jaxpr and "vjp" not in jaxpr


# --- the built-in problems are the old formulas, to rounding -----------------------------------
# The old implementation computed `value_and_derivs(u, z, first, second)` and the formulas below
# (git show HEAD~1:pinn/problems/allen_cahn.py, burgers.py); the port must give the same numbers.

OLD = {
    "allen_cahn_1d": ((0,), (1,), lambda P, d: d.first[0] - P.diffusion * d.second[1]
                      + P.reaction * (d.u**3 - d.u)),
    "allen_cahn_2d": ((0,), (1, 2), lambda P, d: d.first[0] - P.epsilon**2
                      * (d.second[1] + d.second[2]) - d.u + d.u**3),
    "burgers_1d": ((0,), (1,), lambda P, d: d.first[0] + d.u * d.first[1]
                   - P.viscosity * d.second[1]),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_builtins_equal_the_old_formulas(name):
    from pinn.config import ModelConfig
    from pinn.models import apply_fn, make_model, split

    problem = make_problem(name)
    graphdef, params, rest = split(make_model(ModelConfig(width=16, depth=2), problem, seed=1,
                                              dtype=jnp.float64))
    net = apply_fn(graphdef, rest)
    field = lambda z: net(params, z)  # noqa: E731
    lo, hi = np.asarray(problem.lower), np.asarray(problem.upper)
    z = jnp.asarray(lo + (hi - lo) * np.random.default_rng(0).random((256, len(lo))))
    first, second, formula = OLD[name]
    old = formula(problem, D.value_and_derivs(field, z, first, second))
    new = problem.residual(field, z)
    np.testing.assert_allclose(new, old, rtol=1e-13, atol=1e-13)
    assert problem.first == first and problem.second == second
    # the loss terms keep their names and order
    assert problem.term_names(False) == ("pde", "ic", "bc")
    assert problem.term_names(True) == (("pde", "ic", "bc") if name == "burgers_1d"
                                        else ("pde", "ic"))


# --- a user problem: conditions and loss terms -----------------------------------------------


@dataclass(frozen=True)
class Wave(Problem):
    """u_tt = c² u_xx on [0, 1]², u(0, x) = sin(πx), u_t(0, x) = 0, u = 0 on x = 0, 1."""

    box = Box(("t", "x"), (0.0, 0.0), (1.0, 1.0))
    derivatives = ("u_tt", "u_xx")
    c: float = 2.0

    def residuals(self, d, z):
        return {"pde": d["u_tt"] - self.c**2 * d["u_xx"]}

    def conditions(self):
        return (Initial(lambda z: jnp.sin(jnp.pi * z[:, 1])), Initial(order=1, term="ic_t"),
                Dirichlet("x"))



def wave_exact(z):
    return jnp.sin(jnp.pi * z[:, 1]) * jnp.cos(2 * jnp.pi * z[:, 0])


def test_initial_condition_on_u_t_and_dirichlet():
    p = Wave()
    z = jnp.asarray(np.random.default_rng(1).random((40, 2)))
    np.testing.assert_allclose(p.residual(wave_exact, z), 0.0, atol=1e-10)
    terms = p.condition_terms(wave_exact, z[:, 1:], z, exact_periodic=False)
    assert list(terms) == ["ic", "ic_t", "bc"] and terms["bc"].shape == (80,)
    for r in terms.values():
        np.testing.assert_allclose(r, 0.0, atol=1e-12)
    # u_t(0, x) is enforced: a solution moving at t = 0 fails only the ic_t term
    moving = lambda z: wave_exact(z) + z[:, 0] * jnp.sin(jnp.pi * z[:, 1])  # noqa: E731
    terms = p.condition_terms(moving, z[:, 1:], z, exact_periodic=False)
    np.testing.assert_allclose(terms["ic"], 0.0, atol=1e-12)
    np.testing.assert_allclose(terms["ic_t"], np.sin(np.pi * np.asarray(z[:, 1])), atol=1e-12)
    assert p.term_names(True) == ("pde", "ic", "ic_t", "bc")


@dataclass(frozen=True)
class Steady(Problem):
    """A steady 2-D system with a mixed derivative and a Neumann face: u_xy = v, v_x = -sin x,
    u_y = cos x on y = 2, v = 1 on x = 0."""

    box = Box(("x", "y"), (0.0, 0.0), (1.0, 2.0), time=None)
    fields = ("u", "v")
    derivatives = ("u_xy", "v_x", "u_y")
    residual_names = ("mixed", "coupling")

    def residuals(self, d, z):
        return {"mixed": d["u_xy"] - d["v"], "coupling": d["v_x"] + jnp.sin(z[:, 0])}

    def conditions(self):
        return (Neumann("y", "upper", lambda z: jnp.cos(z[:, 0]), term="flux"),
                Dirichlet("x", "lower", field="v", value=lambda z: jnp.ones(z.shape[0])))


def steady_exact(z):  # u = sin(x) y, v = cos(x): u_xy = cos(x) = v, v_x = -sin(x)
    return jnp.stack([jnp.sin(z[:, 0]) * z[:, 1], jnp.cos(z[:, 0])], axis=1)


def test_steady_system_with_mixed_derivative_and_neumann_face():
    p = Steady()
    z = jnp.asarray(np.random.default_rng(2).random((30, 2)) * [1.0, 2.0])
    r = p.pde_residuals(steady_exact, z)
    assert set(r) == {"mixed", "coupling"}
    for v in r.values():
        np.testing.assert_allclose(v, 0.0, atol=1e-12)
    # Neumann on y = 2: u_y = sin(x) ≠ cos(x) in general -> mismatch sin(x) - cos(x)
    terms = p.condition_terms(steady_exact, z[:, 1:], z, exact_periodic=False)
    x = np.asarray(z[:, 0])
    np.testing.assert_allclose(terms["flux"], np.sin(x) - np.cos(x), atol=1e-12)
    np.testing.assert_allclose(terms["bc"], 0.0, atol=1e-12)  # v(0, y) = cos 0 = 1
    assert p.steady and p.term_names(False) == ("mixed", "coupling", "flux", "bc")


def test_loss_is_a_dict_of_named_terms():
    from pinn.config import Params

    cfg = Params()
    p = Steady()
    spec = loss_from_params(cfg, p)
    assert spec.term_names == ("mixed", "coupling", "flux", "bc")
    z = jnp.asarray(np.random.default_rng(3).random((16, 2)))
    losses, _ = loss_dict(p, spec, steady_exact, z, jnp.ones(16), z[:, 1:], z)
    assert list(losses) == list(spec.term_names)
    assert float(losses["mixed"]) < 1e-20 and float(losses["flux"]) > 1e-3


def test_periodic_condition_is_dropped_under_exact_embedding():
    p = make_problem("allen_cahn_2d")
    assert not any(isinstance(c, Periodic) for c in p.active_conditions(True))
    assert p.boundary_residual(lambda z: z[:, 0], pts(8), exact_periodic=True) is None


# --- problems from the user's file; the gate ---------------------------------------------------

USER_FILE = textwrap.dedent('''
    from dataclasses import dataclass
    from typing import ClassVar
    import jax.numpy as jnp
    from pinn.problems import Bound, Box, Dirichlet, Initial, Problem

    @dataclass(frozen=True)
    class Heat(Problem):
        box: ClassVar[Box] = Box(("t", "x"), (0.0, 0.0), (1.0, 1.0))
        derivatives: ClassVar[tuple] = ("u_t", "u_xx")
        coefficient_bounds: ClassVar[dict] = {"kappa": Bound(gt=0.0, why="diffusion")}
        kappa: float = 0.1
        speeds: tuple = (1.0, 2.0)

        def residuals(self, d, z):
            return {"pde": d["u_t"] - self.kappa * d["u_xx"]}

        def conditions(self):
            return (Initial(lambda z: jnp.sin(jnp.pi * z[:, 1])), Dirichlet("x"))

        def exact(self, z):
            return jnp.exp(-self.kappa * jnp.pi**2 * z[:, 0]) * jnp.sin(jnp.pi * z[:, 1])
''')


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_pde.py").write_text(USER_FILE)
    return "my_pde.py:Heat"


def test_target_loads_the_users_class(user_file):
    p = make_problem(user_file, kappa=0.5, speeds=[3.0, 4.0])
    assert type(p).__name__ == "Heat" and p.kappa == 0.5 and p.speeds == (3.0, 4.0)
    hash(p)  # usable as a static jit argument
    cfg = validate_params({"problem": {"target": user_file, "coefficients": {"kappa": 0.2}},
                           "balancing": {"weights": {"pde": 1.0, "ic": 5.0}}})
    assert cfg.problem.name is None and cfg.problem.identifier == user_file


@pytest.mark.parametrize("problem,message", [
    ({"target": "my_pde.py:Heat", "coefficients": {"kappa": -1.0}},
     r"problem\.coefficients\.kappa = -1\.0: must be > 0 \(diffusion\)"),
    ({"target": "my_pde.py:Heat", "coefficients": {"kapa": 1.0}},
     r"problem\.coefficients\.kapa = 1\.0: not a coefficient of my_pde\.py:Heat; did you mean 'kappa'"),
    ({"target": "my_pde.py:Heat", "coefficients": {"speeds": [1.0, -2.0]}}, None),
    ({"target": "my_pde.py:Heat", "name": "burgers_1d"}, r"problem\.target = .*not both"),
    ({"target": "nofile.py:Heat"}, r"problem\.target = 'nofile\.py:Heat': file nofile\.py not found"),
    ({"target": "my_pde.py:Cool"}, r"problem\.target = .*Cool is not a pinn\.problems\.Problem"),
])
def test_gate_checks_the_target(user_file, problem, message):
    if message is None:  # a vector coefficient without a bound is accepted as is
        validate_params({"problem": problem})
        return
    with pytest.raises(ConfigError, match=message):
        validate_params({"problem": problem})


def test_gate_checks_weight_names_and_causal(user_file):
    with pytest.raises(ConfigError, match=r"balancing\.weights\.flux = 2\.0: not a loss term"):
        validate_params({"problem": {"target": user_file},
                         "balancing": {"weights": {"flux": 2.0}}})


@pytest.mark.parametrize("residual,message", [
    # DeepXDE's habit: an (N, 1) residual; it would broadcast against the (N,) weights into an
    # (N, N) loss and train on a wrong objective without any error (a fresh user found this)
    ('(d["u_t"] - self.kappa * d["u_xx"])[:, None]',
     r"problem\.target = 'my_pde\.py:Heat': residuals\(\)\['pde'\] has shape \(4, 1\) for 4 "
     r"points: each residual must be one value per point"),
    ('d["u_t"] - self.kappa * d["u_xx"] + d["u_x"]',
     r"residuals\(\) reads d\['u_x'\], which derivatives = \('u_t', 'u_xx'\) does not declare"),
    ('d["u_t"] - self.kappa * d["u_xx"] + undefined_name',
     r"residuals\(\) fails on 4 points: NameError: name 'undefined_name' is not defined"),
])
def test_gate_traces_the_residuals(user_file, tmp_path, residual, message):
    """Each residual must be (N,) and read only declared derivatives: checked by the gate on
    abstract points (no compute), one line naming problem.target, before any stage runs."""
    (tmp_path / "my_pde.py").write_text(USER_FILE.replace(
        'return {"pde": d["u_t"] - self.kappa * d["u_xx"]}', f'return {{"pde": {residual}}}'))
    errors = []
    try:
        validate_params({"problem": {"target": user_file}})
    except ConfigError as e:
        errors = str(e).splitlines()
    assert len(errors) == 1 and re.search(message, errors[0]), errors


def test_edited_file_is_loaded_again(user_file, tmp_path):
    from pinn.problems import load_problem_class

    first = load_problem_class(user_file)
    (tmp_path / "my_pde.py").write_text(USER_FILE.replace("kappa: float = 0.1", "kappa: float = 0.3"))
    assert load_problem_class(user_file)().kappa == 0.3 and first().kappa == 0.1


# --- the user's file is a DVC dependency ----------------------------------------------------


def _repro(root) -> str:
    import subprocess
    import sys

    from pinn import pipeline

    proc = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, capture_output=True,
                          text=True, env=pipeline.subprocess_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _ran(output: str) -> set[str]:
    import re

    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.mark.slow
def test_editing_the_users_problem_file_reruns_training(tmp_path, monkeypatch):
    """A problem defined in the user's file trains through the pipeline (a few steps); editing
    that file reruns the stages that build the problem, and nothing reruns without an edit."""
    from pathlib import Path

    import yaml

    from pinn import pipeline

    tiny = Path(__file__).resolve().parents[1] / "benchmarks" / "regression" / "params.yaml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_pde.py").write_text(USER_FILE)
    data = yaml.safe_load(tiny.read_text())
    # only the target: stages declare the `problem` section, not problem.name, so the file need
    # not write `name: null`
    data["problem"] = {"target": "my_pde.py:Heat", "coefficients": {"kappa": 0.05}}
    (tmp_path / "user.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    root = pipeline.make_project(tmp_path / "project", tmp_path / "user.yaml")
    assert (root / "my_pde.py").read_text() == USER_FILE

    first = _ran(_repro(root))
    assert {"reference", "collocation", "init", "train@level0", "train@level1", "refine",
            "evaluate", "report"} <= first, first
    assert np.isfinite(__import__("json").loads((root / "metrics.json").read_text())["rel_l2"])
    assert _ran(_repro(root)) <= {"params"}  # nothing changed: only the gate (always) runs

    # the user edits the residual in their own file; `pinn run` copies it again
    (tmp_path / "my_pde.py").write_text(USER_FILE.replace('d["u_t"] - self.kappa', 'd["u_t"] - 1.5 * self.kappa'))
    pipeline.make_project(tmp_path / "project", tmp_path / "user.yaml")
    again = _ran(_repro(root))
    assert {"reference", "train@level0", "train@level1", "refine", "evaluate"} <= again, again


def test_wave_example_exact_solution_satisfies_its_problem(monkeypatch):
    """examples/wave1d: the exact solution zeroes the residual and every condition; its reference
    is the exact solution on a grid; the example's params pass the gate."""
    from pathlib import Path

    from pinn.config import load_params

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    cfg = load_params(root / "examples/wave1d/params.yaml")
    p = make_problem(cfg.problem.identifier, **cfg.problem.coefficients)
    z = jnp.asarray(np.random.default_rng(4).random((64, 2)))
    np.testing.assert_allclose(p.residual(p.exact, z), 0.0, atol=1e-9)
    for name, r in p.condition_terms(p.exact, z[:, 1:], z, exact_periodic=True).items():
        np.testing.assert_allclose(r, 0.0, atol=1e-12, err_msg=name)
    assert p.term_names(True) == ("pde", "ic", "ic_t", "bc")
    ref = p.reference()
    assert ref.u.shape == (201, 256) and ref.est_rel_error == 0.0
    np.testing.assert_allclose(ref.u[0], np.sin(np.pi * ref.x) + 0.5 * np.sin(4 * np.pi * ref.x),
                               atol=1e-14)


def test_pinn_reference_takes_a_users_problem_and_its_coefficients(tmp_path):
    """`pinn reference path.py:Class -c name=value --out f.npz`: the problem's own reference (here
    its exact solution) with those coefficients; bad input: one line, exit 2, nothing written."""
    from typer.testing import CliRunner

    from pinn.cli import app
    from pinn.reference import Reference

    target = str(ROOT / "examples/convection/convection.py") + ":Convection"
    out = tmp_path / "ref.npz"
    result = CliRunner().invoke(app, ["reference", target, "-c", "beta=12", "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    ref = Reference.load(out)
    t, x = np.meshgrid(ref.t, ref.x, indexing="ij")
    np.testing.assert_allclose(ref.u, np.sin(x - 12.0 * t), atol=1e-6)
    for args, expected in (
            (["-c", "beta=-1"], "coefficient beta = -1"),
            (["-c", "speed=3"], "unknown coefficient(s) ['speed']"),
            (["-c", "beta"], "--coefficient beta: must be NAME=VALUE"),
            (["-c", "beta=abc"], "--coefficient beta=abc: beta must be a number")):
        bad = tmp_path / "bad.npz"
        result = CliRunner().invoke(app, ["reference", target, *args, "--out", str(bad)])
        assert result.exit_code == 2 and expected in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and not bad.exists()
    result = CliRunner().invoke(app, ["reference", "kdv", "--out", str(tmp_path / "k.npz")])
    assert result.exit_code == 2 and "unknown problem 'kdv'" in result.output


def test_a_misspelt_builtin_name_gets_a_suggestion(tmp_path):
    """`pinn reference burgers1d`: one line naming the closest built-in; none when nothing is
    close."""
    from typer.testing import CliRunner

    from pinn.cli import app

    out = tmp_path / "r.npz"
    result = CliRunner().invoke(app, ["reference", "burgers1d", "--out", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "unknown problem 'burgers1d'" in lines[0]
    assert lines[0].endswith("(did you mean 'burgers_1d'?)")
    assert not out.exists()
    result = CliRunner().invoke(app, ["reference", "navier_stokes", "--out", str(out)])
    assert result.exit_code == 2 and "did you mean" not in result.output
