//! The `orders-api` binary (in CI the release build, as compose runs it):
//! configured by environment variables, exporting over real OTLP to a
//! receiver in the test, stopped with SIGTERM.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::CommandFactory as _;
use common::{TestApp, assert_error, order_spans, sample_order, stored_contexts};
use orders_test_support::{
    BlinkingProxy, OtlpReceiver, Pod, Process, Silent, WAIT, assert_reads_every_variable, body,
    compose_environment, database_url, free_port, hex, kubernetes_container, otel_env, pairs,
    pinned_tool, point_at_test, post_orders, string, unreachable_databases, wait_until,
};
use serde_json::{Value, json};
use sqlx::PgPool;

fn binary() -> PathBuf {
    orders_test_support::binary("ORDERS_API_BIN", env!("CARGO_BIN_EXE_orders-api"))
}

/// The binary with `env`, listening on a port of its own, answering.
async fn start(env: &[(&str, String)]) -> (Process, TestApp) {
    start_by(&[], env, "/healthz").await
}

/// [`start`], the binary run by `launcher` (such as `prlimit`), once `ready` answers.
async fn start_by(launcher: &[&str], env: &[(&str, String)], ready: &str) -> (Process, TestApp) {
    let binary = binary();
    let mut command = launcher.to_vec();
    command.push(binary.to_str().unwrap());
    let port = free_port();
    let app = TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };
    let mut env = env.to_vec();
    env.push(("LISTEN_ADDR", format!("127.0.0.1:{port}")));
    let process = Process::spawn(command[0], &command[1..], &env)
        .serving(&app.url(ready))
        .await;
    (process, app)
}

