-- Issue 22: `thryve-bridge users reconcile` repairs source_connections from Thryve's
-- /v5/userInformation after connect/disconnect webhooks were lost. What it writes is an event
-- of its own: origin 'reconcile', changed_at the moment Thryve was asked, no inbox_id; like
-- any event it never overwrites a newer one, and a newer webhook event overwrites it. A
-- constant default: adding the column rewrites nothing.
ALTER TABLE thryve.source_connections
    ADD COLUMN origin text NOT NULL DEFAULT 'webhook'
        CONSTRAINT source_connections_origin_check CHECK (origin IN ('webhook', 'reconcile'));
COMMENT ON COLUMN thryve.source_connections.origin IS
    'What wrote the state: webhook (a connect/disconnect delivery, inbox_id says which) or reconcile (users reconcile asked Thryve at changed_at).';
