"""Checkpoints: a sentinel in state is not corruption, a template mismatch is not damage.

1. For every sampler (uniform fresh, uniform fixed, RAD, RAR-D, hard bank) and every balancer
   (fixed, GradNorm, gradient ratio, and causal weighting on), a Trainer state after a few steps is
   saved, restored by a new `Checkpointer` into a freshly built template (what a resumed process
   does) and continued: the result must be bit-identical to the uninterrupted run. The hard-bank
   state is saved before its bank has filled, so its empty slots hold the `-inf` sentinel.
2. What is invalid stays invalid: NaN/inf in parameters, NaN in the bank, `-inf` in a field that
   declares no sentinel.
3. An intact checkpoint that does not fit the current template (other width, other dtype) is not
   deleted: it is reported as belonging to other params and kept; really damaged data (flipped
   bytes, truncated files, garbled metadata) is removed.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from pinn import cascade
from pinn.checkpoint import Checkpointer, invalid_leaves, tree_digest
from pinn.config import validate_params
from pinn.problems import make_problem
from pinn.sampling import collocation_points

STEPS = 3  # steps before the "kill", and again after it
TINY = {
    "seed": 3,
    "problem": {"name": "burgers_1d"},
    "model": {"width": 8, "depth": 2},
    "collocation": {"num_points": 128, "ic_points": 16, "bc_points": 16},
    "sampling": {
        "batch_size": 64, "ic_batch_size": 16, "bc_batch_size": 16,
        "rad": {"pool_size": 128, "resample_every": 2},
        "rar_d": {"pool_size": 64, "capacity": 96, "every": 2, "num_new_points": 8},
        # bank of 32 filled 8 at a time every 2 steps: still partly empty (-inf) at step 3
        "hard_bank": {"pool_size": 64, "bank_size": 32, "top_k": 8, "refresh_every": 2,
                      "p_ramp_steps": 0, "p_max": 0.5},
    },
    "balancing": {"gradnorm": {"update_every": 2}, "grad_ratio": {"update_every": 2},
                  "causal": {"num_chunks": 4}},
    "multilevel": {"num_levels": 1, "levels": {"level0": {"steps": 2 * STEPS, "init_from": "init"}}},
}

SAMPLERS = {
    "uniform_fresh": {"method": "uniform"},
    "uniform_fixed": {"method": "uniform", "uniform": {"resample": False}},
    "rad": {"method": "rad"},
    "rar_d": {"method": "rar_d"},
    "hard_bank": {"method": "hard_bank"},
}
BALANCERS = {
    "fixed": {"method": "fixed"},
    "gradnorm": {"method": "gradnorm"},
    "grad_ratio": {"method": "grad_ratio"},
    "fixed+causal": {"method": "fixed", "causal": {"enabled": True}},
    "gradnorm+causal": {"method": "gradnorm", "causal": {"enabled": True}},
}


def merged(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def tiny_params(sampling: dict | None = None, balancing: dict | None = None, **sections):
    data = merged(TINY, {"sampling": sampling or {}, "balancing": balancing or {}, **sections})
    return validate_params(data)


def build(cfg):
    """(trainer, fresh state) for level0 of `cfg`, as the train stage builds them."""
    problem = make_problem(cfg.problem.name, **cfg.problem.coefficients)
    c = cfg.collocation
    fixed = (collocation_points(c.method, c.num_points, problem.lower, problem.upper, cfg.seed)
             if cascade.uses_fixed_points(cfg) else None)
    trainer, model = cascade.make_trainer(cfg, problem, "level0", fixed_points=fixed)
    return trainer, cascade.state_template(trainer, model, cfg, "level0")


def same_bits(a, b) -> bool:
    return np.array_equal(tree_digest(a), tree_digest(b))


# every sampler with every balancer would be 20 compilations (~8 s each on a shared 2-core CPU);
# every sampler and every balancer appears at least once instead (their states are independent)
CASES = [
    ("uniform_fresh", "fixed"),
    ("uniform_fixed", "gradnorm"),
    ("rad", "grad_ratio"),
    ("rar_d", "fixed+causal"),
    ("hard_bank", "gradnorm+causal"),
]


@pytest.mark.parametrize("sampler,balancer", CASES, ids=[f"{s}-{b}" for s, b in CASES])
def test_resume_continues_bit_identically(tmp_path, sampler, balancer):
    cfg = tiny_params(SAMPLERS[sampler], BALANCERS[balancer])
    trainer, fresh = build(cfg)
    saved, _ = trainer.run(fresh, STEPS)
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(STEPS, saved, wait=True)
    ckpt.close()
    uninterrupted, _ = trainer.run(saved, STEPS)

    if sampler == "hard_bank":  # the case this test exists for: a sentinel in the saved state
        residuals = np.asarray(saved.sampler_state.bank_residuals)
        assert np.any(residuals == -np.inf) and np.any(np.isfinite(residuals))
    if balancer.startswith(("gradnorm", "grad_ratio")):
        assert int(saved.balancer_state.num_updates) > 0

    # a new process: the template is built again from params, nothing is shared but the files
    _, template = build(cfg)
    found = Checkpointer(tmp_path / "ckpt").restore_latest(template)
    assert found is not None, "a valid checkpoint was rejected"
    step, restored = found
    assert step == STEPS and same_bits(restored, saved)
    resumed, _ = trainer.run(restored, STEPS)
    assert same_bits(resumed, uninterrupted)


def test_quasi_newton_state_with_failed_line_search_restores(tmp_path):
    """optax records `inf` line-search errors before the first search and after the runner's
    restart on a rejected step: a refinement checkpoint taken then is valid."""
    params = {"w": np.linspace(-1, 1, 6).astype(np.float32)}
    # the runner's restart: a fresh state whose line-search cache holds the current value/gradient
    restarted = optax.tree.set(optax.lbfgs().init(params), value=np.asarray(0.5, np.float32),
                               grad=params)
    state = (params, restarted)
    assert any(np.isinf(np.asarray(x)).any() for x in jax.tree_util.tree_leaves(state[1]))
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(1, state, wait=True)
    found = ckpt.restore_latest(state)
    assert found is not None and same_bits(found[1], state)


# ----------------------------------------------------------------------------------------------
# what stays invalid


def _hard_bank_state():
    cfg = tiny_params(SAMPLERS["hard_bank"])
    trainer, fresh = build(cfg)
    return trainer.run(fresh, STEPS)[0]


@pytest.fixture(scope="module")
def bank_state():
    return _hard_bank_state()


def _with(array, index, value):
    out = np.array(array)
    out.reshape(-1)[index] = value
    return out


def _set_first(tree, value):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    first = np.array(leaves[0])
    first.reshape(-1)[0] = value
    return jax.tree_util.tree_unflatten(treedef, [first] + leaves[1:])


@pytest.mark.parametrize("what", ["nan_params", "inf_params", "nan_adam_moment", "nan_bank",
                                  "plus_inf_bank", "minus_inf_elsewhere"])
def test_non_finite_outside_a_declared_sentinel_is_rejected(tmp_path, bank_state, what, caplog):
    s = bank_state
    bank = s.sampler_state
    bad = {
        "nan_params": lambda: s._replace(params=_set_first(s.params, np.nan)),
        "inf_params": lambda: s._replace(params=_set_first(s.params, -np.inf)),
        "nan_adam_moment": lambda: s._replace(opt_state=(
            s.opt_state[0]._replace(nu=_set_first(s.opt_state[0].nu, np.nan)),
            *s.opt_state[1:])),
        "nan_bank": lambda: s._replace(sampler_state=bank._replace(
            bank_residuals=_with(bank.bank_residuals, -1, np.nan))),
        "plus_inf_bank": lambda: s._replace(sampler_state=bank._replace(
            bank_residuals=_with(bank.bank_residuals, 0, np.inf))),
        "minus_inf_elsewhere": lambda: s._replace(sampler_state=bank._replace(
            points=_with(bank.points, 0, -np.inf))),
    }[what]()
    assert invalid_leaves(s) == []
    assert len(invalid_leaves(bad)) == 1
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(1, s, wait=True)
    ckpt.save(2, bad, wait=True)
    with caplog.at_level(logging.WARNING, "pinn.checkpoint"):
        step, restored = ckpt.restore_latest(s)
    assert step == 1 and same_bits(restored, s)
    assert "/2 holds non-finite values" in caplog.text
    assert ckpt.steps() == [1]  # invalid data is removed


# ----------------------------------------------------------------------------------------------
# template mismatch vs damage


@pytest.mark.parametrize("change", ["width", "dtype"])
def test_checkpoint_of_other_params_is_kept_not_deleted(tmp_path, bank_state, change, caplog):
    saved = bank_state
    if change == "width":
        _, template = build(tiny_params(SAMPLERS["hard_bank"], model={"width": 16}))
    else:
        template = jax.tree_util.tree_map(
            lambda x: np.asarray(x, np.float64) if np.issubdtype(np.asarray(x).dtype, np.floating)
            else np.asarray(x), saved)
    directory = tmp_path / "ckpt"
    ckpt = Checkpointer(directory)
    ckpt.save(STEPS, saved, wait=True)
    files = sorted(p.relative_to(directory) for p in (directory / str(STEPS)).rglob("*") if p.is_file())
    with caplog.at_level(logging.WARNING, "pinn.checkpoint"):
        assert ckpt.restore_latest(template) is None
    assert "belongs to other params" in caplog.text
    assert "removed" not in caplog.text and "corrupt" not in caplog.text
    # kept intact, out of the way of this run's own steps
    kept = ckpt.aside / str(STEPS)
    assert sorted(p.relative_to(ckpt.aside) for p in kept.rglob("*") if p.is_file()) == files
    assert ckpt.steps() == []
    ckpt.save(STEPS, template, wait=True)  # the current run can save that step again
    ckpt.close()
    step, original = Checkpointer(ckpt.aside).restore_latest(saved)  # still readable, unchanged
    assert step == STEPS and same_bits(original, saved)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), max(1, len(data) // 16)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip_array_bytes", "truncate_array_data", "garble_metadata"])
def test_damaged_checkpoint_is_removed(tmp_path, damage, caplog):
    state = {"w": np.arange(4096, dtype=np.float32) / 7, "step": np.asarray(5, np.int32)}
    directory = tmp_path / "ckpt"
    ckpt = Checkpointer(directory)
    ckpt.save(1, state, wait=True)
    ckpt.save(2, state, wait=True)
    ckpt.close()
    files = [p for p in (directory / "2").rglob("*") if p.is_file() and p.stat().st_size > 0]
    data = max((p for p in files if p.parent.name == "d"), key=lambda p: p.stat().st_size)
    if damage == "flip_array_bytes":
        _flip(data)
    elif damage == "truncate_array_data":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    else:
        for p in files:
            if p.name.startswith("_") or "metadata" in p.name:
                p.write_text("{ not json")
    ckpt = Checkpointer(directory)
    with caplog.at_level(logging.WARNING, "pinn.checkpoint"):
        step, restored = ckpt.restore_latest(state)
    assert step == 1 and same_bits(restored, state)
    assert re.search(r"/2 (is unreadable|does not match its checksum).*removed", caplog.text)
    assert "other params" not in caplog.text
    assert ckpt.steps() == [1] and not ckpt.aside.exists()
    ckpt.close()

