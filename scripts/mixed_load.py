#!/usr/bin/env python3
"""Mixed-load benchmark: query latency of vicinity while ingest, snapshots and an index rebuild
overlap, for one or more server binaries measured in the same sitting.

For each binary given with --binary (e.g. the previous main and the new build), once:
  setup   start `BINARY serve` on a temporary data directory and a free 127.0.0.1 port, create
          the text collection `docs` (default index), ingest --passages generated documents of
          one passage each (--batch per request, --ingest-concurrency clients), wait until its
          approximate index holds them all, stop the server (SIGTERM: the index is snapshotted)
          and keep the data directory as this binary's template.
Then, --rounds times, the binaries in turn (A B, then B A, A B, ...), each on a fresh copy of its template,
started with --snapshot-interval (default 2s) so that index snapshots are written during the
load:
  idle    text queries from --text-concurrency clients (8) and vector queries from
          --vector-concurrency clients (2) at once, for --duration seconds, nothing else running.
  load    the same query mix while (a) an import of --import-docs new documents (20,000) runs
          over HTTP upserts into `docs`, and (b) a delete of --delete-fraction of the collection's
          documents (by metadata filter, at the start) pushes the HNSW graph's tombstones past
          the quarter at which the server compacts it: one rebuild of the queried index. The
          phase lasts while the import runs, then until the rebuild is over (the collection is
          `ready` with nothing pending, at most --rebuild-wait seconds more). Snapshots are
          counted from the index directory's modification times, the rebuild from the
          collection's `index_state` (polled every second) and the server log.
  queued  --queued-requests upserts in flight at once (10), together holding --queued-passages
          generated one-passage documents (50,000), into a second collection; meanwhile text
          queries on `docs` from --queued-query-concurrency clients (1), for --queued-duration
          seconds or until the upserts are done. An upsert refused with 413 is split in halves
          and sent again; one refused with 429 or 503 is retried after a second.

Each phase stops after its time or --max-requests answered queries, whichever comes first. Every
answer is counted: latency percentiles (p50, p90, p99, max) over 2xx answers, the others by
status. Queries report which plan served them (`hnsw`, `exact`, ...): a rebuild that drops the
live index shows up as exact plans under load.

Goals checked (issue 10): text p99 under load <= 3x idle text p99; vector p99 under load
<= 10 ms; text p99 with the queue full <= 100 ms.

Traffic goes to 127.0.0.1 only; every server runs in a temporary directory, removed at the end
(--keep keeps them). Standard library only. Prints progress on stderr, one JSON object per
phase on stdout, then a Markdown table; --json-out also writes all results to a file.

    python3 scripts/mixed_load.py --model /path/to/all-MiniLM-L6-v2 \\
        --binary main=/work/baseline/vicinity --binary new=target/release/vicinity
    # a quick check of the script itself (about 3 minutes per binary):
    python3 scripts/mixed_load.py --model ... --binary target/release/vicinity \\
        --passages 1500 --import-docs 500 --queued-passages 2000 --duration 5 \\
        --queued-duration 10 --rebuild-wait 60 --server-arg=--exact-threshold=500
"""

import argparse
import collections
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from local_server import Client, Server, percentile, rss_kib
from words import sentence

DOCS = "docs"
QUEUE = "queued"
GROUPS = 20


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_doc(rng, prefix, i, words):
    return {"id": f"{prefix}{i}", "text": sentence(rng, words), "metadata": {"group": i % GROUPS}}


def upsert(client, name, docs, stop=None, depth=0):
    """Posts `docs`; a 413 splits them in halves (the server's limit on one request), a 429 or
    503 is retried after a second. Returns (documents stored, statuses seen other than 200)."""
    refused = collections.Counter()
    while True:
        if stop is not None and stop.is_set():
            return 0, refused
        status, body = client.call("POST", f"/collections/{name}/documents", {"documents": docs})
        if status == 200:
            return len(docs), refused
        refused[status] += 1
        if status == 413 and len(docs) > 1:
            half = len(docs) // 2
            a, ra = upsert(client, name, docs[:half], stop, depth + 1)
            b, rb = upsert(client, name, docs[half:], stop, depth + 1)
            return a + b, refused + ra + rb
        if status in (429, 503):
            time.sleep(1)
            continue
        raise RuntimeError(f"upsert into {name} answered {status}: {str(body)[:300]}")


