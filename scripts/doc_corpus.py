#!/usr/bin/env python3
"""A real-text corpus from the documentation installed on this machine, for recall measurements:
passages (paragraphs) and heading-like queries, written as JSON lines.

Sources, in this order, until --passages are collected:
1. the docstrings of the Python standard library (every `lib/python3.*` found under
   --python-root and the running interpreter's), split into paragraphs;
2. manual pages of section 1 (rendered with `groff -man -Tascii`), split into paragraphs.
Paragraphs of --min-words to --max-words words are kept (longer ones are cut at a sentence
end), whitespace collapsed, duplicates dropped; the order is shuffled with --seed.

Queries, --queries of them, are short heading-like texts taken from the same documentation but
not identical to a passage: the first sentence of a module's docstring (its title), a man
page's NAME line ("ls - list directory contents"), and a function's or class's qualified name
with its words split (`json.decoder.JSONDecoder.raw_decode` becomes "json decoder JSON decoder
raw decode").

    python3 scripts/doc_corpus.py --passages 50000 --queries 1000 --out /tmp/corpus
writes /tmp/corpus/passages.jsonl ({"id", "text"} per line) and /tmp/corpus/queries.jsonl
({"text"} per line). Standard library only (plus groff for man pages).
"""

import argparse
import ast
import glob
import gzip
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import warnings


def words_of_identifier(name):
    parts = re.split(r"[._]+", name)
    out = []
    for p in parts:
        out.extend(re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", p))
    return " ".join(out)


def clip(words, max_words):
    """At most `max_words` words, cut after the last sentence end when there is one."""
    if len(words) <= max_words:
        return words
    cut = words[:max_words]
    for i in range(len(cut) - 1, max_words // 2, -1):
        if cut[i].endswith((".", ":", ";")):
            return cut[: i + 1]
    return cut


def stdlib_dirs(python_root):
    dirs = set(glob.glob(os.path.join(python_root, "versions", "*", "lib", "python3.*")))
    dirs.add(sysconfig.get_paths()["stdlib"])
    return sorted(d for d in dirs if os.path.isdir(d))


def docstrings(python_root):
    """(kind, qualified name, docstring) of every module, class and function."""
    for root in stdlib_dirs(python_root):
        for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
            if "site-packages" in path:
                continue
            module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, ValueError, RecursionError):
                continue
            doc = ast.get_docstring(tree)
            if doc:
                yield "module", module, doc
            for node in ast.walk(tree):
                if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc:
                        yield "def", f"{module}.{node.name}", doc


def man_pages(limit, rng):
    pages = sorted(glob.glob("/usr/share/man/man1/*.1*.gz") + glob.glob("/usr/share/man/man1/*.1"))
    rng.shuffle(pages)
    for path in pages[:limit]:
        try:
            raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
            text = subprocess.run(["groff", "-man", "-Tascii", "-P-cbou", "-rLL=300n"],
                                  input=raw, capture_output=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        yield path, text.decode("ascii", errors="replace")


def paragraphs(text, min_words, max_words):
    for p in re.split(r"\n\s*\n", text):
        w = p.split()
        if len(w) >= min_words:
            yield " ".join(clip(w, max_words))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--min-words", type=int, default=8)
    ap.add_argument("--max-words", type=int, default=120)
    ap.add_argument("--man-pages", type=int, default=4000, help="at most this many man pages")
    ap.add_argument("--python-root", default=os.path.expanduser("~/.pyenv"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    # Old sources parse with SyntaxWarnings (invalid escapes): not ours to report.
    warnings.simplefilter("ignore", SyntaxWarning)

    passages, seen = [], set()
    titles, names = [], []

    def add(p):
        if p not in seen:
            seen.add(p)
            passages.append(p)

    for kind, name, doc in docstrings(args.python_root):
        first = doc.strip().split("\n\n")[0]
        if kind == "module":
            title = " ".join(first.split())
            if 2 <= len(title.split()) <= 14:
                titles.append(title)
        else:
            names.append(words_of_identifier(name))
        for p in paragraphs(doc, args.min_words, args.max_words):
            add(p)
    print(f"docstrings: {len(passages)} passages", file=sys.stderr)
    if len(passages) < args.passages:
        for path, text in man_pages(args.man_pages, rng):
            m = re.search(r"^NAME\s*\n\s+(.+?)\n\s*\n", text, re.M | re.S)
            if m:
                titles.append(" ".join(m.group(1).split()))
            for p in paragraphs(text, args.min_words, args.max_words):
                add(p)
            if len(passages) >= args.passages * 1.2:
                break
        print(f"with man pages: {len(passages)} passages", file=sys.stderr)
    rng.shuffle(passages)
    passages = passages[: args.passages]

    titles = sorted(set(t for t in titles if t not in seen))
    names = sorted(set(names))
    rng.shuffle(titles)
    rng.shuffle(names)
    # Half titles (module titles, man page NAME lines), half identifier headings.
    queries = titles[: args.queries // 2]
    queries += names[: args.queries - len(queries)]
    rng.shuffle(queries)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "passages.jsonl"), "w") as f:
        for i, p in enumerate(passages):
            f.write(json.dumps({"id": f"p{i}", "text": p}) + "\n")
    with open(os.path.join(args.out, "queries.jsonl"), "w") as f:
        for q in queries:
            f.write(json.dumps({"text": q}) + "\n")
    print(f"{len(passages)} passages, {len(queries)} queries in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
