"""The cascade's shape, from params alone: level names, widths, networks, step budgets, seeds.

Level i of L (`multilevel.levels`, coarse to fine) has width
`model.width · coarsening_factor^(L−1−i)` (`level_widths`, `pinn.multilevel.level_widths`) and PRNG seed
`seed·1000 + i`; every level's network is built with the same `seed`, so the non-trainable parts
(random Fourier features) are shared by all levels.
"""

from __future__ import annotations

from pinn.config import Params
from pinn.models import PINN, make_model
from pinn.multilevel import level_widths as _widths
from pinn.precision import DTYPES


def level_names(cfg: Params) -> list[str]:
    return list(cfg.multilevel.levels)


def level_widths(cfg: Params) -> dict[str, int]:
    """Width of every cascade level (finest = `model.width`), coarse to fine."""
    names = level_names(cfg)
    m = cfg.multilevel
    return dict(zip(names, _widths(cfg.model.width, len(names), m.coarsening_factor)))


def level_model(cfg: Params, problem, level: str) -> PINN:
    """The network of `level` (seeded by `seed`; the non-trainable parts are shared by all levels),
    with the trainable coefficients of `problem.trainable` at their initial guesses, if any."""
    from pinn.problems.trainable import trainable_coefficients

    widths = level_widths(cfg)
    dtype = DTYPES[cfg.train.precision]
    trainable = trainable_coefficients(cfg.problem.trainable, problem)
    return make_model(cfg.model, problem, seed=cfg.seed, width=widths[level], dtype=dtype,
                      coefficients=trainable.raw_initial() if trainable else ())


def level_steps(cfg: Params, level: str) -> int:
    names = level_names(cfg)
    steps = cfg.multilevel.levels[level].steps
    if level == names[-1]:
        steps += cfg.multilevel.finest_warmup_steps
    return steps


def level_seed(cfg: Params, level: str) -> int:
    return cfg.seed * 1000 + level_names(cfg).index(level)
