#!/usr/bin/env python3
"""sentence-transformers on PyTorch CPU, measured on exactly the sentences `vicinity bench embed`
uses, with the same schedule and the same JSON output, for a side-by-side comparison.

    vicinity bench embed --batch 1,32 --words 12,120 --print-texts > texts.jsonl
    python3 scripts/bench_embed_pytorch.py --model /path/to/all-MiniLM-L6-v2 texts.jsonl

Each point: one warm-up batch, then batches one after another (cycling through the point's pool)
until both --runs and --duration are reached; sentences/s over the summed batch times, p50/p99 of
the batch latencies. `torch.set_num_threads` is --threads (2 by default, the cores of the
benchmark machine). Needs `pip install sentence-transformers`.
"""

import argparse
import json
import math
import sys
import time


def percentile(sorted_values, q):
    # Nearest rank, as vicinity's benchmark computes it.
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("texts", help="output of `vicinity bench embed --print-texts`")
    ap.add_argument("--model", required=True, help="sentence-transformers model directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model, device="cpu")
    with open(args.texts) as f:
        points = [json.loads(line) for line in f if line.strip()]
    for point in points:
        batch, pool = point["batch"], point["texts"]
        nxt = 0

        def take():
            nonlocal nxt
            texts = [pool[(nxt + i) % len(pool)] for i in range(batch)]
            nxt = (nxt + batch) % len(pool)
            return texts

        def run(texts):
            started = time.perf_counter()
            model.encode(texts, batch_size=batch, normalize_embeddings=False)
            return time.perf_counter() - started

        run(take())
        latencies, total = [], 0.0
        while len(latencies) < args.runs or total < args.duration:
            elapsed = run(take())
            latencies.append(elapsed)
            total += elapsed
        latencies.sort()
        print(json.dumps({
            "impl": "sentence-transformers",
            "batch": batch,
            "words": point["words"],
            "sentences_per_s": round(batch * len(latencies) / total, 2),
            "p50_ms": round(percentile(latencies, 0.50) * 1e3, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
            "threads": args.threads,
            "torch": torch.__version__,
            "runs": len(latencies),
        }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
