#!/usr/bin/env python3
"""sentence-transformers' model on ONNX Runtime CPU, float32 or int8, measured on exactly the
sentences `vicinity bench embed` uses, with the same schedule and the same JSON output as
scripts/bench_embed_pytorch.py, for a side-by-side comparison.

    vicinity bench embed --batch 1,32 --words 12,120 --print-texts > texts.jsonl
    python3 scripts/bench_embed_onnx.py --model /path/to/all-MiniLM-L6-v2 --variant f32 texts.jsonl
    python3 scripts/bench_embed_onnx.py --model /path/to/all-MiniLM-L6-v2 --variant int8 texts.jsonl

--variant f32: the model's BertModel exported by `torch.onnx.export` (TorchScript exporter,
opset 17, dynamic batch and sequence axes; input_ids, attention_mask, token_type_ids ->
last_hidden_state). --variant int8: that export quantized by
`onnxruntime.quantization.quantize_dynamic(weight_type=QuantType.QInt8, per_channel=True)`,
every other setting at its default (reduce_range=False, activations quantized at run time to
uint8, the default operator types: the weight MatMuls become MatMulInteger, the embedding
tables int8; attention's own two MatMuls stay float32), the kind of int8 model fastembed and
Infinity ship. Both are written once to --onnx-dir and reused afterwards; delete
them to export again.

Each point: one warm-up batch, then batches one after another (cycling through the point's pool)
until both --runs and --duration are reached; sentences/s over the summed batch times, p50/p99 of
the batch latencies. A batch's time covers what `SentenceTransformer.encode` does: tokenization
(the model's own tokenizer, padding to the batch's longest, truncation at max_seq_length), the
ONNX Runtime session, mean pooling over the attention mask and L2 normalization in numpy. The
session has intra_op_num_threads = --threads (2 by default, the cores of the benchmark machine),
inter_op_num_threads = 1, every other option at ONNX Runtime's default.

--check N embeds the file's first N sentences with this ONNX model and with sentence-transformers
on PyTorch after the measurement, and prints the min/mean cosine similarity between the two on
stderr (stdout stays line-for-line comparable with bench_embed_pytorch.py); all N go in one
batch, which matters for int8: its activations are quantized per tensor, padding included, so a
sentence's int8 embedding moves a little with the batch it is in. Needs
`pip install onnxruntime onnx sentence-transformers` (torch and transformers for the export).
"""

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time


def percentile(sorted_values, q):
    # Nearest rank, as vicinity's benchmark computes it.
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def transformer_dir(model_dir):
    """The directory of the model's Transformer module (the BERT weights, tokenizer and
    sentence_bert_config.json); all-MiniLM-L6-v2 keeps it at the root."""
    with open(os.path.join(model_dir, "modules.json")) as f:
        modules = json.load(f)
    for module in modules:
        if module["type"].endswith(".Transformer"):
            return os.path.join(model_dir, module["path"])
    raise SystemExit(f"{model_dir}: no Transformer module in modules.json")


def check_mean_pooling(model_dir):
    # The pooling below is hard-coded; a CLS-pooled model would be measured doing the wrong work.
    with open(os.path.join(model_dir, "modules.json")) as f:
        modules = json.load(f)
    for module in modules:
        if module["type"].endswith(".Pooling"):
            with open(os.path.join(model_dir, module["path"], "config.json")) as f:
                config = json.load(f)
            # The older key, and sentence-transformers 6's.
            if not (config.get("pooling_mode_mean_tokens") or config.get("pooling_mode") == "mean"):
                raise SystemExit(f"{model_dir}: pooling is not mean pooling: {config}")
            return
    raise SystemExit(f"{model_dir}: no Pooling module in modules.json")


def max_seq_length(model_dir, tokenizer):
    # sentence-transformers' own limit (256 for all-MiniLM-L6-v2) overrides the tokenizer's (512);
    # models saved by sentence-transformers 6 keep it in the tokenizer's model_max_length instead.
    path = os.path.join(transformer_dir(model_dir), "sentence_bert_config.json")
    if os.path.exists(path):
        with open(path) as f:
            limit = json.load(f).get("max_seq_length")
        if limit is not None:
            return limit
    return tokenizer.model_max_length


def default_onnx_dir(model_dir):
    # Keyed on the model's path so that two models never share (and silently reuse) an export.
    path = os.path.abspath(model_dir)
    digest = hashlib.sha256(path.encode()).hexdigest()[:12]
    name = os.path.basename(path.rstrip(os.sep)) or "model"
    return os.path.join(tempfile.gettempdir(), "vicinity-bench-onnx", f"{name}-{digest}")


