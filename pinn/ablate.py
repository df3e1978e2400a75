"""Ablation studies as DVC experiments: `pinn ablate STUDY.yaml` and `flows/ablation.py`.

A study file (YAML, validated with pydantic before anything runs; every error one line naming
the key) names

    name: seed-techniques            # optional (default: the file's stem); experiment names
                                     #   are <name>[-<case>]-<variant>-s<seed>
    title: ...                       # optional, the report's title
    params: ../params.yaml           # the base params file, relative to the study file
                                     #   (default: this checkout's params.yaml)
    base: {dotted.key: value, ...}   # overrides of the params file for every run
    cases: {name: {overrides}, ...}  # optional: settings every variant runs in (e.g. problems)
    variants: {name: {overrides}}    # what is compared; an empty mapping is the base itself
    seeds: [0, 1, 2]                 # >= 3, unless `allow_few_seeds: true` (quick checks, tests)
    budgets:
      steps: [500, 2000]             # rel L2 read off each run's curve at these steps (Adam
                                     #   steps, then refinement iterations)
      wall_s: [10, 30, 60]           # ... and at these seconds of training wall-clock
    jobs: 1                          # experiments run at once (`dvc queue start --jobs`)
    compile_cache: false             # share a persistent XLA cache between the runs
    target: evaluate                 # the stage each experiment reproduces (null: all, each
                                     #   run's own report too)

Every run is also read at its end, "final": the variant's own steps (equal across variants
unless a variant changes them), its rel L2 being `metrics.json`'s. A key is written as in
`dvc exp run -S`: dotted, `~key: null` deletes a key; a mapping value is merged into the
mapping it overrides (Hydra's rule); `seed` is set by `seeds` only. A run's params are the
params file, then `base`, its case's and its variant's overrides, then its seed; each such
combination must validate against `pinn.config`.

How a study runs:
1. A DVC project of its own (`runs/studies/<name>/` by default; reused, so its DVC cache and run
   cache carry over between runs of the study): this checkout's pipeline (dvc.yaml, `pinn/`) and
   the base params (the params file with `base` applied) committed to git as the baseline.
2. Each case × variant × seed is queued as `dvc exp run --queue -n <name> -S key=value ...
   [target]` (the case's and variant's overrides and the seed), then `dvc queue start --jobs N` runs them
   and `dvc queue status` is polled until they are done. With N > 1, the first run of each case
   runs alone first, so the later ones find its reference solution in the run cache.
3. Results are read back from DVC only: params and metrics from `dvc exp show --json` (the params
   DVC ran with are checked against the study's), the histories (`cache: false` outputs, which
   DVC commits into the experiment's git commit) with `git show <exp commit>:<path>`, the last
   training batch (a cached output) with `dvc.api.open(..., rev=<exp commit>)`. What DVC did
   with each stage (ran / restored from the run cache / unchanged) comes from `dvc queue logs`.
4. The report (`write_report`): markdown + PNG.

Scale-out (flows/ablation.py `--pool POOL --remote URL`): instead of step 2, each run is a flow
run on a Prefect work pool's worker, on any machine; the machines share a DVC remote as the cache
(`share_project`: the study project's default remote, in `.dvc/config.local`; the baseline pushed
to a git repository they reach). A worker runs it in its own clone (`run_here`: `dvc exp run
--pull`, so a stage another machine ran is restored from the remote's run cache, then `dvc push
--run-cache` and `dvc exp push`); the study pulls the experiments back (`pull_experiments`) and
reads them as in step 3, what DVC did with each stage coming from the worker; the report counts
the stage runs one worker restored from another's (`across_workers`).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import difflib
import io
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import yaml
from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StringConstraints, ValidationError,
                      field_validator, model_validator)

from pinn.config import ConfigError, Params, load_params, read_yaml, validate_params
from pinn.errors import UserError

#: names of studies, cases and variants: they become parts of git ref names
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*$"
#: an override key: dotted params path, `~` in front to delete it
KEY_PATTERN = re.compile(r"^~?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
#: real studies need this many seeds at least (`allow_few_seeds: true` lifts it)
MIN_SEEDS = 3
#: what DVC says it did with a stage (its log lines), by outcome
RAN, RESTORED, UNCHANGED = "ran", "restored", "unchanged"
_OUTCOME_PATTERNS = {
    RAN: re.compile(r"Running stage '([^']+)':"),
    RESTORED: re.compile(r"Stage '([^']+)' is cached - skipping run"),
    UNCHANGED: re.compile(r"Stage '([^']+)' didn't change, skipping"),
}
#: the params gate runs in every experiment (always_changed); it is not counted as compute
GATE_STAGE = "params"
FINAL = "final"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=60)]


class StudyError(UserError):
    """A user error in a study file or a failed study: one line per problem."""


# ----------------------------------------------------------------------------------------------
# the study file


class Budgets(BaseModel):
    """Where each run's rel L2 is read off its curve (besides at its end, "final")."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    steps: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list)
    wall_s: list[Annotated[float, Field(gt=0)]] = Field(min_length=1)

    @field_validator("steps", "wall_s")
    @classmethod
    def _increasing(cls, v: list) -> list:
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("must be strictly increasing")
        return v


class StudyFile(BaseModel):
    """The study file as written (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Optional[Name] = None
    title: Optional[str] = None
    description: str = ""
    params: Optional[str] = None
    base: dict[str, Any] = Field(default_factory=dict)
    cases: dict[Name, dict[str, Any]] = Field(default_factory=dict)
    variants: dict[Name, dict[str, Any]] = Field(min_length=1)
    seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    allow_few_seeds: StrictBool = False
    budgets: Budgets
    jobs: int = Field(1, ge=1, le=64)
    compile_cache: StrictBool = False
    #: the dvc.yaml stage each experiment reproduces, with everything it depends on (`dvc exp run
    #: ... TARGET`); the default leaves out each run's own report (the study has one)
    target: Optional[str] = "evaluate"

    @field_validator("base", "cases", "variants", mode="before")
    @classmethod
    def _mappings(cls, v: Any, info) -> Any:
        """An empty entry (`baseline:`) is no overrides."""
        if v is None:
            return {}
        if info.field_name != "base" and isinstance(v, dict):
            return {k: {} if overrides is None else overrides for k, overrides in v.items()}
        return v

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("must not repeat a seed")
        return v

    @model_validator(mode="after")
    def _enough_seeds(self):
        if len(self.seeds) < MIN_SEEDS and not self.allow_few_seeds:
            raise ValueError(f"seeds = {self.seeds}: a study needs at least {MIN_SEEDS} seeds "
                             "(set allow_few_seeds: true for a quick check)")
        return self


@dataclass(frozen=True)
class Run:
    """One experiment of a study: a case × variant × seed."""

    name: str  # the DVC experiment's name
    case: str  # "" when the study has no cases
    variant: str
    seed: int
    overrides: tuple[tuple[str, Any], ...]  # case's, then variant's (a key once), then seed
    params: dict  # the params DVC must run it with (the base params with `overrides` applied)


@dataclass(frozen=True)
class Study:
    """A validated study: the file's settings, its base params and its runs."""

    path: Path
    spec: StudyFile
    name: str
    params_file: Path  # the base params file
    base_params: dict  # the params file with `base` applied: the study project's params.yaml
    runs: tuple[Run, ...]

    @property
    def title(self) -> str:
        return self.spec.title or f"Ablation study: {self.name}"

    @property
    def cases(self) -> list[str]:
        return list(self.spec.cases) or [""]


def _read_yaml(path: Path, what: str) -> Any:
    return read_yaml(path, what, StudyError)


