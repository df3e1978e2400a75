"""Stage `plots_page`: the HTML page that `dvc plots show` / `dvc plots diff` fill, made to render
offline.

DVC's own page loads Vega, Vega-Lite and Vega-Embed from a CDN, so without a network it is blank.
This page carries the three libraries inline (bundled by vl-convert, a pinned dependency), and
`.dvc/config` points DVC at it (`plots.html_template`, set in this repository and by
`pinn.pipeline.make_project`). The plots themselves use `pinn/plots/log_y.json` (dvc.yaml), a
Vega-Lite template with a logarithmic error axis.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pinn import io

#: DVC fills these placeholders (dvc_render.html.HTML); the plots go into `{plot_divs}`
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>pinn: DVC plots</title>
<script type="text/javascript">
%s
</script>
<style>table { border-spacing: 15px; } body { font-family: sans-serif; }</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def page() -> str:
    """The page's text: DVC's placeholders around the inline charting libraries.

    Raises:
        RuntimeError: if the bundle could break out of its script element or collide with a
            placeholder (a vl-convert release that would make the page render wrongly).
    """
    import vl_convert

    bundle = vl_convert.javascript_bundle()
    for forbidden in ("</script", "{plot_divs}", "{scripts}", "{refresh_tag}"):
        if forbidden in bundle:
            raise RuntimeError(f"vl-convert {vl_convert.__version__}: its bundle contains "
                               f"{forbidden!r}; it cannot be inlined in the plots page")
    return PAGE.replace("%s", bundle)


def main(out: Path = typer.Option(..., "--out", help="The HTML page (.html).")) -> None:
    io.write_text(out, page())
    print(f"plots page (renders offline) -> {out}")


if __name__ == "__main__":
    typer.run(main)  # no params, no JAX: none of `pinn.stages.common` is needed
