//! The queries orders-batch runs: claim pending orders, finish them, and give
//! back what could not be finished.
//!
//! A claim is a lease. Claiming commits at once: the orders become
//! `processing`, held under a token unique to the claim until
//! `claim_expires_at`. Several workers claim side by side with
//! `FOR UPDATE SKIP LOCKED`, so no order is handed to two of them. A worker
//! that dies leaves its claims to expire; the next run puts them back in the
//! queue ([`requeue_expired`]), so no order is lost. Finishing writes only rows
//! still held under the same token, so an order whose lease ran out and was
//! claimed again is never finished twice.
//!
//! Query shapes follow measurements on 100k-row tables: the claim selects ids
//! through the partial index of pending orders, and finishing joins the
//! results as `UNNEST` arrays (one statement per batch).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::order::{BatchSpan, OrderStatus};
use crate::store::{StoreError, db_span, in_db_span, stored_status};
use span_links::StoredContext;

/// What to claim.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// Who claims, for operators reading `claimed_by` (host and process).
    pub worker: &'a str,
    /// The most orders to claim.
    pub limit: i64,
    /// Only orders created at or before this time, and not already tried since:
    /// a run takes what was pending when it started and retries a failed order
    /// in a later run, never in the same one.
    pub cutoff: DateTime<Utc>,
    /// How long the claim holds if the worker never finishes it.
    pub lease: Duration,
}

/// An order taken from the queue by a claim.
#[derive(Debug, Clone)]
pub struct ClaimedOrder {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    /// The stored line items, as JSON text: reconciling parses them straight
    /// into line items, and a row whose items are unreadable must fail alone,
    /// not the whole claim.
    pub items: String,
    pub total_cents: i64,
    /// The stored context of the order's `receive-order` span.
    pub source_trace: Option<StoredContext>,
    /// Claims of this order so far, this one included.
    pub attempts: i32,
}

/// Orders held by one claim, oldest first.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The `claimed_by` value that holds these orders.
    pub token: String,
    pub orders: Vec<ClaimedOrder>,
}

/// What became of one claimed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Reconciled: the order is done.
    Processed,
    /// Failed this time; back to `pending` for a later run.
    Retry { error: String },
    /// Failed for the last time: the order is `failed`.
    Failed { error: String },
}

impl Outcome {
    fn status(&self) -> OrderStatus {
        match self {
            Self::Processed => OrderStatus::Processed,
            Self::Retry { .. } => OrderStatus::Pending,
            Self::Failed { .. } => OrderStatus::Failed,
        }
    }

    fn error(&self) -> Option<&str> {
        match self {
            Self::Processed => None,
            Self::Retry { error } | Self::Failed { error } => Some(error),
        }
    }
}

/// An order written by [`finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub id: Uuid,
    pub status: OrderStatus,
    pub created_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

/// Orders whose claim expired, put back by [`requeue_expired`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Back to `pending`.
    pub pending: Vec<Uuid>,
    /// Out of attempts: now `failed`.
    pub failed: Vec<Uuid>,
}

/// The database's clock: claims compare it with `created_at`, which the
/// database wrote, so the worker's own clock never matters.
pub async fn database_now(pool: &PgPool) -> Result<DateTime<Utc>, StoreError> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(pool)
        .await
        .map_err(StoreError::from_sqlx("reading the database clock"))
}

const REQUEUE_EXPIRED: &str = "UPDATE orders SET \
     status = CASE WHEN attempts >= $1 THEN 'failed' ELSE 'pending' END, \
     last_error = 'claim by ' || claimed_by || ' expired before the order was finished', \
     claimed_by = NULL, claim_expires_at = NULL \
     WHERE status = 'processing' AND claim_expires_at < now() \
     RETURNING id, status";

/// Puts orders whose claim expired (their worker died or stalled) back in the
/// queue, or marks them failed once they have had `max_attempts` claims: an
/// order that kills its worker every time must not kill every run after.
///
/// Runs in a `requeue-expired-claims` span.
pub async fn requeue_expired(pool: &PgPool, max_attempts: i32) -> Result<Requeued, StoreError> {
    in_db_span(
        db_span(pool, "requeue-expired-claims", "UPDATE", REQUEUE_EXPIRED),
        async {
            sqlx::query_as::<_, (Uuid, String)>(REQUEUE_EXPIRED)
                .bind(max_attempts)
                .fetch_all(pool)
                .await
                .map_err(StoreError::from_sqlx("requeueing expired claims"))
                .map(|rows| {
                    let mut requeued = Requeued::default();
                    for (id, status) in rows {
                        if status == OrderStatus::Failed.as_str() {
                            requeued.failed.push(id);
                        } else {
                            requeued.pending.push(id);
                        }
                    }
                    requeued
                })
        },
    )
    .await
}