def _format_study_error(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"] if p != "[key]") or "<root>"
    msg = err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = list(StudyFile.model_fields if "." not in loc else Budgets.model_fields)
        close = difflib.get_close_matches(loc.rsplit(".", 1)[-1], allowed, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{loc}: unknown key{hint} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return f"{loc}: missing required key"
    if kind == "string_pattern_mismatch":
        return (f"{loc} = {err.get('input')!r}: a name must be letters, digits and '_', in parts "
                "joined by single '-' (it becomes part of a git ref)")
    if msg.startswith("seeds = "):
        return msg
    msg = msg.replace("Input should be", "must be")
    return f"{loc} = {err['input']!r}: {msg}" if "input" in err and loc != "<root>" else f"{loc}: {msg}"


def _check_keys(overrides: Mapping[str, Any], where: str) -> list[str]:
    lines = []
    for key, value in overrides.items():
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            lines.append(f"{where}.{key}: not a dotted params key (e.g. sampling.method; "
                         "~key: null deletes one)")
        elif key.lstrip("~") == "seed":
            lines.append(f"{where}.seed: the seed is set by `seeds`, not by overrides")
        elif key.startswith("~") and value is not None:
            lines.append(f"{where}.{key} = {value!r}: a deletion (~key) takes no value (write null)")
    return lines


def _walk(data: dict, parts: list[str], create: bool) -> dict | None:
    node = data
    for part in parts:
        if not isinstance(node, dict):
            return None
        if part not in node:
            if not create:
                return None
            node[part] = {}
        node = node[part]
    return node if isinstance(node, dict) else None


def _merge(into: Any, value: Any) -> Any:
    """Hydra/OmegaConf's rule for `key=value`: a mapping merges into a mapping, recursively;
    anything else replaces."""
    if isinstance(into, dict) and isinstance(value, dict):
        out = dict(into)
        for k, v in value.items():
            out[k] = _merge(out[k], v) if k in out else copy.deepcopy(v)
        return out
    return copy.deepcopy(value)


def has_key(data: Mapping, key: str) -> bool:
    """Whether the dotted `key` is present in `data`."""
    *parents, leaf = key.split(".")
    node = _walk(data, parents, create=False)  # type: ignore[arg-type]
    return node is not None and leaf in node


def apply_overrides(data: Mapping, overrides: Iterable[tuple[str, Any]]) -> dict:
    """A copy of `data` with `overrides` (dotted key, value) applied in order, as `dvc exp run -S`
    applies them: `~key` deletes, a mapping merges into a mapping, anything else is set (missing
    parents are created). Raises KeyError naming a `~key` that is not there."""
    out = copy.deepcopy(dict(data))
    for key, value in overrides:
        *parents, leaf = key.lstrip("~").split(".")
        if key.startswith("~"):
            node = _walk(out, parents, create=False)
            if node is None or leaf not in node:
                raise KeyError(key.lstrip("~"))
            del node[leaf]
            continue
        node = _walk(out, parents, create=True)
        if node is None:
            raise KeyError(key)
        node[leaf] = _merge(node[leaf], value) if leaf in node else copy.deepcopy(value)
    return out


#: strings Hydra reads as strings when written unquoted (`sampling.method=rad`)
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
#: ... except these, which it reads as other things (or might): quoted
_RESERVED = {"true", "false", "null", "none", "nan", "inf", "yes", "no", "on", "off"}


def hydra_value(value: Any) -> str:
    """`value` in the override grammar of `dvc exp run -S` (Hydra): a name as it is (`rad`), any
    other string quoted (so `'true'` stays a string and `'1e-3'` is not a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value}: not a finite number")
        return repr(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED:  # as the README writes them
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                raise ValueError(f"{k!r}: a mapping key must be a plain name")
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"{value!r}: not a params value (numbers, strings, booleans, null, lists, "
                     "mappings)")


def dvc_overrides(base: Mapping, overrides: Sequence[tuple[str, Any]]) -> list[str]:
    """`-S` arguments for `overrides` on a params file holding `base`: `key=value` for a key that
    is there, `+key=value` for a new one, `~key` to delete (each judged after the ones before)."""
    args, current = [], copy.deepcopy(dict(base))
    for key, value in overrides:
        if key.startswith("~"):
            args.append(key)
        else:
            args.append(f"{'' if has_key(current, key) else '+'}{key}={hydra_value(value)}")
        current = apply_overrides(current, [(key, value)])
    return args


def _combine(*mappings: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Overrides of several sources in order; a later source's key replaces an earlier one's."""
    out: dict[str, Any] = {}
    for m in mappings:
        for k, v in m.items():
            out.pop(k, None)
            out[k] = v
    return tuple(out.items())


def _validate(data: dict, source: str, lines: list[str]) -> Params | None:
    try:
        return validate_params(data, source=source)
    except ConfigError as e:
        lines.extend(str(e).splitlines())
        return None


def experiment_name(study: str, case: str, variant: str, seed: int) -> str:
    """`<study>[-<case>]-<variant>-s<seed>`."""
    return "-".join(p for p in (study, case, variant, f"s{seed}") if p)


def load_study(path: str | Path) -> Study:
    """Read and validate a study file: its schema, then every run's params against `pinn.config`
    (the params file, `base`, each case and variant, each seed). Raises `StudyError` with one line
    per problem, each naming the study file and the key; nothing runs before this passes."""
    path = Path(path)
    raw = _read_yaml(path, "study file")
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: must be a mapping with variants, seeds and budgets")
    try:
        spec = StudyFile.model_validate(raw)
    except ValidationError as e:
        raise StudyError("\n".join(f"{path}: {_format_study_error(err)}" for err in e.errors())
                         ) from None
    name = spec.name or path.stem
    if not re.match(NAME_PATTERN, name):
        raise StudyError(f"{path}: name = {name!r} (the file's stem): not a valid experiment name; "
                         "set `name:` (letters, digits, '_' and single '-')")
    lines = _check_keys(spec.base, "base")
    for kind, groups in (("cases", spec.cases), ("variants", spec.variants)):
        for group, overrides in groups.items():
            if not isinstance(overrides, dict):
                lines.append(f"{kind}.{group}: must be a mapping of overrides (dotted key: value)")
            else:
                lines += _check_keys(overrides, f"{kind}.{group}")
    if lines:
        raise StudyError("\n".join(f"{path}: {line}" for line in lines))

    from pinn.pipeline import source_root

    if spec.target is not None:
        stages = (yaml.safe_load((source_root() / "dvc.yaml").read_text()) or {}).get("stages", {})
        if spec.target.split("@")[0] not in stages:
            raise StudyError(f"{path}: target = {spec.target!r}: no such stage in dvc.yaml "
                             f"(stages: {', '.join(stages)}; null: all of them)")
    params_file = (path.parent / spec.params) if spec.params else source_root() / "params.yaml"
    try:
        load_params(params_file)
    except ConfigError as e:
        raise StudyError(f"{path}: params = {spec.params or str(params_file)!r}: {e}") from None
    file_data = _read_yaml(params_file, "params file")

    def applied(data: dict, overrides, where: str) -> dict | None:
        try:
            return apply_overrides(data, overrides)
        except KeyError as e:
            lines.append(f"{path}: {where}.~{e.args[0]}: no such key to delete")
            return None

    base = applied(file_data, spec.base.items(), "base")
    if base is None or _validate(base, f"{path}: base", lines) is None:
        raise StudyError("\n".join(lines))
    for seed in spec.seeds:  # (the seed's range does not depend on the rest)
        if _validate(apply_overrides(base, [("seed", seed)]), f"{path}: seeds", lines) is None:
            raise StudyError("\n".join(lines))
    runs = []
    for case in list(spec.cases) or [""]:
        case_overrides = spec.cases.get(case, {})
        where = f"{path}: cases.{case}"
        with_case = applied(base, case_overrides.items(), f"cases.{case}")
        if case and (with_case is None or _validate(with_case, where, lines) is None):
            continue
        for variant, overrides in spec.variants.items():
            combined = _combine(case_overrides, overrides)
            where = f"{path}: variants.{variant}" + (f" (case {case})" if case else "")
            params = applied(base, combined, f"variants.{variant}")
            if params is None or _validate(params, where, lines) is None:
                continue
            try:
                dvc_overrides(base, combined)
            except ValueError as e:
                lines.append(f"{where}: {e}")
                continue
            for seed in spec.seeds:
                runs.append(Run(experiment_name(name, case, variant, seed), case, variant, seed,
                                combined + (("seed", seed),),
                                apply_overrides(params, [("seed", seed)])))
    names = [experiment_name(name, r.case, r.variant, r.seed) for r in runs if r.seed == spec.seeds[0]]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        lines.append(f"{path}: cases/variants: two case/variant pairs would both name their runs "
                     f"{dup.removesuffix(f'-s{spec.seeds[0]}')}-s<seed> (rename one)")
    if lines:
        raise StudyError("\n".join(dict.fromkeys(lines)))
    return Study(path, spec, name, params_file, base, tuple(runs))


# ----------------------------------------------------------------------------------------------
# running it: a DVC project, its queue


@dataclass(frozen=True)
class Project:
    """The study's DVC project (a git repository) and the baseline commit its experiments use."""

    root: Path
    baseline: str  # git commit sha


def default_workdir(study: Study) -> Path:
    """`runs/studies/<name>` in this checkout."""
    from pinn.pipeline import source_root

    return source_root() / "runs" / "studies" / study.name


def study_env(study: Study, root: Path) -> dict[str, str]:
    """Environment of the DVC commands (and so of every stage): `pinn.pipeline.subprocess_env`,
    with the persistent XLA cache shared between the runs (`compile_cache: true`) or off (every
    run compiles its own code, so wall-clock budgets treat every run alike)."""
    return run_env(root, study.spec.compile_cache)


def run_env(root: Path, compile_cache: bool) -> dict[str, str]:
    """`study_env` of a study project (or a worker's clone of it) at `root`."""
    from pinn.pipeline import subprocess_env

    env = subprocess_env()
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["PINN_JAX_CACHE"] = str(root / ".jax_cache") if compile_cache else ""
    return env


def _run(cmd: Sequence[str], cwd: Path, env: Mapping[str, str], check: bool = True
         ) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=cwd, env=dict(env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()
        raise StudyError(f"`{' '.join(cmd[2:] if cmd[:2] == [sys.executable, '-m'] else cmd)}` "
                         f"failed in {cwd}: {' | '.join(out[-5:])}")
    return proc


def _dvc(root: Path, env: Mapping[str, str], *args: str, check: bool = True
         ) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], root, env, check)


def _git(root: Path, env: Mapping[str, str], *args: str, check: bool = True
         ) -> subprocess.CompletedProcess:
    identity = ["-c", "user.name=pinn ablate", "-c", "user.email=ablate@pinn.invalid"]
    return _run(["git", *identity, *args], root, env, check)


#: what the study project's git repository leaves out (DVC's own ignores under .dvc/ included:
#: `pinn.pipeline.make_project` initialises DVC without git)
GITIGNORE = "/data/resume/\n.jax_cache/\n__pycache__/\n*.pyc\n"
DVC_GITIGNORE = "/config.local\n/tmp\n/cache\n"


def prepare_project(study: Study, workdir: str | Path | None = None) -> Project:
    """The study's DVC project in `workdir` (default `default_workdir`): this checkout's pipeline
    and the study's base params, committed as the baseline (a new commit only when something
    changed, so a rerun of the study finds its experiments' stages in the run cache)."""
    from pinn.pipeline import PROJECT_FILES, make_project

    root = make_project(Path(workdir) if workdir is not None else default_workdir(study),
                        study.params_file)
    (root / "params.yaml").write_text(
        f"# base params of study {study.name} ({study.path}); written by pinn ablate\n"
        + yaml.safe_dump(study.base_params, sort_keys=False))
    (root / ".gitignore").write_text(GITIGNORE)
    (root / ".dvc" / ".gitignore").write_text(DVC_GITIGNORE)
    env = study_env(study, root)
    if not (root / ".git").exists():
        _git(root, env, "init", "-q")
        # the study's own repository: a local identity, as DVC commits every experiment
        _git(root, env, "config", "user.name", "pinn ablate")
        _git(root, env, "config", "user.email", "ablate@pinn.invalid")
    _dvc(root, env, "config", "core.no_scm", "false")
    # everything the pipeline reads, committed: queued runs and a work pool's workers (their own
    # clones) see the baseline commit only
    _git(root, env, "add", "--", *(p for p in PROJECT_FILES if (root / p).exists()),
         *_input_files(study, root), "params.yaml", ".gitignore", ".dvc/config",
         ".dvc/.gitignore")
    if _git(root, env, "diff", "--cached", "--quiet", check=False).returncode != 0 or \
            _git(root, env, "rev-parse", "-q", "--verify", "HEAD", check=False).returncode != 0:
        _git(root, env, "commit", "-q", "-m", f"study {study.name}: baseline")
    head = _git(root, env, "rev-parse", "HEAD").stdout.strip()
    return Project(root, head)


def _input_files(study: Study, root: Path) -> list[str]:
    """The files of the runs' params that the project holds at a relative path (`make_project`
    copies them): a `problem.target` file, a `reference.file`, a `problem.observations.file`."""
    found = set()
    for run in study.runs:
        target = (run.params.get("problem") or {}).get("target")
        reference = (run.params.get("reference") or {}).get("file")
        observed = ((run.params.get("problem") or {}).get("observations") or {}).get("file")
        for path in (target.rpartition(":")[0] if isinstance(target, str) else None, reference,
                     observed):
            if isinstance(path, str) and path and not Path(path).is_absolute() \
                    and (root / path).is_file():
                found.add(Path(path).as_posix())
    return sorted(found)


def phases(study: Study, jobs: int) -> list[list[Run]]:
    """The runs in the order they are queued. With more than one job, the first run of each case
    runs first on its own, so that the runs after it find the stages they share with it (the
    reference solution at least) in the run cache instead of computing them at the same time."""
    runs = list(study.runs)
    if jobs <= 1:
        return [runs]
    first = {}
    for run in runs:
        first.setdefault(run.case, run)
    warm = list(first.values())
    return [warm, [r for r in runs if r not in warm]]


_STATUS_LINE = re.compile(r"^(\S+)\s+(\S+)\s+.*\s(Queued|Running|Success|Failed)\s*$")


def queue_status(root: Path, env: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """({experiment name: Queued|Running|Success|Failed}, number of live queue workers) from
    `dvc queue status`."""
    out = _dvc(root, env, "queue", "status").stdout
    status = {}
    for line in out.splitlines():
        m = _STATUS_LINE.match(line.strip())
        if m and m.group(1) != "Task":
            status[m.group(2)] = m.group(3)
    workers = re.search(r"Worker status: (\d+) active, (\d+) idle", out)
    return status, (int(workers.group(1)) + int(workers.group(2))) if workers else 0


def clear_previous(project: Project, runs: Sequence[Run], env: Mapping[str, str]) -> list[str]:
    """Remove the study's experiments of an earlier run on this baseline (their names are taken)
    and the queue's finished or waiting tasks; their stages stay in the run cache. Returns the
    removed experiments' names."""
    names = {r.name for r in runs}
    listed = _dvc(project.root, env, "exp", "ls", "--name-only").stdout.split()
    old = sorted(names & set(listed))
    if old:
        _dvc(project.root, env, "exp", "remove", *old)
    _dvc(project.root, env, "queue", "remove", "--all")
    return old


def exp_args(study: Study, run: Run) -> list[str]:
    """The arguments of a run's `dvc exp run` after its name: `-S key=value ...` (its case's and
    variant's overrides and its seed, on the study's base params) and the study's target."""
    args = dvc_overrides(study.base_params, run.overrides)
    target = [study.spec.target] if study.spec.target else []
    return [a for s in args for a in ("-S", s)] + target


def run_phase(project: Project, study: Study, runs: Sequence[Run], jobs: int,
              env: Mapping[str, str], log: Callable[[str], None] = print,
              poll_s: float = 5.0) -> dict[str, str]:
    """Queue `runs` as DVC experiments (`dvc exp run --queue -n NAME -S ...`), run them with
    `dvc queue start --jobs N` and wait until each has succeeded or failed. Returns
    {name: "Success" | "Failed"}."""
    for run in runs:
        cmd = ["exp", "run", "--queue", "-n", run.name] + exp_args(study, run)
        log("dvc " + " ".join(shlex.quote(c) for c in cmd))
        _dvc(project.root, env, *cmd)
    names = {r.name for r in runs}
    _dvc(project.root, env, "queue", "start", "--jobs", str(jobs))
    reported: dict[str, str] = {}
    idle_polls = 0
    while True:
        time.sleep(poll_s)
        status, workers = queue_status(project.root, env)
        for name in sorted(names):
            state = status.get(name)
            if state in ("Success", "Failed") and name not in reported:
                reported[name] = state
                log(f"{name}: {state.lower()} ({len(reported)} of {len(names)} done)")
        if len(reported) == len(names):
            return reported
        missing = names - set(status)
        if missing:
            raise StudyError(f"experiments left DVC's queue without a result: {sorted(missing)}")
        waiting = any(status.get(n) == "Queued" for n in names)
        idle_polls = idle_polls + 1 if (waiting and workers == 0) else 0
        if idle_polls >= 3:  # the workers stopped while runs wait: start them again
            _dvc(project.root, env, "queue", "start", "--jobs", str(jobs))
            idle_polls = 0


# ----------------------------------------------------------------------------------------------
# scale-out: the runs on other machines (Prefect workers, flows/ablation.py), sharing a DVC remote

#: the shared DVC remote's name, in `.dvc/config.local` of the study project and of each worker's
#: clone (a local setting: the baseline commit, and so the experiments, do not depend on it)
SHARED_REMOTE = "pinn_shared"
#: where a worker keeps its clones of study projects (default: see `worker_dir`)
WORKER_DIR_ENV = "PINN_WORKER_DIR"


def location(url: str) -> str:
    """A remote as given when it is a URL (`s3://...`, `ssh://...`, `user@host:path`), else the
    absolute path of the directory (workers run elsewhere)."""
    if "://" in url or re.match(r"^[\w.-]+@[\w.-]+:", url):
        return url
    return str(Path(url).expanduser().absolute())


def share_project(project: Project, study: Study, remote: str, git_remote: str | None = None,
                  env: Mapping[str, str] | None = None) -> str:
    """Make the study project reachable from workers on other machines; returns the git URL they
    clone. The DVC remote `remote` (any URL DVC takes, or a directory) becomes the project's
    default remote (`.dvc/config.local`), so the study reads the workers' outputs from it; the
    baseline commit is pushed to `git_remote` (a git repository, e.g. `git init --bare`, by URL or
    path) as the branch `pinn-study/<name>`, to which the workers push their experiments. Without
    `git_remote` the workers clone the project itself, and push into it: its directory must then
    be reachable from them (this machine, or a shared filesystem)."""
    env = env or study_env(study, project.root)
    _dvc(project.root, env, "remote", "add", "--local", "--default", "--force", SHARED_REMOTE,
         location(remote))
    if git_remote is None:
        return str(project.root)
    url = location(git_remote)
    _git(project.root, env, "push", "--quiet", url,
         f"+{project.baseline}:refs/heads/pinn-study/{study.name}")
    return url


def pull_experiments(project: Project, git_url: str, names: Sequence[str],
                     env: Mapping[str, str]) -> None:
    """The experiments `names`, as the workers pushed them to `git_url`, into the study project:
    their git commits only (`dvc exp pull --no-cache`; their outputs stay on the DVC remote, where
    `dvc.api` finds them). Nothing to do when the workers push into the project itself."""
    if names and Path(git_url) != project.root:
        _dvc(project.root, env, "exp", "pull", "--force", "--no-cache", git_url, *names)


def worker_dir() -> Path:
    """Where this machine's worker keeps its clones of study projects: `$PINN_WORKER_DIR`, else
    `~/.cache/pinn/study-workers/<the Prefect worker's name>` (one per worker, so that two workers
    on one machine never share a clone)."""
    if os.environ.get(WORKER_DIR_ENV):
        return Path(os.environ[WORKER_DIR_ENV]).expanduser().absolute()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", os.environ.get("PREFECT__WORKER_NAME") or "local")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "pinn" / "study-workers" / name


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One holder at a time of the lock file `path` (a worker running two runs of one study at
    once takes them in turn in its clone)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def checkout_baseline(git_url: str, baseline: str, clone: Path, env: Mapping[str, str]) -> Path:
    """A clone of the study project at `clone` (made or updated from `git_url`), at the study's
    baseline commit, its workspace clean (`git clean -x`; DVC's cache, run cache and temporary
    files in `.dvc/`, and the XLA cache, are kept)."""
    if not (clone / ".git").exists():
        clone.parent.mkdir(parents=True, exist_ok=True)
        _run(["git", "clone", "--quiet", "--no-checkout", git_url, str(clone)], clone.parent,
             env)
        _git(clone, env, "config", "user.name", "pinn ablate")  # DVC commits the experiments
        _git(clone, env, "config", "user.email", "ablate@pinn.invalid")
    else:
        _git(clone, env, "remote", "set-url", "origin", git_url)
        _git(clone, env, "fetch", "--quiet", "origin")
    if _git(clone, env, "cat-file", "-e", f"{baseline}^{{commit}}", check=False).returncode:
        raise StudyError(f"{git_url} has no commit {baseline[:10]} (the study's baseline): the "
                         "study pushes it there first (pinn.ablate.share_project)")
    _git(clone, env, "checkout", "--quiet", "--force", "--detach", baseline)
    _git(clone, env, "clean", "-q", "-ffdx", "-e", "/.dvc/", "-e", "/.jax_cache/")
    return clone


def _stream(cmd: Sequence[str], cwd: Path, env: Mapping[str, str],
            log: Callable[[str], None]) -> tuple[int, str]:
    """Run `cmd`, passing each line of its output to `log` as it comes; (exit status, output)."""
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.strip():
            log(line.rstrip())
    return proc.wait(), "\n".join(lines)


#: `push_run_cache`'s second half, run by `python -c` in the project (DVC resolves a run-cache
#: entry's paths against the working directory): push every object the run-cache entries name
#: that is in the local cache; prints {"pushed": n, "failed": n}
_PUSH_ENTRY_OBJECTS = """
import json, sys
from pathlib import Path
from dvc.repo import Repo

objs = set()
with Repo(".") as repo:
    runs = Path(repo.stage_cache.cache_dir)
    for entry in sorted(runs.glob("*/*/*")) if runs.is_dir() else []:
        try:  # (an entry pulled from the remote whose outputs this machine never needed)
            used = repo.stage_cache.get_used_objs([(entry.parent.name, entry.name)])
        except Exception:
            continue
        for odb, found in used.items():
            objs |= {o for o in found if (odb or repo.cache.local).exists(o.value)}
    result = repo.cloud.push(objs, remote=sys.argv[1])
print(json.dumps({"pushed": len(result.transferred), "failed": len(result.failed)}))
"""


def push_run_cache(root: Path, env: Mapping[str, str], check: bool = True) -> str:
    """`dvc push --run-cache` as another machine needs it: the outputs and the run-cache entries,
    and then every object the entries name that is in this cache. DVC 3 pushes the objects of
    cached outputs only, while restoring a stage from the run cache needs all its outputs (it
    keeps a `cache: false` metric or plot, e.g. a training history, in its cache): without them
    `dvc exp run --pull` elsewhere runs the stage again. Returns what was pushed, in words."""
    try:
        _dvc(root, env, "push", "--run-cache")
        proc = _run([sys.executable, "-c", _PUSH_ENTRY_OBJECTS, SHARED_REMOTE], root, env)
        counts = json.loads(proc.stdout.strip().splitlines()[-1])
    except (StudyError, ValueError, IndexError) as e:
        if check:
            raise StudyError(f"{root}: pushing the run cache to the DVC remote {SHARED_REMOTE} "
                             f"failed: {e}") from None
        return f"push failed: {e}"  # (after a failed run: its own error is what matters)
    if counts["failed"] and check:
        raise StudyError(f"{root}: {counts['failed']} run-cache objects could not be pushed to "
                         f"the DVC remote {SHARED_REMOTE}")
    return (f"{counts['pushed']} run-cache objects pushed"
            + (f", {counts['failed']} failed" if counts["failed"] else ""))


def condensed(log_text: str, tail: int = 5) -> str:
    """What `collect` reads in an experiment's DVC output: the lines saying what DVC did with
    each stage, the error lines, and the last `tail` lines."""
    lines = log_text.splitlines()
    keep = [ln for ln in lines if any(p.search(ln) for p in _OUTCOME_PATTERNS.values())
            or ln.strip().startswith(("error: ", "ERROR"))]
    return "\n".join(dict.fromkeys(keep + [ln for ln in lines if ln.strip()][-tail:]))


def run_here(git_url: str, baseline: str, study: str, name: str, args: Sequence[str],
             remote: str, compile_cache: bool = False, base: Path | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """One run of a study on this machine, as a worker's flow run does it (flows/ablation.py): in
    this worker's clone of the study project (`base`/<study>, default `worker_dir()`; at the
    baseline, cleaned; one run at a time per clone), the shared DVC remote `remote` its default:

        dvc exp run --pull -n NAME -S ... [target]    a stage another machine ran (and pushed) is
                                                        restored from the remote's run cache
        dvc push --run-cache                          its outputs and run-cache entries, for the
                                                        other machines (also when it failed),
                                                        and every object the entries name
                                                        (`push_run_cache`)
        dvc exp push --force --no-cache origin NAME   the experiment's commit, for the study

    `args`: `exp_args` of the run. Returns {"name", "status" (Success | Failed), "rev", "log"
    (`condensed` DVC output: what `collect` reads), "error", "clone", "host", "seconds"}."""
    import socket

    t0 = time.time()
    clone = (Path(base) if base is not None else worker_dir()) / study
    with _exclusive(clone.with_name(f".{study}.lock")):
        env = run_env(clone, compile_cache)
        checkout_baseline(git_url, baseline, clone, env)
        _dvc(clone, env, "remote", "add", "--local", "--default", "--force", SHARED_REMOTE,
             location(remote))
        if name in _dvc(clone, env, "exp", "ls", "--name-only").stdout.split():
            _dvc(clone, env, "exp", "remove", name)  # this worker's run of an earlier study run
        cmd = ["exp", "run", "--pull", "-n", name, *args]
        log("dvc " + " ".join(shlex.quote(c) for c in cmd))
        code, text = _stream([sys.executable, "-m", "dvc", *cmd], clone, env, log)
        pushed = push_run_cache(clone, env, check=code == 0)
        rev, error = "", ""
        if code == 0:
            _dvc(clone, env, "exp", "push", "--force", "--no-cache", "origin", name)
            refs = _git(clone, env, "for-each-ref", "--format=%(objectname) %(refname)",
                        f"refs/exps/{baseline[:2]}/{baseline[2:]}").stdout.split("\n")
            rev = next((ln.split()[0] for ln in refs if ln.endswith(f"/{name}")), "")
        else:
            error = _failure_reason(text)
        log(f"{name}: {'success' if code == 0 else 'failed: ' + error}; {pushed}")
    return {"name": name, "status": "Success" if code == 0 else "Failed", "rev": rev,
            "log": condensed(text), "error": error, "clone": str(clone),
            "host": socket.gethostname(), "seconds": round(time.time() - t0, 1)}


# ----------------------------------------------------------------------------------------------
# reading results back from DVC


@dataclass
class Result:
    """One experiment as DVC has it."""

    run: Run
    status: str  # "Success" | "Failed"
    rev: str = ""  # the experiment's git commit
    params: dict = field(default_factory=dict)  # as `dvc exp show` has them
    metrics: dict = field(default_factory=dict)  # {metrics file: its data}
    levels: list[str] = field(default_factory=list)
    histories: dict = field(default_factory=dict)  # level name -> DataFrame
    refine_history: Any = None  # DataFrame or None
    curve: list[dict] = field(default_factory=list)  # pinn.curves.curve
    outcomes: dict[str, str] = field(default_factory=dict)  # stage -> ran|restored|unchanged
    error: str = ""
    worker: str = ""  # the Prefect worker that ran it ("": this machine's DVC queue)
    #: stage -> its entry in the experiment's dvc.lock (cmd, deps, params; JSON): equal entries
    #: are the same stage run, wherever it ran
    locks: dict[str, str] = field(default_factory=dict)

    @property
    def final_rel_l2(self) -> float:
        return float(self.metrics.get("metrics.json", {}).get("rel_l2", float("nan")))


def stage_outcomes(log_text: str) -> dict[str, str]:
    """{stage: ran | restored | unchanged} from an experiment's DVC output."""
    out = {}
    for outcome, pattern in _OUTCOME_PATTERNS.items():
        for stage in pattern.findall(log_text):
            out[stage] = outcome
    return out


def _failure_reason(log_text: str) -> str:
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    own = [ln for ln in lines if ln.startswith("error: ")]
    dvc_errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (own or dvc_errors or lines[-1:] or ["no output"])[-1]


def exp_show(project: Project, env: Mapping[str, str]) -> dict[str, dict]:
    """{experiment name: {"rev", "params", "metrics"}} of the baseline's experiments, from
    `dvc exp show --json`."""
    proc = _dvc(project.root, env, "exp", "show", "--json")
    found = {}
    for commit in json.loads(proc.stdout):
        if commit.get("rev") != project.baseline:
            continue
        for exp in commit.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev.get("data") or {}
            found[exp.get("name") or rev.get("name")] = {
                "rev": rev["rev"],
                "params": ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {},
                "metrics": {f: v.get("data") or {} for f, v in (data.get("metrics") or {}).items()},
            }
    return found


def git_file(project: Project, rev: str, path: str, env: Mapping[str, str]) -> str | None:
    """A file of an experiment's commit (`git show REV:PATH`); None when it has none."""
    proc = _git(project.root, env, "show", f"{rev}:{path}", check=False)
    return proc.stdout if proc.returncode == 0 else None


def _params_mismatch(expected: Any, got: Any, path: str = "") -> str | None:
    if isinstance(expected, dict) and isinstance(got, dict):
        for k in sorted(set(expected) | set(got), key=str):
            where = f"{path}.{k}" if path else str(k)
            if k not in got:
                return f"{where}: missing in DVC's params"
            if k not in expected:
                return f"{where}: in DVC's params ({got[k]!r}) but not the study's"
            why = _params_mismatch(expected[k], got[k], where)
            if why:
                return why
        return None
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        for i, (a, b) in enumerate(zip(expected, got)):
            why = _params_mismatch(a, b, f"{path}[{i}]")
            if why:
                return why
        return None
    if isinstance(expected, bool) or isinstance(got, bool):  # (True == 1 in Python)
        same = type(expected) is type(got) and expected == got
    else:
        same = expected == got
    return None if same else f"{path}: the study asked for {expected!r}, DVC ran {got!r}"


def lock_entries(project: Project, rev: str, env: Mapping[str, str]) -> dict[str, str]:
    """{stage: its dvc.lock entry less the outputs (cmd, deps, params), as JSON} of an
    experiment's commit: two experiments with equal entries ran (or restored) the same stage."""
    text = git_file(project, rev, "dvc.lock", env)
    stages = ((yaml.safe_load(text) or {}).get("stages") or {}) if text else {}
    return {name: json.dumps({k: v for k, v in entry.items() if k != "outs"}, sort_keys=True)
            for name, entry in stages.items()}


def collect(project: Project, study: Study, statuses: Mapping[str, str],
            env: Mapping[str, str], logs: Mapping[str, str] | None = None,
            workers: Mapping[str, str] | None = None) -> list[Result]:
    """Every run's result, read back from DVC: params and metrics (`dvc exp show --json`; the
    params are checked against the study's), histories (`git show` of the experiment's commit),
    the stages' outcomes (`dvc queue logs`, or `logs`: {name: DVC's output}, for runs that a
    worker ran) and the worker of each (`workers`: {name: worker})."""
    import pandas as pd

    from pinn.curves import curve

    shown = exp_show(project, env)
    workers = workers or {}
    results = []
    for run in study.runs:
        if logs is None:
            proc = _dvc(project.root, env, "queue", "logs", run.name, check=False)
            log_text = proc.stdout + proc.stderr
        else:
            log_text = logs.get(run.name, "")
        status = statuses.get(run.name, "Failed")
        if status != "Success" or run.name not in shown:
            results.append(Result(run, "Failed", outcomes=stage_outcomes(log_text),
                                  error=_failure_reason(log_text),
                                  worker=workers.get(run.name, "")))
            continue
        exp = shown[run.name]
        why = _params_mismatch(run.params, exp["params"])
        if why:
            raise StudyError(f"experiment {run.name}: DVC's params differ from the study's: {why}")
        levels = list(exp["params"]["multilevel"]["levels"])
        histories = {}
        for level in levels:
            text = git_file(project, exp["rev"], f"data/train/{level}/history.csv", env)
            if text is None:
                raise StudyError(f"experiment {run.name}: its commit {exp['rev'][:7]} has no "
                                 f"data/train/{level}/history.csv")
            histories[level] = pd.read_csv(io.StringIO(text))
        text = git_file(project, exp["rev"], "data/refine/history.csv", env)
        refine = pd.read_csv(io.StringIO(text)) if text else None
        results.append(Result(run, "Success", exp["rev"], exp["params"], exp["metrics"], levels,
                              histories, refine, curve(histories, refine),
                              stage_outcomes(log_text), worker=workers.get(run.name, ""),
                              locks=lock_entries(project, exp["rev"], env)))
    return results


def load_samples(project: Project, result: Result, level: str | None = None) -> dict | None:
    """The last training batch (`data/train/<level>/samples.npz`, a DVC-cached output; default:
    the finest level) of an experiment, read with `dvc.api.open` at its commit; None if absent."""
    import dvc.api
    import numpy as np

    level = level or result.levels[-1]
    try:
        with dvc.api.open(f"data/train/{level}/samples.npz", repo=str(project.root),
                          rev=result.rev, mode="rb") as f:
            data = np.load(io.BytesIO(f.read()))
            return {k: data[k] for k in data.files}
    except Exception:  # noqa: BLE001 (an absent or unreadable output: the panel is left out)
        return None


# ----------------------------------------------------------------------------------------------
# numbers


def budget_labels(study: Study) -> list[str]:
    """Column labels of the budgets: "final", then "step N", then "N s"."""
    b = study.spec.budgets
    return [FINAL] + [f"step {s}" for s in b.steps] + [f"{_num(t)} s" for t in b.wall_s]


def _num(x: float) -> str:
    return f"{x:g}"


def values(study: Study, results: Sequence[Result]):
    """One row per successful experiment and budget: case, variant, seed, experiment, budget,
    rel_l2 (final: `metrics.json`'s rel_l2 from `dvc exp show`; the others read off the run's
    curve with `pinn.curves.value_at`). A pandas DataFrame."""
    import pandas as pd

    from pinn.curves import value_at

    b = study.spec.budgets
    rows = []
    for r in results:
        if r.status != "Success":
            continue
        base = {"case": r.run.case, "variant": r.run.variant, "seed": r.run.seed,
                "experiment": r.run.name}
        rows.append({**base, "budget": FINAL, "rel_l2": r.final_rel_l2})
        rows += [{**base, "budget": f"step {s}", "rel_l2": value_at(r.curve, s, "step")}
                 for s in b.steps]
        rows += [{**base, "budget": f"{_num(t)} s", "rel_l2": value_at(r.curve, t, "wall_s")}
                 for t in b.wall_s]
    return pd.DataFrame(rows, columns=["case", "variant", "seed", "experiment", "budget", "rel_l2"])


def summarize(study: Study, table):
    """Mean and spread over seeds per case, variant and budget: mean, min, max, std (sample
    standard deviation, ddof=1; NaN for one seed), n (seeds with a value). A DataFrame in the
    study's order of cases, variants and budgets."""
    import pandas as pd

    cols = ["case", "variant", "budget", "mean", "min", "max", "std", "n"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    g = table.groupby(["case", "variant", "budget"], sort=False)["rel_l2"]
    out = g.agg(mean="mean", min="min", max="max", std="std", n="count").reset_index()
    order = {"case": study.cases, "variant": list(study.spec.variants),
             "budget": budget_labels(study)}
    for col, names in order.items():
        out[col] = pd.Categorical(out[col], categories=names, ordered=True)
    out = out.sort_values(["case", "variant", "budget"]).reset_index(drop=True)
    for col in order:
        out[col] = out[col].astype(str)
    return out[cols]


@dataclass(frozen=True)
class Reuse:
    """What DVC did with the stages of a study's experiments."""

    per_stage: dict  # stage -> {ran, restored, unchanged}
    ran: int
    reused: int  # restored from the run cache or unchanged
    saved_s: float  # recorded training/refinement wall-clock of reused train/refine stages
    spent_s: float  # ... of the train/refine stages that ran
    #: stage -> how many of its restores were on a worker other than every worker that ran it
    #: (so through the shared DVC remote's run cache); empty when no worker ran the study
    across_workers: dict = field(default_factory=dict)

    @property
    def across(self) -> int:
        return sum(self.across_workers.values())


def _stage_seconds(result: Result, stage: str) -> float | None:
    if stage.startswith("train@"):
        h = result.histories.get(stage.split("@", 1)[1])
    elif stage == "refine":
        h = result.refine_history
    else:
        return None
    return float(h["wall_s"].iloc[-1]) if h is not None and len(h) else 0.0


def reuse(results: Sequence[Result]) -> Reuse:
    """Stage runs reused vs run over all successful experiments (the params gate, which runs in
    every experiment, is not counted), and the compute this saved: the recorded wall-clock of the
    reused train/refine stages (their histories; the untimed stages are counted, not timed)."""
    per_stage: dict[str, dict[str, int]] = {}
    saved = spent = 0.0
    for r in results:
        if r.status != "Success":
            continue
        for stage, outcome in r.outcomes.items():
            if stage == GATE_STAGE:
                continue
            per_stage.setdefault(stage, {RAN: 0, RESTORED: 0, UNCHANGED: 0})[outcome] += 1
            seconds = _stage_seconds(r, stage)
            if seconds is not None:
                if outcome == RAN:
                    spent += seconds
                else:
                    saved += seconds
    ran = sum(c[RAN] for c in per_stage.values())
    reused = sum(c[RESTORED] + c[UNCHANGED] for c in per_stage.values())
    return Reuse(per_stage, ran, reused, saved, spent, across_workers(results))


def across_workers(results: Sequence[Result]) -> dict[str, int]:
    """{stage: restores of it on a worker that never ran that stage run}: a stage run is its
    dvc.lock entry (`Result.locks`); restored where no run of it ran, it came from another
    machine, through the shared DVC remote's run cache. Empty unless workers ran the study."""
    ok = [r for r in results if r.status == "Success" and r.worker]
    ran_on: dict[tuple[str, str], set[str]] = {}
    for r in ok:
        for stage, outcome in r.outcomes.items():
            if outcome == RAN and stage in r.locks:
                ran_on.setdefault((stage, r.locks[stage]), set()).add(r.worker)
    out: dict[str, int] = {}
    for r in ok:
        for stage, outcome in r.outcomes.items():
            where = ran_on.get((stage, r.locks.get(stage, "")))
            if outcome == RESTORED and where and r.worker not in where:
                out[stage] = out.get(stage, 0) + 1
    return out


# ----------------------------------------------------------------------------------------------
# the report


@dataclass
class StudyReport:
    """What `run_study` returns: the report's files and the data behind them."""

    study: str
    directory: Path
    markdown: str
    figures: list[Path]
    table: Any  # per-experiment values (DataFrame)
    summary: Any  # mean and spread per case, variant, budget (DataFrame)
    results: list[Result]
    reuse: Reuse
    meta: dict

    @property
    def path(self) -> Path:
        return self.directory / "report.md"

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status != "Success"]


def hardware() -> dict:
    """What the experiments ran on: CPU model and cores, JAX's devices, load average."""
    from pinn.hardware import cpu_name

    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "machine": platform.machine()}
    try:
        import jax

        devices = jax.devices()
        info["jax"] = f"{jax.__version__}, {len(devices)} x {devices[0].device_kind}"
    except Exception:  # noqa: BLE001
        info["jax"] = "unavailable"
    return info


def _fmt(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.2e}"


def _cell(row, seeds: int) -> str:
    """mean [min–max] σ over the seeds that reached the budget; "(n of seeds)" when not all did
    (a wall-clock budget some runs never reached)."""
    if not math.isfinite(row["mean"]):
        return "n/a"
    spread = f"[{_fmt(row['min'])}–{_fmt(row['max'])}]"
    std = f" σ {_fmt(row['std'])}" if math.isfinite(row["std"]) else ""
    short = f" (n = {int(row['n'])} of {seeds})" if int(row["n"]) < seeds else ""
    return f"{_fmt(row['mean'])} {spread}{std}{short}"


def _colours(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _figure(nrows: int, ncols: int, panel: tuple[float, float], title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.suptitle(title)
    return fig, axes


def _band(curves: list[list[dict]], axis: str, grid):
    """(grid points inside every curve's range, mean, min, max) of rel L2 over the curves."""
    import numpy as np

    from pinn.curves import value_at

    lo = max(c[0][axis] for c in curves)
    hi = min(c[-1][axis] for c in curves)
    x = np.asarray([g for g in grid if lo <= g <= hi])
    if x.size == 0:
        return x, x, x, x
    ys = np.asarray([[value_at(c, g, axis) for g in x] for c in curves])
    return x, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def _fig_curves(case: str, by_variant: dict[str, list[Result]], path: Path, dpi: int) -> str:
    import numpy as np

    colours = _colours(list(by_variant))
    fig, axes = _figure(1, 2, (5.6, 4.2), "rel L2 vs steps and wall-clock" + (f": {case}" if case else ""))
    for ax, axis, label in ((axes[0][0], "step", "optimisation steps (Adam, then refinement iterations)"),
                            (axes[0][1], "wall_s", "training wall-clock [s] (compilation included)")):
        for variant, results in by_variant.items():
            curves = [r.curve for r in results if r.curve]
            if not curves:
                continue
            c = colours[variant]
            for cv in curves:
                ax.step([p[axis] for p in cv], [p["rel_l2"] for p in cv], where="post", color=c,
                        lw=0.6, alpha=0.35)
            points = sorted({p[axis] for cv in curves for p in cv})
            grid = points if axis == "step" else np.geomspace(
                max(min(points), 1e-3), max(points), 300)
            x, mean, lo, hi = _band(curves, axis, grid)
            if x.size:
                ax.fill_between(x, lo, hi, color=c, alpha=0.2, step="post", lw=0)
                ax.step(x, mean, where="post", color=c, lw=1.6, label=f"{variant} ({len(curves)})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("rel L2 error")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].legend(loc="best", fontsize="small", title="variant (seeds)")
    fig.savefig(path, dpi=dpi)
    return ("rel L2 against optimisation steps (left) and training wall-clock (right): per variant "
            "the mean over seeds (thick), the min–max band over seeds where every seed has a "
            "value, and each seed (thin); log axes.")


def _fig_density(case: str, samples: dict[str, dict], path: Path, dpi: int) -> str:
    import numpy as np

    fig, axes = _figure(1, len(samples), (3.3, 3.0),
                        "last training batch, first seed" + (f": {case}" if case else ""))
    for ax, (variant, s) in zip(axes[0], samples.items()):
        pts, w = s["points"], s["weights"]
        w = w if np.sum(w) > 0 else np.ones_like(w)
        bins = int(np.clip(np.sqrt(len(pts) / 4), 8, 50))
        h = ax.hist2d(pts[:, 0], pts[:, 1], bins=bins, weights=w, cmap="viridis")
        fig.colorbar(h[3], ax=ax, label="points per bin (weighted)")
        ax.set_title(f"{variant} ({len(pts)} points)")
        ax.set_xlabel("t")
        ax.set_ylabel("x")
    fig.savefig(path, dpi=dpi)
    return ("Sampling density: the last training batch of the finest level (first seed) over "
            "(t, x), weighted by the points' loss weights, per variant.")


def _varying_weights(result: Result) -> list[str]:
    import numpy as np

    cols = []
    for h in result.histories.values():
        for c in h.columns:
            if (c.startswith("weight_") or c == "causal_min_weight") and c not in cols:
                v = np.concatenate([np.asarray(x[c], float) for x in result.histories.values()
                                    if c in x])
                v = v[np.isfinite(v)]
                if v.size and np.ptp(v) > 0:
                    cols.append(c)
    return cols


def _fig_weights(case: str, panels: dict[str, list[Result]], path: Path, dpi: int) -> str:
    fig, axes = _figure(1, len(panels), (4.0, 3.2), "loss weights" + (f": {case}" if case else ""))
    for ax, (variant, results) in zip(axes[0], panels.items()):
        cols = sorted({c for r in results for c in _varying_weights(r)})
        colours = _colours(cols)
        for i, r in enumerate(results):
            for col in cols:
                xs, ys = [], []
                for h in r.histories.values():
                    if col in h:
                        xs += list(h["step"])
                        ys += list(h[col])
                ax.plot(xs, ys, color=colours[col], lw=1.0, alpha=0.8,
                        label=col.removeprefix("weight_") if i == 0 else None)
        ax.set_yscale("log")
        ax.set_title(f"{variant} ({len(results)} seeds)")
        ax.set_xlabel("Adam step")
        ax.set_ylabel("loss weight")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.savefig(path, dpi=dpi)
    return ("Loss weights that change during training (adaptive balancing; `causal_min_weight`: "
            "the smallest causal time weight), every seed, per variant that has them.")


def _non_uniform(result: Result) -> bool:
    s = result.params.get("sampling", {})
    return s.get("method", "uniform") != "uniform" or not s.get("uniform", {}).get("resample", True)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def write_report(study: Study, project: Project, results: list[Result], out: str | Path,
                 meta: dict, dpi: int = 100) -> StudyReport:
    """`out/report.md` and its figures (`curves*.png`, `density*.png`, `weights*.png`): the mean
    and spread over seeds per variant and budget, rel L2 vs steps and wall-clock with seed bands,
    the sampling density and loss weights per variant where present, what DVC reused. The
    directory is rebuilt (swapped in when complete: `pinn.io.atomic_dir`)."""
    out = Path(out)
    from pinn.io import atomic_dir

    with atomic_dir(out) as build:
        table = values(study, results)
        summary = summarize(study, table)
        used = reuse(results)
        figures: list[Path] = []
        spec = study.spec
        ok = [r for r in results if r.status == "Success"]
        md = [f"# {study.title}", ""]
        if spec.description:
            md += [spec.description.strip(), ""]
        hw = meta["hardware"]
        md += [
            f"- **Study file**: `{meta['study_file']}`; DVC project `{project.root}`, baseline commit "
            f"`{project.baseline[:10]}`; {len(results)} experiments "
            f"({len(ok)} succeeded, {len(results) - len(ok)} failed).",
            f"- **Seeds**: {', '.join(str(s) for s in spec.seeds)} (every variant, every case); "
            + (f"each experiment reproduces `{spec.target}` and the stages it depends on."
               if spec.target else "each experiment reproduces the whole pipeline."),
            f"- **Hardware**: {hw['cpu']}, {hw['cores']} cores ({hw['machine']}); JAX {hw['jax']}; "
            f"load average {meta['load_start']:.1f} at the start, {meta['load_end']:.1f} at the end "
            f"(the machine may have been shared: wall-clock figures are inflated by the load).",
            f"- **Date**: {meta['started']} to {meta['finished']} (UTC), {meta['wall_s'] / 60:.1f} min; "
            + (f"{meta['jobs']} experiment(s) at a time (`dvc queue start --jobs {meta['jobs']}`); "
               if not meta.get("pool") else
               f"run by the Prefect workers of work pool `{meta['pool']}` "
               f"({', '.join(f'`{w}`' for w in sorted({r.worker for r in results if r.worker}))}), "
               f"sharing the DVC remote `{meta.get('remote', '')}`; ")
            + ("persistent XLA cache shared between runs (wall-clock excludes most compilation after "
               "a configuration's first run)." if spec.compile_cache else
               "no XLA cache shared between runs: every run compiles its own code, and its "
               "wall-clock includes that."),
            "- **Results come from DVC**: final rel L2 is `metrics.json` as `dvc exp show --json` "
            "reports it; the budgets read each run's curve from its histories in the experiment's "
            "commit (`git show <commit>:data/train/<level>/history.csv`, "
            "`data/refine/history.csv`).",
            "",
            "## rel L2 over seeds",
            "",
            "Each cell: mean [min–max] σ (sample standard deviation over seeds) of the rel L2 error "
            "against the certified reference. **final**: at the end of the run, i.e. at the "
            "variant's own steps (equal across variants unless the variant changes them); "
            "**step N**: the value logged last at or before N optimisation steps (Adam steps, then "
            "refinement iterations); **N s**: the value logged last at or before N seconds of "
            "training wall-clock (each phase offset by the phases before it; compilation included). "
            "A run that ended before a budget counts with its final value; n/a: nothing logged "
            "yet; \"(n = k of N)\": only k of the N seeds had logged a value by that budget. The "
            "lowest mean per column, among cells every seed reached, is in bold.",
            "",
        ]
        labels = budget_labels(study)
        for case in study.cases:
            part = summary[summary["case"] == case]
            if case:
                md += [f"### {case}", ""]
            steps = {}
            for r in ok:
                if r.run.case == case:
                    adam = sum(int(h["level_step"].iloc[-1]) for h in r.histories.values() if len(h))
                    qn = int(r.metrics.get("metrics.json", {}).get("refine_iterations", 0) or 0)
                    steps.setdefault(r.run.variant, set()).add(f"{adam}+{qn}" if qn else f"{adam}")
            seeds = len(spec.seeds)
            full = part[part["n"] >= seeds]  # the bold best: among cells every seed reached
            best = {b: full[full["budget"] == b]["mean"].min() for b in labels}
            rows = []
            for variant in spec.variants:
                vpart = part[part["variant"] == variant]
                cells = []
                for b in labels:
                    row = vpart[vpart["budget"] == b]
                    if row.empty:
                        cells.append("failed")
                        continue
                    text = _cell(row.iloc[0], seeds)
                    bold = row.iloc[0]["mean"] == best[b] and int(row.iloc[0]["n"]) >= seeds
                    cells.append(f"**{text}**" if bold else text)
                n = int(vpart["n"].max()) if not vpart.empty else 0
                rows.append([variant, ", ".join(sorted(steps.get(variant, {"-"}))), n] + cells)
            md += _table(["variant", "steps (Adam+QN)", "seeds"] + labels, rows) + [""]

            by_variant = {v: [r for r in ok if r.run.case == case and r.run.variant == v]
                          for v in spec.variants}
            by_variant = {v: rs for v, rs in by_variant.items() if rs}
            suffix = f"-{case}" if case else ""
            if by_variant:
                path = build / f"curves{suffix}.png"
                caption = _fig_curves(case, by_variant, path, dpi)
                figures.append(out / path.name)
                md += [f"![rel L2 curves{suffix}]({path.name})", "", caption, ""]
            if any(_non_uniform(rs[0]) for rs in by_variant.values()):
                samples = {v: s for v, rs in by_variant.items()
                           if (s := load_samples(project, rs[0])) is not None}
                if samples:
                    path = build / f"density{suffix}.png"
                    caption = _fig_density(case, samples, path, dpi)
                    figures.append(out / path.name)
                    md += [f"![sampling density{suffix}]({path.name})", "", caption, ""]
            weighted = {v: rs for v, rs in by_variant.items() if any(_varying_weights(r) for r in rs)}
            if weighted:
                path = build / f"weights{suffix}.png"
                caption = _fig_weights(case, weighted, path, dpi)
                figures.append(out / path.name)
                md += [f"![loss weights{suffix}]({path.name})", "", caption, ""]

        total = used.ran + used.reused
        pooled = any(r.worker for r in results)
        md += ["## What DVC reused", "",
               f"{used.reused} of {total} stage runs were reused "
               f"({100.0 * used.reused / total if total else 0:.0f}%: restored from DVC's run cache or "
               f"unchanged), {used.ran} ran (the params gate, which runs in every experiment, is not "
               "counted). Compute saved: the reused training and refinement stages had taken "
               f"{used.saved_s:.0f} s of recorded wall-clock when they ran (the training that did run "
               f"took {used.spent_s:.0f} s); the reused reference, collocation, init, evaluate and "
               "report stages are counted but not timed, so this is a lower bound. Source: "
               + ("`dvc queue logs <experiment>`" if not pooled else
                  "each worker's `dvc exp run --pull` output") +
               " (\"Running stage\", \"is cached - skipping run\", \"didn't change, skipping\").",
               ""]
        if pooled:
            md += [f"{used.across} of the restored stage runs were restored on a worker that did "
                   "not run them: another machine ran the stage and pushed it (`dvc push "
                   "--run-cache`), and this one took it from the shared DVC remote's run cache (`dvc "
                   "exp run --pull`). A stage run is its entry in the experiments' `dvc.lock`.", ""]
        md += _table(["stage", "ran", "restored from run cache", "unchanged"]
                     + (["restored from another worker"] if pooled else []),
                     [[s, c[RAN], c[RESTORED], c[UNCHANGED]]
                      + ([used.across_workers.get(s, 0)] if pooled else [])
                      for s, c in used.per_stage.items()])
        md += ["", "## Experiments", "",
               "Every run as DVC has it (`dvc exp show` in the project; `git show <commit>:<path>` for "
               "its files).", ""]
        rows = []
        for r in results:
            outcome = r.outcomes
            counted = [s for s in outcome if s != GATE_STAGE]
            ran = sum(outcome[s] == RAN for s in counted)
            rows.append([f"`{r.run.name}`", r.run.case or "-", r.run.variant, r.run.seed,
                         f"`{r.rev[:7]}`" if r.rev else "-",
                         _fmt(r.final_rel_l2) if r.status == "Success" else f"failed: {r.error}",
                         f"{r.curve[-1]['wall_s']:.1f}" if r.curve else "-",
                         f"{ran} / {len(counted) - ran}"] + ([r.worker or "-"] if pooled else []))
        md += _table(["experiment", "case", "variant", "seed", "commit", "final rel L2",
                      "training wall-clock [s]", "stages ran / reused"]
                     + (["worker"] if pooled else []), rows)
        md += ["", "Overrides per variant (`dvc exp run -S`, on top of the base params):", ""]
        for case in study.cases:
            for variant, ov in spec.variants.items():
                combined = _combine(spec.cases.get(case, {}), ov)
                shown = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in combined) or "(the base params)"
                md += [f"- {case + ' / ' if case else ''}{variant}: {shown}"]
        md += [""]
        markdown = "\n".join(md)
        (build / "report.md").write_text(markdown)
        table.to_csv(build / "values.csv", index=False)
        summary.to_csv(build / "summary.csv", index=False)
        write_study_meta(study, build, meta)
    return StudyReport(study.name, out, markdown, figures, table, summary, results, used, meta)


#: what a study's results directory says of the study (`pinn.comparison` reads it)
STUDY_META = "study.json"


def write_study_meta(study: Study, out: str | Path, meta: Mapping[str, Any]) -> Path:
    """`out/study.json`: the study's name, title, file, seeds, variants (the first is the
    baseline of comparisons), each case's problem (`problem.name` or `problem.target` of its
    runs) and when it ran: what the pipeline report needs to show this study's results for a
    run's problem (`pinn.comparison`)."""
    from pinn import io

    cases: dict[str, str] = {}
    for run in study.runs:
        problem = run.params.get("problem", {})
        cases.setdefault(run.case, problem.get("target") or problem.get("name"))
    path = Path(out) / STUDY_META
    io.write_json(path, {
        "name": study.name, "title": study.title, "study_file": str(meta.get("study_file", "")),
        "started": meta.get("started"), "finished": meta.get("finished"),
        "seeds": list(study.spec.seeds), "variants": list(study.spec.variants),
        "cases": cases, "target": study.spec.target})
    return path


def default_out(study: Study) -> Path:
    """`studies/results/<name>` in this checkout (`<name>-<case>...` when only some of its cases
    ran, `only_cases`)."""
    from pinn.pipeline import source_root

    ran = [c for c in study.cases if c]
    part = "" if set(ran) == set(load_study(study.path).spec.cases) else "-" + "-".join(ran)
    return source_root() / "studies" / "results" / (study.name + part)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def only_cases(study: Study, cases: Sequence[str]) -> Study:
    """The part of `study` that runs in `cases` (names of its `cases:`), as a study of its own: its
    runs, report and experiment names are those of the full study for these cases, so a later run
    of the full study finds their stages in the run cache. Raises `StudyError` on an unknown case."""
    unknown = [c for c in cases if c not in study.spec.cases]
    if unknown:
        raise StudyError(f"{study.path}: case {unknown[0]!r} is not one of its cases "
                         f"({', '.join(study.spec.cases) or 'it has none'})")
    spec = study.spec.model_copy(update={
        "cases": {c: o for c, o in study.spec.cases.items() if c in cases},
        "title": f"{study.title} (cases: {', '.join(c for c in study.spec.cases if c in cases)})"})
    return replace(study, spec=spec,
                               runs=tuple(r for r in study.runs if r.case in cases))


def run_study(study_file: str | Path, jobs: int | None = None, workdir: str | Path | None = None,
              out: str | Path | None = None, log: Callable[[str], None] = print,
              cases: Sequence[str] = ()) -> StudyReport:
    """Validate the study, run its experiments through DVC's queue, read them back from DVC and
    write the report. `cases`: run only these of the study's cases (`only_cases`). Raises
    `StudyError` (after writing the report) if an experiment failed."""
    study = load_study(study_file)
    if cases:
        study = only_cases(study, cases)
    jobs = jobs or study.spec.jobs
    t0, started, load_start = time.time(), _now(), os.getloadavg()[0]
    project = prepare_project(study, workdir)
    env = study_env(study, project.root)
    log(f"study {study.name}: {len(study.runs)} experiments in {project.root} "
        f"(baseline {project.baseline[:10]}), {jobs} at a time")
    removed = clear_previous(project, study.runs, env)
    if removed:
        log(f"removed {len(removed)} experiments of an earlier run of this study (their stages "
            "stay in the run cache)")
    statuses: dict[str, str] = {}
    for phase in phases(study, jobs):
        statuses.update(run_phase(project, study, phase, jobs, env, log))
    results = collect(project, study, statuses, env)
    meta = {"study_file": str(study.path), "started": started, "finished": _now(),
            "wall_s": time.time() - t0, "load_start": load_start,
            "load_end": os.getloadavg()[0], "jobs": jobs, "hardware": hardware()}
    report = write_report(study, project, results, out or default_out(study), meta)
    log(f"report: {report.path}")
    if report.failed:
        raise StudyError("; ".join(f"experiment {r.run.name} failed: {r.error}"
                                   for r in report.failed) + f" (report: {report.path})")
    return report
