-- Orders taken by orders-api and reconciled later by orders-batch.
--
-- traceparent/tracestate hold the W3C trace context of the order's
-- `receive-order` span: orders-batch links its `process-batch` span to it.
-- The claim, attempt and batch columns are written by orders-batch.
CREATE TABLE orders (
    id               UUID        PRIMARY KEY,
    customer_id      TEXT        NOT NULL CHECK (char_length(customer_id) BETWEEN 1 AND 64),
    items            JSONB       NOT NULL CHECK (jsonb_typeof(items) = 'array'),
    total_cents      BIGINT      NOT NULL CHECK (total_cents >= 0),
    status           TEXT        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'processing', 'processed', 'failed')),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    traceparent      TEXT,
    tracestate       TEXT,
    claimed_by       TEXT,
    claimed_at       TIMESTAMPTZ,
    claim_expires_at TIMESTAMPTZ,
    attempts         INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error       TEXT,
    processed_at     TIMESTAMPTZ,
    batch_trace_id   TEXT        CHECK (batch_trace_id ~ '^[0-9a-f]{32}$'),
    batch_span_id    TEXT        CHECK (batch_span_id ~ '^[0-9a-f]{16}$')
);

-- The batch claims pending orders oldest first; a partial index keeps that an
-- index scan however many processed orders accumulate.
CREATE INDEX orders_pending_oldest_first ON orders (created_at, id) WHERE status = 'pending';
