"""Reliability: killed stages resume to the same result, divergence is caught and reported, corrupt
checkpoints and files are detected, outputs are written atomically, data files are data only.

Stages run as subprocesses, with their command lines from dvc.yaml (`stage` in tests/conftest.py),
in temporary project directories holding a tiny params.yaml (burgers_1d, width 8, two levels); the reference, collocation and init files are built
once per module (`inputs`) and copied into each project, and `baseline` is one uninterrupted run of
the remaining stages that the interrupted runs are compared with. Subprocesses share the persistent
JAX compilation cache of `pipeline_env` (tests/conftest.py).

What "the same result" means here (checked on CPU): a run that was SIGKILLed and resumed, and a
second run from scratch with the same params and seed, give BIT-IDENTICAL parameters, samples and
metrics — only the timing columns (`wall_s`, `steps_per_s`) differ. The whole state (network, Adam,
sampler, balancer, PRNG key, step, lr scale; for the refinement the quasi-Newton state with its
line-search cache) is checkpointed, and chunk boundaries do not depend on where a run resumed, so
there is no tolerance to allow.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import output_of, stage, stage_argv, stage_option

from pinn import cascade, io, optim
from pinn.checkpoint import Checkpointer
from pinn.config import load_params, validate_params
from pinn.errors import UserError
from pinn.precision import scope
from pinn.stages.common import load_collocation, problem_of
from pinn.stages.resume import fingerprint

LEVEL0_STEPS, CHECKPOINT_EVERY, LOG_EVERY = 200, 20, 10
REFINE_ITERATIONS, BLOCK = 100, 10
PARAMS = {
    "seed": 0,
    "problem": {"name": "burgers_1d", "coefficients": {}},
    "model": {"width": 8, "depth": 2},
    "collocation": {"num_points": 512, "ic_points": 64, "bc_points": 64},
    "sampling": {"method": "uniform", "batch_size": 256, "ic_batch_size": 64, "bc_batch_size": 32},
    "multilevel": {"num_levels": 2, "coarsening_factor": 0.5, "levels": {
        "level0": {"steps": LEVEL0_STEPS, "init_from": "init"},
        "level1": {"steps": 40, "init_from": "level0"}}},
    "refine": {"method": "lbfgs", "iterations": REFINE_ITERATIONS, "block_size": BLOCK,
               "memory_size": 5, "precision": "float64"},
    "train": {"log_every": LOG_EVERY, "checkpoint_every": CHECKPOINT_EVERY, "precision": "float32"},
    "windows": {"count": 1, "later": {}},
}
INPUTS = ("data/reference.npz", "data/collocation.npz", "data/export/init.npz")
TIMING = {"wall_s", "steps_per_s"}  # the only things allowed to differ between equal runs


# ----------------------------------------------------------------------------------------------
# helpers


def write_params(project: Path, params: dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def new_project(dest: Path, source: Path, files: tuple[str, ...] = INPUTS,
                params: dict | None = None) -> Path:
    """`dest` with `source`'s params.yaml (or `params`) and copies of `files`."""
    dest.mkdir(parents=True)
    write_params(dest, params if params is not None else yaml.safe_load(
        (source / "params.yaml").read_text()))
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, dest / name)
    return dest


def run_ok(project: Path, env: dict, name: str) -> str:
    """Run stage `name` (its dvc.yaml command) in `project`; it must succeed. Its output."""
    proc = stage(project, env, name)
    out = output_of(proc)
    assert proc.returncode == 0, f"stage {name} failed:\n{out[-3000:]}"
    return out


def resume_dir(project: Path, name: str) -> Path:
    """Stage `name`'s `--resume` directory (dvc.yaml): in-progress runs, one `<fingerprint>/` each."""
    return project / stage_option(project, name, "--resume")


def checkpoint_dir(resume: Path) -> Path | None:
    """`<resume>/<fingerprint>/ckpt` of the one in-progress run there (None: none started)."""
    found = sorted(resume.glob("*/ckpt"))
    assert len(found) <= 1, found
    return found[0] if found else None


