-- Wakes downstream workers: `NOTIFY thryve_dirty_ranges` once per transaction that inserted
-- new pending ranges, so a worker can LISTEN instead of polling claim_dirty_ranges
-- (examples/python, examples/node). Postgres delivers it at commit and folds repeats within
-- one transaction into one. A range widened in place or retried after a failure sends none:
-- a worker that also claims on a timer (as the examples do) finds those.
CREATE FUNCTION thryve.notify_dirty_ranges() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE status = 'pending') THEN
        PERFORM pg_notify('thryve_dirty_ranges', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER dirty_ranges_notify
    AFTER INSERT ON thryve.dirty_ranges
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION thryve.notify_dirty_ranges();
