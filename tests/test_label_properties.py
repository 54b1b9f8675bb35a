"""A stateful property test of the expert labels, through vecstore.store.Store: files come,
change (other pixels, or the same pixels re-saved), disappear, turn empty and come back;
ingests, label imports, removals and undos run in any order. A model says what the expert
labels must be after each step: a file missing, empty or changed keeps its label (flagged
"content changed since labeled" only when its pixels changed); only a remove or an undo takes
a label away; an undo gives the images of the latest batch exactly the labels they had. Image
ids are never given twice, and a path is one row."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from PIL import Image, PngImagePlugin

from vecstore.errors import VecstoreError
from vecstore.store import Store

from .conftest import make_image

CHANGED = "content changed since labeled"
LABELS = ("benign", "malignant", "unsure")
MAX_FILES = 10
MTIME_BASE = 1_700_000_000 * 10**9


@dataclass(frozen=True)
class Version:
    """One content a file had: ``n`` tells its bytes apart, ``pixels`` its pixels."""

    n: int
    pixels: int


@dataclass
class OnDisk:
    version: Version  # the bytes the file has, or had before it went missing or empty
    state: str = "ok"  # ok | missing | empty


@dataclass
class Stored:
    version: Version | None  # None: recorded as a failed file (it was empty when first seen)

    @property
    def ok(self) -> bool:
        return self.version is not None


Label = tuple[str, bool]  # (label, flagged "content changed since labeled")


@dataclass
class Batch:
    events: list[tuple[str, Version, Label | None, Label | None]]  # path, image, old, new
    undone: bool = False


@dataclass
class Model:
    disk: dict[str, OnDisk] = field(default_factory=dict)
    stored: dict[str, Stored] = field(default_factory=dict)  # what the store knows per path
    labels: dict[str, Label] = field(default_factory=dict)  # expert labels, per path
    batches: list[Batch] = field(default_factory=list)


class LabelStore(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="vecstore-labels-"))
        self.data = self.tmp / "data"
        self.data.mkdir()
        self.store = Store.open(self.tmp / "store", create=True, write=True)
        self.m = Model()
        self.counter = 0  # bytes, pixels and mtimes are never given twice
        self.ids_seen: dict[int, str | None] = {}  # every image id ever seen -> its sha256
        self._bytes: dict[Version, bytes] = {}  # what a file that comes back is given again

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers ------------------------------------------------------------------------------
    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def _path(self, name: str) -> Path:
        return self.data / name

    def _touch(self, path: Path) -> None:
        """A new mtime for each write: the store tells a change by size and mtime, and two
        writes within the file system's clock tick could otherwise look the same."""
        t = MTIME_BASE + self._next() * 10**6
        os.utime(path, ns=(t, t))

    def _write(self, name: str, version: Version, pixels_from: Path | None = None) -> None:
        path = self._path(name)
        if pixels_from is None:
            make_image(path, seed=version.pixels)
        else:
            info = PngImagePlugin.PngInfo()
            info.add_text("Comment", f"re-saved by a viewer, version {version.n}")
            with Image.open(pixels_from) as img:
                img.load()
                img.copy().save(path, pnginfo=info)
        self._bytes[version] = path.read_bytes()
        self._touch(path)

    def _names(self, *states: str) -> list[str]:
        return sorted(n for n, d in self.m.disk.items() if d.state in states)

    def _pick(self, names: list[str], i: int, labeled: bool = False) -> str:
        """names[i], among the labeled ones when ``labeled`` and there are some (the files
        whose fate matters most)."""
        if labeled and any(n in self.m.labels for n in names):
            names = [n for n in names if n in self.m.labels]
        return names[i % len(names)]

    def _stored_ok(self) -> list[str]:
        return sorted(n for n, s in self.m.stored.items() if s.ok)

    def _image_id(self, name: str) -> int:
        [(iid,)] = self._sql(
            "SELECT image_id FROM image_paths WHERE path = ?", str(self._path(name))
        )
        return iid

    def _sql(self, query: str, *params) -> list[tuple]:
        con = sqlite3.connect(self.store.path / "vecstore.db")
        try:
            return con.execute(query, params).fetchall()
        finally:
            con.close()

    # ---- files --------------------------------------------------------------------------------
    @initialize()
    def three_files_two_labeled(self) -> None:
        for _ in range(3):
            self.add_file()
        self.ingest()
        self.import_labels([(0, LABELS[0]), (1, LABELS[1])], replace=False)

    @precondition(lambda self: len(self.m.disk) < MAX_FILES)
    @rule()
    def add_file(self) -> None:
        n = self._next()
        name, version = f"f{n:03d}.png", Version(n, n)
        self._write(name, version)
        self.m.disk[name] = OnDisk(version)

    @precondition(lambda self: self._names("ok"))
    @rule(i=st.integers(0, 1000), labeled=st.booleans(), same_pixels=st.booleans())
    def rewrite(self, i: int, labeled: bool, same_pixels: bool) -> None:
        """Other pixels, or the same pixels re-saved with a text chunk (other bytes)."""
        name = self._pick(self._names("ok"), i, labeled)
        n = self._next()
        if same_pixels:
            version = Version(n, self.m.disk[name].version.pixels)
            self._write(name, version, pixels_from=self._path(name))
        else:
            version = Version(n, n)
            self._write(name, version)
        self.m.disk[name] = OnDisk(version)

    @rule(
        i=st.integers(0, 1000),
        labeled=st.booleans(),
        how=st.sampled_from(["missing", "empty", "back"]),
    )
    def availability(self, i: int, labeled: bool, how: str) -> None:
        """A file disappears or turns empty (a copy in progress, a share unmounted), or comes
        back with the bytes it had."""
        names = self._names("missing", "empty") if how == "back" else self._names("ok")
        if not names:
            return
        name = self._pick(names, i, labeled)
        d, path = self.m.disk[name], self._path(name)
        if how == "missing":
            path.unlink()
        else:
            path.write_bytes(self._bytes[d.version] if how == "back" else b"")
            self._touch(path)
        d.state = "ok" if how == "back" else how

    # ---- the store ----------------------------------------------------------------------------
    @rule()
    def ingest(self) -> None:
        self.store.ingest(self.data, spaces=["pixels"])
        carried = []
        for name, d in sorted(self.m.disk.items()):
            old = self.m.stored.get(name)
            if d.state == "missing":
                continue
            if d.state == "empty":
                if old is None:
                    self.m.stored[name] = Stored(None)  # a failed file; kept if known and ok
                continue
            if old is not None and old.version == d.version:
                continue
            self.m.stored[name] = Stored(d.version)
            label = self.m.labels.get(name)
            if label is not None and old is not None and old.ok:
                same = old.version.pixels == d.version.pixels
                new = (label[0], label[1] if same else True)
                self.m.labels[name] = new
                carried.append((name, d.version, None, new))
        if carried:
            self.m.batches.append(Batch(carried))

    @precondition(lambda self: self._stored_ok())
    @rule(
        picks=st.lists(
            st.tuples(st.integers(0, 1000), st.sampled_from(LABELS)), min_size=1, max_size=4
        ),
        replace=st.booleans(),
    )
    def import_labels(self, picks: list[tuple[int, str]], replace: bool) -> None:
        names = self._stored_ok()
        rows = {self._pick(names, i): label for i, label in picks}
        csv = self.tmp / f"labels{self._next()}.csv"
        lines = [f"{self._path(n)},{lab}" for n, lab in rows.items()]
        csv.write_text("path,label\n" + "\n".join(lines) + "\n")
        changes = {n: lab for n, lab in rows.items() if self.m.labels.get(n, (None,))[0] != lab}
        refused = not replace and any(n in self.m.labels for n in changes)
        try:
            self.store.import_labels(csv, replace=replace, new_class=True)
        except VecstoreError as exc:
            assert refused, f"import refused: {exc}"
            return
        assert not refused, "an import that replaces labels without replace=True went through"
        events = []
        for n, lab in changes.items():
            events.append((n, self.m.stored[n].version, self.m.labels.get(n), (lab, False)))
            self.m.labels[n] = (lab, False)
        if events:
            self.m.batches.append(Batch(events))

    @precondition(lambda self: self.m.labels)
    @rule(i=st.integers(0, 1000))
    def remove_label(self, i: int) -> None:
        name = self._pick(sorted(self.m.labels), i)
        path = self._path(name)
        target = str(path) if path.exists() else str(self._image_id(name))
        self.store.remove_label(target)
        version = self.m.stored[name].version
        self.m.batches.append(Batch([(name, version, self.m.labels.pop(name), None)]))

    @rule()
    def undo(self) -> None:
        todo = [b for b in self.m.batches if not b.undone]
        if not todo:
            try:
                self.store.undo_labels()
            except VecstoreError:
                return
            raise AssertionError("undo with no label change to undo went through")
        batch = todo[-1]
        alive = [e for e in batch.events if self.m.stored.get(e[0]) == Stored(e[1])]
        refused = any(self.m.labels.get(name) != new for name, _, _, new in alive)
        try:
            self.store.undo_labels()
        except VecstoreError as exc:
            assert refused, f"undo refused: {exc}"
            return
        assert not refused, "an undo went through over a later change"
        for name, _, old, _ in alive:
            if old is None:
                self.m.labels.pop(name, None)
            else:
                self.m.labels[name] = old
        batch.undone = True

    # ---- what must hold after every step ------------------------------------------------------
    @invariant()
    def expert_labels_are_the_model_s(self) -> None:
        rows = self._sql(
            "SELECT p.path, l.label, l.review_reason FROM labels l "
            "JOIN image_paths p ON p.image_id = l.image_id"
        )
        got = {Path(p).name: (lab, why == CHANGED) for p, lab, why in rows}
        assert got == self.m.labels
        assert len(rows) == len(self.store.expert_labels())  # no label without its path
        by_id = {iid: lab for iid, lab in self._sql("SELECT image_id, label FROM labels")}
        assert self.store.expert_labels() == by_id

    @invariant()
    def paths_are_one_row_each_and_those_of_the_model(self) -> None:
        assert self._sql("SELECT path FROM image_paths GROUP BY path HAVING COUNT(*) > 1") == []
        rows = self._sql(
            "SELECT p.path, i.status FROM image_paths p JOIN images i ON i.id = p.image_id"
        )
        got = {Path(p).name: status == "ok" for p, status in rows}
        assert got == {n: s.ok for n, s in self.m.stored.items()}

    @invariant()
    def image_ids_are_never_given_twice(self) -> None:
        rows = self._sql("SELECT id, sha256 FROM images")
        newest = max(self.ids_seen, default=0)
        for iid, sha in rows:
            if iid in self.ids_seen:
                assert self.ids_seen[iid] == sha or self.ids_seen[iid] is None, iid
            else:
                assert iid > newest, f"image id {iid} given again"
        self.ids_seen.update({iid: sha for iid, sha in rows})


