//! Alarm codes, their severity and category, and alarm episodes.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::device::string_enum;
use crate::serial::Serial;

/// An alarm or fault code as the device reports it, e.g. `E101`: 1 to 32 characters of
/// `A-Z 0-9 - _ .` (upper case; parsing upper-cases the input).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct AlarmCode(String);

/// Why a string is not an alarm code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alarm code {0:?} is not 1 to 32 characters of A-Z, 0-9, '-', '_' or '.'")]
pub struct AlarmCodeError(pub String);

impl AlarmCode {
    pub fn parse(s: &str) -> Result<Self, AlarmCodeError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(Self(s.to_ascii_uppercase()))
        } else {
            Err(AlarmCodeError(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AlarmCode {
    type Error = AlarmCodeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        AlarmCode::parse(&s)
    }
}

impl From<AlarmCode> for String {
    fn from(c: AlarmCode) -> Self {
        c.0
    }
}

impl fmt::Display for AlarmCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_enum!(
    /// How serious an alarm is. Only `critical` alarms raise repair orders at once.
    Severity {
        Info => "info",
        Warning => "warning",
        Critical => "critical",
    }
);

string_enum!(
    /// What part of the device an alarm concerns.
    Category {
        Hardware => "hardware",
        Software => "software",
        Power => "power",
        Sensor => "sensor",
        Operation => "operation",
        Consumable => "consumable",
    }
);

/// An alarm code raised and later cleared by a device. `ended_at` is `None` while the
/// alarm is still active. Times are the device's timestamps. An imported episode
/// (`fleetpulse import alarms`) has always ended, and has no sequence numbers
/// (`started_seq` 0, `ended_seq` `None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlarmEpisode {
    pub id: i64,
    pub serial: Serial,
    pub code: AlarmCode,
    /// Severity from the catalog at the time the episode opened (`None`: code not in the
    /// catalog for this model).
    pub severity: Option<Severity>,
    pub started_at: DateTime<Utc>,
    pub started_seq: u64,
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_seq: Option<u64>,
    /// Seconds between start and end, once ended.
    pub duration_s: Option<f64>,
    /// Device runtime hours when the episode opened, if the device reported them.
    pub runtime_hours_at_start: Option<f64>,
    /// Loaded by a history import (`true`), not reported live by the device.
    #[serde(default)]
    pub imported: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_upper_cased_and_checked() {
        assert_eq!(
            AlarmCode::parse("e101").map(|c| c.to_string()),
            Ok("E101".into())
        );
        assert!(AlarmCode::parse("").is_err());
        assert!(AlarmCode::parse("E 1").is_err());
        assert!(AlarmCode::parse(&"A".repeat(33)).is_err());
    }
}
