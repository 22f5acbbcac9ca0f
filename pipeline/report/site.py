"""The static site every report writes: pages, their data, and the assets they share.

A report must open from `file://` on a laptop with no server and no network, so:
- every page is a plain HTML file whose data sits inline as JSON (`const DATA = ...`):
  `fetch()` of a local file is refused by browsers, a `<script>` tag is not;
- charts are drawn by BokehJS, copied once into `assets/` from the `bokeh` Python package
  (which bundles it: no CDN), with `assets/report.js` (our chart and text helpers) and
  `assets/report.css`. Why Bokeh (docs/report.md): maintained, interactive (hover, zoom),
  and small enough to start fast: its 1.4 MB evaluate in ~0.3 s on a 2-core machine,
  where plotly.js's 4.8 MB took ~1.5 s, longer than the summary page may take to load;
- pages link to each other by relative paths, so the folder can be copied or zipped.

Pages are written by the report modules (`features.py`, `interventions.py`,
`store_pages.py`); this module knows nothing of their content.
"""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

ASSETS = ("report.js", "report.css")
BOKEH_FILES = ("bokeh.min.js", "bokeh-api.min.js")  # the library and its plotting API


def write_assets(site: Path) -> None:
    """assets/bokeh*.min.js (from the bokeh package), report.js and report.css."""
    folder = site / "assets"
    folder.mkdir(parents=True, exist_ok=True)
    bokeh_js = resources.files("bokeh").joinpath("server", "static", "js")
    for name in BOKEH_FILES:
        (folder / name).write_bytes(bokeh_js.joinpath(name).read_bytes())
    for name in ASSETS:
        text = resources.files("pipeline.report").joinpath("assets", name).read_text("utf-8")
        (folder / name).write_text(text, encoding="utf-8")


def to_json(data: Any) -> str:
    """JSON safe to inline in a <script>: NaN/inf become null, '</' cannot close the tag."""
    return json.dumps(_finite(data), separators=(",", ":"), ensure_ascii=False).replace(
        "</", "<\\/"
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def page(
    title: str,
    body: str,
    data: Any = None,
    depth: int = 0,
    on_load: str = "",
    nav: str = "",
) -> str:
    """A whole HTML page: `body` (trusted HTML, escape what you put in it with `esc`), its
    `data` inline as `DATA`, and `on_load` (JS run once the DOM and BokehJS are ready).
    `depth`: how many folders below the site root the page sits (for asset paths)."""
    up = "../" * depth
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<link rel="stylesheet" href="{up}assets/report.css">
{"".join(f'<script src="{up}assets/{name}"></script>' for name in BOKEH_FILES)}
<script src="{up}assets/report.js"></script>
</head><body>
<nav>{nav}</nav>
<main>
<h1>{esc(title)}</h1>
{body}
</main>
<script>const DATA = {to_json(data)};
document.addEventListener("DOMContentLoaded", () => {{ {on_load} }});</script>
</body></html>
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    """An HTML table of escaped cells (no header row when every header is empty)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    return f'<table class="{cls}">{thead}<tbody>{body}</tbody></table>'


def number(value: Any, digits: int = 4) -> str:
    """A figure for a table: None/NaN as 'n/a', floats to `digits` significant digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def write_page(site: Path, relative: str, text: str) -> Path:
    path = site / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
