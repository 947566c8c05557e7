//! Telemetry contract v1: topics, payloads, validation. See `docs/telemetry.md`.
//!
//! A device publishes JSON to `fleetpulse/v1/devices/{serial}/telemetry`: one reading
//! object, or an array of them (a backlog upload). Each element is parsed on its own,
//! so one bad reading in a backlog does not cost the good ones: [`parse_telemetry`]
//! returns one `Result` per element.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alarm::AlarmCode;
use crate::device::{ConnectionState, string_enum};
use crate::serial::Serial;

/// Topic prefix of contract v1.
pub const TOPIC_PREFIX: &str = "fleetpulse/v1/devices/";
/// Subscription filter for every device's telemetry.
pub const TELEMETRY_FILTER: &str = "fleetpulse/v1/devices/+/telemetry";
/// Subscription filter for every device's status (birth / last will).
pub const STATUS_FILTER: &str = "fleetpulse/v1/devices/+/status";

/// The telemetry topic of one device.
pub fn telemetry_topic(serial: &Serial) -> String {
    format!("{TOPIC_PREFIX}{serial}/telemetry")
}

/// The status topic of one device.
pub fn status_topic(serial: &Serial) -> String {
    format!("{TOPIC_PREFIX}{serial}/status")
}

/// What a topic of contract v1 carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Telemetry,
    Status,
}

/// A parsed device topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceTopic {
    pub serial: Serial,
    pub channel: Channel,
}

/// Parses `fleetpulse/v1/devices/{serial}/{telemetry|status}`.
pub fn parse_topic(topic: &str) -> Result<DeviceTopic, Rejection> {
    let bad = |detail: String| Rejection::new(RejectReason::UnsupportedTopic, detail);
    let rest = topic.strip_prefix(TOPIC_PREFIX).ok_or_else(|| {
        bad(format!(
            "topic {topic:?} is outside contract v1 (expected {TOPIC_PREFIX}{{serial}}/telemetry or /status)"
        ))
    })?;
    let (serial, channel) = rest
        .split_once('/')
        .ok_or_else(|| bad(format!("topic {topic:?} has no channel after the serial")))?;
    let serial = Serial::parse(serial)
        .map_err(|e| bad(format!("topic {topic:?} does not name a valid serial: {e}")))?;
    let channel = match channel {
        "telemetry" => Channel::Telemetry,
        "status" => Channel::Status,
        other => {
            return Err(bad(format!(
                "channel {other:?} is not supported (expected telemetry or status)"
            )));
        }
    };
    Ok(DeviceTopic { serial, channel })
}

string_enum!(
    /// Why a message (or one reading of a backlog) was rejected. Stable codes: they are
    /// stored in dead letters and used as metric labels.
    RejectReason {
        PayloadTooLarge => "payload_too_large",
        NotUtf8 => "not_utf8",
        MalformedJson => "malformed_json",
        NotAnObject => "not_an_object",
        MissingField => "missing_field",
        WrongType => "wrong_type",
        OutOfRange => "out_of_range",
        SerialMismatch => "serial_mismatch",
        TimestampSkew => "timestamp_skew",
        BadFieldName => "bad_field_name",
        TooManyFields => "too_many_fields",
        BadAlarmCode => "bad_alarm_code",
        BacklogTooLarge => "backlog_too_large",
        UnsupportedTopic => "unsupported_topic",
        UnknownDevice => "unknown_device",
        RetiredDevice => "retired_device",
        SinkRejected => "sink_rejected",
        StoreRejected => "store_rejected",
    }
);

/// A rejected message or reading, with a reason code and a sentence a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Rejection {}

