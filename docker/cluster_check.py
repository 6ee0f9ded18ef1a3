#!/usr/bin/env python3
"""The checks of docker/cluster_test.sh, against a running compose stack.

Imports --docs generated documents through the load balancer from 4 threads, each batch retried
until it is acknowledged (upserts by id are idempotent). Once a third is acknowledged, the
--kill node's container gets SIGKILL; once two thirds are, it is started again. Then, on every
node directly (at its container's address):
- every acknowledged document is stored (read back by id);
- 100 queries, each a document's own text, answered at the version of the last acknowledged
  write, give identical hits and scores on all nodes, and each finds its document first;
and the example RAG client, run through the load balancer, answers its question with passages
from the README. Standard library only; exits non-zero on the first failed check.
"""

import argparse
import http.client
import json
import os
import pathlib
import random
import shlex
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
from local_server import Client  # noqa: E402
from words import sentence  # noqa: E402

COLLECTION = "corpus"


class Failed(Exception):
    pass


def client(url, key):
    """A keep-alive JSON client of `url` that sends the API key."""
    u = urllib.parse.urlsplit(url)
    return Client(u.port, timeout=60, host=u.hostname, headers={"authorization": f"Bearer {key}"})


def request(client, method, path, body=None):
    """(status, body); status 0 when the connection failed (a node down, say)."""
    try:
        return client.call(method, path, body)
    except (OSError, http.client.HTTPException):
        return 0, None


