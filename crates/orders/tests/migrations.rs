//! Both services apply the migrations at start-up, possibly at the same moment.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::time::Duration;

use orders::db::{self, PoolSettings};
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn concurrent_start_ups_apply_migrations_once(pool: PgPool) {
    let options = (*pool.connect_options()).clone();
    let mut start_ups = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = db::connect_lazy_with(
            options.clone(),
            PoolSettings {
                max_connections: 2,
                acquire_timeout: Duration::from_secs(5),
            },
        );
        start_ups.spawn(async move { db::migrate(&pool).await });
    }

    while let Some(outcome) = start_ups.join_next().await {
        outcome.unwrap().unwrap();
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, i64::try_from(db::MIGRATOR.iter().count()).unwrap());
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 0);
}
