"""Stage contracts that cannot drift: a stage's outputs depend only on what dvc.yaml declares.

1. Code: the `pinn/` modules a stage's module imports, transitively (every `import` statement,
   also inside functions, parsed with `ast`), are exactly the code dependencies dvc.yaml lists for
   that stage (a directory dependency covers the files under it; every listed one must be used).
2. Params: each stage, run on the same input files with every params key it does NOT declare
   changed to another valid value, writes byte-identical outputs (time columns aside).
3. Precision is scoped: configurations A, B, A run in one process give the A results of a fresh
   process, bit for bit.
"""

from __future__ import annotations

import ast
import copy
import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pinn import pipeline
from pinn.config import load_params

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "benchmarks" / "regression" / "params.yaml"
#: columns and metrics that measure time, not results
TIMES = {"wall_s", "steps_per_s"}


# ----------------------------------------------------------------------------------------------
# 1. code dependencies = the import graph


def _module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    return None


def _imports(name: str) -> set[str]:
    """The `pinn` modules named by any import statement of module `name`."""
    path = _module_file(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] == "pinn" and _module_file(m)}


def import_closure(module: str) -> set[str]:
    """Files (relative to the root) of `module`, the packages above it, and all they import."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(_imports(name))
    return {_module_file(m).relative_to(ROOT).as_posix() for m in seen}


@pytest.fixture(scope="module")
def dag(tmp_path_factory) -> list[pipeline.StageNode]:
    project = pipeline.make_project(tmp_path_factory.mktemp("dag") / "p", TINY)
    return pipeline.read_dag(project)


def test_code_dependencies_are_the_import_graph(dag):
    checked = 0
    for node in dag:
        module, _ = pipeline.stage_module(node.cmd)
        needed = import_closure(module)
        code = [d for d in node.deps if d.startswith("pinn")]
        covered = {f for f in needed for d in code if f == d or f.startswith(d.rstrip("/") + "/")}
        missing = sorted(needed - covered)
        assert not missing, f"stage {node.name} imports {missing} but dvc.yaml does not list them"
        unused = [d for d in code if not any(f == d or f.startswith(d + "/") for f in needed)]
        assert not unused, f"stage {node.name} lists {unused} in dvc.yaml but never imports them"
        checked += 1
    # the gate, the plots page, 4 single stages, 2 levels, refine, window0, evaluate, report (tiny
    # params: windows off, so no window@ stage)
    assert checked == 11


def test_the_closure_sees_imports_inside_functions():
    closure = import_closure("pinn.stages.train")
    # imported only inside functions of the train stage / the cascade
    assert {"pinn/checkpoint.py", "pinn/models.py", "pinn/stages/train.py"} <= closure
    assert "pinn/report/__init__.py" not in closure and "pinn/refine.py" not in closure


# ----------------------------------------------------------------------------------------------
# 2. params: undeclared keys do not reach a stage's outputs


#: a complete, valid alternative to the tiny params in which every key a stage could read differs
#: (same problem and level names, so any mix with the tiny params is valid too)
ALTERNATIVE = {
    "seed": 3,
    "problem": {"name": "burgers_1d", "coefficients": {"viscosity": 0.02}},
    "model": {"width": 12, "depth": 3, "activation": "sin", "periodic_embedding": False,
              "hard_initial_condition": True,
              "fourier_features": 4, "fourier_scale": 2.0, "rwf": True, "rwf_mean": 0.3,
              "rwf_std": 0.2},
    "collocation": {"num_points": 300, "ic_points": 40, "bc_points": 40, "method": "uniform"},
    "sampling": {"method": "rad", "batch_size": 128, "ic_batch_size": 32, "bc_batch_size": 16,
                 "uniform": {"resample": False},
                 "rad": {"k": 2.0, "c": 0.5, "pool_size": 1024, "resample_every": 7},
                 "rar_d": {"num_new_points": 8, "percentile": 80.0, "noise_scale": 0.1, "every": 9,
                           "capacity": 600, "pool_size": 512},
                 "hard_bank": {"pool_size": 512, "bank_size": 64, "top_k": 16, "refresh_every": 9,
                               "p_start_step": 3, "p_ramp_steps": 10, "p_max": 0.3}},
    "balancing": {"method": "gradnorm", "weights": {"pde": 2.0, "ic": 5.0, "bc": 3.0},
                  "gradnorm": {"alpha": 1.0, "learning_rate": 0.05, "update_every": 3,
                               "min_weight": 0.2, "max_weight": 8.0},
                  "grad_ratio": {"momentum": 0.5, "update_every": 7},
                  "causal": {"enabled": True, "tolerance": 2.0, "num_chunks": 8}},
    "multilevel": {"num_levels": 2, "coarsening_factor": 0.75, "finest_warmup_steps": 5,
                   "levels": {"level0": {"steps": 30, "init_from": "init"},
                              "level1": {"steps": 50, "init_from": "level0"}}},
    "optimizer": {"learning_rate": 2e-3, "warmup_steps": 5, "decay_rate": 0.8, "decay_steps": 500,
                  "b1": 0.8, "b2": 0.99, "switch_loss_threshold": 1e-9},
    "refine": {"method": "ssbroyden", "iterations": 12, "block_size": 6, "memory_size": 3,
               "max_linesearch_steps": 10, "precision": "float32", "resample_every_blocks": 1,
               "rad_k": 2.0, "rad_c": 0.5},
    "train": {"log_every": 5, "checkpoint_every": 10, "precision": "float64",
              "max_divergence_retries": 2, "divergence_lr_factor": 0.25, "ntk_every": 3,
              "ntk_points": 16},
    "reference": {"warn_above": 1e-5, "fail_above": 0.5, "allow_inaccurate": True},
    "evaluate": {"chunk_size": 1000},
    "report": {"title": "another title", "dpi": 30, "snapshot_times": [0.0, 1.0]},
    # (coordinator, process count and id choose which runtime to join, not what is computed)
    "distributed": {"data_parallel": True},
}


def _get(data: dict, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


def _set(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = copy.deepcopy(value)


def _declared(dvc_yaml: dict, node: pipeline.StageNode) -> list[str]:
    name, _, key = node.name.partition("@")
    stage = dvc_yaml["stages"][name]
    entries = stage.get("do", stage).get("params", [])
    return [e.replace("${key}", key) for e in entries if isinstance(e, str)]


def _leaves(data, prefix=""):
    if isinstance(data, dict) and data:
        for k, v in data.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix, data


def test_the_alternative_changes_every_key_that_stages_read():
    from pinn.config import validate_params

    base = dict(_leaves(load_params(TINY).model_dump()))
    alternative = dict(_leaves(validate_params(ALTERNATIVE, source="alternative").model_dump()))
    same = {k for k, v in alternative.items() if base.get(k) == v}
    # problem.target: None in both (built-in problems; a target is the problem, as name is);
    # reference.file, .keys, .columns: unset in both (a reference file is the reference, read
    # only by the reference stage, which declares `reference`: tests/test_reference_files.py);
    # problem.observations.*: unset in both (the built-ins have no observations; the data are read
    # by the collocation stage, which declares `problem`: tests/test_observations.py)
    # problem.trainable: unset in both (the built-ins' coefficients are known; trainable ones are
    # read through `problem`, which every stage that builds the problem declares:
    # tests/test_trainable_coefficients.py)
    # windows: off in both (the tiny DAG has no window@ stage, and a mix of one count with another
    # file's later windows is invalid; tests/test_windows.py checks their reruns through DVC)
    assert same == {"problem.name", "problem.target", "reference.file", "reference.keys",
                    "reference.columns", "problem.observations.file", "problem.observations.keys",
                    "problem.observations.columns", "problem.trainable",
                    "multilevel.num_levels", "multilevel.levels.level0.init_from",
                    "multilevel.levels.level1.init_from", "distributed.coordinator_address",
                    "distributed.num_processes", "distributed.process_id", "windows.count",
                    "windows.later"}


def _outputs(project: Path, node: pipeline.StageNode) -> dict[str, object]:
    """Comparable contents of the stage's outputs (time columns dropped; orbax checkpoint
    directories, whose metadata holds timestamps, are compared through the exports instead)."""
    found: dict[str, object] = {}
    for out in node.outs:
        path = project / out
        if out.startswith("data/checkpoints/"):
            continue
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        assert files, f"{node.name}: output {out} missing"
        for f in files:
            rel = f.relative_to(project).as_posix()
            if f.suffix == ".csv":
                frame = pd.read_csv(f)
                found[rel] = frame.drop(columns=[c for c in TIMES if c in frame]).to_csv(index=False)
            elif f.suffix == ".json":
                found[rel] = {k: v for k, v in json.loads(f.read_text()).items() if k not in TIMES}
            elif f.suffix == ".md":
                found[rel] = "\n".join(line for line in f.read_text().splitlines()
                                       if "wall" not in line.lower() and "/s" not in line)
            else:
                found[rel] = f.read_bytes()
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[pipeline.StageNode]]:
    """The tiny pipeline, run in-process once, with every params key written out."""
    params = tmp_path_factory.mktemp("params") / "params.yaml"
    params.write_text(yaml.safe_dump(load_params(TINY).model_dump(), sort_keys=False))
    project = pipeline.make_project(tmp_path_factory.mktemp("built") / "p", params)
    pipeline.run_in_process(project)
    return project, pipeline.read_dag(project)


@pytest.mark.slow
def test_undeclared_params_do_not_reach_a_stages_outputs(built, tmp_path):
    project, dag = built
    dvc_yaml = yaml.safe_load((project / "dvc.yaml").read_text())
    base = yaml.safe_load((project / "params.yaml").read_text())
    checked = []
    for node in dag:
        if node.name == "params":
            continue  # the gate reads the whole file by design (its stamp is constant)
        mixed = copy.deepcopy(ALTERNATIVE)
        mixed["distributed"] = dict(base["distributed"], **ALTERNATIVE["distributed"])
        for key in _declared(dvc_yaml, node):
            _set(mixed, key, _get(base, key))
        work = tmp_path / node.name.replace("@", "-")
        shutil.copytree(project, work, symlinks=True)
        (work / "params.yaml").write_text(yaml.safe_dump(mixed, sort_keys=False))
        for out in node.outs:  # as DVC does: the stage's outputs are removed before it runs
            target = work / out
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        module, args = pipeline.stage_module(node.cmd)
        from pinn.stages.common import invoke

        with pipeline._cwd(work):
            invoke(importlib.import_module(module).main, args)
        want, got = _outputs(project, node), _outputs(work, node)
        assert got.keys() == want.keys(), node.name
        for name in want:
            assert got[name] == want[name], (
                f"stage {node.name}: {name} changed when only params it does not declare changed "
                f"(declared: {_declared(dvc_yaml, node)})")
        checked.append(node.name)
    assert len(checked) == 10  # every stage but the gate (the plots page, window0 included)


# ----------------------------------------------------------------------------------------------
# 3. precision is scoped: A, B, A in one process = A in a fresh process


def _results(project: Path) -> dict[str, bytes]:
    files = ["data/export/level0.npz", "data/export/level1.npz", "data/refined.npz",
             "data/train/level1/samples.npz"]
    out = {f: (project / f).read_bytes() for f in files}
    metrics = json.loads((project / "metrics.json").read_text())
    out["metrics"] = json.dumps(metrics, sort_keys=True).encode()
    return out


@pytest.mark.slow
def test_runs_in_one_process_equal_a_fresh_process(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text(TINY.read_text().replace("method: lbfgs", "method: ssbroyden"))  # f64 refine
    b = tmp_path / "b.yaml"
    data = yaml.safe_load(a.read_text())
    data["sampling"]["method"] = "rad"
    data["train"]["precision"] = "float64"
    data["seed"] = 5
    b.write_text(yaml.safe_dump(data))

    fresh = pipeline.make_project(tmp_path / "fresh", a)
    code = f"from pinn import pipeline; pipeline.run_in_process({str(fresh)!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    runs = []
    for i, params in enumerate([a, b, a]):
        project = pipeline.make_project(tmp_path / f"run{i}", params)
        pipeline.run_in_process(project)
        runs.append(_results(project))
    assert runs[0] == _results(fresh), "the first in-process run differs from a fresh process"
    assert runs[2] == runs[0], "A after B differs from A before it: state leaked between runs"
    assert runs[1] != runs[0]
    x = np.load(tmp_path / "run2" / "data/train/level1/samples.npz")["points"]
    assert x.dtype == np.float32  # a float32 run draws float32 points after a float64 one


# ----------------------------------------------------------------------------------------------
# 4. `pinn run --params FILE` runs FILE, in a project of its own


@pytest.mark.slow
def test_pinn_run_with_another_params_file_runs_that_file(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(TINY.read_text().replace("title: Regression benchmark", "title: Another file"))
    pinn_cli = Path(sys.executable).parent / "pinn"
    proc = subprocess.run([str(pinn_cli), "run", "--params", str(other)], cwd=tmp_path,
                          capture_output=True, text=True, env=pipeline.subprocess_env())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    project = tmp_path / "runs" / "other"
    assert (project / "params.yaml").read_text() == other.read_text()
    assert "Another file" in (project / "report" / "report.md").read_text()
    assert str(project / "report" / "report.md") in proc.stdout
    assert not (tmp_path / "params.yaml").exists()  # nothing written where it was called
    history = pd.read_csv(project / "data" / "train" / "level0" / "history.csv")
    assert len(history) == 4 and np.isfinite(history["loss"]).all()
    # a rerun reruns nothing but the gate
    again = subprocess.run([str(pinn_cli), "run", "--params", str(other)], cwd=tmp_path,
                           capture_output=True, text=True, env=pipeline.subprocess_env())
    assert again.returncode == 0
    assert set(re.findall(r"Running stage '([^']+)'", again.stdout + again.stderr)) == {"params"}


@pytest.mark.slow
def test_dvc_repro_and_the_in_process_runner_give_the_same_numbers(tmp_path):
    """Benchmarks and studies run `dvc repro`; tests may run the same commands in-process: on the
    same params both give the same exports, refined network and metrics, bit for bit."""
    by_dvc = pipeline.make_project(tmp_path / "dvc", TINY)
    assert pipeline.repro(by_dvc) == 0
    in_process = pipeline.make_project(tmp_path / "in-process", TINY)
    pipeline.run_in_process(in_process)
    assert _results(by_dvc) == _results(in_process)
