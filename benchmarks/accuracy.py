"""Accuracy at the frontier (issue 13): committed params files through the pipeline, over seeds.

For each params file (`benchmarks/params/<name>.yaml`) and each seed, a copy of the file with only
`seed` changed is run exactly as `pinn run --params` runs it: `dvc repro --force` in a project of
its own (`pinn.pipeline.make_project`), compilation included. From each run it records

- the final rel L2 (`metrics.json`, the last iterate: nothing is selected by the error against
  the reference) and the whole curve (rel L2 against training wall-clock and steps, joined from
  the stages' histories by `pinn.curves.pipeline_curve`);
- the training wall time at which rel L2 first reaches 1e-3, 1e-4, 1e-5, 1e-6, 1e-7;
- the wall time of the whole `dvc repro` and the CPU time of its processes (user + system, all
  children: less sensitive to other load on the machine than the wall time), and the load
  average before and after.

Per params file: the median over seeds of the final rel L2 and of each time to a threshold (a
seed that never reached a threshold counts as infinitely slow), the issue's target and wall
budget and whether the median met them. Results merge into
`benchmarks/results/accuracy_<hardware>.json` (one entry per params file, replaced whole), and
`benchmarks/results/accuracy_curves_<hardware>.png` draws every stored curve (a panel per params
file, a line per seed, the target as a dashed line).

The examples of issue 12's external benchmark table (`examples/*/params*.yaml`, the user's own
problem files) run the same way and store into `benchmarks/results/external_<hardware>.json`
(`external_curves_<hardware>.png`), keyed by their path: `--examples` runs every one of them.
Their records add each rel L2 / max abs / recovered coefficient of `metrics.json` (per output
field, per time-marching window) and the mean and sample standard deviation over seeds; with
time-marching windows the curve and times to thresholds are window 0's (its levels and
refinement), the final rel L2 and the wall times the whole run's.

    python benchmarks/accuracy.py                                  # every file, seeds 0 1 2
    python benchmarks/accuracy.py --params burgers_1d --seeds 0    # one file, one seed
    python benchmarks/accuracy.py --examples                       # issue 12's table, seeds 0 1 2
    python benchmarks/accuracy.py --plot-only                      # redraw from the JSONs
    python benchmarks/accuracy.py --table      # benchmarks/README.md's external table from the JSON
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fcntl
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, hardware_info, hardware_name, versions  # noqa: E402

PARAMS = Path(__file__).resolve().parent / "params"
THRESHOLDS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
#: issue 13: rel L2 target (median of 3 seeds) and wall budget (s) of each problem ...
TARGETS = {"burgers_1d": (1e-7, 900.0), "allen_cahn_1d": (2e-6, 900.0),
           "allen_cahn_2d": (1e-6, 900.0)}
#: ... and of the default params.yaml (what `pinn run` does for a new user: Allen–Cahn 1D)
DEFAULT_RUN_TARGET = (1e-5, 600.0)
DEFAULT_FILES = ("burgers_1d", "allen_cahn_1d", "allen_cahn_2d")
ROOT = PARAMS.parent.parent
#: issue 12's external benchmark table: every example's params file (`examples/*/params*.yaml`)
EXAMPLES = tuple(str(f.relative_to(ROOT)) for f in sorted(ROOT.glob("examples/*/params*.yaml")))
#: the metrics.json entries a record keeps (per field, per window, recovered coefficients)
METRIC_PREFIXES = ("rel_l2", "max_abs", "coef_")


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_one(params_file: Path, seed: int, workdir: Path) -> dict:
    """One seed of one params file through the pipeline; the record described in the module
    docstring. Raises SystemExit naming the file and seed when the pipeline fails."""
    from pinn import pipeline
    from pinn.config import load_params
    from pinn.curves import pipeline_curve

    raw = yaml.safe_load(params_file.read_text())
    raw["seed"] = seed
    name = key_of(params_file).removeprefix("examples/").replace("/", "-")
    project = workdir / f"{name}-seed{seed}"
    project.mkdir(parents=True, exist_ok=True)
    seeded = project.parent / f"{project.name}.yaml"
    seeded.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_params(seeded)
    pipeline.make_project(project, seeded)
    load0, cpu0, t0 = os.getloadavg()[0], _children_cpu_s(), time.perf_counter()
    if pipeline.repro(project, force=True) != 0:
        raise SystemExit(f"{params_file}: seed {seed}: the pipeline failed (see above)")
    wall, cpu = time.perf_counter() - t0, _children_cpu_s() - cpu0
    metrics = json.loads((project / "metrics.json").read_text())
    curve = pipeline_curve(project, list(cfg.multilevel.levels))
    return {
        "metrics": {k: v for k, v in metrics.items()
                    if k.startswith(METRIC_PREFIXES) and isinstance(v, (int, float))},
        "curve_scope": "window0" if cfg.windows.count > 1 else "run",
        "seed": seed,
        "final_rel_l2": metrics["rel_l2"], "max_abs": metrics["max_abs"],
        "lowest_logged_rel_l2": min(r["rel_l2"] for r in curve),
        "time_to_s": {f"{t:.0e}": _first_time(curve, t) for t in THRESHOLDS},
        "adam_steps": sum(lv.steps for lv in cfg.multilevel.levels.values()),
        "qn_iterations": int(metrics.get("refine_iterations", 0)),
        "training_wall_s": round(curve[-1]["wall_s"], 1),
        "dvc_repro_wall_s": round(wall, 1), "dvc_repro_cpu_s": round(cpu, 1),
        "load_average_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "date": _dt.date.today().isoformat(),
        "curve": [(round(r["wall_s"], 2), r["step"], r["rel_l2"]) for r in curve],
    }


def _first_time(curve: list[dict], threshold: float) -> float | None:
    from pinn.curves import time_to

    hit = time_to(curve, threshold)
    return None if hit is None else round(hit, 1)


def summarise(problem: str, runs: list[dict], *, default_run: bool = False) -> dict:
    """Median over the seeds' runs (a threshold never reached counts as infinitely slow: the
    median is None when at least half the seeds missed it) and the target verdict."""
    def median_time(key: str) -> float | None:
        values = sorted(math.inf if r["time_to_s"][key] is None else r["time_to_s"][key]
                        for r in runs)
        m = statistics.median(values)
        return None if math.isinf(m) else round(m, 1)

    finals = [r["final_rel_l2"] for r in runs]
    out = {"seeds": [r["seed"] for r in runs],
           "median_final_rel_l2": statistics.median(finals),
           "mean_final_rel_l2": statistics.fmean(finals),
           "std_final_rel_l2": statistics.stdev(finals) if len(finals) > 1 else None,
           "min_final_rel_l2": min(finals), "max_final_rel_l2": max(finals),
           "median_time_to_s": {f"{t:.0e}": median_time(f"{t:.0e}") for t in THRESHOLDS},
           "median_dvc_repro_wall_s": round(statistics.median(r["dvc_repro_wall_s"] for r in runs), 1)}
    if default_run or problem in TARGETS:
        target, budget = DEFAULT_RUN_TARGET if default_run else TARGETS[problem]
        out["target_rel_l2"], out["wall_budget_s"] = target, budget
        out["target_met"] = out["median_final_rel_l2"] <= target
        out["wall_budget_met"] = out["median_dvc_repro_wall_s"] <= budget
    return out


def results_path(kind: str = "accuracy") -> Path:
    """The results JSON: `kind` "accuracy" (issue 13's files) or "external" (the examples)."""
    return RESULTS / f"{kind}_{hardware_name()}.json"


def kind_of(params_file: Path) -> str:
    """"external" for a params file under `examples/`, else "accuracy"."""
    return "external" if params_file.absolute().is_relative_to(ROOT / "examples") else "accuracy"


def key_of(params_file: Path) -> str:
    """The results entry of a params file: its name for issue 13's files and the default
    params.yaml (`burgers_1d`, `params`), its path without `.yaml` for an example
    (`examples/convection/params_beta40`: example files share names)."""
    if kind_of(params_file) == "accuracy":
        return params_file.stem
    return _shown(params_file.absolute()).removesuffix(".yaml")


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def store(params_file: Path, run: dict) -> dict:
    """Merge one seed's run into the results JSON (replacing that seed's earlier run of the same
    params file, keeping the other seeds) and recompute the file's summary; atomic, and under
    a lock on `<results>.lock`, so benchmark processes running at once do not lose each other's
    runs."""
    path = results_path(kind_of(params_file))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _merge(path, params_file, run)


def _merge(path: Path, params_file: Path, run: dict) -> dict:
    from pinn.io import write_json

    data = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    section = yaml.safe_load(params_file.read_text())["problem"]
    problem = section.get("name") or section.get("target")
    key = key_of(params_file)
    old = data["runs"].get(key, {}).get("seeds", [])
    runs = sorted([r for r in old if r["seed"] != run["seed"]] + [run], key=lambda r: r["seed"])
    default_run = params_file == ROOT / "params.yaml"
    data["runs"][key] = {
        "params": _shown(params_file), "problem": problem, "default_run": default_run, "summary": summarise(problem, runs, default_run=default_run),
        "seeds": runs}
    data["hardware"], data["versions"] = hardware_info(), versions()
    write_json(path, data)
    return data


#: the block of benchmarks/README.md that `--table` rewrites from the external results
TABLE_BEGIN, TABLE_END = "<!-- external-table:begin -->", "<!-- external-table:end -->"
README = Path(__file__).resolve().parent / "README.md"


def _e(value: float | None) -> str:
    return "—" if value is None else f"{value:.2e}"


def _minutes(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) / 60:.1f}"


