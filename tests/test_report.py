"""`vecstore report`: a self-contained HTML file, checked in a real (headless) Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from .conftest import make_binary_scans, make_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _pipeline(cli, root, tmp_path, positive=False):
    assert (
        cli(
            "ingest", root, "--space", "pixels", "--space", "hog", "--labels-from-folders"
        ).exit_code
        == 0
    )
    assert cli("cluster", "--compare", "-k", "4" if positive else "10").exit_code == 0
    assert cli("propagate", "--space", "pixels").exit_code == 0
    args = ["evaluate", "--space", "pixels"] + (
        ["--positive", "cancer"] if positive else ["--truth", tmp_path / "truth.csv"]
    )
    r = cli(*args)
    assert r.exit_code == 0, r.output


def test_report_is_self_contained(digits, tmp_path, cli):
    _pipeline(cli, digits, tmp_path)
    out = tmp_path / "report.html"
    r = cli("report", "-o", out)
    assert r.exit_code == 0, r.output
    assert "400 of 400 images on the map" in r.output
    page = out.read_text()
    # no external script, stylesheet or image (plotly.js is inlined; the browser test also
    # checks that the page makes no network request at all)
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)\s*=\s*["']https?://""", page)
    assert "<script src" not in page
    data = json.loads(
        re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
    )
    assert data["space"]["name"] == "pixels" and len(data["points"]) == 400
    assert {p["cluster"] for p in data["points"]} == set(range(10))
    assert sum(1 for p in data["points"] if p["thumb"]) == 400  # small sets: every point
    assert all(p["thumb"].startswith("data:image/jpeg;base64,") for p in data["points"])
    assert len(data["grids"]) == 10 and data["evaluation"]["confusion"]["labels"][0] == "0"
    assert data["review"] == sorted(data["review"], key=lambda r: r["confidence"])
    assert {c["space"] for c in data["compare"]} == {"pixels", "hog"}
    assert out.stat().st_size < 30 * 2**20


def test_report_without_runs_and_missing_store(image_dir, tmp_path, cli):
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    r = cli("report", "-o", tmp_path / "bare.html")
    assert r.exit_code == 0, r.output
    assert "No propagation run yet" in (tmp_path / "bare.html").read_text()
    r = cli("report", "-o", tmp_path / "x.html", store=tmp_path / "none")
    assert r.exit_code == 1 and "no vecstore store" in r.output


def _browser():
    if os.environ.get("CI") and not CHROMIUM:
        pytest.fail("CI must install chromium (.ci/run does)")
    if not CHROMIUM:
        pytest.skip("no chromium on this machine (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")
    return sync_api


