"""Steady problems and systems of fields through the whole pipeline (issue 11): problems defined
in this file — (a) a steady 2-D problem with a mixed derivative (u_xy) and a Neumann face, (b) a
time-dependent system of two coupled fields (u, v) — and the 5-D Poisson example
(examples/poisson5d), each with an exact solution. Checked: the derivative plumbing against the exact solutions (every residual and
condition ~0 there), the network's one output per field, the references `from_exact` builds (a
tensor grid of a steady box stored as points, Sobol' points for 5-D, every field), accuracy per
field and stacked, the gate's refusals (causal weighting or an initial condition in a steady
problem), and a few training steps through the pipeline: metrics.json has a finite rel_l2 per
field and the report one panel per field."""

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
from pinn import report
from pinn.config import ConfigError, validate_params
from pinn.problems import load_problem_class, make_problem

ROOT = Path(__file__).resolve().parents[1]
#: the 5-D Poisson example (an absolute path: a target relative to any working directory)
POISSON5D = f"{ROOT / 'examples' / 'poisson5d' / 'poisson.py'}:Poisson5D"

# The problems, as a user writes them in their own file (`problem.target: problems.py:Class`).
SOURCE = textwrap.dedent('''
    from dataclasses import dataclass
    from typing import ClassVar

    import jax.numpy as jnp

    from pinn.problems import Bound, Box, Dirichlet, Initial, Neumann, Problem

    PI = jnp.pi


    @dataclass(frozen=True)
    class SteadyMixed(Problem):
        """-Δu + a u_xy = f on [0, 1]², u = sin(πx) sin(πy/2): u = 0 on x = 0, 1 and y = 0, and
        the Neumann face u_y = 0 on y = 1."""

        a: float = 1.0

        box: ClassVar[Box] = Box(("x", "y"), (0.0, 0.0), (1.0, 1.0), time=None)
        derivatives: ClassVar[tuple] = ("u_xx", "u_yy", "u_xy")
        coefficient_bounds: ClassVar[dict] = {"a": Bound(ge=0.0, why="the mixed term's weight")}

        def source(self, z):
            x, y = z[:, 0], z[:, 1]
            return (1.25 * PI**2 * jnp.sin(PI * x) * jnp.sin(PI * y / 2)
                    + self.a * 0.5 * PI**2 * jnp.cos(PI * x) * jnp.cos(PI * y / 2))

        def residuals(self, d, z):
            return {"pde": -(d["u_xx"] + d["u_yy"]) + self.a * d["u_xy"] - self.source(z)}

        def conditions(self):
            return (Dirichlet("x"), Dirichlet("y", "lower"), Neumann("y", "upper", term="flux"))

        def exact(self, z):
            return jnp.sin(PI * z[:, 0]) * jnp.sin(PI * z[:, 1] / 2)


    @dataclass(frozen=True)
    class WaveSystem(Problem):
        """The 1-D wave equation as a first-order system of two coupled fields: u_t = c v_x,
        v_t = c u_x on (t, x) ∈ [0, 1]², u = sin(πx) cos(cπt), v = cos(πx) sin(cπt); initial
        values of both fields (loss terms ic, ic_v), u = 0 on x = 0, 1."""

        c: float = 1.0

        box: ClassVar[Box] = Box(("t", "x"), (0.0, 0.0), (1.0, 1.0))
        fields: ClassVar[tuple] = ("u", "v")
        derivatives: ClassVar[tuple] = ("u_t", "u_x", "v_t", "v_x")
        residual_names: ClassVar[tuple] = ("pde_u", "pde_v")

        def residuals(self, d, z):
            return {"pde_u": d["u_t"] - self.c * d["v_x"], "pde_v": d["v_t"] - self.c * d["u_x"]}

        def conditions(self):
            return (Initial(lambda z: jnp.sin(PI * z[:, 1])), Initial(field="v", term="ic_v"),
                    Dirichlet("x", field="u"))

        def exact(self, z):
            t, x = z[:, 0], z[:, 1]
            w = self.c * PI * t
            return jnp.stack([jnp.sin(PI * x) * jnp.cos(w), jnp.cos(PI * x) * jnp.sin(w)], axis=1)
''')


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    """The problems' file in a scratch working directory (targets are relative to it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "problems.py").write_text(SOURCE)
    return "problems.py"


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def points(problem, n=64, seed=0):
    lo, hi = np.asarray(problem.lower), np.asarray(problem.upper)
    return jnp.asarray(lo + (hi - lo) * np.random.default_rng(seed).random((n, len(lo))))


# --- derivative plumbing against the exact solutions ------------------------------------------


@pytest.mark.parametrize("name", ["SteadyMixed", "WaveSystem", "Poisson5D"])
def test_exact_solution_zeroes_every_residual_and_condition(user_file, name):
    p = make_problem(POISSON5D if name == "Poisson5D" else f"{user_file}:{name}")
    z = points(p)
    for term, r in p.pde_residuals(p.exact, z).items():
        assert r.shape == (64,)
        np.testing.assert_allclose(r, 0.0, atol=1e-10, err_msg=term)
    space = z[:, list(p.spatial_axes)]
    for term, r in p.condition_terms(p.exact, space, z, exact_periodic=False).items():
        np.testing.assert_allclose(r, 0.0, atol=1e-12, err_msg=term)


def test_the_mixed_derivative_and_the_neumann_face_are_used(user_file):
    """A field that is right everywhere but in its mixed derivative fails the PDE; one that is
    right but for its slope on y = 1 fails only the Neumann term."""
    p = make_problem(f"{user_file}:SteadyMixed")
    assert p.steady and not p.has_initial and p.term_names(True) == ("pde", "bc", "flux")
    z = points(p)
    # x (1 - x) y²: u_xy ≠ 0, zero on the faces x = 0, 1 and y = 0, slope 2x(1 - x) on y = 1
    bump = lambda z: z[:, 0] * (1 - z[:, 0]) * z[:, 1] ** 2  # noqa: E731
    off = lambda z: p.exact(z) + 1e-3 * bump(z)  # noqa: E731
    terms = p.condition_terms(off, z, z, exact_periodic=False)
    np.testing.assert_allclose(terms["bc"], 0.0, atol=1e-12)
    x = np.asarray(z[:, 0])
    np.testing.assert_allclose(terms["flux"], 2e-3 * x * (1 - x), atol=1e-12)  # ∂(bump)/∂y at y=1
    d = p.named_derivatives(off, z)
    y = np.asarray(z[:, 1])
    np.testing.assert_allclose(d["u_xy"] - p.named_derivatives(p.exact, z)["u_xy"],
                               1e-3 * 2 * y * (1 - 2 * x), atol=1e-12)


def test_a_system_has_one_network_output_per_field_and_conditions_per_component(user_file):
    from pinn.config import ModelConfig
    from pinn.models import apply_fn, make_model, split

    p = make_problem(f"{user_file}:WaveSystem")
    assert p.term_names(False) == ("pde_u", "pde_v", "ic", "ic_v", "bc")
    graphdef, params, rest = split(make_model(ModelConfig(width=8, depth=2), p, seed=0,
                                              dtype=jnp.float64))
    net = apply_fn(graphdef, rest)
    z = points(p, 16)
    assert net(params, z).shape == (16, 2)
    assert make_model(ModelConfig(width=8, depth=2), make_problem("burgers_1d"), seed=0)(
        z.astype(jnp.float32)).shape == (16,)
    # the initial condition on v sees only v: shifting u by a constant leaves ic_v at zero
    shifted = lambda z: p.exact(z) + jnp.asarray([0.5, 0.0])  # noqa: E731
    terms = p.condition_terms(shifted, z[:, 1:], z, exact_periodic=False)
    np.testing.assert_allclose(terms["ic"], 0.5, atol=1e-12)
    np.testing.assert_allclose(terms["ic_v"], 0.0, atol=1e-12)
    np.testing.assert_allclose(terms["bc"], 0.5, atol=1e-12)


# --- references from exact solutions; accuracy per field ------------------------------------


def test_references_of_steady_system_and_5d_problems(user_file):
    from pinn.reference.exact import SCATTERED_POINTS, SCATTERED_SEED

    steady = make_problem(f"{user_file}:SteadyMixed").reference()
    assert not steady.is_grid and steady.input_names == ("x", "y") and steady.shape == (256**2,)
    pts = steady.points()
    assert len(np.unique(pts[:, 0])) == len(np.unique(pts[:, 1])) == 256  # a tensor grid's nodes
    np.testing.assert_allclose(steady.u, np.sin(np.pi * pts[:, 0]) * np.sin(np.pi * pts[:, 1] / 2),
                               atol=1e-14)

    wave = make_problem(f"{user_file}:WaveSystem").reference()
    assert wave.is_grid and wave.u.shape == (201, 256) and set(wave.fields) == {"v"}
    np.testing.assert_allclose(wave.fields["v"][-1], np.cos(np.pi * wave.x) * np.sin(np.pi),
                               atol=1e-14)

    p5 = make_problem(POISSON5D)
    five = p5.reference()
    assert not five.is_grid and five.points().shape == (SCATTERED_POINTS, 5)
    assert five.meta == {"exact": 1, "num_points": SCATTERED_POINTS, "sobol_seed": SCATTERED_SEED}
    assert np.array_equal(five.points(), p5.reference().points())  # fixed: the same every time
    np.testing.assert_allclose(five.u, np.sin(np.pi * five.points() / 2).sum(axis=1), atol=1e-13)


def test_accuracy_per_field_and_stacked(user_file):
    from pinn.evaluate import accuracy

    p = make_problem(f"{user_file}:WaveSystem")
    ref = p.reference()
    # the exact solution, u off by 1 % and v exact
    net = lambda z: p.exact(z) * jnp.asarray([1.01, 1.0])  # noqa: E731
    acc = accuracy(net, ref, dtype=jnp.float64, fields=p.fields)
    assert list(acc.per_field) == ["u", "v"] and acc.missing == ()
    assert acc.per_field["u"].rel_l2 == pytest.approx(0.01, rel=1e-9)
    assert acc.per_field["v"].rel_l2 < 1e-12
    norms = {"u": np.linalg.norm(ref.u), "v": np.linalg.norm(ref.fields["v"])}
    stacked = 0.01 * norms["u"] / np.hypot(norms["u"], norms["v"])
    assert acc.rel_l2 == pytest.approx(stacked, rel=1e-9)
    assert acc.prediction.shape == ref.u.shape


def test_a_reference_file_of_a_system_is_read_and_scored_per_field(user_file, tmp_path):
    """A file holding both fields (v under another name, mapped by `reference.keys`) is read with
    v stored under the problem's name, and both fields are scored."""
    from pinn.evaluate import accuracy
    from pinn.reference.files import read_reference

    p = make_problem(f"{user_file}:WaveSystem")
    z = np.asarray(points(p, 200, seed=3))
    exact = np.asarray(p.exact(jnp.asarray(z)))
    np.savez(tmp_path / "ref.npz", points=z, u=exact[:, 0], V=exact[:, 1], other=exact[:, 0] ** 2)
    ref = read_reference(tmp_path / "ref.npz", p.input_names, field="u", time="t",
                         keys={"v": "V"}, others=("v",))
    assert not ref.is_grid and set(ref.fields) == {"v", "other"}
    np.testing.assert_array_equal(ref.fields["v"], exact[:, 1])
    acc = accuracy(lambda z: p.exact(z) + jnp.asarray([0.0, 1e-3]), ref, dtype=jnp.float64,
                   fields=p.fields)
    assert acc.per_field["u"].rel_l2 < 1e-12 and acc.per_field["v"].max_abs == pytest.approx(1e-3)
    # a file without v: only u is scored, and v is said to be missing
    np.savez(tmp_path / "u_only.npz", points=z, u=exact[:, 0])
    only_u = read_reference(tmp_path / "u_only.npz", p.input_names, others=("v",))
    acc = accuracy(p.exact, only_u, dtype=jnp.float64, fields=p.fields)
    assert list(acc.per_field) == ["u"] and acc.missing == ("v",)


