"""Soak test of resumption (issue 15): kill the training and refinement stages at random moments,
many times in a row, and require the final results to equal an uninterrupted run's bit for bit.

On tiny params (`benchmarks/regression/params.yaml` with longer levels, a checkpoint every log
interval and small refinement blocks, so that checkpoints happen often) it

1. builds a project with `pinn.pipeline.make_project` and runs the whole pipeline once with
   `dvc repro`, uninterrupted: the reference result (and each stage's timing, which sizes the
   random waits below);
2. in a second project runs `dvc repro` (its own session, so its process group is DVC plus the
   stage it is running) and SIGKILLs the whole process group while `train@level0`,
   `train@level1` or `refine` is running, at a random moment (seeded RNG), then reruns
   `dvc repro`; `--kills` kills in a row (default 20), spread over the three stages (a stage that
   finishes before its share of kills is used passes the rest on to the next one). Each kill picks
   one of three moments:
   - `time`: 0.5 s to about the stage's start-up time after its process appears (imports,
     compilation, restoring, or the first intervals);
   - `checkpoint`: 0–1 s after the 1st or 2nd new committed checkpoint under `data/resume/`
     (during training or an asynchronous checkpoint save);
   - `final`: 0–1 s after the stage's last checkpoint (step = all steps) is committed: while it
     writes its outputs and removes its in-progress directory;
3. lets the pipeline finish, and compares with the reference: `metrics.json`, the levels'
   `metrics.json` and `history.csv` and the refinement's `history.csv` (timing columns `wall_s`,
   `steps_per_s` left out), `data/export/*.npz`, `data/refined.npz`, the levels' `samples.npz` and
   `data/evaluate/errors.npz` (every array: dtype, shape and bytes). It also checks that nothing
   in-progress is left (`data/resume/`, orbax temporaries, checkpoints set aside) and that
   `dvc status` is clean (but for the gate stage, which always runs).

Counts kills per stage, per moment and per phase of the killed run (`start-up`: imports,
compilation, restoring; `training`; `outputs`: after its last checkpoint), runs of each stage and how each started: resumed from the newest
committed checkpoint ("resuming from checkpoint at ..." in its output), fresh (nothing to resume),
killed before it got to resuming, or the faults: resumed from an older checkpoint than the newest
committed one, started over although one was there. Writes
`benchmarks/results/soak_<platform>.json` (hardware, versions, date, wall time). Exit status 0 when
the soak completed and every output is equal, 1 otherwise.

    .venv/bin/python benchmarks/soak.py [--kills 20] [--seed 0] [--workdir runs/soak]

About 15 minutes on a loaded 2-core CPU. The projects are kept under `--workdir` (`reference/`,
`killed/`, with one log per `dvc repro`: `killed/repro-NN.log`) for inspection.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import yaml  # noqa: E402

from benchmarks.common import RESULTS, hardware_info, versions  # noqa: E402
from pinn import pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASE_PARAMS = ROOT / "benchmarks/regression/params.yaml"
TARGETS = ("train@level0", "train@level1", "refine")
RESUME_DIRS = {"train@level0": "data/resume/train-level0", "train@level1": "data/resume/train-level1",
               "refine": "data/resume/refine"}
RESUMED = {"train@level0": r"train level0: resuming from checkpoint at step (\d+)",
           "train@level1": r"train level1: resuming from checkpoint at step (\d+)",
           "refine": r"refine: resuming from checkpoint at iteration (\d+)"}
TIMING = {"wall_s", "steps_per_s"}  # the only columns allowed to differ between equal runs
#: lines of a stage's output worth reporting (checkpoints found damaged, set aside, tracebacks)
#: (DVC's own notes on the lock entries of the repro killed before are counted, not listed)
NOTABLE = re.compile(r"Traceback|[A-Z]\w*Error\b|ERROR|WARNING|damaged|removed|corrupt|unreadable"
                     r"|does not fit|left alone|starting over|[Nn]on-finite")
STALE_LOCK = "RWLock-file"
POLL_S = 0.02


def soak_params(steps: int, refine_iterations: int, block: int) -> dict:
    """The regression params with longer levels, a checkpoint every log interval, small blocks."""
    p = copy.deepcopy(yaml.safe_load(BASE_PARAMS.read_text()))
    for level in p["multilevel"]["levels"].values():
        level["steps"] = steps
    p["train"]["checkpoint_every"] = p["train"]["log_every"]
    p["refine"].update(iterations=refine_iterations, block_size=block)
    p["report"]["title"] = "Soak benchmark"
    return p


def totals(params: dict) -> dict[str, int]:
    """The step (iteration) of each target stage's last checkpoint."""
    levels = params["multilevel"]["levels"]
    return {"train@level0": levels["level0"]["steps"], "train@level1": levels["level1"]["steps"],
            "refine": params["refine"]["iterations"]}