/// Limits applied while parsing. Defaults are documented in `docs/telemetry.md`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryLimits {
    /// Largest accepted payload in bytes.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Most readings in one backlog array.
    #[serde(default = "default_max_backlog")]
    pub max_backlog: usize,
    /// Most measurement fields in one reading (known and unknown together).
    #[serde(default = "default_max_fields")]
    pub max_fields: usize,
    /// How far a device timestamp may be ahead of the server clock, in seconds.
    #[serde(default = "default_max_future_skew_s")]
    pub max_future_skew_s: i64,
    /// How old a device timestamp may be (a backlog after days offline), in days.
    #[serde(default = "default_max_age_days")]
    pub max_age_days: i64,
    /// Largest magnitude of any measurement, known or vendor extra. Default 1e15: an
    /// hour's rollup sum stays finite for any number of readings a device can send
    /// (f64 ends at 1.8e308), and whole numbers stay exact (up to 2^53 ≈ 9e15).
    #[serde(default = "default_max_abs_value")]
    pub max_abs_value: f64,
}

const fn default_max_payload_bytes() -> usize {
    256 * 1024
}
const fn default_max_backlog() -> usize {
    1000
}
const fn default_max_fields() -> usize {
    64
}
const fn default_max_future_skew_s() -> i64 {
    300
}
const fn default_max_age_days() -> i64 {
    400
}
const fn default_max_abs_value() -> f64 {
    1e15
}

/// The largest `seq` accepted: the store keeps it as a signed 64-bit integer.
pub const MAX_SEQ: u64 = i64::MAX as u64;

impl Default for TelemetryLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: default_max_payload_bytes(),
            max_backlog: default_max_backlog(),
            max_fields: default_max_fields(),
            max_future_skew_s: default_max_future_skew_s(),
            max_age_days: default_max_age_days(),
            max_abs_value: default_max_abs_value(),
        }
    }
}

/// A known measurement field with its unit and the range a sane device reports.
#[derive(Clone, Copy, Debug)]
pub struct KnownField {
    pub name: &'static str,
    pub unit: &'static str,
    pub min: f64,
    pub max: f64,
    pub description: &'static str,
}

/// Fields of contract v1 with units and accepted ranges. Other numeric fields are kept
/// as vendor extras (any finite number).
pub const KNOWN_FIELDS: &[KnownField] = &[
    KnownField {
        name: "runtime_hours",
        unit: "h",
        min: 0.0,
        max: 1_000_000.0,
        description: "cumulative runtime meter",
    },
    KnownField {
        name: "filter_life_pct",
        unit: "%",
        min: 0.0,
        max: 100.0,
        description: "remaining filter life",
    },
    KnownField {
        name: "o2_purity_pct",
        unit: "%",
        min: 0.0,
        max: 100.0,
        description: "oxygen concentration at the outlet",
    },
    KnownField {
        name: "flow_lpm",
        unit: "L/min",
        min: 0.0,
        max: 20.0,
        description: "delivered oxygen flow",
    },
    KnownField {
        name: "outlet_pressure_kpa",
        unit: "kPa",
        min: 0.0,
        max: 500.0,
        description: "outlet pressure",
    },
    KnownField {
        name: "sieve_bed_hours",
        unit: "h",
        min: 0.0,
        max: 1_000_000.0,
        description: "sieve bed runtime since replacement",
    },
    KnownField {
        name: "temperature_c",
        unit: "°C",
        min: -40.0,
        max: 120.0,
        description: "internal (compressor) temperature",
    },
    KnownField {
        name: "blower_hours",
        unit: "h",
        min: 0.0,
        max: 1_000_000.0,
        description: "blower runtime since replacement",
    },
    KnownField {
        name: "tidal_volume_ml",
        unit: "mL",
        min: 0.0,
        max: 3000.0,
        description: "delivered tidal volume",
    },
    KnownField {
        name: "resp_rate_bpm",
        unit: "1/min",
        min: 0.0,
        max: 150.0,
        description: "respiratory rate",
    },
    KnownField {
        name: "peak_pressure_cmh2o",
        unit: "cmH2O",
        min: 0.0,
        max: 150.0,
        description: "peak inspiratory pressure",
    },
    KnownField {
        name: "leak_lpm",
        unit: "L/min",
        min: 0.0,
        max: 300.0,
        description: "circuit leak",
    },
    KnownField {
        name: "battery_pct",
        unit: "%",
        min: 0.0,
        max: 100.0,
        description: "internal battery charge",
    },
];

