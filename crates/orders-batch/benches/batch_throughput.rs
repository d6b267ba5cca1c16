//! How fast a run claims, reconciles, traces and marks orders, on a real
//! PostgreSQL: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p orders-batch`. Prints orders per second for a few batch sizes.
//!
//! Each case gets a scratch database (created and dropped here), filled with
//! `BENCH_ORDERS` pending orders (default 100 000) by one `UNNEST` insert per
//! 10 000 rows. The run traces through tracing-opentelemetry into an SDK
//! tracer provider without an exporter, so span and link building is counted
//! and nothing leaves the process.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    reason = "a benchmark that fails loudly and prints its figures"
)]

use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use orders_batch::{BatchMetrics, BatchSettings, Worker};
use span_links::LinkSelection;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

const BATCH_SIZES: &[u32] = &[500, 1000, 5000];

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL names a PostgreSQL server");
    let orders: usize = std::env::var("BENCH_ORDERS").ok().map_or(100_000, |count| {
        count.parse().expect("BENCH_ORDERS is a number")
    });
    let tracer_provider = SdkTracerProvider::builder()
        .with_max_links_per_span(*BATCH_SIZES.iter().max().unwrap())
        .build();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("bench"))),
    );

    println!("orders-batch: one run over {orders} pending orders");
    println!(
        "{:>10} {:>8} {:>10} {:>12}",
        "batch size", "batches", "seconds", "orders/s"
    );
    for &batch_size in BATCH_SIZES {
        let (pool, database, admin) = scratch_database(&url).await;
        seed(&pool, orders).await;
        let worker = Worker::new(
            pool.clone(),
            BatchSettings {
                max_size: batch_size,
                max_attempts: 5,
                claim_timeout: Duration::from_mins(5),
                shutdown_grace: Duration::from_secs(20),
                link_selection: LinkSelection::All,
            },
            BatchMetrics::new(&opentelemetry::global::meter("bench")),
        );
        let started = Instant::now();
        let summary = worker.run(&CancellationToken::new()).await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(summary.processed, orders, "{summary}");
        println!(
            "{batch_size:>10} {:>8} {:>10.2} {:>12.0}",
            summary.batches,
            elapsed.as_secs_f64(),
            orders as f64 / elapsed.as_secs_f64()
        );
        pool.close().await;
        drop_database(admin, &database).await;
    }
}

async fn scratch_database(url: &str) -> (PgPool, String, PgConnectOptions) {
    let admin: PgConnectOptions = url.parse().unwrap();
    let database = format!("orders_bench_{}", Uuid::new_v4().simple());
    let mut connection = PgConnection::connect_with(&admin).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    let pool = PgPool::connect_with(admin.clone().database(&database))
        .await
        .unwrap();
    orders::db::migrate(&pool).await.unwrap();
    (pool, database, admin)
}

async fn drop_database(admin: PgConnectOptions, database: &str) {
    let mut connection = PgConnection::connect_with(&admin).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&mut connection)
        .await
        .unwrap();
}

/// Pending orders with distinct creation times and valid trace contexts.
async fn seed(pool: &PgPool, count: usize) {
    for start in (0..count).step_by(10_000) {
        let ids: Vec<Uuid> = (start..count.min(start + 10_000))
            .map(|_| Uuid::now_v7())
            .collect();
        let traceparents: Vec<String> = ids
            .iter()
            .map(|id| format!("00-{}-{:016x}-01", id.simple(), id.as_u64_pair().1 | 1))
            .collect();
        sqlx::query(
            "INSERT INTO orders (id, customer_id, items, total_cents, created_at, traceparent) \
             SELECT id, 'bench', '[{\"sku\":\"A\",\"quantity\":2,\"unit_price_cents\":1250}]', 2500, \
                    now() - interval '1 hour' + n * interval '1 microsecond', traceparent \
             FROM UNNEST($1::uuid[], $2::text[]) WITH ORDINALITY AS t(id, traceparent, n)",
        )
        .bind(&ids)
        .bind(&traceparents)
        .execute(pool)
        .await
        .unwrap();
    }
}
