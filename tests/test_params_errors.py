"""Malformed params.yaml: every case stops with a one-line message naming the key path (one line per
bad key), no traceback, no training, and no output touched — through `pinn check-params`,
the `train@level0` stage, and (a representative subset) `dvc repro` and the Prefect pipeline flow.

The table is run once per module (`table_results`), each case in its own copy of a project whose
reference, collocation and init outputs exist: `pinn check-params` as a subprocess for every case;
`train@level0`'s dvc.yaml command in-process (typer's CliRunner on the stage's `main`; an escaping
exception counts as a traceback) for every case and as a subprocess for a subset (each such process
spends ~1 CPU-second importing JAX). The per-case tests then check the recorded results.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pinn.config import validate_params
from conftest import make_tiny_project, output_of, pinn, stage, stage_argv, stages_ran

_GIVEN = {
    "seed": 0,
    "problem": {"name": "burgers_1d", "coefficients": {}},
    "model": {"width": 8, "depth": 2},
    "collocation": {"num_points": 512, "ic_points": 64, "bc_points": 64},
    "sampling": {"method": "uniform", "batch_size": 256, "ic_batch_size": 64, "bc_batch_size": 32},
    "multilevel": {"num_levels": 2, "coarsening_factor": 0.5, "levels": {
        "level0": {"steps": 20, "init_from": "init"},
        "level1": {"steps": 20, "init_from": "level0"}}},
    "refine": {"method": "lbfgs", "iterations": 10, "block_size": 10, "memory_size": 5},
    "train": {"log_every": 10, "checkpoint_every": 20},
    "report": {"dpi": 40, "snapshot_times": [0.0, 0.5, 1.0]},
}
#: every key written out: the params gate requires each key a stage declares to be in the file
VALID = validate_params(_GIVEN).model_dump()
MARKER = "executed-by-yaml"  # what the !!python tag would create if it were ever constructed


def setting(**dotted) -> str:
    """VALID with dotted keys set (a value of `DELETE` removes the key), as YAML."""
    data = copy.deepcopy(VALID)
    for key, value in dotted.items():
        *parents, last = key.split("__")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return yaml.safe_dump(data, sort_keys=False)


DELETE = object()
VALID_TEXT = yaml.safe_dump(VALID, sort_keys=False)

# (id, params.yaml text, regex the error must match, number of error lines)
CASES = [
    ("wrong_type_string", setting(model__width="wide"), r"model\.width = 'wide': must be a valid integer", 1),
    ("wrong_type_bool", setting(model__depth=True), r"model\.depth = True: must be a number, not a boolean", 1),
    ("wrong_type_fraction", setting(train__log_every=1.5), r"train\.log_every = 1\.5: must be a valid integer", 1),
    ("out_of_range", setting(model__width=100000), r"model\.width = 100000: must be less than or equal to 8192", 1),
    ("nan", setting(optimizer={"learning_rate": float("nan")}), r"optimizer\.learning_rate = nan: must be a finite number", 1),
    ("inf_weight", setting(balancing={"weights": {"pde": 1.0, "ic": float("inf")}}), r"balancing\.weights\.ic = inf: must be a finite number", 1),
    ("negative_size", setting(collocation__num_points=-512), r"collocation\.num_points = -512: must be greater than 0", 1),
    ("zero_batch", setting(sampling__batch_size=0), r"sampling\.batch_size = 0: must be greater than 0", 1),
    ("probability_above_1", setting(sampling__hard_bank={"p_max": 1.5}), r"sampling\.hard_bank\.p_max = 1\.5: must be less than or equal to 1", 1),
    ("percentile_above_100", setting(sampling__rar_d={"percentile": 101}), r"sampling\.rar_d\.percentile = 101: must be less than or equal to 100", 1),
    ("negative_weight", setting(balancing={"weights": {"pde": -1.0}}), r"balancing\.weights\.pde = -1\.0: must be >= 0", 1),
    ("unknown_section_typo", setting(trian={"log_every": 10}), r"trian: unknown key; did you mean 'train'\?", 1),
    ("unknown_key_typo", setting(optimizer={"learning_rte": 1e-3}), r"optimizer\.learning_rte: unknown key; did you mean 'learning_rate'\?", 1),
    ("level_key_typo", setting(multilevel__levels__level1={"step": 20, "init_from": "level0"}),
     r"multilevel\.levels\.level1\.step: unknown key; did you mean 'steps'\?", 2),
    ("coefficient_typo", setting(problem__coefficients={"viscosty": 0.01}),
     r"problem\.coefficients\.viscosty = 0\.01: not a coefficient of burgers_1d; did you mean 'viscosity'\?", 1),
    ("coefficient_wrong_type", setting(problem__coefficients={"viscosity": "abc"}),
     r"problem\.coefficients\.viscosity = 'abc': must be a number or a list of numbers$", 1),
    ("coefficient_boolean", setting(problem__coefficients={"viscosity": True}),
     r"problem\.coefficients\.viscosity = True: must be a number, not a boolean$", 1),
    ("coefficient_bad_element", setting(problem__coefficients={"viscosity": [0.01, "x"]}),
     r"problem\.coefficients\.viscosity = \[0\.01, 'x'\]: must be a number or a list of numbers$", 1),
    ("missing_required", setting(multilevel__levels__level1__init_from=DELETE),
     r"multilevel\.levels\.level1\.init_from: missing required key", 1),
    ("list_for_scalar", setting(sampling__batch_size=[256]), r"sampling\.batch_size = \[256\]: must be a valid integer", 1),
    ("scalar_for_section", setting(model=8), r"model = 8: must be a valid dictionary", 1),
    ("list_for_mapping", setting(multilevel__levels=["level0", "level1"]), r"multilevel\.levels = \[.*\]: must be a valid dictionary", 1),
    ("level_count", setting(multilevel__num_levels=3), r"multilevel\.num_levels = 3: but 2 levels are defined", 1),
    ("level_chain", setting(multilevel__levels__level1__init_from="init"),
     r"multilevel\.levels\.level1\.init_from = 'init': must be 'level0'", 1),
    ("bad_choice", setting(model__activation="relu"), r"model\.activation = 'relu': must be one of", 1),
    ("bad_precision", setting(refine__precision="float16"), r"refine\.precision = 'float16': must be one of", 1),
    ("inconsistent_bounds", setting(balancing={"gradnorm": {"min_weight": 5.0, "max_weight": 1.0}}),
     r"balancing\.gradnorm\.min_weight = 5\.0: must be <= 1 \(GradNorm keeps the mean weight at 1", 1),
    ("time_outside_domain", setting(report__snapshot_times=[0.0, 2.0]), r"report\.snapshot_times = \[0\.0, 2\.0\]: contains 2\.0, must be in \[0, 1\]", 1),
    ("lr_factor_above_1", setting(train={"divergence_lr_factor": 1.5}), r"train\.divergence_lr_factor = 1\.5: must be less than 1", 1),
    ("seed_overflow", setting(seed=10**20), r"seed = 100000000000000000000: must be less than or equal to", 1),
    ("two_bad_keys", setting(sampling__batch_size=0, model__depth=-1),
     r"model\.depth = -1: .*\n.*sampling\.batch_size = 0: ", 2),
    ("empty_file", "", r"params\.yaml: is empty", 1),
    ("yaml_syntax", VALID_TEXT + "model: {width: 8\n", r"params\.yaml: YAML syntax error at line \d+", 1),
    ("not_a_mapping", "- seed\n- 0\n", r"params\.yaml: must be a mapping of sections, got list", 1),
    ("python_tag", VALID_TEXT.replace("seed: 0", f'seed: !!python/object/apply:os.system ["touch {MARKER}"]'),
     r"params\.yaml: YAML tag not allowed at line 1, column 7", 1),
]
TRAIN = "train@level0"  # run by its command in dvc.yaml (as expanded for the valid params)
#: cases whose train stage also runs as a subprocess
TRAIN_SUBPROCESS = ["zero_batch", "two_bad_keys", "coefficient_typo", "empty_file", "yaml_syntax",
                    "python_tag", "wrong_type_bool", "level_chain"]
#: cases also run through `dvc repro` and the Prefect flow (params DVC itself can read)
SUBSET = ["zero_batch", "unknown_key_typo", "nan", "level_count"]
RUNS = ([(case, "check-params") for case in CASES] + [(case, "train-in-process") for case in CASES]
        + [(case, "train") for case in CASES if case[0] in TRAIN_SUBPROCESS])


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """(mtime ns, sha256) of every file under `root` except params.yaml."""
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "params.yaml"}


def assert_one_line_error(output: str, errors: str, pattern: str, lines: int) -> None:
    """`errors` (stderr or a message) is `lines` lines, the first `error: params.yaml: ...`, each
    naming the file; `pattern` matches; no traceback anywhere."""
    assert "Traceback" not in output, output
    got = errors.strip().splitlines()
    assert len(got) == lines, errors
    assert got[0].startswith("error: params.yaml: "), errors
    assert all("params.yaml" in line for line in got), errors
    assert re.search(pattern, errors.strip()), errors


#: outputs of earlier stages and of an earlier train@level0 run, as placeholders: the params error
#: must come first, so their contents never matter (if a bad file got through, `stage train` would
#: fail on these with a message naming a data file, which the tests do not accept)
EXISTING_OUTPUTS = ("data/reference.npz", "data/collocation.npz", "data/export/init.npz",
                    "data/export/level0.npz", "data/train/level0/metrics.json",
                    "data/train/level0/history.csv", "data/checkpoints/level0/20/state", "metrics.json")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A project with valid params and (placeholder) outputs."""
    project = tmp_path_factory.mktemp("params-errors") / "built"
    project.mkdir()
    (project / "params.yaml").write_text(VALID_TEXT)
    for i, name in enumerate(EXISTING_OUTPUTS):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes(f"output {i}\n".encode())
    return project


