"""Typed, validated configuration: `params.yaml` → `Params`.

Every knob of the pipeline lives in `params.yaml`. It is parsed as data only (a `yaml.SafeLoader`
that also rejects duplicate keys) and validated once into frozen pydantic models. A bad value raises
`ConfigError` whose message names the key path and what is allowed, e.g.
``sampling.hard_bank.p_max = 1.5: must be in [0, 1]``; an unknown key is an error with a
did-you-mean suggestion; booleans are strict (`1` or `"yes"` is not `true`).

This is the gate: every constraint that a component, problem or solver enforces at run time is
checked here first (tests/test_gate.py enumerates the run-time raise sites), so that no stage starts
— and DVC removes no output — for params that a later stage would reject. Problems state their own
coefficient constraints (`Problem.coefficient_bounds`).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import (BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator,
                      model_validator)


from pinn.errors import UserError


class ConfigError(UserError):
    """A user error in params: one line per problem, each naming the key path."""


_NUMBER_TYPES = (int, float, Optional[int], Optional[float])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info):
        """pydantic would read `true`/`false` as 1/0 in a number field: a typo, not a number."""
        ann = cls.model_fields[info.field_name].annotation
        if ann in _NUMBER_TYPES and isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        if getattr(ann, "__origin__", None) is dict and isinstance(value, dict) and (
                ann.__args__[1] is float or float in getattr(ann.__args__[1], "__args__", ())):
            # {name: number} and {name: number | [numbers]} (problem.coefficients)
            for key, v in value.items():
                if isinstance(v, bool) or (isinstance(v, list) and any(isinstance(x, bool) for x in v)):
                    raise ValueError(f"{key} = {v}: must be a number, not a boolean")
        return value


PositiveInt = Field(gt=0)


#: the built-in problems' aliases (`pinn.problems.PROBLEMS`; tests/test_problems.py checks they agree)
BUILTIN_PROBLEMS = ("allen_cahn_1d", "allen_cahn_2d", "burgers_1d")


#: the suffixes of `reference.file` (`pinn.reference.files.SUFFIXES`; tests check they agree)
REFERENCE_FILE_SUFFIXES = (".npz", ".mat", ".txt", ".dat", ".csv")


class ObservationsConfig(_Section):
    """Where the data of the problem's `Observation` conditions come from: null `file` (the
    default) — the problem generates them (`Problem.observations`: seeded, optional noise); else
    this file (relative to the project root), read like `reference.file` (`pinn.reference.files`:
    scattered `points (N, d)` + one array per observed field in .npz/.mat, or text columns, or a
    grid), by the gate before any stage runs. The collocation stage stores them for training."""

    file: Optional[str] = None
    #: the file's names where they differ from the pipeline's ({pipeline's name: file's name})
    keys: dict[str, str] = Field(default_factory=dict)
    #: a text file's column names, in order (for a file whose header does not name them)
    columns: Optional[list[str]] = None

    @field_validator("file")
    @classmethod
    def _format(cls, v):
        if v is not None:
            if not v.strip():
                raise ValueError("must be a file path (or null: the problem's own data)")
            if not v.lower().endswith(REFERENCE_FILE_SUFFIXES):
                raise ValueError(f"unsupported format (the file must end in "
                                 f"{', '.join(REFERENCE_FILE_SUFFIXES)})")
        return v


class ProblemConfig(_Section):
    """The PDE: a built-in (`name`, an alias) or a class in the user's own file (`target`,
    `path/to/file.py:Class` relative to the project root, or `package.module:Class`); exactly one
    of the two (neither: the default `allen_cahn_1d`)."""

    name: Optional[Literal[BUILTIN_PROBLEMS]] = None
    target: Optional[str] = None
    #: PDE coefficients, e.g. {diffusion: 1e-4, reaction: 5.0} or a vector {k: [1.0, 2.0]};
    #: names and values checked against the problem (its dataclass fields, `coefficient_bounds`)
    coefficients: dict[str, float | list[float]] = Field(default_factory=dict)
    #: the data of the problem's `Observation` conditions (inverse problems); see
    #: `ObservationsConfig` (default: the problem generates them)
    observations: ObservationsConfig = ObservationsConfig()
    #: inverse problems: scalar coefficients to recover, {name: initial guess}, e.g.
    #: {viscosity: 0.05}; trained with the network from that guess (`pinn.problems.trainable`);
    #: the value in `coefficients` (or the problem's default) is the true one, used only to
    #: report the error
    trainable: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") is None and data.get("target") is None:
            data = {**data, "name": BUILTIN_PROBLEMS[0]}
        return data

    @property
    def identifier(self) -> str:
        """The built-in alias or the target: what `pinn.problems.make_problem` takes."""
        return self.target if self.target is not None else self.name

    @model_validator(mode="after")
    def _known_problem_and_coefficients(self):
        """Exactly one of name/target; the target loads; coefficient names checked against the
        problem, values against its `coefficient_bounds` (errors name problem.coefficients.<name>)."""
        if self.name is not None and self.target is not None:
            raise ValueError(f"target = {self.target!r}: give either name (a built-in) or target "
                             f"(your own problem class), not both (name = {self.name!r})")
        from pinn.problems import load_problem_class

        try:
            problem = load_problem_class(self.identifier)
            problem.check_declarations()
        except ValueError as e:
            raise ValueError(f"target = {self.target!r}: {str(e).split(': ', 1)[-1]}") from None
        allowed = problem.coefficient_names()
        lines = []
        for key, value in self.coefficients.items():
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, bool) for v in values):
                lines.append(f"coefficients.{key} = {value}: must be a number, not a boolean")
            elif key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                lines.append(f"coefficients.{key} = {value}: not a coefficient of "
                             f"{self.identifier}{hint} (allowed: {', '.join(allowed)})")
        known = {k: v for k, v in self.coefficients.items() if k in allowed}
        for key, rule in problem.coefficient_errors(known).items():
            lines.append(f"coefficients.{key} = {self.coefficients[key]}: {rule}")
        from pinn.problems.trainable import initial_errors

        lines += initial_errors(self.trainable, problem)
        if lines:
            raise ValueError("\n".join(lines))
        return self


class ModelConfig(_Section):
    width: int = Field(32, gt=0, le=8192)
    depth: int = Field(3, gt=0, le=64)
    activation: Literal["tanh", "sin", "gelu", "swish", "softplus"] = "tanh"
    periodic_embedding: StrictBool = True
    #: impose the initial values exactly, u = u0 + (t - t0) N (no `ic` loss term)
    hard_initial_condition: StrictBool = False
    fourier_features: int = Field(0, ge=0, le=4096)
    fourier_scale: float = Field(1.0, gt=0)
    rwf: StrictBool = False
    rwf_mean: float = 0.5
    rwf_std: float = Field(0.1, ge=0)


class CollocationConfig(_Section):
    """The fixed point sets written by the collocation stage (refinement, fixed sampling, pools)."""

    num_points: int = Field(8192, gt=0)
    ic_points: int = Field(512, gt=0)
    bc_points: int = Field(256, gt=0)
    method: Literal["uniform", "sobol"] = "sobol"


class UniformSamplingConfig(_Section):
    resample: StrictBool = True  # fresh points every step; false = the fixed collocation set


class RADConfig(_Section):
    """RAD (Wu et al. 2023): p(x) ∝ |r|^k / mean|r|^k + c over a candidate pool."""

    k: float = Field(1.0, ge=0)
    c: float = Field(1.0, ge=0)
    pool_size: int = Field(16384, gt=0)
    resample_every: int = Field(100, gt=0)


class RARDConfig(_Section):
    """RAR-D (Wu et al. 2023): add points near high residuals into a fixed-capacity buffer."""

    num_new_points: int = Field(64, gt=0)
    percentile: float = Field(90.0, ge=0, le=100)
    noise_scale: float = Field(0.05, ge=0)
    every: int = Field(200, gt=0)
    capacity: int = Field(4096, gt=0)
    pool_size: int = Field(8192, gt=0)


class HardBankConfig(_Section):
    """Seed 001's hard bank: top-k residual points kept in a bank; batch = (1-p) uniform + p bank."""

    pool_size: int = Field(8192, gt=0)
    bank_size: int = Field(1024, gt=0)
    top_k: int = Field(256, gt=0)
    refresh_every: int = Field(100, gt=0)
    p_start_step: int = Field(0, ge=0)
    p_ramp_steps: int = Field(1000, ge=0)
    p_max: float = Field(0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _top_k_fits(self):
        if self.top_k > self.bank_size:
            raise ValueError(f"top_k = {self.top_k}: must be <= bank_size ({self.bank_size})")
        if self.top_k > self.pool_size:
            raise ValueError(f"top_k = {self.top_k}: must be <= pool_size ({self.pool_size})")
        return self


class SamplingConfig(_Section):
    method: Literal["uniform", "rad", "rar_d", "hard_bank"] = "uniform"
    batch_size: int = Field(2048, gt=0)
    ic_batch_size: int = Field(256, gt=0)
    bc_batch_size: int = Field(128, gt=0)
    uniform: UniformSamplingConfig = UniformSamplingConfig()
    rad: RADConfig = RADConfig()
    rar_d: RARDConfig = RARDConfig()
    hard_bank: HardBankConfig = HardBankConfig()


class GradNormConfig(_Section):
    """GradNorm (Chen et al. 2018)."""

    alpha: float = Field(1.5, ge=0)
    learning_rate: float = Field(0.025, gt=0)
    update_every: int = Field(10, gt=0)
    min_weight: float = Field(0.1, gt=0)
    max_weight: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self):
        """GradNorm keeps the mean weight at 1 (`pinn.balancing.gradnorm`): 1 must be allowed."""
        why = "GradNorm keeps the mean weight at 1, so min_weight <= 1 <= max_weight"
        lines = []
        if self.min_weight > 1.0:
            lines.append(f"min_weight = {self.min_weight}: must be <= 1 ({why})")
        if self.max_weight < 1.0:
            lines.append(f"max_weight = {self.max_weight}: must be >= 1 ({why})")
        if lines:
            raise ValueError("\n".join(lines))
        return self


