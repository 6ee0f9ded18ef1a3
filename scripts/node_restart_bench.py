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
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.status, json.loads(r.read() or b"null")


class Node:
    def __init__(self, args, name, url, work):
        self.args, self.name, self.url = args, name, url
        self.data = os.path.join(work, name)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [self.args.binary, "serve", "--addr", f"127.0.0.1:{self.port}", "--data-dir",
             self.data, "--model", self.args.model, "--chunk-overlap", "4",
             "--database-url", self.url, "--node-id", self.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"node {self.name} exited with {self.proc.returncode}")
            try:
                if get(self.base + "/readyz")[0] == 200:
                    return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.02)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=600)

    def index_state(self):
        return get(self.base + "/collections/big")[1]["index_state"]

    def wait_indexed(self):
        while True:
            s = self.index_state()
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
    args = p.parse_args()

    name = f"restart_bench_{os.getpid()}"
    subprocess.run(["psql", args.postgres, "-qc", f"CREATE DATABASE {name}"], check=True)
    parts = urllib.parse.urlsplit(args.postgres)
    url = urllib.parse.urlunsplit(parts._replace(path="/" + name))
    work = tempfile.mkdtemp(prefix="vicinity-restart-")
    a, b = Node(args, "a", url, work), Node(args, "b", url, work)
    try:
        a.start()
        started = time.monotonic()
        subprocess.run([args.binary, "import", "--url", a.base, "--collection", "big",
                        "--create", "--batch", "512", "--concurrency", "4", args.vectors],
                       check=True, stdout=subprocess.DEVNULL)
        imported = time.monotonic() - started
        a.wait_indexed()
        info = get(a.base + "/collections/big")[1]
        print(json.dumps({"passages": info["passages"], "import_s": imported,
                          "indexed_s": time.monotonic() - started}), flush=True)
        for _ in range(args.restarts):
            a.stop()
            ready = a.start()
            state = a.index_state()
            print(json.dumps({"restart_ready_s": ready, "index_at_ready": state}), flush=True)
        ready = b.start()
        joined = time.monotonic()
        print(json.dumps({"join_ready_s": ready, "index_at_ready": b.index_state()}),
              flush=True)
        b.wait_indexed()
        print(json.dumps({"join_graph_built_s": ready + time.monotonic() - joined}),
              flush=True)
    finally:
        for n in (a, b):
            n.stop()
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["psql", args.postgres, "-qc", f"DROP DATABASE IF EXISTS {name}"])


if __name__ == "__main__":
    main()
