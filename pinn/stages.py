"""The pipeline's stages: thin functions over `pinn`, one per `dvc.yaml` stage.

Each stage reads `params.yaml` (validated as a whole, so a bad file stops every stage before any
compute), reads only its declared deps, and writes only its declared outs — atomically. Paths are
fixed here (and in dvc.yaml):

    data/reference.npz                 reference     certified reference solution
    data/collocation.npz               collocation   fixed point sets (interior, ic, bc)
    data/export/init.npz               init          the seeded coarsest network
    data/export/<level>.npz            train@level   deterministic export of the level's final state
    data/checkpoints/<level>/          train@level   orbax checkpoint of the final state
    data/train/<level>/history.csv     train@level   metrics history (DVC plots)
    data/refined.npz                   refine 
    data/refine/history.csv            refine
    metrics.json, data/evaluate/       evaluate      rel_l2, max_abs; error arrays
    report/                            report        report.md + PNGs

In-progress checkpoints for resuming a killed stage live in `data/resume/<stage>/` (not a DVC
output; removed when the stage completes) and are only reused when their fingerprint matches the
stage's current params and inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import jax
import numpy as np

from pinn import io
from pinn.config import Params
from pinn.errors import UserError

log = logging.getLogger("pinn.stages")

DATA = Path("data")
REFERENCE = DATA / "reference.npz"
COLLOCATION = DATA / "collocation.npz"
EXPORT = DATA / "export"
RESUME = DATA / "resume"
REFINED = DATA / "refined.npz"


def export_path(name: str) -> Path:
    return EXPORT / f"{name}.npz"


def _problem(cfg: Params):
    from pinn.problems import make_problem

    return make_problem(cfg.problem.name, **cfg.problem.coefficients)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(cfg: Params, stage: str, inputs: list[Path]) -> str:
    h = hashlib.sha256(cfg.model_dump_json().encode())
    h.update(stage.encode())
    for p in inputs:
        h.update(_file_digest(p).encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------


def stage_reference(cfg: Params, out: Path = REFERENCE, progress: bool = True) -> Path:
    ref = _problem(cfg).reference(progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    ref.save(out)
    print(f"reference {cfg.problem.name}: est. rel. L2 error {ref.est_rel_error:.2e} -> {out}")
    return out


def stage_collocation(cfg: Params, out: Path = COLLOCATION) -> Path:
    from pinn.cascade import collocation_sets

    sets = collocation_sets(cfg, _problem(cfg))
    with io.atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **sets)
    print(f"collocation: {len(sets['interior'])} interior, {len(sets['ic'])} initial, "
          f"{len(sets['bc'])} boundary -> {out}")
    return out


def load_collocation(path: Path = COLLOCATION) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in ("interior", "ic", "bc")}
    except Exception as e:
        raise UserError(f"{path}: not a valid collocation file ({type(e).__name__}: {e})") from None


def stage_init(cfg: Params) -> Path:
    from pinn import cascade

    problem = _problem(cfg)
    first = cascade.level_names(cfg)[0]
    trainer, model = cascade.make_trainer(cfg, problem, first)
    state = cascade.state_template(trainer, model, cfg, first)
    io.save_tree(export_path("init"), state)
    print(f"init: {first} network -> {export_path('init')}")
    return export_path("init")


def load_reference(path: Path = REFERENCE):
    from pinn.reference import Reference

    try:
        return Reference.load(path)
    except FileNotFoundError:
        raise UserError(f"{path}: missing (run the reference stage first)") from None
    except ValueError as e:
        raise UserError(str(e)) from None


def _fixed_points(cfg: Params):
    from pinn.cascade import uses_fixed_points

    return load_collocation()["interior"] if uses_fixed_points(cfg) else None


def stage_train(cfg: Params, level: str, *, progress: bool = True) -> Path:
    """Train one cascade level from the previous level's export; resumable after a kill."""
    from pinn import cascade
    if level not in cfg.multilevel.levels:
        raise UserError(f"--level {level}: not in multilevel.levels ({', '.join(cfg.multilevel.levels)})")
    problem = _problem(cfg)
    names = cascade.level_names(cfg)
    source = cfg.multilevel.levels[level].init_from
    source_path = export_path(source)
    if not source_path.exists():
        raise UserError(f"{source_path}: missing (run the stage that makes it first)")
    reference = load_reference()
    trainer, model = cascade.make_trainer(cfg, problem, level, fixed_points=_fixed_points(cfg))
    template = cascade.state_template(trainer, model, cfg, level)
    if source == "init":
        state, _ = io.load_tree(source_path, template)
        state = jax.tree_util.tree_map(jax.numpy.asarray, state)
    else:
        prev_trainer, prev_model = cascade.make_trainer(cfg, problem, source, fixed_points=_fixed_points(cfg))
        prev_template = cascade.state_template(prev_trainer, prev_model, cfg, source)
        previous, _ = io.load_tree(source_path, prev_template)
        previous = jax.tree_util.tree_map(jax.numpy.asarray, previous)
        state = cascade.start_level(cfg, trainer, model, level, previous, prev_trainer)

    resume_dir = RESUME / f"train-{level}"
    fp = fingerprint(cfg, f"train-{level}", [source_path, REFERENCE])
    ckpt = _resume_checkpointer(resume_dir, fp)
    restored = ckpt.restore_latest(state)
    if restored is not None:
        step, state = restored
        print(f"train {level}: resuming from checkpoint at step {step}")

    history_path = DATA / "train" / level / "history.csv"
    rows = _load_partial_history(resume_dir, int(state.step))
    every = cfg.train.checkpoint_every

    last_saved = [int(state.step)]

    def on_chunk(s):
        step = int(s.step)
        if step - last_saved[0] >= every or step >= cascade.level_steps(cfg, level):
            # history first: a checkpoint (committed asynchronously) never gets ahead of it
            _save_partial_history(resume_dir, rows)
            ckpt.save(step, s)
            last_saved[0] = step

    def on_log(row):
        rows.append(row)

    total = cascade.level_steps(cfg, level)
    is_last = level == names[-1]
    step_offset = sum(cascade.level_steps(cfg, n) for n in names[: names.index(level)])
    state, _ = cascade.train_level(
        trainer, state, total, level=level, log_every=cfg.train.log_every, reference=reference,
        on_log=on_log, on_chunk=on_chunk, progress=progress,
        switch_loss_threshold=cfg.optimizer.switch_loss_threshold if is_last else None,
        step_offset=step_offset,
    )
    ckpt.wait()
    points, weights = trainer.sampler.batch(state.sampler_state)
    _finish_level(cfg, level, state, rows, history_path, np.asarray(points), np.asarray(weights))
    ckpt.close()
    shutil.rmtree(resume_dir, ignore_errors=True)
    return export_path(level)


