-- Inbox payloads compressed with lz4 instead of pglz. A data push is ~5 KB of JSON (up to
-- ~113 KB), so nearly every push row is compressed when stored and decompressed when the
-- poller reads it; pglz_compress alone was ~17% of the database's CPU while the receiver
-- ran at its peak. Only rows written from now on use lz4 (no rewrite, a brief lock); both
-- kinds read back the same. A server built without lz4 keeps pglz, with a notice.
DO $$
BEGIN
    ALTER TABLE thryve.inbox ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4: thryve.inbox.payload stays compressed with pglz';
END
$$;
