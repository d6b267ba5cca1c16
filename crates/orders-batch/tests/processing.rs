//! What runs do to the orders table: every order processed exactly once, none
//! lost when a worker dies, claims respected, shutdown honoured.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::time::Duration;

use common::{rows, seed_orders, settings, worker};
use orders::claims::{self, ClaimRequest, Outcome};
use orders::order::BatchSpan;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Claims every pending order as a worker that then dies: it never finishes.
async fn claim_and_die(pool: &PgPool, lease: Duration) -> claims::Claim {
    claims::claim(
        pool,
        ClaimRequest {
            worker: "dead-worker:1",
            limit: 1000,
            cutoff: claims::database_now(pool).await.unwrap(),
            lease,
        },
    )
    .await
    .unwrap()
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn an_order_that_keeps_killing_its_worker_ends_up_failed(pool: PgPool) {
    seed_orders(&pool, 2).await;
    let mut settings = settings(10);
    settings.max_attempts = 2;
    claim_and_die(&pool, Duration::ZERO).await;
    let requeued = claims::requeue_expired(&pool, 2).await.unwrap();
    assert_eq!((requeued.pending.len(), requeued.failed.len()), (2, 0));
    for row in rows(&pool).await {
        assert_eq!((row.status.as_str(), row.claimed_by), ("pending", None));
        assert!(
            row.last_error
                .unwrap()
                .starts_with("claim by dead-worker:1/")
        );
    }
    claim_and_die(&pool, Duration::ZERO).await;

    let summary = worker(&pool, settings)
        .run(&CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(
        (summary.failed, summary.processed, summary.requeued),
        (2, 0, 0)
    );
    for row in rows(&pool).await {
        assert_eq!((row.status.as_str(), row.attempts), ("failed", 2));
        assert!(
            row.last_error
                .unwrap()
                .contains("expired before the order was finished")
        );
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_live_claim_is_left_to_its_worker(pool: PgPool) {
    seed_orders(&pool, 3).await;
    let held = claim_and_die(&pool, Duration::from_mins(10)).await;

    let summary = worker(&pool, settings(10))
        .run(&CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(
        (summary.processed, summary.batches, summary.requeued),
        (0, 0, 0)
    );
    for row in rows(&pool).await {
        assert_eq!(row.status, "processing");
        assert_eq!(row.claimed_by.as_deref(), Some(held.token.as_str()));
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_claim_that_expired_and_was_taken_again_cannot_be_finished_twice(pool: PgPool) {
    seed_orders(&pool, 3).await;
    let stalled = claim_and_die(&pool, Duration::ZERO).await;
    worker(&pool, settings(10))
        .run(&CancellationToken::new())
        .await
        .unwrap();
    let processed_by_next_run = rows(&pool).await;

    // The stalled worker wakes up and tries to finish its old claim.
    let outcomes: Vec<_> = stalled
        .orders
        .iter()
        .map(|order| (order.id, Outcome::Processed))
        .collect();
    let late_batch = BatchSpan {
        trace_id: "0".repeat(31) + "1",
        span_id: "0".repeat(15) + "1",
        sampled: Some(true),
    };
    let finished = claims::finish(&pool, &stalled.token, Some(&late_batch), &outcomes)
        .await
        .unwrap();

    assert!(finished.is_empty());
    let after = rows(&pool).await;
    for (before, after) in processed_by_next_run.iter().zip(&after) {
        assert_eq!(after.status, "processed");
        assert_eq!(after.batch_span_id, before.batch_span_id);
        assert_eq!(after.processed_at, before.processed_at);
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn released_orders_go_back_without_counting_an_attempt(pool: PgPool) {
    seed_orders(&pool, 4).await;
    let claim = claim_and_die(&pool, Duration::from_mins(10)).await;

    let released = claims::release(&pool, &claim.token).await.unwrap();

    assert_eq!(released, 4);
    for row in rows(&pool).await {
        assert_eq!((row.status.as_str(), row.attempts), ("pending", 0));
        assert_eq!(row.claimed_by, None);
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_run_takes_only_orders_created_before_it_started(pool: PgPool) {
    let earlier = seed_orders(&pool, 2).await;
    let cutoff = claims::database_now(&pool).await.unwrap();
    seed_orders(&pool, 2).await;

    let claim = claims::claim(
        &pool,
        ClaimRequest {
            worker: "w:1",
            limit: 10,
            cutoff,
            lease: Duration::from_mins(1),
        },
    )
    .await
    .unwrap();

    let claimed: Vec<_> = claim.orders.iter().map(|order| order.id).collect();
    assert_eq!(claimed, earlier);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_run_asked_to_stop_before_it_starts_claims_nothing(pool: PgPool) {
    seed_orders(&pool, 3).await;
    let stop = CancellationToken::new();
    stop.cancel();

    let summary = worker(&pool, settings(10)).run(&stop).await.unwrap();

    assert_eq!(
        (summary.batches, summary.released, summary.interrupted),
        (0, 0, true)
    );
    assert!(
        rows(&pool)
            .await
            .iter()
            .all(|row| row.status == "pending" && row.attempts == 0 && row.claimed_by.is_none())
    );
}