/// Orders enough for exports of 512 spans, the batch span processor's largest.
const ORDERS: usize = 150;

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn exports_spans_logs_and_metrics_over_grpc_and_over_http(pool: PgPool) {
    // Each run's receiver port speaks one protocol: what arrives came over it.
    for protocol in ["grpc", "http/protobuf"] {
        let delete = sqlx::query("DELETE FROM orders");
        delete.execute(&pool).await.unwrap();
        let receiver = OtlpReceiver::start().await;
        // The SDK's export delay: exports fill up to 512 spans, compressed.
        let mut env = otel_env(&pool, &receiver, protocol);
        env.push(("OTEL_BSP_SCHEDULE_DELAY", "5000".to_owned()));
        env.push(("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_owned()));
        // The line per order is DEBUG.
        env.push(("RUST_LOG", "info,orders_api=debug".to_owned()));
        let (api, app) = start(&env).await;
        // Each continuing a trace with a 16 KB tracestate: unbounded, every
        // span would carry it, and one export of 512 spans would be 8 MB.
        let member = |i| format!("{}{i:02}={}", "k".repeat(240), "x".repeat(256));
        let tracestate = (0..32).map(member);
        let tracestate = tracestate.collect::<Vec<_>>().join(",");
        for _ in 0..ORDERS {
            let request = app.client.post(app.url("/orders")).json(&sample_order());
            let request = request.header("tracestate", &tracestate).header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            );
            assert_eq!(request.send().await.unwrap().status().as_u16(), 201);
        }
        assert_error(
            app.post(&json!({"customer_id": "", "items": []})).await,
            422,
            "validation_failed",
        )
        .await;
        api.sigterm();
        api.wait(WAIT).await.assert_code(0);

        // Flushed at exit: everything is there.
        let spans = receiver.spans();
        assert_eq!(order_spans(&pool, &spans).await.len(), ORDERS);
        let own = [
            "POST /orders",
            "receive-order",
            "validate",
            "persist-order",
            "GET /healthz",
        ];
        assert!(
            spans
                .iter()
                .all(|span| span.service == "orders-api" && own.contains(&span.name())),
            "{protocol}: no span of the exporter's own stack"
        );
        let logs = receiver.logs();
        let received = logs
            .iter()
            .find(|log| body(log) == Some("order received"))
            .unwrap();
        let receive = spans
            .iter()
            .find(|span| Some(span.span_id()) == hex(&received.span_id))
            .unwrap();
        assert_eq!(
            (receive.name(), hex(&received.trace_id)),
            ("receive-order", Some(receive.trace_id()))
        );
        let metrics = receiver.metric_names();
        assert!(
            ["orders.received", "http.server.request.duration"]
                .iter()
                .all(|name| metrics.iter().any(|metric| metric == name)),
            "{metrics:?}"
        );
    }
}

/// Under the common soft limit of 1,024 open files, 1,100 connections that
/// send nothing do not lock a new client out: the oldest idle ones make room.
#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn idle_connections_past_the_open_file_limit_do_not_lock_out_a_client(pool: PgPool) {
    let env = [
        ("DATABASE_URL", database_url(&pool)),
        ("OTEL_SDK_DISABLED", "true".to_owned()),
    ];
    let (_api, app) = start_by(&["prlimit", "--nofile=1024:1024"], &env, "/healthz").await;
    let address = app.address.trim_start_matches("http://");
    let mut held = Vec::new();
    for _ in 0..1100 {
        held.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    let answer = tokio::time::timeout(Duration::from_secs(2), app.post(&sample_order())).await;
    assert_eq!(answer.expect("an answer within 2 s").status().as_u16(), 201);
}

/// With the SDK disabled, too: it exports nothing and still gives trace ids.
#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn sigterm_lets_an_in_flight_request_finish_and_refuses_new_ones(pool: PgPool) {
    let receiver = OtlpReceiver::start().await;
    let mut env = otel_env(&pool, &receiver, "grpc");
    env.push(("OTEL_SDK_DISABLED", "true".to_owned()));
    let (api, app) = start(&env).await;
    // A request whose body is half sent when SIGTERM arrives.
    let body = sample_order().to_string().into_bytes();
    let (half, rest) = body.split_at(body.len() / 2);
    let (sender, chunks) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    sender.send(Ok(half.to_vec())).await.unwrap();
    let stream = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(chunks));
    let in_flight = tokio::spawn(
        app.client
            .post(app.url("/orders"))
            .header("content-type", "application/json")
            .body(stream)
            .send(),
    );
    // Headers and half a body take milliseconds; a second is plenty.
    tokio::time::sleep(Duration::from_secs(1)).await;
    api.sigterm();
    let refused = || async { reqwest::get(app.url("/healthz")).await.is_err() };
    wait_until(WAIT, "new connections refused during shutdown", refused).await;
    sender.send(Ok(rest.to_vec())).await.unwrap();
    drop(sender);

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(
        created["trace_id"].as_str().map(str::len),
        Some(32),
        "{created}"
    );
    api.wait(WAIT).await.assert_code(0);
    let exported = (
        receiver.spans().len(),
        receiver.logs().len(),
        receiver.metric_names().len(),
    );
    assert_eq!(exported, (0, 0, 0));
}

/// No collector: each signal warns once, naming the endpoint and the way
/// out, and not the SDK's own reports. A collector that never answers: the
/// exit waits for it no longer than `TELEMETRY_SHUTDOWN_TIMEOUT_MS` (2 s
/// here, 5 s by default). Either way, SIGTERM exits 0.
#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn without_a_collector_or_with_one_that_never_answers_it_stops_cleanly(pool: PgPool) {
    let silent = Silent::start().await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    for endpoint in [closed.clone(), format!("http://{}", silent.address)] {
        let env = [
            ("DATABASE_URL", database_url(&pool)),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_owned()),
            ("TELEMETRY_SHUTDOWN_TIMEOUT_MS", "2000".to_owned()),
        ];
        let (api, app) = start(&env).await;
        assert_eq!(app.post(&sample_order()).await.status().as_u16(), 201);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let signalled = Instant::now();
        api.sigterm();
        let exited = api.wait(WAIT).await;
        exited.assert_code(0);
        assert!(signalled.elapsed() < Duration::from_secs(6), "{exited}");
        assert!(!exited.stdout.contains("opentelemetry"), "{exited}");
        if endpoint != closed {
            assert!(
                exited.stdout.contains("telemetry not flushed at exit"),
                "{exited}"
            );
            continue;
        }
        for signal in ["traces", "metrics", "logs"] {
            let warning = format!("cannot export {signal} to {closed}/v1/{signal}");
            let lines: Vec<&str> = exited
                .stdout
                .lines()
                .filter(|line| line.contains(&warning))
                .collect();
            assert_eq!(lines.len(), 1, "{exited}");
            assert!(lines[0].contains("=console") && lines[0].contains("OTEL_SDK_DISABLED=true"));
        }
    }
}

