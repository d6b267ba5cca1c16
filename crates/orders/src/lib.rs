//! What `orders-api` and `orders-batch` share: the orders domain, its storage,
//! and the signal both stop on.
//!
//! - [`order`]: what an order is and the rules a new one must satisfy. Each
//!   order is stored with the W3C context of the span that received it
//!   (`span_links::StoredContext`): the thread the batch links back along.
//! - [`reconcile`]: the check the batch runs on each order.
//! - [`db`] and [`store`]: the PostgreSQL pool, the embedded migrations and the
//!   queries orders-api runs; [`claims`]: the queries orders-batch runs to
//!   claim, finish and release orders.
//! - [`shutdown`]: SIGTERM and Ctrl-C, and the grace the work in hand gets.

pub mod claims;
pub mod db;
pub mod order;
pub mod reconcile;
pub mod shutdown;
pub mod store;

pub use order::{
    JsonObject, LineItem, NewOrder, Order, OrderRequest, OrderStatus, ValidationErrors,
};
pub use store::StoreError;
