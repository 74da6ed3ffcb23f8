"""The report document: headings, paragraphs, tables and images, rendered to Markdown and to self-contained HTML;
and the number formats the report uses."""

from __future__ import annotations

import base64
import html
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Doc:
    """A report as a list of blocks, rendered both to Markdown and to HTML."""

    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        """A heading of `level` (1 = title)."""
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        """A paragraph (Markdown `code` and **bold** allowed)."""
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        """A table of text cells."""
        self.blocks.append(("table", header, rows))

    def img(self, path: Path, alt: str) -> None:
        """A PNG image (linked in Markdown, embedded in HTML)."""
        self.blocks.append(("img", path, alt))

    def markdown(self, base: Path) -> str:
        """The document as Markdown, images linked relative to `base`."""
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                out.append("| " + " | ".join(b[1]) + " |")
                out.append("|" + "|".join("---" for _ in b[1]) + "|")
                out += ["| " + " | ".join(r) + " |" for r in b[2]]
            elif b[0] == "img":
                out.append(f"![{b[2]}]({os.path.relpath(b[1], base)})")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        """The document as one self-contained HTML page (images embedded)."""
        out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
               "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
               "img{max-width:100%}code{background:#f3f3f3}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "table":
                out.append("<table><tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in b[1]) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{_inline(x)}</td>" for x in r) + "</tr>" for r in b[2]]
                out.append("</table>")
            elif b[0] == "img":
                data = base64.b64encode(Path(b[1]).read_bytes()).decode()
                out.append(f"<p><img alt='{html.escape(b[2])}' src='data:image/png;base64,{data}'></p>")
        out.append("</body></html>")
        return "\n".join(out)


def _inline(text: str) -> str:
    """Markdown `code` and **bold** to HTML, everything else escaped."""
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def fmt(v: float | None, digits: int = 1) -> str:
    """A number with `digits` decimals, '–' when missing."""
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def fmt_signed(v: float | None) -> str:
    """A signed number with one decimal, '–' when missing."""
    return "–" if v is None or not math.isfinite(v) else f"{v:+.1f}"


def fmt_pm(mean: float, std: float | None) -> str:
    """'mean ± std', or the mean alone when std is missing."""
    if std is None or not math.isfinite(std):
        return fmt(mean)
    return f"{fmt(mean)} ± {fmt(std)}"


def fmt_p(p: float | None) -> str:
    """A p-value: two significant digits, scientific below 1e-3."""
    if p is None or not math.isfinite(p):
        return "–"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def group_name(g: tuple) -> str:
    """'sparsegpt unstructured 60%' for a (pruner, pattern, sparsity) group; N:M patterns without the sparsity."""
    return f"{g[0]} {g[1]} {g[2]:.0%}" if g[1] == "unstructured" else f"{g[0]} {g[1]}"


def group_slug(g: tuple) -> str:
    """File-name form of a group, e.g. 'sparsegpt_unstructured_60'."""
    return f"{g[0]}_{g[1].replace(':', 'of')}_{int(round(g[2] * 100))}"


def fmt_ci(lo: float, hi: float, signed: bool = False) -> str:
    """'95% CI a to b' ('95% CI –' when undefined)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "95% CI –"
    return f"95% CI {lo:+.1f} to {hi:+.1f}" if signed else f"95% CI {lo:.1f} to {hi:.1f}"


def fmt_diff(value: float, lo: float, hi: float) -> str:
    """A difference in points with its interval, 'not significant' where the interval includes 0."""
    if not math.isfinite(value):
        return "– (not measured)"
    crosses = not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 <= hi
    return f"{value:+.1f} points ({fmt_ci(lo, hi, signed=True)}" + (", not significant)" if crosses else ")")
