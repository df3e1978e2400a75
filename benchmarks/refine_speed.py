"""Speed and memory of the dense quasi-Newton refinement block against a minimal dense BFGS loop.

For each model size (Burgers 1D, `pinn.problems`, a 3×width tanh MLP, n ≈ 1k, 2k and 5k parameters,
float64, the refinement's loss `pinn.train.loss_terms` on 2048 collocation points) it times

- **ours**: `pinn.optim.qn_block` with `refine.method = bfgs`, jitted as `quasi_newton_runner` does —
  the code the refine stage runs (guards, status record, restarts, H updated in the scan carry), `K`
  iterations per block;
- **minimal**: a jitted `lax.scan` of `K` textbook dense BFGS iterations written here (d = −H g,
  the same optax zoom line search with the same budget, H₊ = H − ρ (Hy sᵀ + s (Hy)ᵀ) + (ρ² yᵀHy + ρ) s sᵀ,
  Nocedal & Wright eq. 6.17 expanded, skipped when yᵀs ≤ 0) on the raveled parameters;
- **ours, ssbroyden** (the default method) for information.

Both BFGS loops start from the same point, take the same first step and run the same algorithm, so
they do the same work (their loss and line-search steps are recorded). Rounds alternate the order
(ABBA), each from the same warmed-up state, and the ratio minimal_time / ours_time is taken per round
and reported as the median (target ≥ 0.95), from wall time and from process CPU time (the latter is
far less disturbed when other jobs share the cores), with the ratio of the fastest rounds (wall). Peak memory is XLA's compiled memory analysis of each
program (arguments + outputs + temporaries − aliased), for ours also with the optimizer state
donated, and for `reset_cache` (the Cholesky test between blocks); plus the process's peak RSS.

    .venv/bin/python benchmarks/refine_speed.py [--widths 21 30 49] [--rounds 9] [--iterations 15]

Writes `benchmarks/results/refine_speed_<platform>.json` (hardware, versions, date).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

jax.config.update("jax_enable_x64", True)

from benchmarks.common import RESULTS, hardware_info, versions  # noqa: E402
from pinn.config import RefineConfig, validate_params  # noqa: E402
from pinn.io import write_json  # noqa: E402
from pinn.models import apply_fn, count_params, make_model, split  # noqa: E402
from pinn.optim import qn_block, qn_reset_cache, refine_optimizer  # noqa: E402
from pinn.problems import make_problem  # noqa: E402
from pinn.from_params import loss_from_params  # noqa: E402
from pinn.loss import loss_terms  # noqa: E402

NUM_POINTS = 2048
NUM_IC = NUM_BC = 256


def burgers_loss(width: int, seed: int = 0):
    """(loss_fn(params, points, ic_x, bc_z), params, loss_args): the refine stage's loss (weights 1)."""
    cfg = validate_params({"problem": {"name": "burgers_1d"}, "model": {"width": width, "depth": 3}})
    problem = make_problem("burgers_1d")
    graphdef, params, rest = split(make_model(cfg.model, problem, seed=seed, dtype=jnp.float64))
    u = apply_fn(graphdef, rest)
    spec = loss_from_params(cfg, problem)
    lo, hi = np.asarray(problem.lower), np.asarray(problem.upper)
    rng = np.random.default_rng(seed)
    points = jnp.asarray(lo + (hi - lo) * rng.uniform(size=(NUM_POINTS, 2)))
    ic_x = jnp.asarray(rng.uniform(lo[1], hi[1], size=(NUM_IC, 1)))
    bc_z = jnp.asarray(lo + (hi - lo) * rng.uniform(size=(NUM_BC, 2)))
    ones = jnp.ones((NUM_POINTS,))

    def loss_fn(p, pts, icx, bcz):
        return jnp.sum(loss_terms(problem, spec, u, p, pts, ones, icx, bcz)[0])

    return loss_fn, params, (points, ic_x, bc_z)


