//! A run: claim pending orders oldest first, one batch at a time, until none
//! that were pending when the run started are left, at the pace of the
//! database, or of the trace exporter when that is slower: a batch is
//! claimed only once its spans fit in the export queue, so no claim waits
//! for the exporter.

use std::time::Instant;

use chrono::{DateTime, Utc};
use orders::StoreError;
use orders::claims::{self, Claim, ClaimRequest};
use span_pacing::{Producer, SpanQueue};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::BatchSettings;
use crate::metrics::BatchMetrics;
use crate::process_batch::BatchProcessor;
use crate::report::{BatchReport, RunSummary};

/// Processes pending orders; one per process, shared by every run.
#[derive(Debug)]
pub struct Worker {
    pool: PgPool,
    settings: BatchSettings,
    metrics: BatchMetrics,
    /// The spans waiting for the trace exporter: a batch is claimed when its
    /// spans fit.
    spans: SpanQueue,
    /// Host and process, written to `claimed_by` with each claim.
    id: String,
}

impl Worker {
    /// A worker that never waits for its spans to be exported.
    #[must_use]
    pub fn new(pool: PgPool, settings: BatchSettings, metrics: BatchMetrics) -> Self {
        Self {
            pool,
            settings,
            metrics,
            spans: SpanQueue::default(),
            id: worker_id(),
        }
    }

    /// The same worker, claiming each batch only when the batch's spans fit
    /// in `spans` (as its `OTEL_BSP_ON_QUEUE_FULL` says): a slower exporter
    /// slows the run instead of losing spans and links.
    #[must_use]
    pub fn paced_by(self, spans: SpanQueue) -> Self {
        Self { spans, ..self }
    }

    /// Processes the orders pending when the run starts, in batches of at most
    /// `BATCH_MAX_SIZE`, oldest first. Orders that fail are retried by a later
    /// run, not this one.
    ///
    /// Once `stop` is cancelled no new batch starts, and a wait for room
    /// ends; the batch in hand gets the shutdown grace period to finish, then
    /// its orders are given back, as are those of the batch claimed ahead.
    ///
    /// The run ends once its spans are exported, stopped or not, waiting at
    /// most the block timeout (`OTEL_BSP_BLOCK_ON_QUEUE_FULL_TIMEOUT`), and
    /// not at all once a wait for room has run out; its summary tallies its
    /// spans not exported.
    pub async fn run(&self, stop: &CancellationToken) -> Result<RunSummary, StoreError> {
        let spans = self.spans.producer();
        let cutoff = claims::database_now(&self.pool).await?;
        let max_attempts = i32::try_from(self.settings.max_attempts).unwrap_or(i32::MAX);
        let requeued = claims::requeue_expired(&self.pool, max_attempts).await?;
        let mut summary = RunSummary::new(spans);
        summary.requeued = requeued.pending.len();
        summary.failed = requeued.failed.len();
        if !requeued.pending.is_empty() || !requeued.failed.is_empty() {
            tracing::warn!(
                requeued = requeued.pending.len(),
                failed = requeued.failed.len(),
                "claims of a worker that stopped before finishing expired: orders back in the queue"
            );
            self.metrics.failed(requeued.failed.len(), false);
        }

        let ran_out = self.process_pending(cutoff, stop, &mut summary).await?;
        summary.spans.drain().await;
        if !ran_out {
            summary.interrupted = true;
            summary.pending = self.count_pending().await;
        }
        Ok(summary)
    }

