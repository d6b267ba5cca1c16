//! A guard against the Nagle stall: a statement over 16 KiB goes out over TLS
//! as two records, and without `TCP_NODELAY` the second waits for the
//! server's delayed ACK, tens of milliseconds (sqlx 0.9.0 stopped setting the option,
//! sqlx#4335). Not a speed target: a stall is twenty times the bound below.
//! Without TLS there is no stall to see, so the test says it is skipped.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::io::Write as _;
use std::time::{Duration, Instant};

use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn a_statement_over_20_kib_is_not_held_back_by_nagle(pool: PgPool) {
    let mut connection = pool.acquire().await.unwrap();
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut *connection)
        .await
        .unwrap();
    if !tls {
        // Straight to stderr, past the harness's capture: seen without --nocapture.
        let skipped = "a_statement_over_20_kib_is_not_held_back_by_nagle SKIPPED, proves nothing: \
            the server does not offer TLS (Nagle + delayed ACK only show with TLS framing)";
        writeln!(std::io::stderr(), "{skipped}").unwrap();
        return;
    }
    let text = "x".repeat(20 * 1024);
    let mut round_trips = Vec::new();
    for _ in 0..9 {
        let started = Instant::now();
        let length: i32 = sqlx::query_scalar("SELECT length($1)")
            .bind(&text)
            .fetch_one(&mut *connection)
            .await
            .unwrap();
        round_trips.push(started.elapsed());
        assert_eq!(length, 20 * 1024);
    }
    round_trips.sort_unstable();
    let median = round_trips[round_trips.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "median {median:?} of {round_trips:?}: the stall is back"
    );
}
