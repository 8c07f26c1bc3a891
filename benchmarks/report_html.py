"""report.md as one self-contained HTML page: ``report.html`` (written by ``benchmarks.report``).

The page is rendered FROM the report's markdown text, so the two never disagree: the same
headings, paragraphs, tables and figures in the same order, bold as ``<strong>``, underline
as ``<u>``, daggers and other marks as the characters they are. It needs no network: the CSS
and a short sorting script are inline, every figure is embedded as a base64 PNG.

Only the constructs ``report.py`` writes are rendered, and any other block is an error naming
its line (so a new construct in the report cannot come out silently wrong in the page):

- ``#`` .. ``######`` headings (the first ``#`` heading is the page title; the others form
  the table of contents at the top);
- paragraphs (consecutive lines), ``- `` bullet lists, ``> `` quotes;
- pipe tables with a ``|---|---:|`` separator row (``---:``: a right-aligned, numeric column);
- ``![alt](figures/name.png)`` alone on its line (embedded, the alt text as its caption);
- inline: ``**bold**``, ``*italic*``, ```code```, ``<u>underline</u>``.

Tables are numbered ``t1``, ``t2`` ... in page order. Clicking a column header sorts the table
by it, clicking again reverses: a right-aligned column sorts by the number its cells begin with
(``0.0342 ± 0.0012†`` -> 0.0342, ``1,234.5`` -> 1234.5, ``54 / 256`` -> 54; cells without one,
``–`` or ``n/a‡``, stay last either way), largest first; any other column by its text, A to Z.
The address ``report.html#sort=t1:5`` (0-based column; ``:asc`` or ``:desc`` appended to choose
the direction) sorts a table when the page loads.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Callable

from benchmarks.errors import DataFormatError

_HEADING = re.compile(r"^(#{1,6}) (.+)$")
_SEPARATOR = re.compile(r"^\|(?: *:?-{3,}:? *\|)+$")
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+\.png)\)$")
_NUMBER = re.compile(r"^[-−]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"\*(.+?)\*")
#: markdown that starts a block (or, under a paragraph, turns it into a heading) and is not a
#: construct this renderer knows: code fences, other lists, rules, setext underlines
_INTERRUPT = re.compile(r"^(?:```|~~~|[*+] |\d+[.)] |(?:-{3,}|\*{3,}|_{3,}|={3,})\s*$)")
#: the same, and the blocks that cannot interrupt a paragraph: indented code, raw HTML
_UNKNOWN = re.compile(_INTERRUPT.pattern[:-1] + r"| {4}|\t|<)")

EXPECTED = ("a heading, a paragraph, a '- ' list, a '> ' quote, a pipe table with its '|---|' row, "
            "or a '![alt](figures/<name>.png)' image (the constructs benchmarks/report_html.py renders)")


def inline(text: str) -> str:
    """The inline markdown of one line or cell as HTML: text escaped, code spans literal. Code
    spans are set aside first, so that a bold or italic span may hold one
    (``**protocol `masked`; seed 0**``)."""
    codes: list[str] = []

    def keep(m: re.Match) -> str:
        codes.append(f"<code>{html.escape(m.group(1), quote=False)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    piece = html.escape(_CODE.sub(keep, text), quote=False)
    piece = piece.replace("&lt;u&gt;", "<u>").replace("&lt;/u&gt;", "</u>")
    piece = _ITALIC.sub(r"<em>\1</em>", _BOLD.sub(r"<strong>\1</strong>", piece))
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], piece)


def plain(text: str) -> str:
    """A cell's text without its inline marks (what the reader sees)."""
    return re.sub(r"\*+|</?u>|`", "", text).strip()


def sort_number(text: str) -> float | None:
    """The number a numeric cell begins with (its sort key); None where it has none."""
    m = _NUMBER.match(plain(text))
    return float(m.group(0).replace(",", "").replace("−", "-")) if m else None


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", plain(text).lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