    /// Claims and processes batches until none is left (`true`) or `stop` is
    /// cancelled (`false`). The next batch is claimed while the one in hand is
    /// processed: the claim runs in the database while the batch is marked, on
    /// a second connection, so the two statements no longer take turns.
    async fn process_pending(
        &self,
        cutoff: DateTime<Utc>,
        stop: &CancellationToken,
        summary: &mut RunSummary,
    ) -> Result<bool, StoreError> {
        let spans = summary.spans.clone();
        let mut next = self.claim_when_room(cutoff, &spans, stop).await?;
        loop {
            let Some((claim, claimed)) = next else {
                return Ok(false);
            };
            if claim.orders.is_empty() {
                return Ok(true);
            }
            if stop.is_cancelled() {
                summary.released += self.release(&claim.token).await;
                return Ok(false);
            }
            let (upcoming, outcome) = tokio::join!(
                self.claim_when_room(cutoff, &spans, stop),
                self.process_in_time(&claim, claimed, stop)
            );
            match outcome {
                Some(Ok(report)) => summary.add(report),
                Some(Err(error)) => {
                    tracing::error!(error = %error, claim = %claim.token, "batch failed; giving its orders back");
                    summary.failed_batches += 1;
                    summary.released += self.release(&claim.token).await;
                    if error.is_unavailable() {
                        if let Ok(Some((upcoming, _))) = &upcoming {
                            self.release(&upcoming.token).await;
                        }
                        return Err(error);
                    }
                }
                None => {
                    tracing::warn!(
                        grace = ?self.settings.shutdown_grace,
                        claim = %claim.token,
                        "shutting down: the batch in hand did not finish in time; giving its orders back"
                    );
                    summary.released += self.release(&claim.token).await;
                }
            }
            next = upcoming?;
        }
    }

    /// Claims the next batch once its spans, and those of the batch being
    /// processed beside it, fit in the export queue: rather than dropped from
    /// a full queue, the spans wait, and no claim waits with them, so none
    /// outlives its lease while the exporter catches up. `None` when `stop`
    /// was cancelled first.
    async fn claim_when_room(
        &self,
        cutoff: DateTime<Utc>,
        spans: &Producer,
        stop: &CancellationToken,
    ) -> Result<Option<(Claim, Instant)>, StoreError> {
        let room = spans.room_for(2 * self.settings.spans_per_batch());
        match stop.run_until_cancelled(room).await {
            None => return Ok(None),
            Some(Err(error)) => tracing::warn!(%error, "claiming without waiting for room"),
            Some(Ok(())) => {}
        }
        self.claim(cutoff).await.map(Some)
    }

    /// Claims the next batch, oldest first; the `Instant` is when claiming
    /// began, for the duration metric.
    async fn claim(&self, cutoff: DateTime<Utc>) -> Result<(Claim, Instant), StoreError> {
        let claimed = Instant::now();
        let request = ClaimRequest {
            worker: &self.id,
            limit: i64::from(self.settings.max_size),
            cutoff,
            lease: self.settings.claim_timeout,
        };
        let claim = claims::claim(&self.pool, request).await?;
        Ok((claim, claimed))
    }

    /// Processes `claim`; `None` when the shutdown grace ran out first.
    async fn process_in_time(
        &self,
        claim: &Claim,
        claimed: Instant,
        stop: &CancellationToken,
    ) -> Option<Result<BatchReport, StoreError>> {
        let batch = BatchProcessor {
            pool: &self.pool,
            settings: &self.settings,
            metrics: &self.metrics,
        };
        tokio::select! {
            outcome = batch.process(claim, claimed) => Some(outcome),
            () = orders::shutdown::grace_expired(stop, self.settings.shutdown_grace) => None,
        }
    }

    /// Orders waiting for a run, for the summary of one that was stopped; a
    /// failure is logged, as the summary still says the run was interrupted.
    async fn count_pending(&self) -> Option<u64> {
        let count =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM orders WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await;
        match count {
            Ok(count) => u64::try_from(count).ok(),
            Err(error) => {
                tracing::error!(error = %error, "cannot count the pending orders");
                None
            }
        }
    }

    /// Gives a claim's orders back; a failure is logged, as the claim then
    /// simply expires and a later run requeues the orders.
    async fn release(&self, token: &str) -> usize {
        match claims::release(&self.pool, token).await {
            Ok(released) => usize::try_from(released).unwrap_or(usize::MAX),
            Err(error) => {
                tracing::error!(
                    error = %error,
                    claim = %token,
                    "cannot give the orders back; they return to the queue when the claim expires"
                );
                0
            }
        }
    }
}

/// `host:pid`, so that `claimed_by` tells an operator which worker holds a claim.
fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}
