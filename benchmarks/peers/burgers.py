"""Peers side by side on this machine (issue 13): DeepXDE's standard Burgers example against our best
Burgers configuration, both scored on our certified reference.

    .venv/bin/python benchmarks/peers/burgers.py            # setup, then 2 alternating rounds
    .venv/bin/python benchmarks/peers/burgers.py --setup-only
    .venv/bin/python benchmarks/peers/burgers.py --smoke    # tiny budgets, checks the plumbing

What it does, in order:
1. Installs each peer in a virtual environment of its own under `<work>/venvs/` (pinned versions;
   nothing of the peer's is vendored or committed): DeepXDE 1.15.0 with its PyTorch backend
   (DeepXDE's JAX backend has no L-BFGS) on torch 2.13.0, the CPU build this machine kind keeps
   on disk for pip.
2. Writes our certified reference: `pinn reference burgers_1d --out <work>/burgers.npz`.
3. Picks the peer's faster torch thread count (1 or 2) on a short DeepXDE run, off the clock.
4. Runs the rounds, alternating: round 1 peer then ours, round 2 ours then peer. Ours is
   `pinn run --params benchmarks/params/burgers_1d.yaml --workdir <work>/ours-rN` (a fresh
   project, so a cold XLA compilation cache); its curve is the pipeline's own training histories
   (`pinn.curves.pipeline_curve`: levels then refinement, compilation and our own rel L2 logging
   included, process start-up between stages excluded). The peer is
   `benchmarks/peers/deepxde_burgers.py` in its venv (its rel L2 probes excluded from its clock).
   A second round is skipped when the first one used more than half of `--budget-min`.
5. Writes `benchmarks/peers/results.json` (or `<work>/results-smoke.json` with `--smoke`) and
   prints the README table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

HERE = Path(__file__).resolve().parent
PARAMS = ROOT / "benchmarks" / "params" / "burgers_1d.yaml"
PEER_SCRIPT = HERE / "deepxde_burgers.py"
RESULTS = HERE / "results.json"

#: each peer: its venv name and the pinned requirements its script installs there
PEERS = {
    "deepxde": {"venv": "deepxde-pytorch", "requirements": ["deepxde==1.15.0", "torch==2.13.0"],
                "env": {"DDE_BACKEND": "pytorch"}},
}
THRESHOLDS = (1e-2, 1e-3, 1e-4)
BUDGETS_S = (60.0, 180.0, 600.0)


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# ---------------------------------------------------------------- setup


def venv_python(work: Path, peer: str) -> Path:
    return work / "venvs" / PEERS[peer]["venv"] / "bin" / "python"


def setup_peer(work: Path, peer: str) -> dict:
    """Create the peer's venv and install its pinned requirements (skipped when already there)."""
    spec = PEERS[peer]
    venv = work / "venvs" / spec["venv"]
    marker = venv / "pinn-peer-requirements.txt"
    wanted = "\n".join(spec["requirements"]) + "\n"
    if not (marker.exists() and marker.read_text() == wanted):
        log(f"{peer}: creating {venv} and installing {' '.join(spec['requirements'])}")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        with open(work / f"pip-{spec['venv']}.log", "w") as f:
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install",
                            *spec["requirements"]], check=True, stdout=f, stderr=subprocess.STDOUT)
        marker.write_text(wanted)
    freeze = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze"], check=True,
                            capture_output=True, text=True).stdout.split()
    keep = ("deepxde", "torch", "numpy", "scipy", "scikit-learn", "scikit-optimize")
    return {"venv": str(venv.relative_to(ROOT) if venv.is_relative_to(ROOT) else venv),
            "requirements": spec["requirements"],
            "installed": sorted(p for p in freeze if p.split("==")[0].lower() in keep)}


def write_reference(work: Path) -> Path:
    out = work / "burgers.npz"
    if not out.exists():
        pinn = Path(sys.executable).parent / "pinn"
        subprocess.run([str(pinn), "reference", "burgers_1d", "--out", str(out), "--quiet"],
                       check=True, cwd=ROOT)
    return out