def _resume_checkpointer(resume_dir: Path, fp: str):
    from pinn.checkpoint import Checkpointer

    stamp = resume_dir / "fingerprint"
    if resume_dir.exists() and (not stamp.exists() or stamp.read_text() != fp):
        shutil.rmtree(resume_dir)  # from other params or inputs: never resume from it
    resume_dir.mkdir(parents=True, exist_ok=True)
    io.write_text(stamp, fp)
    return Checkpointer(resume_dir / "ckpt")


def _save_partial_history(resume_dir: Path, rows: list[dict]) -> None:
    io.write_text(resume_dir / "history.json", json.dumps(rows))


def _load_partial_history(resume_dir: Path, step: int, key: str = "level_step") -> list[dict]:
    path = resume_dir / "history.json"
    if step == 0 or not path.exists():
        return []
    rows = json.loads(path.read_text())
    return [r for r in rows if r.get(key, 0) <= step]


def write_history(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """Metrics history as CSV (DVC plots); with no rows, just the header (never NaN placeholders)."""
    import pandas as pd

    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns or [])
    with io.atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)


def _finish_level(
    cfg: Params, level: str, state, rows: list[dict], history_path: Path,
    points: np.ndarray, weights: np.ndarray,
) -> None:
    from pinn.checkpoint import Checkpointer

    write_history(history_path, rows)
    with io.atomic_path(history_path.parent / "samples.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, points=points, weights=weights)
    shutil.rmtree(DATA / "checkpoints" / level, ignore_errors=True)  # this stage's output: replaced
    final = Checkpointer(DATA / "checkpoints" / level, max_to_keep=1)
    final.save(int(state.step), state, wait=True)
    final.close()
    io.save_tree(export_path(level), state)
    last = rows[-1] if rows else {}
    summary = {k: v for k, v in last.items() if isinstance(v, (int, float))}
    io.write_json(DATA / "train" / level / "metrics.json", summary)
    print(f"train {level}: {int(state.step)} steps, loss {last.get('loss', float('nan')):.3e}, "
          f"rel L2 {last.get('rel_l2', float('nan')):.3e} -> {export_path(level)}")


def finest_params_template(cfg: Params, problem, dtype):
    """Parameters pytree of the finest network, cast to `dtype` (template for loading exports)."""
    from pinn import cascade
    from pinn.models import cast, split

    model = cascade.level_model(cfg, problem, cascade.level_names(cfg)[-1])
    graphdef, params, rest = split(model)
    return model, cast(params, dtype)


def stage_evaluate(cfg: Params) -> Path:
    """Accuracy of the refined network on the reference's full grid → metrics.json, error arrays."""
    import jax.numpy as jnp

    from pinn.evaluate import accuracy
    from pinn.models import apply_fn, cast, split

    problem = _problem(cfg)
    reference = load_reference()
    dtype = jnp.float64 if cfg.refine.precision == "float64" and cfg.refine.method != "none" else None
    dtype = dtype or {"float32": jnp.float32, "float64": jnp.float64}[cfg.train.precision]
    if dtype == jnp.float64:
        jax.config.update("jax_enable_x64", True)
    model, template = finest_params_template(cfg, problem, dtype)
    params, extras = io.load_tree(REFINED, template)
    graphdef, _, rest = split(model)
    rest = cast(rest, dtype)
    u = apply_fn(graphdef, rest)
    acc = accuracy(lambda z: u(params, z), reference, dtype=dtype, chunk=cfg.evaluate.chunk_size)
    if not acc.finite:
        from pinn.cascade import DivergenceError

        raise DivergenceError(
            f"evaluate: the network's predictions are not finite (rel_l2 = {acc.rel_l2}); "
            "no metrics written"
        )
    metrics = {
        "problem": cfg.problem.name,
        "rel_l2": acc.rel_l2,
        "max_abs": acc.max_abs,
        "reference_est_rel_error": float(reference.est_rel_error),
    }
    for k, v in extras.items():
        if v.shape == ():
            metrics[k] = float(v)
    with io.atomic_path(DATA / "evaluate" / "errors.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, prediction=acc.prediction, error=acc.error, t=reference.t, x=reference.x,
                     **({"y": reference.y} if reference.y is not None else {}))
    io.write_json("metrics.json", metrics)
    print(f"evaluate: rel L2 {acc.rel_l2:.3e}, max abs {acc.max_abs:.3e} -> metrics.json")
    return Path("metrics.json")


def stage_refine(cfg: Params, *, progress: bool = True) -> Path:
    """Quasi-Newton refinement of the finest level on the collocation set → data/refined.npz."""
    from pinn import cascade
    from pinn.refine import refine

    problem = _problem(cfg)
    finest = cascade.level_names(cfg)[-1]
    source = export_path(finest)
    if not source.exists():
        raise UserError(f"{source}: missing (run the train stages first)")
    trainer, model = cascade.make_trainer(cfg, problem, finest, fixed_points=_fixed_points(cfg))
    template = cascade.state_template(trainer, model, cfg, finest)
    state, _ = io.load_tree(source, template)
    state = jax.tree_util.tree_map(jax.numpy.asarray, state)
    weights = np.asarray(trainer.balancer.weights(state.balancer_state))
    reference = load_reference()
    rows: list[dict] = []
    if cfg.refine.method == "none" or cfg.refine.iterations == 0:
        params = state.params
    else:
        resume_dir = RESUME / "refine"
        ckpt = _resume_checkpointer(resume_dir, fingerprint(cfg, "refine", [source, COLLOCATION, REFERENCE]))

        def restore(template):
            found = ckpt.restore_latest(template)
            if found is None:
                return None
            step, saved = found
            rows.extend(_load_partial_history(resume_dir, int(saved.iteration), key="iteration"))
            print(f"refine: resuming from checkpoint at iteration {step}")
            return saved

        def on_block(s):
            _save_partial_history(resume_dir, rows)  # first: never behind a checkpoint
            ckpt.save(int(s.iteration), s)

        # `rows` (restored history + every new row, via on_log) is the whole history; refine's own
        # list holds only the rows of this run
        params, _, _ = refine(
            cfg, problem, trainer.graphdef, trainer.rest, state.params, weights,
            load_collocation(), reference=reference, on_log=rows.append, progress=progress,
            on_block=on_block, restore=restore,
        )
        ckpt.wait()
    final_loss = rows[-1]["loss"] if rows else float("nan")
    if rows and not np.isfinite(final_loss):
        from pinn.cascade import DivergenceError

        raise DivergenceError(f"refine: loss is not finite ({final_loss}); nothing written")
    # (the quasi-Newton blocks never accept a non-finite step, so this is a last line of defence)
    write_history(DATA / "refine" / "history.csv", rows,
                  columns=["iteration", "loss", "rel_l2", "wall_s", "method"])
    io.save_tree(REFINED, params, refine_iterations=np.asarray(rows[-1]["iteration"] if rows else 0))
    if cfg.refine.method != "none" and cfg.refine.iterations > 0:
        ckpt.close()
        shutil.rmtree(RESUME / "refine", ignore_errors=True)
    if rows:
        print(f"refine {cfg.refine.method}: {rows[-1]['iteration']} iterations, loss {final_loss:.3e}, "
              f"rel L2 {rows[-1].get('rel_l2', float('nan')):.3e} -> {REFINED}")
    else:
        print(f"refine: skipped (method {cfg.refine.method}) -> {REFINED}")
    return REFINED


def stage_report(cfg: Params) -> Path:
    from pinn.report import stage_report as build

    path = build(cfg, Path("."))
    print(f"report: {path.absolute()}")
    return path
