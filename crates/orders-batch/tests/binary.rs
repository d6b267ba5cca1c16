//! The `orders-batch` binary (in CI the release build, as compose runs it):
//! real processes configured by environment variables, exporting over real
//! OTLP to a receiver in the test, run `--once` or on the schedule, stopped
//! with SIGTERM or killed.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::CommandFactory as _;
use common::{
    Row, assert_processed_once_by, batch_of_each_order, bulk_seed, check_reconcile_spans,
};
use common::{binary, with};
use common::{check_process_batch, count_status, rows, seed_orders, stored_targets, summary};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use orders_test_support::{Exited, OtlpReceiver, Process, ReceivedSpan, Silent, WAIT};
use orders_test_support::{
    Pod, hex, kubernetes_container, named, otel_env, pairs, point_at_test, string,
    unreachable_databases, wait_until,
};
use orders_test_support::{assert_reads_every_variable, body, compose_environment, database_url};
use sqlx::PgPool;

/// Enough orders that a run is still going when a test interrupts it.
const LONG_RUN: i32 = 20_000;
const NOTHING: &str =
    "processed=0 failed=0 retrying=0 batches=0 failed_batches=0 unlinked=0 requeued=0 released=0";

/// The test's database, telemetry off, and `more`: for runs about the queue.
fn quiet(pool: &PgPool, more: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let env = with(
        vec![("DATABASE_URL", database_url(pool))],
        &[("OTEL_SDK_DISABLED", "true")],
    );
    with(env, more)
}

async fn run_once(env: &[(&str, String)]) -> Exited {
    Process::spawn(binary(), &["--once"], env).wait(WAIT).await
}

