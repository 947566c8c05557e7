//! Route modules. Each exposes `router()`; [`crate::router`] merges them.

pub mod admin;
pub mod catalog;
pub mod dead_letters;
pub mod device_import;
pub mod device_lifecycle;
pub mod devices;
pub mod health;
pub mod history;
pub mod metrics;
pub mod order_feed;
pub mod orders;
pub mod predictions;
pub mod reliability;
pub mod sla;
pub mod webhooks;