/// Orders posted at a steady 300 a second, for 34 s.
const STEADY_ORDERS: usize = 10_200;

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_collector_gone_5_s_under_300_orders_a_second_costs_no_span(pool: PgPool) {
    // Through a proxy that goes away 10 s in, for 5 s: requests never wait,
    // and the export queue holds what they make meanwhile (config.rs's
    // rule), while the failed export is tried again.
    let receiver = OtlpReceiver::start().await;
    let proxy = BlinkingProxy::start(receiver.grpc_address()).await;
    let through_proxy = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", proxy.endpoint())];
    let (api, app) = start(&[otel_env(&pool, &receiver, "grpc"), through_proxy].concat()).await;
    let orders_load = Path::new(env!("CARGO_BIN_EXE_orders-api")).with_file_name("orders-load");
    let count = STEADY_ORDERS.to_string();
    let load = Process::spawn(
        orders_test_support::binary("ORDERS_LOAD_BIN", orders_load.to_str().unwrap()),
        &["--rate", "300", "--count", &count, "--duration-secs", "60"],
        &[("ORDERS_API_URL", app.address.clone())],
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    proxy.away_for(Duration::from_secs(5));
    let load = load.wait(Duration::from_mins(1)).await;
    load.assert_code(0);
    assert!(load.stdout.contains(&format!("{count} created")), "{load}");
    api.sigterm();
    let exited = api.wait(WAIT).await;
    exited.assert_code(0);
    assert!(!exited.stdout.contains("not exported"), "{exited}");
    exited.assert_traces_failed_then_got_through(&proxy.endpoint());
    let spans = receiver.distinct_spans();
    let receive_orders: HashSet<String> = spans
        .iter()
        .filter(|span| span.name() == "receive-order")
        .map(|span| format!("00-{}-{}-01", span.trace_id(), span.span_id()))
        .collect();
    let stored = stored_contexts(&pool).await;
    assert_eq!(stored.len(), STEADY_ORDERS);
    let missing = stored
        .iter()
        .filter(|(traceparent, _)| !receive_orders.contains(traceparent));
    assert_eq!(
        missing.count(),
        0,
        "of {STEADY_ORDERS} stored orders, not exported"
    );
    for name in ["POST /orders", "validate", "persist-order"] {
        let exported = spans.iter().filter(|span| span.name() == name).count();
        assert_eq!(exported, STEADY_ORDERS, "{name}");
    }
}

#[sqlx::test(migrations = false)]
async fn configuration_errors_exit_2_and_an_unreachable_database_1(pool: PgPool) {
    let unreachable = unreachable_databases(&pool);
    let refused = unreachable[0].0[0].clone();
    let cases = [
        (vec![], "DATABASE_URL"),
        (
            vec![
                refused.clone(),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_owned()),
            ],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            vec![refused, ("OTEL_TRACES_EXPORTER", "jaeger".to_owned())],
            "OTEL_TRACES_EXPORTER",
        ),
    ];
    for (env, named) in cases {
        let exited = Process::spawn(binary(), &[], &env).wait(WAIT).await;
        exited.assert_code(2);
        assert!(exited.stderr.contains(named), "{exited}");
    }
    for (env, message) in unreachable {
        let exited = Process::spawn(binary(), &[], &env).wait(WAIT).await;
        exited.assert_start_up_error("orders_api", &message);
    }
}