def prepare(model_dir, onnx_dir, variant):
    """Writes onnx_dir/model-f32.onnx and, for int8, onnx_dir/model-int8.onnx, unless present.
    Runs in a child process (see main)."""
    os.makedirs(onnx_dir, exist_ok=True)
    f32 = os.path.join(onnx_dir, "model-f32.onnx")
    if not os.path.exists(f32):
        import torch
        from transformers import AutoModel, AutoTokenizer

        source = transformer_dir(model_dir)
        # Eager attention traces to plain MatMul/Softmax, the pattern ONNX Runtime's graph
        # optimizations and quantize_dynamic (which quantizes MatMul) are written for.
        bert = AutoModel.from_pretrained(source, attn_implementation="eager").eval()
        tokenizer = AutoTokenizer.from_pretrained(source)

        class LastHidden(torch.nn.Module):
            # Only what mean pooling reads: the pooler head would be computed and thrown away.
            def __init__(self, bert):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids).last_hidden_state

        # Two sentences of different lengths, so that padding and the mask are part of the trace.
        sample = tokenizer(["a short one", "a somewhat longer sentence to trace with"],
                           padding=True, return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes = {name: {0: "batch", 1: "sequence"} for name in names + ["last_hidden_state"]}
        # Written next to the target and renamed, so an interrupted export is never reused.
        partial = f32 + ".partial"
        with torch.no_grad():
            torch.onnx.export(LastHidden(bert), tuple(sample[name] for name in names), partial,
                              input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes=axes, opset_version=17, do_constant_folding=True,
                              # The dynamo exporter (the default in recent torch) differs
                              # between torch versions; the TorchScript one is what optimum's
                              # exports of this model were made with.
                              dynamo=False)
        os.replace(partial, f32)
        print(f"exported {f32}", file=sys.stderr, flush=True)
    if variant == "int8":
        int8 = os.path.join(onnx_dir, "model-int8.onnx")
        if not os.path.exists(int8):
            from onnxruntime.quantization import QuantType, quantize_dynamic

            partial = int8 + ".partial"
            quantize_dynamic(f32, partial, weight_type=QuantType.QInt8, per_channel=True)
            os.replace(partial, int8)
            print(f"quantized {int8}", file=sys.stderr, flush=True)


class Encoder:
    """What SentenceTransformer.encode does for this model, with the network on ONNX Runtime."""

    def __init__(self, model_dir, onnx_path, threads):
        import numpy as np
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.np = np
        self.tokenizer = AutoTokenizer.from_pretrained(transformer_dir(model_dir))
        self.max_length = max_seq_length(model_dir, self.tokenizer)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def encode(self, texts):
        np = self.np
        enc = self.tokenizer(texts, padding=True, truncation="longest_first",
                             max_length=self.max_length, return_tensors="np")
        feed = {name: enc[name].astype(np.int64) for name in self.inputs}
        (hidden,) = self.session.run(None, feed)
        mask = enc["attention_mask"].astype(hidden.dtype)[:, :, None]
        # sentence-transformers clamps the token count at 1e-9 the same way.
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None)


def check(encoder, model_dir, texts, threads, variant):
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    reference = SentenceTransformer(model_dir, device="cpu").encode(
        texts, batch_size=len(texts), normalize_embeddings=True)
    ours = encoder.encode(texts)
    cos = (ours * reference).sum(axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    print(json.dumps({
        "check": f"onnxruntime-{variant} vs sentence-transformers",
        "texts": len(texts),
        "cos_min": round(float(cos.min()), 6),
        "cos_mean": round(float(cos.mean()), 6),
    }), file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("texts", help="output of `vicinity bench embed --print-texts`")
    ap.add_argument("--model", required=True, help="sentence-transformers model directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--variant", choices=["f32", "int8"], default="f32")
    ap.add_argument("--onnx-dir", help="where the exported .onnx files are kept and reused "
                    "(default: a directory per model under the system's temp directory)")
    ap.add_argument("--check", type=int, default=0, metavar="N",
                    help="afterwards, compare the first N sentences with sentence-transformers")
    args = ap.parse_args()

    check_mean_pooling(args.model)
    onnx_dir = args.onnx_dir or default_onnx_dir(args.model)
    # The export runs torch, whose thread pool would otherwise stay alive in the measuring
    # process; a child keeps the first (exporting) run's timings like every later one's.
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(
        target=prepare, args=(args.model, onnx_dir, args.variant))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"export to {onnx_dir} failed (exit code {child.exitcode})")

    import onnxruntime as ort

    encoder = Encoder(args.model, os.path.join(onnx_dir, f"model-{args.variant}.onnx"), args.threads)
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
            encoder.encode(texts)
            return time.perf_counter() - started

        run(take())
        latencies, total = [], 0.0
        while len(latencies) < args.runs or total < args.duration:
            elapsed = run(take())
            latencies.append(elapsed)
            total += elapsed
        latencies.sort()
        print(json.dumps({
            "impl": f"onnxruntime-{args.variant}",
            "batch": batch,
            "words": point["words"],
            "sentences_per_s": round(batch * len(latencies) / total, 2),
            "p50_ms": round(percentile(latencies, 0.50) * 1e3, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
            "threads": args.threads,
            "onnxruntime": ort.__version__,
            "runs": len(latencies),
        }), flush=True)

    if args.check > 0:
        texts = [text for point in points for text in point["texts"]][:args.check]
        check(encoder, args.model, texts, args.threads, args.variant)


if __name__ == "__main__":
    sys.exit(main())
