#!/usr/bin/env python3
"""Writes the tiny test fixture models: sentence-transformers directories with random weights.

The model is small enough to commit (a few hundred KB) and goes through exactly the loading and
inference code path of a real model. Beside the model the script stores reference embeddings
computed with sentence-transformers for every pooling mode, with and without normalisation, so
the Rust tests check parity on every run without the real model.

The BERT model is the main fixture (every pooling mode has references); RoBERTa and DistilBERT
twins with the same tokenizer check that those weight layouts load and match too.

Usage (needs torch, transformers, tokenizers and sentence-transformers):

    python3 scripts/make_tiny_bert.py [bert|roberta|distilbert] [OUT_DIR]

OUT_DIR defaults to tests/fixtures/tiny-ARCH.
"""

import json
import os
import shutil
import sys
import tempfile

import torch
from sentence_transformers import SentenceTransformer, models
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import (
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaModel,
)

SEED = 20240611
HIDDEN = 32
LAYERS = 2
HEADS = 4
INTERMEDIATE = 64
MAX_POSITIONS = 64
# Below MAX_POSITIONS so that tests exercise truncation with short texts.
MAX_SEQ_LENGTH = 32

WORDS = """the a an and or of to in on for with is are was be this that it as at by from
search vector index query text document passage embed model sentence word token cat dog house
tree river mountain city music book water fire light night day time year people world small
large fast slow good new old first last long short quick brown fox jumps over lazy""".split()

# Text the reference embeddings are computed for: short, long (truncated at MAX_SEQ_LENGTH),
# unknown words, accents, non-Latin script, emoji, punctuation only, whitespace only, empty.
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "search",
    "a small house by the river",
    "Vector search over embedded passages is fast.",
    "THE CITY AT NIGHT",
    "zyxwv qqq unknownword",
    "café naïve résumé",
    "東京 の 夜",
    "fire 🔥 and water 💧",
    "fn main() { println!(\"hi\"); }",
    "?!... ,;:",
    "   ",
    "",
    " ".join(["the long document about search and the index of every word"] * 6),
    "music book water fire light night day time year people world small large fast slow",
]


def build_tokenizer() -> Tokenizer:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    vocab = specials + chars + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + WORDS
    vocab = list(dict.fromkeys(vocab))
    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    # Like all-MiniLM-L6-v2's tokenizer.json: a shipped truncation and fixed padding that the
    # encoder must override with the sentence-transformers settings.
    tok.enable_truncation(max_length=16)
    tok.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    return tok


def randomize(model: torch.nn.Module) -> None:
    # The default initialiser (std 0.02, LayerNorm at 1/0) makes every text embed almost alike;
    # larger random weights make the embeddings of different texts clearly different.
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "LayerNorm.weight" in name or "layer_norm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))