def minimal_bfgs(loss_fn, params, loss_args, cfg: RefineConfig, num_iterations: int):
    """(init(params) -> carry, jitted run(carry) -> (carry, (loss, linesearch steps)))."""
    x0, unravel = ravel_pytree(params)
    f = lambda x: loss_fn(unravel(x), *loss_args)  # noqa: E731
    ls = optax.scale_by_zoom_linesearch(max_linesearch_steps=cfg.max_linesearch_steps, slope_rtol=1e-4,
                                        curv_rtol=0.9, initial_guess_strategy="one")

    def init(x):
        value, grad = jax.value_and_grad(f)(x)
        ls_state = optax.tree.set(ls.init(x), value=value, grad=grad)
        return x, value, grad, jnp.eye(x.shape[0], dtype=x.dtype), ls_state, jnp.asarray(True)

    def iteration(carry, _):
        x, value, grad, H, ls_state, first = carry
        d = -jnp.where(first, jnp.minimum(1.0, 1.0 / jnp.linalg.norm(grad)), 1.0) * (H @ grad)
        step, ls_state = ls.update(d, ls_state, x, value=value, grad=grad, value_fn=f)
        x_new = x + step
        value_new, grad_new = ls_state.value, ls_state.grad
        s, y = step, grad_new - grad
        ys = jnp.dot(y, s)
        rho = jnp.where(ys > 0, 1.0 / jnp.where(ys > 0, ys, 1.0), 0.0)
        hy = H @ y
        H = H - rho * (jnp.outer(hy, s) + jnp.outer(s, hy)) + (rho**2 * jnp.dot(y, hy) + rho) * jnp.outer(s, s)
        out = (value_new, ls_state.info.num_linesearch_steps)
        return (x_new, value_new, grad_new, H, ls_state, jnp.asarray(False)), out

    run = jax.jit(lambda carry: jax.lax.scan(iteration, carry, None, length=num_iterations))
    return jax.jit(init)(x0), run


def peak_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def _timed(fn) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of `fn()`."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - t0, time.process_time() - c0, out


