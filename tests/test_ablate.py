"""`pinn ablate` / `pinn.ablate`: study files validated before anything runs (fast), the override
grammar of `dvc exp run -S`, budgets read off curves, mean and spread; and one end-to-end study
on the tiny params through DVC's queue (slow): its numbers come from DVC, its mean and spread are
those of DVC's numbers, and stages shared between experiments came from the run cache.
"""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pinn import ablate, pipeline
from pinn.curves import curve, value_at

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "benchmarks" / "regression" / "params.yaml"


def write_study(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("TINY", str(TINY)))
    return path


GOOD = """\
    params: TINY
    variants:
      base: {}
      rad: {sampling.method: rad}
    seeds: [0, 1, 2]
    budgets: {steps: [20], wall_s: [5, 10]}
"""


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ablate.StudyError) as e:
        ablate.load_study(write_study(tmp_path, text))
    lines = str(e.value).splitlines()
    assert all(line.startswith(str(tmp_path / "study.yaml") + ": ") for line in lines), lines
    return [line.split(": ", 1)[1] for line in lines]


# ----------------------------------------------------------------------------------------------
# the study file


def test_a_good_study_plans_every_variant_and_seed(tmp_path):
    study = ablate.load_study(write_study(tmp_path, GOOD.replace("  base: {}", "  base:")))
    assert study.name == "study"
    assert [r.name for r in study.runs] == [
        "study-base-s0", "study-base-s1", "study-base-s2", "study-rad-s0", "study-rad-s1",
        "study-rad-s2"]
    rad = study.runs[4]
    assert rad.params["sampling"]["method"] == "rad" and rad.params["seed"] == 1
    assert rad.overrides == (("sampling.method", "rad"), ("seed", 1))
    assert study.base_params == yaml.safe_load(TINY.read_text())
    assert ablate.budget_labels(study) == ["final", "step 20", "5 s", "10 s"]


@pytest.mark.parametrize("text, expected", [
    (GOOD.replace("seeds: [0, 1, 2]", "seeds: [0, 1]"),
     r"^seeds = \[0, 1\]: a study needs at least 3 seeds \(set allow_few_seeds: true"),
    (GOOD.replace("seeds: [0, 1, 2]", "seeds: [0, 1, 1]"), r"^seeds = \[0, 1, 1\]: must not repeat"),
    (GOOD.replace("variants:", "variant:"), r"^variant: unknown key; did you mean 'variants'\? \(allowed: name, "),
    (GOOD.replace("budgets: {steps: [20], wall_s: [5, 10]}", "budgets: {steps: [20]}"),
     r"^budgets.wall_s: missing required key$"),
    (GOOD.replace("wall_s: [5, 10]", "wall_s: [10, 5]"), r"^budgets.wall_s = \[10, 5\]: must be "
                                                        r"strictly increasing$"),
    (GOOD.replace("wall_s: [5, 10]", "wall_s: [5, -1]"), r"^budgets.wall_s.1 = -1: must be greater than 0"),
    (GOOD.replace("sampling.method: rad", "sampling.method: radd"),
     r"^variants.rad: sampling.method = 'radd': must be one of 'uniform', 'rad'"),
    (GOOD.replace("sampling.method: rad", "sampling.methd: rad"),
     r"^variants.rad: sampling.methd: unknown key; did you mean 'method'\?"),
    (GOOD.replace("sampling.method: rad", "seed: 3"), r"^variants.rad.seed: the seed is set by `seeds`"),
    (GOOD.replace("sampling.method: rad", "sampling method: rad"),
     r"^variants.rad.sampling method: not a dotted params key"),
    (GOOD.replace("sampling.method: rad", "~sampling.nope: null"),
     r"^variants.rad.~sampling.nope: no such key to delete$"),
    (GOOD.replace("  rad:", "  r a d:"), r"^variants.r a d = 'r a d': a name must be letters"),
    (GOOD.replace("params: TINY", "params: TINY\n    base: {model.width: 0}"),
     r"^base: model.width = 0: must be greater than 0$"),
    (GOOD.replace("params: TINY", "params: missing.yaml"), r"^params = 'missing.yaml': .*file not found"),
    (GOOD.replace("seeds: [0, 1, 2]", "seeds: [0, 1, 9999999]"), r"^seeds: seed = 9999999: must be less"),
    (GOOD + "    jobs: 0\n", r"^jobs = 0: must be greater than or equal to 1$"),
    (GOOD + "    target: evaluat\n", r"^target = 'evaluat': no such stage in dvc.yaml \(stages: "),
    (GOOD.replace("params: TINY", "params: TINY\n    cases: {ac: {problem.name: heat}}"),
     r"^cases.ac: problem.name = 'heat': must be one of"),
    (GOOD.replace("params: TINY", "params: TINY\n    cases: {a-b: {}, a: {}}").replace(
        "  rad:", "  b-base:"), r"^cases/variants: two case/variant pairs would both name their runs study-a-b-base-s<seed>"),
])
def test_study_errors_name_the_key_in_one_line(tmp_path, text, expected):
    lines = errors_of(tmp_path, text)
    assert len(lines) == 1 or "unknown key" in expected, lines  # (+ "variants: missing")
    assert any(re.search(expected, line) for line in lines), lines


