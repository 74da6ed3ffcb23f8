"""Report document: the same blocks rendered to Markdown and to HTML; the number formats."""

from __future__ import annotations

import math

from calmix.study.doc import Doc, fmt, fmt_p, fmt_pm, fmt_signed, group_name, group_slug


def test_markdown_and_html_of_the_same_blocks(tmp_path):
    png = tmp_path / "files" / "a.png"
    png.parent.mkdir()
    png.write_bytes(b"\x89PNG\r\n\x1a\nxx")
    doc = Doc()
    doc.h(2, "Title <x>")
    doc.p("keep `code` and **bold** & more")
    doc.table(["name", "value"], [["`a`", "1.0"]])
    doc.img(png, "a plot")
    assert doc.markdown(tmp_path) == ("## Title <x>\n\nkeep `code` and **bold** & more\n\n| name | value |\n|---|---|\n"
                                      "| `a` | 1.0 |\n\n![a plot](files/a.png)\n")
    html = doc.html("T")
    assert "<title>T</title>" in html and "<h2>Title &lt;x&gt;</h2>" in html
    assert "<p>keep <code>code</code> and <b>bold</b> &amp; more</p>" in html
    assert "<tr><th>name</th><th>value</th></tr>" in html and "<tr><td><code>a</code></td><td>1.0</td></tr>" in html
    assert "<img alt='a plot' src='data:image/png;base64,iVBORw0KGgp4eA=='>" in html


def test_number_formats_and_group_names():
    assert fmt(12.345) == "12.3" and fmt(12.345, 2) == "12.35" and fmt(None) == fmt(math.nan) == "–"
    assert fmt_signed(3.14) == "+3.1" and fmt_signed(-0.04) == "-0.0" and fmt_signed(math.inf) == "–"
    assert fmt_pm(45.0, 0.7071) == "45.0 ± 0.7" and fmt_pm(45.0, math.nan) == "45.0"
    assert fmt_p(0.0123) == "0.012" and fmt_p(1.4e-24) == "1.4e-24" and fmt_p(None) == "–"
    assert group_name(("sparsegpt", "unstructured", 0.6)) == "sparsegpt unstructured 60%"
    assert group_name(("wanda", "2:4", 0.5)) == "wanda 2:4"
    assert group_slug(("wanda", "2:4", 0.5)) == "wanda_2of4_50"
