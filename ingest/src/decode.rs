//! One PUBLISH in, its contents out: readings, dead letters or a status update.
//!
//! [`decode`] is shared by both sources (the built-in endpoint and the external broker
//! source), so a message means the same thing whichever way it arrives. It never fails
//! and never panics: whatever cannot be used becomes a dead letter with a reason, to be
//! committed and then acked like any other message (redelivering poison would loop).

use chrono::{DateTime, Utc};
use fleetpulse_domain::store::NewDeadLetter;
use fleetpulse_domain::telemetry::{
    Channel, RejectReason, Rejection, StatusUpdate, TelemetryLimits, parse_status, parse_telemetry,
    parse_topic,
};
use fleetpulse_domain::{Reading, Serial};
use serde_json::Value;

/// Bytes of an oversized payload that its dead letter keeps: enough to see which device
/// and firmware sent it and what it was, without storing (and serving) the whole thing.
/// The dead letter's detail names the full size.
pub const OVERSIZED_KEPT_BYTES: usize = 1024;

/// The decoded contents of one PUBLISH.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    /// Valid readings (telemetry channel).
    pub readings: Vec<Reading>,
    /// Refused messages or backlog elements, each with its reason.
    pub dead_letters: Vec<NewDeadLetter>,
    /// A valid status message (status channel, or a last will).
    pub status: Option<StatusUpdate>,
    /// How a connection ended, when the source knows (the built-in endpoint: a
    /// DISCONNECT or the device's own `offline` is graceful, its last will is not).
    pub connection_end: Option<fleetpulse_domain::store::ConnectionEnd>,
    /// `true` when the topic is not one of the sender's own contract topics: the whole
    /// message became one `unsupported_topic` dead letter (acknowledged like any other;
    /// the built-in endpoint logs it).
    pub topic_refused: bool,
    /// Size of the payload as received, in bytes (counts toward a batch's byte limit).
    pub payload_bytes: usize,
}

impl Decoded {
    /// Readings, dead letters and status updates together: what a batch's count limit
    /// counts.
    pub fn entries(&self) -> usize {
        self.readings.len()
            + self.dead_letters.len()
            + usize::from(self.status.is_some())
            + usize::from(self.connection_end.is_some())
    }
}

/// Decodes one PUBLISH received at `received_at` from `client_id`.
///
/// The topic must be `fleetpulse/v1/devices/{serial}/telemetry` or `…/status` and its
/// serial must equal `client_id` (a device speaks only for itself; the external source
/// passes the topic's serial as `client_id`). Otherwise the message is refused as a
/// whole with reason `unsupported_topic` and [`Decoded::topic_refused`] is set.
pub fn decode(
    topic: &str,
    client_id: &str,
    payload: &[u8],
    received_at: DateTime<Utc>,
    limits: &TelemetryLimits,
) -> Decoded {
    let dead_letter = |rejection: Rejection, payload: Vec<u8>| NewDeadLetter {
        received_at,
        topic: topic.to_owned(),
        client_id: client_id.to_owned(),
        reason: rejection.reason,
        detail: rejection.detail,
        payload,
    };
    let mut decoded = Decoded {
        payload_bytes: payload.len(),
        ..Decoded::default()
    };
    let oversized = payload.len() > limits.max_payload_bytes;
    // What a refused whole message keeps: all of it, or the head of an oversized one.
    let kept = || payload[..kept_len(payload.len(), limits)].to_vec();
    let device_topic = match parse_topic(topic) {
        Ok(t) if t.serial.as_str() == client_id => t,
        Ok(t) => {
            let rejection = Rejection::new(
                RejectReason::UnsupportedTopic,
                format!(
                    "topic {topic:?} belongs to device {}; client {client_id:?} may publish only to its own topics",
                    t.serial
                ),
            );
            decoded.dead_letters.push(dead_letter(rejection, kept()));
            decoded.topic_refused = true;
            return decoded;
        }
        Err(rejection) => {
            decoded.dead_letters.push(dead_letter(rejection, kept()));
            decoded.topic_refused = true;
            return decoded;
        }
    };
    if oversized {
        let rejection = Rejection::new(
            RejectReason::PayloadTooLarge,
            format!(
                "payload of {} bytes; at most {} are accepted (ingest.limits.max_payload_bytes); its first {} bytes are kept",
                payload.len(),
                limits.max_payload_bytes,
                kept_len(payload.len(), limits),
            ),
        );
        decoded.dead_letters.push(dead_letter(rejection, kept()));
        return decoded;
    }
    match device_topic.channel {
        Channel::Telemetry => {
            let results = parse_telemetry(&device_topic.serial, payload, received_at, limits);
            let count = results.len();
            let mut elements: Option<Vec<Value>> = None;
            for (i, result) in results.into_iter().enumerate() {
                match result {
                    Ok(reading) => decoded.readings.push(reading),
                    Err(rejection) => {
                        let elements =
                            elements.get_or_insert_with(|| backlog_elements(payload, count));
                        let payload = match elements.get(i) {
                            Some(element) => element.to_string().into_bytes(),
                            None => payload.to_vec(),
                        };
                        decoded.dead_letters.push(dead_letter(rejection, payload));
                    }
                }
            }
        }
        Channel::Status => match parse_status(&device_topic.serial, payload, received_at) {
            Ok(status) => decoded.status = Some(status),
            Err(rejection) => decoded
                .dead_letters
                .push(dead_letter(rejection, payload.to_vec())),
        },
    }
    decoded
}

