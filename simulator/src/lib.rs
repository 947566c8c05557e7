//! A deterministic fleet of simulated home medical devices (oxygen concentrators,
//! ventilators) with known ground truth, publishing telemetry contract v1 over MQTT QoS 1
//! the way device firmware does.
//!
//! # Data model
//! - [`Fleet`] (pure, no I/O): devices spread over the catalog's models, each with its
//!   own usage, consumable wear, Weibull component lifetimes ([`failure`] has the β/η
//!   table), precursor signals that start days before a failure, the failure mode's
//!   critical alarm at the failure, repairs after a delay, consumable replacements some
//!   days after the order threshold, and occasional warning/info alarm episodes.
//!   [`Fleet::step`] returns one v1 payload per device.
//! - Ground truth ([`TruthEvent`]): every failure, repair and consumable replacement
//!   (and scheduled replacement, with the untidy profile), as the simulator knows it, to
//!   check the service's conclusions against.
//! - [`Untidy`] (opt-in, [`FleetConfig::untidy`]): a less convenient fleet — mixed
//!   reporting rhythms, offline stretches, parts replaced on schedule, devices joining
//!   mid-life with aged parts, warning leads from hours to weeks. Without it the fleet is
//!   byte for byte what it always was.
//! - [`DeviceLink`]: one device's MQTT 3.1.1 connection (rumqttc's codec), keeping every
//!   reading until its PUBACK and resending after reconnects; [`FirmwarePublisher`] is
//!   one such link usable alone.
//! - [`run`]: thousands of links in one process, a central ticker stepping the fleet.
//! - [`Swarm`]: thousands of lean publishers of synthetic readings, for load and crash
//!   tests and the ingest benchmark.
//!
//! # Time
//! Device timestamps are the wall clock; the speed factor (simulated seconds per wall
//! second) accelerates only the devices' physics: runtime hours, wear, failures. The
//! service therefore validates timestamps exactly as it does for real devices.
//!
//! For in-process consumers (the prediction benchmark), [`Fleet::step_samples`] returns
//! the readings as numbers and [`history::simulate`] stamps them with simulated time
//! (start + simulated hours) and folds them into the predictors' [`PredictionData`]
//! (daily summaries as the store folds its hourly rollups, alarm episodes, failures,
//! replacements). Usage varies by weekday, season and day (`device.rs`).
//!
//! [`PredictionData`]: fleetpulse_domain::prediction::PredictionData
//!
//! # Guarantees
//! - Determinism: the same seed, catalog and number of ticks give the same readings
//!   (apart from wall-clock `ts`) and the same ground truth; device `i` does not depend on
//!   the fleet size.
//! - At least once: a reading taken into a device's store is resent until acknowledged
//!   while the process lives. The store is memory only and bounded: when it is full the
//!   device stops producing readings rather than dropping stored ones.

pub mod backlog;
pub mod device;
pub mod device_link;
pub mod endpoint;
pub mod failure;
pub mod fleet;
pub mod history;
pub mod outbox;
pub mod publisher;
pub mod runner;
pub mod swarm;
pub mod truth;
pub mod untidy;

pub use device::{DeviceInfo, DeviceSample};
pub use device_link::{DeviceLink, LinkIdentity, LinkOptions, LinkState, LinkStats, LinkTls};
pub use endpoint::{Endpoint, EndpointError};
pub use failure::{FAILURE_MODES, FailureModeSpec, Weibull, failure_mode_spec};
pub use fleet::{Fleet, FleetConfig, FleetError, Message};
pub use history::{HistoryRecorder, simulate};
pub use outbox::OutboxFull;
pub use publisher::{FirmwarePublisher, LinkError};
pub use runner::{FleetClock, SimConfig, SimError, SimReport, run, run_fleet, run_with};
pub use swarm::{Swarm, SwarmConfig, SwarmCounters, SwarmError, SwarmReport, SwarmSnapshot};
pub use truth::{PrecursorStart, TruthEvent};
pub use untidy::Untidy;