def ingest(client, name, prefix, n, args, seed, stop=None):
    """Upserts n generated documents, --batch per request from --ingest-concurrency clients."""
    rng = random.Random(seed)
    docs = [make_doc(rng, prefix, i, args.words) for i in range(n)]
    batches = [docs[i : i + args.batch] for i in range(0, n, args.batch)]
    started = time.perf_counter()
    done = [0]
    refused = collections.Counter()
    lock = threading.Lock()

    def post(batch):
        stored, r = upsert(client, name, batch, stop)
        with lock:
            done[0] += stored
            refused.update(r)
            if done[0] % (args.batch * 200) < args.batch:
                rate = done[0] / (time.perf_counter() - started)
                log(f"  {name}: {done[0]}/{n} documents ({rate:.0f}/s)")

    with ThreadPoolExecutor(args.ingest_concurrency) as pool:
        list(pool.map(post, batches))
    elapsed = time.perf_counter() - started
    return {"documents": done[0], "seconds": round(elapsed, 2),
            "documents_per_s": round(done[0] / elapsed, 1), "refused": dict(refused)}


def describe(client, name):
    status, info = client.call("GET", f"/collections/{name}")
    if status != 200:
        raise RuntimeError(f"GET /collections/{name} answered {status}: {info}")
    return info


def wait_ready(client, name, limit_s):
    started = time.monotonic()
    while True:
        info = describe(client, name)
        state = info.get("index_state") or {}
        if state.get("status") in ("ready", "none") and not state.get("pending"):
            return info
        if time.monotonic() - started > limit_s:
            raise RuntimeError(f"{name} not ready after {limit_s} s: {state}")
        time.sleep(1)


class QueryLoad:
    """Text and vector query clients running until stop(): latencies of 2xx answers, other
    answers by status, plans by kind."""

    def __init__(self, port, name, text_bodies, vector_bodies, text_c, vector_c, max_requests,
                 seed):
        self.port, self.name = port, name
        self.bodies = {"text": text_bodies, "vector": vector_bodies}
        self.clients = [("text", i) for i in range(text_c)] + [
            ("vector", i) for i in range(vector_c)]
        self.max_requests = max_requests
        self.seed = seed
        self.lat = {"text": [], "vector": []}
        self.errors = {"text": collections.Counter(), "vector": collections.Counter()}
        self.plans = {"text": collections.Counter(), "vector": collections.Counter()}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.count = 0

    def worker(self, kind, n):
        rng = random.Random(self.seed * 100 + n + (50 if kind == "vector" else 0))
        client = Client(self.port, timeout=60)
        bodies = self.bodies[kind]
        path = f"/collections/{self.name}/query"
        while not self.stopping.is_set():
            body = bodies[rng.randrange(len(bodies))]
            t0 = time.perf_counter()
            try:
                status, resp = client.call("POST", path, raw_body=body)
                err = None if 200 <= status < 300 else str(status)
            except Exception as e:  # noqa: BLE001 - every failure is counted, by type
                err, resp = type(e).__name__, None
            dt = time.perf_counter() - t0
            with self.lock:
                self.count += 1
                if err:
                    self.errors[kind][err] += 1
                else:
                    self.lat[kind].append(dt)
                    plan = resp.get("plan") if isinstance(resp, dict) else None
                    self.plans[kind][str(plan)] += 1
                if self.count >= self.max_requests:
                    self.stopping.set()

    def start(self):
        self.started = time.perf_counter()
        self.threads = [threading.Thread(target=self.worker, args=c, daemon=True)
                        for c in self.clients]
        for t in self.threads:
            t.start()

    def run_for(self, seconds):
        self.stopping.wait(seconds)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=120)
        self.elapsed = time.perf_counter() - self.started
        return self.summary()

    def summary(self):
        out = {}
        for kind in ("text", "vector"):
            if not any(k == kind for k, _ in self.clients):
                continue
            v = sorted(self.lat[kind])
            out[kind] = {
                "concurrency": sum(1 for k, _ in self.clients if k == kind),
                "ok": len(v),
                "per_s": round(len(v) / self.elapsed, 1),
                "p50_ms": round(1000 * percentile(v, 0.50), 2),
                "p90_ms": round(1000 * percentile(v, 0.90), 2),
                "p99_ms": round(1000 * percentile(v, 0.99), 2),
                "max_ms": round(1000 * (v[-1] if v else float("nan")), 2),
                "errors": dict(self.errors[kind]),
                "plans": dict(self.plans[kind]),
            }
        return out


