#!/usr/bin/env python3
"""sentence-transformers' CrossEncoder on PyTorch CPU, measured on exactly the pairs `vicinity
bench rerank` uses, with the same schedule and the same JSON output, for a side-by-side
comparison.

    vicinity bench rerank --print-pairs > pairs.jsonl
    python3 scripts/bench_rerank_pytorch.py --model /path/to/cross-encoder pairs.jsonl
    vicinity bench rerank --model /path/to/cross-encoder --pairs-file pairs.jsonl --json

One warm-up request (the first), then every request of the file one after another, --rounds
times: `CrossEncoder.predict` on the request's (query, passage) pairs, as a Python service
reranking one query's candidates would call it. pairs/s over the summed request times, p50/p99
of the request latencies. `torch.set_num_threads` is --threads (2 by default, the cores of the
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
    ap.add_argument("pairs", help="output of `vicinity bench rerank --print-pairs`")
    ap.add_argument("--model", required=True, help="cross-encoder directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32, help="predict's batch_size (its default: 32)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(args.threads)
    model = CrossEncoder(args.model, device="cpu")
    with open(args.pairs) as f:
        requests = [json.loads(line) for line in f if line.strip()]

    def run(request):
        pairs = [(request["query"], text) for text in request["texts"]]
        started = time.perf_counter()
        scores = model.predict(pairs, batch_size=args.batch_size, show_progress_bar=False)
        elapsed = time.perf_counter() - started
        assert len(scores) == len(pairs)
        return elapsed

    tokens = [
        len(ids)
        for request in requests
        for ids in model.tokenizer(
            [request["query"]] * len(request["texts"]), request["texts"],
            truncation="longest_first", max_length=model.max_seq_length,
        )["input_ids"]
    ]
    run(requests[0])
    latencies, total, pairs = [], 0.0, 0
    for _ in range(args.rounds):
        for request in requests:
            elapsed = run(request)
            latencies.append(elapsed)
            total += elapsed
            pairs += len(request["texts"])
    latencies.sort()
    print(json.dumps({
        "via": "sentence-transformers",
        "requests": len(latencies),
        "pairs": pairs,
        "tokens_per_pair": round(sum(tokens) / len(tokens), 2),
        "pairs_per_s": round(pairs / total, 2),
        "p50_ms": round(percentile(latencies, 0.50) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
        "threads": args.threads,
        "max_length": model.max_seq_length,
        "batch_size": args.batch_size,
        "torch": torch.__version__,
    }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
