"""Does each technique help? A compute-normalised comparison on burgers_1d and allen_cahn_1d.

Every variant starts from the same base configuration (uniform sampling, Adam, fixed weights, one
level) and switches on one technique — or all of them (`full`). Each is run twice:

- `equal_steps`: the same number of optimisation steps (Adam steps + quasi-Newton iterations);
- `equal_wall`: the same wall-clock budget (each phase stops when the budget is spent).

Writes `benchmarks/results/<hardware>.json` key `comparison`: rows
`{"problem", "variant", "rel_l2", "steps", "wall_s", "budget"}` (+ details), and prints a table.

    python benchmarks/compare.py [--problems burgers_1d allen_cahn_1d] [--steps 2000] [--wall 60]
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import merge_results  # noqa: E402
from pinn.config import validate_params  # noqa: E402
from pinn.experiment import run  # noqa: E402
from pinn.problems import make_problem  # noqa: E402

BASE = {
    "seed": 0,
    "model": {"width": 32, "depth": 3},
    "collocation": {"num_points": 2048},
    "sampling": {"method": "uniform", "batch_size": 1024, "ic_batch_size": 256, "bc_batch_size": 128,
                 "rad": {"pool_size": 8192, "resample_every": 100},
                 "rar_d": {"capacity": 2048, "pool_size": 4096, "every": 100, "num_new_points": 32},
                 "hard_bank": {"pool_size": 4096, "bank_size": 512, "top_k": 128,
                               "refresh_every": 100, "p_ramp_steps": 500}},
    "balancing": {"method": "fixed"},
    "optimizer": {"learning_rate": 0.002, "decay_steps": 1000, "decay_rate": 0.9},
    "refine": {"method": "none", "block_size": 100},
    "train": {"log_every": 250},
}

#: technique switched on by each variant (dotted overrides of BASE)
VARIANTS: dict[str, dict] = {
    "baseline": {},
    "multilevel": {"multilevel": "cascade"},
    "gradnorm": {"balancing.method": "gradnorm"},
    "rad": {"sampling.method": "rad"},
    "rar_d": {"sampling.method": "rar_d"},
    "hard_bank": {"sampling.method": "hard_bank"},
    "lbfgs": {"refine.method": "lbfgs"},
    "ssbroyden": {"refine.method": "ssbroyden", "refine.resample_every_blocks": 1},
    "full": {"multilevel": "cascade", "balancing.method": "gradnorm", "sampling.method": "rad",
             "refine.method": "ssbroyden", "refine.resample_every_blocks": 1},
}


def _set(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        tree = tree.setdefault(p, {})
    tree[parts[-1]] = value


def config(problem: str, variant: str, *, adam_steps: int, qn_iterations: int):
    """The validated Params of `variant` with `adam_steps` Adam steps (split over cascade levels)
    and `qn_iterations` quasi-Newton iterations (only for variants with a refinement)."""
    data = copy.deepcopy(BASE)
    data["problem"] = {"name": problem}
    over = dict(VARIANTS[variant])
    cascade = over.pop("multilevel", None) == "cascade"
    for k, v in over.items():
        _set(data, k, v)
    if cascade:
        half = adam_steps // 2
        data["multilevel"] = {"num_levels": 2, "coarsening_factor": 0.5, "levels": {
            "level0": {"steps": half, "init_from": "init"},
            "level1": {"steps": adam_steps - half, "init_from": "level0"}}}
    else:
        data["multilevel"] = {"num_levels": 1, "levels": {"level0": {"steps": adam_steps, "init_from": "init"}}}
    data["refine"]["iterations"] = qn_iterations
    return validate_params(data, source=f"{problem}/{variant}")


def has_refine(variant: str) -> bool:
    return "refine.method" in VARIANTS[variant]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", nargs="+", default=["burgers_1d", "allen_cahn_1d"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=2000, help="total steps for the equal-steps budget")
    ap.add_argument("--wall", type=float, default=60.0, help="seconds for the equal-wall budget")
    ap.add_argument("--qn-share", type=float, default=0.5, help="share of steps given to quasi-Newton")
    args = ap.parse_args(argv)

    rows = []
    for problem in args.problems:
        reference = make_problem(problem).reference(progress=False)
        for variant in args.variants:
            qn = int(args.steps * args.qn_share) if has_refine(variant) else 0
            budgets = {
                "equal_steps": (config(problem, variant, adam_steps=args.steps - qn, qn_iterations=qn), None),
                # equal wall: Adam runs its steps (or until the budget), refinement gets the rest
                "equal_wall": (config(problem, variant,
                                      adam_steps=(args.steps - qn) if has_refine(variant) else 10**6,
                                      qn_iterations=10**6 if has_refine(variant) else 0), args.wall),
            }
            for budget, (cfg, wall) in budgets.items():
                t0 = time.perf_counter()
                res = run(cfg, reference, wall_budget_s=wall)
                row = {
                    "problem": problem, "variant": variant, "budget": budget,
                    "rel_l2": res.rel_l2 if math.isfinite(res.rel_l2) else None,
                    "steps": res.steps + res.refine_iterations, "adam_steps": res.steps,
                    "qn_iterations": res.refine_iterations, "wall_s": round(res.wall_s, 2),
                    "diverged": res.diverged,
                }
                rows.append(row)
                print(f"{problem:14s} {variant:11s} {budget:12s} rel_l2={row['rel_l2']!s:>12} "
                      f"steps={row['steps']:6d} wall={row['wall_s']:7.1f}s "
                      f"(total {time.perf_counter() - t0:.0f}s)", flush=True)
                merge_results("comparison", rows)
    _print_table(rows)
    return 0


def _print_table(rows) -> None:
    print("\n| problem | variant | budget | rel L2 | steps | wall s |\n|---|---|---|---|---|---|")
    for r in rows:
        rel = f"{r['rel_l2']:.2e}" if r["rel_l2"] is not None else "diverged"
        print(f"| {r['problem']} | {r['variant']} | {r['budget']} | {rel} | {r['steps']} | {r['wall_s']} |")


if __name__ == "__main__":
    raise SystemExit(main())
