-- orders-batch claims orders as leases (see crates/orders/src/claims.rs).
--
-- claimed_by and claim_expires_at are set exactly while an order is
-- processing; claimed_at keeps the time of the last claim, so that a run
-- retries an order that failed only in a later run.
ALTER TABLE orders
    ADD CONSTRAINT orders_claim_held_while_processing
    CHECK ((status = 'processing') = (claimed_by IS NOT NULL AND claim_expires_at IS NOT NULL));

-- Finding expired claims, and the claims of one worker, scans only the orders
-- in flight, however many are pending or done.
CREATE INDEX orders_processing_by_expiry ON orders (claim_expires_at) WHERE status = 'processing';
