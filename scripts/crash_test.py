#!/usr/bin/env python3
"""Crash test: an acknowledged write must survive `kill -9`.

Each run:
1. starts `vicinity serve` on a fresh temporary data directory and a free loopback port;
2. imports --docs generated documents (short unique sentences) into a text collection over
   HTTP, --batch documents per request from --threads clients, recording every id the server
   acknowledged (a 200 answer);
3. sends SIGKILL to the server at a random moment during the import: once a random number of
   documents (uniform over 1 .. 90 % of --docs) has been acknowledged, plus a random 0-200 ms, so
   the kill lands while requests are in flight (a run whose import completed before the kill
   fails);
4. restarts the server on the same data directory and waits for /readyz;
5. checks that the collection's document count is at least the number acknowledged, that every
   acknowledged document is there (GET /collections/C/documents/ID, with its exact text), and
   that it is searchable: a text query with its own text returns it in the top --k. A document
   a query misses is queried again with "exact": true, to tell an approximate-index miss from a
   document absent from the index; and that the lexical index has it too: a lexical query with
   its own text returns it in the top --k;
6. stops the server with SIGTERM and expects exit status 0.

With the defaults 10,000 documents stay under the server's exact-search threshold and the kill
lands on SQLite writes; `--server-arg=--exact-threshold=1000 --server-arg=--snapshot-every=500
--server-arg=--index-defer-max=0` also builds the HNSW index and snapshots it many times during
the import, so the kill can land on an index build or a snapshot write as well (without
--index-defer-max=0 the server defers graph work while the import keeps its encoder busy).

Prints one line per run and a summary; exits 1 if any acknowledged document was lost, not
searchable (by either index), or the count was short. Standard library only.

    python3 scripts/crash_test.py --runs 5 \
        --binary target/release/vicinity --model /path/to/all-MiniLM-L6-v2
"""

import argparse
import collections
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from words import words

COLLECTION = "crash"



