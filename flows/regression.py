"""Regression suite: benchmark cases through the pipeline, compared with a multi-seed baseline.

`benchmarks/regression/suite.yaml` lists the cases, each a params file run through the pipeline
(`pinn.pipeline.make_project` makes a DVC project of it; `flows.pipeline.pipeline` runs its
dvc.yaml stages, one Prefect task each, their output streamed to the Prefect log line by line, so
the UI shows each stage's progress live). Each case records (`case_metrics`):

    rel_l2, max_abs                 final accuracy (metrics.json)                        error
    time_to_<t>_s                   training wall time until rel L2 <= t, for the suite's
                                    thresholds (1e-2, 1e-3, 1e-4), from the stage histories
                                    (compilation included; start-up between stages not)  recorded
    time_to_<t>                     the same in reference steps: seconds x the plain-JAX
                                    reference's Adam steps/s (a slower machine cancels)   time
    adam_steps_per_s                the Adam stages' steps/s (fastest log interval)       recorded
    refine_iterations_per_s         the refinement's iterations/s (fastest block)         recorded
    adam_speed_ratio                adam_steps_per_s / a plain-JAX Adam step's            speed
    refine_speed_ratio              refine_iterations_per_s / a plain-JAX float64 loss+gradient
                                    evaluation's rate on the refinement's point sets      speed

The plain-JAX reference (`reference_speed`) is written by hand here (an MLP with the same
embedding, widths and activation, the PDE residual by nested `jax.jvp`, optax Adam), has the
case's sizes (network, batch, collocation sets, precision), and is timed in the same run, right
before and right after the case (the mean of the two; each its fastest call, as ours is its
fastest interval): speed is never compared as an absolute time. The case's stages run without
the persistent compilation cache (`PINN_JAX_CACHE=""`), so times to accuracy always include
compilation, in a fresh or a kept workdir alike.

Rules (noise-aware). The baseline (`--update-baseline`) runs every case with >= 3 seeds
(suite.yaml `baseline_seeds`) and records per case and metric the values, mean, standard deviation
and range. A check run uses each case's own seed and fails a metric that is outside the seeds'
range by more than the suite's stated margin for its kind:

    error, time (lower is better)   new > worst seed x (1 + margin)     (also: not finite, missing,
                                                                         a threshold not reached
                                                                         that every seed reached)
    speed (higher is better)        new < slowest seed x (1 - margin)

Each failure names the case, metric, baseline (mean, spread), new value and change in %;
`RegressionError` carries them all. A case whose params changed since the baseline (digest of
its values, seed excluded) fails until the baseline is recorded again.

History and trend. Every run (check or baseline, passing or failing) appends one JSON line to
`benchmarks/regression/history.jsonl`: date, git commit (and whether the tree was dirty), package
versions, hardware (with the load average), the status and failures, and every case's metrics.
It is kept in the repository, not as DVC experiments or on the Prefect server, so the trend
survives machines, servers and clones: a baseline or a nightly run is a line to commit, and the
file's git history is the audit trail. The flow then draws `trend.png` (each compared metric per
case over the runs, the baseline's mean, range and failure limit drawn; log axes for errors and
times) and publishes it as the Prefect artifact `pinn-regression-trend` with a table of what moved
since the previous run; the comparison is `pinn-regression-comparison`. Every artifact of this
flow is keyed `pinn-regression-*` (a case's pipeline: `pinn-regression-<case>-report`, ...),
never under the keys of the user's pipeline runs (`pinn-report`, `pinn-metrics`, `pinn-stages`).

    python -m flows.regression                                  run the suite, compare, record
    python -m flows.regression --update-baseline                record the baseline (3 seeds)
    python -m flows.regression --serve --cron "0 3 * * *"       deployment on a cron schedule
                                                                (needs a Prefect server: start
                                                                `prefect server start` and set
                                                                PREFECT_API_URL)
    python -m flows.regression --deploy POOL --cron "0 3 * * *" a deployment of a work pool, run
                                                                by `prefect worker start --pool
                                                                POOL` (benchmarks/regression/
                                                                README.md)

`--workdir DIR` keeps the case projects in DIR/<case>/seed-<n>/ (default: a temporary directory,
removed after a passing run, kept and logged after a failure); `--no-rerun` lets DVC skip the
stages whose inputs did not change there (to try the rules on a finished run; the timings are
then the earlier run's).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence

from flows.pipeline import (  # first: sets the Prefect defaults
    pipeline, project_root, require_server,
)
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from pinn.hardware import cpu_name

DEFAULT_SUITE = "benchmarks/regression/suite.yaml"
DEFAULT_BASELINE = "benchmarks/regression/baseline.json"
DEFAULT_HISTORY = "benchmarks/regression/history.jsonl"
DEFAULT_TREND = "benchmarks/regression/trend.png"
#: prefix of this flow's artifact keys (`pinn-regression-comparison`, `-trend`, and each case's
#: pipeline artifacts `pinn-regression-<case>-report`, `-metrics`, `-stages`)
ARTIFACTS = "pinn-regression"
#: a baseline needs at least this many seeds (its spread is the noise the rules allow for)
MIN_SEEDS = 3

Kind = Literal["error", "time", "speed", "recorded"]
#: the kinds a baseline compares, and which way is better
COMPARED: dict[str, str] = {"error": "lower", "time": "lower", "speed": "higher"}
RULE = ("error/time metrics fail when new > worst seed x (1 + margin) (or not finite, missing, or "
        "a threshold not reached that every seed reached); speed metrics fail when new < slowest "
        "seed x (1 - margin); margins per kind in the suite file")


class RegressionError(RuntimeError):
    """Benchmark metrics outside what the baseline allows (or a case could not run)."""


class BaselineError(ValueError):
    """The baseline file is missing or malformed."""


class SuiteError(ValueError):
    """The suite file is missing or malformed."""


# ----------------------------------------------------------------------------------------------
# the suite


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark case: a name (`[a-z0-9_]+`) and the params file run through the pipeline."""

    name: str
    params: Path