# ---------------------------------------------------------------- runs


def run_peer(work: Path, peer: str, reference: Path, out: Path, extra: list[str]) -> dict:
    env = {**os.environ, **PEERS[peer]["env"]}
    cmd = [str(venv_python(work, peer)), str(PEER_SCRIPT), "--reference", str(reference),
           "--out", str(out), *extra]
    t0 = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as f:
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    data = json.loads(out.read_text())
    data["process_wall_s"] = time.perf_counter() - t0
    return data


def pick_threads(work: Path, peer: str, reference: Path) -> dict:
    """The peer's faster torch thread count: a short Adam run per count (s per 100 iterations,
    between the 100th and 300th iteration, compilation-free in PyTorch)."""
    timings = {}
    for n in (1, 2):
        out = work / f"threads-{n}.json"
        d = run_peer(work, peer, reference, out, ["--adam-steps", "300", "--lbfgs-maxiter", "0",
                                                   "--threads", str(n)])
        c = {r["step"]: r["wall_s"] for r in d["curve"]}
        timings[n] = (c[300] - c[100]) / 2
    best = min(timings, key=timings.get)
    return {"threads": best, "s_per_100_adam_steps": timings, "load": load()}


def run_ours(work: Path, params: Path, name: str) -> dict:
    from pinn.config import load_params
    from pinn.curves import pipeline_curve

    project = work / name
    shutil.rmtree(project, ignore_errors=True)
    pinn = Path(sys.executable).parent / "pinn"
    t0 = time.perf_counter()
    with open(work / f"{name}.log", "w") as f:
        subprocess.run([str(pinn), "run", "--params", str(params), "--workdir", str(project)],
                       check=True, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    cfg = load_params(params)
    curve = pipeline_curve(project, list(cfg.multilevel.levels))
    metrics = json.loads((project / "metrics.json").read_text())
    return {"curve": curve, "training_wall_s": curve[-1]["wall_s"], "process_wall_s": wall,
            "final_rel_l2": metrics["rel_l2"], "steps": curve[-1]["step"],
            "adam_steps": sum(lv.steps for lv in cfg.multilevel.levels.values()),
            "qn_iterations": int(metrics.get("refine_iterations", 0))}


# ---------------------------------------------------------------- scoring


def at_budget(curve: list[dict], budget: float) -> float | None:
    """rel L2 logged last at or before `budget` s (the final value when the run ended sooner)."""
    from pinn.curves import value_at

    v = value_at(curve, budget, "wall_s")
    return None if v != v else v


def score(run: dict, peer_final: float) -> dict:
    """`peer_final`: the peer's final rel L2 in the same round (how long each side takes to the
    accuracy the peer ends at; the peer's own time is when its curve first gets there)."""
    from pinn.curves import time_to

    c = run["curve"]
    return {"time_to": {f"{t:.0e}": time_to(c, t) for t in THRESHOLDS},
            "time_to_peer_final": time_to(c, peer_final), "peer_final_rel_l2": peer_final,
            "rel_l2_at": {f"{b:.0f}": at_budget(c, b) for b in BUDGETS_S},
            "end_s": c[-1]["wall_s"], "final_rel_l2": c[-1]["rel_l2"]}


def score_rounds(rounds: list[dict]) -> None:
    for r in rounds:
        peer_final = r["peer"]["curve"][-1]["rel_l2"]
        for side in ("ours", "peer"):
            r[side]["score"] = score(r[side], peer_final)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


#: summary rows: key -> (kind, how to read it off a side's score)
METRICS = {
    **{f"time_to_{t:.0e}": ("time_to", lambda s, t=t: s["time_to"][f"{t:.0e}"]) for t in THRESHOLDS},
    "time_to_peer_final": ("time_to", lambda s: s["time_to_peer_final"]),
    **{f"rel_l2_at_{b:.0f}": ("rel_l2_at", lambda s, b=b: s["rel_l2_at"][f"{b:.0f}"]) for b in BUDGETS_S},
}


def summarize(rounds: list[dict]) -> dict:
    """Per metric: each side's value per round, its median over rounds (None when a side never
    got there in some round) and the ratio ours/peer of those medians (None when either is)."""
    out = {}
    for key, (_, get) in METRICS.items():
        ours = [get(r["ours"]["score"]) for r in rounds]
        peer = [get(r["peer"]["score"]) for r in rounds]
        mo = None if None in ours else median_or_none(ours)
        mp = None if None in peer else median_or_none(peer)
        out[key] = {"ours": ours, "peer": peer, "ours_median": mo, "peer_median": mp,
                    "ratio_ours_over_peer": ratio(mo, mp),
                    "per_round_ratio": [ratio(o, p) for o, p in zip(ours, peer)]}
    return out


def fmt(v, kind):
    if v is None:
        return "—"
    return f"{v:.0f} s" if kind == "time_to" else f"{v:.2e}"


def table(summary: dict, rounds: list[dict]) -> str:
    lines = ["| metric | ours | DeepXDE | ours / DeepXDE |", "|---|---|---|---|"]
    for key, s in summary.items():
        kind = METRICS[key][0]
        if key == "time_to_peer_final":
            finals = sorted({r["peer"]["score"]["final_rel_l2"] for r in rounds})
            label = "time to DeepXDE's final rel L2 (" + ", ".join(f"{f:.2e}" for f in finals) + ")"
        elif kind == "time_to":
            label = f"time to rel L2 ≤ {float(key.rsplit('_', 1)[1]):.0e}"
        else:
            b = float(key.rsplit("_", 1)[1])
            ended = [side for side in ("ours", "peer") if any(r[side]["score"]["end_s"] < b for r in rounds)]
            label = f"rel L2 at {b:.0f} s" + (f" (end of run: {', '.join(ended)} ended sooner)" if ended else "")
        per = lambda vals: " / ".join(fmt(v, kind) for v in vals)
        r = s["ratio_ours_over_peer"]
        lines.append(f"| {label} | {per(s['ours'])} | {per(s['peer'])} | "
                     f"{'—' if r is None else f'{r:.3g}'} |")
    return "\n".join(lines)


def rescore(path: Path) -> dict:
    """Recompute the scores and the summary of a results file from its stored curves."""
    result = json.loads(path.read_text())
    rounds = [{side: {**r[side], "curve": [{"wall_s": w, "step": s, "rel_l2": e} for w, s, e in r[side]["curve"]]}
               for side in ("ours", "peer")} for r in result["rounds"]]
    score_rounds(rounds)
    for stored, r in zip(result["rounds"], rounds):
        for side in ("ours", "peer"):
            stored[side]["score"] = r[side]["score"]
    result["summary"] = summarize(rounds)
    print(table(result["summary"], rounds))
    return result


# ---------------------------------------------------------------- main


def smoke_params(work: Path) -> Path:
    import yaml

    cfg = yaml.safe_load(PARAMS.read_text())
    cfg["multilevel"]["levels"]["level0"]["steps"] = 200
    cfg["train"]["log_every"] = 100
    cfg["train"]["checkpoint_every"] = 100
    cfg["refine"]["iterations"] = 500
    path = work / "smoke_params.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "peers",
                    help="venvs, reference, run projects and logs (git-ignored by default)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--budget-min", type=float, default=30.0,
                    help="skip the second round when the first one took more than half of this")
    ap.add_argument("--setup-only", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets; results to <work>/results-smoke.json")
    ap.add_argument("--rescore", type=Path, default=None, metavar="RESULTS_JSON",
                    help="recompute the scores and table of a results file from its curves; runs nothing")
    args = ap.parse_args(argv)

    if args.rescore is not None:
        from pinn.io import write_json

        write_json(args.rescore, rescore(args.rescore))
        return 0

    from benchmarks.common import hardware_info, versions

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    meta = {"date": started.date().isoformat(), "started_utc": started.isoformat(timespec="seconds"),
            "hardware": hardware_info(), "ours_versions": versions(), "load_at_start": load()}
    log(f"load average {meta['load_at_start']}")
    peer_env = setup_peer(work, "deepxde")
    reference = write_reference(work)
    log(f"reference {reference}; peer venv {peer_env['venv']}: {', '.join(peer_env['installed'])}")
    if args.setup_only:
        return 0

    params = smoke_params(work) if args.smoke else PARAMS
    peer_extra = ["--adam-steps", "300", "--lbfgs-maxiter", "200"] if args.smoke else []
    threads = pick_threads(work, "deepxde", reference)
    log(f"peer torch threads: {threads}")
    peer_extra += ["--threads", str(threads["threads"])]

    t_start = time.perf_counter()
    rounds = []
    for i in range(args.rounds):
        if i == 1 and (time.perf_counter() - t_start) > args.budget_min * 60 / 2:
            log(f"round 1 took {(time.perf_counter() - t_start) / 60:.1f} min: no second round "
                f"within --budget-min {args.budget_min:g}")
            break
        order = ["peer", "ours"] if i % 2 == 0 else ["ours", "peer"]
        rnd = {"round": i + 1, "order": order}
        for side in order:
            before = load()
            log(f"round {i + 1}: {side} (load {before})")
            if side == "ours":
                run = run_ours(work, params, f"ours-r{i + 1}")
            else:
                run = run_peer(work, "deepxde", reference, work / f"peer-r{i + 1}.json", peer_extra)
            run["load_before"], run["load_after"] = before, load()
            log(f"round {i + 1}: {side}: {run['steps']} steps, {run['training_wall_s']:.1f} s on the "
                f"clock, final rel L2 {run['final_rel_l2']:.3e}")
            rnd[side] = run
        rounds.append(rnd)
    score_rounds(rounds)
    summary = summarize(rounds)
    peer0 = rounds[0]["peer"]
    result = {
        **meta,
        "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "comparison_wall_min": round((time.perf_counter() - t_start) / 60, 1),
        "load_at_end": load(),
        "rounds_run": len(rounds), "rounds_asked": args.rounds, "seed": 0,
        "smoke": args.smoke,
        "ours": {"params": str(PARAMS.relative_to(ROOT)) if not args.smoke else str(params),
                 "command": "pinn run --params benchmarks/params/burgers_1d.yaml --workdir <dir>",
                 "clock": "training histories (levels then refinement; compilation and our own "
                          "rel L2 logging included; process start-up between stages excluded)"},
        "peer": {"name": "DeepXDE", "backend": peer0["backend"], "versions": peer0["versions"],
                 "environment": peer_env, "config": peer0["config"], "threads": threads,
                 "why_not_jax_backend": "DeepXDE 1.15.0's JAX backend has no L-BFGS "
                                        "(optimizers/jax: is_external_optimizer() is False, "
                                        "'L-BFGS' raises NotImplementedError)",
                 "clock": "from the first model.compile to the last iteration; its rel L2 probes "
                          "excluded"},
        "reference": {"command": "pinn reference burgers_1d --out burgers.npz",
                      "grid": "201 t x 512 x on [0, 1] x [-1, 1]"},
        "thresholds": list(THRESHOLDS), "budgets_s": list(BUDGETS_S),
        "summary": summary,
        "rounds": [{"round": r["round"], "order": r["order"],
                    **{side: {k: v for k, v in r[side].items()
                              if k in ("training_wall_s", "process_wall_s", "final_rel_l2", "steps",
                                       "adam_steps", "qn_iterations", "adam_wall_s", "excluded_probe_s",
                                       "lbfgs", "setup_s", "load_before", "load_after", "score",
                                       "torch_threads")}
                       | {"curve": [[round(c["wall_s"], 2), c["step"], c["rel_l2"]] for c in r[side]["curve"]]}
                       for side in ("ours", "peer")}}
                   for r in rounds],
    }
    out = work / "results-smoke.json" if args.smoke else RESULTS
    from pinn.io import write_json

    write_json(out, result)
    print(table(summary, rounds))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
