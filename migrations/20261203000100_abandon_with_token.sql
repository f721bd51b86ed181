-- Abandoning a range checks the claim's token, as complete, fail and extend do since
-- 20261201000010: a stale process of the same worker name cannot fail another's claim for
-- good. A NULL token checks the worker name only; the overload without a token stays for
-- existing callers and does just that.
CREATE FUNCTION thryve.abandon_dirty_range(range_id bigint, worker text, error text, token uuid)
RETURNS boolean LANGUAGE sql AS $$
    WITH failed AS (
        UPDATE thryve.dirty_ranges SET
            status = 'failed', lease_expires_at = NULL, last_error = error
        WHERE id = range_id AND status = 'claimed' AND claimed_by = worker
          AND (token IS NULL OR claim_token = token)
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM failed)
$$;

CREATE OR REPLACE FUNCTION thryve.abandon_dirty_range(range_id bigint, worker text, error text)
RETURNS boolean LANGUAGE sql AS $$
    SELECT thryve.abandon_dirty_range(range_id, worker, error, NULL::uuid)
$$;
