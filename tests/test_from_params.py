"""The library stands on its own: components from plain hyperparameters, params.yaml mapped onto
them by `pinn.from_params` only.

- a process that never imports the schema (`pinn.config`) builds a sampler, a balancer and Adam
  from plain keyword arguments, trains a `Trainer` given them, and gets bit for bit what the
  pipeline's `Trainer.from_params` gets from the equivalent params;
- the factories' defaults are the schema's (the adapter passes every key, so a drifted default
  would only mislead Python users; this keeps them equal);
- the adapter picks the component each `method` names, with the keys' errors;
- the learning-rate scale of a level is Adam's injected hyperparameter, and the next level starts
  from the fresh value.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pinn import balancing, cascade, optim, sampling
from pinn.config import (GradNormConfig, GradRatioConfig, HardBankConfig, OptimizerConfig,
                         RADConfig, RARDConfig, RefineConfig, validate_params)
from pinn.from_params import balancer_from_params, sampler_from_params

ROOT = Path(__file__).resolve().parents[1]

#: builds and trains from plain hyperparameters; prints the digest of the state after the steps
PLAIN_SCRIPT = r"""
import hashlib, json, sys
import jax, numpy as np
from flax import nnx
from pinn import balancing, optim, sampling
from pinn.loss import loss_spec
from pinn.models import PINN, Embedding, split
from pinn.problems import make_problem
from pinn.train import Trainer

problem = make_problem("burgers_1d")
embedding = Embedding(tuple(problem.lower), tuple(problem.upper), tuple(problem.periodic))
model = PINN(embedding, width=16, depth=2, activation="tanh", rngs=nnx.Rngs(0))
spec = loss_spec(problem, exact_periodic=True)
trainer = Trainer(
    problem, model, loss=spec,
    sampler=sampling.rad(problem.domain, 128, k=2.0, c=0.5, pool_size=256, resample_every=5),
    balancer=balancing.gradnorm(spec.term_names, alpha=1.0, learning_rate=0.05, update_every=3),
    optimizer=optim.adam(learning_rate=3e-3, decay_steps=500, decay_rate=0.8, warmup_steps=4),
    ic_batch_size=16, bc_batch_size=16,
)
state = trainer.init(split(model)[1], seed=7)
losses = []
for _ in range(3):
    state, metrics = trainer.run(state, 10)
    losses.append(float(metrics["loss"]))
h = hashlib.sha256()
for x in jax.tree_util.tree_leaves((state.params, state.opt_state, state.balancer_state)):
    h.update(np.asarray(x).tobytes())
print(json.dumps({"digest": h.hexdigest(), "losses": losses, "step": int(state.step),
                  "term_names": list(spec.term_names),
                  "schema_loaded": "pinn.config" in sys.modules,
                  "pydantic_loaded": "pydantic" in sys.modules}))
