//! The firmware bridge: polls Modbus TCP devices by register map and publishes each poll
//! as a v1 telemetry reading over MQTT QoS 1, so that a device without an MQTT client is
//! indistinguishable from one with it downstream.
//!
//! # Data model
//! - [`config::BridgeConfig`]: the devices (serial, model, `host:port`, unit id,
//!   interval, timeout), the MQTT side and the outbox, validated at start.
//! - [`registers::RegisterMap`]: per model, which register (holding, input, coil,
//!   discrete input) becomes which telemetry field, its type (u16 … f64, bool), word/byte
//!   order, scale and offset; alarm bits mapped to catalog codes; the read plan (adjacent
//!   registers in as few requests as the 125-register limit allows).
//! - [`poller`]: one task per device; tokio-modbus does one request, the poller owns the
//!   interval, the timeout, the reconnect and the backoff.
//! - [`outbox::DiskOutbox`]: readings on disk until their PUBACK; per-device `seq`.
//! - [`bridge::Bridge`]: the wiring; one MQTT connection per device (client id = serial,
//!   as fleetpulse's device endpoint requires), reusing the simulator's firmware link.
//! - [`simulated`]: simulated devices served as Modbus TCP servers with the same maps.
//!
//! # Guarantees
//! - A reading is committed to the outbox before it is published and removed only after
//!   its PUBACK: an MQTT outage or a bridge restart loses nothing (bounded by
//!   `outbox.max_readings_per_device`; beyond it new polls are counted and not stored).
//! - `seq` per device increases across restarts; redelivery is deduplicated by fleetpulse.
//! - Transport failures (timeouts, refused or broken connections), device exception codes
//!   and garbage (decode failures) are counted and reported apart; a failing device is
//!   retried with backoff and never delays another one.

pub mod bridge;
pub mod config;
pub mod metrics;
pub mod outbox;
pub mod poller;
pub mod registers;
pub mod simulated;
pub mod tls;

pub use bridge::{Bridge, BridgeError, BridgeReport};
pub use config::{BridgeConfig, ConfigError};