def run_in_process(project: Path, args: list[str]) -> SimpleNamespace:
    from typer.testing import CliRunner

    import importlib

    import typer

    from pinn.errors import one_line_errors

    _, _, module, *args = args  # python -m MODULE ARGS...: the stage's command, as a typer app
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(one_line_errors(importlib.import_module(module).main))

    cwd = os.getcwd()
    os.chdir(project)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        os.chdir(cwd)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback: " + "".join(traceback.format_exception(result.exception))
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=stderr)


@pytest.fixture(scope="module")
def table_results(built, pipeline_env) -> dict[tuple[str, str], SimpleNamespace]:
    """{(case, command): result}: every case in its own copy of `built`."""
    projects = {}
    for name, text, _, _ in CASES:
        projects[name] = built.parent / name
        shutil.copytree(built, projects[name])
        (projects[name] / "params.yaml").write_text(text)
    before = {name: snapshot(project) for name, project in projects.items()}

    def run(item):
        (name, *_), command = item
        if command == "train-in-process":
            return None  # below, in this thread (it changes the working directory)
        if command == "check-params":
            return pinn(projects[name], pipeline_env, "check-params")
        return stage(projects[name], pipeline_env, TRAIN, dag_of=built)

    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = dict(zip([(c[0], cmd) for c, cmd in RUNS], pool.map(run, RUNS)))
    for name in projects:
        procs[name, "train-in-process"] = run_in_process(projects[name], stage_argv(built, TRAIN))
    return {key: SimpleNamespace(proc=proc, project=projects[key[0]], before=before[key[0]],
                                 after=snapshot(projects[key[0]]))
            for key, proc in procs.items()}


