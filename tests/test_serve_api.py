"""`vecstore serve`: the JSON API, driven in-process with FastAPI's TestClient over a small
binary store (normal / cancer, propagated and evaluated with --positive cancer, metadata,
one 16-bit image, one file named like markup). Every answer is checked against the database
itself where it can be: rows, who and when of each change, runs."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from vecstore.cli import main
from vecstore.web import ServeOptions, create_app
from vecstore.web import service as service_module

from .conftest import make_image
from .test_reliability import HOLD_LOCK

with warnings.catch_warnings():  # starlette's note about httpx's successor, not ours
    warnings.filterwarnings("ignore", message=".*httpx.*")
    from fastapi.testclient import TestClient

BASE = "http://127.0.0.1:8000"  # the Guard wants a loopback Host on ServeOptions.port
WRITE = {"X-Vecstore": "1"}  # the CSRF header every POST / DELETE carries
HOSTILE_FILE = "<img src=x onerror=alert(1)>.png"
HOSTILE_LABEL = '"><script>alert(2)</script>'
DEEP = "deep16.png"
INDEX_HTML = Path(__file__).parent.parent / "vecstore" / "web" / "static" / "index.html"


# ---- the store ----------------------------------------------------------------------------------
def _scan(path: Path, seed: int, stripes: float, size: int = 32) -> None:
    """Blobs mixed with horizontal stripes (``stripes`` of 1: stripes only): the more stripes,
    the more 'cancer'; the mixtures in between keep some pseudo-labels unsure (flagged)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    blobs = np.zeros((size, size))
    for _ in range(3):
        cy, cx, r = *rng.uniform(0, size, 2), rng.uniform(size / 8, size / 3)
        blobs += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    st = 0.5 + 0.5 * np.sin(yy * rng.uniform(0.8, 1.2) + rng.uniform(0, 6.28))
    a = stripes * st + (1 - stripes) * blobs / blobs.max() + rng.normal(0, 0.05, (size, size))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8), "L").save(path)


def _scans(root: Path) -> dict[str, dict[str, str]]:
    """labeled/normal (8), labeled/cancer (8), unlabeled (30 + a 16-bit gray image + a file
    named like markup); returns the metadata written for each file name."""
    for i in range(8):
        _scan(root / "labeled" / "normal" / f"n{i}.png", i, 0.3 * (i % 2))
        _scan(root / "labeled" / "cancer" / f"c{i}.png", 100 + i, 1 - 0.3 * (i % 2))
    for i in range(30):
        _scan(root / "unlabeled" / f"u{i}.png", 200 + i, (i % 10) / 9)
    deep = np.linspace(0, 4000, 64 * 64).reshape(64, 64).astype("<u2")  # 16-bit: 0..4000
    Image.frombytes("I;16", (64, 64), deep.tobytes()).save(root / "unlabeled" / DEEP)
    make_image(root / "unlabeled" / HOSTILE_FILE, seed=77)
    return {
        p.name: {"site": ("north", "south", "east")[k % 3], "age": str(40 + k)}
        for k, p in enumerate(sorted(root.rglob("*.png")))
    }


def _cli(store: Path, *args: Any) -> str:
    r = CliRunner().invoke(main, ["--store", str(store), *map(str, args)])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(autouse=True)
