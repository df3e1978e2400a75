"""A study's runs on the Prefect workers of a work pool, sharing a DVC remote as the cache
(`python -m flows.ablation STUDY --pool POOL --remote URL --git-remote URL`; flows/ablation.py,
pinn.ablate.share_project / run_here / pull_experiments).

Fast: the command line refuses `--pool` without `--remote` or without a server, in one line;
what a worker's run sends back (its artifact) round-trips; `condensed` keeps what `collect` reads;
a restore counts as "from another worker" only where no run of that stage ran on its worker.

Slow, for real (one machine standing in for several): a `prefect server start` (127.0.0.1, a
free port), a process work pool, two `prefect worker start --pool P --limit 1` subprocesses, each
with its own working directory and clones (`PINN_WORKER_DIR`), a local-directory DVC remote and a
bare git repository; a tiny study (2 variants differing only in the refinement x 2 seeds) through
`python -m flows.ablation --pool`, while the same study runs the default way (`pinn ablate`: this
machine's DVC queue, no Prefect) beside it. Checked: every flow run Completed, both workers ran
runs (Prefect's worker label, and each worker's own clone holds the experiments it ran), rel L2
per run equals the default way's bit for bit, and a stage one worker ran was restored on the
other from the remote's run cache (its output pulled into that worker's DVC cache, never run
there), counted in the report's reuse figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, TINY_PARAMS
from _prefect import prefect_server, stop as _stop

from flows import ablation as ablation_flow  # first: sets the Prefect defaults
from pinn import ablate
from prefect.settings import PREFECT_API_URL, temporary_settings

# ----------------------------------------------------------------------------------------------
# fast


def test_pool_needs_a_remote_and_a_server_in_one_line(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        ablation_flow.main(["s.yaml", "--pool", "p"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("error: --pool needs --remote (the DVC remote the workers share: a "
                            "URL or a directory they all reach)"), err
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert ablation_flow.main(["s.yaml", "--pool", "p", "--remote", "/tmp/r"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [ablation_flow.require_server("--pool")] and "prefect server start" in err[0]


def test_a_workers_record_round_trips_through_its_artifact():
    record = {"name": "s-a-s0", "status": "Success", "rev": "ab" * 20, "error": "",
              "log": "Running stage 'params':\nStage 'reference' is cached - skipping run, "
                     "checking out outputs", "clone": "/w/s", "host": "h", "seconds": 1.5,
              "worker": "w1"}
    text = ablation_flow.run_markdown(record)
    assert "| reference | restored |" in text and "on worker `w1`" in text
    assert ablation_flow.read_record(text) == record
    assert ablation_flow.read_record("no record") is None
    assert ablation_flow.run_artifact_key("Study-rad_wu-s1") == "pinn-study-run-study-rad-wu-s1"


def test_condensed_keeps_what_collect_reads():
    text = "\n".join(["Reproducing experiment 'e'", "Running stage 'params':", "> python ...",
                      "train level0: step 10/40", "Stage 'reference' is cached - skipping run",
                      "Stage 'init' didn't change, skipping", "Running stage 'refine':",
                      "error: refine: diverged", "ERROR: failed to reproduce 'refine'", "", "x"])
    kept = ablate.condensed(text, tail=1)
    assert ablate.stage_outcomes(kept) == ablate.stage_outcomes(text)
    assert ablate._failure_reason(kept) == ablate._failure_reason(text) == "error: refine: diverged"
    assert "train level0" not in kept and kept.endswith("x")


def test_a_restore_is_from_another_worker_only_where_its_worker_never_ran_it():
    run = ablate.Run("n", "", "v", 0, (), {})

    def result(worker, reference, train, train_lock):
        return ablate.Result(run, "Success", worker=worker,
                             outcomes={"reference": reference, "train@level0": train},
                             locks={"reference": "r", "train@level0": train_lock})

    results = [result("a", "ran", "ran", "t0"), result("b", "restored", "ran", "t1"),
               result("a", "restored", "restored", "t1"),
               result("b", "restored", "restored", "t1")]
    # b restored a's reference twice; a restored b's training once; b restoring its own: not counted
    assert ablate.across_workers(results) == {"reference": 2, "train@level0": 1}
    assert ablate.reuse(results).across == 3
    for r in results:
        r.worker = ""
    assert ablate.across_workers(results) == {}  # this machine's queue: no workers


def test_the_baseline_commits_what_the_runs_read(tmp_path, monkeypatch):
    """Workers (and DVC's queue) see the baseline commit only: it holds the pipeline, the study
    results the report reads, and a problem file the params name."""
    monkeypatch.chdir(ROOT)  # (problem.target is relative to where pinn runs)
    study_file = tmp_path / "wave.yaml"
    study_file.write_text(textwrap.dedent("""\
        params: PARAMS
        variants: {base: {}}
        seeds: [0]
        allow_few_seeds: true
        budgets: {wall_s: [10]}
        """).replace("PARAMS", str(ROOT / "examples" / "wave1d" / "params.yaml")))
    study = ablate.load_study(study_file)
    assert ablate._input_files(study, ROOT) == ["examples/wave1d/wave.py"]
    project = ablate.prepare_project(study, tmp_path / "project")
    files = set(_git(project.root, "ls-files").split())
    assert {"dvc.yaml", "params.yaml", "pinn/ablate.py", "examples/wave1d/wave.py"} <= files
    assert any(f.startswith("studies/results/") for f in files) == (
        ROOT / "studies" / "results").is_dir()
    assert _git(project.root, "status", "--porcelain", "--untracked-files=all") == ""


# ----------------------------------------------------------------------------------------------
# the runs without Prefect: two clones ("machines") of a study project sharing a DVC remote


@pytest.mark.slow  # 3 DVC experiments up to the training (one runs it, two restore it; ~2 min)
def test_a_stage_run_in_one_clone_is_restored_in_another_from_the_remote(tmp_path,
                                                                         pipeline_environ):
    """By default (no git remote) the workers clone the study project itself and push their
    experiments into it. The training one clone ran is restored in the other from the remote's
    run cache, its `cache: false` history too (`push_run_cache`); a run again in a clone that has
    it replaces it."""
    study_file = tmp_path / "two.yaml"
    study_file.write_text(textwrap.dedent(STUDY + "    target: train@level0\n").replace(
        "TINY", str(TINY_PARAMS)).replace("seeds: [0, 1]", "seeds: [0]").replace(
        "name: pooled", "name: two"))
    study = ablate.load_study(study_file)
    project = ablate.prepare_project(study, tmp_path / "project")
    env = ablate.study_env(study, project.root)
    remote = tmp_path / "remote"
    url = ablate.share_project(project, study, str(remote))
    assert url == str(project.root)
    first, second = study.runs  # (they differ in the refinement only: the same training)
    records = [ablate.run_here(url, project.baseline, study.name, run.name,
                               ablate.exp_args(study, run), str(remote), base=tmp_path / base,
                               log=lambda line: None)
               for run, base in ((first, "a"), (second, "b"), (first, "b"))]
    outcomes = [ablate.stage_outcomes(r["log"]) for r in records]
    assert [r["status"] for r in records] == ["Success"] * 3, records
    stages = ["reference", "collocation", "init", "train@level0"]
    assert outcomes[0] == {"params": "ran", **{s: "ran" for s in stages}}
    assert outcomes[1] == outcomes[2] == {"params": "ran", **{s: "restored" for s in stages}}
    assert records[1]["clone"] == records[2]["clone"] == str(tmp_path / "b" / study.name)
    ablate.pull_experiments(project, url, [first.name, second.name], env)  # (nothing to pull)
    shown = ablate.exp_show(project, env)
    assert set(shown) == {first.name, second.name}
    assert shown[first.name]["rev"] == records[2]["rev"] != records[0]["rev"]  # replaced
    assert shown[second.name]["params"]["refine"]["method"] == "none"
    history = "data/train/level0/history.csv"
    assert _git(project.root, "show", f"{records[1]['rev']}:{history}") == _git(
        project.root, "show", f"{records[0]['rev']}:{history}")  # restored, not rerun
    lock = yaml.safe_load(_git(project.root, "show", f"{records[1]['rev']}:dvc.lock"))
    (md5,) = [o["md5"] for o in lock["stages"]["train@level0"]["outs"] if o["path"] == history]
    for cache in (tmp_path / "b" / study.name / ".dvc" / "cache", remote):
        assert (cache / "files" / "md5" / md5[:2] / md5[2:]).is_file(), cache
    assert "pinn_shared" in (project.root / ".dvc" / "config.local").read_text()
    assert "pinn_shared" not in (project.root / ".dvc" / "config").read_text()  # not committed


# ----------------------------------------------------------------------------------------------
# for real: a Prefect server, a process work pool, two workers, a local DVC remote

STUDY = """\
    name: pooled
    params: TINY
    base:
      multilevel.num_levels: 1
      ~multilevel.levels.level1: null
      multilevel.levels.level0: {steps: 40}
    variants:
      lbfgs: {}
      adam_only: {refine.method: none}
    seeds: [0, 1]
    allow_few_seeds: true
    budgets: {steps: [20], wall_s: [1000]}
    compile_cache: true
"""
POOL = "pinn-test-pool"
WORKERS = ("worker-a", "worker-b")










def _finals(report_dir: Path) -> dict[str, float]:
    """{experiment: final rel L2} of a study report (`values.csv`)."""
    table = pd.read_csv(report_dir / "values.csv")
    final = table[table["budget"] == ablate.FINAL]
    return dict(zip(final["experiment"], final["rel_l2"]))


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.slow  # a Prefect server, two workers, 2 x 4 tiny experiments (~6 min on 2 cores)
@pytest.mark.timeout(900)
def test_a_study_runs_on_two_workers_sharing_a_dvc_remote(tmp_path, pipeline_env):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter, ArtifactFilterFlowRunId, DeploymentFilter, DeploymentFilterName,
    )

    study_file = tmp_path / "pooled.yaml"
    study_file.write_text(textwrap.dedent(STUDY).replace("TINY", str(TINY_PARAMS)))
    remote, origin = tmp_path / "dvc-remote", tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    start = time.monotonic()
    logs = {name: tmp_path / f"{name}.log" for name in ("local", "coordinator") + WORKERS}
    procs: list[subprocess.Popen] = []
    # the default way, beside it: this machine's DVC queue, no Prefect
    local = subprocess.Popen(
        [str(Path(sys.executable).parent / "pinn"), "ablate", str(study_file), "--workdir",
         str(tmp_path / "local"), "--out", str(tmp_path / "local-report")],
        env=pipeline_env, cwd=ROOT, stdout=logs["local"].open("w"), stderr=subprocess.STDOUT)
    procs.append(local)
    try:
        with prefect_server(tmp_path, pipeline_env, PREFECT_WORKER_QUERY_SECONDS="2") as env:
            prefect = str(Path(sys.executable).parent / "prefect")
            create = subprocess.run([prefect, "work-pool", "create", POOL, "--type", "process"],
                                    env=env, cwd=tmp_path, capture_output=True, text=True,
                                    timeout=120)
            assert create.returncode == 0, create.stdout + create.stderr
            for name in WORKERS:  # two "machines": own working directory, own clones
                home = tmp_path / name
                home.mkdir()
                procs.append(subprocess.Popen(
                    [prefect, "worker", "start", "--pool", POOL, "--name", name, "--limit", "1"],
                    env=dict(env, **{ablate.WORKER_DIR_ENV: str(home / "clones")}), cwd=home,
                    stdout=logs[name].open("w"), stderr=subprocess.STDOUT))
            missing = subprocess.run(  # a pool that does not exist: one line, nothing made
                [sys.executable, "-m", "flows.ablation", str(study_file), "--pool", "nope",
                 "--remote", str(remote), "--workdir", str(tmp_path / "nope")],
                env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert missing.returncode == 2, missing.stdout + missing.stderr
            assert missing.stderr.strip().splitlines()[-1].startswith(
                "error: work pool 'nope' not found: create it with `prefect work-pool create "
                "nope --type process`"), missing.stderr[-2000:]
            assert not (tmp_path / "nope").exists() and not remote.exists()
            coordinator = subprocess.run(
                [sys.executable, "-m", "flows.ablation", str(study_file), "--pool", POOL,
                 "--remote", str(remote), "--git-remote", str(origin), "--workdir",
                 str(tmp_path / "project"), "--out", str(tmp_path / "report")],
                env=env, cwd=ROOT, stdout=logs["coordinator"].open("w"),
                stderr=subprocess.STDOUT, timeout=780)
            text = logs["coordinator"].read_text()
            worker_logs = "\n".join(logs[w].read_text()[-3000:] for w in WORKERS)
            assert coordinator.returncode == 0, text[-5000:] + worker_logs
            pooled_s = time.monotonic() - start

            # every flow run of the run deployment Completed; both workers ran some
            with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}):
                with get_client(sync_client=True) as client:
                    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                        name=DeploymentFilterName(any_=[POOL])))
                    records = {}
                    for run in runs:
                        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
                            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
                        records[run.name] = dict(ablation_flow.read_record(artifact.data),
                                                 label=run.labels[ablation_flow.WORKER_LABEL],
                                                 state=run.state.type.value)
    finally:
        for proc in procs[1:]:
            _stop(proc)
    study = ablate.load_study(study_file)
    names = [r.name for r in study.runs]
    assert sorted(records) == sorted(names), records.keys()
    assert {r["state"] for r in records.values()} == {"COMPLETED"}
    assert all(r["worker"] == r["label"] and r["status"] == "Success" for r in records.values())
    by_worker = {w: sorted(n for n, r in records.items() if r["worker"] == w) for w in WORKERS}
    assert all(by_worker.values()), by_worker  # each worker ran at least one run
    for worker, ran in by_worker.items():  # ... in its own clone, whose git has those experiments
        clone = tmp_path / worker / "clones" / study.name
        assert {records[n]["clone"] for n in ran} == {str(clone)}
        baseline = _git(clone, "rev-parse", "HEAD").strip()
        refs = _git(clone, "for-each-ref", "--format=%(refname)",
                    f"refs/exps/{baseline[:2]}/{baseline[2:]}").split()
        assert {ref.rsplit("/", 1)[1] for ref in refs} == set(ran), (worker, refs)

    # the same numbers as the default way (bit-reproducible on CPU), and as DVC has them
    assert local.wait(timeout=600) == 0, logs["local"].read_text()[-4000:]
    total_s = time.monotonic() - start
    trees = {_git(tmp_path / p, "rev-parse", "HEAD^{tree}") for p in ("project", "local")}
    assert len(trees) == 1, "the two studies' baselines differ (pinn/ edited during the test?)"
    pooled, default = _finals(tmp_path / "report"), _finals(tmp_path / "local-report")
    assert set(pooled) == set(default) == set(names)
    assert pooled == default, (pooled, default)
    shown = ablate.exp_show(ablate.Project(tmp_path / "project", _git(
        tmp_path / "project", "rev-parse", "HEAD").strip()), ablate.study_env(study, tmp_path))
    assert {n: shown[n]["metrics"]["metrics.json"]["rel_l2"] for n in names} == pooled
    assert len({round(v, 12) for v in pooled.values()}) == 4  # the seeds and refinement differ

    # a stage one worker ran was restored on the other from the shared remote's run cache
    outcomes = {n: ablate.stage_outcomes(r["log"]) for n, r in records.items()}
    ran_reference = {records[n]["worker"] for n, o in outcomes.items() if o["reference"] == "ran"}
    assert len(ran_reference) == 1, outcomes  # the first run (a phase of its own) ran it, once
    (other,) = set(WORKERS) - ran_reference
    restored_there = [n for n in by_worker[other] if outcomes[n]["reference"] == "restored"]
    assert restored_there == by_worker[other], outcomes  # never run there: restored every time
    lock = yaml.safe_load(_git(tmp_path / "project", "show",
                               f"{shown[restored_there[0]]['rev']}:dvc.lock"))
    md5 = lock["stages"]["reference"]["outs"][0]["md5"]
    pulled = tmp_path / other / "clones" / study.name / ".dvc" / "cache" / "files" / "md5"
    assert (pulled / md5[:2] / md5[2:]).is_file()  # its output came from the remote ...
    assert (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    assert any((remote / "runs").rglob("*"))  # ... found through the run cache pushed there
    # the report counts it: restores on a worker that never ran the stage run
    report = (tmp_path / "report" / "report.md").read_text()
    across = ablate.across_workers([ablate.Result(
        study.runs[names.index(n)], "Success", outcomes=outcomes[n], worker=records[n]["worker"],
        locks=ablate.lock_entries(ablate.Project(tmp_path / "project", ""), shown[n]["rev"],
                                  ablate.study_env(study, tmp_path))) for n in names])
    assert across["reference"] == len(restored_there) >= 1
    assert (f"{sum(across.values())} of the restored stage runs were restored on a worker that "
            "did not run them") in report
    assert f"work pool `{POOL}` (`worker-a`, `worker-b`)" in report
    assert f"({sum(across.values())} from another worker, through the DVC remote)" in text
    reused = json.dumps(outcomes)
    print(f"pooled study {pooled_s:.0f} s, with the default way beside it {total_s:.0f} s; "
          f"workers: {by_worker}; restored from another worker: {across}; outcomes: {reused}")
