"""The reports' HTML building blocks (:mod:`autoshrink.report.html`): how a table cell shows a
number, attribute escaping, and the report folder made, made again, or refused."""

from __future__ import annotations

import math

import pytest

from autoshrink.errors import AutoshrinkError
from autoshrink.report import html


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "–"),
        (math.nan, "–"),
        (-math.inf, "–"),
        (999, "999"),
        (1000, "1,000"),
        (-384_000_000, "-384,000,000"),
        (True, "True"),  # a flag, not the count 1
        (0.93125, "0.9313"),
        (999.0, "999.0000"),
        (1000.0, "1,000"),  # a count held as a float: MACs, parameters
        (1234.56, "1,234.6"),
        (999.5, "999.5000"),
        (1000.5, "1,000.5"),
        ("rea", "rea"),
    ],
)
def test_a_table_cell_shows_numbers_by_their_kind_and_size(value, text):
    assert html.fmt(value) == text


def test_fmt_takes_the_decimals_asked_for():
    assert html.fmt(0.5, digits=2) == "0.50"


def test_a_picture_path_and_caption_with_quotes_stay_inside_their_attributes(tmp_path):
    picture = tmp_path / "cells" / 'a "b".svg'
    fig = html.figure(picture, tmp_path, 'the "best" cell')
    assert '<img src="cells/a &quot;b&quot;.svg" alt="the &quot;best&quot; cell">' in fig
    assert '<a href="cells/a &quot;b&quot;.svg"><img' in fig  # a click opens it full size
    assert '<figcaption>the "best" cell</figcaption>' in fig


@pytest.mark.parametrize(
    ("header", "style"),
    [
        ('<svg width="700pt" height="172pt" viewBox="0 0 700 172">', ' style="flex-basis: 933px"'),
        ('<svg xmlns="x" width="500" height="90">', ' style="flex-basis: 500px"'),
        ("<svg viewBox='0 0 10 10'>", ""),  # no width: the row's box of 340 px
    ],
)  # fmt: skip
def test_a_cell_picture_box_is_as_wide_as_the_picture(tmp_path, header, style):
    picture = tmp_path / "cells" / "step_000.svg"
    picture.parent.mkdir()
    picture.write_text(f'<?xml version="1.0"?>\n<!-- Graphviz -->\n{header}</svg>\n')
    fig = html.figure(picture, tmp_path, "step 0", natural_size=True)
    assert fig.startswith(f'<figure{style}><a href="cells/step_000.svg">')
    assert html.figure(picture, tmp_path, "step 0").startswith("<figure><a ")  # not asked for


def test_a_cell_picture_fallback_text_is_shown_preformatted(tmp_path):
    picture = tmp_path / "cell.txt"
    picture.write_text("0 -> 1 <conv>\n")
    fig = html.figure(picture, tmp_path, "cell")
    assert fig.startswith("<figure><pre>0 -&gt; 1 &lt;conv&gt;\n</pre>")


def test_the_report_folder_is_made_and_made_again(tmp_path):
    folder = tmp_path / "run" / "report"
    assert html.page_folder(folder) == folder and folder.is_dir()
    assert not (folder / "cells").exists()  # made by the first cell picture, if any
    (folder / "cells").mkdir()
    (folder / "cells" / "old.svg").write_text("<svg/>")
    assert html.page_folder(folder) == folder  # a report written again over the first
    assert (folder / "cells" / "old.svg").is_file()


def test_a_report_folder_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "report").write_text("a file where the folder goes")
    with pytest.raises(AutoshrinkError, match="cannot create the report folder .*report: "):
        html.page_folder(tmp_path / "report")
