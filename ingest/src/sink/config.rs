//! Configuration of the time-series sink (section `[sink]`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pipeline::RetryPolicy;

/// Where and how readings go to a time-series server speaking the InfluxDB v2 write API
/// (InfluxDB 2.x, 3.x, Cloud, VictoriaMetrics). Absent: no sink, no spool.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Base URL of the server, `http://host:port` or `https://host:port` (the write API
    /// is `POST {url}/api/v2/write`).
    pub url: String,
    /// Organisation (InfluxDB 2.x and Cloud; others ignore it). Default `fleetpulse`.
    #[serde(default = "default_org")]
    pub org: String,
    /// Bucket (InfluxDB 2.x/Cloud) or database (InfluxDB 3.x). Default `telemetry`.
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// API token, sent as `Authorization: Token …`. Never logged.
    #[serde(default, deserialize_with = "crate::secret::deserialize_option")]
    pub token: Option<String>,
    /// How spooled readings are gathered into one write request.
    #[serde(default)]
    pub batch: SinkBatchPolicy,
    /// Pauses between attempts after a retriable failure (connection refused, timeout,
    /// HTTP 429 or 5xx), with random jitter of up to half the pause. Defaults 100 ms
    /// doubling up to 5 000 ms.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Timeout of one write request, in milliseconds (`timeout_ms`). Default 10 000.
    #[serde(
        rename = "timeout_ms",
        with = "crate::duration::millis",
        default = "default_timeout"
    )]
    pub timeout: Duration,
    /// Most line-protocol bytes the spool may hold while the server is down or slow
    /// (`spool_max_bytes`). When it is full, ingest stops committing, so the bounded
    /// pipeline stops reading from devices or the broker: backpressure, never a drop.
    /// Default 1 GiB.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// At shutdown, how long the sink keeps sending what is spooled before it stops,
    /// in milliseconds (`shutdown_flush_ms`); the rest waits in the spool for the next
    /// start. Default 5 000.
    #[serde(
        rename = "shutdown_flush_ms",
        with = "crate::duration::millis",
        default = "default_shutdown_flush"
    )]
    pub shutdown_flush: Duration,
}

/// When a write request is sent: whichever limit is reached first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkBatchPolicy {
    /// Most readings (lines) in one request. Default 5 000.
    #[serde(default = "default_max_readings")]
    pub max_readings: usize,
    /// Most bytes of line protocol in one request. Default 1 MiB. A single committed
    /// batch is never split, so one request may exceed it by less than one batch.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Longest wait for a fuller request once readings are spooled, in milliseconds
    /// (`linger_ms`). Default 1 000.
    #[serde(
        rename = "linger_ms",
        with = "crate::duration::millis",
        default = "default_linger"
    )]
    pub linger: Duration,
}

fn default_org() -> String {
    "fleetpulse".to_owned()
}
fn default_bucket() -> String {
    "telemetry".to_owned()
}
const fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
const fn default_spool_max_bytes() -> u64 {
    1 << 30
}
const fn default_shutdown_flush() -> Duration {
    Duration::from_secs(5)
}
const fn default_max_readings() -> usize {
    5_000
}
const fn default_max_bytes() -> usize {
    1 << 20
}
const fn default_linger() -> Duration {
    Duration::from_secs(1)
}

impl Default for SinkBatchPolicy {
    fn default() -> Self {
        Self {
            max_readings: default_max_readings(),
            max_bytes: default_max_bytes(),
            linger: default_linger(),
        }
    }
}

impl SinkConfig {
    /// A configuration for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            org: default_org(),
            bucket: default_bucket(),
            token: None,
            batch: SinkBatchPolicy::default(),
            retry: RetryPolicy::default(),
            timeout: default_timeout(),
            spool_max_bytes: default_spool_max_bytes(),
            shutdown_flush: default_shutdown_flush(),
        }
    }
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkConfig")
            .field("url", &self.url)
            .field("org", &self.org)
            .field("bucket", &self.bucket)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("batch", &self.batch)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("shutdown_flush", &self.shutdown_flush)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keys_and_redaction() {
        let c: SinkConfig = serde_json::from_str(
            r#"{"url":"http://127.0.0.1:8428","token":"s3cret","batch":{"linger_ms":50}}"#,
        )
        .expect("valid");
        assert_eq!(c.batch.linger, Duration::from_millis(50));
        assert_eq!(
            (c.org.as_str(), c.bucket.as_str()),
            ("fleetpulse", "telemetry")
        );
        assert_eq!(c.spool_max_bytes, 1 << 30);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            serde_json::from_str::<SinkConfig>(r#"{"url":"http://x","linger_ms":5}"#).is_err(),
            "unknown keys are refused"
        );
        let mut expected = SinkConfig::new("http://127.0.0.1:8428");
        expected.token = Some("s3cret".into());
        expected.batch.linger = Duration::from_millis(50);
        assert_eq!(c, expected);
    }
}
