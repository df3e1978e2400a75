"""The report's "Run settings": what was trained, as a reader of the report needs it to judge or
repeat the run (seed, the PDE's coefficients, the network, the points, the optimisers, the time
windows), read from the params the report stage declares."""

from __future__ import annotations

import numpy as np

from pinn.config import Params
from pinn.multilevel import level_widths


def _coefficients(cfg: Params, problem) -> str:
    """Every coefficient of the problem as it was built (the params' values, the problem's
    defaults for the rest), `name = value`; the trainable ones marked with their start."""
    names = type(problem).coefficient_names()
    shown = []
    for name in names:
        text = ", ".join(f"{float(v):g}" for v in np.ravel(getattr(problem, name)))
        given = "" if name in cfg.problem.coefficients else " (default)"
        start = cfg.problem.trainable.get(name)
        trained = f", trained from {float(start):g}" if start is not None else ""
        shown.append(f"{name} = {text}{given}{trained}")
    return "; ".join(shown) or "none"


def _network(cfg: Params, problem) -> str:
    m = cfg.model
    parts = [f"{m.depth} hidden layers × {m.width} ({m.activation}), {cfg.train.precision}"]
    periodic = [n for n, p in zip(problem.box.names, problem.box.periodic) if p]
    if m.periodic_embedding and periodic:
        parts.append(f"exact periodic embedding in {', '.join(periodic)}")
    if m.fourier_features:
        parts.append(f"{m.fourier_features} random Fourier features (scale {m.fourier_scale:g})")
    if m.rwf:
        parts.append(f"random weight factorisation (mean {m.rwf_mean:g}, std {m.rwf_std:g})")
    return "; ".join(parts)


def _cascade(cfg: Params) -> str:
    levels = cfg.multilevel.levels
    widths = level_widths(cfg.model.width, len(levels), cfg.multilevel.coarsening_factor)
    return "; ".join(f"{name}: width {w}, {lv.steps} Adam steps"
                     for (name, lv), w in zip(levels.items(), widths))


def _sampling(cfg: Params) -> str:
    s = cfg.sampling
    text = (f"{s.method}, batch {s.batch_size} interior / {s.ic_batch_size} initial / "
            f"{s.bc_batch_size} boundary points per step")
    if s.method == "rad":
        text += (f" (k = {s.rad.k:g}, c = {s.rad.c:g}, pool {s.rad.pool_size}, "
                 f"redrawn every {s.rad.resample_every} steps)")
    return text


def _adam(cfg: Params) -> str:
    o = cfg.optimizer
    text = (f"learning rate {o.learning_rate:g}, × {o.decay_rate:g} every {o.decay_steps} steps, "
            f"β = ({o.b1:g}, {o.b2:g})")
    if o.warmup_steps:
        text += f", {o.warmup_steps} warm-up steps"
    if o.switch_loss_threshold is not None:
        text += f", stops once the loss < {o.switch_loss_threshold:g}"
    return text


def _refinement(cfg: Params) -> str:
    r = cfg.refine
    if r.method == "none" or r.iterations == 0:
        return "none"
    text = f"{r.method}, {r.iterations} iterations in {r.precision}, blocks of {r.block_size}"
    if r.resample_every_blocks:
        text += f", points redrawn with RAD every {r.resample_every_blocks} blocks"
    return text


def run_settings(cfg: Params) -> list[tuple[str, str]]:
    """`(setting, value)` rows of the report's "Run settings" table."""
    from pinn.problems import make_problem

    problem = make_problem(cfg.problem.identifier, **cfg.problem.coefficients)
    c = cfg.collocation
    rows = [("seed", str(cfg.seed)),
            ("coefficients", _coefficients(cfg, problem)),
            ("network (finest level)", _network(cfg, problem)),
            ("cascade levels", _cascade(cfg)),
            ("collocation points", f"{c.num_points} interior, {c.ic_points} initial, "
                                   f"{c.bc_points} boundary ({c.method})"),
            ("sampling", _sampling(cfg)),
            ("Adam", _adam(cfg)),
            ("refinement", _refinement(cfg))]
    if cfg.windows.count > 1:
        rows.append(("time windows", f"{cfg.windows.count} equal slabs; later windows: "
                     + "; ".join(f"{name}: {w.steps} Adam steps, {w.refine_iterations} "
                                 "refinement iterations" for name, w in cfg.windows.later.items())))
    return rows
