"""The leaderboard's HTML page in headless Chromium: loads from file://, sorts, filters, no console errors, no network.

Needs Debian's `chromium` (apt-get install -y chromium) and Playwright for Python (pip install playwright); Playwright's
own browser download is never used: we launch the system binary.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from result_factory import synthetic_tree

from cpbench.results.leaderboard import LeaderboardConfig, write_leaderboard

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CPBENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Debian chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ModuleNotFoundError:
        return "Playwright for Python is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("html")
    synthetic_tree(base / "results")
    plots = True
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        plots = False
    write_leaderboard(base / "results", base / "out", LeaderboardConfig(plots=plots))
    return (base / "out" / "index.html").resolve().as_uri()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _column(page, table: str, header: str) -> list[str]:
    return page.evaluate(
        """([table, header]) => {
            const t = document.getElementById(table);
            const heads = Array.from(t.tHead.rows[0].cells)
                .map(c => c.textContent.replace(/[\\u25B2\\u25BC]/g, '').trim());
            const i = heads.indexOf(header);
            if (i < 0) throw new Error('no column ' + header + ' in ' + heads.join('|'));
            return Array.from(t.tBodies[0].rows).filter(r => !r.hidden).map(r => r.cells[i].textContent);
        }""",
        [table, header],
    )


def test_page_loads_sorts_filters_without_errors(browser, page_url: str) -> None:
    page = browser.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: requests.append(req.url))
    page.goto(page_url)
    page.wait_for_load_state("load")

    assert page.title() == "cpbench leaderboard"
    assert page.locator("table.sortable").count() == 8  # 8 tables: the diagnostics table joined (stats)
    assert "Sample data" in page.locator("p.banner").inner_text()

    table = "t-leaderboard_lac"
    original = _column(page, table, "qa SS")
    assert len(original) == 14

    page.locator(f"#{table} thead th", has_text="qa SS").click()
    ascending = [float(v) for v in _column(page, table, "qa SS")]
    assert ascending == sorted(ascending) and ascending != [float(v) for v in original]
    assert page.locator(f"#{table} thead th", has_text="qa SS").get_attribute("aria-sort") == "ascending"

    page.locator(f"#{table} thead th", has_text="qa SS").click()
    descending = [float(v) for v in _column(page, table, "qa SS")]
    assert descending == sorted(descending, reverse=True)

    page.locator(f"#{table} thead th", has_text="Recipe").click()  # text column
    recipes = _column(page, table, "Recipe")
    assert recipes == sorted(recipes)

    page.locator(f"input[data-table='{table}']").fill("smol gptq-2bit")
    visible = _column(page, table, "Model")
    assert visible == ["smol-135m"]
    assert _column(page, table, "Recipe") == ["gptq-2bit"]
    assert page.locator(f"#{table}-count").inner_text() == "1 of 14 rows"
    page.locator(f"input[data-table='{table}']").fill("")
    assert len(_column(page, table, "Model")) == 14

    # decoupling table: signed numbers sort numerically ("-0.5" before "+0.1")
    page.locator("#t-decoupling thead th", has_text="ΔSS").first.click()
    deltas = [float(v) for v in _column(page, "t-decoupling", "ΔSS") if v]
    assert deltas == sorted(deltas) and deltas[0] < 0 < deltas[-1]

    images = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    assert all(images)

    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    page.close()


ARTIFACTS = Path(os.environ.get("CPBENCH_CI_ARTIFACTS") or Path(__file__).resolve().parents[1] / ".ci-artifacts")


def test_page_reads_well_at_1280px_and_filters_everything(browser, page_url: str) -> None:
    """Reading guide and task names present, page filters act on tables, charts and the map, charts render with
    intervals, no horizontal overflow at 1280 px; a full-page screenshot is kept as a CI artifact (not committed)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(page_url)
    page.wait_for_load_state("load")

    guide = page.locator("#guide").inner_text()
    for words in ("How to read this", "coverage", "set size", "UAcc", "hidden-risk", "inconclusive"):
        assert words.lower() in guide.lower(), words
    tasks = page.locator("#guide dl.tasks").inner_text()
    assert "Question answering (MMLU)" in tasks and "Reading comprehension (CosmosQA)" in tasks

    # the main table's columns follow the benchmark's task order, not the alphabet
    heads = page.evaluate("Array.from(document.querySelectorAll('#t-leaderboard_lac thead th'))"
                          ".map(t => t.getAttribute('data-task')).filter(Boolean)")
    order = list(dict.fromkeys(heads))
    assert order == sorted(order, key=["qa", "rc", "ci", "drs", "ds", "avg"].index), order

    # charts: inline SVG with one dot and one interval bar per cell, laid out with a real size
    svgs = page.locator("#s-charts svg")
    assert svgs.count() >= 2
    box = svgs.first.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 40
    n_rows = page.locator("#s-charts svg").first.locator("g[data-model]").count()
    assert n_rows > 0 and page.locator("#s-charts svg").first.locator("g[data-model] line").count() == n_rows
    assert page.locator("table.map td[title]").count() > 0

    # page filters: one model -> every table, chart row and map row shows only that model
    model = page.locator("#filter-model option").nth(1).inner_text()
    page.select_option("#filter-model", model)
    assert set(_column(page, "t-leaderboard_lac", "Model")) == {model}
    shown = page.evaluate("Array.from(document.querySelectorAll('#s-charts g[data-model]'))"
                          ".filter(g => g.style.display !== 'none').map(g => g.getAttribute('data-model'))")
    assert shown and set(shown) == {model}
    # task filter hides the other tasks' columns of the main tables
    page.select_option("#filter-task", "qa")
    visible = page.evaluate("Array.from(document.querySelectorAll('#t-leaderboard_lac thead th'))"
                            ".filter(t => !t.hidden && t.getAttribute('data-task'))"
                            ".map(t => t.getAttribute('data-task'))")
    assert visible and set(visible) == {"qa"}
    page.select_option("#filter-model", "")
    page.select_option("#filter-task", "")
    assert len(_column(page, "t-leaderboard_lac", "Model")) == 14

    # no horizontal overflow of the page at 1280 px (wide tables scroll inside their own box)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, width
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "leaderboard-1280.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert errors == []
    page.close()