def _table(rows: list[str], first_line: int, number: int) -> str:
    head = _cells(rows[0])
    aligns = [c.endswith(":") for c in _cells(rows[1])]
    if len(aligns) != len(head):
        raise DataFormatError("report.md", f"a separator row with {len(head)} columns like its header",
                              line=first_line + 1, got=rows[1])
    ths = "".join(
        f'<th scope="col" data-type="num" aria-sort="none" class="num"><button type="button">{inline(h)}</button></th>'
        if right else f'<th scope="col" data-type="text" aria-sort="none"><button type="button">{inline(h)}</button></th>'
        for h, right in zip(head, aligns))
    body = []
    for j, row in enumerate(rows[2:], start=first_line + 2):
        cells = _cells(row)
        if len(cells) != len(head):
            raise DataFormatError("report.md", f"a table row of {len(head)} cells", line=j, got=row)
        tds = []
        for c, right in zip(cells, aligns):
            if not right:
                tds.append(f"<td>{inline(c)}</td>")
                continue
            v = sort_number(c)
            key = "" if v is None else f' data-v="{v!r}"'
            tds.append(f'<td class="num"{key}>{inline(c)}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<div class="scroll"><table id="t{number}" class="sortable">\n<thead><tr>{ths}</tr></thead>\n'
            f"<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def render(markdown: str, image: Callable[[str], bytes]) -> str:
    """The HTML page of a report's markdown; ``image(src)`` gives the bytes of a linked figure
    (``src`` as written in the markdown, e.g. ``figures/popularity_ml-100k.png``)."""
    lines = markdown.split("\n")
    blocks, toc, used = [], [], set()
    title, tables, i = None, 0, 0

    def is_start(line: str) -> bool:
        return (not line.strip() or bool(_HEADING.match(line)) or line.startswith(("- ", "> ", "|"))
                or bool(_IMAGE.match(line)) or bool(_INTERRUPT.match(line)))

    while i < len(lines):
        line, n = lines[i], i + 1
        if not line.strip():
            i += 1
        elif m := _HEADING.match(line):
            level, text = len(m.group(1)), m.group(2).strip()
            if level == 1 and title is None and not blocks:
                title = plain(text)
                blocks.append(f"<h1>{inline(text)}</h1>\n<!--toc-->")
            else:
                slug = _slug(text, used)
                toc.append((level, slug, inline(text)))
                blocks.append(f'<h{level} id="{slug}">{inline(text)}</h{level}>')
            i += 1
        elif line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            rows = lines[i:j]
            if len(rows) < 2 or not _SEPARATOR.match(rows[1]):
                raise DataFormatError("report.md", "a table's header row followed by its '|---|' separator row",
                                      line=n + 1, got=rows[1] if len(rows) > 1 else "")
            tables += 1
            blocks.append(_table(rows, n, tables))
            i = j
        elif line.startswith(("- ", "> ")):
            mark, j = line[:2], i
            while j < len(lines) and lines[j].startswith(mark):
                j += 1
            if mark == "- ":
                blocks.append("<ul>\n" + "\n".join(f"<li>{inline(x[2:])}</li>" for x in lines[i:j]) + "\n</ul>")
            else:
                blocks.append("<blockquote><p>" + "\n".join(inline(x[2:]) for x in lines[i:j]) + "</p></blockquote>")
            i = j
        elif m := _IMAGE.match(line):
            alt, src = m.groups()
            data = base64.b64encode(image(src)).decode("ascii")
            blocks.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" '
                          f'data-src="{html.escape(src)}"><figcaption>{inline(alt)}</figcaption></figure>')
            i += 1
        elif _UNKNOWN.match(line):
            raise DataFormatError("report.md", EXPECTED, line=n, got=line)
        else:
            j = i + 1
            while j < len(lines) and not is_start(lines[j]):
                j += 1
            blocks.append("<p>" + "\n".join(inline(x) for x in lines[i:j]) + "</p>")
            i = j
    return _page(title or "Results", blocks, toc)


def _toc(toc: list[tuple[int, str, str]]) -> str:
    """One list of links to the headings, indented by level (``l1`` the highest level there)."""
    if not toc:
        return ""
    top = min(level for level, _, _ in toc)
    items = "\n".join(f'<li class="l{level - top + 1}"><a href="#{slug}">{text}</a></li>' for level, slug, text in toc)
    return f'<nav class="toc" aria-label="Contents"><strong>Contents</strong>\n<ul>\n{items}\n</ul></nav>'


