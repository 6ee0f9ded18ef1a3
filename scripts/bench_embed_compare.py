#!/usr/bin/env python3
"""vicinity's encoder in each precision against sentence-transformers on PyTorch and against
ONNX Runtime (f32 and dynamic int8), in interleaved rounds on the same sentences; prints the
per-round figures and a Markdown table of the medians with the ratios the encoder's goals name.

    cargo build --release
    python3 scripts/bench_embed_compare.py --model data/models/sentence-transformers/all-MiniLM-L6-v2

Each round runs every implementation once, in an order rotated from round to round, so that a
slow spell of a shared machine does not land on one side only. vicinity runs through its
embedding worker (`vicinity bench embed --json`, what the service gets); the other two through
scripts/bench_embed_pytorch.py and scripts/bench_embed_onnx.py on the sentence pools
`vicinity bench embed --print-texts` writes. --python names an interpreter with
sentence-transformers and onnxruntime installed (they are not needed by vicinity itself).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="sentence-transformers model directory")
    ap.add_argument("--vicinity", default="target/release/vicinity")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--words", default="12,120")
    ap.add_argument("--precisions", default="f32,bf16,int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--skip", default="", help="comma-separated implementations to leave out")
    args = ap.parse_args()

    here = os.path.dirname(os.path.abspath(__file__))
    grid = ["--batch", args.batch, "--words", args.words]
    texts = os.path.join(tempfile.mkdtemp(prefix="vicinity-embed-compare-"), "texts.jsonl")
    with open(texts, "w") as f:
        subprocess.run([args.vicinity, "bench", "embed", *grid, "--print-texts"], check=True, stdout=f)
    timing = ["--duration", str(args.duration)]
    impls = {}
    for p in args.precisions.split(","):
        impls[f"vicinity {p}"] = [
            args.vicinity, "bench", "embed", "--model", args.model, "--precision", p,
            "--threads", str(args.threads), *grid, *timing, "--json",
        ]
    py = [args.python]
    impls["PyTorch"] = [*py, os.path.join(here, "bench_embed_pytorch.py"), "--model", args.model,
                        "--threads", str(args.threads), *timing, texts]
    for v in ("f32", "int8"):
        impls[f"ONNX Runtime {v}"] = [
            *py, os.path.join(here, "bench_embed_onnx.py"), "--model", args.model, "--variant", v,
            "--threads", str(args.threads), *timing, texts,
        ]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    impls = {k: v for k, v in impls.items() if k not in skip}

    names = list(impls)
    results = {name: {} for name in names}  # name -> (words, batch) -> [point per round]
    kernels = {}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            for point in run_json(impls[name]):
                key = (point["words"], point["batch"])
                results[name].setdefault(key, []).append(point)
                if "kernel" in point:
                    kernels[name] = f'{point["precision"]} on {point["kernel"]}'
            print(f"round {r + 1}: {name} done", file=sys.stderr)

    keys = sorted({k for res in results.values() for k in res})
    print("Per round, sentences/s:\n")
    print("| | " + " | ".join(f"{w} × {b}" for w, b in keys) + " |")
    print("| --- |" + " --- |" * len(keys))
    for name in names:
        cells = []
        for k in keys:
            pts = results[name].get(k, [])
            cells.append(", ".join(f'{p["sentences_per_s"]:.1f}' for p in pts))
        print(f"| {name} | " + " | ".join(cells) + " |")

    def med(name, key, field):
        pts = results.get(name, {}).get(key, [])
        return statistics.median(p[field] for p in pts) if pts else None

    print("\nMedians: sentences/s (p50 ms at batch 1)\n")
    print("| words × batch | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    for k in keys:
        cells = []
        for name in names:
            s = med(name, k, "sentences_per_s")
            p50 = med(name, k, "p50_ms")
            if s is None:
                cells.append("–")
            elif k[1] == 1:
                cells.append(f"{s:.1f} ({p50:.2f} ms)")
            else:
                cells.append(f"{s:.1f}")
        print(f"| {k[0]} × {k[1]} | " + " | ".join(cells) + " |")

    print("\nRatios of the medians (sentences/s):\n")
    refs = [r for r in ("PyTorch", "ONNX Runtime f32", "ONNX Runtime int8") if r in names]
    ours = [n for n in names if n.startswith("vicinity")]
    print("| words × batch | " + " | ".join(f"{o} / {r}" for o in ours for r in refs) + " |")
    print("| --- |" + " ---: |" * (len(ours) * len(refs)))
    for k in keys:
        cells = []
        for o in ours:
            for r in refs:
                a, b = med(o, k, "sentences_per_s"), med(r, k, "sentences_per_s")
                cells.append(f"{a / b:.2f}×" if a and b else "–")
        print(f"| {k[0]} × {k[1]} | " + " | ".join(cells) + " |")
    for name, kernel in kernels.items():
        print(f"\n{name}: {kernel}", end="")
    print()


if __name__ == "__main__":
    main()
