"""The token viewer page in a real browser: Playwright (Python) driving Debian's Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test group) is not installed")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is missing (apt-get install -y chromium); CI installs it")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        yield browser
        browser.close()


def _colours(page) -> list[str]:
    return page.eval_on_selector_all("#output .tok", "spans => spans.map(s => getComputedStyle(s).backgroundColor)")


def _generate(server, browser, height: int, **fields: str):
    """Open the viewer, fill the form (field id -> value) for a raw-text completion and start it."""
    page = browser.new_page(viewport={"width": 1100, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    assert page.input_value("#model") == "tiny-random"
    page.fill("#prompt", "the cat sat")
    page.select_option("#endpoint", "completion")
    for name, value in fields.items():
        page.fill("#" + name, value)
    page.click("#go")
    return page, errors


def test_viewer_streams_coloured_tokens_with_tooltips(server, browser):
    page, errors = _generate(server, browser, 800, max_tokens="24", temperature="0.7", seed="3")
    page.wait_for_selector("#output .tok")  # tokens arrive while the stream runs ...
    page.wait_for_selector("#stats:not(:empty)", timeout=30_000)  # ... until the final stats
    count = page.locator("#output .tok").count()
    assert count >= 5
    assert page.inner_text("#stats").startswith(f"{count} tokens")

    # Coloured by probability: varying, non-white backgrounds.
    colours = _colours(page)
    assert all(c not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)") for c in colours)
    assert len(set(colours)) > 1

    # Hover: a tooltip with the token's top alternatives.
    token = page.locator("#output .tok").nth(3)
    token.hover()
    tooltip = page.locator("#tooltip")
    tooltip.wait_for(state="visible")
    text = tooltip.inner_text()
    assert "top alternatives" in text and "entropy" in text
    assert page.locator("#tooltip tr.chosen").count() <= 1
    assert page.locator("#tooltip tr").count() >= 5  # header + 5 alternatives
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "token-viewer.png"), full_page=True)

    # Colour by speculative source: plain decoding is all "target", one colour.
    page.select_option("#colour", "source")
    assert len(set(_colours(page))) == 1
    page.select_option("#colour", "entropy")
    assert len(set(_colours(page))) > 1
    assert errors == []


def test_viewer_shows_server_errors(server, browser):
    page = browser.new_page()
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    page.fill("#max_tokens", "100000")
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error").startswith("400:")


def test_viewer_colours_any_score_column_and_shows_an_attribution_heatmap(server, browser, tmp_path):
    import json

    import decodelab as dl

    page, errors = _generate(server, browser, 900, max_tokens="12", temperature="0", scores="margin,entropy")
    page.wait_for_selector("#stats:not(:empty)", timeout=30_000)
    # every score column of the records becomes a colour choice
    options = page.eval_on_selector_all("#colour option", "os => os.map(o => o.value)")
    assert "extra:margin" in options and "extra:entropy" in options
    page.select_option("#colour", "extra:margin")
    colours = _colours(page)
    assert len(set(colours)) > 1 and "margin" in page.inner_text("#legend")
    page.locator("#output .tok").nth(2).hover()
    assert "margin = " in page.inner_text("#tooltip")

    # attribution JSON (as `decodelab attribute --format json` writes it) -> heatmap over the prompt
    a = dl.attribute(dl.load("tiny-random"), "the cat sat", "ok!", chat=False, max_steps=3, probes=8)
    path = tmp_path / "attribution.json"
    path.write_text(json.dumps(a.as_dict()))
    page.set_input_files("#attribution-file", str(path))
    page.wait_for_selector("table.heatmap")
    assert page.locator("table.heatmap tr").count() == 1 + len(a.output_tokens)
    cells = page.eval_on_selector_all("table.heatmap td.cell", "cs => cs.map(c => getComputedStyle(c).backgroundColor)")
    assert len(cells) == len(a.output_tokens) * len(a.positions) and len(set(cells)) > 1
    assert page.locator("#attribution .prompt-heat .tok").count() == len(a.positions)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-scores-attribution.png"), full_page=True)
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": 1}')
    page.set_input_files("#attribution-file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert "not an attribution" in page.inner_text("#error")
    assert errors == []