const CLAIM: &str = "UPDATE orders SET \
     status = 'processing', claimed_by = $1, claimed_at = now(), \
     claim_expires_at = now() + $2 * interval '1 millisecond', attempts = attempts + 1 \
     WHERE id = ANY(ARRAY( \
         SELECT id FROM orders \
         WHERE status = 'pending' AND created_at <= $3 AND (claimed_at IS NULL OR claimed_at < $3) \
         ORDER BY created_at, id \
         LIMIT $4 \
         FOR UPDATE SKIP LOCKED)) \
     RETURNING id, created_at, items::text AS items, total_cents, traceparent, tracestate, attempts";

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Uuid,
    created_at: DateTime<Utc>,
    items: String,
    total_cents: i64,
    traceparent: Option<String>,
    tracestate: Option<String>,
    attempts: i32,
}

/// Claims up to `request.limit` pending orders, oldest first, skipping orders
/// other workers hold. An empty claim means nothing is left to do.
///
/// Runs in a `claim-orders` span.
pub async fn claim(pool: &PgPool, request: ClaimRequest<'_>) -> Result<Claim, StoreError> {
    let token = format!("{}/{}", request.worker, Uuid::new_v4().simple());
    let lease_millis = i64::try_from(request.lease.as_millis()).unwrap_or(i64::MAX);
    let rows = in_db_span(db_span(pool, "claim-orders", "UPDATE", CLAIM), async {
        sqlx::query_as::<_, ClaimedRow>(CLAIM)
            .bind(&token)
            .bind(lease_millis)
            .bind(request.cutoff)
            .bind(request.limit)
            .fetch_all(pool)
            .await
            .map_err(StoreError::from_sqlx("claiming pending orders"))
    })
    .await?;
    let mut orders: Vec<ClaimedOrder> = rows
        .into_iter()
        .map(|row| ClaimedOrder {
            id: row.id,
            created_at: row.created_at,
            items: row.items,
            total_cents: row.total_cents,
            source_trace: row.traceparent.map(|traceparent| StoredContext {
                traceparent,
                tracestate: row.tracestate,
            }),
            attempts: row.attempts,
        })
        .collect();
    // RETURNING follows no particular order.
    orders.sort_by_key(|order| (order.created_at, order.id));
    Ok(Claim { token, orders })
}

const FINISH: &str = "UPDATE orders AS o SET \
     status = m.status, last_error = m.error, \
     processed_at = CASE WHEN m.status = 'processed' THEN now() END, \
     batch_trace_id = $2, batch_span_id = $3, batch_span_sampled = $7, \
     claimed_by = NULL, claim_expires_at = NULL \
     FROM UNNEST($4::uuid[], $5::text[], $6::text[]) AS m(id, status, error) \
     WHERE o.id = m.id AND o.claimed_by = $1 AND o.status = 'processing' \
     RETURNING o.id, o.status, o.created_at, o.processed_at";

/// Writes the outcome of each order held by the claim `token`, with the batch
/// span that handled it, in one statement. Returns the orders written; an order
/// missing from the result was no longer held by this claim (its lease expired
/// and the order went back to the queue) and was left alone.
///
/// Runs in a `mark-orders` span.
pub async fn finish(
    pool: &PgPool,
    token: &str,
    batch_span: Option<&BatchSpan>,
    outcomes: &[(Uuid, Outcome)],
) -> Result<Vec<Finished>, StoreError> {
    let ids: Vec<Uuid> = outcomes.iter().map(|(id, _)| *id).collect();
    let statuses: Vec<&str> = outcomes
        .iter()
        .map(|(_, outcome)| outcome.status().as_str())
        .collect();
    let errors: Vec<Option<&str>> = outcomes
        .iter()
        .map(|(_, outcome)| outcome.error())
        .collect();
    in_db_span(db_span(pool, "mark-orders", "UPDATE", FINISH), async {
        sqlx::query_as::<_, (Uuid, String, DateTime<Utc>, Option<DateTime<Utc>>)>(FINISH)
            .bind(token)
            .bind(batch_span.map(|span| span.trace_id.as_str()))
            .bind(batch_span.map(|span| span.span_id.as_str()))
            .bind(&ids)
            .bind(&statuses)
            .bind(&errors)
            .bind(batch_span.and_then(|span| span.sampled))
            .fetch_all(pool)
            .await
            .map_err(StoreError::from_sqlx("marking claimed orders"))
            .and_then(|rows| {
                rows.into_iter()
                    .map(|(id, status, created_at, processed_at)| {
                        Ok(Finished {
                            id,
                            status: stored_status(id, &status)?,
                            created_at,
                            processed_at,
                        })
                    })
                    .collect()
            })
    })
    .await
}

const RELEASE: &str = "UPDATE orders SET \
     status = 'pending', claimed_by = NULL, claim_expires_at = NULL, attempts = attempts - 1 \
     WHERE claimed_by = $1 AND status = 'processing'";

/// Gives back, unprocessed, the orders still held by the claim `token` (at
/// shutdown). The claim does not count as an attempt. Returns how many orders
/// went back.
///
/// Runs in a `release-orders` span.
pub async fn release(pool: &PgPool, token: &str) -> Result<u64, StoreError> {
    in_db_span(db_span(pool, "release-orders", "UPDATE", RELEASE), async {
        sqlx::query(RELEASE)
            .bind(token)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(StoreError::from_sqlx("releasing claimed orders"))
    })
    .await
}
