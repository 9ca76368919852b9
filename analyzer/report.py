"""Timeline (+ findings) → one self-contained HTML file.

Two steps, as everywhere in stallscope: :func:`analyzer.report_view.build_view` turns frames
into plain dicts and lists (the only place that reads DataFrames), then jinja2 renders
``templates/report.html.j2`` with autoescape on and ``StrictUndefined``. Chart data is
embedded once as JSON made safe for a ``<script>`` element; plotly.js is inlined from the
installed ``plotly`` package. The page makes no network request (a CSP forbids it).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup

from analyzer.report_view import build_view

if TYPE_CHECKING:
    from analyzer.timeline import Timeline

__all__ = ["build_view", "render", "script_json", "write_report"]


def templates_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError("report templates not found next to the analyzer package")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["script_json"] = script_json
    return env


def script_json(value: Any) -> Markup:
    """JSON that cannot end a <script> element or open a comment, marked safe for jinja2.

    >>> str(script_json({"q": "</script><!--"}))
    '{"q":"\\\\u003c/script\\\\u003e\\\\u003c!--"}'
    """
    text = json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(text)


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """The plotly.js bundle shipped inside the ``plotly`` package, safe inside <script>."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().replace("</script", "<\\/script").replace("<!--", "<\\!--")


def render(tl: Timeline, findings: list[dict[str, Any]] | None = None, title: str | None = None) -> str:
    """The report as one HTML string."""
    view = build_view(tl, findings or [], title)
    template = environment().get_template("report.html.j2")
    return template.render(view=view, plotly_js=Markup(plotly_js()))


def write_report(tl: Timeline, path: Path, title: str | None = None,
                 findings: list[dict[str, Any]] | None = None) -> Path:
    """Render the report of ``tl`` to ``path`` (findings default to ``tl.findings()``)."""
    if findings is None:
        findings = tl.findings()
    path = Path(path)
    path.write_text(render(tl, findings, title), encoding="utf-8")
    return path
