//! The HTTP handlers.

pub mod health;
pub mod orders;
