"""Load benchmark of `vecstore serve` (issue 14).

On N images (``--images``, default 100,000) imported with ``vecstore import-vectors`` (512-d
vectors from bench/synth.py's Mixture, seeded; every image a real 8x8 PNG on disk, since the
image page reads its file), 200 of them labeled (two classes, "cancer" = the Mixture's family
0, about 10 %, else "normal") with ``vecstore labels import`` and ``vecstore propagate`` run,
``vecstore --store STORE serve --port P`` is started as a subprocess and loaded by
``--clients`` (50) concurrent clients on the loopback for ``--seconds`` (60) seconds, each
with one keep-alive connection of its own (httpx.AsyncClient, one event loop), each request
drawn as:

- 60 %: GET /api/images/{id}/neighbours?k=10, a random image;
- 25 %: GET /api/images/{id}, the image page's JSON, a random image;
- 15 %: POST /api/images/{id}/label {"label": normal|cancer at random}, with the headers
  ``X-Vecstore: 1`` and ``X-Reviewer: bench-C``; the image drawn from the client's own ids
  (the unlabeled images split between the clients, so each id is written by one client only,
  one request at a time, and the last acknowledged label of an id is the one that must be in
  the database).

With ``--think T`` a client pauses after each answer, and before its first request, for an
exponential time of mean T seconds (a reviewer reading the page): the clients start at
random phases, as a running service sees them, instead of all 50 in the same millisecond
(before 2026-11-23 they did, and that first burst alone was ~3 % of a 30 s phase's requests,
all of them slow).

Per endpoint: requests, 2xx, 409 busy (counted apart), errors (any other status, or an
exception: a timeout, a refused connection), p50 / p95 / p99 / max latency of the 2xx
answers, and wrong answers (a neighbour answer without k items, an image page of another
image, a label answer naming another label). After each phase the database is read with
sqlite3: a lost write is an acknowledged label whose image has not that label with source
``review``; a phantom is a review label on an image whose writes were never acknowledged.

Phases, on a copy of the cached store (the setup is kept in ``--work`` and reused):

1. ``1 client``: one client, ``--single-seconds`` (20) s, the same mix: each request's own
   cost, without queueing;
2. ``50 clients``: the load;
3. with ``--with-ingest``: the load again while ``vecstore --wait 60 ingest NEW/k --space
   pixels`` runs on folders of ``--ingest-images`` (2,000) new PNGs one after another until the
   phase ends. When an ingest holds the store's write lock (read from /proc/locks every
   20 ms, which takes no lock) the label writes must answer 409 busy, and nothing else may
   change.

Baseline: the same neighbour query in process, without HTTP
(``Store.open(STORE).query(image_id=..., k=10)``, a warm store, 200 random images, single
thread), after the server has stopped; with it, where a request's time goes: the review table
rebuilt (what every label write costs the next read), a query right after another connection
committed (the index cache reads the space's mark: O(1) since migration 0006, a scan of the
space's index entries before), an image record, a label write.

Run from the repository root (about 3.5 minutes at 100k on a 2-core machine; the first run adds
the setup, about 2 minutes)::

    .venv/bin/python bench/serve.py --with-ingest --record
    .venv/bin/python bench/serve.py --images 5000 --seconds 10 --with-ingest   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchutil import machine_line, markdown_table, record
from synth import Mixture

VECSTORE = str(Path(sys.executable).with_name("vecstore"))
REPO = Path(__file__).resolve().parent.parent
SPACE = "synth"
INGEST_SPACE = "pixels"
CLASSES = ("normal", "cancer")
SEEDS = 200  # expert labels given before the load
MIX = (("neighbours", 0.60), ("image", 0.25), ("label", 0.15))
ENDPOINTS = {
    "neighbours": "GET /api/images/{id}/neighbours?k=10",
    "image": "GET /api/images/{id}",
    "label": "POST /api/images/{id}/label",
}
K = 10
TIMEOUT_S = 60.0  # per request; a request past it counts as an error
TARGET_P95_MS = {"neighbours": 50.0, "label": 100.0}
LOCK_POLL_S = 0.02


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args: list[str], **kw) -> tuple[float, str]:
    """Run a command to its end; (seconds, stdout). Stops the bench when it fails."""
    t0 = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True, **kw)
    if p.returncode:
        raise SystemExit(f"{shlex.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0, p.stdout


# ---- setup -----------------------------------------------------------------------------------
def write_pngs(folder: Path, start: int, n: int, per_folder: int = 1000) -> list[str]:
    """n distinct 8x8 gray PNGs (image number i's bytes in the first pixels, seeded noise in
    the rest), per_folder to a subfolder; their absolute paths in order."""
    from PIL import Image

    rng = np.random.default_rng(start)
    noise = rng.integers(0, 256, size=(n, 64), dtype=np.uint8)
    paths = []
    for j in range(n):
        i = start + j
        sub = folder / f"{j // per_folder:03d}"
        if j % per_folder == 0:
            sub.mkdir(parents=True, exist_ok=True)
        px = noise[j].copy()
        px[:4] = np.frombuffer(i.to_bytes(4, "little"), np.uint8)
        path = sub / f"{i:07d}.png"
        Image.frombytes("L", (8, 8), px.tobytes()).save(path, compress_level=1)
        paths.append(str(path))
    return paths


def setup(work: Path, n: int) -> dict:
    """The base store of n images, built once and kept in ``work`` (setup.json says how long
    each step took)."""
    done = work / "setup.json"
    if done.exists() and (work / "base-store" / "vecstore.db").exists():
        info = json.loads(done.read_text())
        info["cached"] = True
        log(f"setup: reusing {work} (built before: {info['total_s']:.0f} s)")
        return info
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    paths = write_pngs(work / "images", 0, n)
    times["write PNGs"] = time.perf_counter() - t0
    log(f"setup: {n} PNGs written in {times['write PNGs']:.1f} s")
    (work / "paths.txt").write_text("".join(p + "\n" for p in paths))
    t0 = time.perf_counter()
    y = Mixture().write_npy(n, str(work / "x.npy"))
    times["write vectors"] = time.perf_counter() - t0
    family = y % Mixture().n_families
    truth = np.where(family == 0, "cancer", "normal")
    rng = np.random.default_rng(0)
    seeds = np.sort(rng.choice(n, size=min(SEEDS, n), replace=False))
    with open(work / "labels.csv", "w") as f:
        f.write("path,label\n")
        f.writelines(f"{paths[i]},{truth[i]}\n" for i in seeds)
    store = work / "base-store"
    vs = [VECSTORE, "--store", str(store)]
    times["import-vectors"], out = run(
        [
            *vs,
            "import-vectors",
            str(work / "x.npy"),
            "--paths",
            str(work / "paths.txt"),
            "--space",
            SPACE,
            "--json",
        ]
    )
    imp = json.loads(out.strip().splitlines()[-1])
    log(f"setup: import-vectors {times['import-vectors']:.1f} s ({imp.get('index')})")
    times["labels import"], _ = run(
        [*vs, "labels", "import", str(work / "labels.csv"), "--new-class"]
    )
    times["propagate"], out = run([*vs, "propagate", "--space", SPACE, "--json"])
    log(f"setup: propagate {times['propagate']:.1f} s")
    info = {
        "images": n,
        "space": SPACE,
        "index": imp.get("index"),
        "seeds": int(len(seeds)),
        "seed_classes": {c: int((truth[seeds] == c).sum()) for c in CLASSES},
        "cancer_share": float((truth == "cancer").mean()),
        "times_s": {k: round(v, 2) for k, v in times.items()},
        "total_s": round(sum(times.values()), 2),
        "cached": False,
    }
    done.write_text(json.dumps(info, indent=1))
    return info


def ingest_folders(work: Path, n_images: int, per: int, count: int) -> list[Path]:
    """``count`` folders of ``per`` new PNGs each (numbered after the store's images)."""
    root = work / "new"
    folders = [root / f"{k:02d}" for k in range(count)]
    for k, folder in enumerate(folders):
        if not (folder / "done").exists():
            if folder.exists():
                shutil.rmtree(folder)
            write_pngs(folder, n_images + k * per, per)
            (folder / "done").write_text("")
    return folders


# ---- the server ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, store: Path, work: Path, first_id: int) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(work / "serve.log", "w")  # closed in stop()
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [VECSTORE, "--store", str(store), "serve", "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        with httpx.Client(base_url=self.url, timeout=TIMEOUT_S) as c:
            while True:
                if self.proc.poll() is not None:
                    raise SystemExit(f"vecstore serve exited {self.proc.returncode}: see serve.log")
                try:
                    t1 = time.perf_counter()
                    r = c.get("/api/summary")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            t2 = time.perf_counter()
            if r.status_code != 200:
                raise SystemExit(f"/api/summary answered {r.status_code}: {r.text[:500]}")
            self.listening_s = t1 - t0
            self.first_summary_ms = 1000 * (t2 - t1)
            t3 = time.perf_counter()
            c.get("/api/summary").raise_for_status()
            self.second_summary_ms = 1000 * (time.perf_counter() - t3)
            # the first call of each read endpoint (the index loaded, the table used)
            self.first_ms = {}
            for kind, path in (
                ("neighbours", f"/api/images/{first_id}/neighbours?k={K}"),
                ("image", f"/api/images/{first_id}"),
            ):
                t = time.perf_counter()
                c.get(path).raise_for_status()
                self.first_ms[kind] = 1000 * (time.perf_counter() - t)
        log(
            f"serve: listening after {self.listening_s:.1f} s, first /api/summary "
            f"{self.first_summary_ms:.0f} ms (then {self.second_summary_ms:.0f} ms), first "
            + ", ".join(f"{k} {v:.0f} ms" for k, v in self.first_ms.items())
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ---- the load --------------------------------------------------------------------------------
class LockWatch(threading.Thread):
    """Who holds the store's write lock, from /proc/locks (reading it takes no lock): the
    intervals each pid other than ``ignore`` held it, seen every LOCK_POLL_S."""

    def __init__(self, lock_file: Path, t_zero: float, ignore: int) -> None:
        super().__init__(daemon=True)
        st = os.stat(lock_file)
        self.key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        self.t_zero, self.ignore = t_zero, ignore
        self.intervals: list[tuple[int, float, float]] = []  # (pid, from, to) in phase time
        self.server_seen = 0  # polls that saw the server itself holding it
        self.stop_flag = threading.Event()

    def holder(self) -> int | None:
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].endswith(self.key):
                    return int(parts[4])
        return None

    def run(self) -> None:
        current, since = None, 0.0
        while not self.stop_flag.is_set():
            pid, now = self.holder(), time.perf_counter() - self.t_zero
            if pid == self.ignore:
                self.server_seen += 1
                pid = None
            if pid != current:
                if current is not None:
                    self.intervals.append((current, since, now))
                current, since = pid, now
            time.sleep(LOCK_POLL_S)
        if current is not None:
            self.intervals.append((current, since, time.perf_counter() - self.t_zero))


class IngestLoop(threading.Thread):
    """``vecstore --wait 60 ingest FOLDER --space pixels`` on one folder after another until
    ``deadline`` (phase time); each run's start, end, exit status and report."""

    def __init__(self, store: Path, folders: list[Path], t_zero: float, deadline: float) -> None:
        super().__init__(daemon=True)
        self.store, self.folders = store, folders
        self.t_zero, self.deadline = t_zero, deadline
        self.runs: list[dict] = []
        self.pids: set[int] = set()

    def run(self) -> None:
        for folder in self.folders:
            start = time.perf_counter() - self.t_zero
            if start >= self.deadline - 1.0:
                return
            args = [
                VECSTORE,
                "--store",
                str(self.store),
                "--wait",
                "60",
                "ingest",
                str(folder),
                "--space",
                INGEST_SPACE,
                "--json",
            ]
            p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.pids.add(p.pid)
            out, err = p.communicate()
            end = time.perf_counter() - self.t_zero
            rep = {}
            with contextlib.suppress(ValueError, IndexError):
                rep = json.loads(out.strip().splitlines()[-1])
            emb = {e["space"]: e.get("embedded") for e in rep.get("embedded", [])}
            self.runs.append(
                {
                    "folder": folder.name,
                    "pid": p.pid,
                    "start": round(start, 3),
                    "end": round(end, 3),
                    "rc": p.returncode,
                    "new": rep.get("added"),
                    "embedded": emb,
                    "error": err.strip()[-500:] if p.returncode else "",
                }
            )
            log(f"  ingest {folder.name}: {end - start:.1f} s, rc {p.returncode}")
        log("  ingest: out of folders before the phase ended (make more with --ingest-folders)")


def pick(rng: random.Random) -> str:
    r, acc = rng.random(), 0.0
    for kind, share in MIX:
        acc += share
        if r < acc:
            return kind
    return MIX[-1][0]


async def request(http, kind: str, iid: int, label: str | None) -> tuple[int, bool, str]:
    """One request; (status or -1, a 2xx answer not about what was asked, error text)."""
    if kind == "neighbours":
        req = http.get(f"/api/images/{iid}/neighbours", params={"k": K})
    elif kind == "image":
        req = http.get(f"/api/images/{iid}")
    else:
        body = {"label": label}
        req = http.post(f"/api/images/{iid}/label", json=body, headers={"X-Vecstore": "1"})
    try:
        resp = await req
    except Exception as exc:  # a timeout, a refused or dropped connection
        return -1, False, f"{type(exc).__name__}: {exc}"[:200]
    status = resp.status_code
    if status == 409:
        return status, False, ""
    if not 200 <= status < 300:
        return status, False, f"{status} {resp.text[:200]}"
    got = resp.json()
    if kind == "neighbours":
        return status, len(got.get("items", [])) != K, ""
    if kind == "image":
        return status, got.get("id") != iid, ""
    return status, got.get("image_id") != iid or got.get("label") != label, ""


async def load(
    url: str,
    clients: int,
    seconds: float,
    read_ids: list[int],
    write_ids: list[list[int]],
    seed: int,
    on_start: Callable[[float], None],
    think: float = 0.0,
) -> tuple[float, list[tuple], list[list[tuple]], dict]:
    """The clients' loop: each client made and its connection opened first (GET /api/jobs),
    then ``on_start(t_zero)`` and the load; (t_zero, records (kind, sent, seconds, status,
    wrong, error), writes per client (id, label, status), event-loop lag)."""
    import httpx

    # httpcore tries `import sniffio` on every lock it makes; not installed, each try scans
    # sys.path again (0.5 ms of the client's CPU per request): the failed import, cached
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]
    records: list[tuple] = []
    writes: list[list[tuple]] = [[] for _ in range(clients)]
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    https = [  # verify=False: plain http, no CA bundle loaded per client (40 ms each)
        httpx.AsyncClient(
            base_url=url,
            limits=limits,
            timeout=TIMEOUT_S,
            verify=False,
            headers={"X-Reviewer": f"bench-{c}"},
        )
        for c in range(clients)
    ]
    await asyncio.gather(*(h.get("/api/jobs") for h in https))
    t_zero = time.perf_counter()
    on_start(t_zero)
    deadline = t_zero + seconds

    async def client(c: int) -> None:
        rng, http = random.Random(seed * 1000 + c), https[c]
        if think > 0:  # as if it had been running: its first request after a pause too
            await asyncio.sleep(rng.expovariate(1 / think))
        while time.perf_counter() < deadline:
            kind = pick(rng)
            iid = rng.choice(write_ids[c] if kind == "label" else read_ids)
            label = rng.choice(CLASSES) if kind == "label" else None
            t0 = time.perf_counter()
            status, wrong, error = await request(http, kind, iid, label)
            t1 = time.perf_counter()
            records.append((kind, t0 - t_zero, t1 - t0, status, wrong, error))
            if kind == "label":
                writes[c].append((iid, label, status))
            if think > 0:  # a reviewer looking at the answer: exponential, mean `think` s
                await asyncio.sleep(rng.expovariate(1 / think))

    lags: list[float] = []

    async def lag_watch() -> None:  # how late the client's event loop wakes (its own delay)
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    await asyncio.gather(lag_watch(), *(client(c) for c in range(clients)))
    await asyncio.gather(*(h.aclose() for h in https))
    lag = {
        "p50_ms": 1000 * float(np.percentile(lags, 50)) if lags else None,
        "p99_ms": 1000 * float(np.percentile(lags, 99)) if lags else None,
        "max_ms": 1000 * float(max(lags)) if lags else None,
    }
    return t_zero, records, writes, lag


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    a = 1000 * np.asarray(values)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
    }


