"""References from files (issue 11, part B): `reference.file` instead of a built-in solver.

- round trips: Burgers' certified reference written as .npz (grid, scattered, per-input arrays),
  .mat (MATLAB's transposed layout, renamed arrays), COMSOL text (columns in any order, units in
  the header, the time-series layout with `@ t=` columns), CSV, headerless text — read back equal;
- every bad input is one line naming `reference.file` and the file (the gate reads the file
  before any stage runs);
- a file's reference is not certified: its error is unknown (null in metrics.json) and
  `reference.fail_above` does not reject it; an error the file states is checked like a solver's;
- scattered points are evaluated where they are, and the report draws what applies;
- through DVC (tiny params): the file's data give the built-in reference's metrics, editing the
  file reruns the reference stage and everything downstream, an unrelated edit reruns nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import yaml

from pinn.config import REFERENCE_FILE_SUFFIXES, ConfigError, load_params, validate_params
from pinn.errors import UserError
from pinn.reference import Reference
from pinn.reference.files import SUFFIXES, read_reference
from pinn.stages.common import invoke

TINY = Path(__file__).resolve().parents[1] / "benchmarks" / "regression" / "params.yaml"
INPUTS = ("t", "x")


@pytest.fixture(scope="module")
def burgers() -> Reference:
    """Burgers' certified reference (Cole–Hopf, the built-in solver; a few seconds)."""
    from pinn.problems import make_problem

    return make_problem("burgers_1d").reference(progress=False)


def comsol_text(path: Path, columns: dict[str, np.ndarray], header: str | None = None,
                sep: str = "  ") -> Path:
    """A COMSOL-style export: `%` lines, the last naming the columns (two spaces apart)."""
    names = header if header is not None else sep.join(columns)
    lines = ["% Model:              burgers.mph", "% Version:            COMSOL 6.1",
             "% Dimension:          1", f"% {names}"]
    data = np.stack(list(columns.values()), axis=-1)
    lines += [" ".join(f"{v:.17g}" for v in row) for row in data]
    path.write_text("\n".join(lines) + "\n")
    return path


def long_columns(ref: Reference) -> dict[str, np.ndarray]:
    """x, t, u per grid node (time second, as COMSOL and PINNacle write it)."""
    p = ref.points()
    return {"x": p[:, 1], "t": p[:, 0], "u (1)": ref.u.reshape(-1)}


def assert_same_grid(got: Reference, want: Reference) -> None:
    assert got.is_grid and got.shape == want.shape
    np.testing.assert_array_equal(got.t, want.t)
    np.testing.assert_array_equal(got.x, want.x)
    np.testing.assert_array_equal(got.u, want.u)
    assert not got.certified and got.source


# ----------------------------------------------------------------------------------------------
# round trips


def test_npz_grid_round_trip(burgers, tmp_path):
    np.savez(tmp_path / "ref.npz", t=burgers.t, x=burgers.x, u=burgers.u)
    ref = read_reference(tmp_path / "ref.npz", INPUTS)
    assert_same_grid(ref, burgers)
    assert ref.est_rel_error is None and ref.fields == {}
    # what the reference stage stores reads back the same, source and unknown error included
    ref.save(tmp_path / "stored.npz")
    back = Reference.load(tmp_path / "stored.npz")
    assert_same_grid(back, burgers)
    assert back.est_rel_error is None and back.source == ref.source


def test_npz_with_a_stated_error_and_unsorted_axis(burgers, tmp_path):
    order = np.random.default_rng(0).permutation(burgers.x.size)
    np.savez(tmp_path / "ref.npz", t=burgers.t, x=burgers.x[order], u=burgers.u[:, order],
             est_rel_error=2e-9)
    ref = read_reference(tmp_path / "ref.npz", INPUTS)
    assert_same_grid(ref, burgers)
    assert ref.est_rel_error == 2e-9


def test_mat_transposed_with_renamed_arrays(burgers, tmp_path):
    """Raissi's burgers_shock.mat layout: column vectors t, x and usol (x, t)."""
    scipy.io.savemat(tmp_path / "ref.mat", {"tt": burgers.t[:, None], "x": burgers.x[:, None],
                                             "usol": burgers.u.T})
    ref = read_reference(tmp_path / "ref.mat", INPUTS, keys={"u": "usol", "t": "tt"})
    assert_same_grid(ref, burgers)
    assert ref.meta == {"transposed": 1}


