//! The queries on the `orders` table.
//!
//! Each public function is a database CLIENT span carrying the OpenTelemetry
//! database semantic-convention attributes: sqlx emits no spans of its own.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres};
use tracing::Instrument;
use uuid::Uuid;

use crate::order::{BatchSpan, LineItem, NewOrder, Order, OrderStatus};
use span_links::StoredContext;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The server could not be reached or refused service: worth retrying later.
    #[error("database unavailable while {action}: {source}")]
    Unavailable {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The server answered with an error.
    #[error("database error while {action}: {source}")]
    Query {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("invalid DATABASE_URL: {source}")]
    InvalidUrl {
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Connect(#[from] crate::db::ConnectError),
    /// sqlx's error is not the source: the message already holds its cause.
    #[error("cannot apply the database migrations: {}", crate::db::migrate_cause(.error))]
    Migrate { error: sqlx::migrate::MigrateError },
    /// A stored row breaks an invariant the schema cannot express.
    #[error("order {id} holds unreadable data: {reason}")]
    Corrupt { id: Uuid, reason: String },
}

impl StoreError {
    /// True when the database could not be reached, as opposed to a failing query.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Connect(_))
    }

    /// Sorts a sqlx error into [`StoreError::Unavailable`] or [`StoreError::Query`].
    pub(crate) fn from_sqlx(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| {
            if is_connection_error(&source) {
                Self::Unavailable { action, source }
            } else {
                Self::Query { action, source }
            }
        }
    }
}

/// Errors meaning "no usable connection", including the SQLSTATEs a server sends
/// while starting, shutting down or out of connection slots.
fn is_connection_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources;
            // 57P0x: admin shutdown, crash shutdown, cannot connect now;
            // 3D000: the database does not exist (dropped or not yet created).
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P0")
                || code == "3D000"
        }),
        _ => false,
    }
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    customer_id: String,
    items: Json<Vec<LineItem>>,
    total_cents: i64,
    status: String,
    created_at: DateTime<Utc>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    attempts: i32,
    last_error: Option<String>,
    processed_at: Option<DateTime<Utc>>,
    batch_trace_id: Option<String>,
    batch_span_id: Option<String>,
    batch_span_sampled: Option<bool>,
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;

    fn try_from(row: OrderRow) -> Result<Self, StoreError> {
        let status = stored_status(row.id, &row.status)?;
        let batch_span = match (row.batch_trace_id, row.batch_span_id) {
            (Some(trace_id), Some(span_id)) => Some(BatchSpan {
                trace_id,
                span_id,
                sampled: row.batch_span_sampled,
            }),
            _ => None,
        };
        Ok(Self {
            id: row.id,
            customer_id: row.customer_id,
            items: row.items.0,
            total_cents: row.total_cents,
            status,
            created_at: row.created_at,
            source_trace: row.traceparent.map(|traceparent| StoredContext {
                traceparent,
                tracestate: row.tracestate,
            }),
            attempts: row.attempts,
            last_error: row.last_error,
            processed_at: row.processed_at,
            batch_span,
        })
    }
}

/// The status column of order `id`; a value the code does not know is a
/// corrupt row.
pub(crate) fn stored_status(id: Uuid, status: &str) -> Result<OrderStatus, StoreError> {
    OrderStatus::from_db(status).ok_or_else(|| StoreError::Corrupt {
        id,
        reason: format!("unknown status {status:?}"),
    })
}

/// A CLIENT span for one statement on the `orders` table, named as the product
/// names its steps, with the database semantic-convention attributes.
pub(crate) fn db_span(
    pool: &PgPool,
    name: &'static str,
    operation: &'static str,
    query: &'static str,
) -> tracing::Span {
    let options = pool.connect_options();
    tracing::info_span!(
        "db",
        otel.name = name,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "postgresql",
        db.operation.name = operation,
        db.collection.name = "orders",
        db.namespace = options.get_database().unwrap_or(options.get_username()),
        db.query.text = query,
        server.address = options.get_host(),
        server.port = i64::from(options.get_port()),
        error.type = tracing::field::Empty,
    )
}

/// Runs `query` in `span` (a [`db_span`]); a failure sets the span's status
/// to ERROR with an `error.type`.
pub(crate) async fn in_db_span<T>(
    span: tracing::Span,
    query: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let result = query.instrument(span.clone()).await;
    if let Err(error) = &result {
        span.record("otel.status_code", "ERROR");
        span.record(
            "error.type",
            if error.is_unavailable() {
                "unavailable"
            } else {
                "query_failed"
            },
        );
    }
    result
}

