"""The params gate is complete: every error a stage can raise at run time because of a params value
is raised by `validate_params` first, naming the key, before any compute.

`raise_sites()` enumerates, by an AST scan of `pinn/`, every `raise` of an exception that could be a
user error (anything but `NotImplementedError`, `DivergenceError`, exits and report-internal skips),
keyed by file, function and the literal start of its message. Each must be in `SITES`:

- `Gate(override, key, trigger)`: a params override that reaches this raise when the gate is
  bypassed; the test checks that `validate_params` rejects the override with one line per error
  naming `key`, and — when `trigger` is given — that calling the run-time code with the unvalidated
  params really raises at this very site (so the table cannot drift from the code);
- `Internal(reason)`: an invariant of the code, not reachable from params;
- `Input(reason)`: a user error about a file, an argument or the environment (not params), already
  one line naming it.

A new run-time raise therefore fails `test_every_raise_site_is_classified` until it is classified
here — and if it is reachable from params, until the gate checks it.

Also: duplicate keys in params.yaml are rejected naming the key and both lines; booleans are strict.
"""

from __future__ import annotations

import ast
import copy
import re
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import pytest
import yaml
from pydantic import BaseModel

from pinn.config import ConfigError, Params, load_params, validate_params
from pinn.stages.gate import DENSE_REFINE_METHODS, check_feasible

ROOT = Path(__file__).resolve().parents[1]
#: exceptions that are never user errors about params (a diverged run, a process exit, a skipped
#: report figure, an abstract method)
NOT_USER_ERRORS = {"NotImplementedError", "DivergenceError", "Exit", "SystemExit", "_Skip"}
#: the gate itself
EXCLUDED_FILES = {"pinn/config.py"}
PREFIX_CHARS = 30


class Site(NamedTuple):
    file: str
    function: str
    prefix: str  # the message's literal text up to its first placeholder, at most PREFIX_CHARS


def _message_prefix(call: ast.Call) -> str:
    if not call.args:
        return ""
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        text = arg.value
    elif isinstance(arg, ast.JoinedStr):
        text = ""
        for part in arg.values:
            if not isinstance(part, ast.Constant):
                break
            text += part.value
    else:
        text = ""
    return text[:PREFIX_CHARS]


def stage_files() -> set[str]:
    """The files the pipeline's stages run: the import closure of every `pinn.stages` module
    (the same derivation as their code dependencies in dvc.yaml)."""
    from test_stage_contracts import import_closure

    files: set[str] = set()
    for module in sorted((ROOT / "pinn" / "stages").glob("*.py")):
        files |= import_closure(f"pinn.stages.{module.stem}")
    return files


