-- The built-in fetcher (issue 14): a NOTIFY when pending ranges appear, and a way to fail a
-- range for good when retrying cannot help.

-- Every worker can LISTEN thryve_dirty_ranges instead of polling: one NOTIFY per statement
-- that leaves a pending range behind (a merge that creates or widens work, a failed attempt
-- put back). The payload is empty; Postgres folds identical notifications of one
-- transaction into one, and delivers them at commit. Statement-level, so a poller batch of
-- thousands of spans costs one notification; two triggers because a trigger with transition
-- tables may have only one event.
CREATE FUNCTION thryve.notify_pending_ranges() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM changed_ranges WHERE status = 'pending') THEN
        PERFORM pg_notify('thryve_dirty_ranges', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER dirty_ranges_notify_insert
    AFTER INSERT ON thryve.dirty_ranges
    REFERENCING NEW TABLE AS changed_ranges
    FOR EACH STATEMENT EXECUTE FUNCTION thryve.notify_pending_ranges();

CREATE TRIGGER dirty_ranges_notify_update
    AFTER UPDATE ON thryve.dirty_ranges
    REFERENCING NEW TABLE AS changed_ranges
    FOR EACH STATEMENT EXECUTE FUNCTION thryve.notify_pending_ranges();

-- Fails a claimed range for good, with no retry: for answers that cannot change by asking
-- again (Thryve's 403 for an end user who is gone, its 400 for a request it refuses). The
-- range stays in status failed with the reason for an operator. False (and no change) when
-- worker no longer holds the claim.
CREATE FUNCTION thryve.abandon_dirty_range(range_id bigint, worker text, error text)
RETURNS boolean LANGUAGE sql AS $$
    WITH failed AS (
        UPDATE thryve.dirty_ranges SET
            status = 'failed', lease_expires_at = NULL, last_error = error
        WHERE id = range_id AND status = 'claimed' AND claimed_by = worker
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM failed)
$$;

-- One row per fetcher process (its FETCHER_WORKER name), refreshed every few seconds while
-- it runs, for `thryve-bridge stats`: whether a 401 paused it, and what it has done since it
-- started. A row whose seen_at stops moving is a fetcher that stopped.
CREATE TABLE thryve.fetchers (
    worker         text        PRIMARY KEY,
    started_at     timestamptz NOT NULL,
    seen_at        timestamptz NOT NULL,
    paused_reason  text,
    ranges_done    bigint      NOT NULL DEFAULT 0,
    ranges_retried bigint      NOT NULL DEFAULT 0,
    ranges_failed  bigint      NOT NULL DEFAULT 0,
    values_written bigint      NOT NULL DEFAULT 0,
    last_done_at   timestamptz
);