class GradRatioConfig(_Section):
    """Gradient-norm ratio weights (Wang, Teng & Perdikaris 2021; Wang et al. 2023)."""

    momentum: float = Field(0.9, ge=0, lt=1)
    update_every: int = Field(100, gt=0)


class CausalConfig(_Section):
    """Causal time weighting (Wang, Sankaran & Perdikaris 2022)."""

    enabled: StrictBool = False
    tolerance: float = Field(1.0, ge=0)
    num_chunks: int = Field(16, gt=0)


class BalancingConfig(_Section):
    method: Literal["fixed", "gradnorm", "grad_ratio"] = "fixed"
    #: per loss term, by name: the problem's residual and condition terms (`pde`, `ic`, `bc` for
    #: the built-ins, always accepted; a term missing here gets weight 1)
    weights: dict[str, float] = Field(
        default_factory=lambda: {"pde": 1.0, "ic": 10.0, "bc": 1.0}
    )
    gradnorm: GradNormConfig = GradNormConfig()
    grad_ratio: GradRatioConfig = GradRatioConfig()
    causal: CausalConfig = CausalConfig()

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, v):
        for k, w in v.items():
            if not w >= 0:
                raise ValueError(f"{k} = {w}: must be >= 0")
        return v


class LevelConfig(_Section):
    steps: int = Field(gt=0)
    #: the level this one starts from: "init" for the coarsest, else the previous level's name
    init_from: str


