"""`vecstore serve` in a real (headless) Chromium: a reviewer labels by keyboard in the
label-next and review queues, opens an image from the gallery, re-propagates from the
dashboard; markup in labels and file names stays text; no request leaves the server's origin.
Each test checks the database, not only the page."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vecstore.cli import main
from vecstore.store import Store

from .conftest import make_binary_scans
from .test_report import CHROMIUM, CHROMIUM_ARGS, HOSTILE, _browser, _hostile_store

REVIEWER = "dr-alice <b>&amp;"  # a name with markup in it: stored and shown as it is
TIMEOUT = 30000  # ms


# ---- the server ------------------------------------------------------------------------------
class Server:
    """`vecstore --store STORE serve --port PORT` in a subprocess, on a free port."""

    def __init__(self, store: Path, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.store = store
        self.origin = f"http://127.0.0.1:{port}"
        self.log = log
        cmd = [sys.executable, "-m", "vecstore.cli", "--store", str(store), "serve"]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"vecstore serve exited {self.proc.returncode}: {log.read_text()}")
            try:
                self.get("/api/summary")
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"vecstore serve did not answer: {log.read_text()}")
                time.sleep(0.2)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.origin + path, timeout=30) as r:
            return json.loads(r.read())

    def sql(self, query: str, *params) -> list[tuple]:
        con = sqlite3.connect(self.store / "vecstore.db")
        try:
            return con.execute(query, params).fetchall()
        finally:
            con.close()

    def labels_of(self, ids) -> dict[int, tuple]:
        """image id -> (label, source, chosen, who) of its expert label, for those labeled."""
        marks = ",".join("?" * len(ids))
        rows = self.sql(
            "SELECT l.image_id, l.label, l.source, l.chosen, b.who FROM labels l "
            f"LEFT JOIN label_batches b ON b.id = l.batch_id WHERE l.image_id IN ({marks})",
            *ids,
        )
        return {r[0]: r[1:] for r in rows}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _invoke(store: Path, *args) -> None:
    """`vecstore --store STORE ARGS` in-process (the `cli` fixture of conftest, for a store
    that lives as long as the module)."""
    r = CliRunner().invoke(main, ["--store", str(store), *map(str, args)])
    assert r.exit_code == 0, (args, r.output)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """One store (binary scans, the pipeline of test_report plus a learning curve) and one
    server for the tests that do not interfere with each other."""
    _browser()
    tmp = tmp_path_factory.mktemp("serve")
    root = make_binary_scans(tmp / "scans", 15, 60)
    ramp = np.linspace(1000, 4000, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(root / "unlabeled" / "deep16.png")  # 16 bits a sample
    store = tmp / "store"
    _invoke(store, "ingest", root, "--space", "pixels", "--space", "hog", "--labels-from-folders")
    _invoke(store, "cluster", "--compare", "-k", "4")
    _invoke(store, "propagate", "--space", "pixels")
    _invoke(store, "evaluate", "--space", "pixels", "--positive", "cancer")
    _invoke(store, "evaluate", "--space", "pixels", "--positive", "cancer", "--curve")
    srv = Server(store, tmp / "serve.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def chromium(server) -> Iterator:
    sync_api = _browser()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# ---- a watched page --------------------------------------------------------------------------
class Watch:
    """A page of its own browser context, every request, page error, console error and
    dialog of it recorded."""

    def __init__(self, browser, origin: str) -> None:
        self.origin = origin
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.closed = False
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page = self.page
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.set_default_timeout(TIMEOUT)

    def go(self, route: str, ready: str) -> None:
        self.page.goto(f"{self.origin}/#/{route}")
        self.ready(ready)

    def ready(self, view: str) -> None:
        # a selector, not wait_for_function: the CSP (no 'unsafe-eval') forbids the latter
        self.page.wait_for_selector(f'body[data-ready="{view}"]', state="attached")

    def current(self) -> int:
        return int(self.page.get_attribute("#queue .current", "data-id"))

    def press_and_wait(self, key: str, view: str, moved_from: int | None = None) -> None:
        """Press a key of the queue and wait until its request is answered and the page
        shows an item again (another one than ``moved_from`` when given)."""
        self.page.keyboard.press(key)
        other = f':not([data-id="{moved_from}"])' if moved_from is not None else ""
        self.page.wait_for_selector(
            f'body[data-ready="{view}"] #queue .current{other}', state="attached"
        )

    def close_and_check(self) -> None:
        """No request left the origin; no error, no dialog."""
        self.context.close()
        self.closed = True
        away = [u for u in self.requests if not u.startswith(self.origin + "/")]
        assert away == [], away
        assert self.requests, "no request recorded"
        assert self.errors == [] and self.dialogs == [], (self.errors, self.dialogs)


@pytest.fixture
def watch(chromium, server) -> Iterator[Watch]:
    w = Watch(chromium, server.origin)
    yield w
    if not w.closed:  # the test failed before it checked the page
        w.context.close()


def _set_reviewer(w: Watch, name: str) -> None:
    w.page.fill("#reviewer", name)
    w.page.press("#reviewer", "Enter")  # leaves the field: the queue keys work again
    assert w.page.evaluate("localStorage.getItem('vecstore.reviewer')") == name


# ---- tests -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_label_next_by_keyboard(server, watch):
    classes = server.get("/api/summary")["classes"]
    assert classes == ["cancer", "normal"]
    watch.go("next", "next")
    _set_reviewer(watch, REVIEWER)
    assert "1 cancer" in watch.page.inner_text(".keys")
    # a key typed in a text field is the field's: no label
    first, before = watch.current(), server.sql("SELECT count(*) FROM labels")
    watch.page.click("#reviewer")
    watch.page.keyboard.press("1")
    watch.page.wait_for_timeout(300)
    assert watch.current() == first and server.sql("SELECT count(*) FROM labels") == before
    _set_reviewer(watch, REVIEWER)
    given: dict[int, str] = {}
    for i in range(5):
        iid = watch.current()
        assert iid not in given
        key = "1" if i % 2 == 0 else "2"
        watch.press_and_wait(key, "next", moved_from=iid)
        given[iid] = classes[int(key) - 1]
    assert watch.page.inner_text(".counter").startswith("6 / ")
    rows = server.labels_of(list(given))
    assert rows == {i: (label, "review", "suggested", REVIEWER) for i, label in given.items()}
    assert REVIEWER in watch.page.inner_text("#status")  # who the server recorded, as text
    watch.close_and_check()


@pytest.mark.slow
def test_review_queue_accept_correct_and_undo(server, watch, tmp_path):
    classes = server.get("/api/summary")["classes"]
    watch.go("review", "review")
    _set_reviewer(watch, "rev-bob")
    total = server.get("/api/queue/review?limit=1")["total"]
    assert total >= 5
    assert watch.page.inner_text(".counter") == f"1 / {total}"
    shot = Path(os.environ.get("VECSTORE_SCREENSHOT_REVIEW", tmp_path / "review.png"))
    watch.page.wait_for_selector("#queue .current .big img", state="visible")
    watch.page.wait_for_selector("#neighbours .card")
    watch.page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    # the arrows move without labeling
    first = watch.current()
    watch.press_and_wait("ArrowRight", "review", moved_from=first)
    assert watch.page.inner_text(".counter") == f"2 / {total}"
    watch.press_and_wait("ArrowLeft", "review")
    assert watch.current() == first and server.labels_of([first]) == {}
    done: list[tuple[int, str, str]] = []  # (image, pseudo-label shown, label given)
    for i in range(5):
        iid = watch.current()
        pseudo = watch.page.inner_text("#queue .current .pseudo")
        assert pseudo in classes
        assert server.labels_of([iid]) == {}  # a flagged pseudo-label: no expert label yet
        if i < 3:
            key, given = "Enter", pseudo
        else:
            given = next(c for c in classes if c != pseudo)  # its digit, then its letter
            key = str(classes.index(given) + 1) if i == 3 else given[0].upper()
        watch.press_and_wait(key, "review", moved_from=iid)
        done.append((iid, pseudo, given))
    rows = server.labels_of([d[0] for d in done])
    assert rows == {iid: (given, "review", "review", "rev-bob") for iid, _, given in done}
    assert [given == pseudo for _, pseudo, given in done] == [True] * 3 + [False] * 2
    last = done[-1][0]
    watch.press_and_wait("u", "review")
    assert watch.current() == last  # back on the item undone
    assert server.labels_of([d[0] for d in done]) == {
        iid: (given, "review", "review", "rev-bob") for iid, _, given in done[:4]
    }
    assert "undid batch" in watch.page.inner_text("#status")
    # another writer holds the store: the label is refused (409), said so, nothing changes
    with Store.open(server.store, write=True, purpose="test: an ingest"):
        iid = watch.current()
        watch.page.keyboard.press("Enter")
        watch.page.wait_for_selector("#status.busy")
        watch.ready("review")
        assert "test: an ingest running" in watch.page.inner_text("#status")
        assert watch.current() == iid and server.labels_of([iid]) == {}
    refused = [e for e in watch.errors if "409 (Conflict)" in e]
    assert len(refused) == 1, watch.errors  # the browser's own note of the refused request
    watch.errors.remove(refused[0])
    kinds = server.sql(
        "SELECT b.kind, b.who FROM label_batches b ORDER BY b.id DESC LIMIT 2"
    )  # the undo, then the batch it undid (marked undone)
    assert kinds[0] == ("undo", "rev-bob") and kinds[1][0] == "set"
    watch.close_and_check()


@pytest.mark.slow
def test_gallery_card_opens_image_and_neighbours(server, watch):
    watch.go("gallery", "gallery")
    total = server.get("/api/summary")["images"]
    assert watch.page.inner_text(".pager .count") == f"1–60 of {total}"
    assert watch.page.locator("#grid .card").count() == 60
    # a filter: the pseudo-labels only, and the page says so
    watch.page.select_option("select[name=source]", "propagated")
    watch.ready("gallery")
    caps = watch.page.locator("#grid .card .cap:first-of-type").all_inner_texts()
    assert caps and all(" pseudo" in c for c in caps), caps
    card = watch.page.locator("#grid .card").nth(2)
    iid = int(card.get_attribute("data-id"))
    card.click()
    watch.ready("image")
    assert watch.page.url.endswith(f"#/image/{iid}")
    name = server.get(f"/api/images/{iid}")["name"]
    assert watch.page.inner_text(".info h2") == name
    assert watch.page.locator("#neighbours .card").count() >= 1
    sims = watch.page.locator("#neighbours .card").all_inner_texts()
    assert all("similarity" in s for s in sims), sims
    img = watch.page.locator("#full img")
    img.wait_for(state="visible")
    watch.page.wait_for_selector("#full img[style*=width]", state="attached")  # fitted
    w0 = img.bounding_box()["width"]
    watch.page.click("button[title='zoom in']")
    assert img.bounding_box()["width"] > w0 * 1.2
    assert watch.page.locator(".probs tr").count() == 2
    # "find similar scans" for a file from outside (here the bytes of a stored image: the
    # server finds that image's neighbours, itself left out)
    query = server.store.parent / "scans" / "unlabeled" / "u3.png"
    items = server.get("/api/images?limit=500")["items"]
    same = next(i["id"] for i in items if i["name"] == "u3.png")
    watch.page.set_input_files("#query-file", str(query))
    watch.page.wait_for_selector(".similar h3:has-text('uploaded u3.png')")
    shown = [int(c.get_attribute("data-id")) for c in watch.page.locator("#neighbours .card").all()]
    hits = server.get(f"/api/images/{same}/neighbours?k=8")["items"]
    assert shown == [h["id"] for h in hits] and same not in shown
    # a neighbour's card opens its own page
    other = watch.page.locator("#neighbours .card").nth(1)
    oid = int(other.get_attribute("data-id"))
    other.click()
    watch.ready("image")
    assert watch.page.url.endswith(f"#/image/{oid}")
    watch.close_and_check()


@pytest.mark.slow
def test_sixteen_bit_image_has_window_level(server, watch):
    items = server.get("/api/images?limit=500")["items"]
    deep = next(i["id"] for i in items if i["name"] == "deep16.png")
    plain = next(i["id"] for i in items if i["name"] == "u0.png")
    watch.go(f"image/{plain}", "image")
    assert watch.page.locator("#wl-center").count() == 0  # 8 bits: no window/level
    watch.go(f"image/{deep}", "image")
    assert "16-bit" in watch.page.inner_text(".facts")
    for slider, value in [("#wl-center", 2000), ("#wl-width", 500)]:
        watch.page.locator(slider).evaluate(
            "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", value
        )
    img = watch.page.locator("#full img[src*='center=2000'][src*='width=500']")
    img.wait_for(state="attached")
    assert img.evaluate("(i) => i.decode().then(() => i.naturalWidth)") == 32
    assert any("/full?center=2000&width=500" in u for u in watch.requests)
    watch.close_and_check()


@pytest.mark.slow
def test_dashboard_repropagates(server, watch):
    before = server.get("/api/summary")
    watch.go("dashboard", "dashboard")
    n_expert = int(watch.page.inner_text("#n-expert"))
    assert n_expert == sum(c["count"] for c in before["counts"] if c["source"] == "expert")
    assert watch.page.inner_text("#n-pseudo") == str(before["pseudo"])
    assert watch.page.inner_text("#n-flagged") == str(before["flagged"])
    assert watch.page.locator("#curve .main-svg").count() > 0  # the learning curve, drawn
    assert "cancer" in watch.page.inner_text("#promise")
    run = before["propagation"]["run_id"]
    # two more expert labels, given on the image pages (the class buttons)
    pseudo = server.get("/api/images?source=propagated&limit=2")["items"]
    for item in pseudo:
        watch.go(f"image/{item['id']}", "image")
        watch.page.click(f".labels button:text-is('{item['second_label']}')")
        watch.page.wait_for_selector(f"#status.ok:has-text('{item['name']}')")
        watch.ready("image")
    assert {i: r[0] for i, r in server.labels_of([p["id"] for p in pseudo]).items()} == {
        p["id"]: p["second_label"] for p in pseudo
    }
    watch.go("dashboard", "dashboard")
    watch.page.click("#repropagate")
    watch.page.wait_for_selector("#job.done")
    watch.ready("dashboard")
    assert "propagate job" in watch.page.inner_text("#job")
    assert int(watch.page.inner_text("#n-expert")) == n_expert + 2
    after = server.get("/api/summary")
    assert after["propagation"]["run_id"] > run
    assert f"run {after['propagation']['run_id']}," in watch.page.inner_text("#propagation")
    assert watch.page.inner_text("#n-pseudo") == str(after["pseudo"]) == str(before["pseudo"] - 2)
    watch.close_and_check()


@pytest.mark.slow
def test_hostile_names_and_labels_stay_text(tmp_path, cli, chromium):
    _hostile_store(cli, tmp_path / "scans")
    srv = Server(tmp_path / "store", tmp_path / "serve.log")
    try:
        w = Watch(chromium, srv.origin)
        page = w.page
        w.go("gallery", "gallery")
        texts = [page.inner_text("main")]
        # the label filter with a hostile label (sent encoded, shown as text)
        page.select_option("select[name=label]", HOSTILE[1])
        w.ready("gallery")
        caps = page.locator("#grid .card .cap:first-of-type").all_inner_texts()
        assert caps and all(c.startswith(HOSTILE[1]) for c in caps), caps
        texts.append(page.inner_text("main"))
        page.locator("#grid .card").first.click()
        w.ready("image")
        texts.append(page.inner_text("main"))
        w.go("review", "review")
        texts.append(page.inner_text("main"))
        w.go("next", "next")
        texts.append(page.inner_text("main"))
        w.go("dashboard", "dashboard")
        texts.append(page.inner_text("main"))
        injected = page.evaluate("""() => {
            const links = [...document.getElementsByTagName('a')].filter(a =>
                /evil/.test(a.getAttribute('href') || ''));
            const handlers = [...document.querySelectorAll('*')].filter(e =>
                [...e.attributes].some(a => a.name.toLowerCase().startsWith('on')));
            return {links: links.length, handlers: handlers.map(e => e.outerHTML.slice(0, 80)),
                    scripts: document.getElementsByTagName('script').length,
                    imgs: [...document.images].map(i => i.getAttribute('src'))
                        .filter(s => !s.startsWith('/api/images/'))};
        }""")
        w.close_and_check()
    finally:
        srv.stop()
    assert injected == {"links": 0, "handlers": [], "scripts": 2, "imgs": []}, injected
    body = "\n".join(texts)
    for label in HOSTILE:
        assert label in body, label
    assert '"><script>alert(2)<' in body  # a file name (a folder of that name holds it)