LabelStore.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    # no shrinking: a failure is reported as found (shrinking one took minutes); the shortest
    # case found so far is test_undo_skips_an_image_replaced_since_instead_of_blocking below
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_expert_labels_follow_the_model = LabelStore.TestCase


def test_undo_skips_an_image_replaced_since_instead_of_blocking(tmp_path):
    """The shortest case the state machine finds: a labeled file rewritten with other pixels
    (its label carried to the new image, the old image gone), the carry undone, then the
    import undone. The import's image that is gone is to be counted `gone`, as LabelUndo
    says, not to block the undo of the batch with "changed after it by batch None"."""
    data = tmp_path / "data"
    a, b = make_image(data / "a.png", seed=1), make_image(data / "b.png", seed=2)
    csv = tmp_path / "l.csv"
    csv.write_text(f"path,label\n{a},benign\n{b},malignant\n")
    with Store.open(tmp_path / "store", create=True, write=True) as store:
        store.ingest(data, spaces=["pixels"])
        store.import_labels(csv, new_class=True)
        make_image(a, seed=3)
        store.ingest(data, spaces=["pixels"])
        assert sorted(store.expert_labels().values()) == ["benign", "malignant"]
        assert store.undo_labels().kind == "carry"
        undone = store.undo_labels()
        assert (undone.kind, undone.restored, undone.gone) == ("import", 1, 1)
        assert store.expert_labels() == {}
        with pytest.raises(VecstoreError, match="no label change to undo"):
            store.undo_labels()


def test_undo_of_a_batch_whose_images_are_all_gone_is_recorded_and_the_next_goes_back(tmp_path):
    """Nothing left to restore still marks the batch undone: `labels undo` then reaches the
    batch before it instead of undoing the same batch again and again."""
    data = tmp_path / "data"
    a = make_image(data / "a.png", seed=1)
    csv = tmp_path / "l.csv"
    with Store.open(tmp_path / "store", create=True, write=True) as store:
        store.ingest(data, spaces=["pixels"])
        csv.write_text(f"path,label\n{a},benign\n")
        store.import_labels(csv, new_class=True)  # batch 1
        store.set_label(str(a), "malignant", replace=True, new_class=True)  # batch 2
        make_image(a, seed=3)
        store.ingest(data, spaces=["pixels"])  # batch 3 carries it; the old image is gone
        assert store.undo_labels().kind == "carry"
        undone = store.undo_labels()
        assert (undone.kind, undone.restored, undone.gone) == ("set", 0, 1)
        assert undone.undo_batch is not None
        assert store.undo_labels().batch == 1
        with pytest.raises(VecstoreError, match="no label change to undo"):
            store.undo_labels()