class MultilevelConfig(_Section):
    """Coarse-to-fine cascade: level i of L has width `model.width * coarsening_factor**(L-1-i)`."""

    num_levels: int = Field(1, gt=0, le=8)
    coarsening_factor: float = Field(0.5, gt=0, le=1)
    finest_warmup_steps: int = Field(0, ge=0)
    levels: dict[str, LevelConfig] = Field(
        default_factory=lambda: {"level0": LevelConfig(steps=2000, init_from="init")}
    )

    @model_validator(mode="after")
    def _chain(self):
        names = list(self.levels)
        if len(names) != self.num_levels:
            raise ValueError(
                f"num_levels = {self.num_levels}: but {len(names)} levels are defined "
                f"({', '.join(names) or 'none'}); the two must agree"
            )
        for i, name in enumerate(names):
            if name != f"level{i}":
                raise ValueError(f"levels.{name} = ...: level {i} must be named 'level{i}'")
            want = "init" if i == 0 else names[i - 1]
            got = self.levels[name].init_from
            if got != want:
                raise ValueError(
                    f"levels.{name}.init_from = {got!r}: must be {want!r} "
                    "(levels are listed coarse to fine, each starting from the one before)"
                )
        return self


class WindowConfig(_Section):
    """One later time-marching window (`windows.later.window<k>`, k >= 1): it starts from window
    k-1's network and trains it `steps` Adam steps, then `refine_iterations` iterations of
    `refine.method` (0: none), on its own time slab (`pinn.windows`)."""

    #: the window this one starts from (its initial condition and network): the one before
    after: str
    steps: int = Field(gt=0)
    refine_iterations: int = Field(0, ge=0)


