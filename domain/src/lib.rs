//! Shared vocabulary of fleetpulse.
//!
//! Every value that crosses a crate boundary is defined here and parsed at the edge:
//! a [`Serial`] is a checked device identifier, a [`telemetry::Reading`] is a message
//! that passed the v1 telemetry contract, a [`catalog::Catalog`] is a validated model and
//! alarm catalog. Inner code never sees raw strings or unchecked numbers.
//!
//! The traits that cross crates live here too: [`store::Store`] (everything durable the
//! roles share) and [`rules::OrderRules`] (streaming rules that turn committed state changes
//! into order intents), and [`credentials::DeviceCredentials`] (per-device MQTT tokens,
//! kept as digests). This crate does no I/O.

pub mod alarm;
pub mod catalog;
pub mod clock;
pub mod credentials;
pub mod csv;
pub mod device;
pub mod dispatch;
pub mod history;
pub mod line_protocol;
pub mod lives;
pub mod order;
pub mod policy;
pub mod prediction;
pub mod reliability;
pub mod rules;
pub mod serial;
pub mod store;
pub mod telemetry;
pub mod webhook;

pub use alarm::{AlarmCode, AlarmEpisode, Category, Severity};
pub use catalog::{Catalog, ModelId, ModelSpec};
pub use clock::Clock;
pub use device::{ConnectionState, Criticality, DeviceKind, LifecycleStatus};
pub use order::{Cause, Order, OrderIntent, OrderKind, OrderStatus, Priority};
pub use policy::Policy;
pub use serial::Serial;
pub use telemetry::{Reading, RejectReason, Rejection};