/// Looks up a known field of the contract.
pub fn known_field(name: &str) -> Option<&'static KnownField> {
    KNOWN_FIELDS.iter().find(|f| f.name == name)
}

/// Top-level keys that are not measurements.
const RESERVED_KEYS: &[&str] = &["seq", "ts", "serial", "model", "fw", "alarms"];

/// One validated telemetry reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reading {
    pub serial: Serial,
    /// Per-device sequence number; with `serial` the dedupe key.
    pub seq: u64,
    /// The device's timestamp.
    pub ts: DateTime<Utc>,
    /// When fleetpulse received it.
    pub received_at: DateTime<Utc>,
    /// Model the device says it is (used to auto-register unknown devices).
    pub model: Option<String>,
    /// Firmware version the device reports.
    pub firmware: Option<String>,
    /// The full set of alarm codes active at `ts`; `None` when the reading does not say
    /// (the previous set stays), `Some(empty)` when all alarms are clear.
    pub alarms: Option<Vec<AlarmCode>>,
    /// Every numeric measurement (core, kind-specific and vendor extras), by field name.
    pub values: BTreeMap<String, f64>,
}

impl Reading {
    /// The reading as a dead letter keeps it when the store refuses it (unknown or
    /// retired device, a value it cannot hold): JSON without `received_at`, which is the
    /// dead letter's own. The same reading received again gives the same bytes, so a
    /// resend counts on the first dead letter instead of adding one.
    pub fn refused_payload(&self) -> Vec<u8> {
        without_key(self, "received_at")
    }

    pub fn value(&self, field: &str) -> Option<f64> {
        self.values.get(field).copied()
    }
    pub fn runtime_hours(&self) -> Option<f64> {
        self.value("runtime_hours")
    }
    pub fn filter_life_pct(&self) -> Option<f64> {
        self.value("filter_life_pct")
    }
}

/// Parses a telemetry payload published on the topic of `topic_serial`, received at `now`.
/// A whole-message problem (too large, not JSON, too long a backlog) yields a single
/// `Err`; otherwise there is one result per reading.
pub fn parse_telemetry(
    topic_serial: &Serial,
    payload: &[u8],
    now: DateTime<Utc>,
    limits: &TelemetryLimits,
) -> Vec<Result<Reading, Rejection>> {
    match parse_document(payload, limits) {
        Err(r) => vec![Err(r)],
        Ok(Value::Array(items)) => {
            if items.len() > limits.max_backlog {
                return vec![Err(Rejection::new(
                    RejectReason::BacklogTooLarge,
                    format!(
                        "backlog of {} readings; at most {} per message",
                        items.len(),
                        limits.max_backlog
                    ),
                ))];
            }
            if items.is_empty() {
                return vec![Err(Rejection::new(
                    RejectReason::NotAnObject,
                    "empty backlog array: nothing to store",
                ))];
            }
            items
                .into_iter()
                .map(|v| parse_reading(topic_serial, v, now, limits))
                .collect()
        }
        Ok(v) => vec![parse_reading(topic_serial, v, now, limits)],
    }
}

fn parse_document(payload: &[u8], limits: &TelemetryLimits) -> Result<Value, Rejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::new(
            RejectReason::PayloadTooLarge,
            format!(
                "payload of {} bytes; at most {} are accepted",
                payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|e| Rejection::new(RejectReason::NotUtf8, format!("payload is not UTF-8: {e}")))?;
    serde_json::from_str(text).map_err(|e| {
        Rejection::new(
            RejectReason::MalformedJson,
            format!("payload is not JSON: {e}"),
        )
    })
}

