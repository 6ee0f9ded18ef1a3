#!/usr/bin/env python3
"""HTTP benchmark of a running vicinity server: ingest throughput and query latency.

1. Ingest: POSTs --docs generated documents of about --words words each into a fresh text
   collection, --batch documents per request from --concurrency clients at once, and reports
   documents/s (every request must answer 200: a 2xx means durable).
2. Waits until the collection's approximate index is built and holds every passage (reported
   as index_caught_up_s, from the start of the ingest).
3. Latency: runs `wrk` (Debian's package) for --duration seconds per setting, at concurrency 1
   and 16, with text queries (embedded by the server) and vector queries (embedded beforehand),
   k = 10, and reports requests/s, p50 and p99 and the count of non-2xx answers.

Start the server first, e.g.
    cargo run --release -- serve --data-dir /tmp/vicinity-bench --addr 127.0.0.1:8080
then
    python3 scripts/bench_http.py --addr 127.0.0.1:8080
Standard library only; prints one JSON object per measurement, then a Markdown table.
"""

import argparse
import concurrent.futures as cf
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from words import sentence



def call(base, method, path, body=None, timeout=120):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def ingest(base, name, args):
    rng = random.Random(args.seed)
    docs = [
        {"id": f"d{i}", "text": sentence(rng, args.words), "metadata": {"group": i % 10}}
        for i in range(args.docs)
    ]
    batches = [docs[i : i + args.batch] for i in range(0, len(docs), args.batch)]

    def post(batch):
        status, body = call(base, "POST", f"/collections/{name}/documents", {"documents": batch})
        if status != 200:
            raise RuntimeError(f"ingest answered {status}: {body}")
        return len(batch)

    started = time.perf_counter()
    done = 0
    with cf.ThreadPoolExecutor(args.concurrency) as pool:
        for n in pool.map(post, batches):
            done += n
            if done % (args.batch * 100) == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  ingested {done}/{len(docs)} ({rate:.0f} docs/s)", file=sys.stderr)
    elapsed = time.perf_counter() - started
    # Writes are acknowledged (durable and searchable) before the approximate index holds them:
    # also report when it caught up, counted from the start of the ingest.
    wait_for_index(base, name)
    indexed = time.perf_counter() - started
    return {
        "measure": "ingest",
        "index_caught_up_s": round(indexed, 2),
        "documents": len(docs),
        "words": args.words,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 2),
        "documents_per_s": round(len(docs) / elapsed, 1),
    }


def raw_embed(base, args):
    """The same texts, batches and concurrency through /v1/embeddings: embedding alone, no
    splitting, storage or indexing; the ceiling the ingest is compared with."""
    rng = random.Random(args.seed)
    texts = [sentence(rng, args.words) for _ in range(args.docs)]
    batches = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]

    def post(batch):
        status, body = call(base, "POST", "/v1/embeddings", {"input": batch})
        if status != 200:
            raise RuntimeError(f"/v1/embeddings answered {status}: {body}")
        return len(batch)

    started = time.perf_counter()
    with cf.ThreadPoolExecutor(args.concurrency) as pool:
        done = sum(pool.map(post, batches))
    elapsed = time.perf_counter() - started
    return {
        "measure": "embed_only",
        "documents": done,
        "words": args.words,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 2),
        "documents_per_s": round(done / elapsed, 1),
    }


def wait_for_index(base, name, limit_s=900):
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        _, info = call(base, "GET", f"/collections/{name}")
        state = info["index_state"]
        if state["status"] in ("ready", "none") and state["pending"] == 0:
            return info
        time.sleep(1)
    raise RuntimeError(f"the index of {name} was not ready after {limit_s} s: {info}")


WRK_SCRIPT = """
bodies = {%s}
request = function()
  return wrk.format("POST", "%s", {["Content-Type"] = "application/json"},
                    bodies[math.random(#bodies)])
end
"""