def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP connection per thread."""

    def __init__(self, port, timeout=120):
        self.port = port
        self.timeout = timeout
        self.local = threading.local()

    def call(self, method, path, body=None):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout
            )
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except Exception:
            conn.close()
            self.local.conn = None
            raise
        return resp.status, (json.loads(raw) if raw else None)


class Server:
    def __init__(self, args, data_dir, port):
        self.args = args
        self.data_dir = data_dir
        self.port = port
        self.proc = None
        self.log = None

    def start(self, label):
        env = dict(os.environ)
        env.pop("VICINITY_API_KEY", None)
        env.pop("VICINITY_READ_ONLY_API_KEY", None)
        env["RUST_LOG"] = env.get("RUST_LOG", "info")
        self.log = open(os.path.join(self.data_dir, f"server-{label}.log"), "w")
        cmd = [
            self.args.binary,
            "serve",
            "--model", self.args.model,
            "--data-dir", self.data_dir,
            "--addr", f"127.0.0.1:{self.port}",
            *self.args.server_arg,
        ]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        client = Client(self.port, timeout=5)
        deadline = time.monotonic() + self.args.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if client.call("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {self.args.start_timeout}s; see {self.log.name}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


def make_docs(rng, run, n):
    docs = []
    for i in range(n):
        text = f"Note {i}: {words(rng, 10)}."
        docs.append({"id": f"r{run}-{i}", "text": text, "metadata": {"n": i}})
    return docs


def import_until_killed(args, rng, server, client, docs):
    """Imports `docs` from several threads and kills the server mid-way. Returns the ids the
    server acknowledged, the kill target, and the count of failed requests."""
    batches = [docs[i : i + args.batch] for i in range(0, len(docs), args.batch)]
    acked = set()
    lock = threading.Lock()
    # At most 90 % through, so that the 0-200 ms after it cannot reach the end of the import.
    target = rng.randint(1, max(1, len(docs) * 9 // 10))
    extra_ms = rng.randint(0, 200)
    reached = threading.Event()
    killed = threading.Event()
    failures = [0]

    def post(batch):
        if killed.is_set():
            return
        try:
            status, body = client.call("POST", f"/collections/{COLLECTION}/documents",
                                       {"documents": batch})
        except (OSError, http.client.HTTPException):
            with lock:
                failures[0] += 1
            return
        if status != 200:
            with lock:
                failures[0] += 1
            return
        ids = [d["id"] for d in body["documents"]]
        sent = {d["id"] for d in batch}
        if set(ids) != sent:
            raise RuntimeError(f"acknowledged ids differ from those sent: {ids}")
        with lock:
            acked.update(ids)
            if len(acked) >= target:
                reached.set()

    def killer():
        reached.wait()
        time.sleep(extra_ms / 1000)
        killed.set()
        server.kill9()

    k = threading.Thread(target=killer)
    k.start()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(post, batches))
    if not killed.is_set():  # import finished before the target: cannot happen, target < docs
        reached.set()
    k.join()
    # Acknowledgements that arrived before the kill are all recorded: `post` adds them under
    # the lock as soon as the 200 is read, and no 200 can be read after SIGKILL.
    return acked, target, extra_ms, failures[0]


def restore_line(log_path):
    """The restart's "collection restored" log line: snapshot loaded, missing or unusable, and
    the passages left to index."""
    with open(log_path, errors="replace") as f:
        for line in f:
            if "collection restored" in line:
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)
                fields = dict(re.findall(r"(\w+)=(\S+)", line))
                snapshot = fields.get("snapshot", "?").strip('"')
                lexical = re.search(r'lexical="?([^"]*?)"?(?: \w+=|$)', line)
                lexical = lexical.group(1) if lexical else "?"
                return (f"snapshot {snapshot}, {fields.get('pending', '?')} pending, "
                        f"lexical {lexical}")
    return "no collection restored"


def verify(args, client, docs_by_id, acked):
    # Wait for an approximate index rebuilt or caught up at start, so that the queries below
    # run on it rather than on the exact scan used meanwhile.
    deadline = time.monotonic() + args.start_timeout
    while True:
        status, info = client.call("GET", f"/collections/{COLLECTION}")
        if status != 200:
            return {"error": f"GET collection answered {status}: {info}"}
        state = info.get("index_state") or {}
        if state.get("status") != "building" and not state.get("pending"):
            break
        if time.monotonic() > deadline:
            return {"error": f"index still not ready: {state}"}
        time.sleep(0.2)
    count = info["documents"]
    plans = collections.Counter()

    def check(doc_id):
        status, body = client.call("GET", f"/collections/{COLLECTION}/documents/{doc_id}")
        if status != 200:
            return "missing"
        if body.get("text") != docs_by_id[doc_id]["text"]:
            return "changed"
        return None

    def search(chunk, mode="dense"):
        queries = [{"query": docs_by_id[i]["text"], "k": args.k, "mode": mode} for i in chunk]
        status, body = client.call("POST", f"/collections/{COLLECTION}/query/batch",
                                   {"queries": queries})
        if status != 200:
            raise RuntimeError(f"batch query answered {status}: {body}")
        misses = []
        for res in body["results"]:
            if mode == "dense":
                plans[res.get("plan")] += 1
        for doc_id, res in zip(chunk, body["results"]):
            if doc_id not in {r["document_id"] for r in res["results"]}:
                misses.append(doc_id)
        return misses

    ids = sorted(acked)
    with ThreadPoolExecutor(args.threads) as pool:
        problems = [(i, p) for i, p in zip(ids, pool.map(check, ids)) if p]
        chunks = [ids[i : i + 32] for i in range(0, len(ids), 32)]
        misses = [m for ms in pool.map(search, chunks) for m in ms]
        lexical_misses = [m for ms in pool.map(lambda c: search(c, "lexical"), chunks)
                          for m in ms]

    unsearchable = []
    for doc_id in misses:
        status, body = client.call("POST", f"/collections/{COLLECTION}/query", {
            "query": docs_by_id[doc_id]["text"], "k": args.k, "mode": "dense",
            "params": {"exact": True}})
        if status != 200 or doc_id not in {r["document_id"] for r in body["results"]}:
            unsearchable.append(doc_id)
    return {
        "count": count,
        "missing": [i for i, p in problems if p == "missing"],
        "changed": [i for i, p in problems if p == "changed"],
        "approx_misses": len(misses) - len(unsearchable),
        "unsearchable": unsearchable,
        "lexical_unsearchable": lexical_misses,
        "index": state.get("ann") or "flat only",
        "plans": dict(plans),
    }


def one_run(args, run, rng):
    data_dir = tempfile.mkdtemp(prefix=f"vicinity-crash-{run}-")
    port = free_port()
    server = Server(args, data_dir, port)
    client = Client(port)
    try:
        server.start("first")
        status, body = client.call("PUT", f"/collections/{COLLECTION}", {"distance": "cosine"})
        if status not in (200, 201):
            raise RuntimeError(f"create collection answered {status}: {body}")
        docs = make_docs(rng, run, args.docs)
        started = time.monotonic()
        acked, target, extra_ms, failures = import_until_killed(args, rng, server, client, docs)
        import_s = time.monotonic() - started

        client = Client(port)
        started = time.monotonic()
        server.start("restart")
        restart_s = time.monotonic() - started
        restored = restore_line(server.log.name)
        result = verify(args, client, {d["id"]: d for d in docs}, acked)
        result["restored"] = restored
        code = server.stop()
    except BaseException:
        if server.proc and server.proc.poll() is None:
            server.proc.kill()
        raise
    ok = (
        len(acked) < len(docs)
        and "error" not in result
        and result["count"] >= len(acked)
        and not result["missing"]
        and not result["changed"]
        and not result["unsearchable"]
        and not result["lexical_unsearchable"]
        and code == 0
    )
    result.update(run=run, acked=len(acked), kill_after=target, extra_ms=extra_ms,
                  failed_requests=failures, import_s=round(import_s, 2),
                  restart_s=round(restart_s, 2), exit_code=code, ok=ok, data_dir=data_dir)
    if ok and not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="target/release/vicinity", help="the vicinity binary")
    p.add_argument("--model", required=True, help="the model directory (all-MiniLM-L6-v2)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--docs", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=50, help="documents per request")
    p.add_argument("--threads", type=int, default=4, help="concurrent import requests")
    p.add_argument("--k", type=int, default=5, help="results per verification query")
    p.add_argument("--seed", type=int, default=None, help="random seed (printed when not given)")
    p.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for /readyz")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="an extra argument of `vicinity serve`, e.g. --server-arg=--exact-threshold=1000 "
                        "(repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the data directories of passing runs")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"seed {seed}", flush=True)
    rng = random.Random(seed)

    results = []
    for run in range(1, args.runs + 1):
        r = one_run(args, run, rng)
        results.append(r)
        print(
            f"run {run}: killed after {r['kill_after']} acks + {r['extra_ms']} ms; "
            f"acknowledged {r['acked']} in {r['import_s']} s ({r['failed_requests']} requests cut "
            f"by the kill); restart ready in {r['restart_s']} s ({r.get('restored')}); "
            f"count {r.get('count')}; queries by plan {r.get('plans')}; "
            f"missing {len(r.get('missing', []))}, changed {len(r.get('changed', []))}, "
            f"not searchable {len(r.get('unsearchable', []))} "
            f"(approximate-index misses {r.get('approx_misses')}), "
            f"not found lexically {len(r.get('lexical_unsearchable', []))}; "
            f"SIGTERM exit {r['exit_code']}: {'ok' if r['ok'] else 'FAIL'}"
            + (" (the import completed before the kill)" if r["acked"] >= args.docs else ""),
            flush=True,
        )
        if not r["ok"]:
            print(json.dumps({k: (v[:20] if isinstance(v, list) else v) for k, v in r.items()}),
                  flush=True)
    lost = sum(len(r.get("missing", [])) + len(r.get("unsearchable", []))
               + len(r.get("lexical_unsearchable", [])) for r in results)
    acked = sum(r["acked"] for r in results)
    failed = sum(not r["ok"] for r in results)
    print(f"summary: {len(results)} runs, {acked} documents acknowledged, {lost} lost or not "
          f"searchable, {failed} failed runs")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
