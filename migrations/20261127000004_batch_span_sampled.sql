-- Whether the process-batch span that handled an order was recorded: with
-- link-aware sampling most batch spans are not, and GET /orders/{id} says so
-- instead of pointing at a trace that does not exist. NULL for orders
-- processed before this was stored.
ALTER TABLE orders ADD COLUMN batch_span_sampled BOOLEAN;