def parse_ms(value):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_wrk(base_url, path, bodies, connections, args, kind):
    lua = WRK_SCRIPT % (",\n".join(f"[==[{b}]==]" for b in bodies), path)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(lua)
        f.flush()
        threads = min(connections, 2)
        out = subprocess.run(
            [args.wrk, f"-t{threads}", f"-c{connections}", f"-d{args.duration}s", "--latency",
             "-s", f.name, base_url],
            capture_output=True, text=True, check=True,
        ).stdout
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "measure": "query",
        "kind": kind,
        "concurrency": connections,
        "requests_per_s": rps,
        "p50_ms": round(parse_ms(pct["50"]), 3),
        "p90_ms": round(parse_ms(pct["90"]), 3),
        "p99_ms": round(parse_ms(pct["99"]), 3),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "none",
        "duration_s": args.duration,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--addr", default="127.0.0.1:8080")
    ap.add_argument("--collection", default="bench_http")
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--words", type=int, default=12)
    ap.add_argument("--batch", type=int, default=64, help="documents per ingest request")
    ap.add_argument("--concurrency", type=int, default=4, help="ingest clients at once")
    ap.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--skip-ingest", action="store_true", help="reuse the collection as it is")
    ap.add_argument("--raw-embed", action="store_true",
                    help="first embed the same texts through /v1/embeddings (no storage, no index)")
    ap.add_argument("--skip-queries", action="store_true", help="measure the ingest only")
    ap.add_argument("--index", default="auto", help="the collection's index type")
    ap.add_argument("--kinds", default="vector,text", help="query kinds to measure")
    ap.add_argument("--levels", default="1,16", help="wrk concurrency levels")
    args = ap.parse_args()

    base = f"http://{args.addr}"
    name = args.collection
    results = []
    if args.raw_embed:
        results.append(raw_embed(base, args))
        print(json.dumps(results[-1]), flush=True)
    if not args.skip_ingest:
        call(base, "DELETE", f"/collections/{name}")
        status, body = call(base, "PUT", f"/collections/{name}", {"distance": "cosine", "index": {"type": args.index}})
        if status != 201:
            sys.exit(f"cannot create the collection: {status} {body}")
        results.append(ingest(base, name, args))
        results[-1]["index"] = args.index
        print(json.dumps(results[-1]), flush=True)
    if args.skip_queries:
        return
    info = wait_for_index(base, name)
    print(f"  collection ready: {info['passages']} passages, index {info['index_state']}",
          file=sys.stderr)

    rng = random.Random(args.seed + 1)
    questions = [sentence(rng, 8) for _ in range(200)]
    status, emb = call(base, "POST", "/v1/embeddings", {"input": questions})
    if status != 200:
        sys.exit(f"cannot embed the queries: {status} {emb}")
    text_bodies = [json.dumps({"query": q, "k": 10}) for q in questions]
    vector_bodies = [
        json.dumps({"vector": [round(x, 6) for x in d["embedding"]], "k": 10})
        for d in emb["data"]
    ]
    path = f"/collections/{name}/query"
    _, plan = call(base, "POST", path, json.loads(vector_bodies[0]))
    print(f"  queries run on plan {plan['plan']!r}", file=sys.stderr)
    kinds = args.kinds.split(",")
    for kind, bodies in (("vector", vector_bodies), ("text", text_bodies)):
        if kind not in kinds:
            continue
        for connections in (int(c) for c in args.levels.split(",")):
            results.append(run_wrk(base, path, bodies, connections, args, kind))
            results[-1]["plan"] = plan["plan"]
            results[-1]["passages"] = info["passages"]
            print(json.dumps(results[-1]), flush=True)

    print("\n| query | concurrency | req/s | p50 ms | p99 ms | non-2xx |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        if r["measure"] == "query":
            print(f"| {r['kind']} | {r['concurrency']} | {r['requests_per_s']:.0f} | "
                  f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non_2xx']} |")


if __name__ == "__main__":
    main()