def raise_sites() -> dict[Site, list[int]]:
    """Every candidate user-error raise reachable from a stage (see the module doc), with its line
    numbers."""
    sites: dict[Site, list[int]] = {}
    reachable = stage_files()
    for path in sorted((ROOT / "pinn").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in EXCLUDED_FILES or rel not in reachable:
            continue
        tree = ast.parse(path.read_text(), filename=rel)

        def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    visit(child, scope + (child.name,))
                    continue
                if isinstance(child, ast.Raise) and isinstance(child.exc, ast.Call):
                    func = child.exc.func
                    name = getattr(func, "id", None) or getattr(func, "attr", "")
                    if name not in NOT_USER_ERRORS:
                        site = Site(rel, ".".join(scope) or "<module>", _message_prefix(child.exc))
                        sites.setdefault(site, []).append(child.lineno)
                visit(child, scope)

        visit(tree, ())
    return sites


# ----------------------------------------------------------------------------------------------
# the table


BASE = {
    "seed": 0,
    "problem": {"name": "burgers_1d", "coefficients": {}},
    "model": {"width": 8, "depth": 2},
    "collocation": {"num_points": 512, "ic_points": 64, "bc_points": 64},
    "sampling": {"method": "uniform", "batch_size": 256, "ic_batch_size": 64, "bc_batch_size": 32},
    "multilevel": {"num_levels": 1, "levels": {"level0": {"steps": 20, "init_from": "init"}}},
    "refine": {"method": "lbfgs", "iterations": 10, "block_size": 10, "memory_size": 5},
    "train": {"log_every": 10, "checkpoint_every": 20},
}

Trigger = Callable[[Params], Any]


class Gate(NamedTuple):
    override: dict
    key: str  # the dotted key the gate's message must name
    trigger: Optional[Trigger] = None  # run-time code a stage runs, given unvalidated params


class Internal(NamedTuple):
    reason: str


class Input(NamedTuple):
    reason: str


def _balancer(cfg: Params):
    from pinn.from_params import balancer_from_params

    return balancer_from_params(cfg, ("pde", "ic", "bc"))


def _causal(cfg: Params):
    from pinn.balancing import causal_residual_loss

    c = cfg.balancing.causal
    return causal_residual_loss(np.ones(4), np.linspace(0, 1, 4), 0.0, 1.0, c.num_chunks, c.tolerance)


def _problem(cfg: Params):
    from pinn.problems import make_problem

    return make_problem(cfg.problem.name, **cfg.problem.coefficients)


def _problem_target(cfg: Params):
    from pinn.problems import make_problem

    return make_problem(cfg.problem.identifier, **cfg.problem.coefficients)


def _reference_bypassing_make_problem(cfg: Params):
    from pinn.problems import PROBLEMS

    return PROBLEMS[cfg.problem.name](**cfg.problem.coefficients).reference(progress=False)


def _reference_file(cfg: Params):
    """The reference stage's read of `reference.file` (the gate reads it first)."""
    from pinn.stages.common import read_reference_file

    return read_reference_file(cfg)


def _ac1d_reference(modes: int) -> Trigger:
    """The Allen–Cahn 1D reference solver at reduced resolution (the stage uses the default)."""

    def run(cfg: Params):
        from pinn.reference import allen_cahn_1d

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the overflow this case is about
            return allen_cahn_1d(**cfg.problem.coefficients, modes=modes, progress=False)

    return run


def _sampler(cfg: Params):
    from pinn.from_params import sampler_from_params
    from pinn.problems import make_problem

    problem = make_problem(cfg.problem.name)
    fixed = np.zeros((cfg.collocation.num_points, len(problem.lower)))
    return sampler_from_params(cfg, problem.domain, fixed_points=fixed)


def _rar_d(cfg: Params):
    from pinn.problems import make_problem
    from pinn.sampling import rar_d

    problem = make_problem(cfg.problem.name)
    initial = np.zeros((min(cfg.sampling.batch_size, cfg.collocation.num_points), 2))
    return rar_d(problem.domain, initial, **cfg.sampling.rar_d.model_dump())


def _collocation(cfg: Params):
    from pinn.sampling import collocation_points

    return collocation_points(cfg.collocation.method, 8, [0.0], [1.0], cfg.seed)


def _model(cfg: Params):
    from pinn.models import make_model
    from pinn.problems import make_problem

    return make_model(cfg.model, make_problem(cfg.problem.name), seed=0)


def _level_widths(cfg: Params):
    from pinn.multilevel import level_widths

    m = cfg.multilevel
    return level_widths(cfg.model.width, m.num_levels, m.coarsening_factor)


def _refine_optimizer(cfg: Params):
    from pinn.from_params import refine_optimizer_from_params

    return refine_optimizer_from_params(cfg)


def _qn_runner(cfg: Params):
    import optax

    from pinn.optim import quasi_newton_runner

    return quasi_newton_runner(lambda p: p, optax.sgd(1.0), block_size=cfg.refine.block_size)


def _dense_size(cfg: Params):
    """The refine stage's size check of a dense quasi-Newton method, for the finest network."""
    from flax import nnx

    from pinn.models import count_params, split
    from pinn.optim import check_dense_size

    model = nnx.eval_shape(lambda: _model(cfg))
    return check_dense_size(count_params(split(model)[1]), cfg.refine.method)


def _precision(cfg: Params):
    from pinn.precision import scope

    with scope(cfg.train.precision):
        pass


def _resolve_setup(cfg: Params):
    from pinn.distributed import resolve_setup

    return resolve_setup(cfg, env={})


GEOMETRY = "the problem class's fixed box (lower < upper, one entry per input column)"
FILES = "a damaged or missing input file: one line naming the file (stages turn it into a UserError)"
OBSERVATIONS_FILE = ("the contents of the file problem.observations.file names: the gate reads "
                     "it whole first (check_observations_file; one line naming the key and the "
                     "file, tests/test_observations.py)")
REFERENCE_FILE = ("the contents of the file reference.file names: the gate reads it whole first "
                  "(check_reference_file; one line naming reference.file and the file, "
                  "tests/test_reference_files.py)")

def _window_problem(cfg):
    from pinn.stages.common import problem_of
    from pinn.windows import window_problem

    window_problem(cfg, problem_of(cfg), 0)


SITES: dict[Site, Gate | Internal | Input] = {
    # --- the package's lazy re-exports
    Site("pinn/__init__.py", "__getattr__", "module 'pinn' has no attribute"):
        Internal("Python's AttributeError for a name the package does not export (stages import "
                 "modules, never these names)"),
    # --- balancing
    Site("pinn/balancing.py", "_check_num_terms", "num_terms = "):
        Internal("the trainer passes one weight per loss term it builds"),
    Site("pinn/balancing.py", "fixed", "weights["):
        Gate({"balancing": {"weights": {"pde": -1.0}}}, "balancing.weights.pde", _balancer),
    Site("pinn/balancing.py", "fixed", "term_names "):
        Internal("balancer_from_params passes one weight per term name"),
    Site("pinn/balancing.py", "fixed", "weights given by name: term_na"):
        Internal("balancer_from_params passes a list of weights with the term names"),
    Site("pinn/balancing.py", "fixed", "weights "):
        Internal("balancer_from_params passes a list (names are the schema's, checked by the "
                 "gate: balancing.weights.<name> not a loss term)"),
    Site("pinn/balancing.py", "gradnorm", "min_weight = "):
        Gate({"balancing": {"method": "gradnorm", "gradnorm": {"min_weight": 0.5, "max_weight": 0.8}}},
             "balancing.gradnorm.max_weight", _balancer),
    Site("pinn/from_params.py", "balancer_from_params", "balancing.method = "):
        Gate({"balancing": {"method": "softadapt"}}, "balancing.method", _balancer),
    Site("pinn/balancing.py", "causal_residual_loss", "num_chunks = "):
        Gate({"balancing": {"causal": {"enabled": True, "num_chunks": 0}}},
             "balancing.causal.num_chunks", _causal),
    Site("pinn/balancing.py", "causal_residual_loss", "t_max = "):
        Internal("t_min/t_max are the problem's time interval: " + GEOMETRY),
    # --- problems and their reference solvers
    Site("pinn/problems/__init__.py", "make_problem", "unknown problem "):
        Gate({"problem": {"name": "heat_1d"}}, "problem.name", _problem),
    Site("pinn/problems/__init__.py", "make_problem", "unknown coefficient(s) "):
        Gate({"problem": {"coefficients": {"nu": 0.01}}}, "problem.coefficients.nu", _problem),
    Site("pinn/problems/__init__.py", "make_problem", "coefficient "):
        Gate({"problem": {"coefficients": {"viscosity": 0.0}}}, "problem.coefficients.viscosity",
             _problem),
    Site("pinn/problems/__init__.py", "target_file", ""):
        Gate({"problem": {"name": None, "target": "no/such_problem.py:Heat"}}, "problem.target",
             _problem_target),
    Site("pinn/problems/__init__.py", "load_problem_class", ""):
        Gate({"problem": {"name": None, "target": "pinn.problems.base:Bound"}}, "problem.target",
             _problem_target),
    Site("pinn/problems/base.py", "Problem.check_declarations", ""):
        Input("the fields the problem class declares: the gate (ProblemConfig) checks them, one "
              "line naming problem.target (tests/test_steady_systems.py)"),
    Site("pinn/problems/base.py", "Problem.check_residuals", "residuals() fails on "):
        Input("the user's residuals() code: the gate (Params) traces it, one line naming "
              "problem.target (tests/test_problem_api.py::test_gate_traces_the_residuals)"),
    Site("pinn/problems/base.py", "Problem.check_residuals", "residuals() reads d["):
        Input("a derivative the user's residuals() reads but does not declare: the gate traces "
              "it, one line naming problem.target (tests/test_problem_api.py)"),
    Site("pinn/problems/base.py", "Problem.check_residuals", "residuals()["):
        Input("a residual of the user's problem that is not (N,): the gate traces it, one line "
              "naming problem.target (tests/test_problem_api.py)"),
    Site("pinn/reference/exact.py", "from_exact", ""):
        Input("the shape the user's problem class's exact() returns: one line naming the class "
              "and the expected shape"),
    Site("pinn/evaluate.py", "accuracy_of_fields", "accuracy: the network has "):
        Internal("make_model gives the network one output per field of the problem"),
    Site("pinn/derivatives.py", "parse_derivative", "derivative "):
        Input("a derivative name the problem class declares: the gate (ProblemConfig) parses the "
              "target's `derivatives`, one line naming problem.target"),
    Site("pinn/reference/cole_hopf.py", "cole_hopf", "viscosity must be > 0, got "):
        Gate({"problem": {"coefficients": {"viscosity": 0.0}}}, "problem.coefficients.viscosity",
             _reference_bypassing_make_problem),
    Site("pinn/reference/cole_hopf.py", "cole_hopf", "t and x must be 1-d arrays"):
        Internal("the stages use the solver's default output grid"),
    Site("pinn/reference/cole_hopf.py", "cole_hopf", "t must be finite and >= 0"):
        Internal("the stages use the solver's default output grid"),
    Site("pinn/reference/cole_hopf.py", "burgers_1d", "nodes must be >= 2, got "):
        Internal("the stages use the solver's default quadrature"),
    Site("pinn/reference/solution.py", "Reference.__post_init__", "u contains non-finite values"):
        Gate({"problem": {"name": "allen_cahn_1d", "coefficients": {"diffusion": -1.0e-4}}},
             "problem.coefficients.diffusion", _ac1d_reference(2048)),
    Site("pinn/reference/solution.py", "Reference.__post_init__", "est_rel_error must be finite a"):
        Gate({"problem": {"name": "allen_cahn_1d", "coefficients": {"reaction": 1000.0}}},
             "problem.coefficients.reaction", _ac1d_reference(128)),
    Site("pinn/reference/solution.py", "Reference.__post_init__", "u must have shape "):
        Internal("the solvers build u on their own t, x(, y) grid"),
    Site("pinn/reference/solution.py", "Reference.__post_init__", "meta keys must be non-empty st"):
        Internal("the solvers write fixed meta keys"),
    Site("pinn/reference/solution.py", "Reference.__post_init__", "meta["):
        Internal("the solvers write numeric meta values"),
    Site("pinn/reference/solution.py", "_as_axis", ""):
        Internal("the solvers' default grids are non-empty, 1-d and finite"),
    Site("pinn/reference/solution.py", "rel_l2", "rel_l2: shape mismatch "):
        Internal("compares two solves on the same output grid"),
    Site("pinn/reference/solution.py", "Reference.load", ""): Input(FILES),
    Site("pinn/reference/solution.py", "Reference.load", "reference file "): Input(FILES),
    Site("pinn/reference/solution.py", "Reference.load", "not an .npz archive"): Input(FILES),
    Site("pinn/reference/solution.py", "Reference.load", "est_rel_error"): Input(FILES),
    Site("pinn/reference/solution.py", "Reference.load", "u"): Input(FILES),
    Site("pinn/reference/solution.py", "Reference.load", "columns"): Input(FILES),
    Site("pinn/reference/solution.py", "Reference.__post_init__", "est_rel_error is required (Non"):
        Internal("the solvers always estimate their error; only a file's reference may not"),
    Site("pinn/reference/solution.py", "Reference.__post_init__", "field names must be non-empty "):
        Input(REFERENCE_FILE),
    Site("pinn/reference/solution.py", "Reference.__post_init__", "field "):
        Internal("the file reader checks every field's shape and values first"),
    Site("pinn/reference/solution.py", "_check_scattered", "scattered points: t, x and y m"):
        Internal("Reference.at_points passes no axes"),
    Site("pinn/reference/solution.py", "_check_scattered", "points must have shape (N > 0,"):
        Internal("the file reader checks the points' shape first"),
    Site("pinn/reference/solution.py", "_check_scattered", "columns must be distinct non-e"):
        Internal("the columns are the problem's input names"),
    Site("pinn/reference/solution.py", "_check_scattered", "points contains non-finite val"):
        Internal("the file reader rejects non-finite values first, naming the file"),
    # a reference from a file: every problem with its contents is one line naming the key and file
    # (the key is `reference.file`, or `problem.observations.file` for observation data)
    Site("pinn/reference/files.py", "read_reference", ""):
        Gate({"reference": {"file": "no/such/reference.npz"}}, "reference.file", _reference_file),
    Site("pinn/reference/files.py", "_read", "unsupported format "):
        Internal("the schema accepts only the suffixes the reader reads (tests/test_reference_files.py)"),
    Site("pinn/reference/files.py", "_read", ""): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_read_npz", "not an .npz archive (a single "):
        Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_read_npz", "not a readable .npz file ("): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_read_mat", "a MATLAB v7.3 (HDF5) file, whi"):
        Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_read_mat", "not a readable .mat file ("): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_numeric", "array "): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_vector", "array "): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_from_arrays", "array "): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_from_arrays.get", "array "): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_stated_error", "array "): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_read_text", ""): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_read_text", "not a readable text file ("): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_read_text", "no data rows (only header line"):
        Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_read_text", "reference.columns names "): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_float", ""): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_unique", ""): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_find_inputs", ""): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_main_field", ""): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_wide", "its columns hold values at tim"): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_wide", "column "): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_wide", "field "): Input(REFERENCE_FILE),
    Site("pinn/reference/files.py", "_wide", "columns "): Input(REFERENCE_FILE),
    Site("pinn/reference/spectral.py", "_check_times", "t must be a non-empty 1-d arra"):
        Internal("the stages use the solver's default output times"),
    Site("pinn/reference/spectral.py", "_check_times", "t must be finite, strictly inc"):
        Internal("the stages use the solver's default output times"),
    Site("pinn/reference/spectral.py", "allen_cahn_1d", "need modes >= 4 and dt > 0, go"):
        Internal("the stages use the solver's default resolution"),
    Site("pinn/reference/spectral.py", "allen_cahn_2d", "need modes >= 4, dt > 0, n_out"):
        Internal("the stages use the solver's default resolution"),
    Site("pinn/reference/spectral.py", "periodic_1d", "domain must be (x0, x1) with x"):
        Internal("called by a problem's reference() with its own box (examples/kdv)"),
    Site("pinn/reference/spectral.py", "periodic_1d", "need modes >= 4 and dt > 0, go"):
        Internal("called with kdv_resolution's or the solver's default resolution"),
    Site("pinn/reference/spectral.py", "linear_symbol", "linear: derivative orders must"):
        Internal("the orders are constants of the calling problem's code (examples/kdv)"),
    Site("pinn/reference/spectral.py", "kdv_resolution", "dispersion must be > 0, got "):
        Internal("the KdV problem's coefficient_bounds (dispersion >= 0.01) are checked by the "
                 "gate first"),
    # --- sampling
    Site("pinn/sampling.py", "_box", "domain: lower "): Internal(GEOMETRY),
    Site("pinn/sampling.py", "_box", "domain: need upper > lower on "): Internal(GEOMETRY),
    Site("pinn/sampling.py", "_magnitude", "residual_fn must map (M, d) ->"):
        Internal("the trainer's residual maps (M, d) -> (M,)"),
    Site("pinn/sampling.py", "collocation_points", "collocation method = "):
        Gate({"collocation": {"method": "halton"}}, "collocation.method", _collocation),
    Site("pinn/sampling.py", "uniform", "uniform sampler: fixed_points "):
        Internal("sampler_from_params passes fixed points only with resample: false"),
    Site("pinn/sampling.py", "uniform", "uniform sampler: resample=Fals"):
        Internal("sampler_from_params checks for the fixed points first"),
    Site("pinn/sampling.py", "uniform", "fixed_points: expected shape ("):
        Internal("the collocation stage writes points with the problem's columns"),
    Site("pinn/sampling.py", "rar_d", "initial_points: expected shape"):
        Internal("sampler_from_params passes the collocation points' first min(batch_size, num_points) "
                 "> 0 rows with the problem's columns"),
    Site("pinn/sampling.py", "rar_d", "capacity = "):
        Gate({"sampling": {"method": "rar_d", "rar_d": {"capacity": 100}}}, "sampling.rar_d.capacity",
             _rar_d),
    Site("pinn/from_params.py", "sampler_from_params", "sampling.uniform.resample = Fa"):
        Internal("the stages load the collocation points whenever uses_fixed_points(cfg)"),
    Site("pinn/from_params.py", "sampler_from_params", "sampling.method = 'rar_d': nee"):
        Internal("the stages load the collocation points whenever uses_fixed_points(cfg)"),
    Site("pinn/from_params.py", "sampler_from_params", "sampling.rar_d.capacity = "):
        Gate({"sampling": {"method": "rar_d", "rar_d": {"capacity": 100}}}, "sampling.rar_d.capacity",
             _sampler),
    Site("pinn/from_params.py", "sampler_from_params", "sampling.method = "):
        Gate({"sampling": {"method": "lhs"}}, "sampling.method", _sampler),
    # --- models, multilevel, optimizers, precision
    Site("pinn/models.py", "PINN.__init__", "activation "):
        Gate({"model": {"activation": "relu"}}, "model.activation", _model),
    Site("pinn/multilevel.py", "level_widths", "finest_width = "):
        Gate({"model": {"width": 0}}, "model.width", _level_widths),
    Site("pinn/multilevel.py", "level_widths", "num_levels = "):
        Gate({"multilevel": {"num_levels": 0}}, "multilevel.num_levels", _level_widths),
    Site("pinn/multilevel.py", "level_widths", "coarsening_factor = "):
        Gate({"multilevel": {"coarsening_factor": 1.5}}, "multilevel.coarsening_factor", _level_widths),
    Site("pinn/multilevel.py", "_check_embeds", ""):
        Internal("every level is built from one model config; coarsening_factor <= 1 (gated) "
                 "makes widths non-decreasing"),
    Site("pinn/multilevel.py", "_check_same_rest", "rest: coarse and fine non-trai"):
        Internal("every level is built from one model config and seed"),
    Site("pinn/multilevel.py", "_check_same_rest", "rest"):
        Internal("every level is built from one model config and seed"),
    Site("pinn/multilevel.py", "prolongate", "coarse_rest and fine_rest: giv"):
        Internal("the cascade passes both or neither"),
    Site("pinn/optim/adam.py", "adam", "warmup_steps = "):
        Internal("only checked when a caller passes total_steps; no stage does (a warm-up longer "
                 "than training is allowed)"),
    Site("pinn/optim/adam.py", "lr_scale_of", "the optimizer state holds "):
        Internal("the cascade reads the scale from the state of pinn.optim.adam, which holds one"),
    Site("pinn/optim/quasi_newton.py", "refine_optimizer", "method = "):
        Gate({"refine": {"method": "newton"}}, "refine.method", _refine_optimizer),
    Site("pinn/optim/quasi_newton.py", "quasi_newton_runner", "block_size = "):
        Gate({"refine": {"block_size": 0}}, "refine.block_size", _qn_runner),
    Site("pinn/optim/quasi_newton.py", "quasi_newton_runner.block", "num_steps = "):
        Internal("refine passes min(block_size, iterations left)"),
    Site("pinn/optim/ssbroyden.py", "check_dense_size", "refine.method = "):
        Gate({"refine": {"method": "ssbroyden"}, "model": {"width": 128, "depth": 3}},
             "refine.method", _dense_size),
    Site("pinn/optim/ssbroyden.py", "self_scaled_coefficients", "variant = "):
        Internal("refine_optimizer passes only VARIANTS"),
    Site("pinn/optim/ssbroyden.py", "scale_by_dense_quasi_newton", "variant = "):
        Internal("refine_optimizer passes only VARIANTS"),
    Site("pinn/optim/ssbroyden.py", "scale_by_dense_quasi_newton.update_fn",
         "scale_by_dense_quasi_newton ne"):
        Internal("the quasi-Newton runner always passes params"),
    Site("pinn/precision.py", "scope", "precision "):
        Gate({"train": {"precision": "float16"}}, "train.precision", _precision),
    Site("pinn/refine.py", "refine", "refine: refine.precision = "):
        Internal("a caller's contract: refine runs inside precision.scope(refine.precision)"),
    Site("pinn/derivatives.py", "_check_method", "derivative method "):
        Internal("no params key chooses the derivative method"),
    # --- distributed: params are gated; the environment and the device count are run-time inputs
    Site("pinn/distributed.py", "resolve_setup", "process_id = "):
        Gate({"distributed": {"num_processes": 2, "process_id": 2}}, "distributed.process_id",
             _resolve_setup),
    Site("pinn/distributed.py", "resolve_setup", "coordinator_address = "):
        Gate({"distributed": {"coordinator_address": "node0"}}, "distributed.coordinator_address",
             _resolve_setup),
    Site("pinn/distributed.py", "resolve_setup", ""):
        Input("PINN_NUM_PROCESSES / PINN_PROCESS_ID from the environment: a ConfigError naming "
              "the variable, raised by initialize() before any compute"),
    Site("pinn/distributed.py", "_env_int", ""):
        Input("an environment variable: a ConfigError naming it, before any compute"),
    Site("pinn/distributed.py", "check_batch_sizes", ""):
        Input("depends on the device count, known only on the machine that trains: a ConfigError "
              "naming the batch-size key, raised when the Trainer is built, before any compute"),
    Site("pinn/distributed.py", "make_mesh", "make_mesh: no devices"):
        Internal("JAX always has a device"),
    # --- files, arguments, pipeline plumbing
    Site("pinn/io.py", "_check_finite", "refusing to write non-finite m"):
        Internal("metrics of a diverged run: the stages raise DivergenceError before writing"),
    Site("pinn/io.py", "load_tree", ""): Input(FILES),
    Site("pinn/io.py", "_read_member", ""): Input(FILES),
    Site("pinn/report/inputs.py", "_load_npz", ""): Input(FILES),
    Site("pinn/report/inputs.py", "_load_json", ""): Input(FILES),
    Site("pinn/report/inputs.py", "_load_csv", ""): Input(FILES),
    Site("pinn/report/inputs.py", "_load_grid", ""): Input(FILES),
    Site("pinn/report/inputs.py", "_load_points", ""): Input(FILES),
    Site("pinn/report/inputs.py", "_fields", ""): Input(FILES),
    Site("pinn/report/inputs.py", "_history", ""): Input(FILES),
    Site("pinn/report/inputs.py", "load_run", ""): Input(FILES),
    Site("pinn/stages/common.py", "invoke", ""):
        Internal("a stage's typer exit status inside the in-process runner"),
    Site("pinn/stages/common.py", "require", ""): Input(FILES),
    Site("pinn/stages/common.py", "load_reference", ""): Input(FILES),
    Site("pinn/stages/plots_page.py", "page", "vl-convert "):
        Internal("the installed vl-convert's bundle inlines cleanly (tests/test_plots_page.py)"),
    Site("pinn/stages/common.py", "load_collocation", ""): Input(FILES),
    # observation data (pinn.problems.Observation): from problem.observations.file, read by the
    # gate whole first, or from the problem's code
    Site("pinn/stages/common.py", "read_observations", "problem.observations.file = "):
        Input(OBSERVATIONS_FILE),
    Site("pinn/stages/collocation.py", "main", ""):
        Input("re-raises read_observations' error (" + OBSERVATIONS_FILE + ")"),
    Site("pinn/stages/gate.py", "check_observations_file", ""):
        Internal("re-raises read_observations' error (its own site above) with the file name"),
    Site("pinn/loss.py", "observation_sets", "the collocation sets have no a"):
        Input("the collocation file lacks the observation arrays the problem needs (a file from "
              "before the problem had observations): one line saying to rerun the collocation "
              "stage, which DVC does when the problem's file changes"),
    Site("pinn/problems/base.py", "Problem.condition_residual", ""):
        Internal("the Trainer and the refinement always pass the observation data "
                 "(pinn.loss.observation_sets): a library caller that does not is told so"),
    Site("pinn/stages/gate.py", "check_declared", ""):
        Input("a key dvc.yaml tracks is missing from params.yaml: one line naming it"),
    Site("pinn/stages/train.py", "main", "--level "):
        Input("the --level command-line argument: one line naming it"),
    Site("pinn/stages/train.py", "main", ""): Input(FILES),
    Site("pinn/stages/window.py", "main", "--window "):
        Input("the --window command-line argument: one line naming it"),
    Site("pinn/windows.py", "time_axis", ""):
        Gate({"problem": {"name": None,
                          "target": f"{ROOT}/examples/poisson5d/poisson.py:Poisson5D"},
              "windows": {"count": 2, "later": {"window1": {"after": "window0", "steps": 5}}}},
             "windows.count", _window_problem),
    Site("pinn/progress.py", "progress_mode", "progress = "):
        Internal("the stages pass a bool; a mode string comes from code, not params"),
    Site("pinn/stages/gate.py", "check_feasible", ""):
        Internal("re-raises check_dense_size's error (its own site above) with the file name"),
    Site("pinn/stages/gate.py", "check_reference_file", ""):
        Internal("re-raises read_reference's error (its own site above) with the file name"),
    Site("pinn/stages/reference.py", "main", ""):
        Input("re-raises read_reference's error (" + REFERENCE_FILE + ")"),
    Site("pinn/stages/reference.py", "main", "reference "):
        Input("the solved reference's own error estimate is above reference.fail_above: known "
              "only after solving; one line naming the key, nothing written"),
}