def test_scattered_npz_and_mat_stay_scattered_and_keep_their_fields(burgers, tmp_path):
    rng = np.random.default_rng(1)
    pick = rng.choice(burgers.u.size, 700, replace=False)
    points, u = burgers.points()[pick], burgers.u.reshape(-1)[pick]
    np.savez(tmp_path / "a.npz", points=points, u=u, v=-u, flux=u**2)
    scipy.io.savemat(tmp_path / "b.mat", {"t": points[:, :1], "x": points[:, 1:], "u": u[:, None]})
    for name, fields in (("a.npz", {"v", "flux"}), ("b.mat", set())):
        ref = read_reference(tmp_path / name, INPUTS)
        assert not ref.is_grid and ref.input_names == INPUTS and ref.shape == (700,)
        np.testing.assert_array_equal(ref.points(), points)
        np.testing.assert_array_equal(ref.u, u)
        assert set(ref.fields) == fields
    ref = read_reference(tmp_path / "a.npz", INPUTS)
    np.testing.assert_array_equal(ref.fields["v"], -u)
    ref.save(tmp_path / "stored.npz")
    back = Reference.load(tmp_path / "stored.npz")
    assert back.columns == INPUTS and set(back.fields) == {"v", "flux"}
    np.testing.assert_array_equal(back.points(), points)


def test_scattered_points_of_a_full_grid_are_stored_as_that_grid(burgers, tmp_path):
    shuffle = np.random.default_rng(2).permutation(burgers.u.size)
    np.savez(tmp_path / "ref.npz", points=burgers.points()[shuffle],
             u=burgers.u.reshape(-1)[shuffle])
    assert_same_grid(read_reference(tmp_path / "ref.npz", INPUTS), burgers)


def test_comsol_text_round_trip(burgers, tmp_path):
    path = comsol_text(tmp_path / "ref.txt", long_columns(burgers),
                       header="x                       t                        u (1)")
    assert_same_grid(read_reference(path, INPUTS), burgers)


def test_comsol_time_series_round_trip(burgers, tmp_path):
    """COMSOL's default export of a time-dependent study: x, then `u (1) @ t=...` per time."""
    columns = {"x": burgers.x} | {f"u (1) @ t={t:.17g}": burgers.u[k] for k, t in enumerate(burgers.t)}
    path = comsol_text(tmp_path / "ref.dat", columns)
    assert_same_grid(read_reference(path, INPUTS), burgers)


def test_several_fields_in_text(burgers, tmp_path):
    cols = long_columns(burgers) | {"v (m/s)": 2 * burgers.u.reshape(-1)}
    ref = read_reference(comsol_text(tmp_path / "ref.txt", cols), INPUTS)
    assert_same_grid(ref, burgers)
    np.testing.assert_array_equal(ref.fields["v"], 2 * burgers.u)
    # the evaluated field named by keys: here v, so u is stored as a further field
    ref = read_reference(tmp_path / "ref.txt", INPUTS, keys={"u": "v"})
    np.testing.assert_array_equal(ref.u, 2 * burgers.u)
    assert "u" not in ref.fields  # (a further field may not take the evaluated field's name)


def test_csv_headerless_and_named_columns(burgers, tmp_path):
    p = burgers.points()
    u = burgers.u.reshape(-1)
    rows = "\n".join(f"{a:.17g},{b:.17g},{c:.17g}" for a, b, c in zip(p[:, 0], p[:, 1], u))
    (tmp_path / "ref.csv").write_text("t,x,u\n" + rows + "\n")
    assert_same_grid(read_reference(tmp_path / "ref.csv", INPUTS), burgers)
    # no header at all: the inputs in the problem's order, then the field
    (tmp_path / "plain.txt").write_text(rows.replace(",", " ") + "\n")
    assert_same_grid(read_reference(tmp_path / "plain.txt", INPUTS), burgers)
    # another order, named in params (reference.columns)
    swapped = "\n".join(f"{c:.17g} {b:.17g} {a:.17g}" for a, b, c in zip(p[:, 0], p[:, 1], u))
    (tmp_path / "swapped.dat").write_text(swapped + "\n")
    ref = read_reference(tmp_path / "swapped.dat", INPUTS, columns=["T", "x", "t"])
    assert_same_grid(ref, burgers)


def test_steady_problem_reference_is_scattered(tmp_path):
    x, y = np.linspace(0, 1, 5), np.linspace(0, 2, 7)
    u = np.sin(x)[:, None] * np.cos(y)[None, :]
    np.savez(tmp_path / "ref.npz", x=x, y=y, u=u)
    ref = read_reference(tmp_path / "ref.npz", ("x", "y"), time=None)
    assert not ref.is_grid and ref.input_names == ("x", "y") and ref.shape == (35,)
    X, Y = np.meshgrid(x, y, indexing="ij")
    np.testing.assert_array_equal(ref.points(), np.stack([X.ravel(), Y.ravel()], -1))
    np.testing.assert_array_equal(ref.u, u.reshape(-1))