def _per_part(seeds: list[dict]) -> str:
    """Medians over seeds of the per-field, per-window rel L2 and the coefficients' errors."""
    common = [k for k in seeds[0].get("metrics", {}) if all(k in r.get("metrics", {}) for r in seeds)]
    keys = ([k for k in common if k.startswith("rel_l2_")]
            + [k for k in common if k.startswith("coef_") and k.endswith("_rel_error")])
    parts = []
    for k in keys:
        name = (k.removeprefix("rel_l2_") if k.startswith("rel_l2_")
                else k.removeprefix("coef_").removesuffix("_rel_error") + " rel. error")
        parts.append(f"{name} {_e(statistics.median(r['metrics'][k] for r in seeds))}")
    return ", ".join(parts) or "—"


def table(data: dict) -> list[str]:
    """Markdown lines of the external benchmark table from the results (`external_*.json`): per
    params file the seeds, the mean ± sample standard deviation and the range of the final rel L2,
    the medians per field / window / recovered coefficient, and the median wall and CPU time of
    the whole `dvc repro`."""
    hw = data.get("hardware", {})
    dates = sorted({r["date"] for e in data["runs"].values() for r in e["seeds"] if "date" in r})
    lines = [f"*Generated by `accuracy.py --table` from `results/external_{hw.get('name', '?')}.json` "
             f"({hw.get('processor', '?')}, {hw.get('cpu_count', '?')} cores; "
             f"{' to '.join(dict.fromkeys([dates[0], dates[-1]])) if dates else 'no date'}); "
             "std: the sample standard deviation (n − 1) over the seeds.*", "",
             "| params file | seeds | rel L2 mean ± std | min – max | per field / window / "
             "coefficient (median) | `dvc repro` wall, minutes: median | CPU time, minutes: median |",
             "|---|---|---|---|---|---|---|"]
    for key, entry in data["runs"].items():
        seeds, s = entry["seeds"], entry["summary"]
        std = s.get("std_final_rel_l2")
        lines.append(
            f"| `{entry['params']}` | {', '.join(str(x) for x in s['seeds'])} | "
            f"{_e(s.get('mean_final_rel_l2'))}{'' if std is None else ' ± ' + _e(std)} | "
            f"{_e(s['min_final_rel_l2'])} – {_e(s['max_final_rel_l2'])} | {_per_part(seeds)} | "
            f"{_minutes([r['dvc_repro_wall_s'] for r in seeds])} | "
            f"{_minutes([r['dvc_repro_cpu_s'] for r in seeds])} |")
    return lines


