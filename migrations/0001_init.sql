-- Collections, their documents, and the passages (with vectors) the documents are split into.
--
-- Every table is STRICT so a wrongly typed value is refused at write time instead of being
-- stored and discovered later. Timestamps are RFC 3339 UTC text with milliseconds.

CREATE TABLE collections (
    -- AUTOINCREMENT: ids are never reused, so an index snapshot directory named after the id
    -- of a deleted collection can never be mistaken for a new collection's.
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL UNIQUE,
    distance     TEXT    NOT NULL CHECK (distance IN ('cosine', 'dot', 'l2')),
    -- JSON object: {"type": "auto|hnsw|ivf|flat", ...params}.
    index_config TEXT    NOT NULL CHECK (json_type(index_config) = 'object'),
    -- NULL until the first vector fixes it; every passage vector then has this length.
    dimension    INTEGER CHECK (dimension IS NULL OR dimension > 0),
    source       TEXT    NOT NULL CHECK (source IN ('text', 'vector')),
    model_id     TEXT,
    -- JSON object {max_tokens, overlap}, or NULL.
    chunking     TEXT    CHECK (chunking IS NULL OR json_type(chunking) = 'object'),
    created_at   TEXT    NOT NULL
) STRICT;

CREATE TABLE documents (
    collection_id INTEGER NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    doc_id        TEXT    NOT NULL,
    text          TEXT,
    -- JSON object, or NULL for none.
    metadata      TEXT    CHECK (metadata IS NULL OR json_type(metadata) = 'object'),
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    PRIMARY KEY (collection_id, doc_id)
) STRICT;

CREATE TABLE passages (
    -- The id the vector indexes know the passage by. AUTOINCREMENT: never reused, so a stale
    -- index entry can never alias a newer passage.
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL,
    doc_id        TEXT    NOT NULL,
    idx           INTEGER NOT NULL CHECK (idx >= 0),
    -- Offsets in characters (Unicode scalar values) into the document text, end exclusive,
    -- so that text[char_start:char_end] in Python is the passage.
    char_start    INTEGER NOT NULL CHECK (char_start >= 0),
    char_end      INTEGER NOT NULL CHECK (char_end >= char_start),
    -- The vector as little-endian f32, dimension * 4 bytes. It comes before the text so that
    -- reading it never follows the overflow pages of a long passage text.
    vector        BLOB    NOT NULL,
    text          TEXT,
    FOREIGN KEY (collection_id, doc_id)
        REFERENCES documents (collection_id, doc_id) ON DELETE CASCADE
) STRICT;

-- A document's passages in order; also the lookup the cascade from documents needs.
CREATE UNIQUE INDEX passages_by_document ON passages (collection_id, doc_id, idx);

-- A collection's passages in id order, for loading its vectors without a sort.
CREATE INDEX passages_by_collection ON passages (collection_id);
