-- Collections, their documents, and the passages (with vectors) the documents are split into:
-- the schema of migrations/0001_init.sql and 0002_lexical.sql in PostgreSQL's types.
--
-- Names and document ids sort by their bytes (COLLATE "C"), as SQLite sorts them, so that
-- pages of documents come in the same order on both backends whatever the server's locale.
-- Timestamps are RFC 3339 UTC text with milliseconds, written by the service.

CREATE TABLE collections (
    -- An identity, never reused: an index snapshot directory named after the id of a deleted
    -- collection can never be mistaken for a new collection's.
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT COLLATE "C" NOT NULL UNIQUE,
    distance     TEXT   NOT NULL CHECK (distance IN ('cosine', 'dot', 'l2')),
    -- JSON object: {"type": "auto|hnsw|ivf|flat", ...params}.
    index_config TEXT   NOT NULL CHECK (json_typeof(index_config::json) = 'object'),
    -- NULL until the first vector fixes it; every passage vector then has this length.
    dimension    BIGINT CHECK (dimension IS NULL OR dimension > 0),
    source       TEXT   NOT NULL CHECK (source IN ('text', 'vector')),
    model_id     TEXT,
    -- JSON object {max_tokens, overlap}, or NULL.
    chunking     TEXT   CHECK (chunking IS NULL OR json_typeof(chunking::json) = 'object'),
    -- The lexical (BM25) index settings of a text collection, {"language": "en"}, or NULL.
    lexical      TEXT   CHECK (lexical IS NULL OR json_typeof(lexical::json) = 'object'),
    created_at   TEXT   NOT NULL
);

CREATE TABLE documents (
    collection_id BIGINT NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    doc_id        TEXT COLLATE "C" NOT NULL,
    text          TEXT,
    -- JSON object, or NULL for none.
    metadata      TEXT   CHECK (metadata IS NULL OR json_typeof(metadata::json) = 'object'),
    created_at    TEXT   NOT NULL,
    updated_at    TEXT   NOT NULL,
    PRIMARY KEY (collection_id, doc_id)
);

CREATE TABLE passages (
    -- The id the vector indexes know the passage by; never reused, so a stale index entry can
    -- never alias a newer passage.
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection_id BIGINT NOT NULL,
    doc_id        TEXT COLLATE "C" NOT NULL,
    idx           BIGINT NOT NULL CHECK (idx >= 0),
    -- Offsets in characters (Unicode scalar values) into the document text, end exclusive.
    char_start    BIGINT NOT NULL CHECK (char_start >= 0),
    char_end      BIGINT NOT NULL CHECK (char_end >= char_start),
    -- The vector as little-endian f32, dimension * 4 bytes.
    vector        BYTEA  NOT NULL,
    text          TEXT,
    FOREIGN KEY (collection_id, doc_id)
        REFERENCES documents (collection_id, doc_id) ON DELETE CASCADE
);

-- Vectors of floats do not compress: keep them in the row, where a scan of a collection's
-- vectors reads them, and let a long passage text move to the TOAST table first.
ALTER TABLE passages ALTER COLUMN vector SET STORAGE MAIN;

-- A document's passages in order; also the lookup the cascade from documents needs.
CREATE UNIQUE INDEX passages_by_document ON passages (collection_id, doc_id, idx);

-- A collection's passages in id order, for loading its vectors without a sort.
CREATE INDEX passages_by_collection ON passages (collection_id, id);
