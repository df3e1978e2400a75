"""`dvc plots show/diff` give a page that renders offline, with the error on a log axis.

The page is rendered here with the real Vega engine (vl-convert, no browser, no network), so a
spec that draws nothing (e.g. a filter that drops every row) fails too, not only a missing file.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import vl_convert

from conftest import dvc, output_of
from pinn import pipeline
from pinn.stages import plots_page

HISTORIES = ("data/train/level0/history.csv", "data/train/level1/history.csv",
             "data/refine/history.csv")


def specs_of(page: str) -> dict[str, dict]:
    """The Vega-Lite spec of each plot in a DVC plots page, by its title (the file plotted)."""
    specs = [json.loads(s) for s in re.findall(r"var spec = (\{.*?\});\s*vegaEmbed", page, re.S)]
    return {spec["title"]["text"]: spec for spec in specs}


def test_the_page_inlines_the_charting_libraries():
    page = plots_page.page()
    assert page.count("{plot_divs}") == 1 and "<script src" not in page
    assert "window.vegaEmbed=" in page.replace(" ", "")


def test_dvc_plots_diff_renders_offline_on_a_log_axis(built_copy, pipeline_env):
    proc = dvc(built_copy, pipeline_env, "plots", "diff", "-o", "plots_out")
    assert proc.returncode == 0, output_of(proc)
    page = (built_copy / "plots_out" / "index.html").read_text()
    # no script or stylesheet from the network: everything the page runs is in it
    assert not re.search(r"<(script|link)[^>]+(src|href)\s*=\s*[\"']?https?:", page), page[:2000]
    assert "cdn." not in page
    specs = specs_of(page)
    assert set(HISTORIES) <= set(specs), sorted(specs)
    for name in HISTORIES:
        spec = specs[name]
        assert spec["encoding"]["y"]["field"] == "rel_l2"
        svg = vl_convert.vegalite_to_svg(spec)
        axis = re.search(r"aria-label=\"Y-axis titled 'rel_l2' for a (\w+) scale", svg)
        assert axis and axis.group(1) == "log", name
        lines = re.findall(r'aria-roledescription="line mark"[^>]*d="M([^"]+)"', svg)
        rows = pd.read_csv(built_copy / name)["rel_l2"]
        # one vertex per logged row: nothing dropped by the template's filter or the log scale
        assert [line.count("L") + 1 for line in lines] == [len(rows)], name


def test_projects_point_dvc_at_the_page(tmp_path):
    root = pipeline.make_project(tmp_path / "p", pipeline.source_root() / "params.yaml")
    config = (root / ".dvc" / "config").read_text()
    assert f"html_template = {pipeline.PLOTS_PAGE}" in config
    # and this repository's own config does too (users run `dvc plots diff` here)
    assert f"html_template = {pipeline.PLOTS_PAGE}" in (
        pipeline.source_root() / ".dvc" / "config").read_text()
