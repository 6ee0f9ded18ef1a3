#!/usr/bin/env python3
"""Ingest throughput of one vicinity server on SQLite and on PostgreSQL, in the same sitting.

For each round, for each backend in turn (sqlite, postgres, then postgres, sqlite, ...): start
`BINARY serve` on a fresh temporary data directory and a free 127.0.0.1 port, with the store in
SQLite (the default file in the data directory) or in a fresh database created on the PostgreSQL
server named by --postgres (an admin URL); create a vector collection of --dimension; run
`BINARY import` on --vectors (a JSONL file of {"id", "vector", "metadata"} lines) with --batch
documents per request and --concurrency requests at once; report documents/s from the import's
own wall time (every request answered 2xx: a 2xx means committed). The server is stopped with
SIGTERM after each run. Vector documents keep the encoder out of the measurement, so what is
compared is the write path: validation, the store's transaction and the in-memory indexes.

Traffic goes to 127.0.0.1 only. Standard library only; prints one JSON object per run, then a
Markdown table of medians.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.read()


def with_database(admin, name):
    parts = urllib.parse.urlsplit(admin)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def run(args, backend, round_no):
    work = tempfile.mkdtemp(prefix="vicinity-ingest-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [args.binary, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", f"{work}/data",
           "--model", args.model] + args.server_arg
    if backend == "postgres":
        name = f"ingest_{os.getpid()}_{round_no}"
        subprocess.run(["psql", "-q", args.postgres, "-c", f"CREATE DATABASE {name}"], check=True)
        cmd += ["--database-url", with_database(args.postgres, name)]
    log = open(f"{work}/server.log", "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "RUST_LOG": "warn"})
    try:
        deadline = time.time() + 120
        while True:
            try:
                if request("GET", f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"the server did not start; see {work}/server.log")
            time.sleep(0.25)
        request("PUT", f"{base}/collections/vectors",
                {"dimension": args.dimension, "index": {"type": "hnsw"}})
        started = time.perf_counter()
        imported = subprocess.run(
            [args.binary, "import", "--url", base, "--collection", "vectors",
             "--batch", str(args.batch), "--concurrency", str(args.concurrency), args.vectors],
            capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if imported.returncode != 0:
            raise SystemExit(f"import failed:\n{imported.stdout}\n{imported.stderr}")
        stats = json.loads(request("GET", f"{base}/collections/vectors")[1])
        result = {"backend": backend, "round": round_no, "documents": stats["documents"],
                  "seconds": round(elapsed, 2),
                  "docs_per_s": round(stats["documents"] / elapsed, 1)}
        print(json.dumps(result), flush=True)
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="target/release/vicinity")
    p.add_argument("--model", required=True, help="any model directory (vectors are given)")
    p.add_argument("--postgres", required=True, help="admin URL of a PostgreSQL server")
    p.add_argument("--vectors", required=True, help="JSONL of {id, vector, metadata}")
    p.add_argument("--dimension", type=int, default=384)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra argument for `serve` (repeatable)")
    args = p.parse_args()
    results = []
    for r in range(args.rounds):
        order = ["sqlite", "postgres"] if r % 2 == 0 else ["postgres", "sqlite"]
        for backend in order:
            results.append(run(args, backend, r))
    print("\n| backend | documents | docs/s (median) | per round |")
    print("| --- | ---: | ---: | --- |")
    for backend in ["sqlite", "postgres"]:
        rates = [x["docs_per_s"] for x in results if x["backend"] == backend]
        docs = results[0]["documents"]
        print(f"| {backend} | {docs:,} | {statistics.median(rates):,.1f} | "
              f"{', '.join(f'{x:,.1f}' for x in rates)} |")


if __name__ == "__main__":
    sys.exit(main())
