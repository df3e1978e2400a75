"""Per-step cost of the adaptive samplers relative to uniform sampling, in a realistic train step.

The step: a tanh MLP `u(t, x)` (x periodic on [-1, 1) through a cos/sin embedding) trained with
Adam (optax) on the 1-D Allen–Cahn residual `u_t - 1e-4 u_xx + 5u³ - 5u` (derivatives by nested
`jax.jvp`) at a batch of collocation points from the sampler, plus an initial-condition term on
256 fixed points. Training runs in jitted `lax.scan` chunks of `--chunk` steps (a multiple of
every refresh period, so each chunk holds the same number of refreshes), the carry (params, Adam
and sampler state, step counter) continuing from chunk to chunk. Each sampler's chunk is compiled
ahead of time and run once to warm up; then `--rounds` rounds each run one chunk per sampler
(order rotated every round), so load drift on a shared machine hits all samplers alike. Reported:
median ms/step, and the median over rounds of the *paired* ratio (sampler chunk / uniform chunk
of the same round) — `--rounds * --chunk` timed steps per sampler (default 3000). As a
load-insensitive cross-check each sampler's `update` is also timed alone at a refresh and at a
plain step, and the overhead predicted as
`((refresh - plain) / every + plain - plain_uniform) / train_step`.
Sampler settings are the `pinn.config` defaults at batch `--batch` (seed 001: 4096).

    .venv/bin/python benchmarks/sampling_overhead.py [--rounds 15] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pinn import sampling
from pinn.config import HardBankConfig, RADConfig, RARDConfig

DOMAIN = SimpleNamespace(lower=(0.0, -1.0), upper=(1.0, 1.0), periodic=(False, True))
DIFFUSION, REACTION = 1e-4, 5.0


def init_mlp(key: jax.Array, depth: int, width: int) -> list[tuple[jax.Array, jax.Array]]:
    sizes = [3] + [width] * depth + [1]  # input: t, cos(πx), sin(πx)
    keys = jax.random.split(key, len(sizes) - 1)
    init = jax.nn.initializers.glorot_normal()
    return [(init(k, (a, b)), jnp.zeros(b)) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def mlp(params, z: jax.Array) -> jax.Array:
    t, x = z[:, 0], z[:, 1]
    h = jnp.stack([2.0 * t - 1.0, jnp.cos(jnp.pi * x), jnp.sin(jnp.pi * x)], axis=-1)
    for w, b in params[:-1]:
        h = jnp.tanh(h @ w + b)
    w, b = params[-1]
    return (h @ w + b)[:, 0]


def residual(params, z: jax.Array) -> jax.Array:
    """Allen–Cahn 1-D `u_t - D u_xx + R (u³ - u)`; per-point derivatives by nested `jax.jvp`."""
    u_fn = lambda zz: mlp(params, zz)  # noqa: E731
    e_t = jnp.zeros_like(z).at[:, 0].set(1.0)
    e_x = jnp.zeros_like(z).at[:, 1].set(1.0)
    u, u_t = jax.jvp(u_fn, (z,), (e_t,))
    u_x_fn = lambda zz: jax.jvp(u_fn, (zz,), (e_x,))[1]  # noqa: E731
    _, u_xx = jax.jvp(u_x_fn, (z,), (e_x,))
    return u_t - DIFFUSION * u_xx + REACTION * (u**3 - u)


def make_chunk(sampler: sampling.Sampler, steps: int, ic_points: jax.Array, ic_values: jax.Array):
    optimizer = optax.adam(1e-3)

    def loss_fn(params, points, weights):
        r = residual(params, points)
        pde = jnp.sum(weights * r**2) / jnp.sum(weights)
        ic = jnp.mean((mlp(params, ic_points) - ic_values) ** 2)
        return pde + 10.0 * ic

    def train_step(carry, _):
        params, opt_state, sampler_state, step, key = carry
        residual_fn = lambda z: residual(params, z)  # noqa: E731
        step_key = jax.random.fold_in(key, step)
        sampler_state = sampler.update(sampler_state, step_key, step, residual_fn)
        points, weights = sampler.batch(sampler_state)
        loss, grads = jax.value_and_grad(loss_fn)(params, points, weights)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, sampler_state, step + 1, key), loss

    @jax.jit
    def chunk(carry):
        return jax.lax.scan(train_step, carry, None, length=steps)

    def initial_carry(params):
        return (params, optimizer.init(params), sampler.init(jax.random.key(1)), jnp.int32(0),
                jax.random.key(2))

    return chunk, initial_carry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk", type=int, default=200, help="steps per timed lax.scan")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    batch = args.batch
    samplers = {
        "uniform": sampling.uniform(DOMAIN, batch),
        "hard_bank": sampling.hard_bank(DOMAIN, batch, **HardBankConfig().model_dump()),
        "rad": sampling.rad(DOMAIN, batch, **RADConfig().model_dump()),
        # RAR-D's batch is its whole buffer (capacity 4096 by default), starting from batch/2 points
        "rar_d": sampling.rar_d(
            DOMAIN,
            sampling.collocation_points("sobol", min(batch // 2, RARDConfig().capacity),
                                        DOMAIN.lower, DOMAIN.upper, seed=0),
            **RARDConfig().model_dump(),
        ),
    }
    ic_x = jnp.linspace(-1.0, 1.0, 256, endpoint=False)
    ic_points = jnp.stack([jnp.zeros_like(ic_x), ic_x], axis=-1)
    ic_values = ic_x**2 * jnp.cos(jnp.pi * ic_x)
    params = init_mlp(jax.random.key(0), args.depth, args.width)

    runs = {}
    for name, s in samplers.items():
        chunk, initial_carry = make_chunk(s, args.chunk, ic_points, ic_values)
        carry = initial_carry(params)
        t0 = time.perf_counter()
        compiled = chunk.lower(carry).compile()
        compile_s = time.perf_counter() - t0
        carry, _ = jax.block_until_ready(compiled(carry))  # warm-up chunk, not timed
        runs[name] = {"compiled": compiled, "carry": carry, "compile_s": compile_s}

    names = list(samplers)
    wall = {name: [] for name in names}
    final_loss = {}
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            run = runs[name]
            t0 = time.perf_counter()
            run["carry"], losses = jax.block_until_ready(run["compiled"](run["carry"]))
            wall[name].append(time.perf_counter() - t0)
            final_loss[name] = float(losses[-1])
    paired = {n: [t / u for t, u in zip(v, wall["uniform"])] for n, v in wall.items()}

    # the sampler's own work, isolated: `update` at a refresh step and at a plain step (min of 20)
    def best_ms(fn, *fn_args, n=20):
        jax.block_until_ready(fn(*fn_args))
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*fn_args))
            times.append(time.perf_counter() - t0)
        return 1e3 * min(times)

    update_ms = {}
    for name, s in samplers.items():
        update = jax.jit(lambda st, step, p, s=s: s.update(
            st, jax.random.key(3), step, lambda z: residual(p, z)))
        state0 = s.init(jax.random.key(1))
        update_ms[name] = {"refresh": best_ms(update, state0, jnp.int32(0), params),
                           "plain": best_ms(update, state0, jnp.int32(1), params)}
    every = {"uniform": 1, "hard_bank": HardBankConfig().refresh_every,
             "rad": RADConfig().resample_every, "rar_d": RARDConfig().every}
    train_step_ms = 1e3 * statistics.median(wall["uniform"]) / args.chunk
    predicted = {
        n: 100.0 * ((u["refresh"] - u["plain"]) / every[n] + u["plain"]
                    - update_ms["uniform"]["plain"]) / train_step_ms
        for n, u in update_ms.items()
        if n != "uniform"
    }

    result = {
        "device": jax.devices()[0].device_kind,
        "platform": platform.platform(),
        "jax": jax.__version__,
        "chunk_steps": args.chunk, "rounds": args.rounds, "batch": batch,
        "mlp": f"{args.depth}x{args.width} tanh", "pde": "allen_cahn_1d (nested jvp)",
        "settings": {
            "hard_bank": HardBankConfig().model_dump(),
            "rad": RADConfig().model_dump(),
            "rar_d": RARDConfig().model_dump(),
        },
        "ms_per_step_median": {
            n: 1e3 * statistics.median(v) / args.chunk for n, v in wall.items()
        },
        "ratio_vs_uniform_paired_median": {n: statistics.median(v) for n, v in paired.items()},
        "ratio_vs_uniform_paired_quartiles": {
            n: statistics.quantiles(v, n=4)[::2] for n, v in paired.items() if n != "uniform"
        },
        "update_ms": update_ms,
        "predicted_overhead_pct": predicted,
        "compile_s": {n: r["compile_s"] for n, r in runs.items()},
        "final_loss_sanity_only": final_loss,
        "wall_s_per_chunk": wall,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
