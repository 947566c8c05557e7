//! Silent devices: a device at a customer that stopped reporting, told apart from one
//! that was switched off normally.
//!
//! A device is **silent** at `as_of` when it is `at_customer`, has reported before, its
//! last report is at least `silent_after` plus its habitual off-time old, and its last
//! connection did not end gracefully after that report (no MQTT DISCONNECT, no `offline`
//! of its own: the connection was lost, or is still open but quiet). The habitual
//! off-time is the longest run of days without any report between its reporting days in
//! the history (a device used only on weekdays is quiet for two days every week), at
//! most [`MAX_HABITUAL_GAP_DAYS`]. A device switched off normally raises nothing.
//!
//! [`SilentDevices`] implements [`Forecaster`] so the analytics worker runs it like any
//! predictor; it trains nothing.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::prediction::{
    DeviceHistory, Forecaster, Prediction, PredictionData, PredictionKind, TrainedModel,
};
use fleetpulse_domain::{ConnectionState, LifecycleStatus, Policy};
use serde_json::json;

/// Model version of the silent-device detector.
pub const SILENT_MODEL_VERSION: &str = "silent-v1";

/// Longest habitual off-time that delays the detection.
pub const MAX_HABITUAL_GAP_DAYS: i64 = 7;

/// The detector, with the policy's `silent_after`.
#[derive(Clone, Debug)]
pub struct SilentDevices {
    policy: Arc<Policy>,
}

impl SilentDevices {
    pub fn new(policy: Arc<Policy>) -> Self {
        Self { policy }
    }
}

impl Forecaster for SilentDevices {
    fn forecast(&self, data: &PredictionData, _models: &[TrainedModel]) -> Vec<Prediction> {
        detect(data, self.policy.prediction.silent_after.0)
    }

    fn train(&self, _data: &PredictionData, _current: &[TrainedModel]) -> Vec<TrainedModel> {
        Vec::new()
    }
}

/// Every silent device of `data` (see the module docs), one prediction each (kind
/// `silent`, target `connectivity`, `due_at` = silent since).
pub fn detect(data: &PredictionData, silent_after: Duration) -> Vec<Prediction> {
    let Some(as_of) = data.as_of else {
        return Vec::new();
    };
    data.devices
        .iter()
        .filter_map(|d| silent(d, as_of, silent_after))
        .collect()
}

fn silent(d: &DeviceHistory, as_of: DateTime<Utc>, silent_after: Duration) -> Option<Prediction> {
    if d.status != LifecycleStatus::AtCustomer {
        return None;
    }
    let last_seen = d.last_seen_at?;
    if let Some(end) = d.last_disconnect
        && end.graceful
        && end.at >= last_seen
    {
        return None; // switched off normally
    }
    let habitual = habitual_gap_days(d);
    let quiet = as_of - last_seen;
    if quiet < silent_after + Duration::days(habitual) {
        return None;
    }
    Some(Prediction {
        serial: d.serial.clone(),
        kind: PredictionKind::Silent,
        target: "connectivity".into(),
        as_of,
        due_at: Some(last_seen),
        due_low: None,
        due_high: None,
        probability: None,
        horizon_days: None,
        threshold: None,
        model_version: SILENT_MODEL_VERSION.into(),
        top_features: Vec::new(),
        evidence: json!({
            "rule": "silent_device",
            "last_seen_at": last_seen,
            "silent_hours": quiet.num_minutes() as f64 / 60.0,
            "connection": d.connection,
            "connection_lost": d.last_disconnect.is_some_and(|e| !e.graceful) || d.connection != ConnectionState::Offline,
            "last_disconnect": d.last_disconnect,
            "habitual_gap_days": habitual,
            "silent_after_hours": silent_after.num_minutes() as f64 / 60.0,
        }),
    })
}

/// The longest run of days without a report between two reporting days.
fn habitual_gap_days(d: &DeviceHistory) -> i64 {
    let mut days: Vec<DateTime<Utc>> = d
        .daily
        .values()
        .flat_map(|series| series.iter().filter(|f| f.count > 0).map(|f| f.day))
        .collect();
    days.sort();
    days.dedup();
    days.windows(2)
        .map(|w| (w[1] - w[0]).num_days() - 1)
        .max()
        .unwrap_or(0)
        .clamp(0, MAX_HABITUAL_GAP_DAYS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_domain::prediction::{Disconnect, FieldDay};
    use fleetpulse_domain::{Criticality, Serial};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn device(last_seen: &str, end: Option<(&str, bool)>) -> DeviceHistory {
        DeviceHistory {
            serial: Serial::parse("OC5-9").expect("serial"),
            model: Some("OC-5A".into()),
            kind: None,
            region: None,
            status: LifecycleStatus::AtCustomer,
            criticality: Criticality::High,
            registered_at: t("2030-01-01T00:00:00Z"),
            commissioned_at: None,
            connection: ConnectionState::Offline,
            last_seen_at: Some(t(last_seen)),
            last_disconnect: end.map(|(at, graceful)| Disconnect {
                at: t(at),
                graceful,
            }),
            daily: Default::default(),
            recent_hourly: Default::default(),
            alarms: Vec::new(),
            failures: Vec::new(),
            replacements: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    fn run(d: DeviceHistory, as_of: &str) -> Vec<Prediction> {
        detect(
            &PredictionData {
                as_of: Some(t(as_of)),
                devices: vec![d],
                ..Default::default()
            },
            Duration::hours(24),
        )
    }

    #[test]
    fn a_lost_connection_silent_past_the_delay_is_silent() {
        let d = device(
            "2030-03-01T10:00:00Z",
            Some(("2030-03-01T10:01:00Z", false)),
        );
        assert!(
            run(d.clone(), "2030-03-02T09:00:00Z").is_empty(),
            "23 h: not yet"
        );
        let p = run(d, "2030-03-02T11:00:00Z");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].due_at, Some(t("2030-03-01T10:00:00Z")));
        assert_eq!(p[0].kind, PredictionKind::Silent);
    }

    #[test]
    fn a_device_switched_off_normally_is_not_silent() {
        let d = device("2030-03-01T10:00:00Z", Some(("2030-03-01T10:01:00Z", true)));
        assert!(run(d, "2030-03-09T00:00:00Z").is_empty());
        // a goodbye before its last report is an older connection's
        let d = device("2030-03-01T10:00:00Z", Some(("2030-02-27T10:00:00Z", true)));
        assert_eq!(run(d, "2030-03-03T00:00:00Z").len(), 1);
    }

    #[test]
    fn a_habitual_off_time_delays_the_detection_and_other_statuses_never_count() {
        let mut d = device("2030-03-01T10:00:00Z", None);
        let day = |s: &str| FieldDay {
            day: t(s),
            count: 5,
            mean: 1.0,
            min: 1.0,
            max: 1.0,
            last: 1.0,
        };
        // reports on the 20th and the 23rd: two quiet days are its habit
        d.daily.insert(
            "runtime_hours".into(),
            vec![day("2030-02-20T00:00:00Z"), day("2030-02-23T00:00:00Z")],
        );
        assert!(run(d.clone(), "2030-03-03T00:00:00Z").is_empty());
        assert_eq!(run(d.clone(), "2030-03-04T11:00:00Z").len(), 1);
        d.status = LifecycleStatus::InStock;
        assert!(run(d, "2030-03-09T00:00:00Z").is_empty());
    }
}
