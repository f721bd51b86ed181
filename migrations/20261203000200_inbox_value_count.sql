-- How many values a delivery carries (a data push's values; 0 for any other valid event),
-- written by the receiver when it parses the body, so that the poller can size a batch in
-- values before it reads a single payload. NULL for rows written before this migration (or by
-- an older binary): the poller then counts the payload's values in SQL.
ALTER TABLE thryve.inbox ADD COLUMN value_count integer;