def test_poisson5d_example_params_pass_the_gate(monkeypatch):
    from pinn.config import load_params

    monkeypatch.chdir(ROOT)
    cfg = load_params(ROOT / "examples/poisson5d/params.yaml")
    p = make_problem(cfg.problem.identifier, **cfg.problem.coefficients)
    assert p.steady and p.dim == 5 and p.term_names(True) == ("pde", "bc")


# --- the gate -------------------------------------------------------------------------------


def test_causal_weighting_of_a_steady_problem_is_refused_in_one_line(user_file):
    with pytest.raises(ConfigError) as e:
        validate_params({"problem": {"target": f"{user_file}:SteadyMixed"},
                         "balancing": {"causal": {"enabled": True}}})
    assert str(e.value) == ("params: balancing.causal.enabled = True: the problem is steady (no "
                            "time axis to weight causally)")


def test_an_initial_condition_in_a_steady_problem_is_refused(user_file, tmp_path):
    (tmp_path / "bad.py").write_text(SOURCE + textwrap.dedent('''
        @dataclass(frozen=True)
        class SteadyWithInitial(SteadyMixed):
            def conditions(self):
                return (Initial(), Dirichlet("x"))


        @dataclass(frozen=True)
        class UNotFirst(SteadyMixed):
            fields: ClassVar[tuple] = ("v", "u")


        @dataclass(frozen=True)
        class NoSuchField(SteadyMixed):
            def conditions(self):
                return (Dirichlet("x", field="w"),)


        @dataclass(frozen=True)
        class NoSuchAxis(SteadyMixed):
            def conditions(self):
                return (Neumann("z"),)


        @dataclass(frozen=True)
        class FieldP(Problem):
            box: ClassVar[Box] = Box(("x",), (0.0,), (1.0,), time=None)
            fields: ClassVar[tuple] = ("p",)
            derivatives: ClassVar[tuple] = ("p_xx",)

            def residuals(self, d, z):
                return {"pde": d["p_xx"]}

            def conditions(self):
                return (Dirichlet("x"),)
    '''))
    with pytest.raises(ConfigError, match=r"^params: problem\.target = 'bad\.py:SteadyWithInitial'"
                                          r": an Initial condition in a steady problem"):
        validate_params({"problem": {"target": "bad.py:SteadyWithInitial"}})
    with pytest.raises(ConfigError, match=r"problem\.target = 'bad\.py:UNotFirst': fields = "
                                          r"\('v', 'u'\): .*'u' must be the first"):
        validate_params({"problem": {"target": "bad.py:UNotFirst"}})
    with pytest.raises(ConfigError, match=r"problem\.target = 'bad\.py:NoSuchField': a Dirichlet "
                                          r"condition names field 'w', not one of the problem's "
                                          r"fields \('u',\)"):
        validate_params({"problem": {"target": "bad.py:NoSuchField"}})
    with pytest.raises(ConfigError, match=r"a Neumann condition names axis 'z', not one of the "
                                          r"problem's inputs \('x', 'y'\)"):
        validate_params({"problem": {"target": "bad.py:NoSuchAxis"}})
    # a condition without `field` applies to the problem's first field, whatever its name
    p = make_problem("bad.py:FieldP")
    z = jnp.asarray([[0.3], [0.6]])
    np.testing.assert_allclose(p.condition_terms(lambda z: 1.0 + z[:, 0], z, z,
                                                 exact_periodic=False)["bc"], [1, 1, 2, 2])