def test_the_schema_accepts_the_suffixes_the_reader_reads():
    assert tuple(REFERENCE_FILE_SUFFIXES) == tuple(SUFFIXES)


# ----------------------------------------------------------------------------------------------
# bad inputs: one line naming reference.file and the file, at the gate


def _write_bad(tmp_path: Path, name: str) -> str:
    t, x = np.linspace(0, 1, 4), np.linspace(-1, 1, 6)
    u = np.zeros((4, 6))
    d = tmp_path
    if name == "missing":
        return "refs/absent.npz"
    if name == "unreadable_npz":
        (d / "refs/bad.npz").write_bytes(b"not a zip archive at all")
        return "refs/bad.npz"
    if name == "unreadable_mat":
        (d / "refs/bad.mat").write_bytes(b"MATLAB? no")
        return "refs/bad.mat"
    if name == "unreadable_text":
        (d / "refs/bad.txt").write_bytes(b"\xff\xfe\x00garbage\x81")
        return "refs/bad.txt"
    if name == "missing_array":
        np.savez(d / "refs/ref.npz", t=t, x=x, sol=u)
        return "refs/ref.npz"
    if name == "shape_mismatch":
        np.savez(d / "refs/ref.npz", t=t, x=x, u=np.zeros((5, 6)))
        return "refs/ref.npz"
    if name == "nan_npz":
        bad = u.copy()
        bad[1, 2] = np.nan
        np.savez(d / "refs/ref.npz", t=t, x=x, u=bad)
        return "refs/ref.npz"
    if name == "nan_mat":
        scipy.io.savemat(d / "refs/ref.mat", {"t": t, "x": [[np.nan, *x[1:]]], "u": u})
        return "refs/ref.mat"
    if name == "nan_text":
        (d / "refs/ref.txt").write_text("% t x u\n0 0 1\n0 1 nan\n")
        return "refs/ref.txt"
    if name == "missing_column":
        (d / "refs/ref.txt").write_text("% t  y  u\n0 0 1\n0 1 2\n")
        return "refs/ref.txt"
    if name == "header_count":
        (d / "refs/ref.txt").write_text("% t  x\n0 0 1\n0 1 2\n")
        return "refs/ref.txt"
    if name == "ragged_rows":
        (d / "refs/ref.txt").write_text("% t x u\n0 0 1\n0 1\n")
        return "refs/ref.txt"
    if name == "points_shape":
        np.savez(d / "refs/ref.npz", points=np.zeros((10, 3)), u=np.zeros(10))
        return "refs/ref.npz"
    if name == "not_numbers":
        (d / "refs/ref.txt").write_text("% t x u\n0 0 1\n0 1 one\n")
        return "refs/ref.txt"
    if name == "no_rows":
        (d / "refs/ref.dat").write_text("% t x u\n")
        return "refs/ref.dat"
    raise AssertionError(name)


BAD = {
    "missing": "file not found",
    "unreadable_npz": "not a readable .npz file",
    "unreadable_mat": "not a readable .mat file",
    "unreadable_text": "not a readable text file",
    "missing_array": "array 'u' is missing",
    "shape_mismatch": r"array 'u' has shape \(5, 6\), expected \(4, 6\)",
    "nan_npz": "array 'u' has 1 NaN or infinite value",
    "nan_mat": "array 'x' has 1 NaN or infinite value",
    "nan_text": "1 NaN or infinite value.* line 3",
    "missing_column": "column 'x' is missing",
    "header_count": "its last header line does not name its 3 columns",
    "ragged_rows": "line 3 has 2 columns, line 2 has 3",
    "points_shape": r"array 'points' must have shape \(N, 2\)",
    "no_rows": "no data rows",
    "not_numbers": "line 3: 'one' is not a number",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_reference_file_is_one_line_at_the_gate(tmp_path, monkeypatch, name):
    from pinn.stages.gate import check_feasible

    monkeypatch.chdir(tmp_path)
    (tmp_path / "refs").mkdir()
    file = _write_bad(tmp_path, name)
    data = yaml.safe_load(TINY.read_text())
    data["reference"]["file"] = file
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    cfg = load_params("params.yaml")  # the schema: the path is fine
    with pytest.raises(ConfigError) as err:
        check_feasible(cfg, "params.yaml")
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"params.yaml: reference.file = '{file}': "), message
    assert __import__("re").search(BAD[name], message), message


