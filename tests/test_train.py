"""The composed training step: compiled once, deterministic, trains, every component wired in."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pinn import cascade, optim
from pinn.config import validate_params
from pinn.from_params import loss_from_params
from pinn.problems import make_problem


def _cfg(**over):
    data = {
        "problem": {"name": "burgers_1d"},
        "model": {"width": 16, "depth": 2},
        "collocation": {"num_points": 256, "ic_points": 64, "bc_points": 64},
        "sampling": {"batch_size": 256, "ic_batch_size": 64, "bc_batch_size": 64,
                     "rad": {"pool_size": 512, "resample_every": 5},
                     "hard_bank": {"pool_size": 512, "bank_size": 64, "top_k": 32, "refresh_every": 5,
                                   "p_ramp_steps": 0},
                     "rar_d": {"capacity": 512, "pool_size": 256, "every": 5, "num_new_points": 8}},
        "balancing": {"gradnorm": {"update_every": 3}, "grad_ratio": {"update_every": 3}},
        "multilevel": {"num_levels": 1, "levels": {"level0": {"steps": 20, "init_from": "init"}}},
        "optimizer": {"learning_rate": 0.005},
        "refine": {"method": "none"},
        "train": {"log_every": 10},
    }
    for dotted, value in over.items():
        node = data
        *parts, last = dotted.split(".")
        for p in parts:
            node = node.setdefault(p, {})
        node[last] = value
    return validate_params(data)


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"sampling.method": "hard_bank", "balancing.method": "gradnorm"},
        {"sampling.method": "rad", "balancing.method": "grad_ratio", "balancing.causal.enabled": True},
    ],
    ids=["uniform-fixed", "hardbank-gradnorm", "rad-gradratio-causal"],
)
def test_step_compiles_once_and_reduces_loss(over):
    cfg = _cfg(**over)
    problem = make_problem("burgers_1d")
    trainer, model = cascade.make_trainer(cfg, problem, "level0")
    state = cascade.state_template(trainer, model, cfg, "level0")
    state0, m0 = trainer.run(state, 10)
    # the weighted total is not comparable across steps when weights/points adapt: use the
    # initial-condition term, measured the same way throughout
    losses = [float(m0["loss_ic"])]
    s = state0
    for _ in range(6):  # spans sampler refreshes and balancer updates
        s, m = trainer.run(s, 10)
        losses.append(float(m["loss_ic"]))
    assert trainer.compiles == 1, "the jitted run was retraced"
    assert int(s.step) == 70 and int(s.nonfinite) == 0
    assert losses[-1] < losses[0]
    assert all(np.isfinite(losses))


def test_bc_term_only_when_needed():
    periodic = make_problem("allen_cahn_1d")
    assert loss_from_params(_cfg(**{"problem.name": "allen_cahn_1d"}), periodic).term_names == ("pde", "ic")
    no_embed = _cfg(**{"problem.name": "allen_cahn_1d", "model.periodic_embedding": False})
    assert loss_from_params(no_embed, periodic).term_names == ("pde", "ic", "bc")
    assert loss_from_params(_cfg(), make_problem("burgers_1d")).term_names == ("pde", "ic", "bc")


def test_deterministic():
    cfg = _cfg(**{"sampling.method": "hard_bank"})
    problem = make_problem("burgers_1d")
    out = []
    for _ in range(2):
        trainer, model = cascade.make_trainer(cfg, problem, "level0")
        state = cascade.state_template(trainer, model, cfg, "level0")
        state, _ = trainer.run(state, 15)
        out.append(jax.tree_util.tree_leaves(state.params))
    for a, b in zip(*out):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_lr_scale_scales_the_update():
    cfg = _cfg()
    problem = make_problem("burgers_1d")
    trainer, model = cascade.make_trainer(cfg, problem, "level0")
    s0 = cascade.state_template(trainer, model, cfg, "level0")
    full, _ = trainer.run(s0, 1)
    # the scale is Adam's injected hyperparameter (pinn.optim.adam), in the optimizer state
    half, _ = trainer.run(s0._replace(opt_state=optim.with_lr_scale(s0.opt_state, 0.5)), 1)
    assert float(optim.lr_scale_of(half.opt_state)) == 0.5  # kept by the step
    for p0, pf, ph in zip(*(jax.tree_util.tree_leaves(x) for x in (s0.params, full.params, half.params))):
        np.testing.assert_allclose(np.asarray(ph) - np.asarray(p0), 0.5 * (np.asarray(pf) - np.asarray(p0)),
                                   rtol=1e-4, atol=1e-7)


def test_nonfinite_step_is_not_applied():
    cfg = _cfg()
    problem = make_problem("burgers_1d")
    trainer, model = cascade.make_trainer(cfg, problem, "level0")
    s0 = cascade.state_template(trainer, model, cfg, "level0")
    poisoned = jax.tree_util.tree_map(lambda x: x, s0.params)
    leaves, treedef = jax.tree_util.tree_flatten(poisoned)
    leaves[0] = leaves[0].at[0].set(jnp.nan)
    bad = s0._replace(params=jax.tree_util.tree_unflatten(treedef, leaves))
    after, _ = trainer.run(bad, 3)
    assert int(after.nonfinite) == 3
    for a, b in zip(jax.tree_util.tree_leaves(after.params), leaves):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cascade_then_refine_end_to_end(tmp_path):
    """Two levels (8 → 16 wide) then float64 SSBroyden — the whole pipeline, dvc.yaml's stage
    commands run in this process (`pinn.pipeline.run_in_process`) on a params file: accuracy
    improves at each phase, as the stages' histories and metrics.json record it."""
    import json

    import pandas as pd
    import yaml

    from pinn import pipeline

    cfg = validate_params({
        "problem": {"name": "burgers_1d"},
        "model": {"width": 16, "depth": 2},
        "collocation": {"num_points": 512},
        "sampling": {"batch_size": 512},
        "multilevel": {"num_levels": 2, "levels": {"level0": {"steps": 150, "init_from": "init"},
                                                   "level1": {"steps": 150, "init_from": "level0"}}},
        "optimizer": {"learning_rate": 0.01},
        "refine": {"method": "ssbroyden", "iterations": 150, "block_size": 50, "resample_every_blocks": 1},
        "train": {"log_every": 50},
    })
    params = tmp_path / "params.yaml"  # every key written out (the params gate requires it)
    params.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    project = pipeline.make_project(tmp_path / "project", params)
    ran = pipeline.run_in_process(project)
    assert ran == ["params", "plots_page", "reference", "collocation", "init", "train@level0",
                   "train@level1", "refine", "window0", "evaluate", "report"]

    level0 = pd.read_csv(project / "data/train/level0/history.csv")
    level1 = pd.read_csv(project / "data/train/level1/history.csv")
    qn = pd.read_csv(project / "data/refine/history.csv")
    metrics = json.loads((project / "metrics.json").read_text())
    assert set(level0["level"]) == {"level0"} and set(level1["level"]) == {"level1"}
    assert list(level0["step"]) == [50, 100, 150]
    assert list(level1["step"]) == [200, 250, 300]  # the step count goes on across levels
    with np.load(project / "data/export/level1.npz") as export:
        assert int(export["extra/steps_done"]) == 300
    assert list(qn["iteration"]) == [50, 100, 150] and metrics["refine_iterations"] == 150
    assert qn["rel_l2"].iloc[-1] < level1["rel_l2"].iloc[-1] < level0["rel_l2"].iloc[0]
    assert metrics["rel_l2"] == pytest.approx(qn["rel_l2"].iloc[-1], rel=1e-6)
    assert metrics["rel_l2"] < 0.35  # measured 0.23 (the phases ordering above is the real check)