@pytest.mark.slow
def test_report_in_a_real_browser(tmp_path, cli):
    sync_api = _browser()
    root = make_binary_scans(tmp_path / "scans", 15, 60)
    _pipeline(cli, root, tmp_path, positive=True)
    out = tmp_path / "report.html"
    assert cli("report", "-o", out).exit_code == 0
    errors: list[str] = []
    shot = Path(os.environ.get("VECSTORE_SCREENSHOT", tmp_path / "report.png"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on(
            "console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None
        )
        requests: list[str] = []
        page.on(
            "request",
            lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None,
        )
        page.goto(out.as_uri())
        page.wait_for_function("window.vecstoreReportReady === true", timeout=60000)
        drawn = page.evaluate("""Object.fromEntries(
            [...document.querySelectorAll('.js-plotly-plot')]
            .map(d => [d.id, d.querySelectorAll('.main-svg').length
                             + d.querySelectorAll('canvas').length]))""")
        assert (
            set(drawn) == {"map", "compare", "confusion", "coverage", "pr"}
            and min(drawn.values()) > 0
        ), drawn
        assert (
            page.evaluate("document.querySelectorAll('#map canvas').length") > 0
        )  # the 3D (WebGL) map
        assert page.evaluate("document.querySelectorAll('#review tr').length") > 1
        assert "precision-recall of" in page.inner_text("#pr")
        # choosing a cluster highlights it and shows its images
        page.select_option("#cluster", "0")
        page.wait_for_timeout(300)
        assert page.evaluate("document.querySelectorAll('#grid img').length") > 0
        assert "other clusters" in page.inner_text("#map")
        # the mouse over a point shows its thumbnail and labels (2D view: SVG points to aim at)
        page.select_option("#dims", "2")
        page.select_option("#colour", "confidence")
        page.wait_for_timeout(500)
        page.locator("#map .scatterlayer .points path").first.hover(force=True)
        page.wait_for_selector("#tip img", state="visible", timeout=5000)
        tip = page.inner_text("#tip")
        assert "confidence" in tip and "expert" in tip and ".png" in tip
        page.select_option("#dims", "3")
        page.select_option("#colour", "cluster")
        page.wait_for_timeout(500)
        page.screenshot(path=str(shot))
        browser.close()
    assert errors == []
    assert requests == []  # opens offline: nothing fetched
    assert shot.stat().st_size > 10000


HOSTILE = [
    "<!--<script>",
    "<img src=x onerror=alert(1)>",
    '<a href="http://evil">x</a>',
    '"><script>alert(2)</script>',
]


def _hostile_scans(root: Path) -> Path:
    """Labels and file names that are markup: classes from folder names, two more set by hand
    (a name cannot hold a slash: `"><script>alert(2)</script>` is a folder and a file)."""
    for i in range(8):
        make_image(root / "labeled" / HOSTILE[0] / f"{HOSTILE[0]}{i}.png", seed=i)
        make_image(root / "labeled" / HOSTILE[1] / f"{HOSTILE[1]}{i}.png", seed=1000 + i)
    for i in range(24):
        name = ['"><script>alert(2)<', HOSTILE[0], HOSTILE[1]][i % 3]
        sub = f"{name}/script>{i}.png" if i % 3 == 0 else f"{name}{i}.png"
        make_image(root / "unlabeled" / sub, seed=2000 + i)
    return root


def _hostile_store(cli, root: Path) -> Path:
    """The hostile scans ingested with labels from folders, more markup labels set by hand,
    clustered, propagated and evaluated with a markup class as the positive one."""
    root = _hostile_scans(root)
    assert cli("ingest", root, "--space", "pixels", "--labels-from-folders").exit_code == 0
    for i, label in [(0, HOSTILE[2]), (3, HOSTILE[2]), (6, HOSTILE[2]), (9, HOSTILE[3])]:
        sub = f'"><script>alert(2)</script>{i}.png'
        r = cli("labels", "set", "--new-class", "--replace", root / "unlabeled" / sub, "--", label)
        assert r.exit_code == 0, r.output
    for i in (12, 15):
        sub = f'"><script>alert(2)</script>{i}.png'
        assert (
            cli("labels", "set", "--replace", root / "unlabeled" / sub, HOSTILE[3]).exit_code == 0
        )
    assert cli("cluster", "--compare", "-k", "4").exit_code == 0
    assert cli("propagate", "-k", "3").exit_code == 0
    r = cli("evaluate", "--positive", HOSTILE[2], "--folds", "2")
    assert r.exit_code == 0, r.output
    return root


@pytest.mark.slow
def test_report_with_hostile_names_and_labels_runs_no_markup(tmp_path, cli):
    sync_api = _browser()
    _hostile_store(cli, tmp_path / "scans")
    out = tmp_path / "report.html"
    assert cli("report", "-o", out).exit_code == 0
    errors: list[str] = []
    dialogs: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: None if r.url.startswith("data:") else requests.append(r.url))
        page.goto(out.as_uri())
        page.wait_for_function("window.vecstoreReportReady === true", timeout=30000)
        texts = []
        for colour, dims in [("expert", "3"), ("pseudo", "2"), ("cluster", "2")]:
            page.select_option("#colour", colour)
            page.select_option("#dims", dims)
            page.wait_for_timeout(300)
            texts += page.evaluate(
                "[...document.querySelectorAll('#map .legendtext')].map(e => e.textContent)"
            )
        page.select_option("#cluster", "0")
        page.wait_for_timeout(300)
        page.locator("#map .scatterlayer .points path").first.hover(force=True)
        page.wait_for_timeout(300)
        injected = page.evaluate("""() => {
            const X = 'http://www.w3.org/1999/xlink';
            const links = [...document.getElementsByTagName('a')].filter(a =>
                /evil/.test((a.getAttribute('href') || '') + (a.getAttributeNS(X, 'href') || '')));
            const handlers = [...document.querySelectorAll('*')].filter(e =>
                [...e.attributes].some(a => a.name.toLowerCase().startsWith('on')));
            return {links: links.length, handlers: handlers.map(e => e.outerHTML.slice(0, 80)),
                    scripts: document.getElementsByTagName('script').length,
                    imgs: [...document.images].filter(i => !i.src.startsWith('data:')).length};
        }""")
        ticks = page.evaluate(
            "[...document.querySelectorAll('#confusion .xtick text')].map(e => e.textContent)"
        )
        body = page.evaluate("document.body.innerText")
        title = page.text_content("#pr .gtitle")
        browser.close()
    assert errors == [] and dialogs == []
    assert injected == {"links": 0, "handlers": [], "scripts": 3, "imgs": 0}, injected
    assert requests == [out.as_uri()]  # nothing fetched, not even src=x
    for label in HOSTILE:
        assert f"expert {label}" in texts and f"pseudo {label}" in texts, (label, texts)
        assert label in ticks and label in body, label
    assert HOSTILE[2] in title