def write_table(data: dict, readme: Path = README) -> None:
    """Replace the lines between TABLE_BEGIN and TABLE_END of `readme` with `table(data)`."""
    text = readme.read_text()
    head, begin, rest = text.partition(TABLE_BEGIN)
    _, end, tail = rest.partition(TABLE_END)
    if not begin or not end:
        raise SystemExit(f"{readme}: no {TABLE_BEGIN} ... {TABLE_END} block to fill")
    readme.write_text(head + begin + "\n" + "\n".join(table(data)) + "\n" + end + tail)


def plot(data: dict, path: Path) -> None:
    """A panel per params file: rel L2 against training wall-clock, a line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(data["runs"])
    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        entry = data["runs"][name]
        for run in entry["seeds"]:
            wall = [c[0] for c in run["curve"]]
            ax.semilogy(wall, [c[2] for c in run["curve"]], lw=1.2,
                        label=f"seed {run['seed']}: {run['final_rel_l2']:.2e}")
        target = entry["summary"].get("target_rel_l2")
        if target:
            ax.axhline(target, ls="--", color="k", lw=0.8, label=f"target {target:.0e}")
            ax.axvline(entry["summary"]["wall_budget_s"], ls=":", color="k", lw=0.8)
        scope = " (window 0)" if entry["seeds"][0].get("curve_scope") == "window0" else ""
        ax.set_title(f"{name.removeprefix('examples/')}{scope}\n"
                     f"median final {entry['summary']['median_final_rel_l2']:.2e}", fontsize=9)
        ax.set_xlabel("training wall-clock (s)")
        ax.set_ylabel("rel L2")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", nargs="+", default=list(DEFAULT_FILES),
                    help="params file names under benchmarks/params/ (without .yaml), or paths "
                         "of params files (ending in .yaml), e.g. params.yaml: the default run")
    ap.add_argument("--examples", action="store_true",
                    help="every example of issue 12's table (EXAMPLES) instead of --params")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                    help="seeds to run, each a copy of the params file with only `seed` changed")
    ap.add_argument("--workdir", type=Path, default=Path("runs") / "accuracy",
                    help="where the pipeline projects are made (kept for inspection)")
    ap.add_argument("--plot-only", action="store_true",
                    help="only redraw the curves from the stored results")
    ap.add_argument("--table", action="store_true",
                    help="only rewrite benchmarks/README.md's external table from the JSON")
    args = ap.parse_args(argv)
    names = [str(ROOT / e) for e in EXAMPLES] if args.examples else args.params
    files = [Path(name).absolute() if name.endswith(".yaml") else PARAMS / f"{name}.yaml"
             for name in names]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise SystemExit(f"--params: no such file: {', '.join(missing)}")

    def png(kind: str) -> Path:
        return RESULTS / f"{kind}_curves_{hardware_name()}.png"

    if args.table:
        source = results_path("external")
        if not source.exists():
            raise SystemExit(f"--table: no external results for this hardware ({_shown(source)}); "
                             "run --examples first")
        write_table(json.loads(source.read_text()))
        print(f"{_shown(README)}: external table rewritten from {_shown(source)}")
    elif not args.plot_only:
        for params_file in files:  # stored after each seed: a cut-off run keeps what it did
            for seed in args.seeds:
                run = run_one(params_file, seed, args.workdir.absolute())
                print(f"{key_of(params_file)} seed {seed}: rel L2 {run['final_rel_l2']:.3e}, "
                      f"dvc repro {run['dvc_repro_wall_s']:.0f} s", flush=True)
                plot(store(params_file, run), png(kind_of(params_file)))
    else:
        for kind in ("accuracy", "external"):
            if results_path(kind).exists():
                plot(json.loads(results_path(kind).read_text()), png(kind))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