/// The binary with a deployment's `env` (every variable one it reads),
/// pointed at this test's database and a receiver, on a port of its own where
/// the deployment has it listen at `listens_at`; answering at `ready_path`.
async fn start_as_deployed(
    given_to: &str,
    mut env: BTreeMap<String, String>,
    listens_at: &str,
    ready_path: &str,
    pool: &PgPool,
) -> (Process, TestApp, OtlpReceiver) {
    assert_reads_every_variable(
        given_to,
        &orders_api::Config::command(),
        orders_telemetry::ENVIRONMENT_VARIABLES,
        &env,
    );
    let receiver = OtlpReceiver::start().await;
    point_at_test(&mut env, pool, &receiver);
    assert_eq!(env.remove("LISTEN_ADDR").as_deref(), Some(listens_at));
    let (api, app) = start_by(&[], &pairs(&env), ready_path).await;
    (api, app, receiver)
}

/// SIGTERM: exit 0, every order's spans exported as the deployment's
/// `orders-api`, with the resource `attributes`.
async fn stops_having_exported_as(
    api: Process,
    pool: &PgPool,
    receiver: &OtlpReceiver,
    attributes: &[(&str, &str)],
) {
    api.sigterm();
    api.wait(WAIT).await.assert_code(0);
    let spans = receiver.spans();
    for receive in order_spans(pool, &spans).await {
        assert_eq!(receive.service, "orders-api");
        for &(key, value) in attributes {
            assert_eq!(string(&receive.resource, key), Some(value), "{key}");
        }
    }
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn runs_with_the_environment_compose_gives_it_and_serves_the_demo_script(pool: PgPool) {
    let env = compose_environment("orders-api", &[]);
    let (api, app, receiver) = start_as_deployed(
        "compose's orders-api",
        env,
        "0.0.0.0:3000",
        "/readyz",
        &pool,
    )
    .await;
    let orders = post_orders(&app.address, 5).await;
    assert!(orders.iter().all(|order| order["status"] == "pending"));
    // Each replica's own: the container's id, its host name under Docker.
    let host = gethostname::gethostname().into_string().unwrap();
    let resource = [
        ("deployment.environment.name", "compose"),
        ("deployment.environment", "compose"),
        ("service.instance.id", host.as_str()),
    ];
    stops_having_exported_as(api, &pool, &receiver, &resource).await;
}

#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn runs_with_the_environment_kubernetes_gives_it_and_answers_its_probes(pool: PgPool) {
    // The laptop overlay renders every Secret the Deployment reads.
    let pod = Pod {
        uid: "0b6f1c52-7d1e-4c0a-9a53-3f4b8e2d9c17",
        name: "orders-api-7c9d8b6f5-x2k4q",
        node: "node-a",
    };
    let container = kubernetes_container(
        "kubernetes/laptop",
        "Deployment/orders-api",
        "orders-api",
        &pod,
    );
    // The image's entrypoint, with no arguments, as compose runs it.
    assert!(
        container.command.is_empty() && container.args.is_empty(),
        "{container:?}"
    );
    let environment = container.read_by_the_process();
    let (ready, alive) = (container.readiness.unwrap(), container.liveness.unwrap());
    assert_eq!(ready.port, alive.port);
    // Where the probes knock, on every interface: the kubelet's is the pod's IP.
    let listens_at = format!("0.0.0.0:{}", ready.port);
    let (api, app, receiver) = start_as_deployed(
        "orders-api in kubernetes/laptop",
        environment,
        &listens_at,
        &ready.path,
        &pool,
    )
    .await;
    for probe in [&ready, &alive] {
        assert_eq!(app.get(&probe.path).await.status(), 200, "{probe:?}");
    }
    assert_eq!(app.post(&sample_order()).await.status(), 201);
    let resource = [
        ("deployment.environment.name", "kubernetes"),
        ("deployment.environment", "kubernetes"),
        ("service.instance.id", pod.uid),
        ("k8s.pod.name", pod.name),
        ("k8s.namespace.name", "orders-span-links"),
        ("k8s.node.name", pod.node),
        ("k8s.deployment.name", "orders-api"),
    ];
    stops_having_exported_as(api, &pool, &receiver, &resource).await;
}