"""

#: the same components through params.yaml (`Trainer.from_params`); the network as the script's
PARAMS = {
    "problem": {"name": "burgers_1d"},
    "model": {"width": 16, "depth": 2, "periodic_embedding": True},
    "sampling": {"method": "rad", "batch_size": 128, "ic_batch_size": 16, "bc_batch_size": 16,
                 "rad": {"k": 2.0, "c": 0.5, "pool_size": 256, "resample_every": 5}},
    "balancing": {"method": "gradnorm",
                  "gradnorm": {"alpha": 1.0, "learning_rate": 0.05, "update_every": 3}},
    "optimizer": {"learning_rate": 3e-3, "decay_steps": 500, "decay_rate": 0.8, "warmup_steps": 4},
}


def _digest(state) -> str:
    import hashlib

    h = hashlib.sha256()
    for x in jax.tree_util.tree_leaves((state.params, state.opt_state, state.balancer_state)):
        h.update(np.asarray(x).tobytes())
    return h.hexdigest()


def test_components_from_plain_hyperparameters_train_without_the_schema():
    """A fresh interpreter: no `pinn.config` (nor pydantic) is ever imported, the loss goes
    down, and the result is bit for bit the pipeline's for the equivalent params."""
    done = subprocess.run([sys.executable, "-c", PLAIN_SCRIPT], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["schema_loaded"] is False and got["pydantic_loaded"] is False
    assert got["step"] == 30 and got["term_names"] == ["pde", "ic", "bc"]
    assert all(np.isfinite(got["losses"])) and got["losses"][-1] < got["losses"][0]

    from pinn.models import make_model, split
    from pinn.problems import make_problem
    from pinn.train import Trainer

    cfg = validate_params(PARAMS)
    problem = make_problem("burgers_1d")
    model = make_model(cfg.model, problem, seed=0)
    trainer = Trainer.from_params(cfg, problem, model)
    state = trainer.init(split(model)[1], seed=7)
    for _ in range(3):
        state, _ = trainer.run(state, 10)
    assert _digest(state) == got["digest"]


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("fn, section, skip", [
    (sampling.rad, RADConfig, ()),
    (sampling.rar_d, RARDConfig, ()),
    (sampling.hard_bank, HardBankConfig, ()),
    (balancing.gradnorm, GradNormConfig, ()),
    (balancing.grad_ratio, GradRatioConfig, ()),
    (optim.adam, OptimizerConfig, ("lr_scale", "total_steps")),
    (optim.lbfgs, RefineConfig, ()),
    (optim.refine_optimizer, RefineConfig, ()),
], ids=lambda x: getattr(x, "__name__", None))
def test_factory_defaults_are_the_schema_defaults(fn, section, skip):
    defaults = {k: v for k, v in _defaults(fn).items() if k not in skip}
    assert defaults, fn
    schema = section()
    for key, value in defaults.items():
        assert getattr(schema, key) == value, (fn.__name__, key)
    # and every hyperparameter of a sampler/balancer section is an argument of its factory
    if section in (RADConfig, RARDConfig, HardBankConfig, GradNormConfig, GradRatioConfig):
        assert set(section.model_fields) == set(defaults)
    assert balancing.CausalWeighting() == (validate_params({}).balancing.causal.num_chunks,
                                           validate_params({}).balancing.causal.tolerance)


DOMAIN_LOWER, DOMAIN_UPPER = np.array([0.0, -1.0]), np.array([1.0, 1.0])


class _Domain:
    lower, upper, periodic = DOMAIN_LOWER, DOMAIN_UPPER, (False, True)


def test_sampler_from_params_dispatch():
    fixed = sampling.collocation_points("sobol", 256, DOMAIN_LOWER, DOMAIN_UPPER, seed=0)
    kinds = {"uniform": sampling.UniformState, "rad": sampling.RADState,
             "rar_d": sampling.RARDState, "hard_bank": sampling.HardBankState}
    for method, state_type in kinds.items():
        cfg = validate_params({"sampling": {"method": method, "batch_size": 128}})
        s = sampler_from_params(cfg, _Domain, fixed_points=fixed)
        state = s.init(jax.random.key(0))
        assert isinstance(state, state_type)
        pts, w = s.batch(state)
        size = cfg.sampling.rar_d.capacity if method == "rar_d" else 128
        assert pts.shape == (size, 2) and w.shape == (size,)
    rard = sampler_from_params(validate_params({"sampling": {"method": "rar_d", "batch_size": 128}}),
                               _Domain, fixed)
    w = np.asarray(rard.batch(rard.init(jax.random.key(0)))[1])
    assert w.sum() == 128  # initial points: the first batch_size rows of the fixed set

    fixed_cfg = validate_params({"sampling": {"method": "uniform", "batch_size": 128,
                                              "uniform": {"resample": False}}})
    s = sampler_from_params(fixed_cfg, _Domain, fixed_points=fixed)
    batch = np.asarray(s.batch(s.init(jax.random.key(0)))[0])
    assert all(np.any(np.all(np.isclose(fixed, row, atol=1e-6), axis=1)) for row in batch)
    with pytest.raises(ValueError, match="sampling.uniform.resample"):
        sampler_from_params(fixed_cfg, _Domain)
    with pytest.raises(ValueError, match="sampling.rar_d.capacity = 64"):
        sampler_from_params(validate_params({"sampling": {"method": "rar_d", "batch_size": 128,
                                                          "rar_d": {"capacity": 64}}}),
                            _Domain, fixed)


def test_balancer_from_params_dispatch():
    cfg = validate_params({"balancing": {"method": "fixed", "weights": {"pde": 1.0, "ic": 100.0}}})
    bal = balancer_from_params(cfg, ("pde", "ic", "bc"))
    np.testing.assert_array_equal(bal.weights(bal.init(3)), [1.0, 100.0, 1.0])  # bc missing -> 1
    for method in ("gradnorm", "grad_ratio"):
        bal = balancer_from_params(validate_params({"balancing": {"method": method}}), ("pde", "ic"))
        np.testing.assert_array_equal(bal.weights(bal.init(2)), [1.0, 1.0])
        assert set(bal.stats(bal.init(2))) == {"w_pde", "w_ic", "grad_norm_pde", "grad_norm_ic"}
    # the section's values reach the factory: GradNorm updating every step moves the weights at
    # step 1, the default (every 10) does not
    moved = []
    for every in (1, 10):
        bal = balancer_from_params(validate_params(
            {"balancing": {"method": "gradnorm", "gradnorm": {"update_every": every}}}), ("a", "b"))
        state = bal.update(bal.init(2), 0, jnp.ones(2), lambda: jnp.asarray([1.0, 4.0]))
        state = bal.update(state, 1, jnp.ones(2), lambda: jnp.asarray([1.0, 4.0]))
        moved.append(int(state.num_updates))
    assert moved == [2, 1]


def test_divergence_cut_is_in_the_optimizer_state_and_stays_in_its_level():
    """A level's lowered learning-rate scale is Adam's injected hyperparameter: the next steps of
    that level use it (the update halves), and the next level starts from the fresh scale 1 with
    the moments carried."""
    cfg = validate_params({
        "problem": {"name": "burgers_1d"}, "model": {"width": 8, "depth": 2},
        "sampling": {"batch_size": 64, "ic_batch_size": 16, "bc_batch_size": 16},
        "multilevel": {"num_levels": 2, "levels": {"level0": {"steps": 5, "init_from": "init"},
                                                   "level1": {"steps": 5, "init_from": "level0"}}}})
    from pinn.problems import make_problem

    problem = make_problem("burgers_1d")
    trainer, model = cascade.make_trainer(cfg, problem, "level0")
    s0 = cascade.state_template(trainer, model, cfg, "level0")
    s0, _ = trainer.run(s0, 3)
    cut = s0._replace(opt_state=optim.with_lr_scale(s0.opt_state, 0.25))
    assert float(optim.lr_scale_of(cut.opt_state)) == 0.25
    full, _ = trainer.run(s0, 1)
    quarter, _ = trainer.run(cut, 1)
    assert float(optim.lr_scale_of(quarter.opt_state)) == 0.25
    for p0, pf, pq in zip(*(jax.tree_util.tree_leaves(x) for x in (s0.params, full.params,
                                                                     quarter.params))):
        np.testing.assert_allclose(np.asarray(pq) - np.asarray(p0),
                                   0.25 * (np.asarray(pf) - np.asarray(p0)), rtol=1e-3, atol=1e-7)
    fine, fine_model = cascade.make_trainer(cfg, problem, "level1")
    s1 = cascade.start_level(cfg, fine, fine_model, "level1", previous=cascade.carry_of(quarter),
                             previous_trainer=trainer)
    assert float(optim.lr_scale_of(s1.opt_state)) == 1.0
    assert int(s1.opt_state[0].count) == int(quarter.opt_state[0].count)  # Adam's state carried