def test_every_run_is_validated_case_by_variant(tmp_path):
    """A variant valid in one case and not in another is named with its case (RAR-D's capacity
    must hold min(batch_size, collocation points): 256 points in one case, 512 in the other)."""
    text = GOOD.replace("params: TINY", "params: TINY\n    cases:\n      small: {}\n      large: "
                        "{sampling.batch_size: 1024}").replace(
        "rad: {sampling.method: rad}", "rar: {sampling.method: rar_d, sampling.rar_d.capacity: 300}")
    assert errors_of(tmp_path, text) == [
        "variants.rar (case large): sampling.rar_d.capacity = 300: must be >= the number of "
        "initial points min(sampling.batch_size, collocation.num_points) = 512"]
    ok = ablate.load_study(write_study(tmp_path, text.replace("capacity: 300", "capacity: 600")))
    assert [r.name for r in ok.runs][:4] == ["study-small-base-s0", "study-small-base-s1",
                                             "study-small-base-s2", "study-small-rar-s0"]
    assert len(ok.runs) == 12 and ok.runs[-1].params["sampling"]["batch_size"] == 1024


def test_a_study_can_run_some_of_its_cases(tmp_path):
    """`pinn ablate --case`: the runs of those cases, named as in the full study (so the full study
    finds their stages in the run cache), reported apart from the full study."""
    text = GOOD.replace("params: TINY", "params: TINY\n    cases:\n      small: {}\n      large: "
                        "{sampling.batch_size: 1024}")
    full = ablate.load_study(write_study(tmp_path, text))
    part = ablate.only_cases(full, ["large"])
    assert [r.name for r in part.runs] == [r.name for r in full.runs if r.case == "large"] != []
    assert part.cases == ["large"] and "(cases: large)" in part.title
    assert ablate.default_out(part).name == f"{full.name}-large" != ablate.default_out(full).name
    with pytest.raises(ablate.StudyError, match=r"case 'huge' is not one of its cases \(small, large\)"):
        ablate.only_cases(full, ["huge"])


def test_a_budget_not_every_seed_reached_says_so_and_is_not_bold():
    full = {"mean": 0.5, "min": 0.4, "max": 0.6, "std": 0.1, "n": 3}
    part = {"mean": 1.22, "min": 1.22, "max": 1.22, "std": float("nan"), "n": 1}
    assert ablate._cell(full, 3) == "5.00e-01 [4.00e-01–6.00e-01] σ 1.00e-01"
    assert ablate._cell(part, 3) == "1.22e+00 [1.22e+00–1.22e+00] (n = 1 of 3)"


