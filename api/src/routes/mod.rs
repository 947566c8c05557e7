//! Route modules. Each exposes `router()`; [`crate::router`] merges them.

pub mod catalog;
pub mod dead_letters;
pub mod devices;
pub mod health;
pub mod metrics;
pub mod orders;