/// The spans, once `batches` process-batch and `orders` reconcile spans arrived.
async fn batch_spans(receiver: &OtlpReceiver, batches: usize, orders: usize) -> Vec<ReceivedSpan> {
    let count = |spans: &[ReceivedSpan]| {
        (
            named(spans, "process-batch").len(),
            named(spans, "reconcile").len(),
        )
    };
    let spans = receiver
        .wait_for_spans(Duration::from_secs(10), |spans| {
            count(spans) >= (batches, orders)
        })
        .await;
    assert_eq!(count(&spans), (batches, orders));
    spans
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn once_links_every_order_in_batches_of_1000_and_then_finds_nothing(pool: PgPool) {
    seed_orders(&pool, 1500).await;
    let receiver = OtlpReceiver::start().await;
    let env = otel_env(&pool, &receiver, "grpc");
    let run = run_once(&env).await;
    run.assert_code(0);
    let done = "processed=1500 failed=0 retrying=0 batches=2 failed_batches=0 unlinked=0 requeued=0 released=0";
    assert_eq!(summary(&run), done);

    let spans = batch_spans(&receiver, 2, 1500).await;
    let mut batches = named(&spans, "process-batch");
    batches.sort_by_key(|batch| batch.span.start_time_unix_nano);
    let sizes: Vec<usize> = batches.iter().map(|batch| batch.links().len()).collect();
    assert_eq!(sizes, [1000, 500], "more links than the SDK's 128");
    assert_eq!(batches[1].int("batch.processed_count"), Some(500));
    let stored = stored_targets(&pool).await;
    let batch_of = batch_of_each_order(&batches, &stored);
    check_reconcile_spans(&spans, &batches, &stored);
    let rows = rows(&pool).await;
    assert_processed_once_by(&rows, |row| batch_of[&row.id.to_string()].clone());
    // Oldest first, each batch in a trace of its own.
    let first = (batches[0].trace_id(), batches[0].span_id());
    assert!(
        rows[..1000]
            .iter()
            .all(|row| batch_of[&row.id.to_string()] == first)
    );
    assert_ne!(batches[0].trace_id(), batches[1].trace_id());
    for span in spans
        .iter()
        .filter(|span| span.span.kind() == SpanKind::Client)
    {
        assert_eq!(
            span.parent().is_some(),
            span.name() == "mark-orders",
            "only marking is in a batch"
        );
    }
    // Log records and lines written in a batch carry its trace.
    for batch in &batches {
        let logs = receiver.logs();
        let ids = |log: &&LogRecord| {
            (hex(&log.trace_id), hex(&log.span_id))
                == (Some(batch.trace_id()), Some(batch.span_id()))
        };
        let mut bodies: Vec<&str> = logs.iter().filter(ids).filter_map(body).collect();
        bodies.sort_unstable();
        assert_eq!(bodies, ["batch done", "processing a batch"]);
        let line = format!("trace_id={}", batch.trace_id());
        assert!(
            run.stdout
                .lines()
                .any(|done| done.contains("batch done") && done.ends_with(&line)),
            "{run}"
        );
    }

    let again = run_once(&env).await;
    assert_eq!(summary(&again), NOTHING);
    assert!(again.stdout.contains("no pending orders"), "{again}");
    let spans = receiver
        .wait_for_spans(WAIT, |spans| named(spans, "claim-orders").len() >= 4)
        .await;
    assert_eq!(
        named(&spans, "process-batch").len(),
        2,
        "nothing pending, no batch span"
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn the_largest_batch_of_the_largest_stored_contexts_fits_a_collectors_4_mib(pool: PgPool) {
    // Rows the API did not bound (older ones, another writer's) may hold what
    // the SDK keeps: 32 members of 256-character keys and values, 16 KB.
    bulk_seed(&pool, 10_000).await;
    let largest = "UPDATE orders SET tracestate = (SELECT string_agg(repeat('k', 253) \
        || lpad(i::text, 3, '0') || '=' || repeat('v', 256), ',') FROM generate_series(1, 32) AS i)";
    sqlx::query(largest).execute(&pool).await.unwrap();
    let receiver = OtlpReceiver::start().await;
    // The largest BATCH_MAX_SIZE, and the SDK's export delay: the batch span
    // goes out with as many reconcile spans as an export holds.
    let more = [
        ("BATCH_MAX_SIZE", "10000"),
        ("OTEL_BSP_SCHEDULE_DELAY", "5000"),
    ];
    let env = with(otel_env(&pool, &receiver, "grpc"), &more);
    run_once(&env).await.assert_code(0);
    let spans = batch_spans(&receiver, 1, 10_000).await;
    let batch = named(&spans, "process-batch")[0];
    assert_eq!(check_process_batch(batch).len(), 10_000);
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_worker_killed_mid_run_loses_nothing_and_doubles_nothing(pool: PgPool) {
    bulk_seed(&pool, LONG_RUN).await;
    let env = quiet(
        &pool,
        &[("BATCH_MAX_SIZE", "50"), ("BATCH_CLAIM_TIMEOUT_SECS", "1")],
    );
    // The first worker's sessions are named, to see when they are gone.
    let mut named_env = env.clone();
    named_env[0].1.push_str("&application_name=killed-worker");
    let mut first = Process::spawn(binary(), &["--once"], &named_env);
    let processed = || async { count_status(&pool, "processed").await };
    wait_until(WAIT, "the first orders processed", || async {
        processed().await >= 100
    })
    .await;
    first.sigkill();
    assert_eq!(first.wait(WAIT).await.status.code(), None, "killed");
    // A statement sent just before the kill still commits: wait for its sessions to end.
    let sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'killed-worker'";
    let gone = || async {
        sqlx::query_scalar::<_, i64>(sessions)
            .fetch_one(&pool)
            .await
            .unwrap()
            == 0
    };
    wait_until(WAIT, "the killed worker's sessions to end", gone).await;
    let before: Vec<Row> = rows(&pool)
        .await
        .into_iter()
        .filter(|row| row.status == "processed")
        .collect();
    let held = count_status(&pool, "processing").await;
    assert!(before.len() < 20_000, "the run was over before the kill");
    // The killed worker's claims expire after a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let second = run_once(&env).await;
    let (done, rest) = (summary(&second), 20_000 - before.len());
    assert!(
        done.starts_with(&format!("processed={rest} failed=0 retrying=0 ")),
        "{second}"
    );
    assert!(
        done.ends_with(&format!(" requeued={held} released=0")),
        "{second}"
    );
    // What the killed worker finished was left alone; what it held was claimed twice.
    let after = rows(&pool).await;
    let cleared = |row: &Row| row.last_error.is_none() && row.claimed_by.is_none();
    assert!(
        after.iter().all(cleared),
        "processing clears the expired claim's error"
    );
    assert!(
        before
            .iter()
            .all(|row| row.attempts == 1 && after.contains(row))
    );
    assert_eq!(
        after.iter().filter(|row| row.status == "processed").count(),
        20_000
    );
    assert_eq!(after.iter().filter(|row| row.attempts == 2).count(), held);
}

/// SIGTERM to a running batch: it finishes the batch in hand within the 5 s
/// grace, exits 0, leaves nothing claimed and the rest pending.
async fn sigterm_mid_run(pool: &PgPool, args: &[&str], more: &[(&'static str, &str)]) -> Exited {
    bulk_seed(pool, LONG_RUN).await;
    let env = with(
        quiet(
            pool,
            &[("BATCH_MAX_SIZE", "50"), ("SHUTDOWN_GRACE_SECS", "5")],
        ),
        more,
    );
    let run = Process::spawn(binary(), args, &env);
    wait_until(WAIT, "the first orders processed", || async {
        count_status(pool, "processed").await > 0
    })
    .await;
    let signalled = Instant::now();
    run.sigterm();
    let run = run.wait(WAIT).await;
    run.assert_code(0);
    assert!(signalled.elapsed() < Duration::from_secs(8), "{run}");
    assert_eq!(
        count_status(pool, "processing").await,
        0,
        "nothing left claimed"
    );
    assert!(
        count_status(pool, "pending").await > 0,
        "the run was over before SIGTERM: {run}"
    );
    run
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn sigterm_during_once_finishes_the_batch_in_hand_and_a_later_run_the_rest(pool: PgPool) {
    let run = sigterm_mid_run(&pool, &["--once"], &[]).await;
    assert!(
        run.stdout
            .contains("shutting down: finishing the batch in hand"),
        "{run}"
    );
    let processed = count_status(&pool, "processed").await;
    let pending = count_status(&pool, "pending").await;
    assert!(
        summary(&run).starts_with(&format!("processed={processed} "))
            // The batch claimed ahead goes back unstarted.
            && summary(&run).ends_with(&format!(" released=50 interrupted pending={pending}")),
        "{run}"
    );
    let rest = run_once(&quiet(&pool, &[])).await;
    assert!(
        summary(&rest).starts_with(&format!("processed={} ", 20_000 - processed)),
        "{rest}"
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn sigterm_during_a_scheduled_run_finishes_the_batch_in_hand(pool: PgPool) {
    let run = sigterm_mid_run(&pool, &[], &[("BATCH_SCHEDULE", "* * * * * *")]).await;
    assert!(
        run.stdout.contains("run interrupted") && run.stdout.contains("orders-batch stopped"),
        "{run}"
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn on_the_schedule_it_runs_on_ticks_and_stops_at_once_between_runs(pool: PgPool) {
    seed_orders(&pool, 10).await;
    let receiver = OtlpReceiver::start().await;
    // Ticks 10 s apart, and SIGTERM once a run's end is logged: it lands
    // between runs, seconds before the next tick, which a stop must not await.
    let env = with(
        otel_env(&pool, &receiver, "grpc"),
        &[("BATCH_SCHEDULE", "*/10 * * * * *")],
    );
    let scheduled = Process::spawn(binary(), &[], &env);
    let after_runs = |runs: usize, orders: usize| {
        let (pool, receiver) = (&pool, &receiver);
        wait_until(WAIT, "a run's end", move || async move {
            let logs = receiver.logs();
            let ends = logs.iter().filter(|log| body(log) == Some("run finished"));
            ends.count() == runs && count_status(pool, "processed").await == orders
        })
    };
    after_runs(1, 10).await;
    seed_orders(&pool, 5).await;
    after_runs(2, 15).await;
    let signalled = Instant::now();
    scheduled.sigterm();
    let stopped = scheduled.wait(WAIT).await;
    stopped.assert_code(0);
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?} to stop: {stopped}");
    assert!(stopped.stdout.contains("orders-batch stopped") && !stopped.stdout.contains("--once:"));
    check_linked_as(&pool, &receiver, 15, None).await;
}

#[sqlx::test(migrations = false)]
async fn configuration_errors_exit_2_naming_the_variable_and_an_unreachable_database_1(
    pool: PgPool,
) {
    let database = "postgres://postgres@127.0.0.1:1/orders";
    let cases = [
        ("BATCH_SCHEDULE", "0 * * * *", "6 fields"),
        ("BATCH_MAX_SIZE", "10001", "BATCH_MAX_SIZE"),
        ("OTEL_LOGS_EXPORTER", "stdout", "OTEL_LOGS_EXPORTER"),
        ("DATABASE_URL", "", "DATABASE_URL"),
    ];
    for (variable, value, named) in cases {
        let mut env = vec![
            ("DATABASE_URL", database.to_owned()),
            (variable, value.to_owned()),
        ];
        env.retain(|(name, _)| !(value.is_empty() && *name == variable));
        let run = run_once(&env).await;
        run.assert_code(2);
        assert!(run.stderr.contains(named), "{run}");
    }

    for (env, message) in unreachable_databases(&pool) {
        run_once(&env)
            .await
            .assert_start_up_error("orders_batch", &message);
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn rust_log_quiets_the_logs_and_not_one_span_or_link(pool: PgPool) {
    seed_orders(&pool, 20).await;
    let receiver = OtlpReceiver::start().await;
    let run = run_once(&with(
        otel_env(&pool, &receiver, "grpc"),
        &[("RUST_LOG", "error")],
    ))
    .await;
    let done = "processed=20 failed=0 retrying=0 batches=1 failed_batches=0 unlinked=0 requeued=0 released=0";
    assert_eq!(
        run.stdout,
        format!("orders-batch --once: {done}\n"),
        "the summary and no INFO line"
    );
    let spans = batch_spans(&receiver, 1, 20).await;
    assert_eq!(
        batch_of_each_order(
            &named(&spans, "process-batch"),
            &stored_targets(&pool).await
        )
        .len(),
        20
    );
    assert!(
        receiver
            .logs()
            .iter()
            .all(|log| log.severity_text == "ERROR"),
        "no INFO record either"
    );
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn the_console_exporter_prints_each_link(pool: PgPool) {
    seed_orders(&pool, 3).await;
    let console = [
        ("OTEL_TRACES_EXPORTER", "console"),
        ("OTEL_METRICS_EXPORTER", "none"),
        ("OTEL_LOGS_EXPORTER", "none"),
    ];
    let run = run_once(&with(vec![("DATABASE_URL", database_url(&pool))], &console)).await;
    run.assert_code(0);
    let spans = run.stdout.split("Span #");
    let batch = spans
        .into_iter()
        .find(|span| span.contains("Name         : process-batch"))
        .unwrap_or_else(|| panic!("{run}"));
    for (trace_id, span_id) in stored_targets(&pool).await.into_values() {
        assert!(
            batch.contains(&format!("TraceId: {trace_id}\n\tSpanId : {span_id}")),
            "{batch}"
        );
    }
}

#[tokio::test]
async fn sigterm_during_start_up_exits_0() {
    // A "database" that accepts connections and never answers.
    let silent = Silent::start().await;
    let database = format!("postgres://postgres@{}/orders", silent.address);
    let env = [
        ("DATABASE_URL", database),
        ("DATABASE_ACQUIRE_TIMEOUT_SECS", "60".to_owned()),
        ("OTEL_SDK_DISABLED", "true".to_owned()),
    ];
    let mut connected = 0;
    for args in [&["--once"][..], &[]] {
        let process = Process::spawn(binary(), args, &env);
        // Connecting comes after the signal handlers are in place.
        let connecting = || async { silent.accepted() > connected };
        wait_until(WAIT, "the service connecting to its database", connecting).await;
        connected = silent.accepted();
        process.sigterm();
        let exited = process.wait(Duration::from_secs(5)).await;
        exited.assert_code(0);
        assert!(
            exited.stdout.contains("stopped during start-up"),
            "{exited}"
        );
    }
}

/// A deployment's `env` (every variable one it reads), pointed at this
/// test's database and `receiver`.
fn as_deployed(
    given_to: &str,
    mut env: BTreeMap<String, String>,
    pool: &PgPool,
    receiver: &OtlpReceiver,
) -> BTreeMap<String, String> {
    assert_reads_every_variable(
        given_to,
        &orders_batch::Config::command(),
        orders_telemetry::ENVIRONMENT_VARIABLES,
        &env,
    );
    point_at_test(&mut env, pool, receiver);
    env
}

/// Each of the `orders` is linked from a process-batch span exported as
/// `orders-batch` in `environment` (a deployment's, or none); those spans.
async fn check_linked_as(
    pool: &PgPool,
    receiver: &OtlpReceiver,
    orders: usize,
    environment: Option<&str>,
) -> Vec<ReceivedSpan> {
    let spans = receiver
        .wait_for_spans(WAIT, |spans| named(spans, "reconcile").len() >= orders)
        .await;
    let batches = named(&spans, "process-batch");
    assert_eq!(
        batch_of_each_order(&batches, &stored_targets(pool).await).len(),
        orders
    );
    for batch in &batches {
        let environment_name = string(&batch.resource, "deployment.environment.name");
        assert_eq!(
            (batch.service.as_str(), environment_name),
            ("orders-batch", environment)
        );
    }
    batches.into_iter().cloned().collect()
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn runs_with_the_environment_compose_gives_it_on_a_schedule_from_the_shell(pool: PgPool) {
    assert_eq!(
        compose_environment("orders-batch", &[])["BATCH_SCHEDULE"],
        "0 0 * * * *"
    );
    let env = compose_environment("orders-batch", &[("BATCH_SCHEDULE", "* * * * * *")]);
    let receiver = OtlpReceiver::start().await;
    let env = as_deployed("compose's orders-batch", env, &pool, &receiver);
    seed_orders(&pool, 12).await;
    let scheduled = Process::spawn(binary(), &[], &pairs(&env));
    wait_until(WAIT, "orders processed on a tick", || async {
        count_status(&pool, "processed").await == 12
    })
    .await;
    scheduled.sigterm();
    scheduled.wait(WAIT).await.assert_code(0);
    check_linked_as(&pool, &receiver, 12, Some("compose")).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn runs_as_its_cronjob_runs_it(pool: PgPool) {
    // The laptop overlay renders every Secret the CronJob reads.
    let pod = Pod {
        uid: "9e2a4c71-3b5d-4f08-8c6e-1d7f0a9b2e53",
        name: "orders-batch-29390460-q7m2z",
        node: "node-a",
    };
    let container = kubernetes_container(
        "kubernetes/laptop",
        "CronJob/orders-batch",
        "orders-batch",
        &pod,
    );
    assert!(
        container.command.is_empty(),
        "the image's entrypoint: {container:?}"
    );
    assert_eq!(container.args, ["--once"]);
    let receiver = OtlpReceiver::start().await;
    let env = as_deployed(
        "orders-batch in kubernetes/laptop",
        container.read_by_the_process(),
        &pool,
        &receiver,
    );
    seed_orders(&pool, 12).await;
    let args: Vec<&str> = container.args.iter().map(String::as_str).collect();
    let run = Process::spawn(binary(), &args, &pairs(&env))
        .wait(WAIT)
        .await;
    run.assert_code(0);
    let done = "processed=12 failed=0 retrying=0 batches=1 failed_batches=0 unlinked=0 requeued=0 released=0";
    assert_eq!(summary(&run), done);
    assert_eq!(count_status(&pool, "processed").await, 12);
    let batches = check_linked_as(&pool, &receiver, 12, Some("kubernetes")).await;
    let identity = [
        ("service.instance.id", pod.uid),
        ("k8s.pod.name", pod.name),
        ("k8s.namespace.name", "orders-span-links"),
        ("k8s.node.name", pod.node),
        ("k8s.cronjob.name", "orders-batch"),
        ("deployment.environment", "kubernetes"),
    ];
    for (key, value) in identity {
        assert_eq!(string(&batches[0].resource, key), Some(value), "{key}");
    }
}
