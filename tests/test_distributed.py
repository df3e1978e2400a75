"""Data-parallel / multi-host training (pinn.distributed) and the DVC queue route for sweeps.

JAX fixes its device count when it first initialises, and this pytest process already has one
CPU device; so the 4-device and the two-process runs happen in fresh subprocesses
(tests/_distributed_worker.py) that write their results to files, compared here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from pinn import distributed
from pinn.config import ConfigError, DistributedConfig, validate_params

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_distributed_worker.py"


# ----------------------------------------------------------------------------------------------
# helpers


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without JAX/XLA/PINN_* distributed settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XLA_", "JAX_", "PINN_COORDINATOR", "PINN_NUM_", "PINN_PROCESS"))
    }
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _start(args: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    """Start a subprocess in its own process group (so the group can be killed), output to `log`."""
    with open(log, "wb") as f:
        return subprocess.Popen(
            args, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def _kill(proc: subprocess.Popen) -> None:
    """Kill the process group that `_start` created for `proc` (if it is still there)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def _wait_all(procs: list[subprocess.Popen], timeout_s: float) -> list[int | None]:
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            pass
    return [p.poll() for p in procs]


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "<no log>"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _param_pairs(npz, a: str, b: str):
    names = [k[len(a) :] for k in npz.files if k.startswith(a)]
    assert names, f"no {a}* arrays in {npz.files}"
    return [(name, npz[a + name], npz[b + name]) for name in names]


# ----------------------------------------------------------------------------------------------
# process layout: env over params over defaults


def test_resolve_setup_defaults_is_single_process():
    setup = distributed.resolve_setup({})
    assert setup == distributed.ProcessSetup(None, 1, 0)
    assert setup.single_process
    assert distributed.initialize({}) is False  # no-op: nothing to join
    assert distributed.initialize(validate_params({})) is False
    assert not jax.distributed.is_initialized()


def test_resolve_setup_env_overrides_params_per_field():
    section = DistributedConfig(coordinator_address="node0:1234", num_processes=4, process_id=0)
    setup = distributed.resolve_setup(section, env={"PINN_PROCESS_ID": "3"})
    assert setup == distributed.ProcessSetup("node0:1234", 4, 3)
    setup = distributed.resolve_setup(
        section, env={"PINN_COORDINATOR_ADDRESS": "10.0.0.1:999", "PINN_NUM_PROCESSES": "8",
                      "PINN_PROCESS_ID": "7"},
    )
    assert setup == distributed.ProcessSetup("10.0.0.1:999", 8, 7)
    # a bare mapping is read as the environment
    setup = distributed.resolve_setup(
        {"PINN_COORDINATOR_ADDRESS": "h:1", "PINN_NUM_PROCESSES": "2", "PINN_PROCESS_ID": "1"}
    )
    assert setup == distributed.ProcessSetup("h:1", 2, 1) and not setup.single_process


def test_resolve_setup_auto_defers_to_jax_detection():
    setup = distributed.resolve_setup({"PINN_NUM_PROCESSES": "auto", "PINN_PROCESS_ID": "auto"})
    assert setup == distributed.ProcessSetup(None, None, None)
    assert not setup.single_process
    # num auto: the process id must not come from the (shared) params default 0
    setup = distributed.resolve_setup({"PINN_NUM_PROCESSES": "auto"})
    assert setup == distributed.ProcessSetup(None, None, None)
    cfg = validate_params({"distributed": {"num_processes": None}})
    assert distributed.resolve_setup(cfg, env={}) == distributed.ProcessSetup(None, None, None)
    assert distributed.resolve_setup(cfg, env={"PINN_PROCESS_ID": "5"}).process_id == 5


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"PINN_NUM_PROCESSES": "two"}, "PINN_NUM_PROCESSES = 'two'"),
        ({"PINN_NUM_PROCESSES": "2", "PINN_PROCESS_ID": "2"}, "process_id = 2: must be < num_processes (2)"),
        ({"PINN_NUM_PROCESSES": "0"}, "PINN_NUM_PROCESSES = 0"),
        ({"PINN_COORDINATOR_ADDRESS": "localhost"}, "must be 'host:port'"),
    ],
)
def test_resolve_setup_rejects_bad_env(env, needle):
    with pytest.raises(ConfigError) as e:
        distributed.resolve_setup(env)
    assert needle in str(e.value)