class WindowsConfig(_Section):
    """Time-marching (`pinn.windows`): the time axis cut into `count` equal windows. Window 0 is
    the cascade (`multilevel`) and refinement (`refine`) on the first slab; each later one is a
    stage of its own (`window@window<k>`) configured under `later`."""

    count: int = Field(1, gt=0, le=64)
    later: dict[str, WindowConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _chain(self):
        names = list(self.later)
        want = [f"window{k}" for k in range(1, self.count)]
        if names != want:
            raise ValueError(
                f"later = {{{', '.join(names)}}}: windows.count = {self.count} needs exactly "
                f"{', '.join(want) or 'no later windows'} (window0 is the cascade and refinement)"
            )
        for k, name in enumerate(names, start=1):
            got = self.later[name].after
            if got != f"window{k - 1}":
                raise ValueError(f"later.{name}.after = {got!r}: must be 'window{k - 1}' (each "
                                 "window starts from the one before)")
        return self


class OptimizerConfig(_Section):
    """Adam with warm-up and exponential decay; hybrid switch to the refinement by loss threshold."""

    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(0, ge=0)
    decay_rate: float = Field(0.9, gt=0, le=1)
    decay_steps: int = Field(1000, gt=0)
    b1: float = Field(0.9, ge=0, lt=1)
    b2: float = Field(0.999, ge=0, lt=1)
    #: hybrid: stop the Adam phase early once the total loss falls below this (null: never)
    switch_loss_threshold: Optional[float] = Field(None, gt=0)


class RefineConfig(_Section):
    """Quasi-Newton refinement on a fixed point set (L-BFGS, BFGS, self-scaled BFGS/Broyden)."""

    method: Literal["none", "lbfgs", "bfgs", "ssbfgs", "ssbroyden"] = "lbfgs"
    iterations: int = Field(500, ge=0)
    block_size: int = Field(100, gt=0)
    memory_size: int = Field(20, gt=0)
    max_linesearch_steps: int = Field(20, gt=0)
    precision: Literal["float32", "float64"] = "float64"
    #: redraw the refinement points with RAD between blocks (0: keep the fixed set)
    resample_every_blocks: int = Field(0, ge=0)
    rad_k: float = Field(1.0, ge=0)
    rad_c: float = Field(1.0, ge=0)


class TrainConfig(_Section):
    log_every: int = Field(100, gt=0)
    checkpoint_every: int = Field(500, gt=0)
    precision: Literal["float32", "float64"] = "float32"
    #: divergence policy: on a non-finite loss/gradient roll back to the last good state, multiply
    #: the learning rate by `divergence_lr_factor`, retry; fail after `max_divergence_retries`
    max_divergence_retries: int = Field(3, ge=0)
    divergence_lr_factor: float = Field(0.5, gt=0, lt=1)
    #: NTK diagnostics: every `ntk_every` steps (0 = off) log per loss term the trace of its
    #: empirical neural-tangent-kernel block on `ntk_points` fixed points (`pinn.train`)
    ntk_every: int = Field(0, ge=0)
    ntk_points: int = Field(64, gt=0)




class ReferenceConfig(_Section):
    """Where the reference comes from, and how accurate it must be for accuracy figures to mean
    something.

    The reference stage certifies a built-in solver's solution by solving again at doubled
    resolution (`est_rel_error`). Above `warn_above` it warns and the report marks every accuracy
    figure as limited by the reference; above `fail_above` it fails unless `allow_inaccurate` is
    true. With `file`, the reference is read from that file instead (`pinn.reference.files`: .npz,
    .mat, COMSOL/PINNacle text; relative to the project root); it is not certified here: its error
    is what the file states (`est_rel_error`, then checked like a solver's) or unknown (not
    checked). The gate reads the file before any stage runs.
    """

    warn_above: float = Field(1e-6, gt=0)
    fail_above: float = Field(1e-2, gt=0)
    allow_inaccurate: StrictBool = False
    #: a reference solution from this file instead of the built-in solver (null: the solver)
    file: Optional[str] = None
    #: the file's names for the arrays (or text columns) the reader looks for, when they differ:
    #: {name the pipeline uses: name in the file}, e.g. {u: usol, t: tt} (names: the problem's
    #: inputs and fields, `points`, `est_rel_error`)
    keys: dict[str, str] = Field(default_factory=dict)
    #: a text file's column names, in order (for a file whose header does not name them)
    columns: Optional[list[str]] = None

    @model_validator(mode="after")
    def _order(self):
        if self.warn_above > self.fail_above:
            raise ValueError(f"warn_above = {self.warn_above}: must be <= fail_above ({self.fail_above})")
        return self

    @field_validator("file")
    @classmethod
    def _format(cls, v):
        if v is not None:
            if not v.strip():
                raise ValueError("must be a file path (or null: the built-in solver)")
            if not v.lower().endswith(REFERENCE_FILE_SUFFIXES):
                raise ValueError(f"unsupported format (the file must end in "
                                 f"{', '.join(REFERENCE_FILE_SUFFIXES)})")
        return v

    @field_validator("columns")
    @classmethod
    def _names(cls, v):
        if v is not None:
            if not v or not all(isinstance(n, str) and n.strip() for n in v):
                raise ValueError("must be a non-empty list of column names")
            repeated = sorted({n for n in v if v.count(n) > 1})
            if repeated:
                raise ValueError(f"names {', '.join(repeated)} more than once")
        return v


class EvaluateConfig(_Section):
    #: points per compiled evaluation call on the reference grid (bounds memory; same result)
    chunk_size: int = Field(65536, gt=0)


class ReportConfig(_Section):
    title: str = "PINN training report"
    dpi: int = Field(110, gt=0, le=600)
    #: fractions of the time interval (0: its start, 1: its end) at which to draw the solution
    snapshot_times: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])

    @field_validator("snapshot_times")
    @classmethod
    def _times(cls, v):
        for t in v:
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"contains {t}, must be in [0, 1]")
        return v


