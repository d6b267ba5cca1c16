//! The orders domain and its storage, shared by `orders-api` and `orders-batch`.
//!
//! - [`order`]: what an order is and the rules a new one must satisfy.
//! - [`trace_context`]: the W3C trace-context carrier stored with each order, the
//!   thread that lets the batch link back to the request that created the order.
//! - [`reconcile`]: the check the batch runs on each order.
//! - [`db`] and [`store`]: the PostgreSQL pool, the embedded migrations and the
//!   queries orders-api runs; [`claims`]: the queries orders-batch runs to
//!   claim, finish and release orders.

pub mod claims;
pub mod db;
pub mod order;
pub mod reconcile;
pub mod store;
pub mod trace_context;

pub use order::{
    JsonObject, LineItem, NewOrder, Order, OrderRequest, OrderStatus, ValidationErrors,
};
pub use store::StoreError;
pub use trace_context::TraceContext;