@pytest.mark.parametrize("case, command", RUNS, ids=[f"{c[0]}-{cmd}" for c, cmd in RUNS])
def test_malformed_params_stop_with_one_line_naming_the_key(table_results, case, command):
    name, _, pattern, lines = case
    result = table_results[name, command]
    proc = result.proc
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert_one_line_error(proc.stdout + proc.stderr, proc.stderr, pattern, lines)
    assert result.after == result.before  # no training, nothing written, nothing touched
    assert not (result.project / "data" / "resume").exists()
    assert not (result.project / MARKER).exists()


def test_the_table_is_big_enough_and_the_valid_file_passes(built, pipeline_env):
    assert len(CASES) >= 20
    proc = pinn(built, pipeline_env, "check-params")
    assert proc.returncode == 0 and proc.stdout.strip() == "params.yaml: ok", output_of(proc)


# ----------------------------------------------------------------------------------------------
# the same through DVC and through the Prefect pipeline flow


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory, pipeline_env) -> Path:
    """The tiny DVC project with valid params, its `params` gate stage run, and placeholder files
    where the later stages' outputs go."""
    params = tmp_path_factory.mktemp("dvc-params") / "params.yaml"
    params.write_text(VALID_TEXT)
    project = make_tiny_project(tmp_path_factory.mktemp("params-errors-dvc") / "project",
                                pipeline_env, params)
    for i, name in enumerate(EXISTING_OUTPUTS):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes(f"output {i}\n".encode())
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "params"], cwd=project,
                          env=pipeline_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and (project / "data/params.ok").is_file(), output_of(proc)
    return project


