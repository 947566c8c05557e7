//! Telemetry ingest: from an MQTT PUBLISH to a committed batch, then the ack.
//!
//! Two sources feed one pipeline:
//! - the built-in MQTT device endpoint ([`endpoint`]): devices connect to fleetpulse
//!   itself, and a QoS 1 PUBACK is written only after the reading committed;
//! - the external broker source ([`external`]): ingest holds a persistent session with
//!   manual acks on an existing broker and acks a delivery only after it committed.
//!
//! Both decode with the same [`decode()`] (telemetry contract v1: readings, dead letters,
//! status updates) and submit to the [`pipeline`], which batches (count, bytes, linger),
//! commits through [`Store::commit_batch`](fleetpulse_domain::store::Store::commit_batch)
//! and then runs the batch's acks in arrival order. Guarantee: nothing is acked that is
//! not durably stored; the price is at-least-once delivery, which the store's
//! (serial, seq) dedupe absorbs. Malformed messages are dead-lettered, committed and
//! acked like any other (redelivering poison would loop).
//!
//! Security: the endpoint can speak TLS and tie a client certificate to the serial, or
//! check a shared password or per-device tokens ([`credentials`]); the external source
//! speaks `mqtts://`. Every TLS configuration uses ring explicitly ([`tls`]).
//!
//! With a time-series sink configured ([`sink`]), each commit also appends its new
//! readings to a spool in the store (same transaction), and a worker sends the spool
//! to the server; an ack then means stored and spooled.
//!
//! Shutdown order: the sources stop reading and wait until the pipeline committed and
//! acked what they handed it; then the pipeline is closed and drained.

mod duration;
mod secret;

pub mod credentials;
pub mod decode;
pub mod endpoint;
pub mod external;
pub mod journal;
pub mod pipeline;
pub mod sink;
pub mod stats;
pub mod tls;

pub use decode::{Decoded, decode};
pub use endpoint::{
    AuthMode, BoundEndpoint, ClientCertMode, EndpointConfig, EndpointError, EndpointTlsConfig,
    MqttEndpoint,
};
pub use external::{ExternalConfig, ExternalError, ExternalSource};
pub use fleetpulse_domain::telemetry::TelemetryLimits;
pub use journal::{Journal, JournalConfig};
pub use pipeline::{
    Ack, AckQueue, BatchPolicy, Inbound, Pipeline, PipelineClosed, PipelineConfig, PipelineHandle,
    QueuedAck, RetryPolicy,
};
pub use sink::{
    InfluxSink, SinkConfig, SinkError, SinkStats, SinkWorker, SpoolGate, TelemetrySink,
};
pub use stats::{IngestHealth, IngestStats, IngestStatsSnapshot};
