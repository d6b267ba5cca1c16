//! Helpers for integration tests that run the real service binaries
//! (`orders-api`, `orders-batch`) as processes against the per-test database
//! `#[sqlx::test]` creates, exporting to an [`otlp_receiver::OtlpReceiver`].
//!
//! Both services' tests used to carry their own copies of these; this is the
//! one place for them. It is test-only: a dev-dependency, never a dependency
//! of the services. What is specific to one service's tests (the
//! `orders-batch --once` summary, seeding, link checks) stays in that
//! service's `tests/common`.

mod binaries;
mod env;
mod process;
mod wait;

pub use binaries::{orders_api_binary, orders_batch_binary, release_binaries};
pub use env::{database_url, free_port, otel_env};
pub use process::{Exited, Process};
pub use wait::{WAIT, wait_until};
