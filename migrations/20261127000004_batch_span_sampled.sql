-- The sampled flag of the process-batch span that handled an order: with
-- link-aware sampling, a batch of unsampled orders is not recorded, and
-- GET /orders/{id} says so instead of pointing at a trace that does not
-- exist. NULL without a batch span, and for orders processed before the flag
-- was stored.
ALTER TABLE orders
    ADD COLUMN batch_span_sampled BOOLEAN
    CHECK (batch_span_sampled IS NULL OR batch_span_id IS NOT NULL);