def _page(title: str, blocks: list[str], toc: list[tuple[int, str, str]]) -> str:
    body = "\n\n".join(blocks).replace("<!--toc-->", _toc(toc), 1)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
{body}
<p class="note">Rendered from report.md. Click a column header to sort by it, again to reverse;
the address <code>report.html#sort=t1:5</code> sorts table t1 by its column 5 (0-based) on load.</p>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1f2328;
       margin: 0; background: #fff; }
main { padding: 1.5rem 2rem 3rem; }
p, ul, blockquote { max-width: 120ch; }
h1 { font-size: 1.7rem; margin: 0 0 .8rem; }
h2 { font-size: 1.3rem; border-bottom: 1px solid #d0d7de; padding-bottom: .25rem; margin-top: 2.2rem; }
h3, h4 { font-size: 1.1rem; margin-top: 1.6rem; }
code { font: .9em ui-monospace, "DejaVu Sans Mono", monospace; background: #f2f4f7; padding: .1em .3em;
       border-radius: 4px; }
blockquote { margin: 1rem 0; padding: .5rem 1rem; border-left: 4px solid #d4a72c; background: #fff8e5; }
.toc { display: inline-block; border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem 1.2rem .6rem .8rem;
       background: #f6f8fa; margin-bottom: .5rem; }
.toc ul { margin: .3rem 0 0; padding-left: 1.2rem; }
.toc li.l2 { margin-left: 1.2rem; } .toc li.l3 { margin-left: 2.4rem; } .toc li.l4 { margin-left: 3.6rem; }
.toc a { color: #0969da; text-decoration: none; }
.toc a:hover { text-decoration: underline; }
.scroll { overflow-x: auto; margin: .6rem 0 1rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; vertical-align: bottom; white-space: normal; min-width: 4.5em; }
th.num, td.num { text-align: right; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef5ff; }
th button { all: unset; cursor: pointer; font-weight: 600; display: inline-block; width: 100%; }
th button:focus-visible { outline: 2px solid #0969da; }
th button::after { content: " \\2195"; color: #8c959f; font-weight: 400; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; color: #1f2328; }
th[aria-sort="descending"] button::after { content: " \\25BC"; color: #1f2328; }
figure { margin: 1rem 0 1.5rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .9rem; }
.note { color: #57606a; font-size: .85rem; margin-top: 2.5rem; }
"""

_SCRIPT = """
(function () {
  "use strict";
  function key(td, numeric) {
    if (!numeric) return td.textContent.trim();
    var v = td.getAttribute("data-v");
    return v === null ? null : parseFloat(v);
  }
  function sortTable(table, col, dir) {
    var th = table.tHead.rows[0].cells[col];
    if (!th) return;
    var numeric = th.getAttribute("data-type") === "num";
    if (dir !== "ascending" && dir !== "descending") {
      var now = th.getAttribute("aria-sort");
      dir = now === "none" ? (numeric ? "descending" : "ascending")
                           : (now === "ascending" ? "descending" : "ascending");
    }
    var sign = dir === "ascending" ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (tr, i) {
      return {tr: tr, i: i, k: key(tr.cells[col], numeric)};
    });
    rows.sort(function (a, b) {
      if (a.k === null || b.k === null) {
        return a.k === b.k ? a.i - b.i : (a.k === null ? 1 : -1);
      }
      var c = numeric ? a.k - b.k : a.k.localeCompare(b.k, undefined, {numeric: true});
      return c !== 0 ? sign * c : a.i - b.i;
    });
    rows.forEach(function (r) { body.appendChild(r.tr); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", dir);
  }
  function fromHash() {
    var m = /^#sort=([A-Za-z0-9_-]+):(\\d+)(?::(asc|desc))?$/.exec(location.hash);
    if (!m) return;
    var table = document.getElementById(m[1]);
    if (table && table.tHead) {
      sortTable(table, parseInt(m[2], 10), m[3] ? (m[3] === "asc" ? "ascending" : "descending") : null);
    }
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.querySelector("button").addEventListener("click", function () { sortTable(table, col, null); });
    });
  });
  window.addEventListener("hashchange", fromHash);
  fromHash();
})();
"""