@dataclasses.dataclass(frozen=True)
class Suite:
    """The parsed suite file (see benchmarks/regression/suite.yaml)."""

    path: Path
    cases: tuple[Case, ...]
    thresholds: tuple[float, ...]
    baseline_seeds: tuple[int, ...]
    margins: Mapping[str, float]


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file; params paths are relative to the suite file's directory."""
    from pinn.config import read_yaml

    path = Path(path)
    data = read_yaml(path, "suite file", SuiteError)
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: must be a mapping with 'cases', 'thresholds', 'margins'")
    cases = data.get("cases")
    if not isinstance(cases, list) or not cases:
        raise SuiteError(f"{path}: 'cases' must be a non-empty list of {{name, params}}")
    parsed = []
    for i, case in enumerate(cases):
        name = case.get("name") if isinstance(case, dict) else None
        params = case.get("params") if isinstance(case, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+", name):
            raise SuiteError(f"{path}: cases[{i}].name = {name!r}: must match [a-z0-9_]+")
        if not isinstance(params, str):
            raise SuiteError(f"{path}: cases[{i}].params: must be a path (relative to {path.parent})")
        file = (path.parent / params).resolve()
        if not file.is_file():
            raise SuiteError(f"{path}: cases[{i}].params = {params}: no such file ({file})")
        parsed.append(Case(name, file))
    names = [c.name for c in parsed]
    if len(set(names)) != len(names):
        raise SuiteError(f"{path}: case names must be unique ({', '.join(names)})")
    thresholds = data.get("thresholds", [1e-2, 1e-3, 1e-4])
    if (not isinstance(thresholds, list) or not thresholds
            or not all(isinstance(t, (int, float)) and 0 < t < 1 for t in thresholds)):
        raise SuiteError(f"{path}: thresholds = {thresholds!r}: must be a list of numbers in (0, 1)")
    seeds = data.get("baseline_seeds", [0, 1, 2])
    if (not isinstance(seeds, list) or len(set(seeds)) < MIN_SEEDS
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise SuiteError(f"{path}: baseline_seeds = {seeds!r}: must be at least {MIN_SEEDS} "
                         "distinct integers >= 0")
    margins = data.get("margins")
    if not isinstance(margins, dict) or set(margins) != set(COMPARED):
        raise SuiteError(f"{path}: margins must give one number per kind: {', '.join(COMPARED)}")
    for kind, margin in margins.items():
        upper = 1 if COMPARED[kind] == "higher" else math.inf
        if not isinstance(margin, (int, float)) or not 0 <= margin < upper:
            raise SuiteError(f"{path}: margins.{kind} = {margin!r}: must be >= 0"
                             + (" and < 1" if upper == 1 else ""))
    return Suite(path, tuple(parsed), tuple(float(t) for t in sorted(thresholds, reverse=True)),
                 tuple(seeds), {k: float(v) for k, v in margins.items()})


def threshold_name(threshold: float) -> str:
    """1e-3 → "1e-3", 2.5e-4 → "2.5e-4" (as in the metric names `time_to_1e-3`)."""
    mantissa, exponent = f"{threshold:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def metric_kinds(thresholds: Iterable[float]) -> dict[str, Kind]:
    """Every metric a case records, with its kind (`COMPARED` kinds are compared)."""
    kinds: dict[str, Kind] = {"rel_l2": "error", "max_abs": "error"}
    for t in thresholds:
        kinds[f"time_to_{threshold_name(t)}"] = "time"
        kinds[f"time_to_{threshold_name(t)}_s"] = "recorded"
    kinds.update(adam_speed_ratio="speed", refine_speed_ratio="speed",
                 adam_steps_per_s="recorded", refine_iterations_per_s="recorded",
                 reference_adam_steps_per_s="recorded", reference_grad_evals_per_s="recorded",
                 wall_s="recorded")
    return kinds


def params_digest(path: str | Path) -> str:
    """Digest of a case's params values without `seed` (the baseline runs several seeds of it;
    comments and formatting do not count)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    data = {k: v for k, v in data.items() if k != "seed"} if isinstance(data, dict) else data
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def case_seed(case: Case) -> int:
    """The seed written in the case's params file (what a check run uses)."""
    import yaml

    return int((yaml.safe_load(case.params.read_text()) or {}).get("seed", 0))


# ----------------------------------------------------------------------------------------------
# what a finished case measured


def _best_rate(counts: Sequence[float], seconds: Sequence[float]) -> float | None:
    """The fastest of the intervals' count/second (None without any)."""
    rates = [c / t for c, t in zip(counts, seconds) if t > 0 and math.isfinite(t)]
    return max(rates) if rates else None


def case_metrics(project: Path, levels: Sequence[str], thresholds: Sequence[float],
                 reference: Mapping[str, float]) -> dict[str, float | None]:
    """The metrics of a finished pipeline run in `project` (see the module docstring).

    `levels`: the cascade's levels (their `data/train/<level>/history.csv`); `reference`: the
    plain-JAX rates `{"adam_steps_per_s", "grad_evals_per_s"}` measured in this run. Rates are
    the fastest log interval's (the one least disturbed by other load on a shared machine; the
    reference is timed the same way), leaving out the first interval of each phase, which
    compiles (unless it is the only one). A threshold never reached gives None."""
    import pandas as pd

    from pinn.curves import pipeline_curve

    project = Path(project)
    final = json.loads((project / "metrics.json").read_text())
    curve = pipeline_curve(project, levels)
    out: dict[str, float | None] = {"rel_l2": float(final["rel_l2"]),
                                    "max_abs": float(final["max_abs"])}
    ref_adam = reference.get("adam_steps_per_s")
    for t in thresholds:
        hit = next((r["wall_s"] for r in curve if r["rel_l2"] <= t), None)
        name = threshold_name(t)
        out[f"time_to_{name}_s"] = None if hit is None else float(hit)
        out[f"time_to_{name}"] = None if hit is None or not ref_adam else float(hit * ref_adam)

    rates: list[float] = []
    for level in levels:
        history = pd.read_csv(project / "data" / "train" / level / "history.csv")
        values = [float(v) for v in history["steps_per_s"]]
        rates += values[1:] if len(values) > 1 else values
    adam = _best_rate(rates, [1.0] * len(rates))
    out["adam_steps_per_s"] = adam
    refine = None
    refine_path = project / "data" / "refine" / "history.csv"
    if refine_path.exists():
        history = pd.read_csv(refine_path)
        iterations = [0.0] + [float(v) for v in history["iteration"]]
        walls = [0.0] + [float(v) for v in history["wall_s"]]
        counts = [b - a for a, b in zip(iterations, iterations[1:])]
        seconds = [b - a for a, b in zip(walls, walls[1:])]
        if len(counts) > 1:
            counts, seconds = counts[1:], seconds[1:]
        refine = _best_rate(counts, seconds)
    out["refine_iterations_per_s"] = refine
    out["reference_adam_steps_per_s"] = ref_adam
    out["reference_grad_evals_per_s"] = reference.get("grad_evals_per_s")
    out["adam_speed_ratio"] = adam / ref_adam if adam and ref_adam else None
    ref_grad = reference.get("grad_evals_per_s")
    out["refine_speed_ratio"] = refine / ref_grad if refine and ref_grad else None
    return out


# ----------------------------------------------------------------------------------------------
# the plain-JAX reference step


def _plain_network(cfg, problem, key, dtype) -> tuple[Any, Callable]:
    """(weights, apply) of a hand-written MLP shaped like the case's network: exact periodic
    embedding of periodic columns (`cos`, `sin` of 2πx/P), other columns affinely onto [-1, 1],
    optional fixed Fourier features, `depth` hidden layers of `width`, a linear output."""
    import jax
    import jax.numpy as jnp

    m = cfg.model
    periodic = [bool(p) and m.periodic_embedding for p in problem.periodic]
    lower, upper = list(problem.lower), list(problem.upper)
    features = sum(2 if p else 1 for p in periodic)
    keys = jax.random.split(key, m.depth + 2)
    fourier = None
    if m.fourier_features:
        fourier = m.fourier_scale * jax.random.normal(keys[-1], (features, m.fourier_features), dtype)
        features = 2 * m.fourier_features
    act = {"tanh": jnp.tanh, "sin": jnp.sin, "gelu": jax.nn.gelu, "swish": jax.nn.swish,
           "softplus": jax.nn.softplus}[m.activation]
    glorot = jax.nn.initializers.glorot_normal()
    sizes = [features] + [m.width] * m.depth + [1]
    weights = [(glorot(k, (a, b), dtype), jnp.zeros((b,), dtype))
               for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def apply(ws, z):
        columns = []
        for i, (lo, hi, per) in enumerate(zip(lower, upper, periodic)):
            c = z[:, i]
            if per:
                w = 2.0 * jnp.pi / (hi - lo)
                columns += [jnp.cos(w * c), jnp.sin(w * c)]
            else:
                columns.append(2.0 * (c - lo) / (hi - lo) - 1.0)
        h = jnp.stack(columns, axis=-1)
        if fourier is not None:
            p = h @ fourier
            h = jnp.concatenate([jnp.cos(p), jnp.sin(p)], axis=-1)
        for w, b in ws[:-1]:
            h = act(h @ w + b)
        w, b = ws[-1]
        return (h @ w + b)[:, 0]

    return weights, apply


#: the built-in problems' residuals written by hand: (problem, u, first[i], second[i]) → r
PLAIN_RESIDUALS: dict[str, Callable] = {
    "burgers_1d": lambda P, u, d1, d2: d1[0] + u * d1[1] - P.viscosity * d2[1],
    "allen_cahn_1d": lambda P, u, d1, d2: d1[0] - P.diffusion * d2[1] + P.reaction * (u**3 - u),
    "allen_cahn_2d": lambda P, u, d1, d2: d1[0] - P.epsilon**2 * (d2[1] + d2[2]) - u + u**3,
}


def _plain_loss(cfg, problem, apply) -> Callable:
    """loss(weights, interior, ic_x, bc_z): Σ w·mean(term²) with the case's term weights; the
    residual by nested `jax.jvp` (hand-written for the built-in problems; another problem's own
    `residual` otherwise), the initial and boundary terms from the problem's initial condition
    and `boundary_residual`."""
    import jax
    import jax.numpy as jnp

    weights = cfg.balancing.weights
    formula = PLAIN_RESIDUALS.get(problem.name)
    dims = len(problem.input_names)

    def residual(ws, z):
        f = lambda zz: apply(ws, zz)  # noqa: E731
        if formula is None:
            return problem.residual(f, z)
        unit = [jnp.zeros_like(z).at[:, i].set(1.0) for i in range(dims)]
        u = f(z)
        d1 = {i: jax.jvp(f, (z,), (unit[i],))[1] for i in problem.first}
        d2 = {}
        for i in problem.second:
            d2[i] = jax.jvp(lambda zz: jax.jvp(f, (zz,), (unit[i],))[1], (z,), (unit[i],))[1]
            if i not in d1:
                d1[i] = jax.jvp(f, (z,), (unit[i],))[1]
        return formula(problem, u, d1, d2)

    def loss(ws, z, ic_x, bc_z):
        f = lambda zz: apply(ws, zz)  # noqa: E731
        total = weights.get("pde", 1.0) * jnp.mean(residual(ws, z) ** 2)
        if hasattr(problem, "initial_condition"):  # time first, starting at 0 (built-ins)
            z0 = jnp.concatenate([jnp.zeros_like(ic_x[:, :1]), ic_x], axis=-1)
            ic = f(z0) - problem.initial_condition(ic_x)
        else:
            ic = problem.ic_residual(f, ic_x)
        total = total + weights.get("ic", 1.0) * jnp.mean(ic**2)
        bc = problem.boundary_residual(f, bc_z, exact_periodic=cfg.model.periodic_embedding)
        if bc is not None:
            total = total + weights.get("bc", 1.0) * jnp.mean(bc**2)
        return total

    return loss


def _timed_rate(fn: Callable, arg: Any, count: int, seconds: float) -> float:
    """count/s of `fn(arg)` (compiled already) in its fastest call of at least 3, timed for about
    `seconds` (the fastest: the call least disturbed by other load, as `case_metrics` does)."""
    import jax

    times = []
    end = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < end:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - t0)
    return count / min(times)


class ReferenceStep:
    """The plain-JAX reference of a case's sizes, compiled once (on construction) and timed on
    demand (`rates`).

    `adam_steps_per_s`: a `lax.scan` over Adam steps in the training precision, each on a fresh
    uniform batch (sampling.batch_size interior, ic_batch_size initial, bc_batch_size boundary
    points), optax Adam with the case's exponential decay. `grad_evals_per_s`: value and gradient
    of the same loss in the refinement's precision on fixed sets of the collocation sizes (what one
    quasi-Newton iteration needs at least once)."""

    def __init__(self, params_file: Path, steps_per_call: int = 20, evals_per_call: int = 3) -> None:
        from pinn.config import load_params
        from pinn.precision import scope
        from pinn.stages.common import problem_of

        cfg = load_params(params_file)
        problem = problem_of(cfg)
        self.steps_per_call, self.evals_per_call = steps_per_call, evals_per_call
        self._scope = scope
        self._precisions = (cfg.train.precision, cfg.refine.precision)
        with scope(cfg.train.precision) as dtype:
            self._adam, self._adam_arg = self._adam_steps(cfg, problem, dtype)
            self._adam(self._adam_arg)  # compile
        with scope(cfg.refine.precision) as dtype:
            self._grad, self._grad_arg = self._evaluations(cfg, problem, dtype)
            self._grad(self._grad_arg)  # compile

    @staticmethod
    def _draw(problem, key, dtype, n_interior: int, n_ic: int, n_bc: int):
        """Uniform interior, initial (spatial coordinates) and boundary-candidate points."""
        import jax
        import jax.numpy as jnp

        lo, hi = jnp.asarray(problem.lower, dtype), jnp.asarray(problem.upper, dtype)
        dims = len(problem.input_names)
        k1, k2, k3 = jax.random.split(key, 3)
        z = lo + (hi - lo) * jax.random.uniform(k1, (n_interior, dims), dtype)
        ic = lo[1:] + (hi - lo)[1:] * jax.random.uniform(k2, (n_ic, dims - 1), dtype)
        bc = lo + (hi - lo) * jax.random.uniform(k3, (n_bc, dims), dtype)
        return z, ic, bc

    def _adam_steps(self, cfg, problem, dtype):
        import jax
        import optax

        ws, apply = _plain_network(cfg, problem, jax.random.PRNGKey(cfg.seed), dtype)
        loss = _plain_loss(cfg, problem, apply)
        o, s = cfg.optimizer, cfg.sampling
        opt = optax.adam(optax.exponential_decay(o.learning_rate, o.decay_steps, o.decay_rate),
                         b1=o.b1, b2=o.b2)
        length = self.steps_per_call

        def steps(carry):
            def body(c, _):
                w, state, key = c
                key, sub = jax.random.split(key)
                points = self._draw(problem, sub, dtype, s.batch_size, s.ic_batch_size,
                                    s.bc_batch_size)
                updates, state = opt.update(jax.grad(loss)(w, *points), state, w)
                return (optax.apply_updates(w, updates), state, key), None

            return jax.lax.scan(body, carry, None, length=length)[0]

        return jax.jit(steps), (ws, opt.init(ws), jax.random.PRNGKey(1))

    def _evaluations(self, cfg, problem, dtype):
        import jax

        ws, apply = _plain_network(cfg, problem, jax.random.PRNGKey(cfg.seed), dtype)
        loss = _plain_loss(cfg, problem, apply)
        c = cfg.collocation
        points = self._draw(problem, jax.random.PRNGKey(2), dtype, c.num_points, c.ic_points,
                            c.bc_points)
        length = self.evals_per_call

        def evaluations(w0):
            def body(w, _):
                value, g = jax.value_and_grad(loss)(w, *points)
                # a step that depends on the gradient: no evaluation can be skipped
                return jax.tree_util.tree_map(lambda a, b: a - 1e-9 * b, w, g), value

            return jax.lax.scan(body, w0, None, length=length)

        return jax.jit(evaluations), ws

    def rates(self, seconds: float = 1.0) -> dict[str, float]:
        """{"adam_steps_per_s", "grad_evals_per_s"} measured now (each for about `seconds`)."""
        train, refine = self._precisions
        with self._scope(train):
            adam = _timed_rate(self._adam, self._adam_arg, self.steps_per_call, seconds)
        with self._scope(refine):
            grad = _timed_rate(self._grad, self._grad_arg, self.evals_per_call, seconds)
        return {"adam_steps_per_s": adam, "grad_evals_per_s": grad}


def reference_speed(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """The reference rates of a case: the mean of those measured before and after it."""
    return {k: (before[k] + after[k]) / 2.0 for k in before}


# ----------------------------------------------------------------------------------------------
# baseline and comparison


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summarize(values: Sequence[float | None]) -> dict[str, Any]:
    """{"values", "n", "mean", "std", "min", "max"} of one metric over seeds (a None value — a
    threshold not reached — leaves mean and spread None)."""
    entry: dict[str, Any] = {"values": list(values), "n": len(values)}
    if values and all(_finite(v) for v in values):
        vs = [float(v) for v in values]
        entry.update(mean=statistics.fmean(vs), std=statistics.pstdev(vs), min=min(vs), max=max(vs))
    else:
        entry.update(mean=None, std=None, min=None, max=None)
    return entry


def make_baseline(suite: Suite, runs: Mapping[str, Sequence[Mapping[str, Any]]],
                  seeds: Sequence[int], record: Mapping[str, Any]) -> dict[str, Any]:
    """The baseline of `runs` ({case: [metrics of each seed, in `seeds` order]}): per case, its
    params digest and, per compared metric, the seeds' values, mean, std and range."""
    if len(set(seeds)) < MIN_SEEDS:
        raise BaselineError(f"a baseline needs at least {MIN_SEEDS} seeds, got {list(seeds)}")
    kinds = metric_kinds(suite.thresholds)
    cases = {}
    for case in suite.cases:
        per_seed = runs[case.name]
        if len(per_seed) != len(seeds):
            raise BaselineError(f"{case.name}: {len(per_seed)} runs for {len(seeds)} seeds")
        cases[case.name] = {
            "params": _display(case.params),
            "params_digest": params_digest(case.params),
            "metrics": {name: {"kind": kind, **summarize([m.get(name) for m in per_seed])}
                        for name, kind in kinds.items() if kind in COMPARED},
        }
    return {"rule": RULE, "suite": _display(suite.path), "seeds": list(seeds),
            "created": record["date"], "commit": record["commit"], "hardware": record["hardware"],
            "versions": record["versions"], "cases": cases}


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and check a baseline file (`make_baseline`'s format)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BaselineError(f"{path}: baseline not found (record it with --update-baseline)") from None
    except json.JSONDecodeError as e:
        raise BaselineError(f"{path}: not valid JSON ({e})") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, dict) or not cases:
        raise BaselineError(f"{path}: needs a non-empty 'cases' mapping (record it with "
                            "--update-baseline)")
    seeds = data.get("seeds")
    if not isinstance(seeds, list) or len(set(seeds)) < MIN_SEEDS:
        raise BaselineError(f"{path}: seeds = {seeds!r}: a baseline needs at least {MIN_SEEDS} seeds")
    for name, case in cases.items():
        metrics = case.get("metrics") if isinstance(case, dict) else None
        if not isinstance(metrics, dict) or not metrics:
            raise BaselineError(f"{path}: cases.{name}.metrics: must be a non-empty mapping")
        for metric, entry in metrics.items():
            where = f"{path}: cases.{name}.metrics.{metric}"
            if not isinstance(entry, dict) or entry.get("kind") not in COMPARED:
                raise BaselineError(f"{where}.kind: must be one of {', '.join(COMPARED)}")
            values = entry.get("values")
            if not isinstance(values, list) or len(values) != len(seeds):
                raise BaselineError(f"{where}.values: must hold one value per seed ({len(seeds)})")
            if not all(v is None or _finite(v) for v in values):
                raise BaselineError(f"{where}.values = {values!r}: finite numbers (or null: a "
                                    "threshold not reached)")
            if any(v is None for v in values):
                continue
            for key in ("mean", "min", "max"):
                if not _finite(entry.get(key)):
                    raise BaselineError(f"{where}.{key} = {entry.get(key)!r}: must be a finite number")
            if not entry["min"] <= entry["mean"] <= entry["max"]:
                raise BaselineError(f"{where}: needs min <= mean <= max")
    return data


def jsonable(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (the files are strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def _percent(new: float, old: float) -> float:
    if old == 0:
        return 0.0 if new == 0 else math.copysign(math.inf, new)
    return 100.0 * (new - old) / abs(old)


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def compare(suite: Suite, baseline: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]],
            ) -> tuple[list[dict[str, Any]], list[str]]:
    """Each case's metrics (`results`: {case: metrics}) against the baseline, by the rules of the
    module docstring: (one table row per case and compared metric, failure messages)."""
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    recorded = baseline.get("cases", {})
    for case in suite.cases:
        metrics = results.get(case.name)
        if metrics is None:
            continue  # did not run: reported by the flow
        base_case = recorded.get(case.name)
        if base_case is None:
            failures.append(f"{case.name}: not in the baseline: record it with --update-baseline")
            continue
        digest = params_digest(case.params)
        if base_case.get("params_digest") not in (None, digest):
            failures.append(f"{case.name}: {_display(case.params)} changed since the baseline "
                            f"(params digest {base_case['params_digest']}, now {digest}): record "
                            "it again with --update-baseline")
            continue
        for name, entry in base_case["metrics"].items():
            kind = entry["kind"]
            margin = suite.margins[kind]
            lower_better = COMPARED[kind] == "lower"
            new = metrics.get(name)
            n = len(entry["values"])
            row = {"case": case.name, "metric": name, "kind": kind, "baseline_mean": entry["mean"],
                   "baseline_min": entry["min"], "baseline_max": entry["max"], "new": new,
                   "change_pct": None, "limit": None, "status": "ok"}
            rows.append(row)
            if entry["mean"] is None:  # some seed did not reach this threshold: not compared
                row["status"] = "not compared"
                continue
            limit = entry["max"] * (1 + margin) if lower_better else entry["min"] * (1 - margin)
            row["limit"] = limit
            spread = (f"baseline {entry['mean']:.3g} ± {entry['std']:.2g} (mean ± std of {n} "
                      f"seeds, range {entry['min']:.3g}..{entry['max']:.3g})")
            rule = (f"allowed <= {limit:.3g} (worst seed x (1 + {margin:g}))" if lower_better
                    else f"allowed >= {limit:.3g} (slowest seed x (1 - {margin:g}))")
            if new is None and kind == "time":
                row["status"] = "not reached"
                failures.append(f"{case.name}: {name}: threshold not reached in this run; {spread}")
                continue
            if not _finite(new):
                row["status"] = "missing" if new is None else "not finite"
                failures.append(f"{case.name}: {name} = {new}: {row['status']}; {spread}")
                continue
            change = _percent(float(new), float(entry["mean"]))
            row["change_pct"] = round(change, 2) if math.isfinite(change) else None
            if (new > limit) if lower_better else (new < limit):
                row["status"] = "worse"
                failures.append(f"{case.name}: {name} = {new:.3g}, {spread}, change {change:+.1f} %, "
                                 f"{rule}")
    return rows, failures


# ----------------------------------------------------------------------------------------------
# history and trend


def versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers (and of Python)."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "optax", "flax", "numpy", "dvc", "prefect"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def hardware() -> dict[str, Any]:
    """What the run ran on; the load average says how busy the machine was."""
    import jax

    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "system": platform.platform(),
            "jax_backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def git_commit(root: Path) -> tuple[str | None, bool | None]:
    """(HEAD's commit, whether the working tree differs from it); (None, None) outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head, bool(status.strip())


def history_record(kind: Literal["check", "baseline"], suite: Suite,
                   results: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """One line of the history: date, commit, versions, hardware, and every case's runs
    (`results`: {case: [{"seed", "metrics"}]}); `status` and `failures` are set by the flow."""
    commit, dirty = git_commit(project_root())
    return {"date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            "kind": kind, "status": None, "commit": commit, "dirty": dirty,
            "versions": versions(), "hardware": hardware(), "suite": _display(suite.path),
            "cases": {name: list(runs) for name, runs in results.items()}, "failures": []}


def append_history(path: Path, record: Mapping[str, Any]) -> None:
    """Append `record` as one JSON line (the file is created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(jsonable(record), sort_keys=True, allow_nan=False) + "\n")


def read_history(path: Path) -> list[dict[str, Any]]:
    """The history's records, oldest first (none when the file does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trend_metrics(suite: Suite) -> list[str]:
    """The metrics drawn on the trend chart: every compared metric, in `metric_kinds` order."""
    return [m for m, kind in metric_kinds(suite.thresholds).items() if kind in COMPARED]


def trend_figure(history: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any] | None,
                 suite: Suite):
    """The trend chart: a row per compared metric, a column per case; each run's values (every
    seed of a baseline run) over the runs, the baseline's range shaded, its mean drawn and the
    failure limit dashed; failed runs in red; log axes for errors and times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = trend_metrics(suite)
    kinds = metric_kinds(suite.thresholds)
    cases = [c.name for c in suite.cases]
    fig, axes = plt.subplots(len(metrics), len(cases), figsize=(4.2 * len(cases), 2.1 * len(metrics)),
                             squeeze=False, sharex=True)
    runs = list(history)
    labels = [f"{r['date'][:10]}\n{(r.get('commit') or '?')[:7]}" for r in runs]
    for col, case in enumerate(cases):
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            kind = kinds[metric]
            for x, record in enumerate(runs):
                values = [r["metrics"].get(metric) for r in record.get("cases", {}).get(case, [])]
                values = [v for v in values if _finite(v) and (v > 0 or kind == "speed")]
                colour = ("tab:red" if record.get("status") == "failed" else
                          "tab:grey" if record.get("kind") == "baseline" else "tab:blue")
                ax.plot([x] * len(values), values, "o", ms=4, color=colour)
            entry = ((baseline or {}).get("cases", {}).get(case, {}).get("metrics", {}).get(metric))
            if entry and entry.get("mean") is not None:
                lo, hi = -0.5, max(len(runs) - 0.5, 0.5)
                ax.axhspan(entry["min"], entry["max"], color="tab:green", alpha=0.2,
                           label="baseline range")
                ax.axhline(entry["mean"], color="tab:green", lw=1, label="baseline mean")
                margin = suite.margins[kind]
                limit = (entry["max"] * (1 + margin) if COMPARED[kind] == "lower"
                         else entry["min"] * (1 - margin))
                ax.axhline(limit, color="tab:red", lw=1, ls="--", label="fails beyond")
                ax.set_xlim(lo, hi)
            if kind in ("error", "time"):
                ax.set_yscale("log")
            if row == 0:
                ax.set_title(case)
            if not any(len(line.get_xdata()) for line in ax.get_lines()):
                ax.text(0.5, 0.5, "not reached by every baseline seed\n(not compared)",
                        transform=ax.transAxes, ha="center", va="center", fontsize=8,
                        color="grey")
            if col == 0:
                unit = {"error": "", "time": "\n(reference steps)", "speed": "\n(ours / plain JAX)"}
                ax.set_ylabel(metric + unit[kind], fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
    for ax in axes[-1]:
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels(labels, fontsize=7, rotation=60)
        ax.set_xlabel("run (date, commit)")
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="upper right", fontsize=8)
    fig.suptitle("pinn regression suite: each run (grey: baseline seeds, blue: check, "
                 "red: failed)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.92, 0.97))
    return fig


def write_trend(path: Path, history: Sequence[Mapping[str, Any]],
                baseline: Mapping[str, Any] | None, suite: Suite) -> bytes:
    """Draw the trend chart to `path` (PNG); returns its bytes."""
    import matplotlib.pyplot as plt

    fig = trend_figure(history, baseline, suite)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def what_moved(history: Sequence[Mapping[str, Any]], suite: Suite) -> list[dict[str, Any]]:
    """The last run against the one before it: one row per case and compared metric (the mean
    over a run's seeds), largest relative change first."""
    if not history:
        return []
    last, previous = history[-1], (history[-2] if len(history) > 1 else None)

    def mean(record, case, metric):
        vs = [r["metrics"].get(metric) for r in (record or {}).get("cases", {}).get(case, [])]
        vs = [v for v in vs if _finite(v)]
        return statistics.fmean(vs) if vs else None

    rows = []
    for case in suite.cases:
        for metric in trend_metrics(suite):
            new, old = mean(last, case.name, metric), mean(previous, case.name, metric)
            change = _percent(new, old) if new is not None and old is not None else None
            rows.append({"case": case.name, "metric": metric, "previous": old, "now": new,
                         "change_pct": round(change, 1) if change is not None
                         and math.isfinite(change) else None})
    return sorted(rows, key=lambda r: -abs(r["change_pct"]) if r["change_pct"] is not None else 0)


# ----------------------------------------------------------------------------------------------
# paths


def _display(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(project_root().resolve()).as_posix()
    except ValueError:
        return str(path)


def _resolve(path: str | Path) -> Path:
    """A path as given, else (relative and absent here) relative to the project root."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path.absolute()
    return project_root() / path


# ----------------------------------------------------------------------------------------------
# the flow


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Environment variables set for the block (the stage subprocesses inherit them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@task(name="reference-step", task_run_name="reference-step-{label}", cache_policy=NO_CACHE)
def measure_reference(step: ReferenceStep, label: str) -> dict[str, float]:
    """The plain-JAX reference rates, measured now."""
    rates = step.rates()
    get_run_logger().info("plain-JAX reference (%s): %.1f Adam steps/s, %.1f gradient evaluations/s",
                          label, rates["adam_steps_per_s"], rates["grad_evals_per_s"])
    return rates


def run_case(case: Case, seed: int, workdir: Path, thresholds: Sequence[float], rerun: bool,
             ) -> dict[str, Any]:
    """Run one case with `seed` in its project `workdir/<case>/seed-<seed>`: the plain-JAX
    reference, the pipeline (`flows.pipeline.pipeline`, each stage through DVC), the reference
    again; returns its metrics. Raises `RegressionError` when the pipeline fails."""
    import yaml

    from pinn.config import load_params
    from pinn.pipeline import make_project

    logger = get_run_logger()
    data = yaml.safe_load(case.params.read_text())
    data["seed"] = seed
    params_file = workdir / case.name / f"seed-{seed}.yaml"
    params_file.parent.mkdir(parents=True, exist_ok=True)
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    project = make_project(workdir / case.name / f"seed-{seed}", params_file)
    logger.info("case %s, seed %d: project %s", case.name, seed, project)
    step = ReferenceStep(project / "params.yaml")  # compiled here, outside the timings
    label = f"{case.name.replace('_', '-')}-seed{seed}"
    before = measure_reference(step, f"{label}-before")
    start = time.perf_counter()
    with _environ(PINN_JAX_CACHE=""):  # compilation counts in the times to accuracy, every run
        state = pipeline(params_path=str(project / "params.yaml"), force=rerun,
                         artifacts=f"{ARTIFACTS}-{case.name.replace('_', '-')}", return_state=True)
    wall = time.perf_counter() - start
    if not state.is_completed():
        raise RegressionError(f"{case.name} (seed {seed}): the pipeline failed: {state.message}")
    after = measure_reference(step, f"{label}-after")
    levels = list(load_params(project / "params.yaml").multilevel.levels)
    metrics = case_metrics(project, levels, thresholds, reference_speed(before, after))
    metrics["wall_s"] = wall
    logger.info("case %s, seed %d: rel L2 %.3g, max abs %.3g, %s", case.name, seed,
                metrics["rel_l2"], metrics["max_abs"],
                ", ".join(f"{k} {_g(v)}" for k, v in metrics.items()
                          if k.endswith("_ratio") or (k.startswith("time_to") and k.endswith("_s"))))
    return metrics


def _trend_markdown(png: bytes, moved: Sequence[Mapping[str, Any]], failures: Sequence[str],
                    trend_path: Path) -> str:
    lines = ["# pinn regression suite: trend", ""]
    lines += ([f"**{len(failures)} failure(s):**", ""] + [f"- {f}" for f in failures]
              if failures else ["All compared metrics are within the baseline's rules."])
    lines += ["", "## What moved since the previous run", "",
              "| case | metric | previous | now | change % |", "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['metric']} | {_g(r['previous'])} | {_g(r['now'])} | "
              f"{'' if r['change_pct'] is None else r['change_pct']} |" for r in moved]
    lines += ["", f"![trend](data:image/png;base64,{base64.b64encode(png).decode('ascii')})", "",
              f"(`{_display(trend_path)}`)"]
    return "\n".join(lines)


@flow(name="pinn-regression",
      description="The regression suite through the pipeline, compared with a multi-seed baseline.")
def regression(
    suite_path: str = DEFAULT_SUITE,
    baseline_path: str = DEFAULT_BASELINE,
    history_path: str = DEFAULT_HISTORY,
    trend_path: str = DEFAULT_TREND,
    workdir: str | None = None,
    update_baseline: bool = False,
    seeds: list[int] | None = None,
    rerun: bool = True,
) -> dict[str, Any]:
    """Run every case of the suite and compare with the baseline (or record it).

    A check run uses each case's own seed; `update_baseline` runs the `seeds` (default: the
    suite's `baseline_seeds`, at least 3) and writes the baseline. Either way one record is
    appended to the history and the trend chart is redrawn and published. Raises
    `RegressionError` naming every failing case and metric (a case whose pipeline fails is one).
    """
    logger = get_run_logger()
    suite = load_suite(_resolve(suite_path))
    baseline_file = _resolve(baseline_path)
    history_file, trend_file = _resolve(history_path), _resolve(trend_path)
    baseline = None if update_baseline else load_baseline(baseline_file)
    run_seeds: list[int | None]
    if update_baseline:
        run_seeds = list(seeds or suite.baseline_seeds)
        if len(set(run_seeds)) < MIN_SEEDS:
            raise RegressionError(f"--update-baseline needs at least {MIN_SEEDS} seeds, got {run_seeds}")
    else:
        run_seeds = [None]  # each case's own seed
    scratch = Path(workdir).absolute() if workdir else Path(tempfile.mkdtemp(prefix="pinn-regression-"))
    results: dict[str, list[dict[str, Any]]] = {}
    errors: list[str] = []
    passed = False
    try:
        for case in suite.cases:
            for seed in run_seeds:
                seed = case_seed(case) if seed is None else seed
                try:
                    metrics = run_case(case, seed, scratch, suite.thresholds, rerun)
                except RegressionError as e:
                    if update_baseline:
                        raise
                    logger.error("%s", e)
                    errors.append(str(e))
                    continue
                results.setdefault(case.name, []).append({"seed": seed, "metrics": metrics})

        record = history_record("baseline" if update_baseline else "check", suite, results)
        if update_baseline:
            data = make_baseline(suite, {c: [r["metrics"] for r in runs] for c, runs in results.items()},
                                 run_seeds, record)
            baseline_file.parent.mkdir(parents=True, exist_ok=True)
            data = jsonable(data)
            baseline_file.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
            logger.info("baseline written: %s", baseline_file)
            record["status"] = "baseline"
            rows, failures = [], []
            baseline = data
        else:
            rows, failures = compare(suite, baseline, {c: runs[0]["metrics"] for c, runs in results.items()})
            failures = errors + failures
            record["status"] = "failed" if failures else "passed"
            record["failures"] = failures
            create_table_artifact(table=rows, key=f"{ARTIFACTS}-comparison",
                                  description=f"each case vs {_display(baseline_file)}: {RULE}")
            for row in rows:
                logger.info("%s %s: new %s, baseline %s (range %s..%s), change %s %%, limit %s: %s",
                            row["case"], row["metric"], _g(row["new"]), _g(row["baseline_mean"]),
                            _g(row["baseline_min"]), _g(row["baseline_max"]), row["change_pct"],
                            _g(row["limit"]), row["status"])
        append_history(history_file, record)
        history = read_history(history_file)
        png = write_trend(trend_file, history, baseline, suite)
        create_markdown_artifact(markdown=_trend_markdown(png, what_moved(history, suite), failures,
                                                          trend_file),
                                 key=f"{ARTIFACTS}-trend",
                                 description=f"{_display(trend_file)}; history {_display(history_file)}")
        logger.info("history: %s (%d runs); trend: %s", history_file, len(history), trend_file)
        if failures:
            raise RegressionError(f"{len(failures)} regression(s) against {_display(baseline_file)}: "
                                  + "; ".join(failures))
        passed = True
        return {"cases": results, "comparison": rows, "baseline": str(baseline_file),
                "workdir": str(scratch) if workdir else None}
    finally:
        if workdir is None:
            if passed:
                shutil.rmtree(scratch, ignore_errors=True)
            else:
                logger.error("case projects kept for inspection: %s", scratch)


def serve(cron: str, name: str = "pinn-regression-nightly",
          parameters: dict[str, Any] | None = None) -> None:
    """Serve `regression` as a deployment on a cron schedule (blocks; needs a Prefect server:
    an ephemeral one cannot schedule, so without `PREFECT_API_URL` this raises `RegressionError`
    saying what to start)."""
    refusal = require_server()
    if refusal:
        raise RegressionError(refusal.removeprefix("error: "))
    regression.serve(name=name, cron=cron, parameters=parameters or {})


def deploy(pool: str, cron: str, name: str = "pinn-regression-nightly",
           parameters: dict[str, Any] | None = None) -> None:
    """Register `regression` as a deployment of the work pool `pool` on a cron schedule, its code
    this checkout (a worker of the pool on this machine runs it: `prefect worker start --pool
    <pool>`). Needs a Prefect server (`PREFECT_API_URL`) and the pool (`prefect work-pool create
    <pool> --type process`)."""
    refusal = require_server("--deploy")
    if refusal:
        raise RegressionError(refusal.removeprefix("error: "))
    source = regression.from_source(source=str(project_root()),
                                    entrypoint="flows/regression.py:regression")
    source.deploy(name=name, work_pool_name=pool, cron=cron, parameters=parameters or {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.regression",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default=DEFAULT_SUITE, help="suite file (cases, rules)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="baseline JSON file")
    parser.add_argument("--history", default=DEFAULT_HISTORY, help="history (JSON lines) to append to")
    parser.add_argument("--trend", default=DEFAULT_TREND, help="trend chart (PNG) to write")
    parser.add_argument("--workdir", default=None, help="keep the case projects here")
    parser.add_argument("--no-rerun", dest="rerun", action="store_false",
                        help="let DVC skip unchanged stages in --workdir (timings are then old)")
    parser.add_argument("--update-baseline", action="store_true",
                        help="record the baseline from several seeds instead of comparing")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help=f"seeds for --update-baseline (at least {MIN_SEEDS}; default: the suite's)")
    parser.add_argument("--serve", action="store_true", help="serve as a cron-scheduled deployment")
    parser.add_argument("--deploy", metavar="POOL", default=None,
                        help="register a cron-scheduled deployment of work pool POOL (run by "
                             "`prefect worker start --pool POOL` on this machine)")
    parser.add_argument("--cron", default="0 3 * * *", help="cron schedule for --serve")
    parser.add_argument("--name", default="pinn-regression-nightly", help="deployment name for --serve")
    args = parser.parse_args(argv)
    parameters: dict[str, Any] = {"suite_path": args.suite, "baseline_path": args.baseline,
                                  "history_path": args.history, "trend_path": args.trend}
    if args.workdir:
        parameters["workdir"] = args.workdir
    if not args.rerun:
        parameters["rerun"] = False
    if args.serve or args.deploy:
        refusal = require_server("--serve" if args.serve else "--deploy")
        if refusal:
            print(refusal, file=sys.stderr)
            return 2
        if args.deploy:
            deploy(args.deploy, args.cron, name=args.name, parameters=parameters)
            print(f"deployment pinn-regression/{args.name} of work pool {args.deploy} on "
                  f"'{args.cron}': start a worker with `prefect worker start --pool {args.deploy}`")
        else:
            serve(args.cron, name=args.name, parameters=parameters)
        return 0
    state = regression(**parameters, update_baseline=args.update_baseline, seeds=args.seeds,
                       return_state=True)
    if not state.is_completed():
        print(f"error: {state.message}", file=sys.stderr)
        return 1
    result = state.result()
    for row in result.get("comparison", []):
        print(f"{row['case']:<14} {row['metric']:<20} {row['status']:<12} new {_g(row['new'])} "
              f"baseline {_g(row['baseline_mean'])} (range {_g(row['baseline_min'])}.."
              f"{_g(row['baseline_max'])})")
    if args.update_baseline:
        print(f"baseline written: {_resolve(args.baseline)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