def project_files(project: Path) -> dict[str, tuple[int, str]]:
    return {k: v for k, v in snapshot(project).items() if not k.startswith((".dvc/", ".git/"))}


@pytest.mark.parametrize("name", SUBSET)
def test_malformed_params_through_dvc_repro(dvc_project, pipeline_env, name):
    _, text, pattern, lines = next(c for c in CASES if c[0] == name)
    (dvc_project / "params.yaml").write_text(text)
    before = project_files(dvc_project)
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=dvc_project, env=pipeline_env,
                          capture_output=True, text=True, timeout=600)
    out = output_of(proc)
    assert proc.returncode != 0, out
    assert stages_ran(out) == ["params"], out  # the gate stage fails; DVC stops there
    errors = "\n".join(line for line in out.splitlines() if line.startswith(("error: ", "params.yaml: ")))
    assert_one_line_error(out, errors, pattern, lines)
    after = project_files(dvc_project)
    # only the gate's own stamp may go (DVC removes a stage's outputs before running it)
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} <= {
        "data/params.ok", "data/problem.stamp", "data/reference_source.stamp",
        "data/observations_source.stamp"}
    assert not (dvc_project / "data/params.ok").exists()


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.parametrize("name", SUBSET[:3])
def test_malformed_params_through_the_prefect_flow(dvc_project, pipeline_environ, prefect_server, name):
    from flows.pipeline import pipeline

    _, text, pattern, lines = next(c for c in CASES if c[0] == name)
    (dvc_project / "params.yaml").write_text(text)
    before = snapshot(dvc_project)
    state = pipeline(params_path=str(dvc_project / "params.yaml"), return_state=True)
    assert state.is_failed()
    assert_one_line_error(state.message, state.message, pattern, lines)
    assert snapshot(dvc_project) == before


def test_a_project_directory_named_pinn_is_refused(tmp_path):
    """`pinn run --workdir pinn` would make a directory `pinn/` that Python started next to it
    imports as the `pinn` package (a namespace package found before an editable install): the
    command refuses it in one line, before making anything."""
    from typer.testing import CliRunner

    from pinn.cli import app

    params = tmp_path / "tiny.yaml"
    params.write_text(VALID_TEXT)
    for workdir in (tmp_path / "pinn", tmp_path / "pinn" / "sub" / ".."):
        result = CliRunner().invoke(app, ["run", "--params", str(params), "--workdir",
                                          str(workdir)])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith(f"error: --workdir {workdir}: a project directory named 'pinn'")
    assert not (tmp_path / "pinn").exists()


def test_params_yaml_in_place_outside_a_project_is_one_line(tmp_path, monkeypatch):
    """`pinn run --params params.yaml` in a folder that is not a pipeline project (a fresh user's
    own folder): one line saying so and naming --workdir, not DVC's NotDvcRepoError traceback;
    nothing is written there."""
    from typer.testing import CliRunner

    from pinn.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(VALID_TEXT)
    result = CliRunner().invoke(app, ["run", "--params", "params.yaml"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: --params params.yaml: runs in place, but ")
    assert "--workdir DIR" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_what_the_refusal_prevents(tmp_path):
    """Why: with this checkout installed in editable mode, a directory `pinn/` (no __init__.py)
    in the working directory hides the package's own `pinn/__init__.py` from `python -c`."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    finder = subprocess.run(  # (asked of a fresh interpreter, away from any `pinn/` directory)
        [sys.executable, "-c", "import sys; print(any('Editable' in repr(f) for f in sys.meta_path))"],
        cwd=tmp_path, capture_output=True, text=True, env=env)
    if finder.stdout.strip() != "True":
        pytest.skip("the pinn package is not an editable install")
    (tmp_path / "pinn").mkdir()
    proc = subprocess.run([sys.executable, "-c", "import pinn; print(pinn.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "None", proc.stdout + proc.stderr
