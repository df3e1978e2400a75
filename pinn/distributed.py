"""Data-parallel and multi-host training on `jax.sharding`: one mesh axis, `"data"` (no pmap).

Data parallelism for a PINN: the parameters θ and all component state (optimizer, balancer,
sampler, PRNG key, step counters) are *replicated* on every device; each step's collocation batch
`z₁ … z_B` and the IC/BC batches are split along their first axis into `D` shards of `B/D` rows,
one per device. Every loss term is a sum over rows, e.g.

    L_pde(θ) = Σ_b w_b r(z_b; θ)² / Σ_b w_b = Σ_devices (partial sums over the local rows) / …,

so ∇θ L is a sum of per-shard partial gradients. We only *annotate* the batch as sharded
(`jax.lax.with_sharding_constraint` inside the jitted step) and the state as replicated; XLA's
SPMD partitioner computes the partial sums where the rows live and inserts the all-reduces (no
`pmap`, no `pmean` in our code). The adaptive samplers' candidate pools are sharded the same way
(the Trainer's `residual_fn` constrains its input), so a pool's residual evaluation is split across
devices; `top_k` / `choice` then run on the gathered magnitudes (XLA inserts the all-gather).

The same program runs on 1 CPU device, several simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=4`), one or several GPUs, or many processes
(hosts) after `initialize`: only the mesh differs, and results agree to float rounding (the order
of the partial sums changes).

Multi-host (one process per node): call `initialize(cfg)` at process start, before any JAX
computation; `make_mesh()` then spans the devices of all processes (`jax.devices()` is global).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

if TYPE_CHECKING:  # the mesh helpers serve the Trainer, which does not read the schema
    from pinn.config import DistributedConfig, Params

#: The one mesh axis: the batch (rows of the point arrays) is split along it.
DATA_AXIS = "data"

ENV_COORDINATOR_ADDRESS = "PINN_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "PINN_NUM_PROCESSES"
ENV_PROCESS_ID = "PINN_PROCESS_ID"
#: the value of `PINN_NUM_PROCESSES` / `PINN_PROCESS_ID` that defers to JAX's auto-detection
AUTO = "auto"


class ProcessSetup(NamedTuple):
    """What `initialize` passes to `jax.distributed.initialize`; `None` = let JAX detect it
    (its `JAX_COORDINATOR_ADDRESS` env var, or SLURM / Open MPI / Kubernetes / Cloud TPU)."""

    coordinator_address: Optional[str]
    num_processes: Optional[int]
    process_id: Optional[int]

    @property
    def single_process(self) -> bool:
        return self.num_processes == 1


_UNSET: Any = object()


def _env_int(env: Mapping[str, str], name: str) -> Any:
    """`env[name]` as an int; `None` for `auto` (defer to JAX); `_UNSET` when absent or empty."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return _UNSET
    raw = raw.strip()
    if raw.lower() == AUTO:
        return None
    from pinn.config import ConfigError

    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} = {raw!r}: must be an integer or {AUTO!r}") from None
    return value


