"""The pipeline report's comparison of techniques comes from the latest committed study that ran
the run's problem (`pinn.comparison`), read from what `pinn ablate` writes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from pinn import ablate
from pinn.comparison import comparison_section, read_studies

TINY = Path(__file__).resolve().parents[1] / "benchmarks" / "regression" / "params.yaml"
STUDY = """\
    name: NAME
    params: TINY
    cases:
      burgers: {problem.name: burgers_1d}
      ac: {problem.name: allen_cahn_1d}
    variants:
      base: {}
      rad: {sampling.method: rad}
    seeds: [0, 1, 2]
    budgets: {steps: [20], wall_s: [5]}
"""


def write_results(root: Path, name: str, finished: str, finals: dict[tuple[str, str], list[float]],
                  cases: tuple[str, ...] = ("burgers", "ac")) -> Path:
    """A study's results directory as `pinn ablate` writes it: its summary from a values table
    (`ablate.summarize`) and study.json (`ablate.write_study_meta`)."""
    path = root / f"{name}.yaml"
    path.write_text(textwrap.dedent(STUDY).replace("TINY", str(TINY)).replace("NAME", name))
    study = ablate.only_cases(ablate.load_study(path), list(cases))
    rows = [{"case": c, "variant": v, "seed": s, "experiment": "x", "budget": "final",
             "rel_l2": value} for (c, v), values in finals.items() for s, value in enumerate(values)]
    out = root / "results" / name
    out.mkdir(parents=True)
    ablate.summarize(study, pd.DataFrame(rows)).to_csv(out / "summary.csv", index=False)
    (out / "report.md").write_text(f"# {name}\n")
    ablate.write_study_meta(study, out, {"study_file": str(path), "finished": finished})
    return out


def test_the_latest_study_of_the_runs_problem_is_shown_against_its_baseline(tmp_path):
    write_results(tmp_path, "old", "2026-01-01T00:00:00+00:00",
                  {("burgers", "base"): [1.0, 1.0, 1.0], ("burgers", "rad"): [9.0, 9.0, 9.0]})
    write_results(tmp_path, "new", "2026-06-01T00:00:00+00:00",
                  {("burgers", "base"): [1e-3, 2e-3, 3e-3], ("burgers", "rad"): [4e-3, 4e-3, 4e-3]},
                  cases=("burgers",))
    write_results(tmp_path, "newest-ac", "2026-09-01T00:00:00+00:00",
                  {("ac", "base"): [0.5, 0.5, 0.5], ("ac", "rad"): [0.1, 0.1, 0.1]}, cases=("ac",))
    assert [s.meta["name"] for s in read_studies(tmp_path / "results")] == ["newest-ac", "new", "old"]

    text = "\n".join(comparison_section(tmp_path / "results", "burgers_1d",
                                        link_from=tmp_path / "report"))
    assert "**new**" in text and "case `burgers`" in text and "2026-06-01" in text
    assert "(../results/new/report.md)" in text
    assert "| base | 2.00e-03 [1.00e-03 – 3.00e-03] (n = 3) | 1.00 | (the baseline) |" in text
    assert "| rad | 4.00e-03 [4.00e-03 – 4.00e-03] (n = 3) | 2.00 | worse (ranges disjoint) |" in text

    ac = "\n".join(comparison_section(tmp_path / "results", "allen_cahn_1d"))
    assert "**newest-ac**" in ac and "| rad | 1.00e-01" in ac and "| 0.20 | better (ranges" in ac


def test_overlapping_seed_ranges_are_no_clear_difference(tmp_path):
    write_results(tmp_path, "s", "2026-06-01T00:00:00+00:00",
                  {("burgers", "base"): [1e-3, 2e-3, 3e-3], ("burgers", "rad"): [2.5e-3, 4e-3, 5e-3]},
                  cases=("burgers",))
    text = "\n".join(comparison_section(tmp_path / "results", "burgers_1d"))
    assert "| rad | 3.83e-03 [2.50e-03 – 5.00e-03] (n = 3) | 1.92 | no clear difference" in text


def test_no_study_of_the_problem_is_said(tmp_path):
    write_results(tmp_path, "only-ac", "2026-09-01T00:00:00+00:00",
                  {("ac", "base"): [0.5], ("ac", "rad"): [0.1]}, cases=("ac",))
    text = "\n".join(comparison_section(tmp_path / "results", "allen_cahn_2d"))
    assert "has run `allen_cahn_2d`" in text and "`only-ac`, ran allen_cahn_1d" in text
    assert "|" not in text  # no table
    assert "No committed study" in "\n".join(comparison_section(tmp_path / "nothing", "burgers_1d"))
