"""Stage `report`: markdown + figures from this run's outputs (with time-marching windows, every
window's: `--window-logs`), and the comparison of techniques from the latest committed study of
this problem (`--studies`)."""

from __future__ import annotations

from pathlib import Path

import typer

from pinn.stages.common import PARAMS, command, read_params


def main(
    params: Path = PARAMS,
    metrics: Path = typer.Option(..., "--metrics"),
    errors: Path = typer.Option(..., "--errors"),
    reference: Path = typer.Option(..., "--reference"),
    train_dir: Path = typer.Option(..., "--train", help="Per-level logs: <dir>/<level>/history.csv."),
    refine_history: Path = typer.Option(..., "--refine-history"),
    window_logs: Path = typer.Option(Path("data") / "window_logs", "--window-logs",
                                     help="Time-marching windows' logs: <dir>/<window>/history.csv, "
                                          "refine.csv (read with windows.count > 1)."),
    out: Path = typer.Option(..., "--out", help="Report directory (replaced whole)."),
    studies: Path = typer.Option(None, "--studies",
                                 help="Committed study results (studies/results): the report's "
                                      "comparison of techniques comes from the latest one."),
) -> None:
    from pinn.report import build_report

    cfg = read_params(params)
    path = build_report(cfg, reference=reference, errors=errors, metrics=metrics,
                        train_dir=train_dir, refine_history=refine_history, out=out,
                        studies=studies, window_logs=window_logs)
    print(f"report: {path.absolute()}")


if __name__ == "__main__":
    command(main)