fn parse_reading(
    topic_serial: &Serial,
    v: Value,
    now: DateTime<Utc>,
    limits: &TelemetryLimits,
) -> Result<Reading, Rejection> {
    let Value::Object(map) = v else {
        return Err(Rejection::new(
            RejectReason::NotAnObject,
            format!("a reading must be a JSON object, got {}", json_type(&v)),
        ));
    };
    if let Some(s) = map.get("serial") {
        let s = s
            .as_str()
            .ok_or_else(|| wrong_type("serial", "a string", s))?;
        if s != topic_serial.as_str() {
            return Err(Rejection::new(
                RejectReason::SerialMismatch,
                format!(
                    "payload serial {s:?} differs from topic serial {:?}",
                    topic_serial.as_str()
                ),
            ));
        }
    }
    let seq = match map.get("seq") {
        None => return Err(missing("seq")),
        Some(v) => parse_seq(v)?,
    };
    let ts = match map.get("ts") {
        None => return Err(missing("ts")),
        Some(v) => parse_ts(v)?,
    };
    check_skew(ts, now, limits)?;
    let model = optional_string(&map, "model", 64)?;
    let firmware = optional_string(&map, "fw", 32)?;
    let alarms = match map.get("alarms") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut codes = Vec::with_capacity(items.len());
            for item in items {
                let s = item
                    .as_str()
                    .ok_or_else(|| wrong_type("alarms[]", "a string", item))?;
                let code = AlarmCode::parse(s)
                    .map_err(|e| Rejection::new(RejectReason::BadAlarmCode, e.to_string()))?;
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
            codes.sort();
            Some(codes)
        }
        Some(other) => return Err(wrong_type("alarms", "an array of alarm codes", other)),
    };
    let mut values = BTreeMap::new();
    for (key, value) in &map {
        if RESERVED_KEYS.contains(&key.as_str()) {
            continue;
        }
        if !valid_field_name(key) {
            return Err(Rejection::new(
                RejectReason::BadFieldName,
                format!("field name {key:?} must match [a-z][a-z0-9_]{{0,63}}"),
            ));
        }
        let x = match value {
            Value::Number(n) => n.as_f64().filter(|x| x.is_finite()),
            _ => None,
        }
        .ok_or_else(|| wrong_type(key, "a finite number", value))?;
        if x.abs() > limits.max_abs_value {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                format!(
                    "{key} = {x:e} is beyond ±{:e} (ingest.limits.max_abs_value: larger values would overflow the hourly rollups)",
                    limits.max_abs_value
                ),
            ));
        }
        if let Some(f) = known_field(key)
            && !(f.min..=f.max).contains(&x)
        {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                format!("{key} = {x} {} is outside {}..={}", f.unit, f.min, f.max),
            ));
        }
        values.insert(key.clone(), x);
    }
    if values.len() > limits.max_fields {
        return Err(Rejection::new(
            RejectReason::TooManyFields,
            format!(
                "{} measurement fields; at most {}",
                values.len(),
                limits.max_fields
            ),
        ));
    }
    Ok(Reading {
        serial: topic_serial.clone(),
        seq,
        ts,
        received_at: now,
        model,
        firmware,
        alarms,
        values,
    })
}

/// `seq`: a whole number in `0..=MAX_SEQ`; a refused number is named by its value.
fn parse_seq(v: &Value) -> Result<u64, Rejection> {
    let Value::Number(n) = v else {
        return Err(wrong_type("seq", "a non-negative integer", v));
    };
    if let Some(seq) = n.as_u64() {
        if seq > MAX_SEQ {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                format!("seq {seq} is over {MAX_SEQ}, the largest sequence number stored"),
            ));
        }
        return Ok(seq);
    }
    Err(Rejection::new(
        RejectReason::WrongType,
        format!("seq must be a non-negative integer, got {n}"),
    ))
}