def test_nothing_runs_for_an_invalid_study(tmp_path):
    """The CLI prints the one-line error and exits 2 before any project or report exists."""
    bad = write_study(tmp_path, GOOD.replace("sampling.method: rad", "sampling.method: radd"))
    work, out = tmp_path / "work", tmp_path / "out"
    from pinn.cli import app

    result = CliRunner().invoke(app, ["ablate", str(bad), "--workdir", str(work), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "variants.rad: sampling.method = 'radd'" in result.output
    assert not work.exists() and not out.exists()


def test_pinn_ablate_on_a_work_pool_goes_through_the_flow_and_checks_its_options(tmp_path,
                                                                                monkeypatch):
    """`pinn ablate --pool` is `python -m flows.ablation --pool` (the same checks, one line each,
    before anything runs); the pool's options without `--pool` are refused."""
    import flows.ablation  # noqa: F401  (Prefect binds its log handlers to the stderr of the
    # process that first imports it: not to the runner's temporary one, closed after invoke)
    from pinn.cli import app

    study = write_study(tmp_path, GOOD)
    work, out = tmp_path / "work", tmp_path / "out"
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    cases = {
        ("--remote", str(tmp_path / "remote")): "--remote is for the runs on a work pool: give --pool",
        ("--pool", "studies"): "--pool needs --remote",
        ("--pool", "studies", "--remote", str(tmp_path / "remote")): "--pool needs a running Prefect server",
    }
    for extra, expected in cases.items():
        result = CliRunner().invoke(app, ["ablate", str(study), "--workdir", str(work),
                                          "--out", str(out), *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert expected in " ".join(result.output.split()), (extra, result.output)
    assert not work.exists() and not out.exists()


# ----------------------------------------------------------------------------------------------
# overrides as `dvc exp run -S` writes them


def test_overrides_follow_dvc_exp_run_set():
    base = {"a": {"b": 1, "c": {"d": 2}}, "s": "x"}
    overrides = [("a.b", 3), ("a.c", {"e": 4}), ("~s", None), ("n.m", "true"), ("f", 1e-3),
                 ("l", [1, "two", "it's"]), ("z", None), ("m", "rad_wu"), ("o", "none")]
    assert ablate.apply_overrides(base, overrides) == {
        "a": {"b": 3, "c": {"d": 2, "e": 4}}, "n": {"m": "true"}, "f": 1e-3,
        "l": [1, "two", "it's"], "z": None, "m": "rad_wu", "o": "none"}
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "s": "x"}  # not modified
    assert ablate.dvc_overrides(base, overrides) == [
        "a.b=3", "a.c={e:4}", "~s", "+n.m='true'", "+f=0.001", "+l=[1,two,'it\\'s']", "+z=null",
        "+m=rad_wu", "+o='none'"]
    # a key added by an earlier override is then overridden, not added again
    assert ablate.dvc_overrides({}, [("x", {"y": 1}), ("x.y", 2)]) == ["+x={y:1}", "x.y=2"]
    with pytest.raises(KeyError):
        ablate.apply_overrides(base, [("~a.q", None)])
    for bad in ({"a b": 1}, float("nan"), object()):
        with pytest.raises(ValueError):
            ablate.hydra_value(bad)


@pytest.mark.parametrize("value", [
    "rad", "none", "true", "null", "inf", "1e-3", "it's", "a b", "x/y.z-w", 0.001, 5e-3, 100000,
    True, False, None, [1, "two", "it's"], {"steps": 1000, "init_from": "init"}])
def test_values_survive_hydras_override_parser(value):
    """What DVC's `-S` parser (Hydra's) reads back is the study's value, type included."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    got = OverridesParser.create().parse_overrides([f"k={ablate.hydra_value(value)}"])[0].value()
    got = dict(got) if isinstance(value, dict) else list(got) if isinstance(value, list) else got
    assert got == value and type(got) is type(value)


def test_params_mismatch_tells_true_from_one():
    assert ablate._params_mismatch({"a": True}, {"a": 1}) is not None
    assert ablate._params_mismatch({"a": 1.0}, {"a": 1}) is None
    assert "x.y" in ablate._params_mismatch({"x": {"y": "rad"}}, {"x": {"y": "uniform"}})


# ----------------------------------------------------------------------------------------------
# curves, budgets, mean and spread


def test_curve_offsets_phases_and_reads_budgets():
    levels = {"level0": pd.DataFrame({"step": [10, 20], "wall_s": [5.0, 6.0], "rel_l2": [0.9, 0.8]}),
              "level1": pd.DataFrame({"step": [30, 40], "wall_s": [2.0, 3.0], "rel_l2": [0.7, 0.6]})}
    refine = pd.DataFrame({"iteration": [5, 10], "wall_s": [1.0, 4.0], "rel_l2": [0.1, 0.01]})
    rows = curve(levels, refine)
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 45, 50]
    assert [r["wall_s"] for r in rows] == [5.0, 6.0, 8.0, 9.0, 10.0, 13.0]
    assert value_at(rows, 44, "step") == 0.6
    assert value_at(rows, 45, "step") == 0.1
    assert math.isnan(value_at(rows, 4.9, "wall_s"))  # nothing logged yet
    assert value_at(rows, 12.9, "wall_s") == 0.1
    assert value_at(rows, 1e6, "wall_s") == 0.01  # ended before the budget: its final value
    assert [r["step"] for r in curve(levels, None)] == [10, 20, 30, 40]


def test_summary_is_mean_and_spread_over_seeds(tmp_path):
    study = ablate.load_study(write_study(tmp_path, GOOD))
    finals = {"study-base-s0": 0.1, "study-base-s1": 0.2, "study-base-s2": 0.6,
              "study-rad-s0": 0.3, "study-rad-s1": 0.3, "study-rad-s2": 0.3}
    results = []
    for run in study.runs:
        v = finals[run.name]
        rows = [{"phase": "level0", "step": 10, "wall_s": 6.0, "rel_l2": 2 * v},
                {"phase": "level0", "step": 20, "wall_s": 12.0, "rel_l2": v}]
        results.append(ablate.Result(run, "Success", metrics={"metrics.json": {"rel_l2": v}},
                                     curve=rows))
    summary = ablate.summarize(study, ablate.values(study, results)).set_index(["variant", "budget"])
    base = summary.loc[("base", "final")]
    assert base["mean"] == pytest.approx(0.3) and base["min"] == 0.1 and base["max"] == 0.6
    assert base["std"] == pytest.approx(np.std([0.1, 0.2, 0.6], ddof=1)) and base["n"] == 3
    assert summary.loc[("base", "10 s"), "mean"] == pytest.approx(0.6)  # 2v at 6 s
    assert summary.loc[("rad", "step 20"), "std"] == pytest.approx(0.0)
    assert math.isnan(summary.loc[("rad", "5 s"), "mean"])  # before the first log
    assert list(summary.index.get_level_values("budget")[:4]) == ["final", "step 20", "5 s", "10 s"]


# ----------------------------------------------------------------------------------------------
# end to end (slow): a 2-variant x 2-seed study on the tiny params through DVC's queue


def pipeline_stages(root: Path) -> list[str]:
    return [node.name for node in pipeline.read_dag(root)]


def not_run_cached(root: Path) -> dict[str, list[str]]:
    """{stage: its outputs that keep DVC from saving its runs in the run cache}: DVC saves a run
    only if every `cache: false` output of the stage is a metric or a plot
    (dvc/stage/__init__.py, `Stage.run`: `no_cache_outs`); such a stage reruns in every
    experiment."""
    from dvc.repo import Repo

    root = Path(root).absolute()
    with Repo(str(root)) as repo:
        return {pipeline.stage_address(s, root): blocking for s in repo.index.stages
                if (blocking := [o.def_path for o in s.outs
                                 if not o.use_cache and not (o.is_metric or o.is_plot)])}


def test_shared_stages_can_come_from_the_run_cache():
    """Variants share reference, collocation, init and the training levels: DVC must be able to
    keep their runs (the params gate always runs; the report is per run anyway)."""
    blocked = {k: v for k, v in not_run_cached(ROOT).items() if k not in ("params", "report")}
    assert not blocked, blocked


TINY_STUDY = """\
    name: tiny
    params: TINY
    base:
      multilevel.num_levels: 1
      ~multilevel.levels.level1: null
      multilevel.levels.level0: {steps: 60}
      sampling.method: rad
      sampling.rad: {pool_size: 512, resample_every: 20}
      balancing.method: gradnorm
    variants:
      lbfgs: {}
      adam_only: {refine.method: none}
    seeds: [0, 1]
    allow_few_seeds: true
    budgets: {steps: [30], wall_s: [5, 1000]}
    compile_cache: true
"""


def _dvc(root: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True,
                          text=True, env=pipeline.subprocess_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_a_study_runs_as_dvc_experiments_and_reuses_the_run_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    study_file = write_study(tmp_path, TINY_STUDY)
    work, out = tmp_path / "project", tmp_path / "report"
    report = ablate.run_study(study_file, jobs=1, workdir=work, out=out, log=lambda s: None)

    # every experiment succeeded and DVC has it under the study's baseline commit
    assert [r.status for r in report.results] == ["Success"] * 4
    shown = json.loads(_dvc(work, "exp", "show", "--json"))
    exps = {e["name"]: e["revs"][0] for c in shown if c["rev"] != "workspace"
            for e in c.get("experiments") or []}
    assert set(exps) == {"tiny-lbfgs-s0", "tiny-lbfgs-s1", "tiny-adam_only-s0", "tiny-adam_only-s1"}
    assert not (work / "metrics.json").exists()  # nothing ran in the workspace
    for name, rev in exps.items():
        params = rev["data"]["params"]["params.yaml"]["data"]
        assert params["seed"] == int(name[-1])
        assert params["refine"]["method"] == ("none" if "adam_only" in name else "lbfgs")
        assert list(params["multilevel"]["levels"]) == ["level0"]

    # the final values are DVC's metrics; mean and spread are those of DVC's numbers
    finals = {n: rev["data"]["metrics"]["metrics.json"]["data"]["rel_l2"] for n, rev in exps.items()}
    summary = report.summary.set_index(["variant", "budget"])
    for variant in ("lbfgs", "adam_only"):
        v = [finals[f"tiny-{variant}-s{s}"] for s in (0, 1)]
        row = summary.loc[(variant, "final")]
        assert row["mean"] == pytest.approx(np.mean(v), rel=1e-12)
        assert (row["min"], row["max"]) == (min(v), max(v))
        assert row["std"] == pytest.approx(np.std(v, ddof=1), rel=1e-9)
        # at step 30: the history row of step 30 in the experiment's commit
        at30 = []
        for s in (0, 1):
            text = subprocess.run(["git", "show", f"{exps[f'tiny-{variant}-s{s}']['rev']}:"
                                   "data/train/level0/history.csv"], cwd=work, capture_output=True,
                                  text=True, check=True).stdout
            h = pd.read_csv(io.StringIO(text))
            at30.append(float(h.loc[h["step"] == 30, "rel_l2"].iloc[0]))
        assert summary.loc[(variant, "step 30"), "mean"] == pytest.approx(np.mean(at30), rel=1e-12)
        # a budget past every run's end is its final value
        assert summary.loc[(variant, "1000 s"), "mean"] == pytest.approx(
            np.mean([r.curve[-1]["rel_l2"] for r in report.results if r.run.variant == variant]))
    assert finals["tiny-lbfgs-s0"] != finals["tiny-adam_only-s0"]  # the override took effect

    # the run cache, as DVC's own logs tell it: the report counts what the logs say, ...
    logs = {n: _dvc(work, "queue", "logs", n) for n in exps}

    def ran(name: str) -> set[str]:
        return set(re.findall(r"Running stage '([^']+)':", logs[name])) - {"params"}

    def restored(name: str) -> set[str]:
        return set(re.findall(r"Stage '([^']+)' is cached - skipping run", logs[name]))

    assert report.reuse.ran == sum(len(ran(n)) for n in exps)
    assert report.reuse.reused == sum(len(restored(n)) for n in exps) == 4 * 7 - report.reuse.ran
    # ... the first experiment ran everything; another seed shares the reference only; the second
    # variant of a seed (only the refinement differs) did not rerun reference, collocation, init
    # (the experiments reproduce `evaluate`: neither the report nor the plots page is upstream)
    assert ran("tiny-lbfgs-s0") == set(pipeline_stages(work)) - {"params", "report", "plots_page"}
    assert restored("tiny-lbfgs-s1") == {"reference"} and "collocation" in ran("tiny-lbfgs-s1")
    for name in ("tiny-adam_only-s0", "tiny-adam_only-s1"):
        assert {"reference", "collocation", "init"} <= restored(name), name
    assert report.reuse.per_stage["reference"] == {"ran": 1, "restored": 3, "unchanged": 0}
    assert report.reuse.per_stage["collocation"] == {"ran": 2, "restored": 2, "unchanged": 0}

    # the report: table, figures, seeds, hardware, date
    text = (out / "report.md").read_text()
    for figure in ("curves.png", "density.png", "weights.png"):  # RAD, GradNorm: both panels
        assert (out / figure).stat().st_size > 1000, figure
        assert f"]({figure})" in text
    assert "**Seeds**: 0, 1 " in text and "**Hardware**" in text and "**Date**" in text
    assert f"{report.reuse.reused} of {report.reuse.ran + report.reuse.reused} stage runs" in text
    mean = summary.loc[("lbfgs", "final"), "mean"]
    assert f"{mean:.2e}" in text

    # when only the refinement differs, the training stage comes from the run cache, if dvc.yaml
    # lets DVC keep its runs (test_shared_stages_can_come_from_the_run_cache)
    train_cached = "train@level0" not in not_run_cached(work)
    for name in ("tiny-adam_only-s0", "tiny-adam_only-s1"):
        expected = ({"refine", "window0", "evaluate"}
                    | (set() if train_cached else {"train@level0"}))
        assert ran(name) == expected, name
    assert (report.reuse.saved_s > 0) == train_cached


@pytest.mark.slow
def test_the_flow_rejects_an_invalid_study_before_anything_runs(tmp_path, capsys):
    """flows/ablation.py: the one-line errors as the failed run's message, exit status 2, no
    project, no report (a temporary Prefect server)."""
    from flows import ablation as ablation_flow  # first: sets the Prefect defaults
    from prefect.testing.utilities import prefect_test_harness

    bad = write_study(tmp_path, GOOD.replace("sampling.method: rad", "sampling.method: radd"))
    work, out = tmp_path / "work", tmp_path / "out"
    with prefect_test_harness(server_startup_timeout=120):
        state = ablation_flow.ablation(study_file=str(bad), workdir=str(work), out=str(out),
                                       return_state=True)
        assert state.is_failed() and state.name == ablation_flow.INVALID_STUDY
        assert state.message.startswith(f"error: {bad}: variants.rad: sampling.method = 'radd'")
        assert ablation_flow.main([str(bad), "--workdir", str(work), "--out", str(out)]) == 2
        good = write_study(tmp_path, GOOD, "good.yaml")
        unknown = ablation_flow.ablation(study_file=str(good), workdir=str(work), out=str(out),
                                         cases=["huge"], return_state=True)
        assert unknown.is_failed() and unknown.name == ablation_flow.INVALID_STUDY
        assert "case 'huge' is not one of its cases (it has none)" in unknown.message
    assert state.message in capsys.readouterr().err.splitlines()  # (Prefect's own log follows)
    assert not work.exists() and not out.exists()
    assert ablation_flow.artifact_key("Seed_Techniques") == "pinn-ablation-seed-techniques"