/// The columns an [`OrderRow`] reads, for every statement that returns orders.
macro_rules! order_columns {
    () => {
        "id, customer_id, items, total_cents, status, created_at, traceparent, tracestate, \
         attempts, last_error, processed_at, batch_trace_id, batch_span_id, batch_span_sampled"
    };
}

// With a key, a transaction-scoped advisory lock on it tells "another request
// with this key is being stored" (the lock is taken) from "stored already"
// (the insert conflicts); two requests with one key never both insert.
const INSERT_ORDER: &str = concat!(
    "INSERT INTO orders \
     (id, customer_id, items, total_cents, traceparent, tracestate, idempotency_key) \
     SELECT $1, $2, $3, $4, $5, $6, $7 \
     WHERE $7::text IS NULL OR pg_try_advisory_xact_lock(hashtextextended($7, 0)) \
     ON CONFLICT (idempotency_key) DO NOTHING \
     RETURNING ",
    order_columns!()
);

/// What storing a new order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored now.
    New(Order),
    /// Its idempotency key was first used for this same order, stored then.
    Replayed(Order),
    /// Its idempotency key was first used for a different order.
    KeyReused,
    /// Another request with its idempotency key is being stored right now.
    KeyInFlight,
}

/// Stores a new pending order with the trace context the batch will link to;
/// with an idempotency key that was used before, stores nothing and says why.
///
/// Runs in a `persist-order` span.
pub async fn insert_order(
    pool: &PgPool,
    id: Uuid,
    order: &NewOrder,
    source_trace: Option<&StoredContext>,
) -> Result<Inserted, StoreError> {
    let inserted = in_db_span(
        db_span(pool, "persist-order", "INSERT", INSERT_ORDER),
        async {
            sqlx::query_as::<_, OrderRow>(INSERT_ORDER)
                .bind(id)
                .bind(order.customer_id())
                .bind(Json(order.items()))
                .bind(order.total_cents())
                .bind(source_trace.map(|trace| trace.traceparent.as_str()))
                .bind(source_trace.and_then(|trace| trace.tracestate.as_deref()))
                .bind(order.idempotency_key())
                .fetch_optional(pool)
                .await
                .map_err(StoreError::from_sqlx("inserting an order"))
        },
    )
    .await?;
    match (inserted, order.idempotency_key()) {
        (Some(row), _) => Order::try_from(row).map(Inserted::New),
        (None, Some(key)) => Ok(match find_order_by_key(pool, key).await? {
            Some(first)
                if first.customer_id == order.customer_id() && first.items == order.items() =>
            {
                Inserted::Replayed(first)
            }
            Some(_) => Inserted::KeyReused,
            None => Inserted::KeyInFlight,
        }),
        (None, None) => Err(StoreError::Corrupt {
            id,
            reason: "an order without a key was not inserted".to_owned(),
        }),
    }
}

const SELECT_ORDER_BY_KEY: &str = concat!(
    "SELECT ",
    order_columns!(),
    " FROM orders WHERE idempotency_key = $1"
);

/// The order stored with idempotency key `key`, if any.
async fn find_order_by_key(pool: &PgPool, key: &str) -> Result<Option<Order>, StoreError> {
    let action = "reading an order by its idempotency key";
    select_order(pool, SELECT_ORDER_BY_KEY, key, action).await
}

const SELECT_ORDER: &str = concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1");

/// Reads one order, `None` if there is none with that id.
pub async fn find_order(pool: &PgPool, id: Uuid) -> Result<Option<Order>, StoreError> {
    select_order(pool, SELECT_ORDER, id, "reading an order").await
}

/// The one order `query` selects by `value`, in a `SELECT orders` span.
async fn select_order<'q, T>(
    pool: &PgPool,
    query: &'static str,
    value: T,
    action: &'static str,
) -> Result<Option<Order>, StoreError>
where
    T: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send + 'q,
{
    in_db_span(db_span(pool, "SELECT orders", "SELECT", query), async {
        sqlx::query_as::<_, OrderRow>(query)
            .bind(value)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::from_sqlx(action))
            .and_then(|row| row.map(Order::try_from).transpose())
    })
    .await
}

/// Checks that a connection can be had and answers a trivial query.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::from_sqlx("checking the database"))
}