pub(crate) fn valid_field_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn parse_ts(v: &Value) -> Result<DateTime<Utc>, Rejection> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                Rejection::new(
                    RejectReason::WrongType,
                    format!("ts {s:?} is not an RFC 3339 time: {e}"),
                )
            }),
        Value::Number(n) => n
            .as_i64()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .ok_or_else(|| {
                Rejection::new(
                    RejectReason::WrongType,
                    format!("ts {n} is not a whole number of milliseconds since 1970"),
                )
            }),
        other => Err(wrong_type(
            "ts",
            "an RFC 3339 string or epoch milliseconds",
            other,
        )),
    }
}

fn check_skew(
    ts: DateTime<Utc>,
    now: DateTime<Utc>,
    limits: &TelemetryLimits,
) -> Result<(), Rejection> {
    if ts > now + Duration::seconds(limits.max_future_skew_s) {
        return Err(Rejection::new(
            RejectReason::TimestampSkew,
            format!(
                "ts {} is {} s ahead of the server clock; at most {} s allowed (check the device clock)",
                ts.to_rfc3339(),
                (ts - now).num_seconds(),
                limits.max_future_skew_s
            ),
        ));
    }
    if ts < now - Duration::days(limits.max_age_days) {
        return Err(Rejection::new(
            RejectReason::TimestampSkew,
            format!(
                "ts {} is more than {} days old",
                ts.to_rfc3339(),
                limits.max_age_days
            ),
        ));
    }
    Ok(())
}

fn optional_string(
    map: &serde_json::Map<String, Value>,
    key: &str,
    max_len: usize,
) -> Result<Option<String>, Rejection> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max_len => Ok(Some(s.clone())),
        Some(Value::String(s)) => Err(Rejection::new(
            RejectReason::OutOfRange,
            format!("{key} must be 1 to {max_len} characters, got {}", s.len()),
        )),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