def fast_tables(monkeypatch):
    """Every review-table build counts as fast, whatever the machine's load: a loaded CI
    machine could take a small store's build over SLOW_TABLE_S and answer a held table while
    it rebuilds behind (the tests of that mode set SLOW_TABLE_S to 0 themselves)."""
    monkeypatch.setattr(service_module, "SLOW_TABLE_S", 3600.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> SimpleNamespace:
    """The store, built once: ingest (folders as labels, metadata CSV), cluster, propagate,
    evaluate --positive cancer. Tests that write take a copy (``fresh``)."""
    tmp = tmp_path_factory.mktemp("serve")
    root, store = tmp / "scans", tmp / "store"
    meta = _scans(root)
    with open(tmp / "meta.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "site", "age"])
        w.writerows([name, m["site"], m["age"]] for name, m in meta.items())
    _cli(
        store,
        "ingest",
        root,
        "--space",
        "pixels",
        "--labels-from-folders",
        "--metadata",
        tmp / "meta.csv",
    )
    _cli(store, "cluster", "-k", "4")
    _cli(store, "propagate", "--space", "pixels")
    _cli(store, "evaluate", "--space", "pixels", "--positive", "cancer")
    ids = {Path(p).name: i for i, p in _rows(store, "SELECT id, path FROM images")}
    assert len(ids) == 48
    return SimpleNamespace(root=root, store=store, meta=meta, ids=ids)


def _rows(store: Path, sql: str, *params: Any) -> list[tuple]:
    con = sqlite3.connect(store / "vecstore.db")
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def _client(store: Path, **options: Any) -> TestClient:
    return TestClient(create_app(store, ServeOptions(**options)), base_url=BASE)


@pytest.fixture(scope="module")
def client(built) -> TestClient:
    """One service over the module's store, for the tests that only read."""
    with _client(built.store) as c:
        yield c


@pytest.fixture
def fresh(built, tmp_path) -> SimpleNamespace:
    """A copy of the store (its images stay where they are) and a service over it."""
    store = tmp_path / "store"
    shutil.copytree(built.store, store)
    with _client(store) as c:
        yield SimpleNamespace(
            c=c, store=store, ids=built.ids, root=built.root, q=lambda *a: _rows(store, *a)
        )


def _all(c: TestClient, **params: Any) -> dict[str, Any]:
    r = c.get("/api/images", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()


def _ids(answer: dict[str, Any]) -> set[int]:
    return {it["id"] for it in answer["items"]}


def _recent(at: Any) -> bool:
    """A time (stored or answered, UTC) within the last minute."""
    t = datetime.fromisoformat(str(at))
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return abs(datetime.now(timezone.utc) - t) < timedelta(minutes=1)


def _png(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return np.asarray(img)


def _label_state(q, image_id: int) -> list[tuple]:
    return q("SELECT label, source, chosen, review_reason FROM labels WHERE image_id = ?", image_id)


def _snapshot(q) -> tuple:
    """Everything a write may change: labels, batches, events, runs."""
    return (
        q("SELECT * FROM labels ORDER BY id"),
        q("SELECT * FROM label_batches ORDER BY id"),
        q("SELECT COUNT(*) FROM label_events"),
        q("SELECT id, kind, status FROM runs ORDER BY id"),
    )


# ---- the dashboard -----------------------------------------------------------------------------
def test_summary_counts_promise_and_flagged(client, built):
    s = client.get("/api/summary").json()
    assert s["images"] == 48 == _all(client)["total"]
    assert sum(c["count"] for c in s["counts"]) == s["images"]
    none = sum(c["count"] for c in s["counts"] if c["source"] == "none")
    assert s["expert"] + s["pseudo"] + none == s["images"]
    assert s["expert"] == 16 == _rows(built.store, "SELECT COUNT(*) FROM labels")[0][0]
    assert s["positive"] == "cancer" and s["classes"] == ["cancer", "normal"]
    assert s["promise"]["label"] == "cancer" and s["promise"]["reason"]
    assert isinstance(s["promise"]["holds"], bool)
    last_prop = _rows(built.store, "SELECT MAX(id) FROM runs WHERE kind = 'propagate'")[0][0]
    assert s["propagation"]["run_id"] == last_prop and s["spaces"] == ["pixels"]
    flagged = _all(client, needs_review="true", source="propagated")
    assert s["flagged"] == flagged["total"] == len(flagged["items"]) > 0
    assert all(it["needs_review"] and it["source"] == "propagated" for it in flagged["items"])
    assert client.get("/api/queue/review", params={"limit": 500}).json()["total"] == s["flagged"]


# ---- the gallery: filters, sorting, pages ------------------------------------------------------
def test_filters_return_only_matching_images_and_the_right_total(client, built):
    every = _all(client)["items"]
    assert len(every) == 48
    labels = dict(_rows(built.store, "SELECT image_id, label FROM labels"))
    run = _rows(built.store, "SELECT MAX(id) FROM runs WHERE kind = 'propagate'")[0][0]
    pseudo = dict(
        _rows(built.store, "SELECT image_id, label FROM predictions WHERE run_id = ?", run)
    )
    clusters = dict(
        _rows(
            built.store,
            "SELECT image_id, cluster FROM cluster_assignments WHERE run_id = "
            "(SELECT MAX(id) FROM runs WHERE kind = 'cluster')",
        )
    )
    in_force = {**pseudo, **labels}
    cases = [
        ({"label": "cancer"}, {i for i, lab in in_force.items() if lab == "cancer"}),
        ({"label": "normal"}, {i for i, lab in in_force.items() if lab == "normal"}),
        ({"expert": "cancer"}, {i for i, lab in labels.items() if lab == "cancer"}),
        ({"source": "expert"}, set(labels)),
        ({"source": "propagated"}, set(pseudo) - set(labels)),
        ({"source": "none"}, set(built.ids.values()) - set(pseudo) - set(labels)),
        (
            {"pseudo_label": "normal"},
            {i for i, lab in pseudo.items() if lab == "normal" and i not in labels},
        ),
        ({"cluster": 2}, {i for i, c in clusters.items() if c == 2}),
        ({"needs_review": "true"}, {it["id"] for it in every if it["needs_review"]}),
        ({"needs_review": "false"}, {it["id"] for it in every if not it["needs_review"]}),
    ]
    for params, expected in cases:
        assert expected or params == {"source": "none"}, params  # a case that selects some
        got = _all(client, **params)
        assert _ids(got) == expected and got["total"] == len(expected), params
    assert _all(client, needs_review="true")["total"] > 0
    assert _all(client, needs_review="false")["total"] > 0
    assert _all(client, pseudo_label="normal")["total"] > 0
    # metadata: where=COLUMN=VALUE, several ANDed
    name = {i: n for n, i in built.ids.items()}
    north = {i for n, i in built.ids.items() if built.meta[n]["site"] == "north"}
    got = _all(client, where="site=north")
    assert _ids(got) == north and got["total"] == len(north) > 0
    one = next(iter(sorted(north)))
    age = built.meta[name[one]]["age"]
    both = _all(client, where=["site=north", f"age={age}"])
    assert _ids(both) == {one} and both["total"] == 1
    assert _all(client, where="site=nowhere")["total"] == 0


def test_sort_and_pages(client):
    items = _all(client, sort="p_positive", order="desc")["items"]
    p = [it["p"]["cancer"] for it in items]
    assert len(p) == 48 and p == sorted(p, reverse=True) and p[0] > p[-1]
    conf = [it["confidence"] for it in _all(client, sort="confidence")["items"]]
    assert conf == sorted(conf)
    seen: list[int] = []
    for offset in range(0, 48, 7):
        page = client.get("/api/images", params={"offset": offset, "limit": 7}).json()
        assert page["total"] == 48 and page["offset"] == offset and page["limit"] == 7
        assert len(page["items"]) == min(7, 48 - offset)
        seen += [it["id"] for it in page["items"]]
    assert len(seen) == len(set(seen)) == 48  # the pages partition the set, in id order
    assert seen == sorted(seen)
    assert client.get("/api/images", params={"offset": 48}).json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"sort": "bogus"},
        {"order": "sideways"},
        {"source": "guess"},
        {"where": "nonsense"},
        {"where": "=north"},
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
def test_bad_image_queries_are_422(client, params):
    r = client.get("/api/images", params=params)
    assert r.status_code == 422 and r.json()["detail"], r.text


# ---- one image, its pixels, its neighbours -----------------------------------------------------
def test_one_image_record(client, built):
    iid = built.ids["c0.png"]
    r = client.get(f"/api/images/{iid}")
    assert r.status_code == 200
    rec = r.json()
    assert rec["id"] == iid and rec["name"] == "c0.png" and rec["path"].endswith("c0.png")
    assert rec["label"] == rec["expert"] == "cancer" and rec["source"] == "expert"
    assert rec["p"] == {"cancer": 1.0, "normal": 0.0}
    assert rec["metadata"] == built.meta["c0.png"]
    assert rec["size"] == [32, 32] and rec["bits"] == 8 and rec["mode"] == "L"
    assert rec["range"] is None
    assert rec["expert_detail"]["source"] == "folder" and rec["expert_detail"]["chosen"] == "folder"
    assert [(h["kind"], h["new_label"]) for h in rec["history"]] == [("folder", "cancer")]
    u = client.get(f"/api/images/{built.ids['u3.png']}").json()
    assert u["expert"] is None and u["source"] == "propagated" and u["history"] == []
    assert u["label"] in ("cancer", "normal") and abs(sum(u["p"].values()) - 1) < 1e-3
    assert u["metadata"] == built.meta["u3.png"]
    for path in ("", "/thumb", "/full", "/neighbours"):
        r = client.get(f"/api/images/99999{path}")
        assert r.status_code == 404 and "99999" in r.json()["detail"], path
    assert client.get("/api/images/abc").status_code == 422


def test_thumb_and_full_are_png(client, built):
    iid = built.ids["n1.png"]
    r = client.get(f"/api/images/{iid}/thumb", params={"size": 16})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert max(_png(r.content).shape[:2]) == 16
    r = client.get(f"/api/images/{iid}/full")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert _png(r.content).shape[:2] == (32, 32)
    original = np.asarray(Image.open(built.root / "labeled" / "normal" / "n1.png"))
    assert np.array_equal(_png(r.content), original)  # an 8-bit image as it is
    assert client.get(f"/api/images/{iid}/thumb", params={"size": 4}).status_code == 422


def test_sixteen_bit_image_is_windowed(client, built):
    iid = built.ids[DEEP]
    rec = client.get(f"/api/images/{iid}").json()
    assert rec["bits"] == 16 and rec["size"] == [64, 64] and rec["range"] == [0, 4000]
    thumb = client.get(f"/api/images/{iid}/thumb")
    assert thumb.headers["content-type"] == "image/png" and _png(thumb.content).dtype == np.uint8
    whole = _png(client.get(f"/api/images/{iid}/full").content)
    narrow = _png(
        client.get(f"/api/images/{iid}/full", params={"center": 2000, "width": 200}).content
    )
    assert whole.dtype == narrow.dtype == np.uint8 and whole.shape == narrow.shape == (64, 64)
    assert whole.min() == 0 and whole.max() == 255  # the image's own range spans black..white

    def saturated(a: np.ndarray) -> float:
        return float(((a == 0) | (a == 255)).mean())

    assert saturated(whole) < 0.01 and saturated(narrow) > 0.9  # 0..1900 and 2100..4000 clipped
    assert not np.array_equal(whole, narrow)


def test_missing_file_is_404_not_500(client, built):
    iid = built.ids["u7.png"]
    path = built.root / "unlabeled" / "u7.png"
    aside = path.with_suffix(".aside")
    path.rename(aside)
    try:
        for sub in ("", "/thumb", "/full"):
            r = client.get(f"/api/images/{iid}{sub}")
            assert r.status_code == 404, (sub, r.status_code, r.text)
            assert "missing" in r.json()["detail"]
    finally:
        aside.rename(path)
    assert client.get(f"/api/images/{iid}/thumb").status_code == 200


def test_neighbours(client, built):
    iid = built.ids["u5.png"]
    r = client.get(f"/api/images/{iid}/neighbours", params={"k": 5})
    assert r.status_code == 200
    got = r.json()
    items = got["items"]
    assert got["space"] == "pixels" and len(items) == 5
    assert iid not in {h["id"] for h in items}
    sims = [h["similarity"] for h in items]
    assert sims == sorted(sims, reverse=True) and [h["rank"] for h in items] == [1, 2, 3, 4, 5]
    table = {it["id"]: it for it in _all(client)["items"]}
    for h in items:
        assert h["label"] == table[h["id"]]["label"] and h["source"] == table[h["id"]]["source"]
        assert h["name"] == Path(h["path"]).name
    default = client.get(f"/api/images/{iid}/neighbours").json()["items"]
    assert len(default) == ServeOptions().neighbours
    assert client.get(f"/api/images/{iid}/neighbours", params={"k": 0}).status_code == 422
    assert client.get(f"/api/images/{iid}/neighbours", params={"k": 101}).status_code == 422
    assert client.get("/api/images/99999/neighbours", params={"k": 3}).status_code == 404


def test_query_by_upload(client, built):
    iid = built.ids["u8.png"]
    path = built.root / "unlabeled" / "u8.png"
    r = client.post(
        "/api/query",
        files={"file": ("mine.png", path.read_bytes(), "image/png")},
        data={"k": "3"},
        headers=WRITE,
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["query"] == "upload mine.png" and got["space"] == "pixels"
    assert got["query_id"] == iid  # its bytes are a stored image: said so
    assert len(got["items"]) == 3
    assert all(h["label"] in ("cancer", "normal") and h["source"] for h in got["items"])
    # the same bytes are the stored image itself: left out, as its neighbours are
    near = client.get(f"/api/images/{iid}/neighbours", params={"k": 3}).json()["items"]
    assert [h["id"] for h in got["items"]] == [h["id"] for h in near]
    # the same picture, one pixel changed: another file, whose nearest image is u8
    a = np.asarray(Image.open(path)).copy()
    a[0, 0] ^= 1
    buf = io.BytesIO()
    Image.fromarray(a, "L").save(buf, "PNG")
    r = client.post("/api/query", files={"file": ("near.png", buf.getvalue())}, headers=WRITE)
    assert r.status_code == 200, r.text
    top = r.json()["items"][0]
    assert top["id"] == iid and top["similarity"] > 0.999 and top["name"] == "u8.png"
    assert len(r.json()["items"]) == 8  # k's default
    # not an image: a clear 4xx, never a 500
    r = client.post(
        "/api/query", files={"file": ("x.png", b"just some text", "image/png")}, headers=WRITE
    )
    assert r.status_code == 422 and "not an image" in r.json()["detail"], r.text
    assert "x.png" in r.json()["detail"] and "/tmp" not in r.json()["detail"]
    r = client.post("/api/query", files={"file": ("x.png", b"", "image/png")}, headers=WRITE)
    assert 400 <= r.status_code < 500 and r.json()["detail"]
    r = client.post("/api/query", data={"k": "3"}, headers=WRITE)  # no file at all
    assert r.status_code == 422


def test_upload_over_the_cap_is_413(built):
    with _client(built.store, max_upload=1000) as c:
        r = c.post(
            "/api/query", files={"file": ("big.png", b"\x89PNG" + b"0" * 1996)}, headers=WRITE
        )
        assert r.status_code == 413 and "1000" in r.json()["detail"]
        small = _png_bytes(8)
        assert len(small) < 1000
        r = c.post("/api/query", files={"file": ("s.png", small)}, headers=WRITE)
        assert r.status_code == 200, r.text


def _png_bytes(size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), 128, np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


# ---- labels: set, remove, undo -----------------------------------------------------------------
def test_set_label_is_recorded_as_review_with_reviewer_and_time(fresh):
    c, q = fresh.c, fresh.q
    iid = fresh.ids["u0.png"]
    before = c.get(f"/api/images/{iid}").json()
    assert before["expert"] is None and before["source"] == "propagated"
    r = c.post(
        f"/api/images/{iid}/label", json={"label": "cancer"}, headers={**WRITE, "X-Reviewer": "Ada"}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["image_id"] == iid and out["label"] == "cancer" and out["previous"] is None
    assert out["who"] == "Ada" and _recent(out["at"])
    [(label, source, chosen, created, batch)] = q(
        "SELECT label, source, chosen, created_at, batch_id FROM labels WHERE image_id = ?", iid
    )
    assert (label, source, chosen, batch) == ("cancer", "review", "review", out["batch"])
    assert _recent(created)
    [(kind, who, bsource, bcreated)] = q(
        "SELECT kind, who, source, created_at FROM label_batches WHERE id = ?", out["batch"]
    )
    assert (kind, who, bsource) == ("set", "Ada", "review") and _recent(bcreated)
    # the running service shows it at once
    after = c.get(f"/api/images/{iid}").json()
    assert after["expert"] == after["label"] == "cancer" and after["source"] == "expert"
    assert after["expert_detail"]["who"] == "Ada" and after["expert_detail"]["source"] == "review"
    assert after["history"][-1]["batch"] == out["batch"] and after["history"][-1]["who"] == "Ada"
    assert iid in _ids(_all(c, expert="cancer"))
    # given from the label-next queue: chosen 'suggested'
    other = fresh.ids["u1.png"]
    r = c.post(
        f"/api/images/{other}/label", json={"label": "normal", "queue": "next"}, headers=WRITE
    )
    assert r.status_code == 200
    assert _label_state(q, other) == [("normal", "review", "suggested", None)]
    r = c.post(
        f"/api/images/{other}/label", json={"label": "normal", "queue": "somewhere"}, headers=WRITE
    )
    assert r.status_code == 422


def test_label_refusals_write_nothing(fresh):
    c, q = fresh.c, fresh.q
    iid = fresh.ids["u2.png"]
    before = _snapshot(q)
    r = c.post(f"/api/images/{iid}/label", json={"label": "cancer"})  # no X-Vecstore
    assert r.status_code == 403 and "X-Vecstore" in r.json()["detail"]
    assert c.delete(f"/api/images/{fresh.ids['c0.png']}/label").status_code == 403
    assert c.post("/api/labels/undo", json={"batch": 1}).status_code == 403
    for body in ({"label": ""}, {"label": "   "}, {"label": "x" * 129}, {}, {"label": 3}):
        r = c.post(f"/api/images/{iid}/label", json=body, headers=WRITE)
        assert r.status_code == 422, (body, r.text)
    r = c.post(f"/api/images/{iid}/label", json={"label": "benign"}, headers=WRITE)
    assert r.status_code == 422
    assert "unknown label" in r.json()["detail"] and "benign" in r.json()["detail"]
    assert (
        c.post("/api/images/99999/label", json={"label": "cancer"}, headers=WRITE).status_code
        == 404
    )
    assert _snapshot(q) == before
    r = c.post(
        f"/api/images/{iid}/label", json={"label": "benign", "new_class": True}, headers=WRITE
    )
    assert r.status_code == 200
    assert _label_state(q, iid) == [("benign", "review", "review", None)]
    assert c.get(f"/api/images/{iid}").json()["expert"] == "benign"
    counts = c.get("/api/summary").json()["counts"]
    assert {"label": "benign", "source": "expert", "count": 1} in counts


def test_remove_then_undo_restores_exactly(fresh):
    c, q = fresh.c, fresh.q
    iid = fresh.ids["c3.png"]
    before = _label_state(q, iid)
    assert before == [("cancer", "folder", "folder", None)]
    r = c.delete(f"/api/images/{iid}/label", headers={**WRITE, "X-Reviewer": "Bo"})
    assert r.status_code == 200, r.text
    gone = r.json()
    assert gone["label"] is None and gone["previous"] == "cancer" and gone["who"] == "Bo"
    assert _label_state(q, iid) == []
    assert q("SELECT kind, who, source FROM label_batches WHERE id = ?", gone["batch"]) == [
        ("remove", "Bo", "review")
    ]
    assert q(
        "SELECT old_label, old_source, new_label FROM label_events WHERE batch_id = ?",
        gone["batch"],
    ) == [("cancer", "folder", None)]
    assert c.get(f"/api/images/{iid}").json()["expert"] is None
    r = c.delete(f"/api/images/{iid}/label", headers=WRITE)
    assert r.status_code == 422 and "no expert label" in r.json()["detail"]
    r = c.post(
        "/api/labels/undo", json={"batch": gone["batch"]}, headers={**WRITE, "X-Reviewer": "Cy"}
    )
    assert r.status_code == 200, r.text
    undo = r.json()
    assert undo["batch"] == gone["batch"] and undo["kind"] == "remove" and undo["restored"] == 1
    assert undo["who"] == "Cy"
    assert _label_state(q, iid) == before  # label, source, how chosen: as they were
    assert q("SELECT undone_by FROM label_batches WHERE id = ?", gone["batch"]) == [
        (undo["undo_batch"],)
    ]
    assert c.get(f"/api/images/{iid}").json()["expert"] == "cancer"
    # undo of a set on an unlabeled image: back to no label at all
    u = fresh.ids["u4.png"]
    s = c.post(f"/api/images/{u}/label", json={"label": "normal"}, headers=WRITE).json()
    assert c.post("/api/labels/undo", json={"batch": s["batch"]}, headers=WRITE).status_code == 200
    assert _label_state(q, u) == []
    for batch, word in [(gone["batch"], "undone already"), (99999, "no label batch")]:
        r = c.post("/api/labels/undo", json={"batch": batch}, headers=WRITE)
        assert r.status_code == 422 and word in r.json()["detail"]
    assert c.post("/api/labels/undo", json={"batch": 0}, headers=WRITE).status_code == 422


def test_every_label_change_is_recorded_with_reviewer_and_time(fresh):
    c, q = fresh.c, fresh.q
    a, b = fresh.ids["u10.png"], fresh.ids["n2.png"]
    start = q("SELECT COALESCE(MAX(id), 0) FROM label_batches")[0][0]
    steps = [
        ("Ann", lambda h: c.post(f"/api/images/{a}/label", json={"label": "cancer"}, headers=h)),
        ("Ben", lambda h: c.post(f"/api/images/{a}/label", json={"label": "normal"}, headers=h)),
        ("Cat", lambda h: c.delete(f"/api/images/{b}/label", headers=h)),
    ]
    batches = []
    for who, call in steps:
        r = call({**WRITE, "X-Reviewer": who})
        assert r.status_code == 200, r.text
        batches.append((r.json()["batch"], who))
    r = c.post(
        "/api/labels/undo", json={"batch": batches[-1][0]}, headers={**WRITE, "X-Reviewer": "Dan"}
    )
    batches.append((r.json()["undo_batch"], "Dan"))
    rows = q("SELECT id, who, kind, created_at FROM label_batches WHERE id > ? ORDER BY id", start)
    assert [(i, w) for i, w, _, _ in rows] == batches  # one batch per change, no other
    assert [k for _, _, k, _ in rows] == ["set", "set", "remove", "undo"]
    assert all(_recent(at) for *_, at in rows)
    hist = c.get(f"/api/images/{a}").json()["history"]
    assert [(h["who"], h["new_label"]) for h in hist] == [("Ann", "cancer"), ("Ben", "normal")]
    assert all(_recent(h["at"]) for h in hist)
    # a request that names no reviewer: the service's own name
    with _client(fresh.store, reviewer="night shift") as c2:
        r = c2.post(f"/api/images/{a}/label", json={"label": "cancer"}, headers=WRITE)
        assert r.json()["who"] == "night shift"
        r = c2.post(
            f"/api/images/{a}/label",
            json={"label": "normal"},
            headers={**WRITE, "X-Reviewer": "   "},
        )
        assert r.json()["who"] == "night shift"
    assert q("SELECT who FROM label_batches WHERE id > ? ORDER BY id", batches[-1][0]) == [
        ("night shift",),
        ("night shift",),
    ]


def test_label_next_suggest_run_is_recorded_with_reviewer_and_time(fresh):
    """POST /api/queue/next runs `suggest`, which writes a run (its picks make the labels they
    get 'suggested'): a state change, so a POST, and the run names who asked."""
    c, q = fresh.c, fresh.q
    before = q("SELECT MAX(id) FROM runs")[0][0]
    who = {"X-Reviewer": "Eve Reviewer"}
    assert c.get("/api/queue/next", params={"n": 3}, headers=who).status_code == 405
    r = c.post("/api/queue/next", params={"n": 3}, headers={**WRITE, **who})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 3 and all(it["reason"] and it["name"] for it in items)
    runs = q("SELECT id, kind, status, started_at, params, stats FROM runs WHERE id > ?", before)
    assert len(runs) == 1
    _, kind, status, started, params, stats = runs[0]
    assert (kind, status) == ("suggest", "done") and _recent(started)
    assert json.loads(stats)["picked"] == [it["image_id"] for it in items]
    assert json.loads(params)["who"] == "Eve Reviewer"


def test_review_queue_riskiest_first(client):
    got = client.get("/api/queue/review", params={"limit": 500}).json()
    items = got["items"]
    assert got["total"] == len(items) > 0
    assert all(it["needs_review"] and it["source"] == "propagated" and it["risk"] for it in items)
    missed = [it for it in items if it["label"] != "cancer"]
    assert items[: len(missed)] == missed  # possible missed positives first...
    p = [it["p"]["cancer"] for it in missed]
    assert p == sorted(p, reverse=True)  # ...most probably cancer first
    rest = [it["margin"] for it in items[len(missed) :]]
    assert rest == sorted(rest)  # then the flagged positives, least sure first
    page = client.get("/api/queue/review", params={"offset": 1, "limit": 2}).json()["items"]
    assert [it["id"] for it in page] == [it["id"] for it in items[1:3]]
    assert client.get("/api/queue/review", params={"limit": 0}).status_code == 422


# ---- another writer ----------------------------------------------------------------------------
def test_busy_while_another_process_writes(fresh):
    c, q = fresh.c, fresh.q
    iid = fresh.ids["u6.png"]
    before = _snapshot(q)
    args = [sys.executable, "-c", HOLD_LOCK, str(fresh.store), "60"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout.readline().strip() == "locked"
            r = c.post(f"/api/images/{iid}/label", json={"label": "cancer"}, headers=WRITE)
            assert r.status_code == 409, r.text
            detail = r.json()["detail"]
            assert detail.startswith("busy: ingest running") and f"pid {holder.pid}" in detail
            assert (
                c.delete(f"/api/images/{fresh.ids['c0.png']}/label", headers=WRITE).status_code
                == 409
            )
            assert c.post("/api/labels/undo", json={"batch": 1}, headers=WRITE).status_code == 409
            assert c.post("/api/jobs", json={"kind": "propagate"}, headers=WRITE).status_code == 409
            assert _snapshot(q) == before  # nothing written
            for path in (
                "/api/summary",
                "/api/images",
                f"/api/images/{iid}",
                f"/api/images/{iid}/thumb",
                f"/api/images/{iid}/full",
                f"/api/images/{iid}/neighbours",
                "/api/queue/review",
                "/api/jobs",
                "/openapi.json",
            ):
                assert c.get(path).status_code == 200, path
            data = (fresh.root / "unlabeled" / "u6.png").read_bytes()
            r = c.post("/api/query", files={"file": ("q.png", data)}, headers=WRITE)
            assert r.status_code == 200  # a query reads
        finally:
            holder.kill()
    r = c.post(f"/api/images/{iid}/label", json={"label": "cancer"}, headers=WRITE)
    assert r.status_code == 200, r.text
    assert _label_state(q, iid) == [("cancer", "review", "review", None)]


def test_a_cli_write_is_seen_without_restart(fresh):
    c = fresh.c
    iid = fresh.ids["u11.png"]
    assert c.get(f"/api/images/{iid}").json()["expert"] is None
    total = _all(c, source="expert")["total"]
    _cli(fresh.store, "labels", "set", iid, "normal")
    rec = c.get(f"/api/images/{iid}").json()
    assert rec["expert"] == "normal" and rec["source"] == "expert"
    assert rec["expert_detail"]["source"] == "cli"
    assert _all(c, source="expert")["total"] == total + 1
    assert c.get("/api/summary").json()["expert"] == total + 1


def test_neighbour_labels_follow_a_write(fresh):
    """The labels shown beside neighbours (and query hits) must be those in force now.
    Expected: after POST label on image X, X's entry in another image's neighbours has
    label 'normal', source 'expert'. Got: the label and source of before the write (the
    service's label map is refreshed only when some other route rebuilds the table)."""
    c = fresh.c
    iid = fresh.ids["u9.png"]
    near = c.get(f"/api/images/{iid}/neighbours", params={"k": 3}).json()["items"]
    target = next(h for h in near if h["source"] == "propagated")
    r = c.post(
        f"/api/images/{target['id']}/label",
        json={"label": "normal", "new_class": False},
        headers=WRITE,
    )
    assert r.status_code == 200
    again = c.get(f"/api/images/{iid}/neighbours", params={"k": 3}).json()["items"]
    hit = next(h for h in again if h["id"] == target["id"])
    # BUG: stale until another route (e.g. GET /api/images) rebuilds the review table
    assert (hit["label"], hit["source"]) == ("normal", "expert"), hit


# ---- background jobs ---------------------------------------------------------------------------
def _wait_job(c: TestClient, job_id: int, limit: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        j = c.get(f"/api/jobs/{job_id}").json()
        if j["state"] != "running":
            return j
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running after {limit} s")


def test_jobs(fresh):
    c, q = fresh.c, fresh.q
    old = c.get("/api/summary").json()["propagation"]["run_id"]
    runs = q("SELECT COUNT(*) FROM runs WHERE kind = 'propagate'")[0][0]
    # a new expert label, so that the re-run has something new to spread
    c.post(f"/api/images/{fresh.ids['u12.png']}/label", json={"label": "cancer"}, headers=WRITE)
    r = c.post("/api/jobs", json={"kind": "propagate"}, headers=WRITE)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "propagate" and job["state"] in ("running", "done")
    done = _wait_job(c, job["id"])
    assert done["state"] == "done", done
    new = done["result"]["run_id"]
    assert q("SELECT kind, status FROM runs WHERE id = ?", new) == [("propagate", "done")]
    assert q("SELECT COUNT(*) FROM runs WHERE kind = 'propagate'")[0][0] == runs + 1
    s = c.get("/api/summary").json()
    assert s["propagation"]["run_id"] == new != old
    assert s["jobs"][0]["id"] == job["id"] and c.get("/api/jobs").json()[0]["id"] == job["id"]
    assert c.post("/api/jobs", json={"kind": "bogus"}, headers=WRITE).status_code == 422
    assert c.post("/api/jobs", json={"kind": "propagate"}).status_code == 403
    r = c.get("/api/jobs/999")
    assert r.status_code == 404 and "999" in r.json()["detail"]


def test_a_failing_job_is_reported_and_the_service_goes_on(fresh):
    c = fresh.c
    r = c.post("/api/jobs", json={"kind": "cluster", "space": "nosuchspace"}, headers=WRITE)
    assert r.status_code == 202
    done = _wait_job(c, r.json()["id"])
    assert done["state"] == "failed" and done["message"]
    assert c.get("/api/summary").status_code == 200
    r = c.post("/api/jobs", json={"kind": "evaluate"}, headers=WRITE)  # the lock was given back
    assert r.status_code == 202 and _wait_job(c, r.json()["id"])["state"] == "done"


def test_a_job_is_over_only_once_its_store_has_given_the_write_lock_back(fresh, monkeypatch):
    """A job was reported done (or failed) before its store was closed: a reviewer who started
    the next one at that moment got 409 "busy: serve: cluster running". Expected: once a job
    reads as ended, the next one starts."""
    close = service_module.Store.close

    def slow_close(store) -> None:
        time.sleep(0.3)  # a close that takes a moment (a checkpoint, a slow disk)
        close(store)

    monkeypatch.setattr(service_module.Store, "close", slow_close)
    c = fresh.c
    r = c.post("/api/jobs", json={"kind": "cluster", "space": "nosuchspace"}, headers=WRITE)
    assert _wait_job(c, r.json()["id"])["state"] == "failed"
    r = c.post("/api/jobs", json={"kind": "cluster"}, headers=WRITE)
    assert r.status_code == 202, r.json()
    assert _wait_job(c, r.json()["id"])["state"] == "done"


# ---- the guard ---------------------------------------------------------------------------------
def test_token(built):
    with _client(built.store, token="s3cret") as c:
        r = c.get("/api/summary")
        assert r.status_code == 401 and "token" in r.json()["detail"]
        assert c.get("/api/summary", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = c.get("/api/summary", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["images"] == 48
        r = c.get("/?token=s3cret", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("vecstore_token=s3cret")
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert c.get("/api/summary").status_code == 200  # the cookie alone now
        c.cookies.clear()
        assert c.get("/api/summary").status_code == 401
        # a token in the query of a write is not taken (links are for GET)
        r = c.post("/api/jobs?token=s3cret", json={"kind": "bogus"}, headers=WRITE)
        assert r.status_code == 401


def test_token_link_keeps_the_rest_of_the_address(built):
    """The token of a link is moved into a cookie and the browser sent back to "the same
    address without it" (security.Guard._token_cookie). Expected: GET
    /api/images?label=cancer&token=s3cret -> 303 to /api/images?label=cancer. Got: 303 to
    /api/images: every other query parameter is dropped."""
    with _client(built.store, token="s3cret") as c:
        r = c.get("/api/images?label=cancer&token=s3cret", follow_redirects=False)
        assert r.status_code == 303
        # BUG: the redirect keeps only the path
        assert r.headers["location"] == "/api/images?label=cancer"


def test_host_header_and_cross_site_writes(fresh):
    c, q = fresh.c, fresh.q
    for host in ("evil.example", "evil.example:8000", "127.0.0.1:9999"):
        r = c.get("/api/summary", headers={"Host": host})
        assert r.status_code == 421 and "loopback" in r.json()["detail"], host
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
        assert c.get("/api/summary", headers={"Host": host}).status_code == 200, host
    before = _snapshot(q)
    iid = fresh.ids["u13.png"]
    for extra in (
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        r = c.post(f"/api/images/{iid}/label", json={"label": "cancer"}, headers={**WRITE, **extra})
        assert r.status_code == 403, extra
    assert _snapshot(q) == before
    r = c.post(
        f"/api/images/{iid}/label",
        json={"label": "cancer"},
        headers={**WRITE, "Origin": BASE, "Sec-Fetch-Site": "same-origin"},
    )
    assert r.status_code == 200


def test_a_cross_site_request_is_refused_even_a_read(fresh):
    """What a browser sends for <img src="http://127.0.0.1:8000/api/..."> on another site
    (Sec-Fetch-Site cross-site; no Origin on a no-cors GET) is refused, reads too; and the
    one request that records something on its own (the label-next queue) is a POST."""
    c, q = fresh.c, fresh.q
    before = q("SELECT COUNT(*) FROM runs")[0][0]
    cross = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    iid = fresh.ids["u3.png"]
    for url in ("/api/summary", f"/api/images/{iid}/thumb", "/api/queue/next"):
        r = c.get(url, params={"n": 5}, headers=cross)
        assert r.status_code == 403, (url, r.status_code)
    r = c.post("/api/queue/next", params={"n": 5}, headers={**WRITE, **cross})
    assert r.status_code == 403
    assert q("SELECT COUNT(*) FROM runs")[0][0] == before


def test_security_headers_on_every_answer(fresh, built):
    c = fresh.c
    iid = fresh.ids["u3.png"]
    answers = [
        c.get("/api/summary"),
        c.get(f"/api/images/{iid}/thumb"),
        c.get(f"/api/images/{iid}/full"),
        c.get("/api/images/99999"),
        c.get("/api/images", params={"limit": 0}),
        c.get("/api/summary", headers={"Host": "evil.example"}),
        c.post(f"/api/images/{iid}/label", json={"label": "cancer"}),
        c.post(f"/api/images/{iid}/label", json={"label": "cancer"}, headers=WRITE),
        c.get("/openapi.json"),
        c.get("/docs"),
        c.get("/nowhere"),
    ]
    if INDEX_HTML.exists():
        answers.append(c.get("/"))
    with _client(built.store, token="s3cret") as t:
        answers += [t.get("/api/summary"), t.get("/?token=s3cret", follow_redirects=False)]
    assert {r.status_code for r in answers} >= {200, 303, 401, 403, 404, 421, 422}
    for r in answers:
        csp = r.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "script-src 'self'" in csp, r.request.url
        assert r.headers.get("x-content-type-options") == "nosniff", r.request.url
        assert r.headers.get("x-frame-options") == "DENY"


def test_openapi_lists_every_api_route(client):
    spec = client.get("/openapi.json").json()
    app_routes = {
        route.path for route in client.app.routes if getattr(route, "path", "").startswith("/api")
    }
    assert app_routes <= set(spec["paths"])
    assert set(spec["paths"]) >= {
        "/api/summary",
        "/api/images",
        "/api/images/{image_id}",
        "/api/images/{image_id}/thumb",
        "/api/images/{image_id}/full",
        "/api/images/{image_id}/neighbours",
        "/api/images/{image_id}/label",
        "/api/labels/undo",
        "/api/query",
        "/api/queue/review",
        "/api/queue/next",
        "/api/jobs",
        "/api/jobs/{job_id}",
    }
    assert set(spec["paths"]["/api/images/{image_id}/label"]) == {"post", "delete"}


def test_no_docs_page_that_would_load_a_cdn(client):
    """FastAPI's /docs and /redoc load Swagger UI / ReDoc from a CDN with an inline script:
    blocked by this service's CSP and unreachable offline, so they are not served; the
    OpenAPI description is."""
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "vecstore"


def test_plotly_is_served_locally(client):
    r = client.get("/static/plotly.min.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert len(r.content) > 100_000


# ---- hostile names and labels -----------------------------------------------------------------
def test_hostile_names_and_labels_come_back_verbatim(fresh):
    c = fresh.c
    iid = fresh.ids[HOSTILE_FILE]
    rec = c.get(f"/api/images/{iid}")
    assert rec.headers["content-type"] == "application/json"
    assert rec.json()["name"] == HOSTILE_FILE and rec.json()["path"].endswith("/" + HOSTILE_FILE)
    r = c.post(
        f"/api/images/{iid}/label",
        json={"label": HOSTILE_LABEL, "new_class": True},
        headers={**WRITE, "X-Reviewer": "<b>mallory</b>"},
    )
    assert r.status_code == 200 and r.json()["label"] == HOSTILE_LABEL
    assert fresh.q("SELECT label FROM labels WHERE image_id = ?", iid) == [(HOSTILE_LABEL,)]
    rec = c.get(f"/api/images/{iid}").json()
    assert rec["expert"] == HOSTILE_LABEL and rec["expert_detail"]["who"] == "<b>mallory</b>"
    got = _all(c, label=HOSTILE_LABEL)
    assert [(it["id"], it["name"], it["label"]) for it in got["items"]] == [
        (iid, HOSTILE_FILE, HOSTILE_LABEL)
    ]
    counts = c.get("/api/summary").json()["counts"]
    assert {"label": HOSTILE_LABEL, "source": "expert", "count": 1} in counts
    if not INDEX_HTML.exists():
        pytest.skip("vecstore/web/static/index.html is not written yet")
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers.get("cache-control") == "no-store"
    for data in (HOSTILE_FILE, HOSTILE_LABEL, "mallory", "alert(", str(fresh.store), "u0.png"):
        assert data not in page.text, data  # a static shell: the data comes as JSON


def _until_released(lock: Any, seconds: float = 20) -> None:
    """Wait (``seconds`` at most) for a background build of the service to let ``lock`` go."""
    deadline = time.monotonic() + seconds
    while lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)


def _count_builds(store: Any, stamp: Callable[[], Any] = lambda: 1) -> tuple[list, Callable]:
    """From now on, a ``stamp()`` per review table the store builds; and the real builder."""
    builds, real = [], store.review_table
    store.review_table = lambda *a: builds.append(stamp()) or real(*a)
    return builds, real


def test_a_label_given_here_updates_the_table_without_rebuilding_it(fresh):
    """The server's own label write brings its review table up to date (that row), instead
    of a rebuild from the database (seconds at 100k images); a CLI write still rebuilds."""
    c = fresh.c
    service = c.app.state.service
    iid = next(it["id"] for it in _all(c, source="propagated")["items"])
    builds, _ = _count_builds(service.store)
    r = c.post(f"/api/images/{iid}/label", json={"label": "normal"}, headers=WRITE)
    assert r.status_code == 200, r.text
    rec = c.get(f"/api/images/{iid}").json()
    assert (rec["expert"], rec["source"], rec["p"]["normal"]) == ("normal", "expert", 1.0)
    assert not rec["needs_review"] and builds == []
    assert service.table().version == service.store.data_version()
    other = next(it["id"] for it in _all(c, source="propagated")["items"] if it["id"] != iid)
    r = CliRunner().invoke(
        main, ["--store", str(fresh.store), "labels", "set", str(other), "cancer"]
    )
    assert r.exit_code == 0, r.output
    assert c.get(f"/api/images/{other}").json()["expert"] == "cancer" and builds == [1]


def test_a_new_run_rebuilds_the_table_even_with_no_new_label(fresh):
    """The held table is kept only when nothing it shows changed: a propagation run
    finishing (no label batch since) gives a table of the new run."""
    c = fresh.c
    run = c.get("/api/summary").json()["propagation"]["run_id"]
    r = CliRunner().invoke(main, ["--store", str(fresh.store), "propagate"])
    assert r.exit_code == 0, r.output
    assert c.get("/api/summary").json()["propagation"]["run_id"] > run


def test_images_a_cli_ingest_adds_are_appended_to_the_held_table_as_a_rebuild_gives(
    fresh, tmp_path
):
    """A CLI ingest beside the server commits new images every few seconds: the held
    review table takes them as rows (what a rebuild gives, to the dtypes) instead of a
    rebuild of the whole table each time (seconds at 100k images, which stalled every
    request). A label given here on a new image is laid over it as before."""
    c, service = fresh.c, fresh.c.app.state.service
    before = service.table()
    builds, real = _count_builds(service.store)
    for i in range(3):
        _scan(tmp_path / "more" / f"m{i}.png", 900 + i, 0.5)
    _cli(fresh.store, "ingest", tmp_path / "more", "--space", "pixels")
    grown = service.table()
    assert builds == [] and grown.version == service.store.data_version()
    new = {i for (i,) in fresh.q("SELECT id FROM images WHERE path LIKE '%/more/m%'")}
    assert len(new) == 3 and set(grown.rows) == set(before.rows) | new
    pd.testing.assert_frame_equal(grown.frame, real().frame)
    one = min(new)
    rec = c.get(f"/api/images/{one}").json()
    assert (rec["source"], rec["label"], rec["needs_review"]) == ("none", None, True)
    r = c.post(f"/api/images/{one}/label", json={"label": "cancer"}, headers=WRITE)
    assert r.status_code == 200, r.text
    assert service.table().label_of(one) == ("cancer", "expert") and builds == []


def test_images_added_before_any_propagation_are_appended_as_a_rebuild_gives(tmp_path):
    from vecstore.store import Store

    store = tmp_path / "store"
    for i in range(4):
        _scan(tmp_path / "a" / ("normal" if i % 2 else "cancer") / f"a{i}.png", i, i / 3)
        _scan(tmp_path / "b" / f"b{i}.png", 50 + i, i / 3)
    _cli(store, "ingest", tmp_path / "a", "--space", "pixels", "--labels-from-folders")
    with Store.open(store) as st:
        held = st.review_table()
        assert held.run_id is None and len(held.rows) == 4
        _cli(store, "ingest", tmp_path / "b", "--space", "pixels")
        grown = st.with_new_images(held, st.review_mark())
        assert grown is not None and len(grown.rows) == 8 and grown.mark == st.review_mark()
        pd.testing.assert_frame_equal(grown.frame, st.review_table().frame)


def test_an_ingest_that_adopts_imported_images_rebuilds_the_held_table(tmp_path):
    """Images known from import-vectors get their content hash when an ingest first reads
    their files (same ids, same count): a held table appended to would keep showing them
    unread, so the table is rebuilt."""
    from vecstore.store import Store

    store, folder = tmp_path / "store", tmp_path / "scans"
    for i in range(4):
        _scan(folder / f"s{i}.png", i, i / 3)
    x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    pd.DataFrame({"file": [f"s{i}.png" for i in range(4)], "emb": list(x)}).to_parquet(
        tmp_path / "e.parquet"
    )
    _cli(store, "import-vectors", tmp_path / "e.parquet", "--space", "gpu-model",
         "--path-column", "file", "--vector-column", "emb", "--base", folder)  # fmt: skip
    with Store.open(store) as st:
        held = st.review_table()
        assert held.frame["sha256"].isna().all()
        _cli(store, "ingest", folder, "--space", "pixels")
        assert st.review_table().frame["sha256"].notna().all()
        assert st.with_new_images(held, st.review_mark()) is None


def test_dicom_images_added_are_appended_with_their_metadata(tmp_path):
    """A DICOM file's tags are its metadata: an appended row carries them as a rebuild
    does (the image page shows them, the review queue filters on them)."""
    from vecstore.store import Store

    from .test_dicom import sample

    store = tmp_path / "store"
    for i in range(4):
        _scan(tmp_path / "a" / ("normal" if i % 2 else "cancer") / f"a{i}.png", i, i / 3)
    (tmp_path / "b").mkdir()
    shutil.copy(sample("CT_small.dcm"), tmp_path / "b" / "ct.dcm")
    _cli(store, "ingest", tmp_path / "a", "--space", "pixels", "--labels-from-folders")
    with Store.open(store) as st:
        held = st.review_table()
        _cli(store, "ingest", tmp_path / "b", "--space", "pixels")
        grown = st.with_new_images(held, st.review_mark())
        assert grown is not None and len(grown.rows) == 5
        assert grown.metadata == st.review_table().metadata
        assert {m.get("Modality") for m in grown.metadata.values()} == {"CT"}


def test_with_slow_tables_a_reviewers_remove_and_undo_show_at_once(fresh, monkeypatch):
    """On a large store (slow builds) rebuilds run behind the requests; but a remove or an
    undo this server wrote (no overlay can show them) is rebuilt before the next answer, so
    the reviewer who clicked sees it (under CPU load a small store's build was slow too,
    and the page after an undo still showed no label)."""
    monkeypatch.setattr(service_module, "SLOW_TABLE_S", 0.0)  # every build counts as slow
    c, service = fresh.c, fresh.c.app.state.service
    service._table = None
    service.table()
    iid = fresh.ids["c3.png"]
    gone = c.delete(f"/api/images/{iid}/label", headers=WRITE).json()
    assert c.get(f"/api/images/{iid}").json()["expert"] is None
    r = c.post("/api/labels/undo", json={"batch": gone["batch"]}, headers=WRITE)
    assert r.status_code == 200, r.text
    assert c.get(f"/api/images/{iid}").json()["expert"] == "cancer"


def test_with_slow_tables_a_label_of_a_new_class_shows_at_once(fresh, monkeypatch):
    """A label of a class the table has no column for cannot be laid over the held table
    either: like a remove or an undo, it is rebuilt in before the next answer."""
    monkeypatch.setattr(service_module, "SLOW_TABLE_S", 0.0)  # every build counts as slow
    c, service = fresh.c, fresh.c.app.state.service
    service._table = None
    service.table()
    iid = fresh.ids["c3.png"]
    body = {"label": "glioma", "new_class": True}
    r = c.post(f"/api/images/{iid}/label", json=body, headers=WRITE)
    assert r.status_code == 200, r.text
    assert c.get(f"/api/images/{iid}").json()["expert"] == "glioma"


def test_a_dicom_image_an_ingest_adds_shows_its_tags_in_the_running_service(fresh, tmp_path):
    """Through the service (not only the library call): the image page of a DICOM file a
    CLI ingest added while the server ran has its tags, and the queue filters on them."""
    from .test_dicom import sample

    c, service = fresh.c, fresh.c.app.state.service
    service.table()
    (tmp_path / "dcm").mkdir()
    shutil.copy(sample("CT_small.dcm"), tmp_path / "dcm" / "ct.dcm")
    _cli(fresh.store, "ingest", tmp_path / "dcm", "--space", "pixels")
    (iid,) = [i for (i,) in fresh.q("SELECT id FROM images WHERE path LIKE '%ct.dcm'")]
    assert c.get(f"/api/images/{iid}").json()["metadata"]["Modality"] == "CT"
    assert _ids(_all(c, where="Modality=CT")) == {iid}


def test_with_slow_tables_images_added_are_appended_behind_the_requests(
    fresh, tmp_path, monkeypatch
):
    """On a large store (slow builds) the images an ingest added are appended in the
    background: requests meanwhile get the held table, and nothing is rebuilt."""
    monkeypatch.setattr(service_module, "SLOW_TABLE_S", 0.0)  # every build counts as slow
    service = fresh.c.app.state.service
    service._table = None
    before = service.table()
    builds, _ = _count_builds(service.store)
    _scan(tmp_path / "more" / "m0.png", 950, 0.5)
    _cli(fresh.store, "ingest", tmp_path / "more", "--space", "pixels")
    assert set(service.table().rows) <= set(before.rows) | set(service._table.rows)
    _until_released(service._growing)
    table = service.table()
    assert len(table.rows) == len(before.rows) + 1 and builds == []
    assert table.version == service.store.data_version()


def test_an_image_forgotten_or_a_run_since_the_table_rebuilds_it(fresh, tmp_path):
    """Appending is for images added and nothing else: an image gone (forget), or a run
    that changes what the table shows, gives a rebuilt table."""
    c, service = fresh.c, fresh.c.app.state.service
    service.table()
    builds, _ = _count_builds(service.store)
    _cli(fresh.store, "forget", fresh.root / "unlabeled" / "u3.png")
    assert fresh.ids["u3.png"] not in service.table().rows and builds == [1]
    _cli(fresh.store, "cluster", "-k", "3")
    clusters = {it["cluster"] for it in _all(c)["items"]}
    assert clusters == {0, 1, 2} and builds == [1, 1]


def test_a_label_committed_here_but_not_yet_noted_keeps_the_held_table(fresh):
    """A read that looks at the data between this server's label commit and the moment the
    write notes its batch as its own must not take that batch for another process's write:
    that rebuilt the whole table (seconds at 100k images) under load. It answers the held
    table, brought forward once the write is noted. The read is held at that very point."""
    c = fresh.c
    service, store = c.app.state.service, c.app.state.service.store
    first, iid = [it["id"] for it in _all(c, source="propagated")["items"][:2]]
    reached, committed, read = threading.Event(), threading.Event(), {}
    real_mark, real_set = store.review_mark, store.set_label
    builds, _ = _count_builds(store)
    service.table()
    service.set_label(first, "normal", source="review", who="t", chosen="review")

    def mark_after_the_commit():
        if threading.current_thread().name == "reader" and not reached.is_set():
            reached.set()
            committed.wait(10)
        return real_mark()

    def set_then_let_the_reader_look(*a, **kw):
        change = real_set(*a, **kw)  # committed, its batch not noted as this server's yet
        committed.set()
        reader.join(10)
        return change

    reader = threading.Thread(target=lambda: read.update(t=service.table()), name="reader")
    store.review_mark, store.set_label = mark_after_the_commit, set_then_let_the_reader_look
    reader.start()
    assert reached.wait(10)
    r = c.post(f"/api/images/{iid}/label", json={"label": "cancer"}, headers=WRITE)
    assert r.status_code == 200, r.text
    assert read["t"].label_of(iid)[1] == "propagated" and builds == []
    table = service.table()
    assert (table.label_of(first), table.label_of(iid)) == (
        ("normal", "expert"),
        ("cancer", "expert"),
    )
    rows = [table.row(i) for i in (first, iid)]
    assert [(r["p_normal"], r["p_cancer"], r["needs_review"]) for r in rows] == [
        (1.0, 0.0, False),
        (0.0, 1.0, False),
    ]
    assert builds == []


def test_a_slow_table_is_rebuilt_in_the_background_and_not_too_often(fresh, monkeypatch):
    """Once a build of the review table is slow (a large store), another process's write
    never makes a request wait for a rebuild: requests get the held table, a rebuild runs
    in the background, and builds take at most SLOW_TABLE_SHARE of the time (a CLI ingest
    commits every few seconds)."""
    monkeypatch.setattr(service_module, "SLOW_TABLE_S", 0.0)  # every build counts as slow
    clock = [time.monotonic()]  # the service's clock moves only when the test moves it
    fake = SimpleNamespace(
        monotonic=lambda: clock[0], perf_counter=time.perf_counter, time=time.time
    )
    monkeypatch.setattr(service_module, "time", fake)
    service = fresh.c.app.state.service
    builds, _ = _count_builds(service.store, stamp=lambda: clock[0])
    service._table = None
    iid = next(i for i, (_, src) in service.table().by_id.items() if src == "propagated")
    not_before = service._next_build
    assert len(builds) == 1 and not_before > clock[0]
    cli = ["--store", str(fresh.store), "labels", "set", str(iid), "cancer"]
    assert CliRunner().invoke(main, cli).exit_code == 0
    assert service.table().label_of(iid)[1] == "propagated"
    assert not service._rebuild.locked() and len(builds) == 1  # no rebuild started, none ran
    clock[0] = service._next_build + 0.01
    assert service.table().label_of(iid)[1] == "propagated"  # the rebuild runs behind it
    _until_released(service._rebuild)
    assert len(builds) == 2 and service.table().label_of(iid) == ("cancer", "expert")
    assert builds[1] >= not_before
