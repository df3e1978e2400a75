"""The pipeline report's comparison of techniques: read from the latest ablation study that ran
this run's problem (`pinn ablate`, results committed under `studies/results/<study>/`), never
from a table kept by hand.

A study's results directory holds `study.json` (`pinn.ablate.write_study_meta`: name, when it
finished, seeds, variants, each case's problem) and `summary.csv` (mean, min, max, std and n of
rel L2 over seeds per case, variant and budget). `comparison_section` picks, among the studies
under a directory, the most recently finished one with a case of this run's problem, and shows
its final-budget row per variant against the study's first variant (its baseline).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

#: the budget row a study's summary gives for the end of each run (`pinn.ablate.FINAL`)
FINAL = "final"


@dataclass(frozen=True)
class StudyResults:
    """One study's committed results: its directory, `study.json` and `summary.csv`."""

    path: Path
    meta: dict
    summary: "object"  # pandas.DataFrame: case, variant, budget, mean, min, max, std, n

    @property
    def finished(self) -> str:
        return str(self.meta.get("finished") or "")

    def case_of(self, problem: str) -> str | None:
        """The study's case that ran `problem` (a built-in name or a target), if any."""
        for case, ran in (self.meta.get("cases") or {}).items():
            if ran == problem:
                return case
        return None


def read_studies(root: str | Path) -> list[StudyResults]:
    """Every study under `root` (directories with `study.json` and `summary.csv`), the most
    recently finished first. Unreadable ones are skipped: they are not this run's results."""
    import pandas as pd

    found = []
    for meta_path in sorted(Path(root).glob("*/study.json")):
        try:
            meta = json.loads(meta_path.read_text())
            summary = pd.read_csv(meta_path.parent / "summary.csv")
        except (OSError, ValueError):
            continue
        found.append(StudyResults(meta_path.parent, meta, summary))
    return sorted(found, key=lambda s: s.finished, reverse=True)


def _spread(row) -> str:
    n = int(row["n"])
    if n == 0 or not math.isfinite(float(row["mean"])):
        return "–"
    return f"{row['mean']:.2e} [{row['min']:.2e} – {row['max']:.2e}] (n = {n})"


def comparison_section(root: str | Path, problem: str, link_from: str | Path | None = None
                       ) -> list[str]:
    """Markdown lines: the techniques compared on `problem` by the latest study under `root` that
    ran it, final rel L2 per variant (mean [min – max] over seeds) and its ratio to the study's
    baseline variant; or a line saying that no study has run this problem. `link_from`: the
    report's directory, for a relative link to the study's own report."""
    lines = ["## How the techniques compare on this problem", ""]
    studies = read_studies(root) if Path(root).is_dir() else []
    covering = [s for s in studies if s.case_of(problem) is not None]
    if not covering:
        latest = f" (the latest, `{studies[0].meta.get('name')}`, ran " \
                 f"{', '.join(sorted(set((studies[0].meta.get('cases') or {}).values())))})" \
            if studies else ""
        return lines + [f"No committed study under `{root}` has run `{problem}`{latest}: run "
                        "`pinn ablate STUDY.yaml` with a case of this problem to compare techniques "
                        "here.", ""]
    study = covering[0]
    case = study.case_of(problem)
    rows = study.summary[(study.summary["case"].astype(str) == case)
                         & (study.summary["budget"].astype(str) == FINAL)]
    variants = [v for v in study.meta.get("variants", []) if v in set(rows["variant"])]
    if not variants:
        return lines + [f"Study `{study.meta.get('name')}` ran `{problem}` (case `{case}`) but has "
                        "no final results for it.", ""]
    by_variant = {str(r["variant"]): r for _, r in rows.iterrows()}
    base = variants[0]
    report = study.path / "report.md"
    where = report if link_from is None else Path(_relative(report, Path(link_from)))
    lines += [f"From study **{study.meta.get('name')}** (`{study.meta.get('study_file')}`, case "
              f"`{case}`, finished {study.finished}, seeds "
              f"{', '.join(str(s) for s in study.meta.get('seeds', []))}); its full report: "
              f"[{where.as_posix()}]({where.as_posix()}). Final rel L2 over seeds; the ratio is to "
              f"the study's baseline variant `{base}` (below 1: better); a difference counts only "
              "where the seeds' ranges do not overlap. These are the study's settings, not this "
              "run's.", "",
              "| variant | final rel L2: mean [min – max] | mean / baseline | vs baseline |",
              "|---|---|---|---|"]
    ref = float(by_variant[base]["mean"])
    for v in variants:
        r = by_variant[v]
        ratio = float(r["mean"]) / ref if ref > 0 and math.isfinite(ref) else float("nan")
        shown = f"{ratio:.2f}" if math.isfinite(ratio) else "–"
        lines.append(f"| {v} | {_spread(r)} | {shown} | "
                     f"{'(the baseline)' if v == base else verdict(r, by_variant[base])} |")
    return lines + [""]


def verdict(row, base) -> str:
    """Better / worse than the baseline only where the min–max ranges over seeds are disjoint."""
    lo, hi = float(row["min"]), float(row["max"])
    base_lo, base_hi = float(base["min"]), float(base["max"])
    if not all(math.isfinite(v) for v in (lo, hi, base_lo, base_hi)):
        return "–"
    if hi < base_lo:
        return "better (ranges disjoint)"
    if lo > base_hi:
        return "worse (ranges disjoint)"
    return "no clear difference (ranges overlap)"


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.absolute(), start.absolute())