# ----------------------------------------------------------------------------------------------
# watching a `dvc repro`


def stage_of(cmdline: list[str]) -> str | None:
    """`python -m pinn.stages.train ... --level level0` → "train@level0"; other stages by module
    name; None for anything else (DVC itself, the shell)."""
    if len(cmdline) < 3 or cmdline[1] != "-m" or not cmdline[2].startswith("pinn.stages."):
        return None
    module = cmdline[2].rsplit(".", 1)[1]
    if module == "train" and "--level" in cmdline:
        return f"train@{cmdline[cmdline.index('--level') + 1]}"
    return module


def stage_processes(pid: int) -> dict[str, psutil.Process]:
    """The live stage processes under `pid`, by stage name."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    found = {}
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            name = stage_of(child.cmdline())
        except psutil.Error:
            continue
        if name is not None:
            found[name] = child
    return found


def committed(root: Path, stage: str) -> list[int]:
    """Committed in-progress checkpoint steps of `stage` (orbax renames a step directory into place
    when it is complete)."""
    steps = []
    for meta in (root / RESUME_DIRS[stage]).glob("*/ckpt/*/_CHECKPOINT_METADATA"):
        if meta.parent.name.isdigit():
            steps.append(int(meta.parent.name))
    return sorted(steps)


def start_repro(root: Path, env: dict, log: Path) -> subprocess.Popen:
    """`dvc repro` in `root` in a new session (its process group: DVC and the stage it runs)."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=root, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group and reap DVC; wait until no member is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == proc.pid]
        if not alive:
            return
        time.sleep(0.05)
    raise RuntimeError(f"process group {proc.pid} survived SIGKILL")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def reference_run(root: Path, env: dict, timeout: float) -> tuple[int, float, dict]:
    """Uninterrupted `dvc repro`; returns (status, seconds, per target stage: seconds from its
    process's appearance to its first committed checkpoint and to its end)."""
    log = root / "repro.log"
    t0 = time.monotonic()
    proc = start_repro(root, env, log)
    seen: dict[str, dict] = {}
    while proc.poll() is None:
        now = time.monotonic()
        if now - t0 > timeout:
            kill_group(proc)
            raise RuntimeError(f"reference run exceeded {timeout} s; see {log}")
        running = stage_processes(proc.pid)
        for name in TARGETS:
            info = seen.get(name)
            if name in running and info is None:
                seen[name] = info = {"appeared": now}
            if info is None:
                continue
            if "first_checkpoint" not in info and committed(root, name):
                info["first_checkpoint"] = now
            if name not in running and "ended" not in info:
                info["ended"] = now
        time.sleep(POLL_S)
    elapsed = time.monotonic() - t0
    end = time.monotonic()
    timing = {
        name: {"startup_s": round(i.get("first_checkpoint", end) - i["appeared"], 2),
               "lifetime_s": round(i.get("ended", end) - i["appeared"], 2)}
        for name, i in seen.items()
    }
    return proc.returncode, elapsed, timing


# ----------------------------------------------------------------------------------------------
# the soak