def test_distributed_params_are_validated():
    with pytest.raises(ConfigError) as e:
        validate_params({"distributed": {"num_processes": 2, "process_id": 2}})
    assert "distributed.process_id = 2: must be < num_processes (2)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        validate_params({"distributed": {"coordinator_address": "node0"}})
    assert "distributed.coordinator_address" in str(e.value)
    with pytest.raises(ConfigError) as e:
        validate_params({"distributed": {"num_procs": 2}})
    assert "did you mean 'num_processes'" in str(e.value)


# ----------------------------------------------------------------------------------------------
# mesh, shardings, batch-size check


def test_mesh_and_shardings():
    mesh = distributed.make_mesh()
    assert mesh.axis_names == ("data",)
    assert mesh.shape["data"] == jax.device_count()
    assert distributed.batch_sharding(mesh).spec == PartitionSpec("data")
    assert distributed.replicated(mesh).spec == PartitionSpec()
    tree = {"w": np.ones((3, 2), np.float32), "k": jnp.arange(4)}
    placed = distributed.replicate(tree, mesh)
    for leaf in jax.tree_util.tree_leaves(placed):
        assert leaf.sharding == distributed.replicated(mesh)
    np.testing.assert_array_equal(placed["w"], tree["w"])


@pytest.mark.parametrize(
    "sampling, needle",
    [
        ({"batch_size": 130}, "sampling.batch_size = 130: must be divisible by the number of devices (4)"),
        ({"ic_batch_size": 30}, "sampling.ic_batch_size = 30"),
        ({"bc_batch_size": 6}, "sampling.bc_batch_size = 6"),
        ({"method": "rar_d", "rar_d": {"capacity": 1026}}, "sampling.rar_d.capacity = 1026"),
    ],
)
def test_check_batch_sizes_names_the_key(sampling, needle):
    cfg = validate_params(
        {"sampling": {"batch_size": 128, "ic_batch_size": 32, "bc_batch_size": 32, **sampling}}
    )
    four = SimpleNamespace(shape={"data": 4})  # only the axis size matters to the check
    rows = cfg.sampling.rar_d.capacity if cfg.sampling.method == "rar_d" else cfg.sampling.batch_size
    with pytest.raises(ConfigError) as e:
        distributed.check_batch_sizes(cfg, rows, four)
    assert needle in str(e.value)
    one = SimpleNamespace(shape={"data": 1})
    distributed.check_batch_sizes(cfg, rows, one)  # everything splits over one device


# ----------------------------------------------------------------------------------------------
# the same code path on one device


def _small_trainer(mesh=None, **distributed_section):
    from pinn.models import make_model, split
    from pinn.problems import make_problem
    from pinn.train import Trainer

    cfg = validate_params(
        {
            "problem": {"name": "burgers_1d"},
            "model": {"width": 8, "depth": 2},
            "sampling": {"batch_size": 64, "ic_batch_size": 16, "bc_batch_size": 16},
            "distributed": distributed_section,
        }
    )
    problem = make_problem("burgers_1d")
    model = make_model(cfg.model, problem, seed=0)
    trainer = Trainer.from_params(cfg, problem, model, mesh=mesh)
    return trainer, trainer.init(split(model)[1], seed=0)


def test_one_device_mesh_matches_no_mesh():
    plain, state = _small_trainer()
    assert plain.mesh is None
    meshed, state_m = _small_trainer(mesh=distributed.make_mesh())
    state, _ = plain.run(state, 3)
    state_m, metrics_m = meshed.run(state_m, 3)
    state_m, metrics_m = meshed.run(state_m, 3)  # the output goes back in without recompiling
    state, _ = plain.run(state, 3)
    assert meshed.compiles == 1
    assert int(state_m.step) == 6
    replicated = distributed.replicated(meshed.mesh)
    for leaf in jax.tree_util.tree_leaves(state_m):
        assert leaf.sharding == replicated
    for a, b in zip(jax.tree_util.tree_leaves(state_m.params), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)


