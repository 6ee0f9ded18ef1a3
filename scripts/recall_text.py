#!/usr/bin/env python3
"""Recall@k of a server's approximate index on real text, against its exact search, as the
collection grows.

Starts `BINARY serve` on a temporary data directory and a free 127.0.0.1 port (with
--exact-threshold low enough that even the smallest size gets an HNSW index), creates a cosine
text collection with the default index (or the settings of --index) and, for each size in --sizes, upserts passages of the
corpus (from scripts/doc_corpus.py) until the collection holds that many, waits until the index
holds them all, and then runs every query of the corpus as a vector query (embedded once by the
server's /v1/embeddings): with "exact": true (the reference), with the collection's defaults,
and with each `ef` of --ef. Reports the mean recall@k of each setting per size, and the share
of queries below recall 1.

    python3 scripts/doc_corpus.py --passages 50000 --queries 1000 --out /tmp/corpus
    python3 scripts/recall_text.py --binary target/release/vicinity --model /path/to/model \\
        --corpus /tmp/corpus --sizes 5000,20000,50000 --ef 64,96,128,192,256

Prints one JSON object per size and setting on stdout, then a Markdown table. Standard library
only.
"""

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from local_server import Server

NAME = "recall"


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def search(client, vectors, k, params, chunk=64):
    """Top-k passage ids of each query vector, with the query `params`."""
    out = []
    for i in range(0, len(vectors), chunk):
        queries = [{"vector": v, "k": k, "include": [], **({"params": params} if params else {})}
                   for v in vectors[i : i + chunk]]
        status, body = client.call("POST", f"/collections/{NAME}/query/batch",
                                   {"queries": queries})
        if status != 200:
            raise RuntimeError(f"batch query answered {status}: {str(body)[:300]}")
        for res in body["results"]:
            out.append(([h["id"] for h in res["results"]], res.get("plan")))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True, help="directory written by doc_corpus.py")
    ap.add_argument("--sizes", default="5000,20000,50000")
    ap.add_argument("--ef", default="32,48,64,96,128,192,256")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64, help="documents per upsert")
    ap.add_argument("--concurrency", type=int, default=2, help="upserts at once")
    ap.add_argument("--exact-threshold", type=int, default=1000)
    ap.add_argument("--server-arg", action="append", default=[], metavar="ARG")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--index", default="{}", metavar="JSON",
                    help='the collection\'s index settings, e.g. \'{"quantization": "none"}\' '
                         "(default: the server's defaults)")
    args = ap.parse_args()
    index = json.loads(args.index)

    passages = read_jsonl(os.path.join(args.corpus, "passages.jsonl"))
    queries = [q["text"] for q in read_jsonl(os.path.join(args.corpus, "queries.jsonl"))]
    sizes = [int(s) for s in args.sizes.split(",")]
    efs = [int(e) for e in args.ef.split(",")]
    if sizes[-1] > len(passages):
        sys.exit(f"the corpus holds {len(passages)} passages, fewer than {sizes[-1]}")

    server = Server(args.binary, args.model,
                    ["--exact-threshold", str(args.exact_threshold), *args.server_arg])
    server.owns_dir = not args.keep
    rows = []
    try:
        client = server.start()
        status, body = client.call("PUT", f"/collections/{NAME}",
                                   {"distance": "cosine", "index": index})
        if status not in (200, 201):
            sys.exit(f"creating the collection answered {status}: {body}")
        vectors = []
        for i in range(0, len(queries), 256):
            status, emb = client.call("POST", "/v1/embeddings", {"input": queries[i : i + 256]})
            if status != 200:
                sys.exit(f"/v1/embeddings answered {status}: {emb}")
            vectors += [d["embedding"] for d in emb["data"]]
        stored = 0
        for size in sizes:
            started = time.monotonic()
            batches = [passages[i : i + args.batch] for i in range(stored, size, args.batch)]

            def post(batch):
                status, body = client.call("POST", f"/collections/{NAME}/documents",
                                           {"documents": batch})
                if status != 200:
                    raise RuntimeError(f"upsert answered {status}: {str(body)[:300]}")

            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(post, batches))
            stored = size
            while True:
                _, info = client.call("GET", f"/collections/{NAME}")
                state = info["index_state"]
                if state["status"] == "ready" and state["pending"] == 0:
                    break
                time.sleep(1)
            print(f"{size} documents, {info['passages']} passages stored and indexed in "
                  f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
            exact = search(client, vectors, args.k, {"exact": True})
            settings = [("default", None)] + [(f"ef={e}", {"ef": e}) for e in efs]
            for label, params in settings:
                found = search(client, vectors, args.k, params)
                recalls = [len(set(f) & set(t)) / max(1, len(t))
                           for (f, _), (t, _) in zip(found, exact)]
                plans = sorted({p for _, p in found})
                row = {"documents": size, "passages": info["passages"], "setting": label,
                       "quantization": info["index"].get("quantization"),
                       "recall": round(sum(recalls) / len(recalls), 4),
                       "below_1": round(sum(r < 1 for r in recalls) / len(recalls), 3),
                       "queries": len(recalls), "plans": plans}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        server.remove() if not args.keep else server.stop()

    labels = []
    for r in rows:
        if r["setting"] not in labels:
            labels.append(r["setting"])
    print("\n| documents | passages | " + " | ".join(labels) + " |")
    print("| ---: | ---: |" + " ---: |" * len(labels))
    by_size = {}
    for r in rows:
        by_size.setdefault((r["documents"], r["passages"]), {})[r["setting"]] = r["recall"]
    for (docs, n), rec in by_size.items():
        print(f"| {docs} | {n} | " + " | ".join(f"{rec.get(lb, '')}" for lb in labels) + " |")


if __name__ == "__main__":
    main()