class Soak:
    """Repeated `dvc repro` in `root`, killed `kills` times; see the module doc."""

    def __init__(self, root: Path, env: dict, rng: np.random.Generator, kills: int,
                 timing: dict, last_step: dict[str, int], timeout: float):
        self.root, self.env, self.rng, self.timeout = root, env, rng, timeout
        self.wanted = kills
        # each stage's share; a stage that finishes early passes the rest of its share on
        share = [kills // len(TARGETS) + (i < kills % len(TARGETS)) for i in range(len(TARGETS))]
        self.cumulative = dict(zip(TARGETS, np.cumsum(share).tolist()))
        self.startup = {s: timing.get(s, {}).get("startup_s", 5.0) for s in TARGETS}
        self.last_step = last_step
        self.kills: list[dict] = []
        self.runs: list[dict] = []  # one per `dvc repro`

    def allowed(self, stage: str) -> bool:
        before = TARGETS[: TARGETS.index(stage) + 1]
        done = sum(1 for k in self.kills if k["stage"] in before)
        limit = self.wanted if stage == TARGETS[-1] else self.cumulative[stage]
        return done < min(limit, self.wanted) and len(self.kills) < self.wanted

    def plan(self, stage: str, run: dict) -> dict:
        """When to kill the run of `stage` that just appeared (see the module doc)."""
        latest = run["available"]
        modes, p = ["time"], None
        if latest < self.last_step[stage]:
            modes, p = ["time", "checkpoint", "final"], [0.3, 0.5, 0.2]
        mode = str(self.rng.choice(modes, p=p))
        plan = {"stage": stage, "mode": mode, "at": None}
        if mode == "time":
            # up to about the start-up time (the shortest seen so far): the process is then still
            # running even when it resumes at its very end and only has its outputs to write
            plan["delay_s"] = float(self.rng.uniform(0.5, max(1.0, 0.9 * self.startup[stage])))
            plan["at"] = run["appeared"] + plan["delay_s"]
        else:
            plan["after_checkpoints"] = int(self.rng.integers(1, 3)) if mode == "checkpoint" else None
            plan["delay_s"] = float(self.rng.uniform(0.0, 1.0))
        return plan

    def watch(self, stage: str, run: dict, output: str, now: float) -> None:
        """Note the run's first sign of progress (its resume note or a new checkpoint): the end
        of its start-up."""
        run["new"] = sorted(set(committed(self.root, stage)) - run["known"])
        if run["new"] and run["new"][-1] >= self.last_step[stage]:
            run["reached_last"] = True  # (its removal at the end may make it vanish again)
        if run["progress"] is None and (run["new"] or re.search(RESUMED[stage], output)):
            run["progress"] = now
            self.startup[stage] = min(self.startup[stage], now - run["appeared"])

    def trigger(self, plan: dict, run: dict, now: float) -> bool:
        if plan["at"] is None:
            new, last = run["new"], self.last_step[plan["stage"]]
            if plan["mode"] == "checkpoint" and new and (
                    len(new) >= plan["after_checkpoints"] or new[-1] >= last):
                plan["at"] = now + plan["delay_s"]
            elif plan["mode"] == "final" and new and new[-1] >= last:
                plan["at"] = now + plan["delay_s"]
        return plan["at"] is not None and now >= plan["at"]

    def phase(self, stage: str, run: dict) -> str:
        """Where the run was when killed: `start-up` (imports, compilation, restoring), `training`
        (or refining) or `outputs` (its last checkpoint is committed: writing its outputs and
        removing its in-progress directory)."""
        if run["progress"] is None:
            return "start-up"
        have = committed(self.root, stage)
        last = run.get("reached_last") or (have and have[-1] >= self.last_step[stage])
        return "outputs" if last else "training"

    def repro(self, index: int, kill: bool) -> dict:
        """One `dvc repro`, killed at a planned moment when `kill` (and a stage may be killed)."""
        log = self.root / f"repro-{index:02d}.log"
        t0 = time.monotonic()
        proc = start_repro(self.root, self.env, log)
        record: dict = {"index": index, "stages": [], "killed": None}
        runs: dict[str, dict] = {}  # target stage -> its run in this repro
        plan = None
        pids: dict[str, int] = {}
        while proc.poll() is None:
            now = time.monotonic()
            if now - t0 > self.timeout:
                kill_group(proc)
                raise RuntimeError(f"dvc repro #{index} exceeded {self.timeout} s; see {log}")
            running = stage_processes(proc.pid)
            for name, p in running.items():
                if pids.get(name) != p.pid:
                    pids[name] = p.pid
                    record["stages"].append(name)
                    if name in TARGETS:
                        have = committed(self.root, name)
                        runs[name] = {"available": have[-1] if have else 0, "known": set(have),
                                      "appeared": now, "progress": None, "new": []}
                        if kill and plan is None and self.allowed(name):
                            plan = self.plan(name, runs[name])
            output = log.read_text(errors="replace")
            for name in runs.keys() & running.keys():
                self.watch(name, runs[name], output, now)
            if plan is not None and plan["stage"] not in running:
                plan = None  # it finished before its moment: its share passes on
                continue
            if plan is not None and self.trigger(plan, runs[plan["stage"]], now):
                stage, run = plan["stage"], runs[plan["stage"]]
                phase = self.phase(stage, run)
                have = committed(self.root, stage)
                kill_group(proc)
                killed = {
                    "repro": index, "stage": stage, "mode": plan["mode"], "phase": phase,
                    "delay_s": round(plan["delay_s"], 3),
                    "after_checkpoints": plan.get("after_checkpoints"),
                    "since_stage_start_s": round(now - run["appeared"], 2),
                    "checkpoint_at_start": run["available"],
                    "checkpoint_at_kill": have[-1] if have else None,
                }
                record["killed"] = killed
                self.kills.append(killed)
                break
            time.sleep(POLL_S)
        proc.wait()
        record["status"] = proc.returncode
        record["wall_s"] = round(time.monotonic() - t0, 1)
        output = log.read_text(errors="replace")
        record["resumed"] = {s: int(m.group(1)) for s in TARGETS
                             for m in [re.search(RESUMED[s], output)] if m}
        lines = output.splitlines()
        record["notable"] = sorted({line.strip()[:300] for line in lines if NOTABLE.search(line)
                                    and STALE_LOCK not in line and not line.startswith(">")})
        record["stale_lock_notes"] = sum(STALE_LOCK in line for line in lines)
        record["stage_runs"] = [self.outcome(name, run, record) for name, run in runs.items()]
        self.runs.append(record)
        return record

    def outcome(self, stage: str, run: dict, record: dict) -> dict:
        """How one run of `stage` started: `resumed` (from the newest committed checkpoint, as it
        must), `fresh` (nothing to resume from), `killed_before_resume` (killed before it got to
        restoring, or before its note of it was relayed), or the faults `resumed_older` (a newer
        committed checkpoint was passed over) and `not_resumed` (it started over although a
        committed checkpoint was there)."""
        resumed_at = record["resumed"].get(stage)
        killed = record["killed"] is not None and record["killed"]["stage"] == stage
        new = sorted(set(committed(self.root, stage)) - run["known"])
        if resumed_at is not None:
            kind = "resumed" if resumed_at == run["available"] else "resumed_older"
        elif run["available"] == 0:
            kind = "fresh"
        elif killed and not new:
            kind = "killed_before_resume"
        else:
            kind = "not_resumed"
        return {"stage": stage, "available": run["available"], "resumed_at": resumed_at,
                "killed": killed, "outcome": kind}

    def run(self) -> dict:
        index = 0
        while len(self.kills) < self.wanted:
            index += 1
            record = self.repro(index, kill=True)
            k = record["killed"]
            print(f"  repro {index:2d}: " + (
                f"killed {k['stage']} in {k['phase']} ({k['mode']}, {k['since_stage_start_s']} s after start, "
                f"checkpoint {k['checkpoint_at_start']} -> {k['checkpoint_at_kill']})" if k else
                f"not killed, status {record['status']}")
                + (f"; resumed {record['resumed']}" if record["resumed"] else ""), flush=True)
            if k is None:
                break  # it finished (or failed) before every kill was used
        final = self.repro(index + 1, kill=False)
        print(f"  repro {index + 1:2d}: final, status {final['status']}"
              + (f"; resumed {final['resumed']}" if final["resumed"] else ""), flush=True)
        return final


# ----------------------------------------------------------------------------------------------
# comparing


def npz_equal(a: Path, b: Path) -> bool:
    with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
        if sorted(x.files) != sorted(y.files):
            return False
        return all(x[k].dtype == y[k].dtype and x[k].shape == y[k].shape
                   and x[k].tobytes() == y[k].tobytes() for k in x.files)


def json_equal(a: Path, b: Path) -> bool:
    strip = lambda p: {k: v for k, v in json.loads(p.read_text()).items() if k not in TIMING}  # noqa: E731
    return strip(a) == strip(b)


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def compare(got: Path, want: Path) -> dict[str, bool]:
    """Per output file: equal to the reference's (see the module doc)."""
    names = ["metrics.json", "data/refined.npz", "data/refine/history.csv",
             "data/evaluate/errors.npz"]
    names += sorted(str(p.relative_to(want)) for p in (want / "data/export").glob("*.npz"))
    for level in sorted(p.name for p in (want / "data/train").iterdir() if p.is_dir()):
        names += [f"data/train/{level}/{f}" for f in ("metrics.json", "history.csv", "samples.npz")]
    result = {}
    for name in names:
        a, b = got / name, want / name
        if not a.exists() or not b.exists():
            result[name] = False
        elif name.endswith(".npz"):
            result[name] = npz_equal(a, b)
        elif name.endswith(".json"):
            result[name] = json_equal(a, b)
        else:
            result[name] = csv_rows(a) == csv_rows(b) and len(csv_rows(b)) > 0
    return result


def leftovers(root: Path) -> list[str]:
    """In-progress state that a finished pipeline must not leave behind."""
    found = [str(p.relative_to(root)) for p in (root / "data/resume").rglob("*")] \
        if (root / "data/resume").exists() else []
    for pattern in ("**/*.other-params", "**/*orbax-checkpoint-tmp*"):
        found += [str(p.relative_to(root)) for p in (root / "data").glob(pattern)]
    return sorted(found)


def code_version() -> dict:
    """The commit, and the files of the pipeline's code that differ from it (the projects run
    this working tree's `pinn/` and `dvc.yaml`)."""
    def git(*args: str) -> list[str]:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.splitlines()

    changed = git("status", "--porcelain", "--", "pinn", "dvc.yaml")  # "XY path" lines
    return {"commit": "".join(git("rev-parse", "HEAD")), "uncommitted": sorted(c[3:] for c in changed)}


def dvc_status(root: Path, env: dict) -> dict:
    """`dvc status --json` without the gate stage, which is always changed by design."""
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, env=env,
                         capture_output=True, text=True)
    try:
        status = json.loads(out.stdout or "{}")
    except ValueError:
        return {"unreadable": out.stdout + out.stderr}
    if status.get("params") == ["always changed"]:
        del status["params"]
    return status