def _unchecked(model: BaseModel, override: dict) -> BaseModel:
    """`model` with `override` applied WITHOUT validation: what a stage would get with no gate."""
    changes = {}
    for key, value in override.items():
        current = getattr(model, key)
        changes[key] = (_unchecked(current, value)
                        if isinstance(value, dict) and isinstance(current, BaseModel) else value)
    return model.model_copy(update=changes)


def _merged(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (_merged(out.get(key, {}), value)
                    if isinstance(value, dict) and isinstance(out.get(key), dict) else value)
    return out


def _innermost(exc: BaseException) -> tuple[str, str, int]:
    """(file relative to the repo, function qualname without <locals>, line) of the raise."""
    frame, line = list(traceback.walk_tb(exc.__traceback__))[-1]
    code = frame.f_code
    path = Path(code.co_filename).resolve()
    rel = path.relative_to(ROOT).as_posix() if ROOT in path.parents else str(path)
    return rel, code.co_qualname.replace(".<locals>", ""), line


SITES_FOUND = raise_sites()


def test_every_raise_site_is_classified():
    found = set(SITES_FOUND)
    missing = sorted(found - set(SITES))
    stale = sorted(set(SITES) - found)
    assert not missing, (
        "run-time raise sites not in tests/test_gate.py SITES (classify each: Gate with a params "
        "override the gate rejects, Internal or Input with a reason):\n"
        + "\n".join(f"    {s!r}:  # line(s) {SITES_FOUND[s]}" for s in missing))
    assert not stale, "SITES entries whose raise no longer exists:\n" + "\n".join(map(repr, stale))


def test_the_scan_sees_the_known_sites():
    """The scanner itself: it must find the raises this issue was filed for."""
    assert Site("pinn/balancing.py", "gradnorm", "min_weight = ") in SITES_FOUND
    assert Site("pinn/reference/cole_hopf.py", "cole_hopf", "viscosity must be > 0, got ") in SITES_FOUND
    assert len(SITES_FOUND) > 50


GATED = [(site, entry) for site, entry in SITES.items() if isinstance(entry, Gate)]


@pytest.mark.parametrize("site,entry", GATED, ids=[f"{s.file}:{s.function}:{s.prefix}" for s, _ in GATED])
def test_gate_rejects_what_the_site_would_raise(site, entry):
    check_feasible(validate_params(BASE))  # the base itself is valid
    with pytest.raises(ConfigError) as err:
        check_feasible(validate_params(_merged(BASE, entry.override), source="params.yaml"))
    lines = str(err.value).splitlines()
    assert any(line.startswith(f"params.yaml: {entry.key} = ") for line in lines), lines
    assert all(line.startswith("params.yaml: ") for line in lines)
    if entry.trigger is None:
        return
    # without the gate, the run-time code really raises at this site
    cfg = _unchecked(validate_params(BASE), entry.override)
    with pytest.raises(Exception) as raised:
        entry.trigger(cfg)
    file, function, line = _innermost(raised.value)
    assert (file, function) == (site.file, site.function) and line in SITES_FOUND[site], (
        f"the override raised at {file}:{line} in {function} ({raised.value}), not at this site")


# ----------------------------------------------------------------------------------------------
# the cases named in the issue, through load_params (what `pinn check-params` runs)


def _load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    return str(err.value)


@pytest.mark.parametrize("override,line", [
    ({"balancing": {"method": "gradnorm", "gradnorm": {"min_weight": 0.5, "max_weight": 0.8}}},
     r"balancing\.gradnorm\.max_weight = 0\.8: must be >= 1 \("),
    ({"problem": {"name": "burgers_1d", "coefficients": {"viscosity": 0.0}}},
     r"problem\.coefficients\.viscosity = 0\.0: must be > 0 \("),
    ({"problem": {"name": "allen_cahn_1d", "coefficients": {"diffusion": -1.0e-4}}},
     r"problem\.coefficients\.diffusion = -0\.0001: must be >= 0 \("),
    ({"sampling": {"method": "rar_d", "rar_d": {"capacity": 100}}},
     r"sampling\.rar_d\.capacity = 100: must be >= the number of initial points .* = 256$"),
])
def test_issue_cases_stop_at_the_gate_with_one_line(tmp_path, override, line):
    message = _load(tmp_path, yaml.safe_dump(_merged(BASE, override), sort_keys=False))
    assert len(message.splitlines()) == 1
    assert re.fullmatch(rf"{re.escape(str(tmp_path / 'params.yaml'))}: {line}.*", message), message


def test_every_bad_coefficient_is_one_line(tmp_path):
    override = {"problem": {"name": "allen_cahn_1d",
                            "coefficients": {"diffusion": -1.0, "reaction": 1.0e4, "nu": 1.0}}}
    lines = _load(tmp_path, yaml.safe_dump(_merged(BASE, override))).splitlines()
    assert len(lines) == 3
    for key in ("diffusion", "reaction", "nu"):
        assert sum(f"problem.coefficients.{key} = " in line for line in lines) == 1, lines


def test_dense_methods_agree_with_the_optimizers():
    from pinn.optim.ssbroyden import VARIANTS

    assert tuple(DENSE_REFINE_METHODS) == tuple(VARIANTS)


def test_problems_declare_their_bounds():
    """The constraint lives with the problem; make_problem enforces the same bound."""
    from pinn.problems import PROBLEMS, make_problem

    assert PROBLEMS["burgers_1d"].coefficient_bounds["viscosity"].violation(0.0)
    assert PROBLEMS["burgers_1d"].coefficient_bounds["viscosity"].violation(1e-3) is None
    for name, cls in PROBLEMS.items():
        assert set(cls.coefficient_bounds) <= set(cls.coefficient_names()), name
        assert cls.coefficient_errors(make_problem(name).coefficients) == {}, name  # defaults pass
    with pytest.raises(ValueError, match=r"coefficient diffusion = -1\.0 of 'allen_cahn_1d': must be >= 0"):
        make_problem("allen_cahn_1d", diffusion=-1.0)


# ----------------------------------------------------------------------------------------------
# 6. duplicate keys, strict booleans


@pytest.mark.parametrize("text,key,lines", [
    ("seed: 1\nmodel:\n  width: 8\n  depth: 2\n  width: 16\n", "model.width", (3, 5)),
    ("seed: 1\nseed: 2\n", "seed", (1, 2)),
    ("multilevel:\n  levels:\n    level0: {steps: 5, init_from: init}\n"
     "    level0: {steps: 6, init_from: init}\n", "multilevel.levels.level0", (3, 4)),
    ("problem:\n  coefficients: {viscosity: 0.01, viscosity: 0.02}\n",
     "problem.coefficients.viscosity", (2, 2)),
])
def test_duplicate_keys_are_rejected_naming_key_and_lines(tmp_path, text, key, lines):
    message = _load(tmp_path, text)
    assert message == (f"{tmp_path / 'params.yaml'}: duplicate key '{key}' at lines {lines[0]} "
                       f"and {lines[1]} (a key may appear once)")


def test_same_key_in_different_sections_is_fine(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False))  # e.g. `method` in several sections
    assert "method:" in path.read_text()
    load_params(path)


BOOL_KEYS = ["model.periodic_embedding", "model.hard_initial_condition", "model.rwf",
             "sampling.uniform.resample", "balancing.causal.enabled", "distributed.data_parallel", "reference.allow_inaccurate"]


def _bool_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _bool_fields(ann, f"{prefix}{name}.")
        elif ann is bool:
            out.append(prefix + name)
    return out


def test_bool_keys_list_is_complete():
    assert sorted(_bool_fields(Params)) == sorted(BOOL_KEYS)


@pytest.mark.parametrize("key", BOOL_KEYS)
@pytest.mark.parametrize("value", [1, 0, "yes", "true", 1.0])
def test_booleans_are_strict(key, value):
    section, *rest, last = key.split(".")
    override: dict = {}
    node = override.setdefault(section, {})
    for part in rest:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ConfigError) as err:
        validate_params(_merged(BASE, override), source="params.yaml")
    assert str(err.value) == f"params.yaml: {key} = {value!r}: must be true or false"
    node[last] = True
    assert validate_params(_merged(BASE, override))  # a real boolean is fine
