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

from cpbench.leaderboard import LeaderboardConfig, write_leaderboard

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