def test_the_reference_stage_names_the_key_and_file_too(tmp_path, monkeypatch):
    """Without the gate (a stage run by hand), the stage's own error is the same one line."""
    from pinn.stages import reference as stage

    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path, file="absent.mat")
    with pytest.raises(UserError, match=r"^reference\.file = 'absent\.mat': file not found$"):
        invoke(stage.main, ["--params", str(params), "--out", "ref.npz", "--quiet"])
    assert not (tmp_path / "ref.npz").exists()


@pytest.mark.parametrize("reference,message", [
    ({"file": "ref.h5"}, r"params\.yaml: reference\.file = 'ref\.h5': unsupported format"),
    ({"file": "ref.npz", "keys": {"velocity": "v"}},
     r"params\.yaml: reference\.keys\.velocity = 'v': not a name the reference reader looks for "
     r"\(names: t, x, u, points, est_rel_error\)"),
    ({"file": "ref.txt", "columns": ["x", "x", "u"]},
     r"params\.yaml: reference\.columns = \['x', 'x', 'u'\]: names x more than once"),
])
def test_schema_errors_name_the_key(reference, message):
    with pytest.raises(ConfigError, match=message):
        validate_params({"problem": {"name": "burgers_1d"}, "reference": reference},
                        source="params.yaml")


# ----------------------------------------------------------------------------------------------
# not certified: the stage, its limits and its output


def _params(tmp_path: Path, **reference) -> Path:
    data = load_params(TINY).model_dump()
    data["reference"].update(reference)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_file_reference_is_not_rejected_and_says_it_is_not_certified(burgers, tmp_path,
                                                                    monkeypatch, capsys):
    from pinn.stages import reference as stage

    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "ref.npz", t=burgers.t, x=burgers.x, u=burgers.u)
    # limits no built-in solver could meet: an unknown error is not checked against them
    params = _params(tmp_path, file="ref.npz", warn_above=1e-30, fail_above=1e-30)
    invoke(stage.main, ["--params", str(params), "--out", "out.npz", "--quiet"])
    captured = capsys.readouterr()
    assert "not certified here" in captured.out and "its error is unknown" in captured.out
    assert "warning" not in captured.err
    stored = Reference.load(tmp_path / "out.npz")
    assert stored.est_rel_error is None and stored.source == "ref.npz"
    np.testing.assert_array_equal(stored.u, burgers.u)


def test_a_stated_error_is_checked_like_a_solvers(burgers, tmp_path, monkeypatch, capsys):
    from pinn.stages import reference as stage

    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "ref.npz", t=burgers.t, x=burgers.x, u=burgers.u, est_rel_error=0.2)
    params = _params(tmp_path, file="ref.npz")
    with pytest.raises(UserError, match=r"from ref\.npz: .*above reference\.fail_above = 0\.01"):
        invoke(stage.main, ["--params", str(params), "--out", "out.npz", "--quiet"])
    params = _params(tmp_path, file="ref.npz", allow_inaccurate=True)
    invoke(stage.main, ["--params", str(params), "--out", "out.npz", "--quiet"])
    assert "reference.warn_above" in capsys.readouterr().err
    assert Reference.load(tmp_path / "out.npz").est_rel_error == 0.2


def test_the_gate_stamps_the_files_content(burgers, tmp_path, monkeypatch):
    from pinn.stages.gate import reference_stamp

    monkeypatch.chdir(tmp_path)
    builtin = reference_stamp(load_params(_params(tmp_path)))
    assert builtin == reference_stamp(load_params(TINY))  # constant for a built-in solver
    np.savez(tmp_path / "ref.npz", t=burgers.t, x=burgers.x, u=burgers.u)
    cfg = load_params(_params(tmp_path, file="ref.npz"))
    first = reference_stamp(cfg)
    assert first != builtin and "ref.npz" in first
    assert reference_stamp(cfg) == first
    np.savez(tmp_path / "ref.npz", t=burgers.t, x=burgers.x, u=1.01 * burgers.u)
    assert reference_stamp(cfg) != first


# ----------------------------------------------------------------------------------------------
# scattered points: evaluation and the report


