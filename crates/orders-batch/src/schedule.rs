//! Running on a cron schedule, one run at a time.
//!
//! tokio-cron-scheduler starts a job on every tick even while the previous
//! run of that job is still going, and its shutdown does not wait for running
//! jobs; [`RunGuard`] supplies both: a tick that finds a run in progress is
//! skipped, and shutdown waits for the run in hand.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::worker::Worker;

/// A 6-field cron expression (second minute hour day month weekday), in UTC.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.expression).finish()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

/// Why a schedule was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "schedule (BATCH_SCHEDULE) {expression:?} is not usable: {reason} (expected 6 fields, \"second minute hour day month weekday\" in UTC, e.g. \"0 0 * * * *\" for hourly)"
)]
pub struct ScheduleError {
    expression: String,
    reason: String,
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(expression: &str) -> Result<Self, ScheduleError> {
        let expression = expression.trim();
        let refuse = |reason: String| ScheduleError {
            expression: expression.to_owned(),
            reason,
        };
        // The same parser settings tokio-cron-scheduler uses, so what is
        // accepted here is what it runs.
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expression)
            .map_err(|error| refuse(error.to_string()))?;
        let schedule = Self {
            expression: expression.to_owned(),
            cron,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(refuse("it never fires".to_owned()));
        }
        Ok(schedule)
    }
}

impl Schedule {
    /// The first tick after `time`, if there is one.
    #[must_use]
    pub fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&time, false).ok()
    }
}

/// Lets one run at a time through, and lets shutdown wait for it.
#[derive(Debug, Default)]
pub(crate) struct RunGuard {
    running: Mutex<()>,
}

impl RunGuard {
    /// Runs `run` unless a run is in progress, in which case `None` at once.
    pub async fn run_exclusive<F: Future>(&self, run: F) -> Option<F::Output> {
        let _running = self.running.try_lock().ok()?;
        Some(run.await)
    }

    /// Completes when no run is in progress.
    pub async fn idle(&self) {
        drop(self.running.lock().await);
    }
}

/// Runs `worker` on `schedule` until `stop` is cancelled; then waits for the
/// run in progress, which stops after its current batch.
pub async fn run_on_schedule(
    worker: Arc<Worker>,
    schedule: &Schedule,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let guard = Arc::new(RunGuard::default());
    let job = {
        let guard = Arc::clone(&guard);
        let stop = stop.clone();
        Job::new_async(schedule.expression.as_str(), move |_, _| {
            let worker = Arc::clone(&worker);
            let guard = Arc::clone(&guard);
            let stop = stop.clone();
            Box::pin(async move {
                tick(&worker, &guard, &stop).await;
            })
        })
        .with_context(|| format!("scheduling {schedule:?} (BATCH_SCHEDULE)"))?
    };
    let mut scheduler = JobScheduler::new()
        .await
        .context("creating the scheduler")?;
    scheduler.add(job).await.context("adding the batch job")?;
    scheduler.start().await.context("starting the scheduler")?;
    tracing::info!(
        schedule = %schedule,
        next_run = ?schedule.next_after(Utc::now()),
        "orders-batch waiting for the schedule"
    );

    stop.cancelled().await;
    tracing::info!("shutting down: no new runs; waiting for the run in progress");
    scheduler
        .shutdown()
        .await
        .context("stopping the scheduler")?;
    guard.idle().await;
    tracing::info!("orders-batch stopped");
    Ok(())
}

async fn tick(worker: &Worker, guard: &RunGuard, stop: &CancellationToken) {
    if stop.is_cancelled() {
        return;
    }
    match guard.run_exclusive(worker.run(stop)).await {
        None => tracing::warn!("the previous run is still going: skipping this tick"),
        Some(Ok(summary)) => summary.log(),
        Some(Err(error)) => {
            tracing::error!(error = %error, "run failed; the next tick tries again");
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use tokio::sync::oneshot;

    use super::*;

    #[test]
    fn parses_six_field_expressions() {
        let hourly: Schedule = "0 0 * * * *".parse().unwrap();
        let from = Utc.with_ymd_and_hms(2026, 11, 21, 5, 30, 0).unwrap();
        assert_eq!(
            hourly.next_after(from),
            Some(Utc.with_ymd_and_hms(2026, 11, 21, 6, 0, 0).unwrap())
        );
        let every_ten_seconds: Schedule = "*/10 * * * * *".parse().unwrap();
        assert_eq!(
            every_ten_seconds.next_after(from),
            Some(Utc.with_ymd_and_hms(2026, 11, 21, 5, 30, 10).unwrap())
        );
    }

    #[test]
    fn refuses_five_fields_nonsense_and_dates_that_never_come() {
        for expression in [
            "0 * * * *",
            "every hour",
            "61 * * * * *",
            "",
            "0 0 0 30 2 *",
        ] {
            let error = expression.parse::<Schedule>().unwrap_err().to_string();
            assert!(error.contains("expected 6 fields"), "{expression}: {error}");
        }
        let error = "0 0 0 30 2 *".parse::<Schedule>().unwrap_err().to_string();
        assert!(error.contains("never fires"), "{error}");
    }

    #[tokio::test]
    async fn a_second_run_is_skipped_while_one_is_in_progress() {
        let guard = Arc::new(RunGuard::default());
        let (finish, finished) = oneshot::channel::<()>();
        let first = tokio::spawn({
            let guard = Arc::clone(&guard);
            async move { guard.run_exclusive(async { finished.await.is_ok() }).await }
        });
        tokio::task::yield_now().await;
        while guard.running.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        assert_eq!(guard.run_exclusive(async { "second" }).await, None);

        finish.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Some(true));
        guard.idle().await;
        assert_eq!(guard.run_exclusive(async { "third" }).await, Some("third"));
    }
}
