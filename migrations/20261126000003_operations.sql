-- Operations: autovacuum suited to the two queue tables, and the indexes that retention
-- (housekeeping) and the stats query read.

-- thryve.inbox and thryve.dirty_ranges are queues: every row is updated as it moves through
-- its statuses (pending -> processed; merges, claims, completions) and deleted by merges and
-- retention, while the live set stays about the same size. With the default scale factors a
-- vacuum waits for 20% of a table to be dead, so a large inbox carries millions of dead rows
-- and the partial indexes the poller and claimers scan (status = 'pending') fill with dead
-- entries. Vacuum after 1% dead, analyze after 2% changed (so the planner knows how small
-- the pending set is), and let each vacuum do more work before it pauses, so it keeps up
-- with the churn. On a new deployment these tables are empty and this costs nothing.
ALTER TABLE thryve.inbox SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 1000
);
ALTER TABLE thryve.dirty_ranges SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 1000
);

-- Plain CREATE INDEX (migrations run in a transaction): on a large existing inbox it holds
-- back inserts while it builds, and receivers answer 503 (Thryve retries) until it is done.

-- Retention (INBOX_RETENTION) deletes processed rows from the old end of this index.
CREATE INDEX inbox_processed_at_idx
    ON thryve.inbox (processed_at) WHERE status = 'processed';
-- Payload retention (PAYLOAD_RETENTION) blanks a payload by setting it to JSON null. Without
-- its own index each pass would wade through every row it already blanked to find the few
-- that crossed the line since the last pass.
CREATE INDEX inbox_payload_kept_idx
    ON thryve.inbox (processed_at) WHERE status = 'processed' AND payload <> 'null'::jsonb;
-- Stats: per status, the count (index-only) and the oldest and newest delivery (one index
-- probe each), and so the time since the last delivery, without reading the table.
CREATE INDEX inbox_status_received_idx
    ON thryve.inbox (status, last_received_at);

-- Retention (RANGE_RETENTION) deletes done ranges from the old end of this index.
CREATE INDEX dirty_ranges_done_idx
    ON thryve.dirty_ranges (completed_at) WHERE status = 'done';
-- Stats: per status, the count and the oldest and newest first_dirtied_at.
CREATE INDEX dirty_ranges_status_dirtied_idx
    ON thryve.dirty_ranges (status, first_dirtied_at);