def test_accuracy_at_scattered_points():
    import jax
    import jax.numpy as jnp

    from pinn.evaluate import accuracy

    rng = np.random.default_rng(3)
    points = rng.uniform([0, -1], [1, 1], (333, 2))
    exact = np.sin(np.pi * points[:, 1]) * np.exp(-points[:, 0])
    ref = Reference.at_points(points, INPUTS, exact, None, source="ref.npz")
    with jax.enable_x64(True):
        acc = accuracy(lambda z: jnp.sin(jnp.pi * z[:, 1]) * jnp.exp(-z[:, 0]) + 0.01 * z[:, 0],
                       ref, dtype=jnp.float64, chunk=100)
    err = 0.01 * points[:, 0]
    assert acc.prediction.shape == (333,)
    assert math.isclose(acc.rel_l2, np.linalg.norm(err) / np.linalg.norm(exact), rel_tol=1e-9)
    assert math.isclose(acc.max_abs, err.max(), rel_tol=1e-9)


def test_report_of_a_scattered_reference(tmp_path):
    from pinn import report
    from test_report import assert_valid_png, make_run, params, referenced_pngs, summary_value

    make_run(tmp_path)  # a full synthetic run, then a scattered reference in place of the grid
    rng = np.random.default_rng(4)
    points = rng.uniform([0, -1], [1, 1], (500, 2))
    u = np.cos(points[:, 0]) * np.sin(np.pi * points[:, 1])
    err = 1e-3 * np.sin(3 * points[:, 1])
    Reference.at_points(points, INPUTS, u, None, source="refs/comsol.txt").save(
        tmp_path / "data/reference.npz")
    np.savez(tmp_path / "data/evaluate/errors.npz", prediction=u + err, error=err, points=points,
             columns=np.array(INPUTS))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics.update(reference_est_rel_error=None, reference_limited=False)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))

    path = report.stage_report(params(), tmp_path)
    md = path.read_text()
    assert "not certified here" in md and "refs/comsol.txt" in md
    assert summary_value(md, "reference est. rel. error") == "unknown"
    assert "*Not drawn: the reference is 500 scattered points, not a grid" in md
    names = {p.name for p in referenced_pngs(path)}
    assert "error_map.png" in names and "snapshots.png" not in names
    for p in referenced_pngs(path):
        assert_valid_png(p)


# ----------------------------------------------------------------------------------------------
# through DVC


@pytest.mark.slow
def test_reference_file_through_the_pipeline(built_copy, pipeline_env):
    """The built-in reference's data written as a COMSOL text file: the pipeline run on it gives
    the built-in run's metrics; editing the file reruns the reference stage and everything
    downstream of it; touching it or editing an unrelated file reruns nothing but the gate."""
    from conftest import dvc, output_of, set_params, stages_ran

    project = built_copy
    builtin_metrics = json.loads((project / "metrics.json").read_text())
    builtin = Reference.load(project / "data/reference.npz")
    (project / "refs").mkdir()
    path = comsol_text(project / "refs/burgers.txt", long_columns(builtin))
    set_params(project, **{"reference.file": "refs/burgers.txt"})

    proc = dvc(project, pipeline_env, "repro")
    out = output_of(proc)
    assert proc.returncode == 0, out[-4000:]
    ran = set(stages_ran(out))
    assert {"reference", "evaluate", "report"} <= ran and not {"collocation", "init"} & ran, ran
    assert "not certified here" in out
    metrics = json.loads((project / "metrics.json").read_text())
    for key in ("rel_l2", "max_abs"):
        assert math.isclose(metrics[key], builtin_metrics[key], rel_tol=1e-12), key
    assert metrics["reference_est_rel_error"] is None and metrics["reference_limited"] is False
    assert "not certified here" in (project / "report/report.md").read_text()

    # an unrelated edit, and the file rewritten with the same content: only the gate runs
    (project / "refs/notes.txt").write_text("unrelated\n")
    path.write_bytes(path.read_bytes())
    proc = dvc(project, pipeline_env, "repro")
    assert proc.returncode == 0, output_of(proc)[-4000:]
    assert stages_ran(output_of(proc)) == ["params"]

    # the file edited: the reference and everything downstream of it rerun
    cols = long_columns(builtin)
    cols["u (1)"] = 1.01 * cols["u (1)"]
    comsol_text(path, cols)
    proc = dvc(project, pipeline_env, "repro")
    out = output_of(proc)
    assert proc.returncode == 0, out[-4000:]
    ran = set(stages_ran(out))
    # (window0 copies the refined network, which the reference does not change: it is only
    # logged against; DVC sees the same data/refined.npz and skips it)
    assert {"params", "reference", "train@level0", "train@level1", "refine",
            "evaluate", "report"} == ran, ran
    edited = json.loads((project / "metrics.json").read_text())
    assert edited["rel_l2"] != metrics["rel_l2"]
    np.testing.assert_array_equal(Reference.load(project / "data/reference.npz").u,
                                  1.01 * builtin.u)
