"""Retrieval for RAG over a folder of text and Markdown files, with vicinity embedding on the
server.

Loads every `*.md`, `*.markdown` and `*.txt` file under FOLDER (by default the repo's `docs/`,
or the `*.md` files at the repo root when there is no `docs/`), splits them into chunks,
stores the chunks in a vicinity collection (the server embeds them with its own model), and
prints the passages a model would be given to answer QUESTION: source file, score, text.

    python examples/rag_folder.py [FOLDER] -q "How do I run the server?" \\
        --url http://127.0.0.1:8080

Splitting uses langchain-text-splitters when it is installed (`pip install
'langchain-vicinity[examples]'`), else a simple paragraph splitter. Re-running is cheap to
reason about: each file's old chunks are deleted before its new ones are added, under ids
`<file>#<n>`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List

from langchain_core.documents import Document

from langchain_vicinity import VicinityVectorStore

REPO = Path(__file__).resolve().parents[3]
SUFFIXES = {".md", ".markdown", ".txt"}
CHUNK_CHARS = 1000
OVERLAP_CHARS = 150


def default_files() -> List[Path]:
    docs = REPO / "docs"
    if docs.is_dir():
        return sorted(p for p in docs.rglob("*") if p.suffix in SUFFIXES)
    return sorted(REPO.glob("*.md"))


def simple_split(text: str) -> List[str]:
    """Paragraphs packed into chunks of at most CHUNK_CHARS (a longer paragraph is cut)."""
    chunks: List[str] = []
    current = ""
    for para in (p.strip() for p in text.split("\n\n")):
        if not para:
            continue
        while len(para) > CHUNK_CHARS:
            chunks.append(para[:CHUNK_CHARS])
            para = para[CHUNK_CHARS - OVERLAP_CHARS :]
        if current and len(current) + 2 + len(para) > CHUNK_CHARS:
            chunks.append(current)
            current = para
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        chunks.append(current)
    return chunks


def splitter():
    """A function from text to chunks."""
    try:
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    except ImportError:
        return simple_split
    return RecursiveCharacterTextSplitter(
        chunk_size=CHUNK_CHARS, chunk_overlap=OVERLAP_CHARS
    ).split_text


def load(files: List[Path], root: Path) -> List[Document]:
    split = splitter()
    docs = []
    for path in files:
        source = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        text = path.read_text(encoding="utf-8", errors="replace")
        for n, chunk in enumerate(c for c in split(text) if c.strip()):
            docs.append(Document(id=f"{source}#{n}", page_content=chunk,
                                 metadata={"source": source, "chunk": n}))
    return docs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path,
                        help="folder of .md/.txt files (default: the repo's docs/ or *.md)")
    parser.add_argument("-q", "--question", default="How do I filter search results by metadata?")
    parser.add_argument("--url", default=os.environ.get("VICINITY_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--collection", default="rag-folder")
    parser.add_argument("-k", type=int, default=4, help="passages to retrieve")
    parser.add_argument("--mode", choices=["dense", "lexical", "hybrid"], default="hybrid")
    parser.add_argument("--mmr", action="store_true", help="diversify passages (server MMR)")
    parser.add_argument("--no-index", action="store_true",
                        help="query what an earlier run indexed, without loading FOLDER again")
    args = parser.parse_args()

    if args.folder is None:
        files, root = default_files(), REPO
    else:
        root = args.folder.resolve()
        files = sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES)
    if not files:
        print(f"no .md/.txt files under {args.folder or REPO}", file=sys.stderr)
        return 1

    store = VicinityVectorStore(args.collection, url=args.url)
    if not args.no_index:
        docs = load(files, root)
        for source in sorted({d.metadata["source"] for d in docs}):
            store.delete(filter={"source": source})
        store.add_documents(docs)
        print(f"indexed {len(docs)} chunks of {len(files)} files into '{args.collection}'")

    # group_by keeps one passage per chunk, so that a chunk the server split into several
    # passages does not fill the context with near-copies of itself.
    if args.mmr:
        found = [(d, None) for d in store.max_marginal_relevance_search(
            args.question, k=args.k, mode=args.mode)]
    else:
        found = store.similarity_search_with_score(
            args.question, k=args.k, mode=args.mode, group_by="document")
    print(f"\nquestion: {args.question}\n")
    for i, (doc, score) in enumerate(found, 1):
        how = "picked by MMR" if score is None else f"score {score:.3f}"
        print(f"[{i}] {doc.metadata['source']} (chunk {doc.metadata['chunk']}), {how}")
        print("    " + doc.page_content.replace("\n", "\n    "))
        print()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
