-- Every write to a collection (an upsert or a delete of documents) advances its version by one,
-- in the transaction that writes it: responses carry the version a write produced and queries
-- the version they answered at. On SQLite one server holds the database, so the version is all
-- it needs; PostgreSQL also keeps the change feed that other nodes follow.
ALTER TABLE collections ADD COLUMN version INTEGER NOT NULL DEFAULT 0 CHECK (version >= 0);
