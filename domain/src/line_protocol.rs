//! InfluxDB line protocol for readings: the format of the time-series sink.
//!
//! One point per reading, measurement [`MEASUREMENT`]:
//!
//! ```text
//! telemetry,serial=OC5-000001,model=OC-5,kind=oxygen_concentrator seq=12i,alarms_active=0i,filter_life_pct=80,runtime_hours=1234.5 1763900000000
//! ```
//!
//! - tags: `serial` (always), `model` and `kind` (when the registry knows the model);
//! - fields: `seq` (integer), `alarms_active` (integer, only when the reading reported its
//!   alarm set), then every numeric measurement of the reading as a float, by field name;
//! - timestamp: the device's timestamp in **milliseconds** since the Unix epoch (write
//!   with `precision=ms`).
//!
//! InfluxDB overwrites a point with the same measurement, tag set and timestamp, so a
//! re-sent point is harmless there; VictoriaMetrics keeps both unless it runs with
//! `-dedup.minScrapeInterval`.

use std::fmt::Write as _;

use crate::telemetry::Reading;

/// The measurement every reading is written to.
pub const MEASUREMENT: &str = "telemetry";

/// Appends one point for `reading` (with its trailing newline) to `out`. `model` and
/// `kind` are the registry's, not the payload's: tags must not change with what a device
/// happens to claim.
pub fn write_reading(out: &mut String, reading: &Reading, model: Option<&str>, kind: Option<&str>) {
    out.push_str(MEASUREMENT);
    push_tag(out, "serial", reading.serial.as_str());
    if let Some(model) = model {
        push_tag(out, "model", model);
    }
    if let Some(kind) = kind {
        push_tag(out, "kind", kind);
    }
    let _ = write!(out, " seq={}i", reading.seq);
    if let Some(alarms) = &reading.alarms {
        let _ = write!(out, ",alarms_active={}i", alarms.len());
    }
    for (field, value) in &reading.values {
        // The contract admits only finite numbers; a non-finite one would make the whole
        // line invalid, so it is left out rather than sent.
        if !value.is_finite() {
            continue;
        }
        out.push(',');
        push_escaped(out, field);
        // `{:?}` keeps a decimal point or exponent and round-trips the exact f64.
        let _ = write!(out, "={value:?}");
    }
    let _ = writeln!(out, " {}", reading.ts.timestamp_millis());
}

fn push_tag(out: &mut String, key: &str, value: &str) {
    if value.is_empty() {
        return; // line protocol has no empty tag values
    }
    out.push(',');
    push_escaped(out, key);
    out.push('=');
    push_escaped(out, value);
}

/// Tag keys, tag values and field keys escape commas, equals signs and spaces.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            ',' | '=' | ' ' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::{AlarmCode, Serial};

    fn reading(values: &[(&str, f64)], alarms: Option<Vec<&str>>) -> Reading {
        Reading {
            serial: Serial::parse("OC5-000001").expect("valid"),
            seq: 42,
            ts: Utc
                .timestamp_millis_opt(1_763_900_000_123)
                .single()
                .expect("valid"),
            received_at: Utc::now(),
            model: Some("claimed".into()),
            firmware: None,
            alarms: alarms.map(|a| {
                a.into_iter()
                    .map(|c| AlarmCode::parse(c).expect("valid"))
                    .collect()
            }),
            values: values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn a_reading_becomes_one_point_in_milliseconds() {
        let mut out = String::new();
        let r = reading(
            &[("runtime_hours", 1234.5), ("filter_life_pct", 80.0)],
            Some(vec!["E101"]),
        );
        write_reading(&mut out, &r, Some("OC-5"), Some("oxygen_concentrator"));
        assert_eq!(
            out,
            "telemetry,serial=OC5-000001,model=OC-5,kind=oxygen_concentrator \
             seq=42i,alarms_active=1i,filter_life_pct=80.0,runtime_hours=1234.5 1763900000123\n"
        );
    }

    #[test]
    fn unknown_model_and_unreported_alarms_are_left_out() {
        let mut out = String::new();
        write_reading(&mut out, &reading(&[("x", 1e-7)], None), None, None);
        assert_eq!(
            out,
            "telemetry,serial=OC5-000001 seq=42i,x=1e-7 1763900000123\n"
        );
    }

    #[test]
    fn special_characters_are_escaped() {
        let mut out = String::new();
        write_reading(
            &mut out,
            &reading(&[("a b", 1.0)], None),
            Some("Model 5,=x"),
            None,
        );
        assert_eq!(
            out,
            "telemetry,serial=OC5-000001,model=Model\\ 5\\,\\=x seq=42i,a\\ b=1.0 1763900000123\n"
        );
    }
}