def test_data_parallel_params_build_a_mesh_over_all_devices():
    trainer, _ = _small_trainer(data_parallel=True)
    assert trainer.mesh is not None and trainer.mesh.shape["data"] == jax.device_count()


# ----------------------------------------------------------------------------------------------
# 4 simulated CPU devices vs one


@pytest.fixture(scope="module")
def four_device_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("four_devices")
    log = out / "worker.log"
    env = _clean_env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = _start([sys.executable, str(WORKER), "equivalence", str(out)], env, log)
    try:
        (rc,) = _wait_all([proc], timeout_s=240)
    finally:
        _kill(proc)
    assert rc == 0, f"worker exit {rc}:\n{_tail(log)}"
    return out


@pytest.mark.parametrize("case", ["uniform_gradnorm", "hard_bank"])
def test_four_devices_match_one_device(four_device_results, case):
    info = json.loads((four_device_results / f"{case}.json").read_text())
    assert info["device_count"] == 4
    assert info["steps"] == [20, 20] and info["nonfinite"] == [0, 0]
    with np.load(four_device_results / f"{case}.npz") as npz:
        moved = max(float(np.max(np.abs(s - i))) for _, s, i in _param_pairs(npz, "sharded", "init"))
        assert moved > 1e-4, "training did not change the parameters: the comparison is vacuous"
        for name, sharded, single in _param_pairs(npz, "sharded", "single"):
            np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(info["loss"][0], info["loss"][1], rtol=1e-5)
    # parameters (all state) come back replicated over the 4 devices
    assert info["params_sharding"] and all(
        p == {"num_devices": 4, "replicated": True} for p in info["params_sharding"]
    )


@pytest.mark.parametrize("case", ["uniform_gradnorm", "hard_bank"])
def test_four_devices_really_split_the_batch(four_device_results, case):
    """The sharding XLA gave every point array the residual saw (after propagation): 4 row
    shards of N/4 rows, not a replicated copy; and the compiled step all-reduces the partial sums."""
    info = json.loads((four_device_results / f"{case}.json").read_text())
    seen = info["residual_inputs"]
    shapes = {tuple(r["shape"]) for r in seen}
    assert (128, 2) in shapes  # the collocation batch
    if case == "hard_bank":
        assert (256 + 64, 2) in shapes  # the candidate pool ∪ bank of the refresh
    for r in seen:
        assert r["num_devices"] == 4 and not r["fully_replicated"], r
        assert r["shard_shape"] == [r["shape"][0] // 4, r["shape"][1]], r
    assert info["collectives"]["all-reduce"] >= 1, info["collectives"]


def test_four_devices_refuse_an_indivisible_batch(four_device_results):
    errors = json.loads((four_device_results / "errors.json").read_text())
    assert errors["batch_size_130"] is not None, "batch_size 130 on 4 devices was accepted"
    assert "sampling.batch_size = 130: must be divisible by the number of devices (4)" in errors[
        "batch_size_130"
    ]


# ----------------------------------------------------------------------------------------------
# two processes on localhost, one global mesh


def test_two_processes_end_with_identical_params(tmp_path):
    port = _free_port()
    procs, logs = [], []
    try:
        for i in range(2):
            env = _clean_env(
                XLA_FLAGS="--xla_force_host_platform_device_count=2",
                PINN_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                PINN_NUM_PROCESSES="2",
                PINN_PROCESS_ID=str(i),
            )
            logs.append(tmp_path / f"process{i}.log")
            procs.append(_start([sys.executable, str(WORKER), "multiprocess", str(tmp_path)], env, logs[-1]))
        codes = _wait_all(procs, timeout_s=240)
    finally:
        for p in procs:
            _kill(p)
    for i, rc in enumerate(codes):
        assert rc == 0, f"process {i} exit {rc}:\n{_tail(logs[i])}"

    infos = [json.loads((tmp_path / f"process{i}.json").read_text()) for i in range(2)]
    for i, info in enumerate(infos):
        assert info["process_index"] == i and info["process_count"] == 2
        assert info["device_count"] == 4 and info["local_device_count"] == 2
        assert info["mesh_process_indices"] == [0, 1]  # the mesh spans both processes
        assert info["steps"] == 10 and info["nonfinite"] == 0
        for r in info["residual_inputs"]:  # batch and pool split over both processes' devices
            assert r["num_devices"] == 4 and not r["fully_replicated"], r
            assert r["process_indices"] == [0, 1], r
            assert r["shard_shape"][0] == r["shape"][0] // 4, r
    with np.load(tmp_path / "process0.npz") as p0, np.load(tmp_path / "process1.npz") as p1:
        assert p0.files and sorted(p0.files) == sorted(p1.files)
        for key in p0.files:  # identical, bit for bit, in both processes
            np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)
        with np.load(tmp_path / "single_device.npz") as single:  # and ≈ one device alone
            for key in p0.files:
                np.testing.assert_allclose(p0[key], single[key], rtol=1e-5, atol=1e-7, err_msg=key)