def summarize(records: list[tuple], seconds: float) -> dict:
    out = {}
    for kind in ENDPOINTS:
        rs = [r for r in records if r[0] == kind]
        ok = [r for r in rs if 200 <= r[3] < 300]
        busy = [r for r in rs if r[3] == 409]
        errors = [r for r in rs if r[5]]
        out[kind] = {
            "requests": len(rs),
            "ok": len(ok),
            "busy_409": len(busy),
            "errors": len(errors),
            "wrong": sum(r[4] for r in ok),
            "per_s": len(rs) / seconds,
            **percentiles([r[2] for r in ok]),
            "busy_p50_ms": percentiles([r[2] for r in busy])["p50_ms"],
            "error_samples": sorted({r[5] for r in errors})[:5],
        }
    return out


def verify(db_path: Path, acked: dict[int, str], attempted: set[int]) -> dict:
    """The acknowledged labels against the database: lost = acknowledged, but the image has
    not that label with source review; phantom = a review label on an image never acked."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    rows = con.execute("SELECT image_id, label, source FROM labels").fetchall()
    con.close()
    have = {i: (lab, src) for i, lab, src in rows}
    lost = [i for i, lab in acked.items() if have.get(i) != (lab, "review")]
    phantom = [i for i, (_, src) in have.items() if src == "review" and i not in acked]
    return {
        "acked_ids": len(acked),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "phantom": len(phantom),
        "phantom_attempted": sum(i in attempted for i in phantom),
        "review_labels_in_db": sum(src == "review" for _, src in have.values()),
    }


def phase(
    name: str,
    server: Server,
    store: Path,
    clients: int,
    seconds: float,
    read_ids: list[int],
    write_ids: list[int],
    acked: dict[int, str],
    attempted: set[int],
    seed: int,
    folders: list[Path] | None = None,
    quiet_wait: float = 0.0,
    think: float = 0.0,
) -> dict:
    """One load phase: the records summarised, the writes verified against the database,
    CPU seconds of the server, the client and the ingests."""
    quiet = wait_quiet(quiet_wait)
    log(f"phase {name}: {clients} client(s), {seconds:.0f} s")
    mine = [write_ids[c::clients] for c in range(clients)]
    started: dict = {}

    def on_start(t_zero: float) -> None:
        started["watch"] = watch = LockWatch(store / "write.lock", t_zero, server.proc.pid)
        watch.start()
        if folders:
            started["ingest"] = IngestLoop(store, folders, t_zero, seconds)
            started["ingest"].start()
        started["cpu"] = (
            cpu_seconds(server.proc.pid),
            time.process_time(),
            _children_cpu(),
            machine_cpu(),
        )

    t_zero, records, writes, lag = asyncio.run(
        load(server.url, clients, seconds, read_ids, mine, seed, on_start, think)
    )
    wall = time.perf_counter() - t_zero
    watch, ingest, cpu0 = started["watch"], started.get("ingest"), started["cpu"]
    if ingest:
        ingest.join()
    watch.stop_flag.set()
    watch.join()
    cpu1 = (cpu_seconds(server.proc.pid), time.process_time(), _children_cpu(), machine_cpu())
    used = [b - a for a, b in zip(cpu0, cpu1)]
    for client_writes in writes:  # in each client's order: the last ack of an id wins
        for iid, label, status in client_writes:
            attempted.add(iid)
            if status == 200:
                acked[iid] = label
    out = {
        "name": name,
        "clients": clients,
        "seconds": seconds,
        "wall_s": wall,
        "requests": len(records),
        "per_s": len(records) / seconds,
        "endpoints": summarize(records, seconds),
        "verify": verify(store / "vecstore.db", acked, attempted),
        "cpu_s": {
            "server": used[0],
            "client": used[1],
            "ingest": used[2],
            # everything else on the machine (another job would skew the latencies)
            "other": max(0.0, used[3] - used[0] - used[1] - used[2]),
        },
        "client_loop_lag": lag,
        "other_cores_before": quiet,
        "server_rss_peak_mib": rss_mib(server.proc.pid),
        "lock": {
            "server_polls_holding": watch.server_seen,
            "polls": int(wall / LOCK_POLL_S),
        },
    }
    if ingest:
        out["ingest"] = ingest_outcome(ingest, watch, records)
    # every request: endpoint, sent (s into the phase), seconds, status
    out["records"] = [[r[0], round(r[1], 4), round(r[2], 5), r[3]] for r in records]
    _print_phase(out)
    return out


def machine_cpu() -> float:
    """CPU seconds all processes of the machine used so far (/proc/stat: user, nice, system,
    irq, softirq; not idle, iowait, or the time the hypervisor stole)."""
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float, window: float = 5.0, most: float = 0.15) -> float:
    """Wait (up to ``limit`` seconds) for ``window`` seconds in which the other processes of
    the machine use at most ``most`` of a core; returns their share in the last window."""
    deadline = time.monotonic() + limit
    while True:
        before = machine_cpu() - time.process_time()
        time.sleep(window)
        share = (machine_cpu() - time.process_time() - before) / window
        if share <= most or time.monotonic() >= deadline:
            if share > most:
                log(f"  the machine is not quiet: other processes use {share:.2f} cores")
            return share
        log(f"  waiting for a quiet machine (other processes use {share:.2f} cores)")


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def ingest_outcome(ingest: IngestLoop, watch: LockWatch, records: list[tuple]) -> dict:
    """Which writes met an ingest holding the lock (409 expected there, never elsewhere). The
    reads are compared phase against phase: with queues seconds long, a read's latency is not
    of the moment it was sent."""
    held = [(a, b) for pid, a, b in watch.intervals if pid in ingest.pids]
    slack = 2 * LOCK_POLL_S  # the windows are seen every LOCK_POLL_S

    def overlaps(t: float, d: float, pad: float) -> bool:
        return any(t < b + pad and t + d > a - pad for a, b in held)

    writes = [r for r in records if r[0] == "label"]
    inside = [r for r in writes if overlaps(r[1], r[2], 0.0)]
    clear = [r for r in writes if not overlaps(r[1], r[2], slack)]
    return {
        "runs": ingest.runs,
        "lock_held_s": sum(b - a for a, b in held),
        "lock_windows": len(held),
        "writes_overlapping_lock": len(inside),
        "of_those_409": sum(r[3] == 409 for r in inside),
        "of_those_200": sum(r[3] == 200 for r in inside),
        "writes_clear_of_lock": len(clear),
        "of_those_409_clear": sum(r[3] == 409 for r in clear),
        "other_holders": sorted({pid for pid, _, _ in watch.intervals} - ingest.pids),
    }


def _print_phase(p: dict) -> None:
    print(f"\n{p['name']}: {p['requests']} requests in {p['seconds']:.0f} s ({p['per_s']:.0f}/s)")
    print(phase_table(p))
    v = p["verify"]
    print(f"lost writes {v['lost']} of {v['acked_ids']} acknowledged ids; phantom {v['phantom']}")
    print(f"CPU s: {p['cpu_s']}; client loop lag {p['client_loop_lag']}")
    if "ingest" in p:
        print(json.dumps({k: v for k, v in p["ingest"].items() if k != "runs"}, indent=1))


# ---- baseline and where time goes -----------------------------------------------------------
def baseline(store: Path, read_ids: list[int], write_ids: list[int], seed: int) -> dict:
    """In process, single thread: the neighbour query (200 random images) and the costs
    behind a request: table rebuild, query after another connection committed, image
    record, label write."""
    from vecstore.store import Store

    rng = np.random.default_rng(seed)
    out: dict = {}
    with Store.open(store) as st:
        st.query(image_id=read_ids[0], k=K)  # warm: the index loaded once
        qs = rng.choice(read_ids, size=200, replace=False)
        times = []
        for iid in qs:
            t = time.perf_counter()
            st.query(image_id=int(iid), k=K)
            times.append(time.perf_counter() - t)
        out["query"] = percentiles(times)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            table = st.review_table()
            times.append(time.perf_counter() - t)
        out["review_table_s"] = float(np.median(times))
        times = []
        for iid in qs[:100]:
            t = time.perf_counter()
            st.image_record(table, int(iid))
            times.append(time.perf_counter() - t)
        out["image_record"] = percentiles(times)
        # a query right after another connection committed (what a label write does to the
        # next neighbour request of the server: data_version moved, the space's mark read)
        con = sqlite3.connect(store / "vecstore.db")
        times = []
        for iid in qs[:30]:
            con.execute("UPDATE images SET status = status WHERE id = ?", (int(iid),))
            con.commit()
            t = time.perf_counter()
            st.query(image_id=int(iid), k=K)
            times.append(time.perf_counter() - t)
        con.close()
        out["query_after_commit"] = percentiles(times)
        times = []
        for iid in write_ids[:30]:  # as the server writes: the lock taken per request
            t = time.perf_counter()
            with st.writing(purpose="bench") as w:
                w.set_label(str(iid), "normal", replace=True, source="review", who="bench")
            times.append(time.perf_counter() - t)
        out["label_write"] = percentiles(times)
    return out


# ---- output ----------------------------------------------------------------------------------
def fmt(v: float | None, digits: int = 1) -> str:
    return "" if v is None else f"{v:,.{digits}f}"


def phase_table(p: dict) -> str:
    rows = []
    for kind, e in p["endpoints"].items():
        target = TARGET_P95_MS.get(kind)
        if target is None or e["p95_ms"] is None:
            result = ""
        else:
            ok = e["p95_ms"] <= target and e["errors"] == 0 and p["verify"]["lost"] == 0
            result = "PASS" if ok else "FAIL"
        rows.append(
            [
                ENDPOINTS[kind],
                f"{e['requests']:,}",
                f"{e['per_s']:.1f}",
                f"{e['ok']:,}",
                f"{e['busy_409']:,}",
                f"{e['errors']:,}",
                f"{e['wrong']:,}",
                fmt(e["p50_ms"]),
                fmt(e["p95_ms"]),
                fmt(e["p99_ms"]),
                fmt(e["max_ms"]),
                f"p95 <= {target:.0f} ms" if target else "",
                result,
            ]
        )
    header = [
        "endpoint",
        "requests",
        "req/s",
        "2xx",
        "409 busy",
        "errors",
        "wrong",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "target",
        "result",
    ]
    return markdown_table(header, rows, [":--"] + ["--:"] * 10 + [":--", ":--"])


def markdown(res: dict) -> str:
    srv, b = res["server"], res["baseline"]
    parts = []
    for p in res["phases"]:
        v, cpu, lag = p["verify"], p["cpu_s"], p["client_loop_lag"]
        parts.append(
            f"**{p['name']}**: {p['requests']:,} requests in {p['seconds']:.0f} s "
            f"({p['per_s']:.0f}/s); lost writes **{v['lost']}** of {v['acked_ids']:,} "
            f"acknowledged ids, phantom {v['phantom']}; CPU s: server {cpu['server']:.1f}, "
            f"client {cpu['client']:.1f}, ingest {cpu['ingest']:.1f}, other processes "
            f"{cpu['other']:.1f} (of "
            f"{2 * p['wall_s']:.0f} core-s); client loop lag p99 {fmt(lag['p99_ms'])} ms; "
            f"server peak RSS {p['server_rss_peak_mib']:,.0f} MiB\n\n{phase_table(p)}\n"
        )
        if "ingest" in p:
            g = p["ingest"]
            runs = g["runs"]
            parts.append(
                f"Ingests during the phase: {len(runs)} (rc {sorted({r['rc'] for r in runs})}, "
                f"{sum(r['new'] or 0 for r in runs):,} new images), the write lock held by them "
                f"{g['lock_held_s']:.1f} s of {p['seconds']:.0f} in {g['lock_windows']} "
                f"windows. Label writes overlapping an ingest's lock: "
                f"{g['writes_overlapping_lock']} ({g['of_those_409']} answered 409 busy, "
                f"{g['of_those_200']} 200); writes clear"
                f" of it: {g['writes_clear_of_lock']} ({g['of_those_409_clear']} answered 409).\n"
            )
    load = next((p for p in res["phases"] if p["clients"] > 1), None)
    ratio = ""
    if load and load["endpoints"]["neighbours"]["p95_ms"]:
        e, q = load["endpoints"]["neighbours"], b["query"]
        ratio = (
            f"; neighbours under load / in process: p50 {fmt(e['p50_ms'])} / "
            f"{fmt(q['p50_ms'], 2)} ms = **{e['p50_ms'] / q['p50_ms']:,.0f}x**, p95 "
            f"{fmt(e['p95_ms'])} / {fmt(q['p95_ms'], 2)} ms = **{e['p95_ms'] / q['p95_ms']:,.0f}x**"
        )
    parts.append(
        "Baseline and where the time goes (in process, single thread, after the server stopped): "
        f"`Store.query(image_id, k=10)` p50 / p95 {fmt(b['query']['p50_ms'], 2)} / "
        f"{fmt(b['query']['p95_ms'], 2)} ms (200 images){ratio}; the same query right after "
        f"another connection committed p50 {fmt(b['query_after_commit']['p50_ms'])} ms; "
        f"`Store.review_table()` {b['review_table_s']:.2f} s; `Store.image_record` p50 "
        f"{fmt(b['image_record']['p50_ms'])} ms; a label write (lock + set_label) p50 "
        f"{fmt(b['label_write']['p50_ms'])} ms.\n"
    )
    head = (
        f"Server start: listening after {srv['listening_s']:.1f} s; first `/api/summary` "
        f"{srv['first_summary_ms']:,.0f} ms (the review table built), the second "
        f"{srv['second_summary_ms']:,.0f} ms; first neighbours {srv['first_ms']['neighbours']:,.0f}"
        f" ms, first image page {srv['first_ms']['image']:,.0f} ms.\n"
    )
    return head + "\n" + "\n".join(parts)


def notes(res: dict, a: argparse.Namespace) -> list[str]:
    s = res["setup"]
    t = s["times_s"]
    return [
        res["machine"],
        f"Python {sys.version.split()[0]}; vecstore at commit {res['commit']}; server: `vecstore "
        "serve` (uvicorn, one process); clients: one asyncio process, httpx.AsyncClient per "
        "client, one keep-alive connection each, on 127.0.0.1, sharing the 2 cores with the "
        "server",
        f"data: {s['images']:,} images (8x8 PNGs on disk), bench/synth.py Mixture 512-d imported "
        f"as space {s['space']} (index {s['index']}); {s['seeds']} expert labels "
        f"({s['seed_classes']}; cancer = family 0, {100 * s['cancer_share']:.0f} % of the "
        "images) and one `vecstore propagate` run",
        "setup (cached in --work, s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()),
        f"mix per request: 60 % neighbours (k=10, random image), 25 % image page (random "
        f"image), 15 % label write (normal/cancer at random, the client's own unlabeled "
        f"images); {a.clients} clients, {a.seconds:.0f} s per load phase; latencies of the 2xx "
        "answers; errors = any other status than 2xx and 409, or an exception "
        f"(timeout {TIMEOUT_S:.0f} s); wrong = a 2xx answer not about the image asked",
        "lost writes: acknowledged labels (the last per image) missing from the database's "
        "labels table as source review, read with sqlite3 after each phase",
        "with ingest: `vecstore --wait 60 ingest new/NN --space pixels` on folders of "
        f"{a.ingest_images:,} new PNGs one after another for the phase; who holds the write "
        f"lock read from /proc/locks every {1000 * LOCK_POLL_S:.0f} ms",
        "CPU s per phase: the server's, the client's and the ingests' own; other processes = "
        "the machine's (/proc/stat, less idle, iowait and steal) less those three, clamped at "
        "0 (approximate: a process's time includes what the hypervisor stole); before each "
        "phase the bench waits for the other processes to use under 0.15 of a core",
    ]


def git_state() -> str:
    """The commit measured, and the library's files changed from it in the work tree."""

    def git(*args: str) -> str:
        p = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO)
        return p.stdout

    dirty = [ln[3:] for ln in git("status", "--porcelain", "vecstore", "cli").splitlines()]
    return git("rev-parse", "--short", "HEAD").strip() + (
        f" + uncommitted changes to {', '.join(dirty)}" if dirty else ""
    )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/vecstore-bench-serve"))
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument(
        "--single-seconds", type=float, default=20.0, help="the 1-client phase (0: none)"
    )
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="mean pause of a client between requests, and before its first one (s, "
        "exponential, so that 50 clients do not all send their first request in the same "
        "millisecond; 0: back to back, all starting together)",
    )
    ap.add_argument("--with-ingest", action="store_true")
    ap.add_argument("--ingest-images", type=int, default=2000, help="new PNGs per folder")
    ap.add_argument("--ingest-folders", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each phase, wait up to this long for the machine's other processes to "
        "use under 0.15 of a core (their CPU is reported per phase either way)",
    )
    ap.add_argument("--out", type=Path, help="results JSON (default: WORK/serve.json)")
    ap.add_argument("--record", action="store_true", help="append a section to BENCHMARKS.md")
    return ap.parse_args()