def committed_steps(ckpt_dir: Path | None) -> list[int]:
    """Steps of the finished checkpoints (orbax renames a step directory into place when it is
    complete; `_CHECKPOINT_METADATA` is also gone from one that is being deleted)."""
    if ckpt_dir is None or not ckpt_dir.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir()
                  if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").is_file())


def kill_when(project: Path, env: dict, name: str, at_least: int,
              timeout: float = 600) -> tuple[int, str]:
    """Start stage `name`, SIGKILL it as soon as a checkpoint of step >= `at_least` is committed;
    return that step and the run's output."""
    log_path = project / f"killed-at-{at_least}.log"
    resume = resume_dir(project, name)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(stage_argv(project, name), cwd=project, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                steps = committed_steps(checkpoint_dir(resume))
                if steps and steps[-1] >= at_least:
                    proc.send_signal(signal.SIGKILL)
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"no checkpoint >= {at_least} before the run ended:\n"
                                f"{log_path.read_text()[-3000:]}")
                time.sleep(0.005)
        finally:
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return steps[-1], log_path.read_text()


def resumed_at(output: str, pattern: str) -> int | None:
    found = re.findall(pattern, output)
    assert len(found) <= 1, output
    return int(found[0]) if found else None


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def history(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    return frame.drop(columns=[c for c in frame.columns if c in TIMING])


def assert_same_arrays(a: Path, b: Path) -> None:
    with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
        assert sorted(x.files) == sorted(y.files)
        for k in x.files:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), f"{a.name}:{k} differs"


def assert_same_level0(project: Path, baseline: Path) -> None:
    """Bit-identical level0 outputs (timing aside)."""
    got = read_json(project / "data/train/level0/metrics.json")
    want = read_json(baseline / "data/train/level0/metrics.json")
    assert without_timing(got) == without_timing(want)
    pd.testing.assert_frame_equal(history(project / "data/train/level0/history.csv"),
                                  history(baseline / "data/train/level0/history.csv"))
    assert_same_arrays(project / "data/export/level0.npz", baseline / "data/export/level0.npz")
    assert_same_arrays(project / "data/train/level0/samples.npz",
                       baseline / "data/train/level0/samples.npz")
    assert not resume_dir(project, "train@level0").exists()


def flip_bytes(path: Path, at: float = 0.5, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    start = min(int(len(data) * at), max(0, len(data) - count))
    for i in range(start, min(len(data), start + count)):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def level0_template(project: Path):
    """(cfg, the level0 TrainState template) of `project`, as the train stage builds them."""
    cfg = load_params(project / "params.yaml")
    with scope(cfg.train.precision):
        trainer, model = cascade.make_trainer(cfg, problem_of(cfg), "level0")
        return cfg, cascade.state_template(trainer, model, cfg, "level0")


# ----------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def env(pipeline_env) -> dict[str, str]:
    """`pipeline_env`, with the stages' compilation cache pointed at its shared one."""
    return {**pipeline_env, "PINN_JAX_CACHE": pipeline_env["JAX_COMPILATION_CACHE_DIR"]}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, env) -> Path:
    """params.yaml and the reference, collocation and init files (built once)."""
    project = tmp_path_factory.mktemp("inputs")
    write_params(project, PARAMS)
    for name in ("reference", "collocation", "init"):
        run_ok(project, env, name)
    return project


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, inputs, env) -> Path:
    """One uninterrupted run of train@level0, train@level1, refine, evaluate."""
    project = new_project(tmp_path_factory.mktemp("baseline") / "p", inputs)
    for name in ("train@level0", "train@level1", "refine", "evaluate"):
        run_ok(project, env, name)
    return project


# ----------------------------------------------------------------------------------------------
# 1. kills