/// A release one migration behind its database (the next release migrated
/// first, mid-rollout) starts and serves: migrations are additive.
#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn starts_and_serves_on_a_database_one_additive_migration_ahead(pool: PgPool) {
    let ahead = scratch("migrations-ahead");
    let migrations = orders_test_support::repository_root().join("migrations");
    for migration in std::fs::read_dir(migrations).unwrap() {
        let migration = migration.unwrap().path();
        std::fs::copy(&migration, ahead.join(migration.file_name().unwrap())).unwrap();
    }
    let next = "ALTER TABLE orders ADD COLUMN gift_note text;";
    std::fs::write(ahead.join("29991231000000_the_next_release.sql"), next).unwrap();
    let migrator = sqlx::migrate::Migrator::new(ahead.as_path()).await.unwrap();
    migrator.run(&pool).await.unwrap();
    let (_api, app) = start(&quiet(&pool)).await;
    assert_eq!(app.post(&sample_order()).await.status(), 201);
}

/// The migration Job's way, with the roles docs/kubernetes.md creates: a new
/// release's pod with `DATABASE_MIGRATIONS=require` waits while the database
/// lacks its migrations, `--migrate-only` as the migrator's role applies them,
/// then the pod serves, as a role that changes no table.
#[sqlx::test(migrations = false)]
async fn a_migration_job_migrates_while_the_services_role_waits(pool: PgPool) {
    // Roles are the server's, not the test database's: named for this run.
    let run: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (migrator, service) = (
        format!("orders_migrator_{run}"),
        format!("orders_service_{run}"),
    );
    let docs = orders_test_support::repository_root().join("docs/kubernetes.md");
    let docs = std::fs::read_to_string(docs).unwrap();
    let mut blocks = docs
        .split("```sql\n")
        .filter_map(|block| block.split("```").next());
    let roles = blocks
        .find(|block| block.contains("CREATE ROLE orders_migrator"))
        .unwrap();
    let roles = roles
        .replace("orders_migrator", &migrator)
        .replace("orders_service", &service);
    sqlx::raw_sql(&roles).execute(&pool).await.unwrap();
    let as_role = |role: &str| {
        PgPool::connect_lazy_with(pool.connect_options().as_ref().clone().username(role))
    };
    let (as_migrator, as_service) = (as_role(&migrator), as_role(&service));
    let job = tokio::spawn({
        let (pool, service) = (pool.clone(), service.clone());
        async move {
            // Once the pod has found its migrations missing.
            let asked = "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE usename = $1 \
                AND state = 'idle' AND query LIKE '%_sqlx_migrations%')";
            let asked = || sqlx::query_scalar(asked).bind(&service).fetch_one(&pool);
            wait_until(WAIT, "the pod asking for its migrations", || async {
                asked().await.unwrap()
            })
            .await;
            let job = Process::spawn(binary(), &["--migrate-only"], &quiet(&as_migrator));
            job.wait(WAIT).await
        }
    });
    let [url, disabled] = quiet(&as_service);
    let (api, app) = start(&[url, disabled, ("DATABASE_MIGRATIONS", "require".into())]).await;
    job.await.unwrap().assert_code(0);
    assert_eq!(app.post(&sample_order()).await.status(), 201);
    let create = sqlx::query("CREATE TABLE intruder (id int)")
        .execute(&as_service)
        .await;
    assert!(
        create
            .unwrap_err()
            .to_string()
            .contains("permission denied")
    );
    as_service.close().await;
    api.sigterm();
    let exited = api.wait(WAIT).await;
    let waited = "waiting for the database to hold this release's migrations";
    assert!(exited.stdout.contains(waited), "{exited}");
    let drop = format!(
        "DROP OWNED BY {migrator}; DROP OWNED BY {service}; DROP ROLE {migrator}, {service};"
    );
    sqlx::raw_sql(&drop).execute(&pool).await.unwrap();
}

