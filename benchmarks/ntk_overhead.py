"""Cost of the NTK diagnostics (`train.ntk_every`) in the product's own Adam step.

Everything runs through `pinn.cascade.make_trainer` → `Trainer.run`, the jitted `lax.scan` of the
training step that the `train` stage calls once per log interval, built from a params file (default
`params.yaml`, its finest level) with only `train.ntk_every` changed. Contenders: `ntk_every = 0`
(off, the default) and `ntk_every = N` for the intervals a user would pick (default 100 — the
config's default `train.log_every`, i.e. one value per logged row — and 10).

1. **Per-step average**: each contender trains on from its own state in chunks of `--chunk` steps
   (a multiple of every N, so each chunk holds exactly chunk/N NTK steps: the NTK steps are included
   in proportion). Rounds alternate the order (A B C, C B A, ...); per round the ratio
   `time(N) / time(off)` is taken, from wall time and from process CPU time, and reported as median
   with quartiles and range.
2. **Taken vs not taken**: one step (`Trainer.run(state, 1)`, the same jitted function with length 1)
   from a state whose step counter is a multiple of N (the `lax.cond` branch is taken) or not (not
   taken), against the same step with NTK off; alternating rounds, ratios per round. "No cost on
   other steps" means not-taken / off ≈ 1.
3. **No recompilation**: XLA backend compilations are counted (a `jax.monitoring` listener on
   `/jax/core/compile/backend_compile_duration`) together with the trainer's own trace counter and
   the jitted function's cache size, after the warm-up and across all timed calls (the step counter
   and the carried NTK value change every call): all must stay put. The optimised XLA program
   keeps one more `conditional` than the NTK-off program (XLA did not flatten the branch into a
   select that would evaluate it every step).

    .venv/bin/python -m benchmarks.ntk_overhead [--params params.yaml] [--level LEVEL]
        [--intervals 100 10] [--chunk 200] [--rounds 30] [--single-rounds 20] [--single-reps 20]

Writes `benchmarks/results/ntk_overhead.json` (hardware, versions, date, git commit, load).
2.5–4 minutes on 2 CPU cores at load average 3–7.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.common import RESULTS, hardware_info, versions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


# --- building the product's step ---------------------------------------------------------------

def load_config(params: Path | dict, ntk_every: int, ntk_points: int | None = None):
    """The validated params of `params` (a file or its data) with `train.ntk_every` set."""
    import copy

    from pinn.config import read_yaml, validate_params

    data = copy.deepcopy(params) if isinstance(params, dict) else read_yaml(params)
    train = data.setdefault("train", {})
    train["ntk_every"] = int(ntk_every)
    if ntk_points is not None:
        train["ntk_points"] = int(ntk_points)
    return validate_params(data, source=str(params) if not isinstance(params, dict) else "params")


def build(cfg, level: str | None = None):
    """(trainer, initial state, level) exactly as the train stage builds them for `level` (default:
    the finest); fixed points (RAR-D, fixed uniform) from the collocation stage's own function."""
    from pinn import cascade
    from pinn.stages.collocation import collocation_sets
    from pinn.stages.common import problem_of

    level = level or list(cfg.multilevel.levels)[-1]
    problem = problem_of(cfg)
    fixed = collocation_sets(cfg, problem)["interior"] if cascade.uses_fixed_points(cfg) else None
    trainer, model = cascade.make_trainer(cfg, problem, level, fixed_points=fixed)
    return trainer, cascade.state_template(trainer, model, cfg, level), level


class CompileCounter:
    """XLA backend compilations while active, per function name (`jax.monitoring`)."""

    def __init__(self):
        self.names: list[str] = []

    def _listener(self, event: str, duration: float, **kw) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self.names.append(str(kw.get("fun_name", "?")))

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)

    def count(self, name: str = "_run_impl") -> int:
        return sum(name in n for n in self.names)


def cache_size(trainer) -> int:
    return int(trainer._run._cache_size())