def main() -> None:
    a = parse_args()
    work = a.work.resolve() / f"n{a.images}"
    load_avg = os.getloadavg()[0]
    info = setup(work, a.images)
    folders = (
        ingest_folders(work, a.images, a.ingest_images, a.ingest_folders)
        if (a.with_ingest)
        else None
    )
    store = work / "run-store"
    if store.exists():
        shutil.rmtree(store)
    shutil.copytree(work / "base-store", store)
    con = sqlite3.connect(f"file:{store / 'vecstore.db'}?mode=ro", uri=True)
    read_ids = [i for (i,) in con.execute("SELECT id FROM images ORDER BY id")]
    seeded = {i for (i,) in con.execute("SELECT image_id FROM labels")}
    con.close()
    write_ids = [i for i in read_ids if i not in seeded]
    random.Random(a.seed).shuffle(write_ids)
    commit = git_state()
    server = Server(store, work, read_ids[0])
    acked: dict[int, str] = {}
    attempted: set[int] = set()
    plan = [("1 client", 1, a.single_seconds, None)] if a.single_seconds > 0 else []
    plan.append((f"{a.clients} clients", a.clients, a.seconds, None))
    if a.with_ingest:
        plan.append((f"{a.clients} clients, ingest running", a.clients, a.seconds, folders))
    phases = []
    try:
        for k, (name, clients, seconds, ingest) in enumerate(plan):
            ids = (read_ids, write_ids, acked, attempted)
            phases.append(
                phase(
                    name,
                    server,
                    store,
                    clients,
                    seconds,
                    *ids,
                    a.seed + k,
                    ingest,
                    a.quiet_wait,
                    a.think,
                )  # fmt: skip
            )
    finally:
        server.stop()
    log("baseline: in process")
    wait_quiet(a.quiet_wait)
    base = baseline(store, read_ids, write_ids, a.seed)
    res = {
        "machine": machine_line(load_avg),
        "commit": commit,
        "setup": info,
        "server": {
            "listening_s": server.listening_s,
            "first_summary_ms": server.first_summary_ms,
            "second_summary_ms": server.second_summary_ms,
            "first_ms": server.first_ms,
        },
        "phases": phases,
        "baseline": base,
        "args": {k: str(v) for k, v in vars(a).items()},
    }
    out = a.out or work / "serve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    body = markdown(res)
    print("\n" + body)
    log(f"results: {out}")
    if a.record:
        cmd = "python bench/serve.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
        path = record("vecstore serve under load (issue 14)", notes(res, a), cmd.strip(), body)
        log(f"recorded in {path}")


if __name__ == "__main__":
    main()
