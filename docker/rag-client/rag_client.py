#!/usr/bin/env python3
"""Example RAG client of vicinity: indexes a folder, asks a question, prints the passages.

Indexes every .txt and .md file under --folder into a text collection (document id = the file's
path relative to the folder, so running it again replaces rather than duplicates), then sends
the question as a text query and prints the best passages with their file, character span and
score: the context a RAG application would hand to its language model. Standard library only.

    VICINITY_URL=http://127.0.0.1:8080 python3 rag_client.py --folder ./docs "my question"
"""

import argparse
import json
import os
import pathlib
import sys
import urllib.error
import urllib.request


def call(args, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if args.api_key:
        req.add_header("authorization", f"Bearer {args.api_key}")
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {path} answered {e.code}: {e.read().decode(errors='replace')}")


def index_folder(args):
    root = pathlib.Path(args.folder)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".txt", ".md") and p.is_file())
    if not files:
        sys.exit(f"no .txt or .md files under {root}")
    call(args, "PUT", f"/collections/{args.collection}", {"distance": "cosine"})
    passages = 0
    version = None
    for start in range(0, len(files), args.batch):
        docs = [
            {
                "id": str(p.relative_to(root)),
                "text": p.read_text(encoding="utf-8", errors="replace"),
                "metadata": {"path": str(p.relative_to(root))},
            }
            for p in files[start : start + args.batch]
        ]
        docs = [d for d in docs if d["text"].strip()]
        if docs:
            answer = call(args, "POST", f"/collections/{args.collection}/documents",
                          {"documents": docs})
            passages += sum(d["passages"] for d in answer["documents"])
            version = answer.get("version", version)
    print(f"indexed {len(files)} files ({passages} passages) into '{args.collection}'")
    return version


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("question")
    p.add_argument("--folder", help="index the .txt and .md files under this folder first")
    p.add_argument("--url", default=os.environ.get("VICINITY_URL", "http://127.0.0.1:8080"))
    p.add_argument("--api-key", default=os.environ.get("VICINITY_API_KEY"))
    p.add_argument("--collection", default="docs")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--batch", type=int, default=16, help="files per request")
    args = p.parse_args()

    query = {"query": args.question, "k": args.k, "include": ["text"]}
    if args.folder:
        # Behind a load balancer the query may reach another node than the writes did: it
        # waits there until that node has applied them.
        version = index_folder(args)
        if version is not None:
            query["consistency"] = {"min_version": version}
    answer = call(args, "POST", f"/collections/{args.collection}/query", query)
    print(f"question: {args.question}")
    for rank, r in enumerate(answer["results"], 1):
        span = r["passage"]
        print(f"\n[{rank}] {r['document_id']} (characters {span['start']}-{span['end']}, "
              f"score {r['score']:.3f})")
        print("    " + " ".join(r["text"].split())[:600])


if __name__ == "__main__":
    main()