# --- through the pipeline -------------------------------------------------------------------


def tiny_params(target: str, **weights: float) -> dict:
    return tiny_target_params(target, weights, steps=20, points=256, initial_points=64,
                              boundary_points=64, batch=128, small_batches=32,
                              refine={"iterations": 10, "block_size": 10})


def panel_titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if not hasattr(ax, "_colorbar")]


def test_a_system_trains_through_the_pipeline(user_file, tmp_path, figures):
    """The two-field system, a few steps through every stage (dvc.yaml's commands, in this
    process): metrics.json has the stacked rel_l2 and a finite rel_l2 per field; the report draws
    one row of snapshots and one error map per field."""
    from pinn import pipeline

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        tiny_params("problems.py:WaveSystem", pde_u=1.0, pde_v=1.0, ic=10.0, ic_v=10.0, bc=1.0),
        sort_keys=False))
    with jax.enable_x64(False):
        project = pipeline.make_project(tmp_path / "project", tmp_path / "params.yaml")
        pipeline.run_in_process(project)
    metrics = json.loads((project / "metrics.json").read_text())
    assert list(metrics)[:6] == ["rel_l2", "max_abs", "rel_l2_u", "rel_l2_v", "max_abs_u",
                                 "max_abs_v"]
    assert all(np.isfinite(metrics[k]) for k in ("rel_l2", "rel_l2_u", "rel_l2_v"))
    assert min(metrics["rel_l2_u"], metrics["rel_l2_v"]) <= metrics["rel_l2"] <= max(
        metrics["rel_l2_u"], metrics["rel_l2_v"])
    with np.load(project / "data/evaluate/errors.npz") as errors:
        assert list(errors["fields"]) == ["u", "v"]
        assert errors["prediction_v"].shape == errors["prediction"].shape == (201, 256)
    titles = panel_titles(figures["snapshots.png"])
    assert [t.split(",")[0] for t in titles] == ["u"] * 3 + ["v"] * 3  # 3 snapshot times each
    assert panel_titles(figures["error_map.png"]) == ["u", "v"]
    md = (project / "report" / "report.md").read_text()
    assert "| rel L2 error, field v |" in md and "(all fields stacked)" in md