def test_killed_train_stage_resumes_to_the_identical_result(tmp_path, inputs, baseline, env):
    """SIGKILL early, mid-way and just before the end; each rerun resumes from the newest
    committed checkpoint (losing less than one checkpoint interval) and the final outputs are
    bit-identical to the uninterrupted run's."""
    project = new_project(tmp_path / "p", inputs)
    resume = resume_dir(project, "train@level0")
    last = 0
    for target in (CHECKPOINT_EVERY, LEVEL0_STEPS // 2, LEVEL0_STEPS - CHECKPOINT_EVERY):
        seen, output = kill_when(project, env, "train@level0", target)
        if last:
            assert resumed_at(output, r"train level0: resuming from checkpoint at step (\d+)") == last
        else:
            assert "resuming" not in output
        last = committed_steps(checkpoint_dir(resume))[-1]
        assert seen <= last and last % CHECKPOINT_EVERY == 0 and last <= LEVEL0_STEPS
        if last < LEVEL0_STEPS:
            assert not (project / "data/export/level0.npz").exists()  # nothing final yet
    output = run_ok(project, env, "train@level0")
    assert resumed_at(output, r"train level0: resuming from checkpoint at step (\d+)") == last
    assert f"train level0: {LEVEL0_STEPS} steps" in output
    assert_same_level0(project, baseline)


def test_killed_refine_stage_resumes_to_the_identical_result(tmp_path, baseline, env):
    """The same for the refinement: the checkpointed quasi-Newton state (with its line-search
    cache and L-BFGS memory) must be continued as saved — recomputing the cache or dropping the
    pending (s, y) pair on restore (`reset_cache`) changes every later iterate."""
    files = INPUTS + ("data/export/level0.npz", "data/export/level1.npz")
    project = new_project(tmp_path / "p", baseline, files)
    resume = resume_dir(project, "refine")
    last = 0
    for target in (BLOCK, REFINE_ITERATIONS // 2, REFINE_ITERATIONS - BLOCK):
        seen, output = kill_when(project, env, "refine", target)
        if last:
            assert resumed_at(output, r"refine: resuming from checkpoint at iteration (\d+)") == last
        last = committed_steps(checkpoint_dir(resume))[-1]
        assert seen <= last and last % BLOCK == 0 and last <= REFINE_ITERATIONS
    output = run_ok(project, env, "refine")
    assert resumed_at(output, r"refine: resuming from checkpoint at iteration (\d+)") == last
    assert_same_arrays(project / "data/refined.npz", baseline / "data/refined.npz")
    pd.testing.assert_frame_equal(history(project / "data/refine/history.csv"),
                                  history(baseline / "data/refine/history.csv"))
    assert not resume.exists()


# ----------------------------------------------------------------------------------------------
# 2. determinism


def test_same_params_and_seed_give_identical_outputs(tmp_path, inputs, baseline, env):
    """A second run from scratch (fresh directory; only the reference copied) is bit-identical."""
    project = new_project(tmp_path / "p", inputs, ("data/reference.npz",))
    for name in ("collocation", "init", "train@level0", "train@level1", "refine", "evaluate"):
        run_ok(project, env, name)
    for name in ("metrics.json", "data/train/level0/metrics.json", "data/train/level1/metrics.json"):
        assert without_timing(read_json(project / name)) == without_timing(read_json(baseline / name))
    assert math.isfinite(read_json(project / "metrics.json")["rel_l2"])
    for name in ("data/collocation.npz", "data/export/init.npz", "data/export/level0.npz",
                 "data/export/level1.npz", "data/refined.npz", "data/evaluate/errors.npz",
                 "data/train/level1/samples.npz"):
        assert_same_arrays(project / name, baseline / name)


# ----------------------------------------------------------------------------------------------
# 3. divergence


def test_divergence_fails_with_exit_3_and_writes_no_outputs(tmp_path, inputs, env):
    """ν = 1e38 overflows float32 in the very first step: every retry diverges again."""
    params = json.loads(json.dumps(PARAMS))
    params["problem"]["coefficients"] = {"viscosity": 1.0e38}
    project = new_project(tmp_path / "p", inputs, params=params)
    proc = stage(project, env, "train@level0")
    out = output_of(proc)
    assert proc.returncode == 3, out
    assert "Traceback" not in out
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr
    assert "train.max_divergence_retries" in errors[0] and "level0" in errors[0]
    retries = [line for line in proc.stderr.splitlines() if "rolling back to step 0" in line]
    assert len(retries) == 3 and "retry 3 of 3" in retries[-1] and "x0.125" in retries[-1]
    for name in ("data/export/level0.npz", "data/train", "data/checkpoints"):
        assert not (project / name).exists(), name


def _tiny_trainer(**coefficients):
    from pinn.problems import make_problem

    params = json.loads(json.dumps(PARAMS))
    params["problem"]["coefficients"] = coefficients
    cfg = validate_params(params)
    trainer, model = cascade.make_trainer(cfg, make_problem("burgers_1d", **coefficients), "level0")
    return trainer, cascade.state_template(trainer, model, cfg, "level0")


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


#: the divergence handling of params' defaults (train.max_divergence_retries, divergence_lr_factor)
DIVERGENCE = {"max_divergence_retries": 3, "divergence_lr_factor": 0.5}


def _lr_scale(state) -> float:
    return float(optim.lr_scale_of(state.opt_state))


def test_train_level_rolls_back_lowers_lr_and_retries(monkeypatch):
    trainer, state0 = _tiny_trainer()
    real_run = trainer.run

    # every non-finite step is caught inside the jitted step: counted, its update not applied
    poisoned = state0._replace(params=jax.tree_util.tree_map(
        lambda x: x.at[(0,) * x.ndim].set(jnp.inf), state0.params))
    after, metrics = real_run(poisoned, 10)
    assert not np.isfinite(float(metrics["loss"]))
    assert int(after.nonfinite) == 10 and int(after.step) == 10
    assert _leaves_equal(after.params, poisoned.params)
    assert _leaves_equal(after.opt_state, poisoned.opt_state)

    # one diverging interval: rolled back, learning rate lowered, retried, training goes on
    calls = []

    def diverging_once(state, n):
        calls.append(state)
        new, metrics = real_run(state, n)
        if len(calls) == 2:  # the second interval diverges: whatever it produced is garbage
            new = new._replace(params=jax.tree_util.tree_map(lambda x: x * jnp.nan, new.params),
                               nonfinite=new.nonfinite + 1)
            metrics = dict(metrics, loss=jnp.asarray(jnp.nan))
        return new, metrics

    monkeypatch.setattr(trainer, "run", diverging_once)
    chunks = []
    state, rows = cascade.train_level(trainer, state0, 40, level="level0", log_every=10,
                                      on_chunk=chunks.append, **DIVERGENCE)
    assert [int(s.step) for s in calls] == [0, 10, 10, 20, 30]
    assert _leaves_equal(calls[2].params, calls[1].params)  # rolled back to the last good state
    # the cut is in the optimizer state (Adam's injected `lr_scale`), nothing beside it
    assert _lr_scale(calls[1]) == 1.0 and _lr_scale(calls[2]) == 0.5
    assert _leaves_equal(calls[2].opt_state,
                         optim.with_lr_scale(calls[1].opt_state, 0.5))  # only the scale changed
    assert [r["level_step"] for r in rows] == [10, 20, 30, 40]
    assert [r["lr_scale"] for r in rows] == [1.0, 0.5, 0.5, 0.5]
    assert cascade.finite_rows(rows) and len(chunks) == 4
    assert int(state.step) == 40 and _lr_scale(state) == 0.5
    # the retried interval really ran with the lowered learning rate
    expected, _ = real_run(calls[1]._replace(opt_state=optim.with_lr_scale(calls[1].opt_state, 0.5)), 10)
    assert _leaves_equal(chunks[1].params, expected.params)
    assert not _leaves_equal(chunks[1].params, real_run(calls[1], 10)[0].params)

    # always diverging: max_divergence_retries (3) retries, then a clear error
    calls.clear()
    monkeypatch.setattr(trainer, "run", lambda s, n: (
        calls.append(s) or (s._replace(step=s.step + n, nonfinite=s.nonfinite + 1), {})))
    with pytest.raises(cascade.DivergenceError, match=r"train\.max_divergence_retries"):
        cascade.train_level(trainer, state0, 40, level="level0", log_every=10, **DIVERGENCE)
    assert len(calls) == 4 and [_lr_scale(s) for s in calls] == [1.0, 0.5, 0.25, 0.125]


# ----------------------------------------------------------------------------------------------
# 4. corrupt checkpoints and files


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, inputs, baseline, env):
    project = new_project(tmp_path / "p", inputs)
    kill_when(project, env, "train@level0", 3 * CHECKPOINT_EVERY)
    ckpt_dir = checkpoint_dir(resume_dir(project, "train@level0"))
    steps = committed_steps(ckpt_dir)
    assert len(steps) >= 2
    newest, previous = steps[-1], steps[-2]
    for f in (ckpt_dir / str(newest)).rglob("*"):  # every file of the newest checkpoint garbled
        if f.is_file() and f.stat().st_size > 0:
            flip_bytes(f)
    output = run_ok(project, env, "train@level0")
    # the warning names the skipped checkpoint
    assert re.search(rf"ckpt/{newest} (is unreadable|does not match its checksum)", output), output
    assert resumed_at(output, r"train level0: resuming from checkpoint at step (\d+)") == previous
    assert_same_level0(project, baseline)


def test_no_usable_checkpoint_starts_over(tmp_path, inputs, baseline, env):
    """A NaN checkpoint and a truncated one (same fingerprint): both skipped, training starts at 0."""
    project = new_project(tmp_path / "p", inputs)
    cfg, template = level0_template(project)
    # where the train stage keeps this run's checkpoints: <--resume>/<fingerprint of the params
    # and of its --start, --reference and --collocation files>/ckpt
    fp = fingerprint(cfg, "train-level0", [project / stage_option(project, "train@level0", option)
                                           for option in ("--start", "--reference", "--collocation")])
    resume = resume_dir(project, "train@level0") / fp
    resume.mkdir(parents=True)
    (resume / "history.json").write_text("[]")  # (written before any checkpoint, as the stage does)
    ckpt = Checkpointer(resume / "ckpt")
    nan_params = jax.tree_util.tree_map(lambda x: x * jnp.nan, template.params)
    ckpt.save(20, template._replace(params=nan_params, step=jnp.asarray(20, jnp.int32)), wait=True)
    ckpt.save(40, template._replace(step=jnp.asarray(40, jnp.int32)), wait=True)
    ckpt.close()
    for f in (resume / "ckpt/40").rglob("*"):
        if f.is_file():
            truncate(f)
    output = run_ok(project, env, "train@level0")
    assert "resuming" not in output
    assert "/40 is unreadable" in output or "/40 does not match its checksum" in output, output
    assert "/20 holds non-finite values" in output, output
    assert_same_level0(project, baseline)


def test_checkpointer_detects_silently_corrupted_array_data(tmp_path):
    """Flipped bits in an array's stored bytes restore without error through orbax; the digest
    saved with every checkpoint catches them. Bad checkpoints are removed (their step is saved
    again by the resumed run, and orbax refuses to overwrite a step)."""
    import orbax.checkpoint as ocp

    state = {"w": np.arange(4096, dtype=np.float32) / 7, "step": np.asarray(5, np.int32)}
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, state, wait=True)
    ckpt.save(2, {"w": state["w"] * np.nan, "step": state["step"]}, wait=True)
    ckpt.save(3, state, wait=True)
    ckpt.close()
    data = max((tmp_path / "3/default/ocdbt.process_0/d").iterdir(), key=lambda p: p.stat().st_size)
    flip_bytes(data, count=1)
    manager = ocp.CheckpointManager(tmp_path)
    raw = manager.restore(3, args=ocp.args.StandardRestore(
        {"state": state, "sha256": np.zeros(32, np.uint8)}))["state"]
    manager.close()
    assert not np.array_equal(raw["w"], state["w"])  # orbax alone returns the garbage

    ckpt = Checkpointer(tmp_path)
    step, restored = ckpt.restore_latest(state)
    assert step == 1 and np.array_equal(restored["w"], state["w"])
    assert ckpt.steps() == [1]
    ckpt.save(2, state, wait=True)  # the removed steps can be saved again
    ckpt.close()


