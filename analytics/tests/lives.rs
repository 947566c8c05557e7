//! `lives::component_lives` on the RENEWAL_TRUNCATED event history (refdata/renewal/*.csv)
//! gives exactly the lives `make_reference.py` computed from its own ground truth, and a
//! Weibull fit on them equals lifelines with `entry=`. The generator and this crate share
//! no code: the generator follows each part physically, this crate only sees the rows.

mod refdata;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fleetpulse_analytics::lives::{ComponentEvent, EventKind, LifeWindow, component_lives};
use fleetpulse_analytics::weibull::fit_lives;
use refdata::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/refdata/renewal/");

/// The data rows of a CSV file as maps column → value.
fn rows(file: &str) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(format!("{DIR}{file}")).expect("refdata CSV");
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("header")
        .split(',')
        .map(str::to_owned)
        .collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(str::to_owned))
                .collect()
        })
        .collect()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("RFC 3339 time")
        .with_timezone(&Utc)
}

fn hours(s: &str) -> f64 {
    s.parse().expect("runtime_hours")
}

#[test]
fn component_lives_of_the_event_history_are_the_generators_lives() {
    let w0 = at("2024-01-01T00:00:00Z");
    let w1 = at("2024-12-31T23:00:00Z"); // last meter reading: the end of observation
    let mut events: BTreeMap<(String, String), Vec<ComponentEvent>> = BTreeMap::new();
    let mut meter: BTreeMap<(String, DateTime<Utc>), f64> = BTreeMap::new();
    for r in rows("devices.csv") {
        for component in ["comp1", "comp2"] {
            events
                .entry((r["serial"].clone(), component.to_owned()))
                .or_default()
                .push(ComponentEvent {
                    at: at(&r["commissioned_at"]),
                    age: Some(0.0),
                    kind: EventKind::Install,
                });
        }
    }
    for r in rows("failures.csv") {
        events
            .entry((r["serial"].clone(), r["component"].clone()))
            .or_default()
            .push(ComponentEvent {
                at: at(&r["at"]),
                age: Some(hours(&r["runtime_hours"])),
                kind: EventKind::Failure {
                    mode: r["failure_mode"].clone(),
                },
            });
    }
    for r in rows("maintenance.csv") {
        assert_eq!(r["kind"], "replacement");
        events
            .entry((r["serial"].clone(), r["component"].clone()))
            .or_default()
            .push(ComponentEvent {
                at: at(&r["at"]),
                age: Some(hours(&r["runtime_hours"])),
                kind: EventKind::Renewal,
            });
    }
    for r in rows("meters.csv") {
        meter.insert(
            (r["serial"].clone(), at(&r["at"])),
            hours(&r["runtime_hours"]),
        );
    }

    let mut got = Vec::new();
    for ((serial, component), evs) in &events {
        let window = LifeWindow {
            w0,
            w1,
            age_at_w0: meter.get(&(serial.clone(), w0)).copied(),
            age_at_w1: meter.get(&(serial.clone(), w1)).copied(),
            origin: Some(0.0),
        };
        let lives = component_lives(evs, &window);
        assert!(lives.findings.is_empty(), "{serial} {component}: {lives:?}");
        for l in lives.lives {
            got.push((
                serial.clone(),
                component.clone(),
                l.entry,
                l.exit,
                l.failure_mode,
            ));
        }
    }
    assert_eq!(got.len(), RENEWAL_LIVES.len());
    for (g, want) in got.iter().zip(RENEWAL_LIVES) {
        let same = g.0 == want.0
            && g.1 == want.1
            && (g.2 - want.2).abs() <= 1e-6 * want.3
            && (g.3 - want.3).abs() <= 1e-6 * want.3
            && g.4.as_deref() == want.4;
        assert!(same, "got {g:?}, generator {want:?}");
    }

    // and the fit on them is lifelines' fit with entry=
    let comp1: Vec<_> = got
        .iter()
        .filter(|l| l.1 == "comp1")
        .map(|l| fleetpulse_analytics::weibull::Life {
            entry: l.2,
            exit: l.3,
            failed: l.4.is_some(),
        })
        .collect();
    let w = fit_lives(&comp1).expect("fit");
    assert!((w.beta - RENEWAL_COMP1.beta).abs() / RENEWAL_COMP1.beta < 1e-6);
    assert!((w.eta - RENEWAL_COMP1.eta).abs() / RENEWAL_COMP1.eta < 1e-6);
}
