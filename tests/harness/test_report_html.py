"""report.html: report.md as one self-contained page, checked as text and in a real browser.

The browser tests drive Debian's ``chromium`` headless (``--dump-dom``) on the report of a toy
run; where chromium is missing the set-up installs it with apt-get, and skips with the reason
where it cannot (not root, no apt-get, the install failing).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from benchmarks.errors import DataFormatError
from benchmarks.report import write_report
from benchmarks.report_html import render, sort_number
from benchmarks.rundir import REPORT_FILES, RunDir
from tests.harness._fake_report_run import fake_run

GOLDEN = Path(__file__).parent / "golden" / "report_fake_run.md"


def test_report_md_is_byte_identical_to_the_report_before_report_html(tmp_path):
    """report.md of the fake run is the file main's write_report wrote before report.html existed
    (tests/harness/golden/report_fake_run.md, written by benchmarks/report.py at commit 1a39fb3 on
    the same fake run in a folder named ``fake``): adding the page changed nothing in it."""
    fake_run(tmp_path / "fake")
    paths = write_report(tmp_path / "fake")
    assert list(paths) == list(REPORT_FILES)
    assert paths["report.md"].read_bytes() == GOLDEN.read_bytes()
    text = GOLDEN.read_text()
    for section in ("## Overall", "## Warm and cold", "## Popularity groups", "## Decoding", "## Throughput",
                    "## Validation split", "## Environment and reproducibility"):
        assert section in text, section
    assert "†" in text and "‡" in text and "<u>" in text and "**" in text


# --------------------------------------------------------------------------- the page as text
class _Page(HTMLParser):
    """The tables (cells' text and tags), images and headings of a page."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.headings, self.stack, self.links = [], [], [], [], []
        self._cell, self._heading = None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.stack.append(tag)
        if tag == "table":
            self.tables.append({"id": attrs.get("id"), "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = {"text": "", "tags": set(), "attrs": attrs}
            self.tables[-1]["rows"][-1].append(self._cell)
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "a":
            self.links.append(attrs.get("href"))
        elif re.fullmatch(r"h[1-6]", tag):
            self.headings.append([tag, attrs.get("id"), ""])
            self._heading = True
        if self._cell is not None and tag in ("strong", "u", "em"):
            self._cell["tags"].add(tag)

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop() != tag:
            pass
        if tag in ("td", "th"):
            self._cell = None
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        elif self._heading:
            self.headings[-1][2] += data


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _md_tables(markdown: str) -> list[list[list[str]]]:
    """report.md's tables as rows of raw cells (separator rows left out)."""
    out, current = [], None
    for line in markdown.split("\n"):
        if line.startswith("|"):
            if current is None:
                current = []
                out.append(current)
            if not re.fullmatch(r"\|(?: *:?-{3,}:? *\|)+", line):
                current.append([c.strip() for c in line.strip().strip("|").split("|")])
        else:
            current = None
    return out


def _expected_cell(raw: str) -> tuple[str, set[str]]:
    tags = set()
    if raw.startswith("**") and raw.endswith("**"):
        tags.add("strong")
    if raw.startswith("<u>") and raw.endswith("</u>"):
        tags.add("u")
    if raw.startswith("*") and not raw.startswith("**") and raw.endswith("*"):
        tags.add("em")
    return re.sub(r"\*+|</?u>", "", raw), tags


def test_the_page_has_every_table_cell_mark_section_and_figure_of_report_md(tmp_path):
    fake_run(tmp_path)
    write_report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    page_text = (tmp_path / "report.html").read_text()
    page = _parse(page_text)
    # the same tables, cell for cell, with the same bold / underline / italic and dagger marks
    md = _md_tables(markdown)
    assert len(page.tables) == len(md) == markdown.count("\n|---") > 5
    for n, (table, rows) in enumerate(zip(page.tables, md), start=1):
        assert table["id"] == f"t{n}"
        assert len(table["rows"]) == len(rows)
        for got_row, raw_row in zip(table["rows"], rows):
            assert [(c["text"].strip(), c["tags"]) for c in got_row] == [_expected_cell(r) for r in raw_row]
    for mark in "†‡":
        assert sum(c["text"].count(mark) for t in page.tables for r in t["rows"] for c in r) == \
            sum(line.count(mark) for line in markdown.split("\n") if line.startswith("|")) > 0
    assert page_text.count("†") == markdown.count("†") and page_text.count("‡") == markdown.count("‡")
    # every heading (after the title) is in the contents, linked to its id
    headings = [line.lstrip("#").strip().replace("`", "") for line in markdown.split("\n") if line.startswith("#")]
    assert [h[2].strip() for h in page.headings] == headings
    assert [f"#{h[1]}" for h in page.headings[1:]] == page.links
    # figures embedded (no file reference left): the bytes of figures/*.png
    srcs = re.findall(r"^!\[[^\]]*\]\((figures/[^)]+\.png)\)$", markdown, re.M)
    assert len(page.images) == len(srcs) >= 2
    for img, src in zip(page.images, srcs):
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1]) == (tmp_path / src).read_bytes()
    assert "http://" not in page_text and "https://" not in page_text and "<link" not in page_text
    assert not re.search(r'\ssrc="(?!data:image/png;base64,)', page_text)
    # numeric columns carry their sort key
    assert page.tables[0]["rows"][0][2]["attrs"] == {"scope": "col", "data-type": "num", "aria-sort": "none",
                                                     "class": "num"}
    assert all("data-v" in c["attrs"] or c["text"].strip() == "–" for c in
               (r[2] for r in page.tables[0]["rows"][1:]))


def test_sort_keys_of_the_report_cells():
    assert sort_number("**0.0342 ± 0.0012†**") == 0.0342
    assert sort_number("<u>0.0097</u>") == 0.0097
    assert sort_number("101,897.3") == 101897.3
    assert sort_number("121 / 256") == 121.0
    assert sort_number("5.8x") == 5.8
    assert sort_number("*0.5652*") == 0.5652
    assert sort_number("1e-05") == 1e-05
    for missing in ("–", "n/a‡", "nan", ""):
        assert sort_number(missing) is None


def test_inline_marks_and_escaping():
    page = render("# Results: x\n\nA `code <b>` and **bold**, *it*, <u>u</u>, p < 0.05 & more.\n\n"
                  "> **Warning: two protocols.** Read\n> on.\n\n- one\n- two\n", lambda src: b"")
    assert "<p>A <code>code &lt;b&gt;</code> and <strong>bold</strong>, <em>it</em>, <u>u</u>, p &lt; 0.05 &amp; more.</p>" in page
    assert "<blockquote><p><strong>Warning: two protocols.</strong> Read\non.</p></blockquote>" in page
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in page
    assert "<title>Results: x</title>" in page
    # a bold span holding a code span (the Overall table's caption), and marks inside code kept
    page = render("# x\n\n**Test split; protocol `masked`: history removed; seed 0** and `**x**`\n", lambda src: b"")
    assert "<p><strong>Test split; protocol <code>masked</code>: history removed; seed 0</strong> and <code>**x**</code></p>" in page


def test_the_contents_of_a_report_with_two_protocols():
    """A run mixing protocols: a `#` heading per protocol, its sections one level down."""
    markdown = ("# Results: both\n\n# Protocol `masked`\n\n### Overall\n\nx\n\n# Protocol `unmasked`\n\n"
                "### Overall\n\ny\n\n## Environment and reproducibility\n\nz\n")
    page = _parse(render(markdown, lambda src: b""))
    assert [h[:3] for h in page.headings] == [
        ["h1", None, "Results: both"], ["h1", "protocol-masked", "Protocol masked"], ["h3", "overall", "Overall"],
        ["h1", "protocol-unmasked", "Protocol unmasked"], ["h3", "overall-2", "Overall"],
        ["h2", "environment-and-reproducibility", "Environment and reproducibility"]]
    assert page.links == ["#protocol-masked", "#overall", "#protocol-unmasked", "#overall-2",
                          "#environment-and-reproducibility"]
    assert '<li class="l3"><a href="#overall">Overall</a></li>' in render(markdown, lambda src: b"")


@pytest.mark.parametrize("markdown, line, what", [
    ("# R\n\n```\ncode\n```\n", 3, "```"),
    ("# R\n\n1. first\n", 3, "1. first"),
    ("# R\n\ntext\n---\n", 4, "---"),
    ("# R\n\n| a | b |\n| c | d |\n", 4, "| c | d |"),
    ("# R\n\n| a | b |\n|---|---:|\n| c |\n", 5, "| c |"),
    ("# R\n\n<div>x</div>\n", 3, "<div>x</div>"),
])
def test_a_construct_the_page_does_not_render_is_an_error_naming_its_line(markdown, line, what):
    with pytest.raises(DataFormatError, match=rf"^report\.md:{line}: expected .*got {re.escape(repr(what))}"):
        render(markdown, lambda src: b"")


def test_a_missing_or_outside_figure_is_an_error(tmp_path):
    from benchmarks.errors import ConfigError

    run = RunDir(tmp_path)
    with pytest.raises(ConfigError, match="figures/none.png: the figure report.md links is missing"):
        render("# R\n\n![x](figures/none.png)\n", run.report_figure)
    with pytest.raises(ConfigError, match="expected a path under figures/"):
        render("# R\n\n![x](../secret.png)\n", run.report_figure)


# --------------------------------------------------------------------------- in a browser
def _install_chromium() -> str:
    """The chromium executable; installed with apt-get (Debian's ``chromium``) where missing,
    else the test is skipped with the reason."""
    def found():
        return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)

    if exe := found():
        return exe
    if not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and there is no apt-get to install it")
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("chromium is not installed and apt-get needs root (install Debian's `chromium` package)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    last = ""
    for steps in ([install], [["apt-get", "update"], install]):   # the package lists may be stale
        for cmd in steps:
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
            except subprocess.TimeoutExpired:
                pytest.skip(f"`{' '.join(cmd)}` ran for more than 20 minutes")
            last = ((done.stderr or done.stdout).strip().splitlines() or [""])[-1]
            if done.returncode:
                break
        if exe := found():
            return exe
    pytest.skip(f"apt-get could not install chromium: {last}")


def test_without_chromium_and_root_the_browser_tests_skip_with_the_reason(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="apt-get needs root"):
        _install_chromium()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="no apt-get"):
        _install_chromium()