/// The API with a database and no telemetry.
fn quiet(pool: &PgPool) -> [(&'static str, String); 2] {
    [
        ("DATABASE_URL", database_url(pool)),
        ("OTEL_SDK_DISABLED", "true".to_owned()),
    ]
}

/// An empty directory of its own under target/, for a tool that writes where
/// it runs.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Schemathesis, a fuzzer no one here wrote, against the document the binary
/// serves: every check it has on every operation (positive-data acceptance as
/// `tests/schemathesis_hooks.py` narrows it), its stateful phase following each
/// created order by its `Location` and its link, a fixed seed, over 1,000 cases.
#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn schemathesis_finds_nothing_against_the_served_openapi_document(pool: PgPool) {
    let (_api, app) = start(&quiet(&pool)).await;
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    let document = app.url("/openapi.json");
    let options = "--checks all --exclude-checks positive_data_acceptance --seed 42 --max-examples 150 \
        --phases examples,coverage,fuzzing,stateful --workers 1 --no-color --generation-database none";
    let args: Vec<&str> = ["run", &document]
        .into_iter()
        .chain(options.split_whitespace())
        .collect();
    let env = [
        ("SCHEMATHESIS_HOOKS", "schemathesis_hooks".to_owned()),
        ("PYTHONPATH", tests.to_owned()),
    ];
    let schemathesis = Process::spawn_in(&scratch("schemathesis"), pinned_tool("st"), &args, &env);
    let run = schemathesis.wait(Duration::from_mins(10)).await;
    run.assert_code(0);
    let generated = run
        .stdout
        .lines()
        .find_map(|line| line.trim().split_once(" generated, "));
    let generated: usize = generated.and_then(|(count, _)| count.parse().ok()).unwrap();
    assert!(generated >= 1000, "{run}");
}

/// A client openapi-python-client generates from docs/openapi.json posts an
/// order (with a quoted `Idempotency-Key`) and reads back what it sent.
#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn a_client_generated_from_the_openapi_document_posts_an_order_and_reads_it_back(
    pool: PgPool,
) {
    let dir = scratch("generated-client");
    // No formatter after generating: the client is imported, not read.
    std::fs::write(dir.join("config.yaml"), "post_hooks: []\n").unwrap();
    let document = orders_test_support::repository_root().join("docs/openapi.json");
    let options = "--meta none --output-path orders_client --config config.yaml";
    let path = ["generate", "--path", document.to_str().unwrap()];
    let args: Vec<&str> = path.into_iter().chain(options.split_whitespace()).collect();
    let generator = Process::spawn_in(&dir, pinned_tool("openapi-python-client"), &args, &[]);
    generator.wait(WAIT).await.assert_code(0);
    let (_api, app) = start(&quiet(&pool)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/generated_client.py");
    let env = [("PYTHONPATH", dir.display().to_string())];
    let client = Process::spawn_in(&dir, pinned_tool("python"), &[script, &app.address], &env);
    let run = client.wait(WAIT).await;
    run.assert_code(0);
    let order: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let stored = "SELECT customer_id FROM orders WHERE id = $1::uuid AND idempotency_key = 'key-1'";
    let stored: String = sqlx::query_scalar(stored)
        .bind(order["id"].as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, "c-42");
}
