//! The `orders-batch` binary as users run it: real processes configured by
//! environment variables, on a real database, exporting over real OTLP (gRPC
//! and HTTP) to a receiver in this test, run `--once` or on the schedule,
//! stopped with SIGTERM or killed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up fails loudly"
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{
    OnceSummary as _, Row, bulk_seed, check_process_batch_span, check_reconcile_spans, count,
    count_status, named, rows, run_once, seed_orders, stored_targets,
};
use orders_test_support::{Process, WAIT, otel_env, wait_until};
use otlp_receiver::opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use otlp_receiver::{OtlpReceiver, ReceivedSpan};
use sqlx::PgPool;
use uuid::Uuid;

/// How long spans may take to arrive once the process that exported them exited
/// (it flushed before exiting: this only covers the receiver's own processing).
const ARRIVE: Duration = Duration::from_secs(10);

fn with(
    mut env: Vec<(&'static str, String)>,
    more: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    env.extend(more.iter().map(|(key, value)| (*key, (*value).to_owned())));
    env
}

/// Waits until `count` orders have been reconciled and `batches`
/// process-batch spans arrived.
async fn wait_for_batches(
    receiver: &OtlpReceiver,
    batches: usize,
    count: usize,
) -> Vec<ReceivedSpan> {
    let spans = receiver
        .wait_for_spans(ARRIVE, |spans| {
            named(spans, "process-batch").len() >= batches
                && named(spans, "reconcile").len() >= count
        })
        .await;
    assert_eq!(
        named(&spans, "process-batch").len(),
        batches,
        "process-batch spans"
    );
    assert_eq!(named(&spans, "reconcile").len(), count, "reconcile spans");
    spans
}

/// Every row processed once, by the batch span `batch_of` names for it.
fn assert_processed_once_by(rows: &[Row], batch_of: impl Fn(&Row) -> (String, String)) {
    for row in rows {
        assert_eq!(row.status, "processed", "{row:?}");
        assert_eq!(row.attempts, 1, "{row:?}");
        assert_eq!(row.claimed_by, None, "{row:?}");
        assert_eq!(row.last_error, None, "{row:?}");
        assert!(row.processed_at.is_some(), "{row:?}");
        let (trace_id, span_id) = batch_of(row);
        assert_eq!(
            row.batch_trace_id.as_deref(),
            Some(trace_id.as_str()),
            "{row:?}"
        );
        assert_eq!(
            row.batch_span_id.as_deref(),
            Some(span_id.as_str()),
            "{row:?}"
        );
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn once_links_every_order_over_otlp(pool: PgPool) {
    let seeded = seed_orders(&pool, 1500).await;
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = with(
        otel_env(&pool, &receiver, "grpc"),
        &[("BATCH_MAX_SIZE", "1500")],
    );

    let run = run_once(&env).await;
    run.assert_success();
    let summary = run.summary();
    assert_eq!(
        (summary.processed, summary.batches, summary.unlinked),
        (1500, 1, 0),
        "{run}"
    );
    assert_eq!(
        (
            summary.failed,
            summary.retrying,
            summary.failed_batches,
            summary.requeued,
            summary.released
        ),
        (0, 0, 0, 0, 0),
        "{run}"
    );

    let spans = wait_for_batches(&receiver, 1, 1500).await;
    let batches = named(&spans, "process-batch");
    let batch = batches[0];
    assert_eq!(batch.links().len(), 1500);
    assert_eq!(batch.int_attribute("batch.size"), Some(1500));
    let links = check_process_batch_span(batch);

    // The links are exactly the stored contexts, trace state included, each
    // named by its order.
    let stored = stored_targets(&pool).await;
    assert_eq!(stored.len(), 1500);
    assert_eq!(links, stored);
    let seeded_ids: HashSet<String> = seeded.iter().map(|order| order.id.to_string()).collect();
    assert_eq!(links.keys().cloned().collect::<HashSet<_>>(), seeded_ids);
    assert!(
        links.values().any(|(_, _, state)| !state.is_empty()),
        "trace states travel with the links"
    );

    // One reconcile child per order, each linked to its own order's context.
    let reconciled = check_reconcile_spans(&spans, &batches, &stored);
    assert_eq!(reconciled.len(), 1500);

    // The database spans: claiming and requeueing are roots, marking is a child.
    for span in spans
        .iter()
        .filter(|span| span.service_name == "orders-batch")
    {
        match span.name() {
            "mark-orders" => {
                assert_eq!(span.kind(), SpanKind::Client);
                assert_eq!(span.parent_span_id(), Some(batch.span_id()));
            }
            "claim-orders" | "requeue-expired-claims" => {
                assert_eq!(span.kind(), SpanKind::Client);
                assert_eq!(span.parent_span_id(), None, "{}", span.name());
            }
            "process-batch" | "reconcile" => {}
            other => panic!("unexpected span {other:?}"),
        }
    }
    assert_eq!(named(&spans, "mark-orders").len(), 1);
    // One claim that got the batch, one that found nothing left.
    assert_eq!(named(&spans, "claim-orders").len(), 2);

    assert_processed_once_by(&rows(&pool).await, |_| (batch.trace_id(), batch.span_id()));

    // Logs written during the batch carry its trace and span.
    let logs = receiver
        .wait_for_logs(ARRIVE, |logs| {
            logs.iter()
                .any(|log| log.body_text().as_deref() == Some("batch done"))
        })
        .await;
    for message in ["processing a batch", "batch done"] {
        let log = logs
            .iter()
            .find(|log| log.body_text().as_deref() == Some(message))
            .unwrap_or_else(|| panic!("no {message:?} log record"));
        assert_eq!(log.service_name, "orders-batch");
        assert_eq!(log.trace_id(), Some(batch.trace_id()), "{message}");
        assert_eq!(log.span_id(), Some(batch.span_id()), "{message}");
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn once_cuts_batches_of_1000_oldest_first_by_default_over_http(pool: PgPool) {
    seed_orders(&pool, 1500).await;
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = otel_env(&pool, &receiver, "http/protobuf");

    let run = run_once(&env).await;
    run.assert_success();
    let summary = run.summary();
    assert_eq!(
        (summary.processed, summary.batches, summary.unlinked),
        (1500, 2, 0),
        "{run}"
    );

    let spans = wait_for_batches(&receiver, 2, 1500).await;
    let mut batches = named(&spans, "process-batch");
    batches.sort_by_key(|batch| batch.span.start_time_unix_nano);
    let sizes: Vec<usize> = batches.iter().map(|batch| batch.links().len()).collect();
    assert_eq!(sizes, [1000, 500]);
    let stored = stored_targets(&pool).await;
    let mut linked = HashMap::new();
    for batch in &batches {
        for (order, target) in check_process_batch_span(batch) {
            assert_eq!(stored.get(&order), Some(&target), "link for {order}");
            assert!(linked.insert(order, batch.span_id()).is_none());
        }
    }
    assert_eq!(linked.len(), 1500);
    check_reconcile_spans(&spans, &batches, &stored);

    // The first batch holds the 1000 oldest orders.
    let rows = rows(&pool).await;
    let (oldest, newest) = rows.split_at(1000);
    assert_processed_once_by(oldest, |_| (batches[0].trace_id(), batches[0].span_id()));
    assert_processed_once_by(newest, |_| (batches[1].trace_id(), batches[1].span_id()));
    for row in &rows {
        assert_eq!(linked.get(&row.id.to_string()), row.batch_span_id.as_ref());
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn two_processes_at_once_process_every_order_exactly_once(pool: PgPool) {
    seed_orders(&pool, 3000).await;
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = with(
        otel_env(&pool, &receiver, "grpc"),
        &[("BATCH_MAX_SIZE", "200")],
    );

    let first = Process::orders_batch(&["--once"], &env);
    let second = Process::orders_batch(&["--once"], &env);
    let (first, second) = (first.wait(WAIT).await, second.wait(WAIT).await);
    first.assert_success();
    second.assert_success();
    let (a, b) = (first.summary(), second.summary());
    assert_eq!(a.processed + b.processed, 3000, "{first}\n{second}");
    assert_eq!(a.failed + b.failed + a.retrying + b.retrying, 0);
    assert_eq!(a.failed_batches + b.failed_batches, 0);
    let batch_count = a.batches + b.batches;
    assert!(batch_count >= 15, "{a:?} {b:?}");

    let spans = wait_for_batches(&receiver, batch_count, 3000).await;
    let batches = named(&spans, "process-batch");
    let stored = stored_targets(&pool).await;
    let mut linked: HashMap<String, (String, String)> = HashMap::new();
    for batch in &batches {
        assert!(batch.links().len() <= 200);
        for (order, target) in check_process_batch_span(batch) {
            assert_eq!(stored.get(&order), Some(&target), "link for {order}");
            let previous = linked.insert(order.clone(), (batch.trace_id(), batch.span_id()));
            assert!(
                previous.is_none(),
                "order {order} is linked from two batches"
            );
        }
    }
    assert_eq!(
        linked.len(),
        3000,
        "every order is linked from exactly one batch"
    );
    let reconciled = check_reconcile_spans(&spans, &batches, &stored);
    assert_eq!(reconciled.len(), 3000);

    assert_processed_once_by(&rows(&pool).await, |row| {
        linked[&row.id.to_string()].clone()
    });
    // How the work was shared (usually about half each); not asserted, as a
    // process that starts late may find nothing left.
    println!("first: {a:?}\nsecond: {b:?}");
}

/// Seeds `count` orders for the long runs that get interrupted.
const LONG_RUN: i32 = 20_000;
/// `SHUTDOWN_GRACE_SECS` for the SIGTERM tests, and what bounds their stop.
const GRACE_SECS: u64 = 5;

/// One order's processing as the database records it.
type Processing = (
    Uuid,
    i32,
    Option<String>,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
);

async fn processed_rows(pool: &PgPool) -> Vec<Processing> {
    sqlx::query_as(
        "SELECT id, attempts, batch_trace_id, batch_span_id, processed_at FROM orders \
         WHERE status = 'processed' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_worker_killed_mid_run_loses_nothing(pool: PgPool) {
    bulk_seed(&pool, LONG_RUN).await;
    let total = usize::try_from(LONG_RUN).unwrap();
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = with(
        otel_env(&pool, &receiver, "grpc"),
        &[("BATCH_MAX_SIZE", "50"), ("BATCH_CLAIM_TIMEOUT_SECS", "1")],
    );

    // The first worker's sessions are named, to see when they are gone.
    let mut first_env = env.clone();
    for (key, value) in &mut first_env {
        if *key == "DATABASE_URL" {
            value.push_str("&application_name=killed-worker");
        }
    }
    let mut first = Process::orders_batch(&["--once"], &first_env);
    wait_until(WAIT, "the first orders processed", || async {
        count_status(&pool, "processed").await >= 100
    })
    .await;
    first.sigkill();
    let first = first.wait(WAIT).await;
    assert_eq!(first.status.code(), None, "killed: {first}");
    // A statement the worker sent just before it died still runs (and
    // commits) on the server: wait until its sessions have ended.
    wait_until(WAIT, "the killed worker's sessions to end", || async {
        count(
            &pool,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'killed-worker'",
        )
        .await
            == 0
    })
    .await;

    let processed_before = processed_rows(&pool).await;
    let processing = count_status(&pool, "processing").await;
    let pending = count_status(&pool, "pending").await;
    assert_eq!(processed_before.len() + processing + pending, total);
    assert!(processing + pending > 0, "the run was over before the kill");
    println!(
        "killed with {} processed, {processing} processing, {pending} pending",
        processed_before.len()
    );

    // The dead worker's claims expire after a second.
    wait_until(
        Duration::from_secs(5),
        "the killed worker's claims to expire",
        || async {
            count(
                &pool,
                "SELECT count(*) FROM orders WHERE status = 'processing' AND claim_expires_at >= now()",
            )
            .await
                == 0
        },
    )
    .await;

    let second = run_once(&env).await;
    second.assert_success();
    let summary = second.summary();
    assert_eq!(summary.requeued, processing, "{second}");
    if processing > 0 {
        assert!(
            second
                .stdout
                .contains("claims of a worker that stopped before finishing expired"),
            "{second}"
        );
    }
    assert_eq!(
        summary.processed,
        total - processed_before.len(),
        "{second}"
    );
    assert_eq!(
        (summary.failed, summary.retrying, summary.failed_batches),
        (0, 0, 0),
        "{second}"
    );

    assert_eq!(count_status(&pool, "processed").await, total);
    // What the killed worker finished, the second run left alone: each order
    // was processed by one batch only.
    let processed_after: HashMap<Uuid, Processing> = processed_rows(&pool)
        .await
        .into_iter()
        .map(|row| (row.0, row))
        .collect();
    for before in &processed_before {
        assert_eq!(before.1, 1, "{before:?}");
        assert_eq!(
            processed_after.get(&before.0),
            Some(before),
            "processed again"
        );
    }
    // Orders the killed worker held were claimed twice; the others once.
    let attempts: Vec<(i32, i64)> =
        sqlx::query_as("SELECT attempts, count(*) FROM orders GROUP BY attempts ORDER BY attempts")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<(i32, i64)> = [(1, total - processing), (2, processing)]
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(attempts, count)| (attempts, i64::try_from(count).unwrap()))
        .collect();
    assert_eq!(attempts, expected);
    for row in rows(&pool).await {
        assert!(
            row.batch_trace_id.is_some() && row.batch_span_id.is_some(),
            "{row:?}"
        );
        assert_eq!(row.claimed_by, None, "{row:?}");
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn sigterm_mid_run_finishes_the_batch_and_exits_zero(pool: PgPool) {
    bulk_seed(&pool, LONG_RUN).await;
    let total = usize::try_from(LONG_RUN).unwrap();
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = with(
        otel_env(&pool, &receiver, "grpc"),
        &[
            ("BATCH_MAX_SIZE", "50"),
            ("SHUTDOWN_GRACE_SECS", &GRACE_SECS.to_string()),
        ],
    );

    let run = Process::orders_batch(&["--once"], &env);
    wait_until(WAIT, "the first orders processed", || async {
        count_status(&pool, "processed").await > 0
    })
    .await;
    let signalled = Instant::now();
    run.sigterm();
    let run = run.wait(WAIT).await;
    let stopped_in = signalled.elapsed();
    run.assert_success();
    assert!(
        stopped_in < Duration::from_secs(GRACE_SECS + 3),
        "took {stopped_in:?} to stop\n{run}"
    );
    assert!(
        run.stdout
            .contains("shutting down: finishing the batch in hand"),
        "{run}"
    );

    let summary = run.summary();
    assert_eq!(
        count_status(&pool, "processing").await,
        0,
        "nothing left claimed"
    );
    let processed = count_status(&pool, "processed").await;
    let pending = count_status(&pool, "pending").await;
    assert_eq!(processed + pending, total);
    assert!(pending > 0, "the run was over before SIGTERM: {run}");
    assert_eq!(summary.processed, processed, "{run}");
    assert_eq!((summary.failed, summary.failed_batches), (0, 0), "{run}");
    // The batch in hand finished, so nothing had to be given back; orders the
    // run did not reach were never claimed.
    assert_eq!(summary.released, 0, "{run}");
    let unclaimed = count(
        &pool,
        "SELECT count(*) FROM orders WHERE status = 'pending' AND attempts = 0 AND claimed_by IS NULL",
    )
    .await;
    assert_eq!(unclaimed, pending);

    // A later run picks up the rest.
    let rest = run_once(&env).await;
    rest.assert_success();
    assert_eq!(rest.summary().processed, pending, "{rest}");
    assert_eq!(count_status(&pool, "processed").await, total);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn scheduled_mode_runs_on_ticks_and_stops_at_once_between_runs(pool: PgPool) {
    let mut seeded = seed_orders(&pool, 10).await;
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = with(
        otel_env(&pool, &receiver, "grpc"),
        &[("BATCH_SCHEDULE", "* * * * * *")],
    );

    let mut scheduled = Process::orders_batch(&[], &env);
    wait_until(
        Duration::from_secs(10),
        "the first orders processed on a tick",
        || async { count_status(&pool, "processed").await == 10 },
    )
    .await;
    // A later tick takes orders stored after the first run.
    seeded.extend(seed_orders(&pool, 5).await);
    wait_until(
        Duration::from_secs(10),
        "later orders processed on a later tick",
        || async { count_status(&pool, "processed").await == 15 },
    )
    .await;
    assert!(scheduled.running(), "the scheduled process keeps running");

    // Stop between runs: ticks come every second and take milliseconds.
    let signalled = Instant::now();
    scheduled.sigterm();
    let scheduled = scheduled.wait(WAIT).await;
    let stopped_in = signalled.elapsed();
    scheduled.assert_success();
    assert!(
        stopped_in < Duration::from_millis(2500),
        "took {stopped_in:?} to stop between runs\n{scheduled}"
    );
    assert!(
        scheduled.stdout.contains("orders-batch stopped"),
        "{scheduled}"
    );
    assert!(
        !scheduled.stdout.contains("orders-batch --once:"),
        "no summary outside --once\n{scheduled}"
    );

    let spans = receiver
        .wait_for_spans(ARRIVE, |spans| named(spans, "reconcile").len() >= 15)
        .await;
    let batches = named(&spans, "process-batch");
    assert!(batches.len() >= 2, "two runs, at least two batches");
    let mut linked = HashSet::new();
    for batch in &batches {
        for order in check_process_batch_span(batch).into_keys() {
            assert!(linked.insert(order));
        }
    }
    let ids: HashSet<String> = seeded.iter().map(|order| order.id.to_string()).collect();
    assert_eq!(linked, ids);
    for row in rows(&pool).await {
        assert_eq!(
            (row.status.as_str(), row.attempts),
            ("processed", 1),
            "{row:?}"
        );
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn sigterm_during_a_scheduled_run_finishes_the_batch_and_exits_zero(pool: PgPool) {
    bulk_seed(&pool, LONG_RUN).await;
    let total = usize::try_from(LONG_RUN).unwrap();
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = with(
        otel_env(&pool, &receiver, "grpc"),
        &[
            ("BATCH_SCHEDULE", "* * * * * *"),
            ("BATCH_MAX_SIZE", "50"),
            ("SHUTDOWN_GRACE_SECS", &GRACE_SECS.to_string()),
        ],
    );

    let scheduled = Process::orders_batch(&[], &env);
    wait_until(WAIT, "the first orders processed on a tick", || async {
        count_status(&pool, "processed").await > 0
    })
    .await;
    let signalled = Instant::now();
    scheduled.sigterm();
    let scheduled = scheduled.wait(WAIT).await;
    let stopped_in = signalled.elapsed();
    scheduled.assert_success();
    assert!(
        stopped_in < Duration::from_secs(GRACE_SECS + 3),
        "took {stopped_in:?} to stop\n{scheduled}"
    );

    // The run in progress stopped after its batch in hand: nothing is left
    // claimed, nothing was given back, the rest waits for a later run.
    assert_eq!(count_status(&pool, "processing").await, 0, "{scheduled}");
    let processed = count_status(&pool, "processed").await;
    let pending = count_status(&pool, "pending").await;
    assert_eq!(processed + pending, total);
    assert!(pending > 0, "the run was over before SIGTERM: {scheduled}");
    assert!(scheduled.stdout.contains("run finished"), "{scheduled}");
    assert!(
        scheduled.stdout.contains("orders-batch stopped"),
        "{scheduled}"
    );
}

#[tokio::test]
async fn invalid_schedule_is_refused_at_start() {
    let database = (
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:1/orders".to_owned(),
    );
    for schedule in ["0 * * * *", "every hour"] {
        let run = run_once(&[database.clone(), ("BATCH_SCHEDULE", schedule.to_owned())]).await;
        assert_eq!(run.code(), 2, "{run}");
        assert!(run.stderr.contains("BATCH_SCHEDULE"), "{run}");
        assert!(run.stderr.contains("6 fields"), "{run}");
    }

    let run = run_once(&[]).await;
    assert_eq!(run.code(), 2, "{run}");
    assert!(run.stderr.contains("DATABASE_URL"), "{run}");

    let run = run_once(&[database, ("BATCH_MAX_SIZE", "10001".to_owned())]).await;
    assert_eq!(run.code(), 2, "{run}");
    assert!(run.stderr.contains("BATCH_MAX_SIZE"), "{run}");
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn nothing_pending_exports_no_process_batch_span(pool: PgPool) {
    let receiver = OtlpReceiver::start().await.unwrap();
    let run = run_once(&otel_env(&pool, &receiver, "grpc")).await;
    run.assert_success();
    assert_eq!(run.summary(), common::Summary::default(), "{run}");
    assert!(run.stdout.contains("no pending orders"), "{run}");

    // The process flushed before exiting: what it did export is there.
    let spans = receiver
        .wait_for_spans(ARRIVE, |spans| !named(spans, "claim-orders").is_empty())
        .await;
    assert_eq!(named(&spans, "claim-orders").len(), 1);
    assert!(named(&spans, "process-batch").is_empty());
    assert!(named(&spans, "reconcile").is_empty());
    assert!(
        receiver
            .log_records()
            .iter()
            .any(|log| log.body_text().as_deref() == Some("no pending orders")),
        "the log record is exported too"
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_quiet_rust_log_keeps_the_spans_and_links(pool: PgPool) {
    seed_orders(&pool, 20).await;
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = with(otel_env(&pool, &receiver, "grpc"), &[("RUST_LOG", "warn")]);

    let run = run_once(&env).await;
    run.assert_success();
    assert_eq!(run.summary().processed, 20, "{run}");
    assert!(
        !run.stdout.contains("sqlx::postgres::notice"),
        "other crates' info logs are off: {run}"
    );

    let spans = wait_for_batches(&receiver, 1, 20).await;
    assert_eq!(named(&spans, "process-batch")[0].links().len(), 20);
    for row in rows(&pool).await {
        assert!(row.batch_trace_id.is_some(), "{row:?}");
    }
}

#[tokio::test]
async fn sigterm_during_start_up_exits_zero() {
    // A "database" that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let env = [
        (
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/orders"),
        ),
        ("DATABASE_ACQUIRE_TIMEOUT_SECS", "60".to_owned()),
        ("OTEL_SDK_DISABLED", "true".to_owned()),
    ];
    for args in [&["--once"][..], &[][..]] {
        let process = Process::orders_batch(args, &env);
        tokio::time::sleep(Duration::from_millis(500)).await;
        process.sigterm();
        let exited = process.wait(Duration::from_secs(5)).await;
        assert_eq!(exited.code(), 0, "{args:?}: {exited}");
        assert!(
            exited.stdout.contains("stopped during start-up"),
            "{exited}"
        );
    }
    silent.abort();
}