/// How much of a `len`-byte payload a dead letter keeps.
fn kept_len(len: usize, limits: &TelemetryLimits) -> usize {
    if len > limits.max_payload_bytes {
        len.min(OVERSIZED_KEPT_BYTES)
    } else {
        len
    }
}

/// The dead letter of a PUBLISH the built-in endpoint did not read whole, because its
/// packet was over `mqtt.max_packet_bytes`: `packet_bytes` is its remaining length,
/// `payload_bytes` its payload's size, `head` the payload's first bytes (at most
/// [`OVERSIZED_KEPT_BYTES`]). One `payload_too_large` dead letter, whatever the topic.
pub fn oversized_packet(
    topic: &str,
    client_id: &str,
    head: &[u8],
    packet_bytes: usize,
    payload_bytes: usize,
    max_packet_bytes: usize,
    received_at: DateTime<Utc>,
) -> Decoded {
    let detail = format!(
        "PUBLISH packet of {packet_bytes} bytes (payload {payload_bytes} bytes) is over mqtt.max_packet_bytes = {max_packet_bytes}; it was skipped unread and its first {} bytes are kept",
        head.len()
    );
    Decoded {
        dead_letters: vec![NewDeadLetter {
            received_at,
            topic: topic.to_owned(),
            client_id: client_id.to_owned(),
            reason: RejectReason::PayloadTooLarge,
            detail,
            payload: head.to_vec(),
        }],
        payload_bytes: head.len(),
        ..Decoded::default()
    }
}

/// The elements of a backlog array when the parser returned one result per element, so
/// that a dead letter keeps only its own element; empty otherwise (the whole payload is
/// kept). Only called when something was rejected, so the second parse costs nothing on
/// the good path.
fn backlog_elements(payload: &[u8], results: usize) -> Vec<Value> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Array(items)) if items.len() == results => items,
        _ => Vec::new(),
    }
}