class DistributedConfig(_Section):
    """Multi-process runtime (`pinn.distributed.initialize`) and data-parallel training.

    `PINN_COORDINATOR_ADDRESS`, `PINN_NUM_PROCESSES`, `PINN_PROCESS_ID` override these per process;
    `null` for `num_processes` / `process_id` defers to JAX's detection (SLURM, Open MPI, ...).
    """

    coordinator_address: Optional[str] = None  # "host:port" of process 0
    num_processes: Optional[int] = Field(1, gt=0)
    process_id: Optional[int] = Field(0, ge=0)
    #: shard every batch along a "data" mesh axis over all (global) devices
    data_parallel: StrictBool = False

    @model_validator(mode="after")
    def _consistent(self):
        n, i = self.num_processes, self.process_id
        if n is not None and i is not None and i >= n:
            raise ValueError(f"process_id = {i}: must be < num_processes ({n})")
        a = self.coordinator_address
        if a is not None and (":" not in a or not a.rsplit(":", 1)[1].isdigit()):
            raise ValueError(f"coordinator_address = {a!r}: must be 'host:port'")
        return self


class Params(_Section):
    #: level i uses the PRNG seed `seed·1000 + i`, which must fit in 32 bits (JAX truncates)
    seed: int = Field(0, ge=0, le=4_294_966)
    problem: ProblemConfig = ProblemConfig()
    model: ModelConfig = ModelConfig()
    collocation: CollocationConfig = CollocationConfig()
    sampling: SamplingConfig = SamplingConfig()
    balancing: BalancingConfig = BalancingConfig()
    multilevel: MultilevelConfig = MultilevelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    refine: RefineConfig = RefineConfig()
    train: TrainConfig = TrainConfig()
    reference: ReferenceConfig = ReferenceConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()
    distributed: DistributedConfig = DistributedConfig()
    windows: WindowsConfig = WindowsConfig()

    @model_validator(mode="after")
    def _across_sections(self):
        """Constraints that tie keys of different sections together."""
        from pinn.problems import make_problem

        problem = make_problem(self.problem.identifier, **self.problem.coefficients)
        try:
            problem.check_residuals()
        except ValueError as e:
            raise ValueError(f"problem.target = {self.problem.identifier!r}: {e}") from None
        terms = set(problem.term_names(False)) | {"pde", "ic", "bc"}
        for name in self.balancing.weights:
            if name not in terms:
                raise ValueError(f"balancing.weights.{name} = {self.balancing.weights[name]}: not a "
                                 f"loss term of {self.problem.identifier} (its terms: "
                                 f"{', '.join(problem.term_names(False))})")
        names = (*problem.input_names, *problem.fields, "points", "est_rel_error")
        for name, value in self.reference.keys.items():
            if name not in names:
                raise ValueError(f"reference.keys.{name} = {value!r}: not a name the reference "
                                 f"reader looks for (names: {', '.join(names)})")
        if self.model.hard_initial_condition and not problem.hard_initial_values():
            raise ValueError(f"model.hard_initial_condition = True: {self.problem.identifier} "
                             "states no initial value (an Initial condition of order 0) to impose")
        if self.balancing.causal.enabled and problem.steady:
            raise ValueError("balancing.causal.enabled = True: the problem is steady (no time "
                             "axis to weight causally)")
        for c in problem.conditions():
            field, axis = getattr(c, "field", None), getattr(c, "axis", None)
            if field is not None and field not in problem.fields:
                raise ValueError(f"problem.target = {self.problem.identifier!r}: a {type(c).__name__} "
                                 f"condition names field {field!r}, not one of the problem's "
                                 f"fields {problem.fields}")
            if isinstance(axis, str) and axis not in problem.input_names:
                raise ValueError(f"problem.target = {self.problem.identifier!r}: a {type(c).__name__} "
                                 f"condition names axis {axis!r}, not one of the problem's inputs "
                                 f"{problem.input_names}")
        observed = problem.observation_conditions()
        obs = self.problem.observations
        if obs.file is not None and not observed:
            raise ValueError(f"problem.observations.file = {obs.file!r}: "
                             f"{self.problem.identifier} has no Observation condition to "
                             "give data to")
        names = (*problem.input_names, *problem.fields, "points")
        for name, value in obs.keys.items():
            if name not in names:
                raise ValueError(f"problem.observations.keys.{name} = {value!r}: not a name the "
                                 f"reader looks for (names: {', '.join(names)})")
        if self.windows.count > 1 and self.problem.trainable:
            raise ValueError(f"windows.count = {self.windows.count}: problem.trainable is set "
                             "(each window would recover its own coefficients); use 1")
        if self.windows.count > 1 and not problem.has_initial:
            why = ("the problem is steady (no time axis to march in)" if problem.steady else
                   "the problem has no Initial condition (a window's starts from the one before)")
            raise ValueError(f"windows.count = {self.windows.count}: {why}; use 1")
        if self.windows.count > 1 and observed:
            raise ValueError(f"windows.count = {self.windows.count}: {self.problem.identifier} has "
                             "observation data, which time windows do not split; use 1")
        if problem.steady and problem.has_initial:
            raise ValueError(f"problem.target = {self.problem.identifier!r}: an Initial condition "
                             "in a steady problem (its Box has time=None: there is no initial time)")
        s = self.sampling
        if s.method == "rar_d":  # `pinn.from_params.sampler_from_params`: the initial points must fit
            initial = min(s.batch_size, self.collocation.num_points)
            if s.rar_d.capacity < initial:
                raise ValueError(
                    f"sampling.rar_d.capacity = {s.rar_d.capacity}: must be >= the number of "
                    f"initial points min(sampling.batch_size, collocation.num_points) = {initial}"
                )
        return self


