#!/usr/bin/env python3
"""A node holding a large collection on PostgreSQL: its restart-to-ready from its snapshot, and
a new node's time to converge on the same collection.

On the PostgreSQL server named by --postgres (an admin URL) a fresh database is created. Node A
(`BINARY serve`, own data directory, a free 127.0.0.1 port) imports --vectors (a JSONL file of
{"id", "vector"} lines; `BINARY import`) into a collection with the default index, and waits
until its approximate index holds every passage. Then:

1. restart: A is stopped with SIGTERM (it writes its index snapshot) and started again,
   --restarts times; each time from the process start to /readyz answering 200, and whether
   the graph came from the snapshot (no build pending at ready).
2. join: node B starts on an empty data directory: the time to /readyz (every vector loaded
   from PostgreSQL, applied at the collection's version) and until its own graph is built
   (it has no snapshot; queries scan exactly meanwhile).

Traffic goes to 127.0.0.1 only. Standard library only; prints one JSON object per step.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from local_server import Node


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.status, json.loads(r.read() or b"null")


def index_state(node):
    return get(node.base + "/collections/big")[1]["index_state"]


def wait_indexed(node):
    while True:
        s = index_state(node)
        if s["status"] == "ready" and s["pending"] == 0:
            return
        time.sleep(0.5)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default="target/release/vicinity")
    p.add_argument("--model", default="tests/fixtures/tiny-bert")
    p.add_argument("--postgres", required=True)
    p.add_argument("--vectors", required=True)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--keep", metavar="DIR",
                   help="keep node A's data directory and database in DIR, and reuse them "
                        "when DIR holds them already (import and build once, restart often)")
    p.add_argument("--no-join", action="store_true", help="skip step 2 (node B)")
    args = p.parse_args()

    kept = args.keep and os.path.exists(os.path.join(args.keep, "database"))
    if kept:
        with open(os.path.join(args.keep, "database")) as f:
            name = f.read().strip()
    else:
        name = f"restart_bench_{os.getpid()}"
        subprocess.run(["psql", args.postgres, "-qc", f"CREATE DATABASE {name}"], check=True)
    parts = urllib.parse.urlsplit(args.postgres)
    url = urllib.parse.urlunsplit(parts._replace(path="/" + name))
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        with open(os.path.join(args.keep, "database"), "w") as f:
            f.write(name)
    work = args.keep or tempfile.mkdtemp(prefix="vicinity-restart-")
    shutil.rmtree(os.path.join(work, "b"), ignore_errors=True)
    a, b = (Node(args.binary, args.model, n, url, work) for n in ("a", "b"))
    try:
        a.start()
        started = time.monotonic()
        if not kept:
            subprocess.run([args.binary, "import", "--url", a.base, "--collection", "big",
                            "--create", "--batch", "512", "--concurrency", "4", args.vectors],
                           check=True, stdout=subprocess.DEVNULL)
        imported = time.monotonic() - started
        wait_indexed(a)
        info = get(a.base + "/collections/big")[1]
        print(json.dumps({"passages": info["passages"], "import_s": imported,
                          "indexed_s": time.monotonic() - started}), flush=True)
        for _ in range(args.restarts):
            a.stop()
            ready = a.start()
            state = index_state(a)
            print(json.dumps({"restart_ready_s": ready, "index_at_ready": state}), flush=True)
        if args.no_join:
            return
        ready = b.start()
        joined = time.monotonic()
        print(json.dumps({"join_ready_s": ready, "index_at_ready": index_state(b)}),
              flush=True)
        wait_indexed(b)
        print(json.dumps({"join_graph_built_s": ready + time.monotonic() - joined}),
              flush=True)
    finally:
        for n in (a, b):
            n.stop()
        if args.keep:
            # B's node id leaves the registry when it stops; its data is not reused.
            shutil.rmtree(b.data_dir, ignore_errors=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
            subprocess.run(["psql", args.postgres, "-qc", f"DROP DATABASE IF EXISTS {name}"])


if __name__ == "__main__":
    main()