def docker(*args):
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def address(container):
    ip = docker("inspect", "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container).split()
    if not ip:
        raise Failed(f"container {container} has no address")
    return f"http://{ip[0]}:8080"


def wait_ready(client, what, limit=180):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status, _ = request(client, "GET", "/readyz")
        if status == 200:
            return
        time.sleep(0.5)
    raise Failed(f"{what} not ready within {limit} s")


class Import:
    """Batches sent through the load balancer, each retried until acknowledged."""

    def __init__(self, lb):
        self.lb = lb
        self.lock = threading.Lock()
        self.acked = 0
        self.version = 0
        self.retries = {}
        self.marks = {}

    def send(self, batch):
        deadline = time.monotonic() + 180
        while True:
            status, body = request(self.lb, "POST", f"/collections/{COLLECTION}/documents",
                                   {"documents": batch})
            if 200 <= status < 300:
                with self.lock:
                    self.acked += len(batch)
                    self.version = max(self.version, body["version"])
                    for mark, event in self.marks.items():
                        if self.acked >= mark:
                            event.set()
                return
            if status not in (0, 429, 502, 503, 504) or time.monotonic() > deadline:
                raise Failed(f"upsert answered {status}: {body}")
            what = f"{status} {body.get('code', '')}".strip() if isinstance(body, dict) else str(status)
            with self.lock:
                self.retries[what] = self.retries.get(what, 0) + 1
            time.sleep(0.5)

    def at(self, count):
        event = threading.Event()
        self.marks[count] = event
        return event


def kill_and_restart(container, name, killed_at, restart_at, log):
    started = docker("inspect", "--format", "{{.State.StartedAt}}", container)
    killed_at.wait()
    docker("kill", "--signal", "KILL", container)
    log(f"SIGKILL to {name}")
    restart_at.wait()
    # The restart policy may already have brought it back; otherwise start it by hand.
    if docker("inspect", "--format", "{{.State.Running}}", container) != "true":
        docker("start", container)
    if docker("inspect", "--format", "{{.State.StartedAt}}", container) == started:
        raise Failed(f"{name} was not restarted")
    log(f"{name} started again")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lb", required=True, help="the load balancer's URL")
    p.add_argument("--node", action="append", required=True, help="NAME=CONTAINER_ID")
    p.add_argument("--kill", required=True, help="the node to SIGKILL mid-import")
    p.add_argument("--rag-client", required=True, help="the command that runs the RAG client")
    p.add_argument("--api-key", default=os.environ.get("VICINITY_API_KEY"))
    p.add_argument("--docs", type=int, default=3000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    nodes = dict(n.split("=", 1) for n in args.node)
    started = time.monotonic()

    def log(msg):
        print(f"cluster_check: [{time.monotonic() - started:6.1f} s] {msg}", flush=True)

    rng = random.Random(args.seed)
    docs = [{"id": f"doc-{i}", "text": " ".join(sentence(rng, 12) for _ in range(3)),
             "metadata": {"n": i}} for i in range(args.docs)]

    lb = client(args.lb, args.api_key)
    wait_ready(lb, "the load balancer")
    status, body = request(lb, "PUT", f"/collections/{COLLECTION}", {"distance": "cosine"})
    if status not in (200, 201):
        raise Failed(f"creating the collection answered {status}: {body}")

    imp = Import(lb)
    batches = [docs[i:i + args.batch] for i in range(0, len(docs), args.batch)]
    with ThreadPoolExecutor(5) as pool:
        killer = pool.submit(kill_and_restart, nodes[args.kill], args.kill,
                             imp.at(args.docs // 3), imp.at(2 * args.docs // 3), log)
        sends = [pool.submit(imp.send, b) for b in batches]
        try:
            for f in sends:
                f.result()
        finally:
            # A failed import must not leave the killer waiting for a mark never reached.
            for event in imp.marks.values():
                event.set()
        killer.result(timeout=60)
    log(f"imported {imp.acked} documents, last version {imp.version}, "
        f"retried after: {imp.retries or 'nothing'}")
    if not imp.retries:
        log("note: no request failed while the node was down (the balancer routed around it)")

    clients = {}
    for name, container in nodes.items():
        clients[name] = client(address(container), args.api_key)
        wait_ready(clients[name], name)
    log("every node ready")

    # Nothing acknowledged is lost: each node reads every document back from the store.
    ids = [d["id"] for d in docs]
    for name, node in clients.items():
        found = set()
        for i in range(0, len(ids), 1000):
            status, body = request(node, "POST", f"/collections/{COLLECTION}/documents/get",
                                   {"ids": ids[i:i + 1000], "limit": 1000})
            if status != 200:
                raise Failed(f"{name}: reading documents answered {status}: {body}")
            found.update(d["id"] for d in body["documents"])
        missing = sorted(set(ids) - found)
        if missing:
            raise Failed(f"{name}: {len(missing)} acknowledged documents missing, e.g. {missing[:5]}")
    log(f"all {len(ids)} acknowledged documents stored, read through each node")

    # The nodes converge: identical answers at the last version, each text finding itself.
    sample = random.Random(args.seed + 1).sample(docs, min(args.queries, len(docs)))
    for doc in sample:
        answers = {}
        for name, node in clients.items():
            status, body = request(node, "POST", f"/collections/{COLLECTION}/query", {
                "query": doc["text"], "k": 5, "mode": "dense", "include": [],
                "consistency": {"min_version": imp.version}})
            if status != 200:
                raise Failed(f"{name}: query answered {status}: {body}")
            answers[name] = [(r["document_id"], round(r["score"], 4)) for r in body["results"]]
            if answers[name][0][0] != doc["id"]:
                raise Failed(f"{name}: the text of {doc['id']} found {answers[name][0]} first")
        if len({json.dumps(a) for a in answers.values()}) != 1:
            raise Failed(f"nodes answer {doc['id']}'s text differently: {answers}")
    log(f"{len(sample)} queries: identical answers on {len(clients)} nodes, each document first")

    # The example RAG client, through the load balancer.
    run = subprocess.run(shlex.split(args.rag_client), capture_output=True, text=True, timeout=300)
    print(run.stdout, end="")
    if run.returncode != 0:
        raise Failed(f"the RAG client exited {run.returncode}: {run.stderr[-2000:]}")
    top = run.stdout.split("\n[1] ", 1)[-1]
    if "[1] README.md" not in run.stdout or "docker" not in top.lower():
        raise Failed("the RAG client's first passage is not the README's container section")
    log("the RAG client's first passage is from the README and speaks of docker")


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        sys.exit(f"cluster_check: FAILED: {e}")
