"""Time PDE-residual evaluation with three derivative routes (CPU by default).

Routes: (a) nested `jax.jvp` (`pinn.derivatives`, method="jvp"), (b) Taylor mode
`jax.experimental.jet` (method="jet"), (c) naive per-point `vmap(jax.hessian)` + `vmap(jax.grad)`.
Residuals of `allen_cahn_1d` and `allen_cahn_2d` on tanh MLPs (float32), jitted; the median of
several timed runs after warm-up
(routes interleaved round-robin; the median and the minimum are reported).

    .venv/bin/python benchmarks/derivatives.py [--out benchmarks/results/derivatives_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp

from pinn.derivatives import Derivs
from pinn.models import apply_fn, make_model, split
from pinn.problems import make_problem

CASES = [(4, 256, 4096), (3, 32, 8192)]  # (depth, width, points)
PROBLEMS = ["allen_cahn_1d", "allen_cahn_2d"]
ROUTES = ["jvp", "jet", "naive"]


def naive_derivs(u, z, first, second) -> Derivs:
    """Per-point scalar function; full gradient and full Hessian per point (the slow baseline)."""

    def f(p):
        return u(p[None, :])[0]

    grad = jax.vmap(jax.grad(f))(z)
    hess = jax.vmap(jax.hessian(f))(z)
    return Derivs(
        u(z),
        {i: grad[:, i] for i in (*first, *second)},
        {i: hess[:, i, i] for i in second},
    )


def residual_fn(problem, u_of_params, route):
    def r(params, z):
        u = lambda w: u_of_params(params, w)  # noqa: E731
        if route == "naive":
            d = naive_derivs(u, z, problem.first, problem.second)
            return problem.residual_from_derivs(d, z)
        return problem.residual(u, z, method=route)

    return jax.jit(r)


def time_call(fn, *args, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/derivatives_cpu.json")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()

    load_before = os.getloadavg()
    rows = []
    for depth, width, n in CASES:
        cfg = SimpleNamespace(
            width=width, depth=depth, activation="tanh", fourier_features=0, fourier_scale=1.0,
            rwf=False, rwf_mean=0.5, rwf_std=0.1, periodic_embedding=True,
        )
        for name in PROBLEMS:
            problem = make_problem(name)
            graphdef, params, rest = split(make_model(cfg, problem, seed=0))
            u = apply_fn(graphdef, rest)
            key = jax.random.key(1)
            lo, hi = problem.domain.lower, problem.domain.upper
            z = lo + (hi - lo) * jax.random.uniform(key, (n, problem.dim), jnp.float32)
            fns, rel = {}, {}
            for route in ROUTES:
                fn = residual_fn(problem, u, route)
                t0 = time.perf_counter()
                out = jax.block_until_ready(fn(params, z))
                compile_s = time.perf_counter() - t0
                ref = out if route == ROUTES[0] else ref
                rel[route] = float(jnp.max(jnp.abs(out - ref)) / jnp.max(jnp.abs(ref)))
                fns[route] = (fn, compile_s)
                for _ in range(args.warmup):
                    jax.block_until_ready(fn(params, z))
            # interleave the routes round-robin so load drift on a shared machine hits all alike
            times: dict[str, list[float]] = {route: [] for route in ROUTES}
            for _ in range(args.repeats):
                for route in ROUTES:
                    t0 = time.perf_counter()
                    jax.block_until_ready(fns[route][0](params, z))
                    times[route].append(time.perf_counter() - t0)
            for route in ROUTES:
                med, best = statistics.median(times[route]), min(times[route])
                rows.append(dict(problem=name, depth=depth, width=width, points=n, route=route,
                                 median_ms=1e3 * med, min_ms=1e3 * best,
                                 first_call_s=fns[route][1],
                                 max_rel_diff_vs_jvp=rel[route]))
                print(f"{name:14s} {depth}x{width:<4d} N={n:<5d} {route:6s} "
                      f"median {1e3 * med:8.2f} ms  min {1e3 * best:8.2f} ms  "
                      f"(first call {fns[route][1]:5.2f} s, rel diff vs jvp {rel[route]:.1e})",
                      flush=True)

    print("\nmedian ms (min ms)")
    print("| problem | net | N | jvp | jet | naive |\n|---|---|---|---|---|---|")
    for depth, width, n in CASES:
        for name in PROBLEMS:
            cells = [f"{r['median_ms']:.2f} ({r['min_ms']:.2f})" for r in rows
                     if (r["problem"], r["depth"], r["width"]) == (name, depth, width)]
            print(f"| {name} | {depth}x{width} | {n} | " + " | ".join(cells) + " |")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(jax=jax.__version__, backend=jax.default_backend(),
                device=str(jax.devices()[0]), machine=platform.machine(),
                dtype="float32", repeats=args.repeats, warmup=args.warmup,
                cpu_count=os.cpu_count(), loadavg_1min_before=load_before[0],
                loadavg_1min_after=os.getloadavg()[0])
    out.write_text(json.dumps(dict(meta=meta, results=rows), indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
