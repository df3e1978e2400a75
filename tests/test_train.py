"""The composed training step: compiled once, deterministic, trains, every component wired in."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pinn import cascade
from pinn.config import validate_params
from pinn.experiment import run
from pinn.problems import make_problem
from pinn.train import loss_spec


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
    assert loss_spec(_cfg(**{"problem.name": "allen_cahn_1d"}), periodic).term_names == ("pde", "ic")
    no_embed = _cfg(**{"problem.name": "allen_cahn_1d", "model.periodic_embedding": False})
    assert loss_spec(no_embed, periodic).term_names == ("pde", "ic", "bc")
    assert loss_spec(_cfg(), make_problem("burgers_1d")).term_names == ("pde", "ic", "bc")


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
    half, _ = trainer.run(s0._replace(lr_scale=jnp.asarray(0.5, jnp.float32)), 1)
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


def test_cascade_then_refine_end_to_end():
    """Two levels (8 → 16 wide) then float64 SSBroyden: accuracy improves at each phase."""
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
    from pinn.reference import burgers_1d

    ref = burgers_1d(t=np.linspace(0, 1, 21), x=np.linspace(-1, 1, 65), nodes=64, progress=False)
    res = run(cfg, ref)
    adam = [r for r in res.history if r["phase"] == "adam"]
    qn = [r for r in res.history if r["phase"] == "refine"]
    assert [r["level"] for r in adam][:1] == ["level0"] and adam[-1]["level"] == "level1"
    assert res.steps == 300 and res.refine_iterations == 150
    assert qn[-1]["rel_l2"] < adam[-1]["rel_l2"] < adam[0]["rel_l2"]
    assert res.rel_l2 == pytest.approx(qn[-1]["rel_l2"], rel=1e-6)
    assert res.rel_l2 < 0.35  # measured 0.23 (the phases ordering above is the real check)
