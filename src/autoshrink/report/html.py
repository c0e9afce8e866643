"""Small HTML building blocks for the static reports: a page, tables, figures, text blocks.

Everything is escaped here, pages carry their CSS inline and link images by relative paths,
so a report folder opens from disk (``file://``) with no server, script or network.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from html import escape as _escape
from pathlib import Path
from typing import Any

from autoshrink.atomic_write import write_atomic
from autoshrink.errors import AutoshrinkError

_CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
figure { margin: 0.8em 0; } figcaption { color: #555; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.7em; overflow-x: auto; font-size: 0.85em; }
.note { background: #fff4ce; padding: 0.5em 0.8em; border-left: 4px solid #e0b000; }
.cells { display: flex; flex-wrap: wrap; gap: 1em; }
.cells figure { flex: 0 1 340px; max-width: 100%; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; } dd { margin: 0; overflow-wrap: anywhere; }
"""


def page_folder(folder: Path) -> Path:
    """Create the folder a page and its pictures go into; a one-line :class:`AutoshrinkError`
    naming it when that fails. Its ``cells/`` is made by the first cell picture written there
    (:func:`autoshrink.report.picture.render`): a page without one has none."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AutoshrinkError(f"cannot create the report folder {folder}: {err.strerror}") from None
    return folder


def escape(text: str, quote: bool = False) -> str:
    """HTML-escape ``text``; quotes too with ``quote`` (for attribute values)."""
    return _escape(text, quote=quote)


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell's text: floats to ``digits`` decimals, large counts (integers, and floats
    of integral value) with thousands separators, ``None``/``-inf``/NaN as a dash."""
    if value is None:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1000:
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value.is_integer() and abs(value) >= 1000:  # counts: MACs, parameters
            return f"{value:,.0f}"
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 0) -> str:
    """An HTML table; the first ``left`` columns are left-aligned."""

    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    head = "".join(f"<th{cls(i)}>{escape(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{escape(fmt(v))}</td>" for i, v in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(path: Path, root: Path, caption: str, natural_size: bool = False) -> str:
    """An image (``path`` relative to the page folder ``root``), linked to itself (a click opens
    it full size), or its text when not a picture. With ``natural_size``, an SVG's box in a
    ``cells`` row is as wide as the picture (:func:`svg_width`), up to the page's width: a large
    cell's labels were a few pixels high in a box of 340 px."""
    rel = escape(path.relative_to(root).as_posix(), True)
    if path.suffix == ".txt":  # the text fallback of a cell picture (no Graphviz)
        body = f"<pre>{escape(path.read_text())}</pre>"
    else:
        body = f'<a href="{rel}"><img src="{rel}" alt="{escape(caption, True)}"></a>'
    width = svg_width(path) if natural_size else None
    style = "" if width is None else f' style="flex-basis: {width}px"'
    return f"<figure{style}>{body}<figcaption>{escape(caption)}</figcaption></figure>"


_SVG_WIDTH = re.compile(rb'<svg\b[^>]*?\bwidth="([0-9.]+)(pt|px)?"')


def svg_width(path: Path) -> int | None:
    """The width in CSS pixels an SVG file asks for (Graphviz and matplotlib write it in
    points, 4/3 px each; a width without a unit is in px); ``None`` for another file or one
    without a width."""
    if path.suffix != ".svg":
        return None
    with open(path, "rb") as f:
        found = _SVG_WIDTH.search(f.read(4096))
    if found is None:
        return None
    return round(float(found[1]) * (4 / 3 if found[2] == b"pt" else 1))


def definitions(items: Iterable[tuple[str, Any]]) -> str:
    """A definition list of label/value pairs."""
    body = "".join(f"<dt>{escape(k)}</dt><dd>{escape(fmt(v))}</dd>" for k, v in items)
    return f"<dl>{body}</dl>"


def pre(text: str) -> str:
    """``text`` as preformatted HTML."""
    return f"<pre>{escape(text)}</pre>"


def note(text: str) -> str:
    """``text`` as an HTML note paragraph."""
    return f'<p class="note">{escape(text)}</p>'


def write_page(path: Path, title: str, sections: Iterable[tuple[str, str]]) -> Path:
    """Write :func:`page` to ``path`` (UTF-8, in one step; a path that is not valid UTF-8 shown
    with replacement characters); returns ``path``."""
    text = page(title, sections).encode("utf-8", "replace")
    write_atomic(path, lambda tmp: tmp.write_bytes(text))
    return path


def page(title: str, sections: Iterable[tuple[str, str]]) -> str:
    """A whole HTML page: a title, then ``(heading, html)`` sections (empty heading: none)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>Written {stamp} by <code>autoshrink report</code>.</p>",
    ]
    for heading, html in sections:
        if heading:
            parts.append(f"<h2>{escape(heading)}</h2>")
        parts.append(html)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
