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

Time-marching windows (`windows.count` = K > 1, `pinn.windows`): window 0's network is `--refined`,
window k's `--windows`/window<k>.npz; each reference time is evaluated with the network of the
window holding it, `rel_l2`/`max_abs` are over the stitched prediction, and `rel_l2_window<k>`
(after `max_abs`) is the rel L2 on window k's times alone. Evaluated in float64 when any window's
network is.

Inverse problems (`problem.trainable`, `pinn.problems.trainable`): `coef_<name>` (the recovered
value, from the refined network's parameters) and, when the observations come from the problem's
own solution (no `problem.observations.file`), `coef_<name>_true` and `coef_<name>_rel_error`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from pinn import io, windows
from pinn.errors import DivergenceError
from pinn.precision import refined_precision, scope
from pinn.stages.common import PARAMS, command, load_reference, problem_of, read_params, require


def main(
    params: Path = PARAMS,
    refined: Path = typer.Option(..., "--refined", help="The refined network (.npz)."),
    reference: Path = typer.Option(..., "--reference", help="Reference solution."),
    metrics: Path = typer.Option(..., "--metrics", help="metrics.json to write."),
    errors: Path = typer.Option(..., "--errors", help="Prediction and error arrays (.npz)."),
    windows_dir: Path = typer.Option(..., "--windows",
                                     help="The time-marching windows' networks (window<k>.npz)."),
) -> None:
    from pinn.evaluate import accuracy, accuracy_of_fields, predict_on_grid
    from pinn.levels import level_model, level_names
    from pinn.models import apply_fn, cast, split
    from pinn.problems.trainable import trainable_coefficients

    cfg = read_params(params)
    require(refined, "refine")
    ref = load_reference(reference)
    r = cfg.refine
    problem = problem_of(cfg)
    count = cfg.windows.count
    precisions = [refined_precision(r.method, r.iterations, r.precision, cfg.train.precision)]
    precisions += [refined_precision(r.method, w.refine_iterations, r.precision, cfg.train.precision)
                   for w in cfg.windows.later.values()]
    edges = windows.bounds(cfg, problem) if count > 1 else None
    per_window: dict[str, float] = {}
    coefficients: dict[str, float] = {}  # recovered trainable coefficients (window 0's network)
    trainable = trainable_coefficients(cfg.problem.trainable, problem)
    with scope("float64" if "float64" in precisions else precisions[0]) as dtype:
        def network(k: int, path: Path):
            model = level_model(cfg, windows.window_problem(cfg, problem, k), level_names(cfg)[-1])
            graphdef, template, rest = split(model)
            params_, extras = io.load_tree(path, cast(template, dtype))
            u = apply_fn(graphdef, cast(rest, dtype))
            if k == 0 and trainable is not None:
                # the true value is the problem's own when the observations come from its solution
                coefficients.update(trainable.report(
                    params_, problem, known=cfg.problem.observations.file is None))
            return (lambda z: u(params_, z)), extras

        u0, extras = network(0, refined)
        if count == 1:
            acc = accuracy(u0, ref, dtype=dtype, chunk=cfg.evaluate.chunk_size, fields=problem.fields)
        else:  # time-marching: each time evaluated with its window's network (pinn.windows)
            fns = [u0] + [network(k, require(windows_dir / f"window{k}.npz", f"window@window{k}"))[0]
                          for k in range(1, count)]
            preds = [predict_on_grid(u, ref, dtype=dtype, chunk=cfg.evaluate.chunk_size)
                     for u in fns]
            pred = windows.stitch(preds, ref, problem.box.time, edges)
            acc = accuracy_of_fields(pred, ref, problem.fields)
            for k in range(count):
                mask = windows.reference_mask(ref, problem.box.time, edges, k)
                part = windows.reference_in_window(cfg, problem, ref, k)
                per_window[f"rel_l2_window{k}"] = accuracy_of_fields(pred[mask], part,
                                                                     problem.fields).rel_l2
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
    result.update(per_window)  # time-marching: rel L2 on each window's times
    # inverse problems: coef_<name>, coef_<name>_true and coef_<name>_rel_error (when known)
    result.update(coefficients)
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