def resolve_setup(
    cfg_or_env: Params | DistributedConfig | Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> ProcessSetup:
    """Resolve the process layout from a params section and the environment.

    Precedence per field: `PINN_COORDINATOR_ADDRESS` / `PINN_NUM_PROCESSES` / `PINN_PROCESS_ID`
    (set per process by the launcher) over the `distributed` params section over its defaults
    (`null`, `1`, `0`). `num_processes` or `process_id` of `null` (or the env value `auto`) defers
    that field to JAX's own detection; with `num_processes` auto, an unset `PINN_PROCESS_ID` is
    auto too. A mapping instead of params is read as the environment.
    """
    from pinn.config import ConfigError, DistributedConfig, Params

    if isinstance(cfg_or_env, Params):
        section = cfg_or_env.distributed
    elif isinstance(cfg_or_env, DistributedConfig):
        section = cfg_or_env
    else:
        section = DistributedConfig()
        if cfg_or_env is not None:
            env = cfg_or_env
    env = os.environ if env is None else env

    address = env.get(ENV_COORDINATOR_ADDRESS) or section.coordinator_address
    num = _env_int(env, ENV_NUM_PROCESSES)
    num = section.num_processes if num is _UNSET else num
    pid = _env_int(env, ENV_PROCESS_ID)
    if pid is _UNSET:  # a shared params file cannot tell processes apart once num is auto
        pid = section.process_id if num is not None else None
    if num is not None and num < 1:
        raise ConfigError(f"{ENV_NUM_PROCESSES} = {num}: must be >= 1")
    if pid is not None and pid < 0:
        raise ConfigError(f"{ENV_PROCESS_ID} = {pid}: must be >= 0")
    if num is not None and pid is not None and pid >= num:
        raise ConfigError(
            f"process_id = {pid}: must be < num_processes ({num}) "
            f"(from {ENV_PROCESS_ID} / {ENV_NUM_PROCESSES} or distributed.* in params)"
        )
    if address is not None and (":" not in address or not address.rsplit(":", 1)[1].isdigit()):
        raise ConfigError(
            f"coordinator_address = {address!r}: must be 'host:port' (process 0's address)"
        )
    return ProcessSetup(address, num, pid)


def initialize(
    cfg_or_env: Params | DistributedConfig | Mapping[str, str] | None = None,
    *,
    initialization_timeout: int = 300,
) -> bool:
    """Join the multi-process JAX runtime (`jax.distributed.initialize`) if asked to.

    A no-op (returns False) for a single process (`num_processes == 1`, the default) or when the
    runtime is already initialized. Must run before any JAX computation in the process. After it,
    `jax.devices()` lists the devices of all processes and `make_mesh()` spans them.
    Returns True when this call initialized a multi-process runtime.
    """
    setup = resolve_setup(cfg_or_env)
    if setup.single_process or jax.distributed.is_initialized():
        return False
    jax.distributed.initialize(
        coordinator_address=setup.coordinator_address,
        num_processes=setup.num_processes,
        process_id=setup.process_id,
        initialization_timeout=initialization_timeout,
    )
    return True


# ----------------------------------------------------------------------------------------------
# mesh and shardings


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh with axis `"data"` over `devices` (default: all global devices, every process)."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0:
        raise ValueError("make_mesh: no devices")
    return Mesh(np.asarray(devices, dtype=object), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows of an `(N, d)` (or `(N,)`) point array split along `"data"`: `P("data")`."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device: `P()` (parameters, optimizer/balancer/sampler state)."""
    return NamedSharding(mesh, PartitionSpec())


def num_shards(mesh: Mesh) -> int:
    return int(mesh.shape[DATA_AXIS])


def shard_batch(x: jax.Array, mesh: Mesh) -> jax.Array:
    """Inside jit: constrain the rows of `x` to be split along `"data"` (XLA pads uneven rows)."""
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def constrain_replicated(tree: Any, mesh: Mesh) -> Any:
    """Inside jit: constrain every leaf of `tree` to be replicated over the mesh."""
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of `tree` replicated on the mesh, as global arrays (outside jit).

    Leaves already replicated on `mesh` are returned as they are. Otherwise each process builds
    its local copies from its own value of the leaf (`jax.make_array_from_callback`), so this also
    works when the mesh spans several processes; the value must then be the same in every process
    (it is, for state built from the same params file and seeds).
    """
    sharding = replicated(mesh)

    def place(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)  # a global array with another layout: reshard
        value = np.asarray(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree_util.tree_map(place, tree)


def batch_rows_key(cfg: Params, rows: int) -> str:
    """The params key that sets the number of rows of the collocation batch."""
    sampling = cfg.sampling
    if sampling.method == "rar_d":
        return "sampling.rar_d.capacity"
    if sampling.method == "uniform" and not sampling.uniform.resample and rows < sampling.batch_size:
        return "collocation.num_points"  # the fixed set is smaller than the batch: B = its size
    return "sampling.batch_size"


def check_batch_sizes(cfg: Params, batch_rows: int, mesh: Mesh) -> None:
    """Every batch (collocation, IC, BC) must split evenly over the `"data"` devices.

    Raises `ConfigError` naming the params key (e.g. `sampling.batch_size`) otherwise.
    """
    from pinn.config import ConfigError

    devices = num_shards(mesh)
    sizes = [
        (batch_rows_key(cfg, batch_rows), batch_rows),
        ("sampling.ic_batch_size", cfg.sampling.ic_batch_size),
        ("sampling.bc_batch_size", cfg.sampling.bc_batch_size),
    ]
    bad = [
        f"{key} = {rows}: must be divisible by the number of devices ({devices}) for "
        f"data-parallel training (e.g. {max(devices, rows // devices * devices)})"
        for key, rows in sizes
        if rows % devices
    ]
    if bad:
        raise ConfigError("\n".join(bad))


__all__ = [
    "DATA_AXIS",
    "ProcessSetup",
    "resolve_setup",
    "initialize",
    "make_mesh",
    "batch_sharding",
    "replicated",
    "num_shards",
    "shard_batch",
    "constrain_replicated",
    "replicate",
    "batch_rows_key",
    "check_batch_sizes",
]
