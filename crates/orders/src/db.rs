//! The PostgreSQL pool and the schema migrations both services apply at start-up.

use std::io::ErrorKind;
use std::time::Duration;

use sqlx::migrate::{Migrate as _, MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Acquire, Connection as _, PgConnection, PgPool, Postgres};

use crate::store::StoreError;

/// The migrations in the repository's `migrations/` folder, embedded at
/// compile time. A database with migrations this release does not know is
/// served all the same (`ignore_missing`): during a rolling update the new
/// release migrates first and the old one starts after it (a scale-up, a
/// restart). Safe because migrations here are additive only (a table, a
/// nullable column, an index), so the old release's queries still hold; a
/// known migration whose file changed still fails (its checksum).
pub static MIGRATOR: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../../migrations")
};

/// A `DATABASE_URL` sqlx can connect with, checked where the configuration
/// is read: a malformed one is a configuration error.
pub fn database_url(value: &str) -> Result<String, sqlx::Error> {
    value.parse::<PgConnectOptions>().map(|_| value.to_owned())
}

/// The database arguments both services take, flattened into each one's
/// configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: String,

    /// What the service does with the migrations at start-up.
    #[arg(long, env = "DATABASE_MIGRATIONS", value_enum, default_value_t = Migrations::Apply)]
    pub database_migrations: Migrations,

    /// Seconds a query waits for a database connection before it fails.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub database_acquire_timeout_secs: u64,
}

impl DatabaseArgs {
    /// A pool of at most `max_connections`, waiting as these arguments say.
    #[must_use]
    pub fn pool_settings(&self, max_connections: u32) -> PoolSettings {
        PoolSettings {
            max_connections,
            acquire_timeout: Duration::from_secs(self.database_acquire_timeout_secs),
        }
    }
}

/// What a service does with the migrations at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Migrations {
    /// Apply those the database lacks: its role may change the schema.
    Apply,
    /// Apply none, and wait until the database holds every one of this
    /// release (a migration Job applies them, with a role of its own).
    Require,
}

/// How the pool is sized and how long a caller waits for a connection.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a query waits for a free connection before it fails; this bounds
    /// how long a request hangs when the database is down.
    pub acquire_timeout: Duration,
}

/// What each service does at start-up: opens one connection, applies the
/// migrations over it (or waits for them, as `migrations` says), then returns
/// a pool that opens its own connections as needed. A wrong URL or an
/// unreachable server is reported at start-up rather than on the first request.
pub async fn connect_and_migrate(
    database_url: &str,
    settings: PoolSettings,
    migrations: Migrations,
) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = database_url
        .parse()
        .map_err(|source| StoreError::InvalidUrl { source })?;
    let mut connection = connect_once(&options, settings.acquire_timeout).await?;
    match migrations {
        Migrations::Apply => migrate(&mut connection).await?,
        Migrations::Require => await_migrations(&mut connection).await?,
    }
    // Only a courtesy to the server's log: the migrations are applied.
    connection.close().await.ok();
    Ok(connect_lazy_with(options, settings))
}

/// One connection, not the pool's: a pool reports every failure to connect
/// as its own acquire timeout, hiding the cause (connection refused, no such
/// database) behind a wait.
async fn connect_once(
    options: &PgConnectOptions,
    timeout: Duration,
) -> Result<PgConnection, ConnectError> {
    let server = format!("{}:{}", options.get_host(), options.get_port());
    match tokio::time::timeout(timeout, PgConnection::connect_with(options)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) if is_missing_database(&error) => Err(ConnectError::NoDatabase {
            server,
            database: options
                .get_database()
                .unwrap_or(options.get_username())
                .to_owned(),
        }),
        Ok(Err(error)) => Err(ConnectError::Failed { server, error }),
        Err(_) => Err(ConnectError::TimedOut { server, timeout }),
    }
}

/// Why start-up could not connect, in one line that leads with the cause.
/// sqlx's own error is kept but not given as a source: its message wraps the
/// cause in layers that each repeat it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "database \"{database}\" does not exist on {server} (DATABASE_URL): create it with CREATE DATABASE {};",
        quote_identifier(database)
    )]
    NoDatabase { server: String, database: String },
    #[error("cannot connect to PostgreSQL at {server} (DATABASE_URL): {}", cause(.error))]
    Failed { server: String, error: sqlx::Error },
    #[error(
        "cannot connect to PostgreSQL at {server} (DATABASE_URL): no answer within {timeout:?} (DATABASE_ACQUIRE_TIMEOUT_SECS)"
    )]
    TimedOut { server: String, timeout: Duration },
}

fn is_missing_database(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000"))
}

/// Quoted, so that the command also works for names that need it (`order`,
/// `Orders`, `orders-eu`).
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The innermost cause of `error`, as an operator reads it.
pub(crate) fn cause(error: &sqlx::Error) -> String {
    match error {
        // The server's message alone: its `Display` adds " at line N", a line
        // of PostgreSQL's own source.
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => match io.kind() {
            // "connection refused" rather than "Connection refused (os error 111)".
            kind @ (ErrorKind::ConnectionRefused
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::TimedOut) => kind.to_string(),
            _ => io.to_string(),
        },
        other => other.to_string(),
    }
}

/// Why the migrations failed, with the cause and not sqlx's layers around it.
pub(crate) fn migrate_cause(error: &MigrateError) -> String {
    match error {
        MigrateError::ExecuteMigration(error, version) => {
            format!("{} (migration {version})", cause(error))
        }
        MigrateError::Execute(error) => cause(error),
        other => other.to_string(),
    }
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

/// Returns once the database holds every migration of this release, which
/// another process applies; says once what it waits for.
async fn await_migrations(connection: &mut PgConnection) -> Result<(), StoreError> {
    let mut said = false;
    loop {
        let missing = missing_migrations(connection).await?;
        if missing.is_empty() {
            return Ok(());
        }
        if !said {
            tracing::warn!(
                ?missing,
                "waiting for the database to hold this release's migrations (DATABASE_MIGRATIONS=require): the migration Job applies them"
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The versions of this release's migrations the database has not applied;
/// an error where it applied one of them from a different file (its checksum),
/// as applying would.
async fn missing_migrations(connection: &mut PgConnection) -> Result<Vec<i64>, StoreError> {
    let migrate = |error| StoreError::Migrate { error };
    // sqlx creates its table with the first migration.
    let table = "SELECT to_regclass('_sqlx_migrations') IS NOT NULL";
    let exists: bool = sqlx::query_scalar(table)
        .fetch_one(&mut *connection)
        .await
        .map_err(|error| migrate(MigrateError::Execute(error)))?;
    let applied = if exists {
        connection
            .list_applied_migrations()
            .await
            .map_err(migrate)?
    } else {
        Vec::new()
    };
    let mut missing = Vec::new();
    let ours = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration());
    for migration in ours {
        let done = applied
            .iter()
            .find(|done| done.version == migration.version);
        match done {
            None => missing.push(migration.version),
            Some(done) if done.checksum != migration.checksum => {
                return Err(migrate(MigrateError::VersionMismatch(migration.version)));
            }
            Some(_) => {}
        }
    }
    Ok(missing)
}

/// Applies pending migrations. Safe when several processes start at once: the
/// migrator serialises them with a PostgreSQL advisory lock.
pub async fn migrate<'a, A>(db: A) -> Result<(), StoreError>
where
    A: Acquire<'a, Database = Postgres>,
{
    MIGRATOR
        .run(db)
        .await
        .map_err(|error| StoreError::Migrate { error })
}
