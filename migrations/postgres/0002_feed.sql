-- The change feed that lets several vicinity nodes share one database (see src/store/feed.rs).
--
-- Every write to a collection advances collections.version by one, in its own transaction and
-- after taking the collection's row lock, so a collection's versions are gapless and commit in
-- increasing order: a follower that has applied version N needs exactly the changes after N.
ALTER TABLE collections ADD COLUMN version BIGINT NOT NULL DEFAULT 0 CHECK (version >= 0);

-- One row per committed write: which documents it touched (a follower re-reads their current
-- state), not their contents. No foreign key: the row of a dropped collection outlives it, so
-- that followers learn of the drop even after the collection's rows are gone.
CREATE TABLE changes (
    collection_id BIGINT NOT NULL,
    version       BIGINT NOT NULL CHECK (version >= 0),
    kind          TEXT   NOT NULL CHECK (kind IN ('create', 'upsert', 'delete', 'drop')),
    -- JSON array of the document ids the write touched.
    doc_ids       TEXT   NOT NULL CHECK (json_typeof(doc_ids::json) = 'array'),
    -- The node that made the write.
    node          TEXT   NOT NULL,
    committed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (collection_id, version)
);

-- For pruning by age.
CREATE INDEX changes_by_time ON changes (committed_at);

-- The nodes sharing the database, each with the database clock's time of its last heartbeat.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    -- Where the node's API listens, as it announces it.
    address      TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);

-- The version of each collection each node has applied, as of its last heartbeat: the feed
-- is pruned up to the lowest of the live nodes.
CREATE TABLE node_versions (
    node          TEXT   NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    collection_id BIGINT NOT NULL,
    version       BIGINT NOT NULL,
    PRIMARY KEY (node, collection_id)
);
