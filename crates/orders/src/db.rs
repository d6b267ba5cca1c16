//! The PostgreSQL pool and the schema migrations both services apply at start-up.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::store::StoreError;

/// The migrations in the repository's `migrations/` folder, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// A `DATABASE_URL` sqlx can connect with, checked where the configuration
/// is read: a malformed one is a configuration error.
pub fn database_url(value: &str) -> Result<String, sqlx::Error> {
    value.parse::<PgConnectOptions>().map(|_| value.to_owned())
}

/// How the pool is sized and how long a caller waits for a connection.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a query waits for a free connection before it fails; this bounds
    /// how long a request hangs when the database is down.
    pub acquire_timeout: Duration,
}

/// Connects to PostgreSQL and checks the connection at once, so a wrong URL or an
/// unreachable server is reported at start-up rather than on the first request.
async fn connect(database_url: &str, settings: PoolSettings) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = database_url
        .parse()
        .map_err(|source| StoreError::InvalidUrl { source })?;
    let target = describe(&options);
    pool_options(settings)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Connect { target, source })
}

/// What each service does at start-up: [`connect`], then [`migrate`].
pub async fn connect_and_migrate(
    database_url: &str,
    settings: PoolSettings,
) -> Result<PgPool, StoreError> {
    let pool = connect(database_url, settings).await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// A pool that opens its connections on first use: lets a service start (and
/// report not-ready) while the database is still down.
pub fn connect_lazy(database_url: &str, settings: PoolSettings) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = database_url
        .parse()
        .map_err(|source| StoreError::InvalidUrl { source })?;
    Ok(connect_lazy_with(options, settings))
}

/// [`connect_lazy`] with parsed options.
#[must_use]
pub fn connect_lazy_with(options: PgConnectOptions, settings: PoolSettings) -> PgPool {
    pool_options(settings).connect_lazy_with(options)
}

fn pool_options(settings: PoolSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
}

/// Applies pending migrations. Safe when several processes start at once: the
/// migrator serialises them with a PostgreSQL advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|source| StoreError::Migrate { source })
}

/// `host:port/database` of a connection, for messages; never the password.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username())
    )
}