@pytest.fixture(scope="module")
def chromium() -> str:
    return _install_chromium()


def dump_dom(chromium: str, page: Path, profile: Path, fragment: str = "") -> str:
    """The DOM of ``page`` after its scripts (and the load event) ran, as chromium serialises it."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", "--dump-dom", page.as_uri() + fragment]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


#: appended to a copy of report.html: after the load event it writes what the browser made of
#: the page into <pre id="probe">: the tables, the natural size of every image, the cells of
#: table t1 in their order (as the #sort address left them), and of t1 after clicking headers
PROBE = """<script>
window.addEventListener("load", function () {
  function column(id, c) {
    return Array.prototype.map.call(document.getElementById(id).tBodies[0].rows,
                                    function (tr) { return tr.cells[c].textContent.trim(); });
  }
  function click(id, c) { document.getElementById(id).tHead.rows[0].cells[c].querySelector("button").click(); }
  var out = {tables: document.querySelectorAll("table").length,
             images: Array.prototype.map.call(document.images, function (i) {
               return [i.getAttribute("data-src"), i.complete, i.naturalWidth, i.naturalHeight]; }),
             hashSorted: {method: column("t1", 1), value: column("t1", COL),
                          aria: document.getElementById("t1").tHead.rows[0].cells[COL].getAttribute("aria-sort")}};
  click("t1", 1); out.methodAsc = column("t1", 1);
  click("t1", 1); out.methodDesc = column("t1", 1);
  click("t1", COL); out.numFirst = column("t1", COL);
  click("t1", COL); out.numSecond = column("t1", COL);
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


@pytest.fixture(scope="module")
def toy_report(tmp_path_factory) -> Path:
    """The report of a toy run (tests/harness/test_report.py's: MostPop, SASRec, P5-CID on the
    toy data with cold items): tables of every section and its figures."""
    from benchmarks.data.toy import write_toy_recbole
    from benchmarks.matrix import parse_matrix
    from benchmarks.runner import run_matrix

    tmp = tmp_path_factory.mktemp("toyrun")
    entry = {**write_toy_recbole(tmp / "data", n_late=3), "split": "ratio", "k_core": 0}
    m = parse_matrix({"name": "html", "datasets": [entry], "seeds": [0],
                      "evaluation": {"ks": [5, 10], "popularity_groups": 2},
                      "methods": ["mostpop", {"name": "sasrec", "config": {"epochs": 2, "hidden": 16, "inner": 32, "n_layers": 1}},
                                  {"name": "p5-cid", "config": {"epochs": 1, "beams": 10, "identifier_config": {"n_clusters": 3, "max_leaf": 8},
                                                                 "backbone_config": {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_kv": 8, "d_ff": 32}}}]},
                     "html.yaml")
    out = tmp / "run"
    assert not run_matrix(m, out, progress=False)["failed"]
    write_report(out)
    return out


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _numeric_order(values: list[str], descending: bool) -> list[str]:
    """How the page must order a numeric column: by the number, ties in page order, cells
    without a number last."""
    keyed = [(sort_number(v), i, v) for i, v in enumerate(values)]
    have = sorted((k for k in keyed if k[0] is not None), key=lambda k: ((-k[0] if descending else k[0]), k[1]))
    return [v for _, _, v in have] + [v for k, _, v in keyed if k is None]


@pytest.mark.slow
def test_the_report_renders_and_sorts_in_chromium(toy_report, chromium, tmp_path):
    markdown = (toy_report / "report.md").read_text()
    col = 5   # t1 (the overall table): Family, Method, toy R@5, R@10, N@5, N@10
    page = tmp_path / "report.html"
    page.write_text((toy_report / "report.html").read_text().replace("</body>", PROBE.replace("COL", str(col)) + "</body>"))
    dom = dump_dom(chromium, page, tmp_path / "profile", f"#sort=t1:{col}")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    probe = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    # every table and every image of report.md rendered
    assert probe["tables"] == markdown.count("\n|---") >= 7
    srcs = re.findall(r"^!\[[^\]]*\]\((figures/[^)]+\.png)\)$", markdown, re.M)
    assert [i[0] for i in probe["images"]] == srcs and len(srcs) == 3
    for src, complete, width, height in probe["images"]:
        assert complete and width > 0 and (width, height) == _png_size((toy_report / src).read_bytes()), src
    # the #sort address sorted t1 by N@10, largest first; a header click sorts, a second reverses
    overall = _md_tables(markdown)[0][1:]
    methods = [r[1] for r in overall]
    values = [re.sub(r"\*+|</?u>", "", r[col]) for r in overall]
    assert probe["hashSorted"]["aria"] == "descending"
    assert probe["hashSorted"]["value"] == _numeric_order(values, descending=True)
    assert probe["hashSorted"]["value"] != values or len(set(values)) == 1
    assert probe["methodAsc"] == sorted(methods) and probe["methodDesc"] == sorted(methods, reverse=True)
    assert probe["numFirst"] == _numeric_order(values, descending=True)
    assert probe["numSecond"] == _numeric_order(values, descending=False)


@pytest.mark.slow
def test_the_sort_address_can_choose_the_direction(toy_report, chromium, tmp_path):
    dom = dump_dom(chromium, toy_report / "report.html", tmp_path / "profile", "#sort=t1:5:asc")
    page = _parse(dom)
    overall = page.tables[0]
    assert overall["rows"][0][5]["attrs"]["aria-sort"] == "ascending"
    assert all(c["attrs"]["aria-sort"] == "none" for i, c in enumerate(overall["rows"][0]) if i != 5)
    values = [r[5]["text"].strip() for r in overall["rows"][1:]]
    assert values == _numeric_order(values, descending=False)


def test_report_open_opens_the_page_or_says_there_is_no_browser(tmp_path, monkeypatch, capsys):
    import webbrowser

    from benchmarks.cli import main

    fake_run(tmp_path)
    opened = []

    class Browser:
        name = "testbrowser"

        def open(self, url):
            opened.append(url)
            return True

    monkeypatch.setattr(webbrowser, "get", lambda *a: Browser())
    assert main(["report", str(tmp_path), "--open"]) == 0
    assert opened == [(tmp_path / "report.html").resolve().as_uri()]
    assert f"opened {tmp_path / 'report.html'} in testbrowser" in capsys.readouterr().out

    def none(*a):
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "get", none)
    assert main(["report", str(tmp_path), "--open"]) == 0
    assert "no browser found here" in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 0 and len(opened) == 1
