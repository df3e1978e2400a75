"""Subprocess side of tests/test_distributed.py (JAX's device count is fixed at its first use, so
the multi-device runs happen in fresh processes started by the test with their own env).

    python tests/_distributed_worker.py equivalence OUT_DIR
        (run with XLA_FLAGS=--xla_force_host_platform_device_count=4) for each configuration in
        CASES: a Trainer on a 4-device mesh and one without a mesh train the same steps from the
        same state; writes OUT_DIR/<case>.npz (params of both runs, flattened) and
        OUT_DIR/<case>.json (the shardings XLA assigned to every point array the residual saw,
        the compiled step's collectives, the output state's sharding).

    python tests/_distributed_worker.py multiprocess OUT_DIR
        one process of a multi-process run; PINN_COORDINATOR_ADDRESS / PINN_NUM_PROCESSES /
        PINN_PROCESS_ID in the env. `pinn.distributed.initialize()`, a global mesh over every
        process's devices, a few sharded steps; writes OUT_DIR/process<i>.npz (the params) and
        OUT_DIR/process<i>.json (process/device counts, the shardings seen); process 0 also
        trains on its first device alone -> OUT_DIR/single_device.npz.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jax

from pinn import distributed


def _params(sampling: dict, balancing: dict | None = None, problem: str = "burgers_1d"):
    from pinn.config import validate_params

    return validate_params(
        {
            "seed": 0,
            "problem": {"name": problem},
            "model": {"width": 8, "depth": 2},
            "sampling": {"batch_size": 128, "ic_batch_size": 32, "bc_batch_size": 32, **sampling},
            "balancing": balancing or {"method": "fixed"},
            "optimizer": {"learning_rate": 1e-3},
        }
    )


CASES = {
    # uniform resampling every step; GradNorm exercises the per-term gradient norms (jacrev)
    "uniform_gradnorm": _params(
        {"method": "uniform"}, {"method": "gradnorm", "gradnorm": {"update_every": 5}}
    ),
    # hard bank: pool ∪ bank residuals (sharded), top-k on the gathered magnitudes
    "hard_bank": _params(
        {
            "method": "hard_bank",
            "hard_bank": {
                "pool_size": 256, "bank_size": 64, "top_k": 16, "refresh_every": 5,
                "p_start_step": 0, "p_ramp_steps": 0, "p_max": 0.25,
            },
        }
    ),
}
NUM_STEPS = 20


class ShardingProbe:
    """The problem, except that `residual` records the sharding XLA gives its points.

    `jax.debug.inspect_array_sharding` reports the sharding chosen by the SPMD partitioner at
    compile time (after propagation), i.e. how the points are really laid out over the devices.
    """

    def __init__(self, problem):
        self._problem = problem
        self.seen: list[dict] = []

    def __getattr__(self, name):
        return getattr(self._problem, name)

    def residual(self, u, z):
        self._record(z)
        return self._problem.residual(u, z)

    def pde_residuals(self, u, z):  # what the loss calls (named residuals, `pinn.loss`)
        self._record(z)
        return self._problem.pde_residuals(u, z)

    def _record(self, z):
        shape = tuple(z.shape)

        def record(sharding):
            self.seen.append(
                {
                    "shape": list(shape),
                    "num_devices": len(sharding.device_set),
                    "fully_replicated": bool(sharding.is_fully_replicated),
                    "shard_shape": list(sharding.shard_shape(shape)),
                    "process_indices": sorted({d.process_index for d in sharding.device_set}),
                }
            )

        jax.debug.inspect_array_sharding(z, callback=record)


def _trainer(cfg, mesh, probe: bool):
    import jax.numpy as jnp

    from pinn.models import make_model, split
    from pinn.problems import make_problem
    from pinn.train import Trainer

    problem = make_problem(cfg.problem.name)
    model = make_model(cfg.model, problem, seed=cfg.seed, dtype=jnp.float32)
    seen_by = ShardingProbe(problem) if probe else problem
    trainer = Trainer.from_params(cfg, seen_by, model, dtype=jnp.float32, mesh=mesh)
    _, params, _ = split(model)
    return trainer, trainer.init(params, seed=cfg.seed), seen_by


def _flat(tree) -> dict:
    import numpy as np

    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _collectives(hlo: str) -> dict:
    return {
        op: len(re.findall(rf"\b{op}(?:-start)?\(", hlo))
        for op in ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
    }


def equivalence(out: Path) -> None:
    import numpy as np

    from pinn.config import ConfigError

    assert jax.device_count() == 4, f"expected 4 simulated devices, got {jax.devices()}"
    mesh = distributed.make_mesh()
    # a batch that does not split over 4 devices is refused, naming the key
    try:
        _trainer(_params({"method": "uniform", "batch_size": 130}), mesh, probe=False)
        batch_error = None
    except ConfigError as e:
        batch_error = str(e)
    (out / "errors.json").write_text(json.dumps({"batch_size_130": batch_error}))
    for name, cfg in CASES.items():
        sharded, state, probe = _trainer(cfg, mesh, probe=True)
        arrays = {f"init{k}": v for k, v in _flat(state.params).items()}
        # compiled once; called directly (Trainer.run = replicate the state + this executable)
        compiled = sharded._run.lower(state, NUM_STEPS).compile()
        hlo = compiled.as_text()
        state, metrics = compiled(distributed.replicate(state, mesh))
        single, state1, _ = _trainer(cfg, None, probe=False)
        state1, metrics1 = single.run(state1, NUM_STEPS)
        arrays.update({f"sharded{k}": v for k, v in _flat(state.params).items()})
        arrays.update({f"single{k}": v for k, v in _flat(state1.params).items()})
        np.savez(out / f"{name}.npz", **arrays)
        info = {
            "device_count": jax.device_count(),
            "residual_inputs": probe.seen,
            "collectives": _collectives(hlo),
            "params_sharding": [
                {"num_devices": len(x.sharding.device_set), "replicated": x.sharding.is_fully_replicated}
                for x in jax.tree_util.tree_leaves(state.params)
            ],
            "loss": [float(metrics["loss"]), float(metrics1["loss"])],
            "nonfinite": [int(state.nonfinite), int(state1.nonfinite)],
            "steps": [int(state.step), int(state1.step)],
        }
        (out / f"{name}.json").write_text(json.dumps(info, indent=1))


def multiprocess(out: Path) -> None:
    import numpy as np

    assert distributed.initialize(), "expected a multi-process setup from PINN_* env vars"
    index = jax.process_index()
    mesh = distributed.make_mesh()  # global: every process's devices
    cfg = CASES["hard_bank"]
    sharded, state, probe = _trainer(cfg, mesh, probe=True)
    state, metrics = sharded.run(state, 5)
    state, metrics = sharded.run(state, 5)  # a second call: state goes back in as it came out
    np.savez(out / f"process{index}.npz", **_flat(state.params))
    if index == 0:  # the same training on this process's first device alone, for comparison
        single, state1, _ = _trainer(cfg, None, probe=False)
        state1, _ = single.run(state1, 10)
        np.savez(out / "single_device.npz", **_flat(state1.params))
    info = {
        "process_index": index,
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "mesh_process_indices": sorted({d.process_index for d in mesh.devices.flat}),
        "residual_inputs": probe.seen,
        "steps": int(state.step),
        "nonfinite": int(state.nonfinite),
        "loss": float(metrics["loss"]),
    }
    (out / f"process{index}.json").write_text(json.dumps(info, indent=1))
    jax.distributed.shutdown()


if __name__ == "__main__":
    mode, out_dir = sys.argv[1], Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    {"equivalence": equivalence, "multiprocess": multiprocess}[mode](out_dir)