def write_json(path: str, value) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def build_model(arch: str, vocab_size: int) -> torch.nn.Module:
    if arch == "bert":
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE,
            max_position_embeddings=MAX_POSITIONS,
            type_vocab_size=2,
            hidden_act="gelu",
            layer_norm_eps=1e-12,
        )
        return BertModel(config, add_pooling_layer=False)
    if arch == "roberta":
        # Padding id 0 as in the shared vocabulary; positions then start at 1 (RoBERTa counts
        # them from padding_idx + 1), which the encoder must reproduce.
        config = RobertaConfig(
            vocab_size=vocab_size,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE,
            max_position_embeddings=MAX_POSITIONS + 1,
            type_vocab_size=1,
            hidden_act="gelu_new",
            layer_norm_eps=1e-5,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
        return RobertaModel(config, add_pooling_layer=False)
    if arch == "distilbert":
        config = DistilBertConfig(
            vocab_size=vocab_size,
            dim=HIDDEN,
            n_layers=LAYERS,
            n_heads=HEADS,
            hidden_dim=INTERMEDIATE,
            max_position_embeddings=MAX_POSITIONS,
            activation="gelu",
            pad_token_id=0,
        )
        return DistilBertModel(config)
    sys.exit(f"unknown architecture {arch}")


def main() -> None:
    arch = sys.argv[1] if len(sys.argv) > 1 else "bert"
    out = sys.argv[2] if len(sys.argv) > 2 else f"tests/fixtures/tiny-{arch}"
    torch.manual_seed(SEED)
    tok = build_tokenizer()
    bert = build_model(arch, tok.get_vocab_size())
    randomize(bert)
    bert.eval()

    with tempfile.TemporaryDirectory() as hf_dir:
        bert.save_pretrained(hf_dir, safe_serialization=True)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
            model_max_length=MAX_POSITIONS,
        )
        fast.save_pretrained(hf_dir)
        transformer = models.Transformer(hf_dir, max_seq_length=MAX_SEQ_LENGTH)
        pooling = models.Pooling(HIDDEN, pooling_mode="mean")
        st = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
        if os.path.exists(out):
            shutil.rmtree(out)
        st.save(out)

    # Rewrite the module files in the classic layout that published models (all-MiniLM-L6-v2
    # among them) ship and that sentence-transformers still reads: module types under
    # `sentence_transformers.models`, pooling as `pooling_mode_*` flags, and `max_seq_length` in
    # sentence_bert_config.json. The encoder also reads the newer layout; its tests cover both.
    write_json(os.path.join(out, "modules.json"), [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    write_json(os.path.join(out, "1_Pooling", "config.json"), {
        "word_embedding_dimension": HIDDEN,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    write_json(os.path.join(out, "sentence_bert_config.json"), {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False})
    # all-MiniLM-L6-v2 ships no 2_Normalize folder (the module has no files); neither do we.
    shutil.rmtree(os.path.join(out, "2_Normalize"))
    tok_config_path = os.path.join(out, "tokenizer_config.json")
    with open(tok_config_path) as f:
        tok_config = json.load(f)
    tok_config["model_max_length"] = MAX_POSITIONS
    write_json(tok_config_path, tok_config)

    # Keep only what a model directory needs; the model card and duplicate vocabularies are noise.
    for extra in ["README.md", "vocab.txt", "special_tokens_map.json", "config_sentence_transformers.json"]:
        path = os.path.join(out, extra)
        if os.path.exists(path):
            os.remove(path)

    # Reference embeddings: reload the saved directory so that the references describe exactly
    # the committed files, then pool the same token embeddings every supported way.
    reloaded = SentenceTransformer(out, device="cpu")
    transformer = reloaded[0]
    assert reloaded.max_seq_length == MAX_SEQ_LENGTH, reloaded.max_seq_length
    assert len(reloaded) == 3, "the saved directory must load as transformer, pooling, normalize"
    refs = {"model": f"tiny-{arch}", "max_seq_length": MAX_SEQ_LENGTH, "texts": TEXTS, "token_ids": [], "modes": {}}
    features = transformer.tokenize(TEXTS)
    for row, mask in zip(features["input_ids"].tolist(), features["attention_mask"].tolist()):
        refs["token_ids"].append([i for i, m in zip(row, mask) if m])
    modes = ["mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
    # The twins only check the weight layout; pooling is the same code for all.
    for mode in modes if arch == "bert" else ["mean"]:
        for normalize in (True, False) if arch == "bert" else (True,):
            mods = [transformer, models.Pooling(HIDDEN, pooling_mode=mode)]
            if normalize:
                mods.append(models.Normalize())
            st = SentenceTransformer(modules=mods, device="cpu")
            emb = st.encode(TEXTS, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
            key = f"{mode}{'+normalize' if normalize else ''}"
            refs["modes"][key] = [[float(x) for x in v] for v in emb]
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(refs, f, indent=None, separators=(",", ":"))
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(out) for n in ns)
    print(f"wrote {out} ({total} bytes, vocab {tok.get_vocab_size()})")


if __name__ == "__main__":
    main()