fn missing(field: &str) -> Rejection {
    Rejection::new(
        RejectReason::MissingField,
        format!("required field {field:?} is missing"),
    )
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> Rejection {
    Rejection::new(
        RejectReason::WrongType,
        format!("{field} must be {expected}, got {}", json_type(got)),
    )
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A device's status message (birth or last will) on `…/{serial}/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusUpdate {
    pub serial: Serial,
    pub state: ConnectionState,
    pub at: DateTime<Utc>,
    pub firmware: Option<String>,
    pub model: Option<String>,
}

impl StatusUpdate {
    /// The status message as a dead letter keeps it when the store refuses it: JSON
    /// without `at` (when it was received: the dead letter's own `received_at`), so the
    /// same message received again gives the same bytes.
    pub fn refused_payload(&self) -> Vec<u8> {
        without_key(self, "at")
    }
}

/// `value` as JSON, without its top-level `key`.
fn without_key<T: Serialize>(value: &T, key: &str) -> Vec<u8> {
    let mut json = serde_json::to_value(value).unwrap_or_default();
    if let Some(object) = json.as_object_mut() {
        object.remove(key);
    }
    serde_json::to_vec(&json).unwrap_or_default()
}

/// Parses a status payload: `online` / `offline` as bare text, or
/// `{"state": "online", "fw": "…", "model": "…"}`. A gateway (the firmware bridge)
/// reports a device it cannot reach as `{"state": "unreachable", "reason": "…"}`; other
/// keys are ignored.
pub fn parse_status(
    topic_serial: &Serial,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<StatusUpdate, Rejection> {
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejection::new(
            RejectReason::NotUtf8,
            format!("status payload is not UTF-8: {e}"),
        )
    })?;
    let state_of = |s: &str| match s.trim() {
        "online" => Ok(ConnectionState::Online),
        "offline" => Ok(ConnectionState::Offline),
        "unreachable" => Ok(ConnectionState::Unreachable),
        other => Err(Rejection::new(
            RejectReason::OutOfRange,
            format!("status {other:?} is not \"online\", \"offline\" or \"unreachable\""),
        )),
    };
    if !text.trim_start().starts_with('{') {
        return Ok(StatusUpdate {
            serial: topic_serial.clone(),
            state: state_of(text)?,
            at: now,
            firmware: None,
            model: None,
        });
    }
    let v: Value = serde_json::from_str(text).map_err(|e| {
        Rejection::new(
            RejectReason::MalformedJson,
            format!("status payload is not JSON: {e}"),
        )
    })?;
    let Value::Object(map) = v else {
        return Err(Rejection::new(
            RejectReason::NotAnObject,
            "status must be an object",
        ));
    };
    let state = match map.get("state") {
        Some(Value::String(s)) => state_of(s)?,
        Some(other) => return Err(wrong_type("state", "a string", other)),
        None => return Err(missing("state")),
    };
    Ok(StatusUpdate {
        serial: topic_serial.clone(),
        state,
        at: now,
        firmware: optional_string(&map, "fw", 32)?,
        model: optional_string(&map, "model", 64)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    fn sn() -> Serial {
        Serial::parse("OC5-000001").expect("valid serial")
    }

    fn one(payload: &str) -> Result<Reading, Rejection> {
        let mut v = parse_telemetry(
            &sn(),
            payload.as_bytes(),
            now(),
            &TelemetryLimits::default(),
        );
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    fn reason(payload: &str) -> RejectReason {
        one(payload).expect_err("must be rejected").reason
    }

    #[test]
    fn parses_a_full_reading_and_keeps_vendor_extras() {
        let r = one(
            r#"{"seq":7,"ts":"2026-11-23T11:59:00Z","serial":"OC5-000001","model":"OC-5A",
                "fw":"2.1.0","runtime_hours":1234.5,"filter_life_pct":42,"alarms":["e101","E101","A2"],
                "o2_purity_pct":93.5,"vendor_fan_rpm":2400}"#,
        )
        .expect("valid");
        assert_eq!(r.seq, 7);
        assert_eq!(r.ts, now() - Duration::minutes(1));
        assert_eq!(r.runtime_hours(), Some(1234.5));
        assert_eq!(r.filter_life_pct(), Some(42.0));
        assert_eq!(r.value("vendor_fan_rpm"), Some(2400.0));
        let codes: Vec<_> = r
            .alarms
            .expect("alarms")
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(codes, ["A2", "E101"]);
        assert_eq!(r.model.as_deref(), Some("OC-5A"));
    }

    #[test]
    fn epoch_millis_are_accepted_and_missing_alarms_mean_unknown() {
        let ms = now().timestamp_millis();
        let r = one(&format!(r#"{{"seq":1,"ts":{ms}}}"#)).expect("valid");
        assert_eq!(r.ts, now());
        assert_eq!(r.alarms, None);
        let r = one(&format!(r#"{{"seq":1,"ts":{ms},"alarms":[]}}"#)).expect("valid");
        assert_eq!(r.alarms, Some(vec![]));
    }

    #[test]
    fn each_rejection_reason_is_reachable() {
        let ts = r#""ts":"2026-11-23T12:00:00Z""#;
        assert_eq!(reason("{"), RejectReason::MalformedJson);
        assert_eq!(reason("42"), RejectReason::NotAnObject);
        assert_eq!(reason(&format!("{{{ts}}}")), RejectReason::MissingField);
        assert_eq!(reason(r#"{"seq":1}"#), RejectReason::MissingField);
        assert_eq!(
            reason(&format!(r#"{{"seq":-1,{ts}}}"#)),
            RejectReason::WrongType
        );
        assert_eq!(
            reason(&format!(r#"{{"seq":"1",{ts}}}"#)),
            RejectReason::WrongType
        );
        assert_eq!(
            reason(r#"{"seq":1,"ts":"yesterday"}"#),
            RejectReason::WrongType
        );
        assert_eq!(
            reason(&format!(r#"{{"seq":1,{ts},"filter_life_pct":101}}"#)),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason(&format!(r#"{{"seq":1,{ts},"o2_purity_pct":-3}}"#)),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason(&format!(r#"{{"seq":1,{ts},"serial":"OTHER"}}"#)),
            RejectReason::SerialMismatch
        );
        assert_eq!(
            reason(r#"{"seq":1,"ts":"2026-11-23T13:00:00Z"}"#),
            RejectReason::TimestampSkew
        );
        assert_eq!(
            reason(r#"{"seq":1,"ts":"2020-01-01T00:00:00Z"}"#),
            RejectReason::TimestampSkew
        );
        assert_eq!(
            reason(&format!(r#"{{"seq":1,{ts},"Bad-Name":1}}"#)),
            RejectReason::BadFieldName
        );
        assert_eq!(
            reason(&format!(r#"{{"seq":1,{ts},"note":"hello"}}"#)),
            RejectReason::WrongType
        );
        assert_eq!(
            reason(&format!(r#"{{"seq":1,{ts},"alarms":["bad code"]}}"#)),
            RejectReason::BadAlarmCode
        );
        assert_eq!(
            reason(&format!(r#"{{"seq":1,{ts},"alarms":"E1"}}"#)),
            RejectReason::WrongType
        );
        let many: String = (0..65).map(|i| format!(r#","x{i}":1"#)).collect();
        assert_eq!(
            reason(&format!(r#"{{"seq":1,{ts}{many}}}"#)),
            RejectReason::TooManyFields
        );
        let limits = TelemetryLimits {
            max_payload_bytes: 10,
            ..Default::default()
        };
        let v = parse_telemetry(&sn(), br#"{"seq":1,"ts":0,"x":1}"#, now(), &limits);
        assert_eq!(
            v[0].as_ref().map_err(|r| r.reason),
            Err(RejectReason::PayloadTooLarge)
        );
        let v = parse_telemetry(&sn(), &[0xff, 0xfe], now(), &TelemetryLimits::default());
        assert_eq!(
            v[0].as_ref().map_err(|r| r.reason),
            Err(RejectReason::NotUtf8)
        );
    }

    #[test]
    fn seq_must_fit_the_store_and_a_refused_one_is_named_by_its_value() {
        let ts = r#""ts":"2026-11-23T12:00:00Z""#;
        let max = one(&format!(r#"{{"seq":{},{ts}}}"#, i64::MAX)).expect("i64::MAX fits");
        assert_eq!(max.seq, MAX_SEQ);
        let over =
            one(&format!(r#"{{"seq":9223372036854775808,{ts}}}"#)).expect_err("2^63 does not fit");
        assert_eq!(over.reason, RejectReason::OutOfRange);
        assert!(
            over.detail
                .contains("seq 9223372036854775808 is over 9223372036854775807"),
            "{over}"
        );
        let negative = one(&format!(r#"{{"seq":-5,{ts}}}"#)).expect_err("negative");
        assert_eq!(
            negative.detail,
            "seq must be a non-negative integer, got -5"
        );
        let fraction = one(&format!(r#"{{"seq":1.5,{ts}}}"#)).expect_err("fraction");
        assert_eq!(
            fraction.detail,
            "seq must be a non-negative integer, got 1.5"
        );
        let text = one(&format!(r#"{{"seq":"1",{ts}}}"#)).expect_err("text");
        assert_eq!(
            text.detail,
            "seq must be a non-negative integer, got a string"
        );
    }

    #[test]
    fn values_beyond_the_magnitude_bound_are_refused_so_rollups_stay_finite() {
        let ts = r#""ts":"2026-11-23T12:00:00Z""#;
        let ok = one(&format!(
            r#"{{"seq":1,{ts},"vendor_counter":1e15,"vendor_low":-1e15}}"#
        ))
        .expect("the bound itself is accepted");
        assert_eq!(ok.value("vendor_counter"), Some(1e15));
        for v in ["1.7e308", "-1.7e308", "1.000001e15", "-2e15"] {
            let r = one(&format!(r#"{{"seq":1,{ts},"vendor_x":{v}}}"#)).expect_err(v);
            assert_eq!(r.reason, RejectReason::OutOfRange, "{v}");
            assert!(r.detail.contains("max_abs_value"), "{r}");
        }
        // Two readings at the bound in one hour sum to far below f64's end.
        assert!((2.0 * TelemetryLimits::default().max_abs_value * 1e9).is_finite());
        let limits = TelemetryLimits {
            max_abs_value: 10.0,
            ..TelemetryLimits::default()
        };
        let v = parse_telemetry(
            &sn(),
            format!(r#"{{"seq":1,{ts},"vendor_x":11}}"#).as_bytes(),
            now(),
            &limits,
        );
        assert_eq!(
            v[0].as_ref().map_err(|r| r.reason),
            Err(RejectReason::OutOfRange)
        );
    }

    #[test]
    fn a_backlog_keeps_good_readings_beside_bad_ones() {
        let payload = r#"[{"seq":1,"ts":"2026-11-20T00:00:00Z","filter_life_pct":50},
                          {"seq":2,"ts":"2026-11-20T01:00:00Z","filter_life_pct":500},
                          {"seq":3,"ts":"2026-11-20T02:00:00Z"}]"#;
        let v = parse_telemetry(
            &sn(),
            payload.as_bytes(),
            now(),
            &TelemetryLimits::default(),
        );
        assert_eq!(v.len(), 3);
        assert!(v[0].is_ok() && v[2].is_ok());
        assert_eq!(
            v[1].as_ref().map_err(|r| r.reason),
            Err(RejectReason::OutOfRange)
        );
        let limits = TelemetryLimits {
            max_backlog: 2,
            ..Default::default()
        };
        let v = parse_telemetry(&sn(), payload.as_bytes(), now(), &limits);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].as_ref().map_err(|r| r.reason),
            Err(RejectReason::BacklogTooLarge)
        );
    }

    #[test]
    fn topics_are_parsed_and_foreign_ones_refused() {
        let t = parse_topic("fleetpulse/v1/devices/OC5-000001/telemetry").expect("valid");
        assert_eq!((t.serial, t.channel), (sn(), Channel::Telemetry));
        let t = parse_topic("fleetpulse/v1/devices/OC5-000001/status").expect("valid");
        assert_eq!(t.channel, Channel::Status);
        for bad in [
            "other/x",
            "fleetpulse/v1/devices/OC5",
            "fleetpulse/v1/devices/a+b/telemetry",
            "fleetpulse/v1/devices/OC5/commands",
        ] {
            assert_eq!(
                parse_topic(bad).map(|_| ()).map_err(|r| r.reason),
                Err(RejectReason::UnsupportedTopic),
                "{bad}"
            );
        }
    }

    #[test]
    fn status_payloads_bare_and_json() {
        let s = parse_status(&sn(), b"offline", now()).expect("valid");
        assert_eq!(s.state, ConnectionState::Offline);
        let s = parse_status(&sn(), br#"{"state":"online","fw":"1.0"}"#, now()).expect("valid");
        assert_eq!(
            (s.state, s.firmware.as_deref()),
            (ConnectionState::Online, Some("1.0"))
        );
        assert!(parse_status(&sn(), b"sleepy", now()).is_err());
        let s = parse_status(
            &sn(),
            br#"{"state":"unreachable","kind":"transport","reason":"no answer within 1000 ms"}"#,
            now(),
        )
        .expect("a gateway's report");
        assert_eq!(s.state, ConnectionState::Unreachable);
    }
}