class Watcher:
    """Polls the collection's index state every second and the index directory's modification
    times (each change is one snapshot written) until stopped."""

    def __init__(self, port, name, data_dir, pid):
        self.client = Client(port, timeout=60)
        self.name, self.index_dir, self.pid = name, os.path.join(data_dir, "indexes"), pid
        self.statuses = collections.Counter()
        self.building_entries = 0
        self.snapshots = 0
        self.max_rss_kib = 0
        self.last = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def mtime(self):
        latest = 0.0
        for root, _, files in os.walk(self.index_dir):
            for f in files:
                try:
                    latest = max(latest, os.stat(os.path.join(root, f)).st_mtime)
                except OSError:
                    pass
        return latest

    def run(self):
        seen = self.mtime()
        prev = None
        while not self.stopping.wait(1.0):
            try:
                state = describe(self.client, self.name).get("index_state") or {}
            except Exception:  # noqa: BLE001 - a failed poll is only a missing sample
                state = {}
            status = state.get("status", "?")
            self.statuses[status] += 1
            if status == "building" and prev != "building":
                self.building_entries += 1
            prev = status
            self.last = state
            m = self.mtime()
            if m > seen:
                self.snapshots += 1
                seen = m
            self.max_rss_kib = max(self.max_rss_kib, rss_kib(self.pid) or 0)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join()
        return {"status_samples": dict(self.statuses), "building_entries": self.building_entries,
                "snapshot_writes_seen": self.snapshots, "max_rss_mib": self.max_rss_kib // 1024}


def log_count(path, pattern):
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if re.search(pattern, line))
    except OSError:
        return 0


def query_bodies(client, args):
    rng = random.Random(args.seed + 1)
    questions = [sentence(rng, 8) for _ in range(200)]
    status, emb = client.call("POST", "/v1/embeddings", {"input": questions})
    if status != 200:
        raise RuntimeError(f"cannot embed the queries: {status} {emb}")
    # Without text and metadata in the answers: the latency is the search, not the payload.
    text = [json.dumps({"query": q, "k": args.k, "include": []}).encode() for q in questions]
    vector = [json.dumps({"vector": [round(x, 6) for x in d["embedding"]], "k": args.k,
                          "include": []}).encode() for d in emb["data"]]
    return text, vector


def server_args(args):
    return ["--snapshot-interval", args.snapshot_interval, *args.server_arg]


def setup(label, binary, args):
    """Ingests the collection once per binary; returns the template directory."""
    server = Server(binary, args.model, server_args(args), start_timeout=args.start_timeout)
    log(f"{label}: setup in {server.data_dir}")
    try:
        client = server.start()
        status, body = client.call("PUT", f"/collections/{DOCS}", {"distance": "cosine"})
        if status not in (200, 201):
            raise RuntimeError(f"creating {DOCS} answered {status}: {body}")
        result = ingest(client, DOCS, "d", args.passages, args, args.seed)
        info = wait_ready(client, DOCS, args.ready_wait)
        result["passages"] = info["passages"]
        log(f"{label}: {info['passages']} passages, index {info['index_state']}")
        code = server.stop(grace_s=120)
        if code != 0:
            raise RuntimeError(f"{label}: the server exited with {code} after the setup")
    except BaseException:
        server.stop(grace_s=5)
        raise
    return server.data_dir, result


