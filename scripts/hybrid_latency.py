#!/usr/bin/env python3
"""Query latency of the dense, lexical and hybrid modes against a running server.

One client sends queries one after another; each query runs in the three modes, in random
order, so that the modes see the same machine state. Prints client-side p50/p99 per mode (and
the server's own `time_ms`), and the hybrid/dense ratio of the p50s.

    python3 scripts/hybrid_latency.py --addr 127.0.0.1:8080 --collection docs \\
        --queries /tmp/pydoc-eval/queries.jsonl --n 200

`--replace-text DB CORPUS` instead rewrites the passage texts of a (copied, stopped) data
directory's database with 60-word chunks of CORPUS (JSONL documents with "text"), cycled, and
keeps the vectors: the lexical leg then sees real term statistics at the collection's size.
Standard library only.
"""
import argparse
import json
import random
import sqlite3
import time
import urllib.request

MODES = ["dense", "lexical", "hybrid"]


def replace_text(db_path, corpus):
    chunks = []
    with open(corpus) as f:
        for line in f:
            words = json.loads(line)["text"].split()
            chunks += [" ".join(words[i:i + 60]) for i in range(0, len(words), 60)]
    db = sqlite3.connect(db_path)
    ids = [r[0] for r in db.execute("SELECT id FROM passages ORDER BY id")]
    db.executemany("UPDATE passages SET text = ? WHERE id = ?",
                   [(chunks[i % len(chunks)], pid) for i, pid in enumerate(ids)])
    db.commit()
    print(f"{len(ids)} passages rewritten from {len(chunks)} chunks")


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", default="127.0.0.1:8080")
    p.add_argument("--collection", default="docs")
    p.add_argument("--queries", help="JSONL with a \"query\" per line; default: generated from --words")
    p.add_argument("--words", help="a file of words to make 3-8 word queries from")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--replace-text", nargs=2, metavar=("DB", "CORPUS"))
    args = p.parse_args()
    if args.replace_text:
        replace_text(*args.replace_text)
        return
    rng = random.Random(args.seed)
    if args.queries:
        with open(args.queries) as f:
            texts = [json.loads(line)["query"] for line in f if line.strip()]
        make = lambda: rng.choice(texts)
    else:
        with open(args.words) as f:
            words = f.read().split()
        make = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))
    url = f"http://{args.addr}/collections/{args.collection}/query"
    client = {m: [] for m in MODES}
    server = {m: [] for m in MODES}
    for i in range(args.n + args.warmup):
        text = make()
        order = MODES[:]
        rng.shuffle(order)
        for mode in order:
            body = json.dumps({"query": text, "k": 10, "mode": mode, "include": []}).encode()
            req = urllib.request.Request(url, body, {"content-type": "application/json"})
            started = time.perf_counter()
            answer = json.load(urllib.request.urlopen(req))
            ms = (time.perf_counter() - started) * 1e3
            if i >= args.warmup:
                client[mode].append(ms)
                server[mode].append(answer["time_ms"])
    for m in MODES:
        print(f"{m:8s} client p50 {pct(client[m], .5):6.2f} p99 {pct(client[m], .99):6.2f} ms | "
              f"server p50 {pct(server[m], .5):6.2f} p99 {pct(server[m], .99):6.2f} ms (n={len(client[m])})")
    print(f"hybrid/dense p50: client {pct(client['hybrid'], .5) / pct(client['dense'], .5):.2f}, "
          f"server {pct(server['hybrid'], .5) / pct(server['dense'], .5):.2f}")


if __name__ == "__main__":
    main()
