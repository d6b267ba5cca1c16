//! `orders-api`: takes orders over HTTP, traces each one as a `receive-order`
//! span and stores it with that span's W3C trace context, which `orders-batch`
//! later links its `process-batch` span to.
//!
//! - [`config`]: the command line and environment.
//! - [`app`]: the router and its shared state.
//! - [`routes`]: the handlers.
//! - [`receive_order`]: the `receive-order` step, whose context each order is
//!   stored with.
//! - [`json_body`] and [`error`]: how requests are read and errors answered.
//! - [`http_telemetry`]: the HTTP SERVER span and metrics around every request.
//! - [`connections`]: HTTP connections, bounded in number and in time.
//! - [`server`]: start-up, serving and graceful shutdown.

pub mod app;
pub mod config;
pub mod connections;
pub mod error;
pub mod http_telemetry;
pub mod json_body;
pub mod receive_order;
pub mod routes;
pub mod server;

pub use app::{AppState, router};
pub use config::Config;