def steady_run(tmp_path: Path, runner) -> Path:
    from pinn import pipeline

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        tiny_params("problems.py:SteadyMixed", pde=1.0, bc=10.0, flux=1.0), sort_keys=False))
    with jax.enable_x64(False):
        project = pipeline.make_project(tmp_path / "project", tmp_path / "params.yaml")
        runner(project)
    return project


def check_steady(project: Path, figures: dict | None) -> None:
    metrics = json.loads((project / "metrics.json").read_text())
    assert np.isfinite(metrics["rel_l2"]) and "rel_l2_u" not in metrics  # one field: as always
    with np.load(project / "data/collocation.npz") as sets:
        assert sets["ic"].shape == (0, 2)  # steady: no initial points
    md = (project / "report" / "report.md").read_text()
    assert "![solution](solution.png)" in md and "![pointwise error](error_map.png)" in md
    if figures is not None:
        assert panel_titles(figures["solution.png"]) == ["reference", "PINN"]
        assert panel_titles(figures["error_map.png"]) == ["u"]  # one map per field
        ax = next(a for a in figures["error_map.png"].axes if a.get_title() == "u")
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y")


@pytest.mark.slow
def test_a_steady_problem_trains_through_dvc(user_file, tmp_path):
    """The steady 2-D problem through `dvc repro` (a project of its own, as `pinn run --params`
    makes it): no initial points, finite metrics, the report's maps over (x, y)."""
    import subprocess
    import sys

    from pinn import pipeline

    def repro(project):
        proc = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=project,
                              capture_output=True, text=True, env=pipeline.subprocess_env())
        assert proc.returncode == 0, proc.stdout + proc.stderr

    check_steady(steady_run(tmp_path, repro), None)


@pytest.mark.slow
def test_a_steady_problem_trains_in_process(user_file, tmp_path, figures):
    from pinn import pipeline

    check_steady(steady_run(tmp_path, pipeline.run_in_process), figures)
