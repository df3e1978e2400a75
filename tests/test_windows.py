"""Time-marching windows (`pinn.windows`, stages `window0` and `window@window<k>`).

Fast: the slabs and which window a time belongs to, a window's problem (its box, its sampled
points, its initial condition taken from the previous network at the boundary), the collocation
and reference restricted to a window, stitching, the params gate. Slow (one test): `dvc repro`
with three windows, then a change of window 1's settings reruns windows 1 and 2 only.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from pinn import io, pipeline, windows
from pinn.config import ConfigError, validate_params
from pinn.problems import make_problem
from pinn.reference import Reference

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "benchmarks" / "regression" / "params.yaml"


def _params(count: int = 4, **changes) -> dict:
    data = yaml.safe_load(TINY.read_text())
    data["windows"] = {"count": count, "later": {
        f"window{k}": {"after": f"window{k - 1}", "steps": 5 + k, "refine_iterations": 0}
        for k in range(1, count)}}
    data.update(changes)
    return data


def test_bounds_split_the_time_interval_evenly_and_times_fall_in_one_window():
    cfg = validate_params(_params(4))
    problem = make_problem("burgers_1d")
    edges = windows.bounds(cfg, problem)
    np.testing.assert_array_equal(edges, [0.0, 0.25, 0.5, 0.75, 1.0])
    t = np.array([0.0, 0.1, 0.2499, 0.25, 0.5, 0.74, 0.75, 0.999, 1.0])
    # an inner boundary belongs to the later window, the final time to the last one
    np.testing.assert_array_equal(windows.window_index(t, edges), [0, 0, 0, 1, 2, 2, 3, 3, 3])
    assert windows.window_names(cfg) == ["window0", "window1", "window2", "window3"]


def test_windows_off_changes_nothing():
    cfg = validate_params(yaml.safe_load(TINY.read_text()))
    problem = make_problem("burgers_1d")
    assert windows.window_problem(cfg, problem, 0) is problem
    sets = {"interior": np.ones((3, 2)), "ic": np.ones((2, 1)), "bc": np.ones((3, 2))}
    assert windows.collocation_in_window(cfg, problem, sets, 0) is sets


def test_a_window_trains_on_its_slab():
    from pinn import cascade

    cfg = validate_params(_params(4))
    whole = make_problem("allen_cahn_1d")
    problem = windows.window_problem(cfg, whole, 2)
    assert problem.lower == (0.5, -1.0) and problem.upper == (0.75, 1.0)
    assert problem.coefficients == whole.coefficients and problem != whole
    assert problem.term_names(True) == whole.term_names(True)
    # the sampled points (the trainer's and the fixed sets moved into the slab) lie in it
    trainer, model = cascade.make_trainer(cfg, problem, "level1")
    z = np.asarray(trainer._interior_points(jax.random.PRNGKey(0), 4096))
    assert z[:, 0].min() >= 0.5 and z[:, 0].max() <= 0.75 and z[:, 0].max() - z[:, 0].min() > 0.2
    state = cascade.state_template(trainer, model, cfg, "level1")
    points, _ = trainer.sampler.batch(state.sampler_state)
    assert np.all((np.asarray(points)[:, 0] >= 0.5) & (np.asarray(points)[:, 0] <= 0.75))
    full = np.array([[0.0, -1.0], [1.0, 1.0], [0.5, 0.3]])
    sets = windows.collocation_in_window(cfg, whole, {"interior": full, "ic": full[:, 1:],
                                                      "bc": full}, 2)
    np.testing.assert_allclose(sets["interior"], [[0.5, -1.0], [0.75, 1.0], [0.625, 0.3]])
    np.testing.assert_array_equal(sets["ic"], full[:, 1:])


def test_the_initial_condition_is_the_previous_network_at_the_boundary(tmp_path):
    """Window k's IC term at t_k is zero for the previous window's very network (loaded from its
    export, embedded over the previous slab), and equals u(t_k, x) - u_prev(t_k, x) otherwise."""
    from pinn.levels import level_model
    from pinn.models import apply_fn, split
    from pinn.stages.window import previous_field

    cfg = validate_params(_params(3))
    whole = make_problem("burgers_1d")
    prev_model = level_model(cfg, windows.window_problem(cfg, whole, 0), "level1")
    graphdef, prev_params, rest = split(prev_model)
    prev_params = jax.tree_util.tree_map(lambda a: a + 0.3 * jnp.sin(7.0 * a), prev_params)
    prev_model = lambda z: apply_fn(graphdef, rest)(prev_params, z)
    io.save_tree(tmp_path / "window0.npz", prev_params)
    initial, _ = previous_field(cfg, whole, 1, tmp_path / "window0.npz", jnp.float32)
    problem = windows.window_problem(cfg, whole, 1, initial)
    x = jnp.linspace(-1.0, 1.0, 33)[:, None]
    t_k = 1.0 / 3.0
    prev_at = np.asarray(prev_model(jnp.concatenate([jnp.full_like(x, t_k), x], axis=1)))
    np.testing.assert_allclose(np.asarray(initial(jnp.concatenate([jnp.full_like(x, t_k), x], 1))),
                               prev_at, rtol=1e-6, atol=1e-6)
    # the loss's IC mismatch: zero for the previous network itself ...
    np.testing.assert_allclose(np.asarray(problem.ic_residual(initial, x)), 0.0, atol=1e-6)
    # ... and for another field, its difference from the previous network at t_k (not at t = 0,
    # not the problem's own -sin(pi x))
    other = lambda z: jnp.cos(3.0 * z[:, 0]) * z[:, 1]
    np.testing.assert_allclose(np.asarray(problem.ic_residual(other, x)),
                               np.cos(3.0 * t_k) * np.asarray(x[:, 0]) - prev_at, atol=1e-5)
    # window 0 keeps the problem's own initial condition
    first = windows.window_problem(cfg, whole, 0)
    np.testing.assert_allclose(np.asarray(first.ic_residual(lambda z: 0.0 * z[:, 0], x)),
                               np.sin(np.pi * np.asarray(x[:, 0])), atol=1e-6)


def test_causal_weighting_acts_within_the_window():
    """With `balancing.causal`, a window's PDE loss chunks its own slab: the loss equals the causal
    loss over [t_k, t_{k+1}] (Wang, Sankaran & Perdikaris 2022), not over the whole interval."""
    from pinn import balancing
    from pinn.from_params import loss_from_params
    from pinn.loss import loss_dict

    data = _params(4)
    data["balancing"]["causal"] = {"enabled": True, "tolerance": 1.0, "num_chunks": 4}
    cfg = validate_params(data)
    problem = windows.window_problem(cfg, make_problem("burgers_1d"), 2)
    z = jnp.stack([jnp.linspace(0.5, 0.75, 64), jnp.linspace(-0.9, 0.9, 64)], axis=1)
    u = lambda zz: jnp.sin(3.0 * zz[:, 0]) * zz[:, 1] ** 2
    weights = jnp.ones(64)
    losses, aux = loss_dict(problem, loss_from_params(cfg, problem), u, z, weights, z[:4, 1:], z[:4])
    r2 = jnp.square(problem.residual(u, z))
    within, w = balancing.causal_residual_loss(r2, z[:, 0], 0.5, 0.75, 4, 1.0, weights)
    whole, _ = balancing.causal_residual_loss(r2, z[:, 0], 0.0, 1.0, 4, 1.0, weights)
    np.testing.assert_allclose(float(losses["pde"]), float(within), rtol=1e-6)
    assert float(aux["causal_min_weight"]) == pytest.approx(float(jnp.min(w)))
    assert abs(float(whole) - float(within)) > 1e-3 * abs(float(within))


def _grid_reference() -> Reference:
    t = np.linspace(0.0, 1.0, 9)
    x = np.linspace(-1.0, 1.0, 5)
    u = np.sin(np.pi * x)[None, :] * (1.0 + t[:, None])
    return Reference(t=t, x=x, y=None, u=u, est_rel_error=0.0)


def test_stitching_takes_each_time_from_its_window():
    cfg = validate_params(_params(3))
    problem = make_problem("burgers_1d")
    ref = _grid_reference()
    edges = windows.bounds(cfg, problem)
    preds = [np.full(ref.u.shape, float(k)) for k in range(3)]
    stitched = windows.stitch(preds, ref, "t", edges)
    want = windows.window_index(ref.t, edges)  # t = 0, 1/8, ..., 1 -> 0 0 0 1 1 1 2 2 2
    np.testing.assert_array_equal(want, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(stitched, np.repeat(want[:, None], 5, axis=1))
    part = windows.reference_in_window(cfg, problem, ref, 1)
    np.testing.assert_array_equal(part.t, ref.t[3:6])
    np.testing.assert_array_equal(part.u, ref.u[3:6])
    # scattered points: by their time column
    pts = np.array([[0.0, 0.1], [0.4, 0.0], [0.9, -0.5], [1.0, 0.2]])
    scat = Reference.at_points(pts, ("t", "x"), np.arange(4.0), est_rel_error=0.0)
    s = windows.stitch([np.full(4, 0.0), np.full(4, 1.0), np.full(4, 2.0)], scat, "t", edges)
    np.testing.assert_array_equal(s, [0, 1, 2, 2])
    np.testing.assert_array_equal(windows.reference_in_window(cfg, problem, scat, 2).u, [2.0, 3.0])


@pytest.mark.parametrize("windows_params,key", [
    ({"count": 3, "later": {"window1": {"after": "window0", "steps": 5}}}, "windows.later"),
    ({"count": 2, "later": {"window1": {"after": "window1", "steps": 5}}},
     "windows.later.window1.after"),
    ({"count": 2, "later": {"window1": {"after": "window0", "steps": 0}}},
     "windows.later.window1.steps"),
    ({"count": 0, "later": {}}, "windows.count"),
])
def test_the_gate_names_the_bad_windows_key(windows_params, key):
    data = yaml.safe_load(TINY.read_text())
    data["windows"] = windows_params
    with pytest.raises(ConfigError) as err:
        validate_params(data, source="params.yaml")
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"params.yaml: {key} = "), lines


def test_the_gate_refuses_windows_for_a_steady_problem():
    data = yaml.safe_load((ROOT / "examples" / "poisson5d" / "params.yaml").read_text())
    data["problem"]["target"] = str(ROOT / "examples" / "poisson5d" / "poisson.py") + ":Poisson5D"
    data["windows"] = {"count": 2, "later": {"window1": {"after": "window0", "steps": 5}}}
    with pytest.raises(ConfigError) as err:
        validate_params(data, source="params.yaml")
    assert str(err.value) == ("params.yaml: windows.count = 2: the problem is steady (no time "
                              "axis to march in); use 1")


def test_a_window_stage_trains_then_refines_on_its_slab(tmp_path):
    """The `window@window1` stage in-process on small inputs: Adam steps then quasi-Newton
    iterations as configured for that window, rel L2 logged against the reference on its slab."""
    from pinn.levels import level_model
    from pinn.models import split
    from pinn.stages import window as window_stage
    from pinn.stages.collocation import collocation_sets
    from pinn.stages.common import invoke

    data = _params(2)
    data["windows"]["later"]["window1"].update(steps=3, refine_iterations=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = validate_params(data)
    whole = make_problem("burgers_1d")
    _, start, _ = split(level_model(cfg, windows.window_problem(cfg, whole, 0), "level1"))
    io.save_tree(tmp_path / "window0.npz", start)
    io.save_npz(tmp_path / "collocation.npz", collocation_sets(cfg, whole))
    t, x = np.linspace(0.0, 1.0, 11), np.linspace(-1.0, 1.0, 9)
    ref = Reference(t=t, x=x, y=None, u=-np.sin(np.pi * x)[None, :] * np.exp(-t)[:, None],
                    est_rel_error=0.0)
    ref.save(tmp_path / "reference.npz")
    invoke(window_stage.main, [
        "--params", str(tmp_path / "params.yaml"), "--window", "window1",
        "--start", str(tmp_path / "window0.npz"), "--reference", str(tmp_path / "reference.npz"),
        "--collocation", str(tmp_path / "collocation.npz"), "--export", str(tmp_path / "w1.npz"),
        "--logs", str(tmp_path / "logs"), "--quiet"])
    metrics = json.loads((tmp_path / "logs" / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["refine_iteration"] == 2
    assert metrics["rel_l2"] == metrics["refine_rel_l2"]
    # the logged rel L2 is on the slab's times (t >= 0.5) only
    part = windows.reference_in_window(cfg, whole, ref, 1)
    np.testing.assert_array_equal(part.t, t[5:])
    from pinn.evaluate import accuracy
    from pinn.models import apply_fn, cast
    from pinn.precision import scope

    with scope("float64"):
        model = level_model(cfg, windows.window_problem(cfg, whole, 1), "level1")
        graphdef, template, rest = split(model)
        params, extras = io.load_tree(tmp_path / "w1.npz", cast(template, jnp.float64))
        u = apply_fn(graphdef, cast(rest, jnp.float64))
        got = accuracy(lambda z: u(params, z), part, dtype=jnp.float64).rel_l2
    assert got == pytest.approx(metrics["rel_l2"], rel=1e-9)
    assert int(extras["steps"]) == 3 and int(extras["refine_iterations"]) == 2


# ----------------------------------------------------------------------------------------------
# the DVC pipeline: changing window 1 of 3 reruns windows 1 and 2, nothing before


def _dvc(project: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project,
                          env=pipeline.subprocess_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_changing_a_window_reruns_it_and_the_later_ones_only(tmp_path):
    """Three windows: the pipeline up to evaluate run once (in-process, its outputs committed to
    DVC: what `dvc repro evaluate` would have recorded), then window 1's steps changed: `dvc repro evaluate` reruns
    windows 1 and 2 and the evaluation, and nothing of window 0."""
    import re

    data = _params(3)
    data["multilevel"] = {"num_levels": 1, "coarsening_factor": 0.5, "finest_warmup_steps": 0,
                          "levels": {"level0": {"steps": 10, "init_from": "init"}}}
    data["refine"]["method"] = "none"  # (the windows' refinement: test_a_window_stage_...)
    data["windows"]["later"]["window1"].update(steps=10)
    data["windows"]["later"]["window2"].update(steps=10)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    project = pipeline.make_project(tmp_path / "p", params)
    from pinn.stages.common import invoke

    ran = []
    for node in pipeline.read_dag(project):  # up to evaluate (the report is not upstream of it)
        if node.name not in ("plots_page", "report"):
            module, args = pipeline.stage_module(node.cmd)
            with pipeline._cwd(project):
                invoke(importlib.import_module(module).main, args)
            ran.append(node.name)
    assert ran[ran.index("init"):] == ["init", "train@level0", "refine", "window0",
                                       "window@window1", "window@window2", "evaluate"], ran
    _dvc(project, "commit", "--force", "--quiet", "--with-deps", "evaluate")
    metrics = json.loads((project / "metrics.json").read_text())
    assert set(metrics) >= {"rel_l2", "rel_l2_window0", "rel_l2_window1", "rel_l2_window2"}
    before = {k: (project / "data" / "windows" / f"{k}.npz").read_bytes()
              for k in ("window0", "window1", "window2")}

    data["windows"]["later"]["window1"]["steps"] = 20
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    out = _dvc(project, "repro", "evaluate")
    ran = re.findall(r"Running stage '([^']+)':", out)
    # (the gate always runs; its stamp is constant)
    assert ran == ["params", "window@window1", "window@window2", "evaluate"], out
    skipped = re.findall(r"Stage '([^']+)' didn't change, skipping", out)
    assert {"train@level0", "refine", "window0"} <= set(skipped), out
    # the new value reached training; window 0's network is untouched, the later ones changed
    logged = json.loads((project / "data" / "window_logs" / "window1" / "metrics.json").read_text())
    assert logged["steps"] == 20
    assert (project / "data" / "windows" / "window0.npz").read_bytes() == before["window0"]
    for k in ("window1", "window2"):
        assert (project / "data" / "windows" / f"{k}.npz").read_bytes() != before[k]