/// The serial segment of a contract topic (`fleetpulse/v1/devices/{this}/…`), or the
/// whole topic when it has none. Used as the client id of messages from an external
/// broker, where the sender's own client id is unknown.
pub fn topic_client_id(topic: &str) -> &str {
    topic
        .strip_prefix(fleetpulse_domain::telemetry::TOPIC_PREFIX)
        .and_then(|rest| rest.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or(topic)
}

/// `true` when `topic` is one of `serial`'s own topics.
pub fn is_own_topic(serial: &Serial, topic: &str) -> bool {
    parse_topic(topic).is_ok_and(|t| &t.serial == serial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use fleetpulse_domain::ConnectionState;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    fn run(topic: &str, client: &str, payload: &str) -> Decoded {
        decode(
            topic,
            client,
            payload.as_bytes(),
            now(),
            &TelemetryLimits::default(),
        )
    }

    const TELEMETRY: &str = "fleetpulse/v1/devices/OC5-000001/telemetry";
    const STATUS: &str = "fleetpulse/v1/devices/OC5-000001/status";

    #[test]
    fn telemetry_becomes_readings() {
        let d = run(
            TELEMETRY,
            "OC5-000001",
            r#"{"seq":1,"ts":"2026-11-23T11:00:00Z","flow_lpm":2}"#,
        );
        assert_eq!(d.readings.len(), 1);
        assert_eq!(d.readings[0].seq, 1);
        assert!(d.dead_letters.is_empty() && d.status.is_none() && !d.topic_refused);
        assert_eq!(d.entries(), 1);
    }

    #[test]
    fn a_bad_backlog_element_is_dead_lettered_alone_with_its_own_json() {
        let payload = r#"[{"seq":1,"ts":"2026-11-23T11:00:00Z"},{"seq":2,"ts":"2026-11-23T11:00:00Z","flow_lpm":99}]"#;
        let d = run(TELEMETRY, "OC5-000001", payload);
        assert_eq!(d.readings.len(), 1);
        assert_eq!(d.dead_letters.len(), 1);
        let dl = &d.dead_letters[0];
        assert_eq!(dl.reason, RejectReason::OutOfRange);
        assert_eq!(dl.client_id, "OC5-000001");
        assert_eq!(dl.topic, TELEMETRY);
        let element: Value = serde_json::from_slice(&dl.payload).expect("element is JSON");
        assert_eq!(element["seq"], 2);
    }

    #[test]
    fn malformed_telemetry_is_one_dead_letter_with_the_payload_as_received() {
        let d = run(TELEMETRY, "OC5-000001", "{not json");
        assert!(d.readings.is_empty());
        assert_eq!(d.dead_letters.len(), 1);
        assert_eq!(d.dead_letters[0].reason, RejectReason::MalformedJson);
        assert_eq!(d.dead_letters[0].payload, b"{not json");
        assert_eq!(d.payload_bytes, 9);
    }

    #[test]
    fn status_becomes_a_status_update_or_a_dead_letter() {
        let d = run(STATUS, "OC5-000001", "offline");
        assert_eq!(
            d.status.as_ref().map(|s| s.state),
            Some(ConnectionState::Offline)
        );
        let d = run(STATUS, "OC5-000001", "sleepy");
        assert!(d.status.is_none());
        assert_eq!(d.dead_letters[0].reason, RejectReason::OutOfRange);
        assert!(!d.topic_refused);
    }

    #[test]
    fn another_devices_topic_is_refused_as_a_whole() {
        let d = run(
            TELEMETRY,
            "OC5-000002",
            r#"{"seq":1,"ts":"2026-11-23T11:00:00Z"}"#,
        );
        assert!(d.topic_refused);
        assert!(d.readings.is_empty());
        assert_eq!(d.dead_letters.len(), 1);
        assert_eq!(d.dead_letters[0].reason, RejectReason::UnsupportedTopic);
        assert_eq!(d.dead_letters[0].client_id, "OC5-000002");
    }

    #[test]
    fn a_topic_outside_the_contract_is_refused() {
        let d = run(
            "fleetpulse/v1/devices/OC5-000001/commands",
            "OC5-000001",
            "{}",
        );
        assert!(d.topic_refused);
        assert_eq!(d.dead_letters[0].reason, RejectReason::UnsupportedTopic);
        let d = run("some/other/topic", "OC5-000001", "{}");
        assert!(d.topic_refused);
    }

    #[test]
    fn an_oversized_payload_keeps_its_size_and_first_bytes_on_any_channel() {
        let limits = TelemetryLimits {
            max_payload_bytes: 2_000,
            ..TelemetryLimits::default()
        };
        let big = format!(r#"{{"seq":1,"pad":"{}"}}"#, "x".repeat(5_000));
        for topic in [
            TELEMETRY,
            STATUS,
            "fleetpulse/v1/devices/OC5-000002/telemetry",
        ] {
            let d = decode(topic, "OC5-000001", big.as_bytes(), now(), &limits);
            assert_eq!(d.dead_letters.len(), 1, "{topic}");
            let dl = &d.dead_letters[0];
            assert_eq!(
                dl.payload,
                &big.as_bytes()[..OVERSIZED_KEPT_BYTES],
                "{topic}"
            );
            assert!(d.readings.is_empty() && d.status.is_none());
            if !d.topic_refused {
                assert_eq!(dl.reason, RejectReason::PayloadTooLarge);
                assert!(dl.detail.contains(&big.len().to_string()), "{}", dl.detail);
            }
        }
        // At the limit: kept whole.
        let small = format!(r#"{{"seq":1,"pad":"{}"}}"#, "x".repeat(1_500));
        let d = decode(STATUS, "OC5-000001", small.as_bytes(), now(), &limits);
        assert_eq!(d.dead_letters[0].payload, small.as_bytes());
    }

    #[test]
    fn an_oversized_packet_is_one_dead_letter_with_its_sizes() {
        let d = oversized_packet(
            TELEMETRY,
            "OC5-000001",
            b"{\"seq\":1",
            300_040,
            300_000,
            266_240,
            now(),
        );
        assert_eq!(d.dead_letters.len(), 1);
        let dl = &d.dead_letters[0];
        assert_eq!(dl.reason, RejectReason::PayloadTooLarge);
        assert_eq!(dl.payload, b"{\"seq\":1");
        assert!(
            dl.detail.contains("300040")
                && dl.detail.contains("300000")
                && dl.detail.contains("266240"),
            "{}",
            dl.detail
        );
        assert_eq!(d.entries(), 1);
    }

    #[test]
    fn client_id_of_a_broker_message_is_the_topic_serial() {
        assert_eq!(topic_client_id(TELEMETRY), "OC5-000001");
        assert_eq!(topic_client_id("elsewhere"), "elsewhere");
        let serial = Serial::parse("OC5-000001").expect("valid");
        assert!(is_own_topic(&serial, STATUS));
        assert!(!is_own_topic(
            &serial,
            "fleetpulse/v1/devices/OC5-000002/status"
        ));
    }
}
