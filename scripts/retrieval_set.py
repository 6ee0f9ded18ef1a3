#!/usr/bin/env python3
"""An evaluation set for `vicinity bench retrieval`, regenerated from the Python documentation
that Debian ships (`apt-get install python3-doc`): the reStructuredText sources of its library
reference, split into sections, and queries of three kinds whose answer is one section.

Documents (corpus.jsonl, {"id", "text", "metadata"} per line): every section of
`_sources/library/*.rst.txt` with at least --min-words words of its own text (subsections are
documents of their own), its title first. The id is `FILE#N` (N counts the file's sections), the
metadata names the file and the module.

Queries (queries.jsonl, {"query", "relevant": [id], "kind"} per line), at most --per-kind of
each kind, sampled with --seed:
  heading     the section's title, where no other section has the same one ("Examples" and
              the like are left out);
  identifier  a function, class, method, exception or attribute the section documents
              (`.. function:: json.dumps(obj, ...)` gives "json.dumps"), qualified with the
              current module, where one section documents it;
  question    a question made from the first sentence of such an entry's description, without
              the identifier: "Return a new socket object" becomes "How do I get a new socket
              object?", "Create a FIFO named path" becomes "How do I create a FIFO named path?".

    python3 scripts/retrieval_set.py --out /tmp/pydoc-eval
    vicinity bench retrieval --corpus /tmp/pydoc-eval/corpus.jsonl \\
        --queries /tmp/pydoc-eval/queries.jsonl

Standard library only.
"""

import argparse
import glob
import json
import os
import random
import re
import sys

ROOT = "/usr/share/doc/python3-doc/html/_sources/library"
UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}\s*$")
DIRECTIVE = re.compile(
    r"^\.\. (?:py:)?(function|class|method|exception|attribute|data|decorator|classmethod|"
    r"staticmethod|coroutinefunction|coroutinemethod|abstractmethod)::\s*([\w.]+)")
MODULE = re.compile(r"^\.\. (?:current)?module::\s*([\w.]+)")
ROLE = re.compile(r":[\w:.-]+:`!?~?([^`<]*?)(?:\s*<[^>]*>)?`")
GENERIC_TITLES = {"examples", "example", "notes", "see also", "usage", "introduction",
                  "overview", "functions", "classes", "constants", "exceptions"}


def clean(text):
    """RST markup out, words kept: roles to their text, links to their label."""
    text = ROLE.sub(lambda m: m.group(1), text)
    text = re.sub(r"`([^`<]+?)\s*<[^>]+>`_+", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*|\*([^*]+)\*", lambda m: m.group(1) or m.group(2), text)
    text = re.sub(r"^\s*\.\. [\w:-]+::.*$", "", text, flags=re.M)
    text = re.sub(r"^\s+:[\w -]+:.*$", "", text, flags=re.M)
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def sections(path):
    """(title, raw lines) of each section of an .rst.txt file, in order."""
    lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    out, title, body = [], None, []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if (line.strip() and not UNDERLINE.match(line) and UNDERLINE.match(nxt)
                and len(nxt.strip()) >= len(line.strip()) - 1):
            if title is not None or body:
                out.append((title or "", body))
            title, body = line.strip(), []
            i += 2
            continue
        if UNDERLINE.match(line):  # an overline, or a transition
            i += 1
            continue
        body.append(line)
        i += 1
    if title is not None or body:
        out.append((title or "", body))
    return out


def question(sentence):
    """A user's question from the first sentence of an entry's description, or None."""
    s = clean(sentence).split(". ")[0].rstrip(".").strip()
    words = s.split()
    if len(words) < 4 or len(words) > 20:
        return None
    verb, rest = words[0], " ".join(words[1:])
    if verb in ("Return", "Returns"):
        return f"How do I get {rest}?"
    if verb.endswith("s") and verb[0].isupper() and verb.lower() not in ("this", "is", "as"):
        verb = verb[:-1]
    if not verb[0].isupper() or verb.lower() in ("the", "a", "an", "this", "if", "if", "when",
                                                  "it", "new", "deprecated", "changed"):
        return None
    return f"How do I {verb.lower()} {rest}?"


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=ROOT, help="the library reference's .rst.txt sources")
    p.add_argument("--out", required=True, help="directory for corpus.jsonl and queries.jsonl")
    p.add_argument("--min-words", type=int, default=30)
    p.add_argument("--per-kind", type=int, default=500)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    files = sorted(glob.glob(os.path.join(args.root, "*.rst.txt")))
    if not files:
        sys.exit(f"no .rst.txt under {args.root}: apt-get install python3-doc")
    docs, titles, entries = [], {}, {}
    for path in files:
        stem = os.path.basename(path)[: -len(".rst.txt")]
        module = None
        for n, (title, body) in enumerate(sections(path)):
            raw = "\n".join(body)
            for line in body:
                m = MODULE.match(line)
                if m:
                    module = m.group(1)
            title_text = clean(title)
            text = clean(raw)
            if len(text.split()) < args.min_words:
                continue
            doc_id = f"{stem}#{n}"
            docs.append({"id": doc_id, "text": f"{title_text}\n\n{text}" if title_text else text,
                         "metadata": {"file": stem, "module": module}})
            titles.setdefault(title_text.lower(), []).append((title_text, doc_id))
            # Each documented name, with the first sentence of its description.
            for i, line in enumerate(body):
                m = DIRECTIVE.match(line)
                if not m:
                    continue
                name = m.group(2)
                if module and "." not in name:
                    name = f"{module}.{name}"
                desc = []
                for follow in body[i + 1:]:
                    if DIRECTIVE.match(follow) or (follow and not follow[0].isspace()):
                        break
                    if follow.strip() and not follow.strip().startswith(":"):
                        desc.append(follow.strip())
                    elif desc:
                        break
                entries.setdefault(name, []).append((doc_id, " ".join(desc)))
    rng = random.Random(args.seed)
    queries = {"heading": [], "identifier": [], "question": []}
    for key, found in titles.items():
        title, doc_id = found[0]
        if len(found) == 1 and key not in GENERIC_TITLES and len(title.split()) >= 2:
            queries["heading"].append({"query": title, "relevant": [doc_id], "kind": "heading"})
    for name, found in entries.items():
        if len({d for d, _ in found}) != 1:
            continue
        doc_id, desc = found[0]
        queries["identifier"].append({"query": name, "relevant": [doc_id], "kind": "identifier"})
        q = question(desc) if desc else None
        if q:
            queries["question"].append({"query": q, "relevant": [doc_id], "kind": "question"})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "corpus.jsonl"), "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    picked = []
    for kind, qs in queries.items():
        rng.shuffle(qs)
        picked.extend(qs[: args.per_kind])
    with open(os.path.join(args.out, "queries.jsonl"), "w") as f:
        for q in picked:
            f.write(json.dumps(q) + "\n")
    counts = {k: min(len(v), args.per_kind) for k, v in queries.items()}
    print(f"{len(docs)} sections from {len(files)} files; queries {counts}", file=sys.stderr)


if __name__ == "__main__":
    main()
