"""Every override a user can make with `dvc exp run -S KEY=VALUE` works and takes effect.

On the tiny project (a git + DVC repository, built once with `dvc repro`), experiments covering
every choice of every component — samplers, batch sizes, balancers and weights, causal weighting,
the number of cascade levels, the network and the hard initial condition, the refinement method,
the hybrid switch — run exactly as the README shows (`dvc exp run --temp -n NAME -S KEY=VALUE`;
choices whose keys the same stages declare share an experiment, each checked by its own metric).
For each:

(i)   it succeeds;
(ii)  the value reached training: a metric that only that value explains (read back from DVC,
      `dvc exp show --json`);
(iii) DVC reran exactly what the change touches: every stage that declares the changed key ran;
      no stage ran that neither declares it nor lies downstream of one that does (the others are
      "didn't change" or restored from the run cache).

The README's ablation commands are among these experiments, verbatim (a test checks it).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import yaml

from pinn import pipeline
from pinn.config import load_params

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "benchmarks" / "regression" / "params.yaml"

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)


def level_metrics(level: str) -> str:
    return f"data/train/{level}/metrics.json"


# name, overrides, effect(metrics of the experiment, metrics of the baseline) -> bool
Check = Callable[[dict, dict], bool]


def _lvl(m: dict, level: str = "level1") -> dict:
    return m[level_metrics(level)]


EXPERIMENTS: list[tuple[str, list[str], Check]] = [
    # The README's ablations alone; the other samplers and balancers in pairs of one sampler and
    # one balancer (both keys are declared by the same stages, so the rerun check is the same, and
    # each check reads a metric only its own key explains): fewer experiments, the same coverage.
    ("rad", ["sampling.method=rad"], lambda m, b: "pool_mean_residual" in _lvl(m)),
    ("gradnorm", ["balancing.method=gradnorm"], lambda m, b: _lvl(m)["weight_ic"] != 10.0),
    # RAR-D: the initial min(batch_size, num_points) = 256 fixed points plus the ones it added;
    # the ic weight everywhere
    ("rar_d-weight_ic", ["sampling.method=rar_d", "balancing.weights.ic=100"],
     lambda m, b: _lvl(m)["num_points"] == 256 + _lvl(m)["num_added"] and _lvl(m)["num_added"] > 0
     and _lvl(m)["weight_ic"] == 100.0 and _lvl(m, "level0")["weight_ic"] == 100.0),
    ("hard_bank-causal", ["sampling.method=hard_bank", "balancing.causal.enabled=true"],
     lambda m, b: "bank_size" in _lvl(m) and "causal_min_weight" in _lvl(m)),
    ("fixed_points-grad_ratio", ["sampling.uniform.resample=false", "balancing.method=grad_ratio",
                                 "balancing.grad_ratio.update_every=10"],
     lambda m, b: m["samples_in_collocation"] == 1.0 and b["samples_in_collocation"] < 0.01
     and _lvl(m)["weight_ic"] != 10.0),
    ("batches", ["sampling.batch_size=128", "sampling.ic_batch_size=32", "sampling.bc_batch_size=16"],
     lambda m, b: _lvl(m)["batch_points"] == 128 and _lvl(m)["loss_ic"] != _lvl(b)["loss_ic"]
     and _lvl(m)["loss_bc"] != _lvl(b)["loss_bc"]),
    ("one_level", ["multilevel.num_levels=1", "~multilevel.levels.level1"],
     lambda m, b: level_metrics("level1") not in m and _lvl(m, "level0")["num_params"]
     == _lvl(b)["num_params"]),
    ("three_levels", ["multilevel.num_levels=3",
                      "+multilevel.levels.level2={steps: 20, init_from: level1}"],
     lambda m, b: _lvl(m, "level2")["num_params"] == _lvl(b)["num_params"]
     and _lvl(m, "level0")["num_params"] < _lvl(b, "level0")["num_params"]),
    ("width", ["model.width=12"], lambda m, b: _lvl(m)["num_params"] > _lvl(b)["num_params"]),
    # (the hard initial condition: no ic term left in the loss)
    ("depth-hard_ic", ["model.depth=3", "model.hard_initial_condition=true"],
     lambda m, b: _lvl(m)["num_params"] > _lvl(b)["num_params"] and "loss_ic" not in _lvl(m)
     and "loss_ic" in _lvl(b)),
    ("fourier", ["model.fourier_features=8"],
     lambda m, b: _lvl(m)["num_params"] > _lvl(b)["num_params"]),
    ("no_refine", ["refine.method=none"], lambda m, b: m["metrics.json"]["refine_iterations"] == 0),
    ("bfgs", ["refine.method=bfgs"], lambda m, b: m["metrics.json"]["rel_l2"] != b["metrics.json"]["rel_l2"]),
    ("ssbfgs", ["refine.method=ssbfgs"],
     lambda m, b: m["metrics.json"]["rel_l2"] != b["metrics.json"]["rel_l2"]),
    ("ssbroyden", ["refine.method=ssbroyden"],
     lambda m, b: m["metrics.json"]["rel_l2"] != b["metrics.json"]["rel_l2"]),
    ("switch", ["optimizer.switch_loss_threshold=100"],
     lambda m, b: _lvl(m)["level_step"] < _lvl(b)["level_step"]
     and _lvl(m, "level0")["level_step"] == _lvl(b, "level0")["level_step"]),
]


def exp_command(name: str, overrides: list[str]) -> str:
    """How the README writes an ablation (params.yaml is left as it is)."""
    return " ".join(["dvc exp run --temp -n", name] + [f"-S {shlex.quote(o)}" for o in overrides])


def readme_ablations() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("### Ablations with DVC", 1)[1].split("```", 2)[1]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_ablations_are_the_tested_ones():
    commands = readme_ablations()
    runs = [c for c in commands if c.startswith("dvc exp run")]
    assert runs, "the README shows no ablation"
    tested = {exp_command(name, overrides) for name, overrides, _ in EXPERIMENTS}
    assert set(runs) <= tested, set(runs) - tested


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny project as a git repository (experiments need one), built once."""
    env = pipeline.subprocess_env()
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax-cache"))
    env["DVC_SITE_CACHE_DIR"] = str(tmp_path_factory.mktemp("dvc-site"))
    root = tmp_path_factory.mktemp("overrides") / "project"
    # every key written out, as in the default params.yaml: `-S key=value` changes existing keys
    params = tmp_path_factory.mktemp("params") / "params.yaml"
    params.write_text(yaml.safe_dump(load_params(TINY).model_dump(), sort_keys=False))
    pipeline.make_project(root, params)
    git = ["git", "-c", "user.name=pinn tests", "-c", "user.email=tests@pinn.invalid"]
    (root / ".gitignore").write_text("/data/resume/\n.jax_cache/\n")
    dvc = [sys.executable, "-m", "dvc"]
    # a repository-local identity: DVC commits the experiments, and CI may have no global one
    for cmd in (git + ["init", "-q"], ["git", "config", "user.name", "pinn tests"],
                ["git", "config", "user.email", "tests@pinn.invalid"],
                dvc + ["config", "core.no_scm", "false"],
                git + ["add", "-A"], git + ["commit", "-q", "-m", "tiny project"]):
        proc = _run(cmd, root, env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _run([sys.executable, "-m", "dvc", "repro"], root, env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    PARAMS_TEXT[root] = (root / "params.yaml").read_text()
    return root, env


#: each project's params.yaml as committed (no experiment may change it)
PARAMS_TEXT: dict[Path, str] = {}


def _stages_that_ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)':", output)) - {"params"}


def _expected(root: Path, overrides: list[str]) -> tuple[set[str], set[str]]:
    """(stages declaring a changed key, those plus everything downstream of them)."""
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    keys = [o.lstrip("~+").split("=")[0] for o in overrides]
    dag = pipeline.read_dag(root)
    declaring = set()
    for node in dag:
        name, _, item = node.name.partition("@")
        body = dvc_yaml["stages"][name].get("do", dvc_yaml["stages"][name])
        declared = [p.replace("${key}", item) for p in body.get("params", []) if isinstance(p, str)]
        if any(k == d or k.startswith(d + ".") or d.startswith(k + ".") for k in keys for d in declared):
            declaring.add(node.name)
    downstream = set(declaring)
    for node in dag:  # topological order
        if set(node.upstream) & downstream:
            downstream.add(node.name)
    return declaring, downstream - {"params"}


def _metrics_by_experiment(root: Path, env: dict, levels=("level0", "level1", "level2")) -> dict[str, dict]:
    """metrics.json of every experiment from `dvc exp show --json` (DVC's metrics), and each
    level's metrics.json (a cached output of the experiment's commit, read with `dvc.api`)."""
    import dvc.api

    proc = _run([sys.executable, "-m", "dvc", "exp", "show", "--json"], root, env)
    assert proc.returncode == 0, proc.stderr
    found = {}
    for commit in json.loads(proc.stdout):
        entries = [(commit.get("name") or commit["rev"], commit["rev"], commit.get("data") or {})]
        if commit["rev"] == "workspace":
            entries = [("workspace", None, commit.get("data") or {})]
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:  # (a failed experiment has no data)
                entries.append((exp.get("name") or rev.get("name"), rev["rev"], rev.get("data") or {}))
        for name, sha, data in entries:
            metrics = {f: v["data"] for f, v in (data.get("metrics") or {}).items() if "data" in v}
            assert list(metrics) in ([], ["metrics.json"]), f"{name}: DVC metrics {list(metrics)}"
            for level in levels:
                path = level_metrics(level)
                if sha is None:
                    if (root / path).exists():
                        metrics[path] = json.loads((root / path).read_text())
                    continue
                try:  # a cached output of the experiment's commit
                    metrics[path] = json.loads(dvc.api.read(path, repo=str(root), rev=sha))
                except Exception:  # (not an output of this experiment: one level fewer)
                    pass
            metrics["samples_in_collocation"] = _samples_in_collocation(root, sha)
            found[name] = metrics
    return found


def _samples_in_collocation(root: Path, sha: str | None, level: str = "level1") -> float:
    """The share of the level's last batch that are points of the fixed collocation set."""
    import io as _io

    import dvc.api
    import numpy as np

    def read(path):
        if sha is None:
            return np.load(root / path)
        return np.load(_io.BytesIO(dvc.api.read(path, repo=str(root), rev=sha, mode="rb")))

    try:
        batch = read(f"data/train/{level}/samples.npz")["points"].astype(np.float32)
        fixed = read("data/collocation.npz")["interior"].astype(np.float32)
    except Exception:
        return float("nan")
    known = {row.tobytes() for row in fixed}
    return float(np.mean([row.tobytes() in known for row in batch]))


def _metrics_of(root: Path, env: dict, name: str) -> dict:
    metrics = _metrics_by_experiment(root, env)
    assert name in metrics, f"{name}: not in `dvc exp show`"
    return metrics[name]


IDS = [name for name, _, _ in EXPERIMENTS]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name,overrides,effect", EXPERIMENTS, ids=IDS)
def test_override_takes_effect_and_reruns_only_what_it_touches(project, name, overrides, effect):
    root, env = project
    cmd = shlex.split(exp_command(name, overrides))
    proc = _run([sys.executable, "-m"] + cmd, root, env)
    out = proc.stdout + proc.stderr
    # (i) it succeeds, and leaves params.yaml as it was
    assert proc.returncode == 0, f"`{' '.join(cmd)}` failed:\n{out[-3000:]}"
    assert (root / "params.yaml").read_text() == PARAMS_TEXT[root], "the experiment edited params.yaml"
    # (iii) exactly what the change touches reran
    ran = _stages_that_ran(out)
    if name in ("one_level", "three_levels"):  # the DAG itself changes: from init on
        declaring = {"init"}
        allowed = {n for n in ran if n.startswith("train@")} | {"init", "refine", "window0",
                                                                 "evaluate", "report"}
    else:
        declaring, allowed = _expected(root, overrides)
    assert declaring <= ran, f"stages declaring the change did not run: {declaring - ran}"
    assert ran <= allowed, f"stages ran that the change does not touch: {ran - allowed}"
    untouched = {n.name for n in pipeline.read_dag(root)} - allowed - {"params"}
    if name in ("one_level", "three_levels"):
        untouched = {"reference", "collocation"}  # (the workspace's levels are not this DAG's)
    for stage in untouched:  # e.g. reference, collocation; the training when only refine changes
        assert re.search(rf"Stage '{re.escape(stage)}' (is cached|didn't change)", out), (
            f"{stage} was neither skipped nor restored from the run cache")
    # (ii) the value reached training
    metrics, base = _metrics_of(root, env, name), _metrics_of(root, env, "workspace")
    try:
        ok = effect(metrics, base)
    except KeyError as e:
        raise AssertionError(f"metric {e} missing: {metrics}") from None
    assert ok, f"{overrides} did not reach training: {metrics}"


def test_readme_comparison_commands_work(project):
    """The README's `dvc exp show` / `dvc exp diff` / `dvc plots diff` lines, on the experiments
    it ran above (the plots page: both experiments' rel L2 curves, nothing from the network)."""
    root, env = project
    for line in readme_ablations():
        if not line.startswith("dvc exp run"):
            proc = _run([sys.executable, "-m"] + shlex.split(line), root, env)
            assert proc.returncode == 0, f"{line}:\n{proc.stdout}{proc.stderr}"
            if line.startswith("dvc plots diff"):
                page = (root / "dvc_plots" / "index.html").read_text()
                revs = shlex.split(line)[3:]
                assert revs and all(f'"rev": "{rev}"' in page for rev in revs), line
                assert '"field": "rel_l2"' in page and "cdn." not in page, line
            else:
                assert "rel_l2" in proc.stdout, line
