#!/usr/bin/env python3
"""Computes the reference embeddings that the parity test compares the Rust encoder with.

The texts cover what real input looks like: short and long (past the 256-token limit, so the
truncation must match), several languages and scripts, accents, emoji, code, punctuation only,
whitespace only and the empty string. The embeddings come from the `sentence-transformers`
package on CPU in float32, from the same model directory the test loads.

Usage:

    python3 scripts/make_reference_embeddings.py MODEL_DIR [OUT_JSON]

OUT_JSON defaults to tests/fixtures/reference/all-MiniLM-L6-v2.json.
"""

import json
import os
import sys

import torch
from sentence_transformers import SentenceTransformer

LONG_ENGLISH = (
    "Retrieval-augmented generation combines a language model with a search engine: before the "
    "model answers, the system embeds the question, looks up the nearest passages in a vector "
    "index and hands them to the model as context. "
) * 8
LONG_GERMAN = (
    "Die Vektorsuche findet zu einer Anfrage die ähnlichsten Textabschnitte, indem sie deren "
    "Einbettungen vergleicht; große Sammlungen brauchen dafür einen approximativen Index. "
) * 8

TEXTS = [
    "hello",
    "How do I reset my password?",
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome",
    "Vector databases store embeddings for similarity search.",
    "What is the capital of France? Paris is the capital and most populous city of France.",
    LONG_ENGLISH,
    LONG_GERMAN,
    "Le café est très chaud ce matin, n'est-ce pas ?",
    "¿Dónde está la estación de tren más cercana?",
    "Ich möchte einen Tisch für zwei Personen reservieren.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "机器学习是人工智能的一个分支。",
    "서울은 대한민국의 수도입니다.",
    "مرحبا بكم في عالم البحث الدلالي",
    "नमस्ते, आप कैसे हैं?",
    "Ελληνικά: η γρήγορη καφέ αλεπού",
    "naïve façade coöperate résumé Åsa Øresund",
    "I love pizza 🍕🍕 and sushi 🍣!! 😀👍",
    "🔥🔥🔥",
    "fn main() { let v: Vec<f32> = vec![1.0; 384]; println!(\"{:?}\", v.len()); }",
    "SELECT id, title FROM documents WHERE score > 0.5 ORDER BY score DESC LIMIT 10;",
    "def cosine(a, b): return (a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))",
    "?!?!... --- ;;; :::",
    "...",
    "https://example.com/path?query=vector&k=10#results",
    "user@example.org wrote on 2024-06-11 at 13:45:07 UTC: +1 (555) 010-9999",
    "HTTP/1.1 429 Too Many Requests",
    "   leading and trailing whitespace   ",
    "tabs\tand\nnewlines\r\nmixed",
    "ALL CAPS SHOUTING TEXT",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a",
    "   ",
    "",
]


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    model_dir = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/reference/all-MiniLM-L6-v2.json"
    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    features = model[0].tokenize(TEXTS)
    lengths = [int(m.sum()) for m in features["attention_mask"]]
    emb = model.encode(TEXTS, batch_size=8, convert_to_numpy=True)
    refs = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "max_seq_length": model.max_seq_length,
        "entries": [
            {"text": t, "tokens": n, "embedding": [float(x) for x in v]}
            for t, n, v in zip(TEXTS, lengths, emb)
        ],
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(refs, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}: {len(TEXTS)} texts, token counts {lengths}")


if __name__ == "__main__":
    main()