# ----------------------------------------------------------------------------------------------
# ablation sweeps beyond one machine: DVC's experiment queue

def _init_export_md5(project: Path) -> str:
    """md5 (DVC's hash of a file) of the `init` stage's output in `project`, computed here by its
    dvc.yaml command, run in this process."""
    import hashlib
    import importlib

    from conftest import stage_argv

    from pinn.stages.common import invoke

    _, _, module, *args = stage_argv(project, "init")
    cwd = os.getcwd()
    os.chdir(project)
    try:
        invoke(importlib.import_module(module).main, args)
    finally:
        os.chdir(cwd)
    return hashlib.md5((project / args[args.index("--out") + 1]).read_bytes()).hexdigest()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_dvc_queue_runs_two_experiments_in_parallel(tiny_project, pipeline_env, tmp_path):
    """`dvc exp run --queue -S …` twice, `dvc queue start --jobs 2`, wait, check `dvc exp show`.

    `tiny_project` (tests/conftest.py): a temporary git + DVC repo with the project's dvc.yaml,
    the `pinn` package and tiny params. The experiments target the `init` stage only (seconds
    each; DVC runs the `params` gate first): the whole tiny pipeline takes minutes per experiment
    on a loaded 2-core CPU, too long here; the queue route is the same for any target
    (docs/distributed.md). Each experiment's recorded output must be exactly what the init stage
    computes for its seed (here, from scratch): nothing restored from DVC's run cache or from
    another experiment's workspace may stand in for it.
    """
    pytest.importorskip("dvc")
    import yaml

    repo, env = tiny_project, pipeline_env
    dvc = [sys.executable, "-m", "dvc"]

    def run(*args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [*dvc, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    for seed in (1, 2):
        run("exp", "run", "--queue", "-S", f"seed={seed}", "-n", f"seed{seed}", "init")
    status = run("queue", "status")
    assert "seed1" in status and "seed2" in status and status.count("Queued") == 2, status
    try:
        run("queue", "start", "--jobs", "2")
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            status = run("queue", "status")
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
    finally:
        subprocess.run([*dvc, "queue", "stop", "--kill"], cwd=repo, env=env, capture_output=True,
                       timeout=120)
    rows = {line.split()[1]: line.split()[-1] for line in status.splitlines()
            if line.split()[1:2] in (["seed1"], ["seed2"])}
    assert rows == {"seed1": "Success", "seed2": "Success"}, status

    shown = json.loads(run("exp", "show", "--json"))
    experiments = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                experiments[rev["name"]] = (
                    data["params"]["params.yaml"]["data"]["seed"],
                    data["outs"]["data/export/init.npz"]["hash"],
                )
    assert set(experiments) == {"seed1", "seed2"}, experiments
    assert experiments["seed1"][0] == 1 and experiments["seed2"][0] == 2
    hashes = {h for _, h in experiments.values()}
    assert None not in hashes and len(hashes) == 2, experiments  # two different seeded networks
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for seed in (1, 2):
        scratch = tmp_path / f"seed{seed}"
        scratch.mkdir()
        (scratch / "params.yaml").write_text(yaml.safe_dump({**params, "seed": seed}, sort_keys=False))
        assert experiments[f"seed{seed}"][1] == _init_export_md5(scratch), f"seed {seed}"
