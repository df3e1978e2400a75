"""The benchmark suite of record for speed: our step against plain JAX, sampler overhead.

Writes (merging) `benchmarks/results/<hardware>.json` keys:
- `step_ratio_vs_plain_jax`: steps/s of this project's training step on a jaxpi-sized config (4x256
  tanh MLP, Fourier features, periodic embedding, batch 4096, Allen–Cahn 1D, float32) divided by a
  minimal hand-written jitted JAX step of the same math (same network, residual, Adam). Target >= 1.
- `hard_bank_overhead`: wall time per step with the hard-bank sampler over uniform at seed 001's
  batch (4096) and refresh cadence. Target <= 1.10 (seed 001 paid 1.74).

Accuracy and time to accuracy (the committed params files through the pipeline, over seeds) are
`benchmarks/accuracy.py`.

    python benchmarks/suite.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.common import merge_results  # noqa: E402
from pinn.config import validate_params  # noqa: E402



def _median_time(fn, state, repeats: int) -> tuple[float, object]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = fn(state)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), state


def step_ratio(steps_per_call: int = 5, repeats: int = 5) -> dict:
    """This project's Trainer step vs a minimal hand-written step of the same math."""
    from pinn.cascade import make_trainer, state_template
    from pinn.problems import make_problem

    cfg = validate_params({
        "problem": {"name": "allen_cahn_1d"},
        "model": {"width": 256, "depth": 4, "fourier_features": 128, "fourier_scale": 1.0},
        "sampling": {"batch_size": 4096, "ic_batch_size": 256},
        "balancing": {"weights": {"pde": 1.0, "ic": 10.0}},
        "multilevel": {"num_levels": 1, "levels": {"level0": {"steps": 10, "init_from": "init"}}},
    })
    problem = make_problem("allen_cahn_1d")
    trainer, model = make_trainer(cfg, problem, "level0")
    state = state_template(trainer, model, cfg, "level0")
    ours = lambda s: trainer.run(s, steps_per_call)[0]  # noqa: E731
    ours(state)  # compile
    t_ours, _ = _median_time(ours, state, repeats)

    # --- the same math written by hand -------------------------------------------------------
    params0 = jax.tree_util.tree_map(lambda x: x, state.params)
    b_fourier = model.fourier[...]
    flat = [(layer.kernel[...], layer.bias[...]) for layer in model.hidden] + [
        (model.output.kernel[...], model.output.bias[...])]

    def net(ws, z):  # z: (N, 2) = (t, x); x periodic with period 2
        t, x = z[:, 0], z[:, 1]
        e = jnp.stack([2.0 * t - 1.0, jnp.cos(jnp.pi * x), jnp.sin(jnp.pi * x)], axis=-1)
        p = e @ b_fourier
        h = jnp.concatenate([jnp.cos(p), jnp.sin(p)], axis=-1)
        for w, b in ws[:-1]:
            h = jnp.tanh(h @ w + b)
        w, b = ws[-1]
        return (h @ w + b)[:, 0]

    def loss(ws, z, x0):
        ex = jnp.zeros_like(z).at[:, 1].set(1.0)
        et = jnp.zeros_like(z).at[:, 0].set(1.0)
        f = lambda zz: net(ws, zz)  # noqa: E731
        ux_fn = lambda zz: jax.jvp(f, (zz,), (ex,))[1]  # noqa: E731
        u, u_t = jax.jvp(f, (z,), (et,))
        _, u_xx = jax.jvp(ux_fn, (z,), (ex,))
        r = u_t - 1e-4 * u_xx + 5.0 * u**3 - 5.0 * u
        z0 = jnp.stack([jnp.zeros_like(x0), x0], axis=-1)
        ic = net(ws, z0) - x0**2 * jnp.cos(jnp.pi * x0)
        return jnp.mean(r**2) + 10.0 * jnp.mean(ic**2)

    opt = optax.adam(optax.exponential_decay(1e-3, 1000, 0.9))

    def plain_run(carry):
        def body(c, _):
            ws, o, key = c
            key, k1, k2 = jax.random.split(key, 3)
            z = jax.random.uniform(k1, (4096, 2)) * jnp.array([1.0, 2.0]) + jnp.array([0.0, -1.0])
            x0 = jax.random.uniform(k2, (256,)) * 2.0 - 1.0
            g = jax.grad(loss)(ws, z, x0)
            upd, o = opt.update(g, o)
            return (optax.apply_updates(ws, upd), o, key), None

        return jax.lax.scan(body, carry, None, length=steps_per_call)[0]

    plain = jax.jit(plain_run)
    carry = (flat, opt.init(flat), jax.random.PRNGKey(0))
    plain(carry)
    t_plain, _ = _median_time(plain, carry, repeats)
    del params0
    ours_sps, plain_sps = steps_per_call / t_ours, steps_per_call / t_plain
    return {"value": ours_sps / plain_sps, "ours_steps_per_s": ours_sps, "plain_jax_steps_per_s": plain_sps,
            "config": "allen_cahn_1d, 4x256 tanh, 128 Fourier features, periodic embedding, batch 4096, float32",
            "target": ">= 1.0"}


def hard_bank_overhead(steps: int = 300, repeats: int = 5, width: int = 64) -> dict:
    """Wall time per step, hard bank / uniform, batch 4096, refresh every 100 steps (seed 001).

    The two samplers are timed alternately (round robin), so machine load affects both alike; the
    value is the median of the per-round ratios.
    """
    from pinn.cascade import make_trainer, state_template
    from pinn.problems import make_problem

    runners = {}
    for method in ("uniform", "hard_bank"):
        cfg = validate_params({
            "problem": {"name": "allen_cahn_1d"},
            "model": {"width": width, "depth": 4},
            "sampling": {"method": method, "batch_size": 4096,
                         "hard_bank": {"pool_size": 8192, "bank_size": 1024, "top_k": 256,
                                       "refresh_every": 100, "p_ramp_steps": 0, "p_max": 0.2}},
            "multilevel": {"num_levels": 1, "levels": {"level0": {"steps": 10, "init_from": "init"}}},
        })
        trainer, model = make_trainer(cfg, make_problem("allen_cahn_1d"), "level0")
        state = state_template(trainer, model, cfg, "level0")
        fn = (lambda tr: (lambda s: tr.run(s, steps)[0]))(trainer)
        jax.block_until_ready(fn(state))  # compile
        runners[method] = (fn, state)
    times: dict[str, list[float]] = {"uniform": [], "hard_bank": []}
    for _ in range(repeats):
        for method, (fn, state) in runners.items():
            t, _ = _median_time(fn, state, 1)
            times[method].append(t)
    ratios = [h / u for h, u in zip(times["hard_bank"], times["uniform"])]
    return {"value": float(np.median(ratios)),
            "uniform_ms_per_step": 1e3 * float(np.median(times["uniform"])) / steps,
            "hard_bank_ms_per_step": 1e3 * float(np.median(times["hard_bank"])) / steps,
            "ratios": ratios,
            "config": f"allen_cahn_1d, 4x{width} tanh, batch 4096, pool 8192, refresh every 100, p 0.2, "
                      f"{steps} steps per timing (3 refreshes), {repeats} alternating rounds",
            "target": "<= 1.10"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args(argv)
    r = step_ratio()
    print("step_ratio_vs_plain_jax", r, flush=True)
    merge_results("step_ratio_vs_plain_jax", r)
    h = hard_bank_overhead()
    print("hard_bank_overhead", h, flush=True)
    merge_results("hard_bank_overhead", h)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