def conditionals(trainer, state, num_steps: int) -> int:
    """`conditional` instructions in the optimised XLA program of `trainer.run(state, num_steps)`."""
    args = (state, num_steps) if not trainer.ntk_every else (state, num_steps, trainer._ntk_last)
    text = trainer._run.lower(*args).compile().as_text()
    return len(re.findall(r"\bconditional\(", text))


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of `fn()`, waited for."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, time.process_time() - c0, out


def _summary(xs: list[float], digits: int = 4) -> dict:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": round(statistics.median(xs), digits), "q1": round(q[0], digits),
            "q3": round(q[2], digits), "min": round(min(xs), digits), "max": round(max(xs), digits)}


def _alternating(names: list[str], rounds: int):
    for r in range(rounds):
        yield r, (names if r % 2 == 0 else names[::-1])


# --- the measurement ---------------------------------------------------------------------------

def measure(params: Path | dict, *, level: str | None = None, intervals=(100, 10), chunk: int = 200,
            rounds: int = 30, single_rounds: int = 20, single_reps: int = 20,
            ntk_points: int | None = None, log: Callable[[str], None] = print) -> dict:
    from pinn.models import count_params
    from pinn.precision import scope

    intervals = [int(n) for n in intervals]
    bad = [n for n in intervals if n <= 0 or chunk % n]
    if bad:
        raise ValueError(f"--chunk {chunk} must be a positive multiple of every interval (not of {bad})")
    names = ["off"] + [f"every_{n}" for n in intervals]
    every = dict(zip(names, [0] + intervals))
    base = load_config(params, 0, ntk_points)
    with scope(base.train.precision), CompileCounter() as compiles:
        built = {name: build(load_config(params, every[name], ntk_points), level) for name in names}
        level = built["off"][2]
        trainers = {name: b[0] for name, b in built.items()}
        states = {name: b[1] for name, b in built.items()}
        # warm-up: compile the chunk program and the one-step program, one call each
        warm = {}
        for name in names:
            t0 = time.perf_counter()
            states[name], m = trainers[name].run(states[name], chunk)
            jax.block_until_ready(states[name])
            warm[name] = {"compile_and_first_chunk_s": round(time.perf_counter() - t0, 3),
                          "metric_columns": sorted(m)}
            jax.block_until_ready(trainers[name].run(states[name], 1))
        before = {"backend_compiles": compiles.count(),
                  "traces": {n: trainers[n].compiles for n in names},
                  "cache_size": {n: cache_size(trainers[n]) for n in names}}
        log(f"{level}: {count_params(states['off'].params)} parameters; compiled "
            f"({before['backend_compiles']} XLA compilations of the run)")

        # 1. per-step average over whole chunks (NTK steps in proportion), alternating rounds
        wall: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        ntk_steps: dict[str, list[int]] = {n: [] for n in names}
        last: dict[str, dict] = {}
        for r, order in _alternating(names, rounds):
            for name in order:
                s0 = int(states[name].step)
                t, c, (states[name], last[name]) = _timed(lambda: trainers[name].run(states[name], chunk))
                wall[name].append(t / chunk)
                cpu[name].append(c / chunk)
                n = every[name]
                ntk_steps[name].append(len(range(-(-s0 // n) * n, s0 + chunk, n)) if n else 0)
            log(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{n} {1e3 * wall[n][-1]:.3f} ms/step" for n in names))

        # 2. one step with the branch taken / not taken vs NTK off (the same parameters every call)
        single_names = ["off"]
        calls: dict[str, Callable[[], Any]] = {}
        ref = states["off"]
        off_inputs = [ref._replace(step=jnp.int32(k * 100 + 1)) for k in range(1, 4)]
        off_it = iter(range(10**9))
        calls["off"] = lambda: trainers["off"].run(off_inputs[next(off_it) % 3], 1)
        for n in intervals:
            tr = trainers[f"every_{n}"]
            # taken: step a multiple of n; not taken: the steps after it (cycled: the step changes)
            taken = [ref._replace(step=jnp.int32(k * n)) for k in range(1, 4)]
            not_taken = [ref._replace(step=jnp.int32(k * n + 1 + (k % (n - 1) if n > 2 else 0)))
                         for k in range(1, 4)] if n > 1 else []
            for kind, inputs in (("taken", taken), ("not_taken", not_taken)):
                if not inputs:
                    continue
                key = f"every_{n}_{kind}"
                it = iter(range(10**9))
                calls[key] = (lambda tr=tr, inputs=inputs, it=it:
                              tr.run(inputs[next(it) % len(inputs)], 1))
                single_names.append(key)
        for key in single_names:  # first-call effects
            jax.block_until_ready(calls[key]())
        single_wall: dict[str, list[float]] = {k: [] for k in single_names}
        single_cpu: dict[str, list[float]] = {k: [] for k in single_names}
        for _, order in _alternating(single_names, single_rounds):
            for key in order:
                t, c = 0.0, 0.0
                for _ in range(single_reps):
                    dt_, dc, _ = _timed(calls[key])
                    t, c = t + dt_, c + dc
                single_wall[key].append(t / single_reps)
                single_cpu[key].append(c / single_reps)

        after = {"backend_compiles": compiles.count(),
                 "traces": {n: trainers[n].compiles for n in names},
                 "cache_size": {n: cache_size(trainers[n]) for n in names}}
        # 3. the optimised programs keep the branch as a conditional (checked outside the count)
        conds = {n: conditionals(trainers[n], states[n], chunk) for n in names}

    def ratios(table: dict[str, list[float]], a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(table[a], table[b])]

    per_step: dict[str, dict] = {}
    for name in names[1:]:
        n = every[name]
        per_step[name] = {
            "ntk_every": n,
            "ntk_steps_per_chunk": sorted(set(ntk_steps[name])),
            "ratio_wall": _summary(ratios(wall, name, "off")),
            "ratio_cpu": _summary(ratios(cpu, name, "off")),
            "ratio_wall_of_fastest_rounds": round(min(wall[name]) / min(wall["off"]), 4),
            "ratios_wall": [round(x, 4) for x in ratios(wall, name, "off")],
            "ratios_cpu": [round(x, 4) for x in ratios(cpu, name, "off")],
        }
        if f"{name}_not_taken" in single_wall:
            # load-insensitive cross-check: (taken − not taken) / N over the off step in a chunk
            per_step[name]["ratio_predicted_from_one_step"] = {
                kind: round(1 + (statistics.median(tab[f"{name}_taken"])
                                 - statistics.median(tab[f"{name}_not_taken"])) / n
                            / statistics.median(chunked["off"]), 4)
                for kind, tab, chunked in (("wall", single_wall, wall), ("cpu", single_cpu, cpu))}
    single = {}
    for key in single_names[1:]:
        single[key] = {"ratio_wall": _summary(ratios(single_wall, key, "off")),
                       "ratio_cpu": _summary(ratios(single_cpu, key, "off"))}
    ms = lambda xs: round(1e3 * statistics.median(xs), 4)  # noqa: E731
    ntk_cols = {n: [c for c in warm[n]["metric_columns"] if c.startswith("ntk_")] for n in names}
    ntk_values = {n: {c: float(last[n][c]) for c in ntk_cols[n]} for n in names}
    return {
        "level": level,
        "parameters": count_params(states["off"].params),
        "ntk_points": base.train.ntk_points,
        "term_names": list(trainers["off"].term_names),
        "chunk_steps": chunk, "rounds": rounds,
        "single_rounds": single_rounds, "single_reps": single_reps,
        "ms_per_step_wall": {n: ms(wall[n]) for n in names},
        "ms_per_step_cpu": {n: ms(cpu[n]) for n in names},
        "per_step_average": per_step,
        "single_step_ms_wall": {k: ms(single_wall[k]) for k in single_names},
        "single_step_ms_cpu": {k: ms(single_cpu[k]) for k in single_names},
        "single_step": single,
        "ntk_step_extra_ms": {  # the NTK computation itself: taken minus off, medians
            f"every_{n}": {"wall": round(ms(single_wall[f"every_{n}_taken"]) - ms(single_wall["off"]), 4),
                           "cpu": round(ms(single_cpu[f"every_{n}_taken"]) - ms(single_cpu["off"]), 4)}
            for n in intervals},
        "compilations": {
            "after_warmup": before, "after_timing": after,
            "recompiled_while_timed": (after["backend_compiles"] != before["backend_compiles"]
                                       or after["traces"] != before["traces"]
                                       or after["cache_size"] != before["cache_size"]),
        },
        "xla_conditionals": conds,
        "ntk_columns": ntk_cols,
        "ntk_last_values_sanity_only": ntk_values,
        "warmup": {n: {"compile_and_first_chunk_s": warm[n]["compile_and_first_chunk_s"]} for n in names},
    }


def code_version() -> dict:
    """The commit, and the files of the code measured (`pinn/`, this script) that differ from it."""
    def git(*args: str) -> list[str]:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.splitlines()

    changed = git("status", "--porcelain", "--", "pinn", "benchmarks/ntk_overhead.py")
    return {"commit": "".join(git("rev-parse", "HEAD")), "uncommitted": sorted(c[3:] for c in changed)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--level", default=None, help="cascade level (default: the finest)")
    ap.add_argument("--intervals", type=int, nargs="+", default=[100, 10], help="ntk_every values")
    ap.add_argument("--chunk", type=int, default=200, help="steps per timed run (multiple of every interval)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--single-rounds", type=int, default=20)
    ap.add_argument("--single-reps", type=int, default=20, help="one-step calls per contender per round")
    ap.add_argument("--ntk-points", type=int, default=None, help="train.ntk_points (default: the params')")
    ap.add_argument("--out", type=Path, default=RESULTS / "ntk_overhead.json")
    args = ap.parse_args(argv)
    from pinn.io import write_json

    t0 = time.perf_counter()
    hardware = hardware_info()
    result = measure(args.params, level=args.level, intervals=args.intervals, chunk=args.chunk,
                     rounds=args.rounds, single_rounds=args.single_rounds, single_reps=args.single_reps,
                     ntk_points=args.ntk_points)
    try:
        params_name = str(args.params.resolve().relative_to(ROOT))
    except ValueError:
        params_name = str(args.params)
    out = {
        "what": "per-step time of the product's jitted Adam step (Trainer.run) with train.ntk_every = N "
                "against 0 (off); ratio = time(N) / time(off) per alternating round (wall and process "
                "CPU time): median, quartiles, range; plus one step with the NTK branch taken / not "
                "taken vs off, and compilation counts across the timed calls",
        "params": params_name,
        **result,
        "load_average_at_end": os.getloadavg()[0],
        "wall_s": round(time.perf_counter() - t0, 1),
        "hardware": hardware,
        "versions": versions(),
        "code": code_version(),
        "date": dt.date.today().isoformat(),
    }
    write_json(args.out, out)
    for name, r in result["per_step_average"].items():
        print(f"{name}: per-step ratio vs off wall {r['ratio_wall']['median']:.4f} "
              f"[{r['ratio_wall']['q1']:.4f}, {r['ratio_wall']['q3']:.4f}], "
              f"CPU {r['ratio_cpu']['median']:.4f} [{r['ratio_cpu']['q1']:.4f}, {r['ratio_cpu']['q3']:.4f}]")
    for key, r in result["single_step"].items():
        print(f"one step {key} / off: wall {r['ratio_wall']['median']:.4f}, CPU {r['ratio_cpu']['median']:.4f}")
    print(f"recompiled while timed: {result['compilations']['recompiled_while_timed']}; "
          f"XLA conditionals {result['xla_conditionals']}")
    print(f"wrote {args.out} ({out['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