# ----------------------------------------------------------------------------------------------
# NTK diagnostics


def _ntk_trainer(every: int = 5, points: int = 8, **over):
    cfg = _cfg(**{"model.width": 6, "model.depth": 1, "train.ntk_every": every,
                  "train.ntk_points": points, **over})
    problem = make_problem(cfg.problem.name)
    trainer, model = cascade.make_trainer(cfg, problem, "level0")
    return trainer, cascade.state_template(trainer, model, cfg, "level0")


def _brute_force_traces(trainer, params) -> dict[str, float]:
    """tr(J Jᵀ) / M per term from the dense Jacobian J (M × P) of the flattened parameters,
    by forward mode over the flattened parameters (jacfwd), summed in float64."""
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(params)
    z, ic_x, bc_z = trainer.ntk_points
    problem = trainer.problem

    def field(theta):
        return lambda zz: trainer.u(unravel(theta), zz)

    residuals = {"pde": lambda th: problem.residual(field(th), z),
                 "ic": lambda th: problem.ic_residual(field(th), ic_x),
                 "bc": lambda th: problem.boundary_residual(
                     field(th), bc_z, exact_periodic=trainer.spec.exact_periodic)}
    out = {}
    for name in trainer.term_names:
        jac = np.asarray(jax.jacfwd(residuals[name])(flat), dtype=np.float64)  # (M, P)
        assert jac.shape[1] == flat.size
        out[name] = float(np.sum(jac ** 2) / jac.shape[0])
    return out