def one_round(label, binary, template, args, rnd):
    data_dir = tempfile.mkdtemp(prefix=f"vicinity-mixed-{label}-")
    shutil.rmtree(data_dir)
    shutil.copytree(template, data_dir)
    # At info level the server logs its index builds, which the load phase counts.
    server = Server(binary, args.model, server_args(args), data_dir=data_dir,
                    start_timeout=args.start_timeout, log_level="info")
    server.owns_dir = not args.keep
    results = []
    try:
        started = time.monotonic()
        client = server.start()
        info = wait_ready(client, DOCS, args.ready_wait)
        base = {"binary": label, "round": rnd, "passages": info["passages"],
                "restart_s": round(time.monotonic() - started, 1)}
        text, vector = query_bodies(client, args)

        def load(text_c, vector_c, seed):
            return QueryLoad(server.port, DOCS, text, vector, text_c, vector_c,
                             args.max_requests, seed)

        # Idle.
        log(f"{label} round {rnd}: idle, {args.duration} s")
        q = load(args.text_concurrency, args.vector_concurrency, 1)
        q.start()
        q.run_for(args.duration)
        results.append({**base, "phase": "idle", **q.stop()})
        print(json.dumps(results[-1]), flush=True)

        # Import + snapshots + compaction rebuild.
        log(f"{label} round {rnd}: load: import {args.import_docs} documents, delete "
            f"{args.delete_fraction:.0%}, snapshots every {args.snapshot_interval}")
        builds_before = log_count(os.path.join(data_dir, "server.log"), "building approximate")
        watcher = Watcher(server.port, DOCS, data_dir, server.pid())
        watcher.start()
        q = load(args.text_concurrency, args.vector_concurrency, 2)
        q.start()
        t0 = time.monotonic()
        deleted = delete_groups(client, args)
        import_result = {}
        stop_import = threading.Event()

        def do_import():
            import_result.update(ingest(Client(server.port, timeout=600), DOCS, "imp",
                                        args.import_docs, args, args.seed + 2, stop_import))

        importer = threading.Thread(target=do_import, daemon=True)
        importer.start()
        importer.join(timeout=args.load_limit)
        stop_import.set()  # only matters when the import ran past --load-limit
        import_s = time.monotonic() - t0
        # Keep querying until the rebuild is over (bounded), so its whole window is measured.
        rebuild_deadline = time.monotonic() + args.rebuild_wait
        while time.monotonic() < rebuild_deadline and not q.stopping.is_set():
            state = watcher.last or {}
            if (watcher.building_entries or log_count(
                    os.path.join(data_dir, "server.log"), "building approximate") > builds_before) \
                    and state.get("status") == "ready" and not state.get("pending"):
                break
            time.sleep(1)
        summary = q.stop()
        watched = watcher.stop()
        builds = log_count(os.path.join(data_dir, "server.log"), "building approximate") \
            - builds_before
        results.append({**base, "phase": "load", **summary, **watched,
                        "import": import_result, "import_wall_s": round(import_s, 1),
                        "deleted_documents": deleted, "builds_logged": builds,
                        "phase_s": round(time.monotonic() - t0, 1)})
        print(json.dumps(results[-1]), flush=True)

        # Queued ingest.
        log(f"{label} round {rnd}: queued: {args.queued_passages} passages in "
            f"{args.queued_requests} upserts")
        status, body = client.call("PUT", f"/collections/{QUEUE}", {"distance": "cosine"})
        if status not in (200, 201):
            raise RuntimeError(f"creating {QUEUE} answered {status}: {body}")
        rng = random.Random(args.seed + 3)
        per = -(-args.queued_passages // args.queued_requests)
        docs = [make_doc(rng, "q", i, args.words) for i in range(args.queued_passages)]
        parts = [docs[i : i + per] for i in range(0, len(docs), per)]
        q = load(args.queued_query_concurrency, 0, 3)
        stop_ingest = q.stopping
        queued = {"stored": 0, "refused": collections.Counter(), "errors": []}
        queued_lock = threading.Lock()

        def post(part):
            try:
                stored, refused = upsert(Client(server.port, timeout=3600), QUEUE, part,
                                         stop_ingest)
                with queued_lock:
                    queued["stored"] += stored
                    queued["refused"].update(refused)
            except Exception as e:  # noqa: BLE001 - the server is stopped under them
                if not stop_ingest.is_set():
                    queued["errors"].append(f"{type(e).__name__}: {e}"[:200])

        posters = [threading.Thread(target=post, args=(p,), daemon=True) for p in parts]
        for t in posters:
            t.start()
        time.sleep(args.queued_delay)  # let the upserts reach the server first
        t0 = time.monotonic()
        q.start()
        deadline = t0 + args.queued_duration
        while time.monotonic() < deadline and any(t.is_alive() for t in posters) \
                and not q.stopping.is_set():
            time.sleep(0.5)
        summary = q.stop()
        results.append({**base, "phase": "queued", **summary,
                        "queued_passages": args.queued_passages,
                        "queued_requests": len(parts),
                        "stored_during_phase": queued["stored"],
                        "refused": {str(k): v for k, v in queued["refused"].items()},
                        "ingest_errors": queued["errors"][:5],
                        "phase_s": round(time.monotonic() - t0, 1)})
        print(json.dumps(results[-1]), flush=True)
    finally:
        # The queued upserts are abandoned: the server need not finish them.
        server.stop(grace_s=5)
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return results


def delete_groups(client, args):
    """Deletes the documents of the first groups, --delete-fraction of `docs`, one request per
    group (a metadata filter); where a filter delete is refused, by ids, 500 per request."""
    groups = max(1, round(args.delete_fraction * GROUPS))
    deleted = 0
    for g in range(groups):
        status, body = client.call("POST", f"/collections/{DOCS}/documents/delete",
                                   {"filter": {"group": g}})
        if status == 200:
            deleted += len(body["deleted"])
            continue
        ids = [f"d{i}" for i in range(g, args.passages, GROUPS)]
        for i in range(0, len(ids), 500):
            status, body = client.call("POST", f"/collections/{DOCS}/documents/delete",
                                       {"ids": ids[i : i + 500]})
            if status != 200:
                raise RuntimeError(f"delete answered {status}: {str(body)[:300]}")
            deleted += len(body["deleted"])
    return deleted


def table(results):
    rows = ["| binary | round | phase | text c | text n | text p50 | text p99 | text max | "
            "text err | vector c | vector p99 | text plans | notes |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |"]
    for r in results:
        t, v = r.get("text", {}), r.get("vector", {})
        notes = ""
        if r["phase"] == "load":
            notes = (f"{r['deleted_documents']} deleted, "
                     f"import {r['import'].get('documents_per_s', '?')} docs/s, "
                     f"{r['snapshot_writes_seen']} snapshots, {r['builds_logged']} builds "
                     f"logged, status {r['status_samples']}")
        elif r["phase"] == "queued":
            notes = f"{r['queued_passages']} queued, refused {r['refused']}"
        rows.append(
            f"| {r['binary']} | {r['round']} | {r['phase']} | {t.get('concurrency', '')} | "
            f"{t.get('ok', '')} | "
            f"{t.get('p50_ms', '')} | {t.get('p99_ms', '')} | {t.get('max_ms', '')} | "
            f"{t.get('errors') or ''} | {v.get('concurrency', '')} | {v.get('p99_ms', '')} | "
            f"{t.get('plans', '')} | {notes} |")
    return "\n".join(rows)


def goals(results):
    out = []
    by = collections.defaultdict(dict)
    for r in results:
        by[(r["binary"], r["round"])][r["phase"]] = r
    for (label, rnd), ph in by.items():
        idle, load, queued = ph.get("idle"), ph.get("load"), ph.get("queued")
        g = {"binary": label, "round": rnd}
        if idle and load:
            g["text_p99_load_over_idle"] = round(load["text"]["p99_ms"] / idle["text"]["p99_ms"], 2)
            g["text_ok"] = g["text_p99_load_over_idle"] <= 3.0
            if "vector" in load:
                g["vector_p99_load_ms"] = load["vector"]["p99_ms"]
                g["vector_ok"] = load["vector"]["p99_ms"] <= 10.0
        if queued:
            g["queued_text_p99_ms"] = queued["text"]["p99_ms"]
            g["queued_ok"] = queued["text"]["p99_ms"] <= 100.0
        out.append(g)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", action="append", required=True, metavar="[LABEL=]PATH",
                   help="a vicinity binary to measure (repeatable; measured in turn)")
    p.add_argument("--model", required=True, help="the model directory (all-MiniLM-L6-v2)")
    p.add_argument("--passages", type=int, default=100_000, help="size of the queried collection")
    p.add_argument("--words", type=int, default=12, help="words per generated document")
    p.add_argument("--batch", type=int, default=64, help="documents per ingest request")
    p.add_argument("--ingest-concurrency", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--duration", type=float, default=30, help="seconds of the idle phase")
    p.add_argument("--text-concurrency", type=int, default=8)
    p.add_argument("--vector-concurrency", type=int, default=2)
    p.add_argument("--import-docs", type=int, default=20_000)
    p.add_argument("--delete-fraction", type=float, default=0.35,
                   help="share of `docs` deleted at the start of the load phase (over 0.25: "
                        "the HNSW graph is compacted)")
    p.add_argument("--snapshot-interval", default="2s")
    p.add_argument("--load-limit", type=float, default=900, help="longest import, seconds")
    p.add_argument("--rebuild-wait", type=float, default=180,
                   help="seconds to keep querying after the import for the rebuild to finish")
    p.add_argument("--queued-passages", type=int, default=50_000)
    p.add_argument("--queued-requests", type=int, default=10)
    p.add_argument("--queued-query-concurrency", type=int, default=1)
    p.add_argument("--queued-duration", type=float, default=60)
    p.add_argument("--queued-delay", type=float, default=2,
                   help="seconds between sending the upserts and the first query")
    p.add_argument("--max-requests", type=int, default=1_000_000,
                   help="answered queries per phase")
    p.add_argument("--ready-wait", type=float, default=1800,
                   help="longest wait for an index to hold every passage, seconds")
    p.add_argument("--start-timeout", type=float, default=600)
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="an extra argument of `vicinity serve` for every binary (repeatable)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json-out", help="also write every result to this file")
    p.add_argument("--keep", action="store_true", help="keep the data directories")
    p.add_argument("--template", action="append", default=[], metavar="LABEL=DIR",
                   help="use DIR, a setup directory kept by an earlier run (--keep), as LABEL's "
                        "template instead of ingesting again (repeatable); it is copied, never "
                        "changed")
    args = p.parse_args()

    binaries = []
    for b in args.binary:
        label, _, path = b.rpartition("=")
        binaries.append((label or os.path.basename(os.path.dirname(os.path.abspath(path))) or path,
                         os.path.abspath(path)))
    if len({label for label, _ in binaries}) != len(binaries):
        sys.exit("give the binaries distinct labels: --binary main=PATH --binary new=PATH")

    given = {}
    for t in args.template:
        label, sep, path = t.partition("=")
        if not sep or not os.path.isfile(os.path.join(path, "vicinity.db")):
            sys.exit(f"--template {t}: give LABEL=DIR, DIR a data directory kept by --keep")
        given[label] = os.path.abspath(path)

    wall = time.monotonic()
    templates, results = {}, []
    try:
        for label, path in binaries:
            if label in given:
                log(f"{label}: template {given[label]}")
                continue
            templates[label], ingested = setup(label, path, args)
            results.append({"binary": label, "phase": "setup", "ingest": ingested})
            print(json.dumps(results[-1]), flush=True)
        for rnd in range(1, args.rounds + 1):
            order = binaries if rnd % 2 else binaries[::-1]
            for label, path in order:
                template = given.get(label) or templates[label]
                results.extend(one_round(label, path, template, args, rnd))
    finally:
        if not args.keep:
            for d in templates.values():
                shutil.rmtree(d, ignore_errors=True)
    measured = [r for r in results if r["phase"] != "setup"]
    g = goals(measured)
    print()
    print(table(measured))
    print()
    for row in g:
        print(json.dumps(row))
    total = round(time.monotonic() - wall)
    print(f"total {total} s", file=sys.stderr)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "results": results, "goals": g, "total_s": total}, f,
                      indent=1)


if __name__ == "__main__":
    main()
