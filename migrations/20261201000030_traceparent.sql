-- The W3C `traceparent` header of the latest delivery of each row's content, so an operator
-- can quote it to Thryve. The receiver stores only a well-formed value (checked in
-- src/http/trace.rs); the bound here keeps any other writer honest. Nullable, no default:
-- adding it rewrites nothing. NOT VALID: existing rows are all NULL, so the check need not
-- scan them under this migration's lock.
ALTER TABLE thryve.inbox ADD COLUMN traceparent text;
ALTER TABLE thryve.inbox ADD CONSTRAINT inbox_traceparent_bounded
    CHECK (char_length(traceparent) <= 128) NOT VALID;
COMMENT ON COLUMN thryve.inbox.traceparent IS
    'W3C traceparent header of the latest delivery of this content (NULL when absent or malformed)';
