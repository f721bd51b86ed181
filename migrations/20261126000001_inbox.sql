-- The inbox: one row per distinct webhook content, written before the bridge answers 200.
CREATE SCHEMA IF NOT EXISTS thryve;

CREATE TABLE thryve.inbox (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- SHA-256 of the canonical JSON (keys sorted, no whitespace): Thryve sends no delivery id.
    fingerprint       bytea       NOT NULL,
    event_type        text,
    end_user_id       text,
    end_user_alias    text,
    payload           jsonb       NOT NULL,
    status            text        NOT NULL DEFAULT 'pending',
    error             text,
    delivery_count    integer     NOT NULL DEFAULT 1,
    first_received_at timestamptz NOT NULL DEFAULT now(),
    last_received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at      timestamptz,
    -- Typed copy of what a single-span notification says, so the poller and SQL users need
    -- not re-parse payload. Null where the payload names no such thing (or several: data push).
    data_source_id    integer,
    data_type_ids     integer[],
    start_time        timestamptz,
    end_time          timestamptz,
    start_day         date,
    end_day           date,
    -- connect/disconnect: the new state and the event's own timestamp.
    connected         boolean,
    event_time        timestamptz,
    CONSTRAINT inbox_fingerprint_key UNIQUE (fingerprint),
    CONSTRAINT inbox_status_check
        CHECK (status IN ('pending', 'processed', 'quarantined', 'ignored')),
    CONSTRAINT inbox_fingerprint_length CHECK (octet_length(fingerprint) = 32)
);

-- The poller's queue: small, because processed rows leave it.
CREATE INDEX inbox_pending_idx ON thryve.inbox (id) WHERE status = 'pending';
-- Operators look up a user's deliveries.
CREATE INDEX inbox_end_user_idx ON thryve.inbox (end_user_id);

COMMENT ON TABLE thryve.inbox IS
    'One row per distinct Thryve webhook content; a 200 from the bridge means the row is committed.';