# ----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=150, help="Adam steps of each level.")
    ap.add_argument("--refine-iterations", type=int, default=60)
    ap.add_argument("--block-size", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs/soak")
    ap.add_argument("--timeout", type=float, default=900, help="Per `dvc repro` (s).")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    t_start = time.monotonic()
    hardware = hardware_info()
    out = args.out or RESULTS / f"soak_{hardware['platform']}.json"
    work = args.workdir.absolute()
    for name in ("reference", "killed"):
        shutil.rmtree(work / name, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    params = soak_params(args.steps, args.refine_iterations, args.block_size)
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    # one compilation cache for both projects (compiled code is the same, so results are too)
    env = {**pipeline.subprocess_env(), "PINN_JAX_CACHE": str(work / "jax_cache")}

    print(f"reference: uninterrupted dvc repro in {work / 'reference'}", flush=True)
    reference = pipeline.make_project(work / "reference", params_file)
    status, ref_s, timing = reference_run(reference, env, args.timeout)
    if status != 0:
        print(f"reference run failed (status {status}); see {reference / 'repro.log'}")
        return 1
    print(f"  {ref_s:.0f} s; stages: {timing}", flush=True)

    print(f"soak: {args.kills} kills in {work / 'killed'} (seed {args.seed})", flush=True)
    killed = pipeline.make_project(work / "killed", params_file)
    t_soak = time.monotonic()
    soak = Soak(killed, env, np.random.default_rng(args.seed), args.kills, timing, totals(params),
                args.timeout)
    final = soak.run()
    soak_s = time.monotonic() - t_soak

    equal = compare(killed, reference) if final["status"] == 0 else {}
    left = leftovers(killed)
    status_left = dvc_status(killed, env)
    clean = not status_left
    complete = len(soak.kills) == args.kills and final["status"] == 0
    all_equal = bool(equal) and all(equal.values())

    outcomes = [o for r in soak.runs for o in r["stage_runs"]]
    kinds = ("resumed", "fresh", "killed_before_resume", "resumed_older", "not_resumed")
    runs_of = {s: {k: sum(1 for o in outcomes if o["stage"] == s and o["outcome"] == k)
                   for k in kinds} for s in TARGETS}
    resumed = {s: runs_of[s]["resumed"] for s in TARGETS}
    faults = [o for o in outcomes if o["outcome"] in ("resumed_older", "not_resumed")]
    result = {
        "benchmark": "soak: random SIGKILLs of train@level0/train@level1/refine, then equality "
                     "with an uninterrupted run (issue 15)",
        "date": dt.date.today().isoformat(),
        "hardware": hardware,
        "versions": versions(),
        "code": code_version(),
        "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "params": {"base": str(BASE_PARAMS.relative_to(ROOT)),
                   "level_steps": args.steps, "log_every": params["train"]["log_every"],
                   "checkpoint_every": params["train"]["checkpoint_every"],
                   "refine_iterations": args.refine_iterations, "block_size": args.block_size,
                   "refine_method": params["refine"]["method"]},
        "kills_requested": args.kills,
        "kills": len(soak.kills),
        "kills_per_stage": {s: sum(1 for k in soak.kills if k["stage"] == s) for s in TARGETS},
        "kills_per_moment": {m: sum(1 for k in soak.kills if k["mode"] == m)
                             for m in ("time", "checkpoint", "final")},
        "kills_per_phase": {s: {ph: sum(1 for k in soak.kills if k["stage"] == s and k["phase"] == ph)
                                for ph in ("start-up", "training", "outputs")} for s in TARGETS},
        "repro_runs": len(soak.runs),
        "stage_runs": {s: sum(runs_of[s].values()) for s in TARGETS},
        "resumes": sum(resumed.values()),
        "resumes_per_stage": resumed,
        "stage_runs_by_start": runs_of,
        "resume_faults": faults,
        "final_status": final["status"],
        "complete": complete,
        "equal": all_equal,
        "compared": equal,
        "compared_ignoring": sorted(TIMING),
        "leftovers": left,
        "dvc_status_clean": clean,
        "dvc_status_left": status_left,
        "notable_output": sorted({line for r in soak.runs for line in r["notable"]}),
        "dvc_stale_lock_notes": sum(r["stale_lock_notes"] for r in soak.runs),
        "wall_s": {"reference_run": round(ref_s, 1), "soak": round(soak_s, 1),
                   "total": round(time.monotonic() - t_start, 1)},
        "reference_stage_timing_s": timing,
        "kill_log": soak.kills,
    }
    from pinn.io import write_json

    write_json(out, result)
    ok = complete and all_equal and not left and clean and not faults
    print(f"kills {result['kills']}/{args.kills} per stage {result['kills_per_stage']}, "
          f"per moment {result['kills_per_moment']}; resumed {result['resumes']} "
          f"{resumed}, resume faults {len(faults)}; equal: {all_equal}; leftovers: {left or 'none'}; dvc status clean: {clean}; "
          f"{result['wall_s']['total']:.0f} s -> {out}")
    if not all_equal:
        print("  differ: " + ", ".join(k for k, v in equal.items() if not v))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