def measure(width: int, iterations: int, rounds: int) -> dict:
    loss_fn, params, loss_args = burgers_loss(width)
    n = count_params(params)
    cfg = RefineConfig(method="bfgs")
    print(f"width {width}: n = {n}, H = {8 * n * n / 1e6:.0f} MB", flush=True)
    k = jnp.int32(iterations)

    # ours: `qn_block` jitted as `quasi_newton_runner` jits it (compiled once here, for the memory
    # analysis and the timing); a first block from the start, then timed blocks from there
    compiled, starts = {}, {}
    for method in ("bfgs", "ssbroyden"):
        opt = refine_optimizer(method)
        block = jax.jit(functools.partial(qn_block, loss_fn=loss_fn, opt=opt, block_size=iterations))
        state = jax.tree.map(jnp.asarray, opt.init(params))
        compiled[method] = block.lower(params, state, k, *loss_args).compile()
        p, s, _ = compiled[method](params, state, k, *loss_args)
        starts[method] = (p, s)
    init, run = minimal_bfgs(loss_fn, params, loss_args, cfg, iterations)
    compiled["minimal"] = run.lower(init).compile()
    start_min, _ = compiled["minimal"](init)

    contenders = {"ours": lambda: compiled["bfgs"](*starts["bfgs"], k, *loss_args),
                  "minimal": lambda: compiled["minimal"](start_min),
                  "ours_ssbroyden": lambda: compiled["ssbroyden"](*starts["ssbroyden"], k, *loss_args)}
    for fn in contenders.values():  # one untimed call each (first-call effects)
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    outs = {}
    for r in range(rounds):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            t, c, outs[name] = _timed(contenders[name])
            times[name].append(t / iterations)
            cpu[name].append(c / iterations)
    ratios = [m / o for m, o in zip(times["minimal"], times["ours"])]
    ratios_ss = [m / o for m, o in zip(times["minimal"], times["ours_ssbroyden"])]
    ratios_cpu = [m / o for m, o in zip(cpu["minimal"], cpu["ours"])]

    # memory: XLA's analysis of the compiled programs (+ ours with the state donated, + reset_cache)
    opt = refine_optimizer(cfg.method, max_linesearch_steps=cfg.max_linesearch_steps)
    state = jax.tree.map(jnp.asarray, opt.init(params))
    block = functools.partial(qn_block, loss_fn=loss_fn, opt=opt, block_size=iterations)
    mem = {
        "ours": peak_bytes(compiled["bfgs"]),
        "ours_donated_state": peak_bytes(jax.jit(block, donate_argnums=(1,)).lower(params, state, k, *loss_args)
                                         .compile()),
        "reset_cache": peak_bytes(jax.jit(lambda st, pp, *a: qn_reset_cache(st, pp, loss_fn, *a))
                                  .lower(state, params, *loss_args).compile()),
        "minimal": peak_bytes(compiled["minimal"]),
    }
    info_ours, info_ss = outs["ours"][2], outs["ours_ssbroyden"][2]
    loss_min, ls_min = outs["minimal"][1]
    result = {
        "n": n, "width": width, "dense_h_bytes": 8 * n * n,
        "ms_per_iteration": {k: 1e3 * float(np.median(v)) for k, v in times.items()},
        "ratio_minimal_over_ours": float(np.median(ratios)),
        "ratios": [round(x, 4) for x in ratios],
        "ratio_of_fastest_rounds": float(np.min(times["minimal"]) / np.min(times["ours"])),
        "cpu_ms_per_iteration": {k: 1e3 * float(np.median(v)) for k, v in cpu.items()},
        "cpu_ratio_minimal_over_ours": float(np.median(ratios_cpu)),
        "cpu_ratios": [round(x, 4) for x in ratios_cpu],
        "ratio_minimal_over_ours_ssbroyden": float(np.median(ratios_ss)),
        "linesearch_steps_per_iteration": {
            "ours": float(np.mean(np.asarray(info_ours.linesearch_steps))),
            "minimal": float(np.mean(np.asarray(ls_min))),
            "ours_ssbroyden": float(np.mean(np.asarray(info_ss.linesearch_steps))),
        },
        "final_loss": {"ours": float(info_ours.loss[-1]), "minimal": float(loss_min[-1]),
                       "ours_ssbroyden": float(info_ss.loss[-1])},
        "accepted_steps_ours": int(np.sum(np.asarray(info_ours.status) == 0)),
        "peak_bytes": mem,
        "peak_in_h_copies": {k: round(v / (8 * n * n), 3) for k, v in mem.items()},
    }
    print(f"  ms/iteration {result['ms_per_iteration']}; ratio minimal/ours {result['ratio_minimal_over_ours']:.3f} "
          f"{result['ratios']}; fastest rounds {result['ratio_of_fastest_rounds']:.3f}; "
          f"CPU-time ratio {result['cpu_ratio_minimal_over_ours']:.3f}; "
          f"peak (H copies) {result['peak_in_h_copies']}", flush=True)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[21, 30, 49],
                    help="hidden widths of the 3-layer MLP (21, 30, 49: n = 1009, 1981, 5097)")
    ap.add_argument("--iterations", type=int, default=15, help="iterations per timed block")
    ap.add_argument("--rounds", type=int, default=9, help="alternating rounds")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    sizes = [measure(w, args.iterations, args.rounds) for w in args.widths]
    platform = jax.devices()[0].platform
    out = args.out or RESULTS / f"refine_speed_{platform}.json"
    result = {
        "what": "per-iteration time of the dense quasi-Newton refinement block (method bfgs) vs a minimal "
                "jitted dense BFGS loop; ratio = minimal_time / ours_time per alternating round, median "
                "(wall time; the same from process CPU time, less sensitive to other jobs on the machine)",
        "target": "ratio >= 0.95",
        "config": {"problem": "burgers_1d", "model": "3 x width tanh MLP, float64", "points": NUM_POINTS,
                   "ic_points": NUM_IC, "bc_points": NUM_BC, "iterations_per_block": args.iterations,
                   "rounds": args.rounds, "max_linesearch_steps": RefineConfig().max_linesearch_steps},
        "sizes": sizes,
        "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "load_average_at_end": os.getloadavg()[0],
        "wall_s": round(time.perf_counter() - t0, 1),
        "hardware": hardware_info(),
        "versions": versions(),
        "date": dt.date.today().isoformat(),
    }
    write_json(out, result)
    print(f"wrote {out} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