@pytest.mark.parametrize("damage", ["truncate", "garble", "replace"])
def test_corrupt_export_fails_the_dependent_stage_with_one_line(tmp_path, baseline, env, damage):
    files = INPUTS + ("data/export/level0.npz", "data/export/level1.npz", "data/refined.npz")
    project = new_project(tmp_path / "p", baseline, files)
    target, name = {
        "truncate": ("data/export/level0.npz", "train@level1"),
        "garble": ("data/export/level1.npz", "refine"),
        "replace": ("data/refined.npz", "evaluate"),
    }[damage]
    path = project / target
    if damage == "truncate":
        truncate(path)
    elif damage == "garble":
        flip_bytes(path, at=0.5, count=64)  # inside the arrays; the zip directory is intact
    else:
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    def outputs():
        return {p: p.read_bytes() for p in (project / "data").rglob("*") if p.is_file()}

    before = outputs()
    proc = stage(project, env, name)
    out = output_of(proc)
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {target}: "), proc.stderr
    assert outputs() == before  # nothing trained from garbage, nothing written
    assert not (project / "metrics.json").exists()


# ----------------------------------------------------------------------------------------------
# 5. atomic outputs


def test_crash_while_writing_an_npz_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "export" / "level0.npz"
    io.save_tree(path, {"w": np.arange(3.0)})
    before = path.read_bytes()

    def write_then_crash(member, array, **kwargs):
        member.write(b"\x93NUMPY" + b"\0" * 64)  # the start of an array, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", write_then_crash)
    with pytest.raises(OSError, match="No space left"):
        io.save_tree(path, {"w": np.arange(3.0) + 1})
    with pytest.raises(OSError, match="No space left"):
        io.save_tree(tmp_path / "export" / "level1.npz", {"w": np.arange(3.0)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["level0.npz"]  # no partial or temp file
    loaded, _ = io.load_tree(path, {"w": np.zeros(3)})
    assert np.array_equal(loaded["w"], np.arange(3.0))


def test_crash_while_writing_json_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    io.write_json(path, {"rel_l2": 0.5})
    before = path.read_bytes()
    real_write_text = Path.write_text

    def half_then_crash(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_crash)
    with pytest.raises(OSError):
        io.write_json(path, {"rel_l2": 0.25})
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("bad, key", [
    ({"rel_l2": float("nan")}, "rel_l2"),
    ({"loss": float("inf")}, "loss"),
    ({"a": {"b": [1.0, -math.inf]}}, r"a\.b\[1\]"),
    ({"max_abs": np.float64("nan")}, "max_abs"),
])
def test_write_json_refuses_non_finite_metrics(tmp_path, bad, key):
    path = tmp_path / "metrics.json"
    io.write_json(path, {"rel_l2": 0.5})
    before = path.read_bytes()
    with pytest.raises(ValueError, match=rf"non-finite metric {key} "):
        io.write_json(path, bad)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# ----------------------------------------------------------------------------------------------
# 7. data files are data only


class _Payload:
    """Pickles to a call of os.system: loading it with pickle would run the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_loaders_reject_object_arrays_without_unpickling(tmp_path, inputs):
    from pinn.reference import Reference

    marker = tmp_path / "executed"
    evil = np.array([_Payload(marker), 1.0], dtype=object)
    reference = tmp_path / "reference.npz"
    with np.load(inputs / "data/reference.npz") as good:
        np.savez(reference, **{k: good[k] for k in good.files if k != "t"}, t=evil)
    with pytest.raises(ValueError, match="reference.npz"):
        Reference.load(reference)

    export = tmp_path / "level0.npz"
    np.savez(export, **{"tree['w']": evil})
    with pytest.raises(UserError, match=r"level0\.npz: array .tree\['w'\]. is unreadable"):
        io.load_tree(export, {"w": np.zeros(2)})

    collocation = tmp_path / "collocation.npz"
    np.savez(collocation, interior=evil, ic=np.zeros((2, 1)), bc=np.zeros((2, 2)))
    with pytest.raises(UserError, match="collocation.npz"):
        load_collocation(collocation)
    assert not marker.exists()