@pytest.mark.parametrize("problem", ["burgers_1d", "allen_cahn_1d"])
def test_ntk_trace_equals_brute_force_jacobian(problem):
    trainer, s0 = _ntk_trainer(**{"problem.name": problem})
    assert trainer.term_names == (("pde", "ic", "bc") if problem == "burgers_1d" else ("pde", "ic"))
    _, m = trainer.run(s0, 1)  # step 0: computed on the initial parameters
    expected = _brute_force_traces(trainer, s0.params)
    for name in trainer.term_names:
        assert float(m[f"ntk_{name}"]) == pytest.approx(expected[name], rel=2e-4), name
        assert expected[name] > 0


def test_ntk_every_n_steps_without_recompiling():
    trainer, s = _ntk_trainer(every=7)
    seen = []
    for _ in range(6):  # 3 steps per call: steps 0-2, 3-5, ..., 15-17; computed at 0, 7, 14
        s, m = trainer.run(s, 3)
        seen.append(float(m["ntk_pde"]))
    assert trainer.compiles == 1, "the NTK diagnostic retraced the jitted run"
    assert all(np.isfinite(seen))
    # calls 0, 1 (steps 0-5) carry step 0's value; calls 2, 3 (6-11) step 7's; 4, 5 step 14's
    assert seen[0] == seen[1] and seen[2] == seen[3] and seen[4] == seen[5]
    assert len({seen[0], seen[2], seen[4]}) == 3
    assert int(s.step) == 18

    # the value at step 7 is the trace at the parameters before step 7's update
    trainer2, s2 = _ntk_trainer(every=7)
    s2, _ = trainer2.run(s2, 7)
    assert float(trainer2.ntk_traces(s2.params)[0]) == pytest.approx(seen[2], rel=1e-6)


def test_ntk_resumed_between_computations_has_a_value_at_once():
    trainer, s = _ntk_trainer(every=100)
    s, _ = trainer.run(s, 3)
    fresh, _ = _ntk_trainer(every=100)  # another process resuming at step 3
    _, m = fresh.run(s, 2)
    assert np.isfinite(float(m["ntk_pde"]))
    assert float(m["ntk_pde"]) == pytest.approx(float(fresh.ntk_traces(s.params)[0]), rel=1e-6)


def test_ntk_off_by_default_and_under_lax_cond_when_on():
    cfg = _cfg()
    problem = make_problem("burgers_1d")
    trainer, model = cascade.make_trainer(cfg, problem, "level0")
    state = cascade.state_template(trainer, model, cfg, "level0")
    _, m = trainer.run(state, 2)
    assert not [k for k in m if k.startswith("ntk_")]
    off = str(jax.make_jaxpr(lambda s: trainer._run_impl(s, 2))(state))

    on_trainer, on_state = _ntk_trainer(every=5, **{"model.width": 16, "model.depth": 2})
    on = str(jax.make_jaxpr(lambda s, n: on_trainer._run_impl(s, 2, n))(
        on_state, on_trainer._ntk_last))
    # one more conditional: the Jacobians are only evaluated in its taken branch
    assert on.count("cond[") == off.count("cond[") + 1
    # the step itself is unchanged: same parameters after the same steps
    s_off, _ = trainer.run(state, 4)
    s_on, _ = on_trainer.run(on_state, 4)
    for a, b in zip(jax.tree_util.tree_leaves(s_off.params), jax.tree_util.tree_leaves(s_on.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