# ----------------------------------------------------------------------------------------------
# loading and error formatting


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the section that `loc` (a pydantic error location) points into."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            ann = current.model_fields[part].annotation
            current = ann
        elif getattr(current, "__origin__", None) is dict:  # e.g. multilevel.levels.<name>
            current = current.__args__[1]
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _format_error(err: dict, data: Any, model: type[BaseModel]) -> str:
    loc = tuple(p for p in err["loc"] if p != "[key]")
    path = ".".join(str(p) for p in loc) or "<root>"
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{path}: unknown key{hint} (allowed: {', '.join(allowed)})"
    value = err.get("input")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        lines = msg.splitlines()
        if all(" = " in line.split(":")[0] for line in lines):  # validators naming their own keys
            return "\n".join(f"{path}.{line}" if path != "<root>" else line for line in lines)
    ctx = err.get("ctx") or {}
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        msg = msg.replace("Input should be", "must be")
    elif kind == "finite_number":
        msg = "must be a finite number"
    elif kind == "missing":
        return f"{path}: missing required key"
    elif kind == "literal_error":
        msg = f"must be one of {ctx.get('expected', '')}"
    elif kind == "bool_type":
        msg = "must be true or false"
    elif kind == "union":
        return f"{path} = {value!r}: {msg}"
    else:
        msg = msg.replace("Input should be", "must be")
    return f"{path} = {value!r}: {msg}" if "input" in err and kind != "missing" else f"{path}: {msg}"