def test_empty_analyses_collapse_to_one_line_and_ties_read_as_ties(page_url: str) -> None:
    from urllib.parse import urlparse

    text = Path(urlparse(page_url).path).read_text()
    # the synthetic tree has one sweep of several levels but no model-size series: the size effect says why
    assert "<details class=\"empty\"><summary><strong>Size effect" in text
    assert "nothing to show" in text


def test_page_fits_a_390px_phone_without_horizontal_overflow(browser, page_url: str) -> None:
    """At 390 px (a phone) nothing makes the page scroll sideways: the forest plots scale down (viewBox, width 100%),
    wide tables scroll inside their own box; and no forest-plot label is cut on the left."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(page_url)
    page.wait_for_load_state("load")
    width = page.evaluate("document.documentElement.scrollWidth")
    wide = page.evaluate("""() => Array.from(document.querySelectorAll('body *'))
        .filter(el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.right > 390.5
            && !(el.parentElement && el.parentElement.closest('.wrap, .chart')); })
        .slice(0, 5).map(el => el.tagName + '.' + el.className + ' ' + Math.round(el.getBoundingClientRect().right))""")
    assert width <= 390 and not wide, (width, wide)
    svgs = page.locator("#s-charts svg")
    assert svgs.count() >= 2
    for i in range(svgs.count()):
        box = svgs.nth(i).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390.5, box
        # every label lies inside its SVG (the plot's left margin is sized to the longest label)
        cut = svgs.nth(i).evaluate("""svg => { const b = svg.getBoundingClientRect();
            return Array.from(svg.querySelectorAll('text')).map(t => t.getBoundingClientRect())
                .filter(r => r.left < b.left - 0.5 || r.right > b.right + 0.5).length; }""")
        assert cut == 0, f"{cut} label(s) of chart {i} outside the chart"
    page.close()


def test_forest_plot_labels_are_not_cut_on_the_left(browser) -> None:
    """A long model name made its label start left of the SVG (fixed 260 px margin): the margin fits the label."""
    import pandas as pd

    from cpbench.results.leaderboard.html import _forest

    rows = pd.DataFrame([{"model": "a-rather-long-organisation-model-name-70b-instruct-v2", "recipe": r,
                          "task": "qa", "category": "unaffected", "d_acc": d, "d_acc_lo": d - 0.02,
                          "d_acc_hi": d + 0.02} for r, d in (("gptq-w4a16-g128-sym-act-order", -0.01),
                                                             ("rtn-2bit-g64", -0.2))])  # fmt: skip
    svg = _forest(rows, "acc", "Δ accuracy (points) vs the baseline", 100.0, "lac")
    for px in (1280, 390):
        page = browser.new_page(viewport={"width": px, "height": 800})
        page.set_content(f"<!doctype html><body style='margin:0'><div style='max-width:100%'>{svg}</div></body>")
        out = page.evaluate("""() => { const s = document.querySelector('svg').getBoundingClientRect();
            return Array.from(document.querySelectorAll('svg text')).map(t => t.getBoundingClientRect())
              .filter(r => r.left < s.left - 0.5 || r.right > s.right + 0.5).length
              + (s.right > innerWidth + 0.5 ? 100 : 0); }""")
        assert out == 0, (px, out)
        page.close()
