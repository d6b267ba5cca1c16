-- A client's Idempotency-Key for POST /orders (the IETF httpapi
-- Idempotency-Key draft): a retry with the same key gets the order its first
-- request created, never a second one. Kept as long as the order.
ALTER TABLE orders
    ADD COLUMN idempotency_key TEXT UNIQUE
    CHECK (char_length(idempotency_key) BETWEEN 1 AND 255);
