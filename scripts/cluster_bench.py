#!/usr/bin/env python3
"""Several vicinity nodes on one PostgreSQL database: replication lag under ingest, a new
node's convergence, restart-to-ready, and query throughput of one node against two.

On the PostgreSQL server named by --postgres (an admin URL), a fresh database is created; nodes
A and B are started on it (`BINARY serve`, each with its own data directory and a free
127.0.0.1 port). Then:

1. ingest: --n random vectors of --dimension are upserted through A in batches of --batch, one
   request at a time. After each acknowledgement (which carries the collection version v), a
   probe thread asks B for one neighbour with `"consistency": {"min_version": v}`: the time
   from A's acknowledgement to B's answer is the replication lag of that write (it includes one
   query on B, a millisecond or less). Reports documents/s and the lag's p50/p99/max.
2. join: node C starts on an empty data directory; reports the time to /readyz and to holding
   the collection's latest version (C loads it from PostgreSQL).
3. restart: B is stopped with SIGTERM (it writes its index snapshots) and started again on
   its data directory; reports the time from start to /readyz.
4. throughput: --clients threads send vector queries (k 10) for --seconds, first all to A, then
   round-robin over A and B (the balancing a load balancer does), alternating --rounds times;
   reports queries/s of each. On one machine the nodes share its cores.

Traffic goes to 127.0.0.1 only. Standard library only; prints JSON lines, then a summary.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from local_server import Node


def request(method, url, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read() or b"null")


def with_database(admin, name):
    parts = urllib.parse.urlsplit(admin)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def vectors(rng, n, dim):
    return [[round(rng.gauss(0.0, 1.0), 4) for _ in range(dim)] for _ in range(n)]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ingest(args, a, b, rng):
    lags, probes = [], []
    lock = threading.Lock()

    def probe(version, acked, query):
        body = {"vector": query, "k": 1, "consistency": {"min_version": version}}
        request("POST", b.base + "/collections/bench/query", body)
        with lock:
            lags.append(time.monotonic() - acked)

    # Encoded before the clock starts: the client's own work (and its lock) stays out of the
    # timings.
    batches = []
    for start in range(0, args.n, args.batch):
        vs = vectors(rng, min(args.batch, args.n - start), args.dimension)
        docs = [{"id": f"d{start + i}", "vector": v} for i, v in enumerate(vs)]
        batches.append((json.dumps({"documents": docs}).encode(), vs[0]))
    started = time.monotonic()
    version = 0
    for body, first in batches:
        req = urllib.request.Request(a.base + "/collections/bench/documents", data=body,
                                     method="POST", headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            done = json.loads(r.read())
        acked = time.monotonic()
        version = done["version"]
        t = threading.Thread(target=probe, args=(version, acked, first))
        t.start()
        probes.append(t)
    elapsed = time.monotonic() - started
    for t in probes:
        t.join()
    return {"docs_per_s": args.n / elapsed, "writes": len(lags),
            "lag_p50_ms": pct(lags, 50) * 1e3, "lag_p99_ms": pct(lags, 99) * 1e3,
            "lag_max_ms": max(lags) * 1e3, "version": version}


def throughput(args, nodes, rng, seconds):
    queries = vectors(rng, 256, args.dimension)
    count = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(i):
        n = 0
        j = i
        while time.monotonic() < stop:
            node = nodes[j % len(nodes)]
            request("POST", node.base + "/collections/bench/query",
                    {"vector": queries[j % len(queries)], "k": 10})
            j += 1
            n += 1
        with lock:
            count[0] += n

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count[0] / seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default="target/release/vicinity")
    p.add_argument("--model", default="tests/fixtures/tiny-bert",
                   help="vectors are given: the model only has to load")
    p.add_argument("--postgres", required=True, help="admin URL of a PostgreSQL server")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--dimension", type=int, default=384)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--index", default="auto", help="the collection's index type")
    args = p.parse_args()

    rng = random.Random(args.seed)
    name = f"cluster_bench_{os.getpid()}"
    subprocess.run(["psql", args.postgres, "-qc", f"CREATE DATABASE {name}"], check=True)
    url = with_database(args.postgres, name)
    work = tempfile.mkdtemp(prefix="vicinity-cluster-")
    a, b, c = (Node(args.binary, args.model, n, url, work, ["--follow-interval", "200ms"])
               for n in ("a", "b", "c"))
    out = {"n": args.n, "dimension": args.dimension, "index": args.index}
    try:
        a.start()
        b.start()
        request("PUT", a.base + "/collections/bench",
                {"dimension": args.dimension, "distance": "cosine",
                 "index": {"type": args.index}})
        out["ingest"] = ingest(args, a, b, rng)
        print(json.dumps({"ingest": out["ingest"]}), flush=True)
        version = out["ingest"]["version"]

        ready = c.start()
        started = time.monotonic() - ready
        while c.applied("bench") < version:
            time.sleep(0.05)
        out["join"] = {"ready_s": ready, "converged_s": time.monotonic() - started}
        print(json.dumps({"join": out["join"]}), flush=True)
        c.stop()

        b.stop()
        out["restart"] = {"ready_s": b.start()}
        print(json.dumps({"restart": out["restart"]}), flush=True)
        while b.applied("bench") < version:
            time.sleep(0.05)

        one, two = [], []
        for _ in range(args.rounds):
            one.append(throughput(args, [a], rng, args.seconds))
            two.append(throughput(args, [a, b], rng, args.seconds))
            print(json.dumps({"qps_one_node": one[-1], "qps_two_nodes": two[-1]}), flush=True)
        out["qps_one_node"] = statistics.median(one)
        out["qps_two_nodes"] = statistics.median(two)
        print(json.dumps(out))
    finally:
        for n in (a, b, c):
            n.stop()
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["psql", args.postgres, "-qc", f"DROP DATABASE IF EXISTS {name}"])


if __name__ == "__main__":
    main()