#: a union member's tag in a pydantic error location (`problem.coefficients.k.list[float]`)
_UNION_TAG = re.compile(r"^(float|int|str|bool|list\[(float|int|str)\])$")
_TAG_TEXT = {"float": "a number", "int": "an integer", "str": "a string", "bool": "true or false",
             "list[float]": "a list of numbers", "list[int]": "a list of integers",
             "list[str]": "a list of strings"}


def _merge_union_branches(errors: list[dict]) -> list[dict]:
    """pydantic reports a value that fits no member of a union (`float | list[float]`) once per
    member, each under its own tag; those become one error at the value's own key:
    `must be a number or a list of numbers`."""
    out: list[dict] = []
    merged: dict[tuple, dict] = {}
    for err in errors:
        loc = tuple(err["loc"])
        at = next((i for i, p in enumerate(loc) if isinstance(p, str) and _UNION_TAG.match(p)), None)
        if at is None:
            out.append(err)
            continue
        base, tag = loc[:at], loc[at]
        if base not in merged:
            merged[base] = {"type": "union", "loc": base, "tags": [], "input": None}
            out.append(merged[base])
        if tag not in merged[base]["tags"]:
            merged[base]["tags"].append(tag)
        if at == len(loc) - 1:  # the value itself (not an element of a list member)
            merged[base]["input"] = err.get("input")
    for err in merged.values():
        err["msg"] = "must be " + " or ".join(_TAG_TEXT[t] for t in err["tags"])
    return out


def validate_params(data: Any, source: str = "params") -> Params:
    """Validate a plain dict into `Params`; raises `ConfigError` naming every bad key path."""
    if data is None:
        raise ConfigError(f"{source}: is empty (expected a mapping of sections such as 'problem', 'model')")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping of sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        lines = [line for err in _merge_union_branches(e.errors())
                 for line in _format_error(err, data, Params).splitlines()]
        raise ConfigError("\n".join(f"{source}: {line}" for line in lines)) from None


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping in the YAML file has the same key twice (YAML says keys are unique; PyYAML would
    silently keep the last value)."""

    def __init__(self, key: str, first_line: int, second_line: int):
        super().__init__(problem=f"duplicate key '{key}' at lines {first_line} and {second_line}")
        self.key, self.lines = key, (first_line, second_line)


class ParamsLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` (plain data only) that rejects a key repeated within one mapping, naming
    its dotted path and both lines."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_unique_keys(node, ())
        return super().construct_document(node)


def _check_unique_keys(node: yaml.Node, path: tuple[str, ...]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges may override
                continue
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            key = (key_node.tag, name) if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(".".join(path + (str(name),)), seen[key], line)
            seen[key] = line
            _check_unique_keys(value_node, path + (str(name),))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, path + (str(i),))


def read_yaml(path: str | Path, what: str = "file", error: type[Exception] = ConfigError) -> Any:
    """The data in the YAML file `path`, read with `ParamsLoader` (safe: plain data only;
    duplicate keys rejected). Raises `error` with one line naming the file (and the line)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    try:
        return yaml.load(text, Loader=ParamsLoader)  # noqa: S506  (a SafeLoader subclass)
    except DuplicateKeyError as e:
        raise error(f"{path}: {e.problem} (a key may appear once)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if isinstance(e, yaml.constructor.ConstructorError):  # e.g. !!python/object: never built
            raise error(f"{path}: YAML tag not allowed{where} (only plain data): {problem}") from None
        raise error(f"{path}: YAML syntax error{where}: {problem}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read `path` (`read_yaml`) and validate it. Raises `ConfigError` on any user error."""
    return validate_params(read_yaml(path), source=str(path))
