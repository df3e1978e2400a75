"""Stage `evaluate`: accuracy of the refined network on the reference's full grid (or at the
scattered points of a reference read from a file).

Outputs: `--metrics` (metrics.json: rel_l2, max_abs, the reference's own error estimate — null when
unknown, for a file that states none — refinement iterations; never NaN — a non-finite prediction
fails the stage) and `--errors` (prediction and error on the grid with its axes `t`, `x`[, `y`], or
at the points with `points` and their `columns`, .npz).

A system of fields (`problem.fields`, more than one): `rel_l2` and `max_abs` are over every field
the reference holds, stacked (`pinn.evaluate`), followed by `rel_l2_<field>` and `max_abs_<field>`
per field; errors.npz holds the first field as `prediction`/`error`, each further one as
`prediction_<field>`/`error_<field>`, and `fields` (their names, in order). A single field named
other than `u` is named by `fields` too; a problem with the one field `u` writes exactly what it
always did.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from pinn import io
from pinn.errors import DivergenceError
from pinn.precision import refined_precision, scope
from pinn.stages.common import PARAMS, command, load_reference, problem_of, read_params, require


def main(
    params: Path = PARAMS,
    refined: Path = typer.Option(..., "--refined", help="The refined network (.npz)."),
    reference: Path = typer.Option(..., "--reference", help="Reference solution."),
    metrics: Path = typer.Option(..., "--metrics", help="metrics.json to write."),
    errors: Path = typer.Option(..., "--errors", help="Prediction and error arrays (.npz)."),
) -> None:
    from pinn.evaluate import accuracy
    from pinn.levels import level_model, level_names
    from pinn.models import apply_fn, cast, split

    cfg = read_params(params)
    require(refined, "refine")
    ref = load_reference(reference)
    r = cfg.refine
    problem = problem_of(cfg)
    with scope(refined_precision(r.method, r.iterations, r.precision, cfg.train.precision)) as dtype:
        model = level_model(cfg, problem, level_names(cfg)[-1])
        graphdef, template, rest = split(model)
        params_, extras = io.load_tree(refined, cast(template, dtype))
        u = apply_fn(graphdef, cast(rest, dtype))
        acc = accuracy(lambda z: u(params_, z), ref, dtype=dtype, chunk=cfg.evaluate.chunk_size,
                       fields=problem.fields)
    if not acc.finite:
        raise DivergenceError(
            f"evaluate: the network's predictions are not finite (rel_l2 = {acc.rel_l2}); "
            "no metrics written"
        )
    est = ref.est_rel_error  # None: unknown (a file's reference that states none)
    result = {  # the headline first: `dvc exp show` lists the columns in this order
        "rel_l2": acc.rel_l2,
        "max_abs": acc.max_abs,
    }
    several = len(problem.fields) > 1
    if several:  # per field (the headline is over all of them stacked)
        result.update({f"rel_l2_{name}": a.rel_l2 for name, a in acc.per_field.items()})
        result.update({f"max_abs_{name}": a.max_abs for name, a in acc.per_field.items()})
    result.update({
        "problem": cfg.problem.identifier,
        "reference_est_rel_error": est,
        # the reference's own error is above reference.warn_above: figures are limited by it
        "reference_limited": est is not None and not est <= cfg.reference.warn_above,
    })
    result.update({k: float(v) for k, v in extras.items() if v.shape == ()})
    if ref.is_grid:
        where = {"t": ref.t, "x": ref.x, **({"y": ref.y} if ref.y is not None else {})}
    else:
        where = {"points": ref.points(), "columns": np.asarray(ref.input_names, dtype=np.str_)}
    names = tuple(acc.per_field)
    arrays = {"prediction": acc.prediction, "error": acc.error, **where}
    for name in names[1:]:
        arrays[f"prediction_{name}"] = acc.per_field[name].prediction
        arrays[f"error_{name}"] = acc.per_field[name].error
    if names != ("u",):
        arrays["fields"] = np.asarray(names, dtype=np.str_)
    io.save_npz(errors, arrays)
    io.write_json(metrics, result, sort_keys=False)
    each = (" (" + ", ".join(f"{n} {a.rel_l2:.3e}" for n, a in acc.per_field.items()) + ")"
            if several else "")
    print(f"evaluate: rel L2 {acc.rel_l2:.3e}{each}, max abs {acc.max_abs:.3e} -> {metrics}")
    if acc.missing:
        print(f"evaluate: not evaluated: field(s) {', '.join(acc.missing)} (the reference holds "
              "no values of them)")


if __name__ == "__main__":
    command(main)
