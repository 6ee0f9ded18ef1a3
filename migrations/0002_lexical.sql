-- The lexical (BM25) index settings of a text collection: a JSON object {"language": "en"}.
-- Text collections made before lexical search existed get the default, so that creating them
-- again with default settings still matches them.
ALTER TABLE collections ADD COLUMN lexical TEXT
    CHECK (lexical IS NULL OR json_type(lexical) = 'object');

UPDATE collections SET lexical = '{"language":"en"}' WHERE source = 'text';
