"""Schema: Alembic migrations run on open, match the ORM models, and guard the version."""

from __future__ import annotations

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from vecstore.db import Database, head_revision
from vecstore.db.models import Base
from vecstore.errors import StoreNotFound, StoreVersionError
from vecstore.store import Store

from .conftest import migrate


def test_migrated_empty_store_matches_models(store_path):
    Store.open(store_path, create=True).close()
    db = Database(store_path / "vecstore.db")
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    db.close()
    assert diff == [], f"migrations and models differ: {diff}"


def test_store_records_schema_head(store_path, db):
    Store.open(store_path, create=True).close()
    assert db("SELECT version_num FROM alembic_version") == [(head_revision(),)]
    tables = {r[0] for r in db("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"images", "image_paths", "spaces", "vectors", "labels", "runs"} <= tables
    assert db("PRAGMA journal_mode") == [("wal",)]


def test_store_from_a_newer_vecstore_is_refused_and_left_untouched(store_path, cli):
    Store.open(store_path, create=True).close()
    con = sqlite3.connect(store_path / "vecstore.db")
    con.execute("UPDATE alembic_version SET version_num='9999_future'")
    con.commit()
    con.close()
    with pytest.raises(StoreVersionError, match="newer vecstore"):
        Store.open(store_path)
    result = cli("info")
    assert result.exit_code == 1
    assert "newer vecstore" in result.output and "Upgrade vecstore" in result.output
    con = sqlite3.connect(store_path / "vecstore.db")
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999_future",)]
    con.close()


def test_missing_store_gives_a_clear_error(tmp_path, cli):
    missing = tmp_path / "nowhere"
    with pytest.raises(StoreNotFound):
        Store.open(missing)
    for args in (["info"], ["check"], ["query", "--id", "1"], ["reindex"]):
        result = cli(*args, store=missing)
        assert result.exit_code == 1, result.output
        assert "no vecstore store at" in result.output and "vecstore --store" in result.output
    assert not missing.exists(), "a read command must not create a store"


def test_store_location_resolution(tmp_path, monkeypatch):
    from vecstore.store import resolve_store_path

    monkeypatch.delenv("VECSTORE_STORE", raising=False)
    assert str(resolve_store_path(None)) == ".vecstore"
    monkeypatch.setenv("VECSTORE_STORE", str(tmp_path / "env"))
    assert resolve_store_path(None) == tmp_path / "env"
    assert resolve_store_path(str(tmp_path / "opt")) == tmp_path / "opt"


def test_old_store_is_upgraded_on_open_and_keeps_its_data(store_path, image_dir, db):
    """A store written at schema 0001 (before clusters and predictions) opens at head."""
    from alembic import command

    from vecstore.db import alembic_config, make_engine

    store_path.mkdir()
    engine = make_engine(store_path / "vecstore.db")
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql(
            "INSERT INTO images (id, sha256, path, status, added_at) VALUES (7, 'ab', '/x.png', "
            "'ok', '2026-01-01')"
        )
        conn.exec_driver_sql(
            "INSERT INTO labels (image_id, label, source, created_at) VALUES (7, 'cancer', 'cli', "
            "'2026-01-01')"
        )
    engine.dispose()
    assert db("SELECT version_num FROM alembic_version") == [("0001",)]
    with Store.open(store_path) as store:  # a reader: upgrades under the write lock
        assert store.expert_labels() == {7: "cancer"}
    assert db("SELECT version_num FROM alembic_version") == [(head_revision(),)]
    tables = {r[0] for r in db("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"cluster_assignments", "predictions"} <= tables
    triggers = db("SELECT name, tbl_name FROM sqlite_master WHERE type='trigger'")
    assert triggers == [("vectors_deleted", "vectors")]


def test_upgrading_keeps_every_row_of_the_tables_that_point_at_images(store_path, image_dir, db):
    """Making image ids never reused recreates the images table: with foreign keys on, a
    plain DROP TABLE would delete every vector, path and label with it."""
    migrate(store_path, "0003")
    con = sqlite3.connect(store_path / "vecstore.db")
    con.executescript(
        "INSERT INTO images (id, sha256, path, status, added_at) VALUES "
        "(7, 'ab', '/x.png', 'ok', '2026-01-01'), (9, 'cd', '/y.png', 'ok', '2026-01-01');"
        "INSERT INTO image_paths (image_id, path, added_at) VALUES (7, '/x.png', '2026-01-01'),"
        " (9, '/y.png', '2026-01-01');"
        "INSERT INTO spaces (id, name, model, dim, preprocessing, weights, weights_random,"
        " created_at) VALUES (1, 'imp', 'imported', 2, '-', '-', 0, '2026-01-01');"
        "INSERT INTO vectors (space_id, image_id, vector) VALUES (1, 7, x'0000803f00000000'),"
        " (1, 9, x'000000000000803f');"
        "INSERT INTO labels (image_id, label, source, created_at) VALUES"
        " (7, 'cancer', 'cli', '2026-01-01');"
    )
    con.commit()
    con.close()
    Store.open(store_path, write=True).close()
    assert db("SELECT version_num FROM alembic_version") == [(head_revision(),)]
    assert db("SELECT image_id, label FROM labels") == [(7, "cancer")]
    assert db("SELECT image_id FROM vectors ORDER BY image_id") == [(7,), (9,)]
    assert db("SELECT image_id, path FROM image_paths ORDER BY image_id") == [
        (7, "/x.png"),
        (9, "/y.png"),
    ]
    assert db("PRAGMA foreign_key_check") == []
