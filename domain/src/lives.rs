//! Component lives: from one installed component's events (installation, renewals,
//! failures) and the window it was observed in, the lives a Weibull fit or an MTBF reads.
//!
//! **Rules** (docs/reliability.md, "Component lives and delayed entry"):
//! - A life starts at an installation or a renewal. A failure ends it (`failed`, with its
//!   mode); a renewal without a failure ends it as a suspension (preventive
//!   replacement); the life still running at the end of the window is a suspension at
//!   the window's end age.
//! - A failure followed within [`RENEWAL_WINDOW`] by a renewal of the same component: the
//!   new life starts at that renewal, else at the failure (renewal at failure). One
//!   incident never makes two lives.
//! - Delayed entry: a life that began before the window opened enters at its age then,
//!   `entry = age(w0) − age(start)`; a life that ended at or before `w0` is outside the
//!   window, and one with `exit ≤ entry` is dropped.
//! - No installation known: the component is original, installed at the axis origin
//!   (`origin`: meter 0 on a meter axis). Without an origin (a calendar-aged component of
//!   a device with no commissioning date), its age is unknown until its first renewal:
//!   those lives are dropped with a `component_age_unknown` finding.
//! - An event without an age (or a window end without one) leaves its lives without a
//!   usable age: dropped with a `life_without_age` finding.
//!
//! Ages are hours on the component's axis (runtime hours, another cumulative meter, or
//! calendar hours); this module does not care which. Pure: no I/O, no catalog. The
//! store builds the events and windows from what it holds; the analytics crate fits them.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

/// A failure and a renewal of the same component this close are one incident: the new
/// life starts at the renewal.
pub const RENEWAL_WINDOW: TimeDelta = TimeDelta::days(7);

/// What happened to a component.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum EventKind {
    /// Fitted new when the device was commissioned (or at a known installation).
    Install,
    /// Replaced: a maintenance kind that renews the component, a consumable change or a
    /// repair that replaced it.
    Renewal,
    /// Failed in `mode`.
    Failure {
        /// The failure mode.
        mode: String,
    },
}

/// One event of one component of one device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComponentEvent {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The component's age axis at that time (e.g. the runtime-hour meter), when known.
    pub age: Option<f64>,
    /// What happened.
    pub kind: EventKind,
}

/// The interval `[w0, w1)` one component was observed in, with its axis values there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LifeWindow {
    /// Observation start.
    pub w0: DateTime<Utc>,
    /// Observation end (exclusive): the period end, the as-of time or the retirement.
    pub w1: DateTime<Utc>,
    /// Axis value at `w0`, when known.
    pub age_at_w0: Option<f64>,
    /// Axis value at `w1` (the last known before it), when known.
    pub age_at_w1: Option<f64>,
    /// Axis value of the original installation when no [`EventKind::Install`] is given:
    /// `Some(0.0)` on a meter axis, `None` when unknown (calendar without commissioning).
    pub origin: Option<f64>,
}

/// One life of a component inside the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComponentLife {
    /// When the part was fitted (`None`: the original part, installation time unknown).
    pub installed_at: Option<DateTime<Utc>>,
    /// Age when observation began (0 unless the life began before `w0`).
    pub entry: f64,
    /// Age at the failure or suspension.
    pub exit: f64,
    /// The failure mode it failed in; `None`: a suspension.
    pub failure_mode: Option<String>,
}

impl ComponentLife {
    /// Whether this life ended in a failure of `mode` (`None`: any mode). A failure of
    /// another mode is a suspension of this one (competing modes).
    pub fn fails_in(&self, mode: Option<&str>) -> bool {
        match (&self.failure_mode, mode) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(m), Some(want)) => m == want,
        }
    }
}

/// A life left out, and why (`component_age_unknown`, `life_without_age`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LifeFinding {
    /// The finding's kind.
    pub kind: &'static str,
    /// When the life left out ended (or began, when it never ended).
    pub at: DateTime<Utc>,
    /// What was left out.
    pub detail: String,
}

/// Lives and findings of one component.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Lives {
    /// Lives in the window, oldest first.
    pub lives: Vec<ComponentLife>,
    /// Lives left out.
    pub findings: Vec<LifeFinding>,
}

/// Where a life began: its time (`None`: the original part) and axis value (`None`:
/// unknown).
#[derive(Clone, Copy)]
struct Start {
    at: Option<DateTime<Utc>>,
    age: Option<f64>,
}

/// The lives of one component of one device from its `events` (any order; only those
/// before `window.w1` are read) observed in `window`.
pub fn component_lives(events: &[ComponentEvent], window: &LifeWindow) -> Lives {
    let mut events: Vec<&ComponentEvent> = events.iter().filter(|e| e.at < window.w1).collect();
    // at one instant: the installation first, then failures, then the renewal after them
    let rank = |k: &EventKind| match k {
        EventKind::Install => 0,
        EventKind::Failure { .. } => 1,
        EventKind::Renewal => 2,
    };
    events.sort_by(|a, b| a.at.cmp(&b.at).then(rank(&a.kind).cmp(&rank(&b.kind))));

    let mut out = Lives::default();
    let mut start = Start {
        at: None,
        age: window.origin,
    };
    let mut last_failure: Option<DateTime<Utc>> = None;
    for ev in events {
        match &ev.kind {
            EventKind::Install => {
                start = Start {
                    at: Some(ev.at),
                    age: ev.age,
                };
                last_failure = None;
            }
            EventKind::Failure { mode } => {
                close(&mut out, window, start, ev.at, ev.age, Some(mode));
                // renewal at failure, unless a renewal follows within the window
                start = Start {
                    at: Some(ev.at),
                    age: ev.age,
                };
                last_failure = Some(ev.at);
            }
            EventKind::Renewal => {
                let same_incident = last_failure.is_some_and(|f| ev.at - f <= RENEWAL_WINDOW);
                if !same_incident {
                    close(&mut out, window, start, ev.at, ev.age, None);
                }
                start = Start {
                    at: Some(ev.at),
                    age: ev.age,
                };
                last_failure = None;
            }
        }
    }
    close(
        &mut out,
        window,
        start,
        window.w1,
        window.age_at_w1,
        None::<&String>,
    );
    out
}

/// Ends the life that began at `start` at time `end` and axis value `end_age`, as a
/// failure in `mode` or a suspension, and keeps it if it lies in the window.
fn close(
    out: &mut Lives,
    window: &LifeWindow,
    start: Start,
    end: DateTime<Utc>,
    end_age: Option<f64>,
    mode: Option<&String>,
) {
    if end <= window.w0 || start.at.is_some_and(|s| s >= window.w1) {
        return; // outside the window
    }
    let Some(start_age) = start.age else {
        let kind = if start.at.is_none() {
            "component_age_unknown"
        } else {
            "life_without_age"
        };
        out.findings.push(LifeFinding {
            kind,
            at: end,
            detail: "the age at which the part was fitted is unknown".to_owned(),
        });
        return;
    };
    let began_before = start.at.is_none_or(|s| s < window.w0);
    let entry_age = if began_before {
        window.age_at_w0
    } else {
        Some(start_age)
    };
    let (Some(end_age), Some(entry_age)) = (end_age, entry_age) else {
        out.findings.push(LifeFinding {
            kind: "life_without_age",
            at: end,
            detail: if end_age.is_none() {
                "no age at the end of the life".to_owned()
            } else {
                "no age at the start of the observation window".to_owned()
            },
        });
        return;
    };
    let entry = (entry_age - start_age).max(0.0);
    let exit = end_age - start_age;
    if !(exit.is_finite() && exit > entry) {
        return; // no observed time at risk (e.g. two modes failing in one incident)
    }
    out.lives.push(ComponentLife {
        installed_at: start.at,
        entry,
        exit,
        failure_mode: mode.cloned(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(day: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_704_067_200 + day * 86_400, 0).expect("valid time") // 2024-01-01 + day
    }

    fn ev(day: i64, age: f64, kind: EventKind) -> ComponentEvent {
        ComponentEvent {
            at: t(day),
            age: Some(age),
            kind,
        }
    }

    fn fail(day: i64, age: f64, mode: &str) -> ComponentEvent {
        ev(
            day,
            age,
            EventKind::Failure {
                mode: mode.to_owned(),
            },
        )
    }

    fn renew(day: i64, age: f64) -> ComponentEvent {
        ev(day, age, EventKind::Renewal)
    }

    /// Window from day `d0` to day `d1` on a meter running `rate` hours a day from 0 at
    /// day 0.
    fn window(d0: i64, d1: i64, rate: f64) -> LifeWindow {
        LifeWindow {
            w0: t(d0),
            w1: t(d1),
            age_at_w0: Some(d0 as f64 * rate),
            age_at_w1: Some(d1 as f64 * rate),
            origin: Some(0.0),
        }
    }

    fn shape(l: &Lives) -> Vec<(f64, f64, Option<&str>)> {
        l.lives
            .iter()
            .map(|l| (l.entry, l.exit, l.failure_mode.as_deref()))
            .collect()
    }

    #[test]
    fn a_renewal_after_a_failure_within_the_window_starts_the_next_life() {
        // fails at 100 h, replaced two days later at 130 h, runs to 400 h at the end
        let events = [
            ev(0, 0.0, EventKind::Install),
            fail(10, 100.0, "wear"),
            renew(12, 130.0),
        ];
        let l = component_lives(&events, &window(0, 40, 10.0));
        assert_eq!(shape(&l), [(0.0, 100.0, Some("wear")), (0.0, 270.0, None)]);
        assert_eq!(l.lives[1].installed_at, Some(t(12)));
        assert!(l.findings.is_empty());
    }

    #[test]
    fn a_failure_without_renewal_renews_at_the_failure() {
        let events = [
            ev(0, 0.0, EventKind::Install),
            fail(10, 100.0, "wear"),
            fail(25, 250.0, "wear"),
        ];
        let l = component_lives(&events, &window(0, 40, 10.0));
        assert_eq!(
            shape(&l),
            [
                (0.0, 100.0, Some("wear")),
                (0.0, 150.0, Some("wear")),
                (0.0, 150.0, None)
            ]
        );
    }

    #[test]
    fn a_late_renewal_is_a_preventive_suspension_of_the_life_begun_at_the_failure() {
        let events = [fail(10, 100.0, "wear"), renew(30, 300.0)];
        let l = component_lives(&events, &window(0, 40, 10.0));
        // original part from meter 0; the life begun at the failure is suspended 20 days
        // later (more than RENEWAL_WINDOW) by the replacement
        assert_eq!(
            shape(&l),
            [
                (0.0, 100.0, Some("wear")),
                (0.0, 200.0, None),
                (0.0, 100.0, None)
            ]
        );
    }

    #[test]
    fn a_preventive_replacement_suspends_the_life() {
        let events = [ev(0, 0.0, EventKind::Install), renew(20, 200.0)];
        let l = component_lives(&events, &window(0, 40, 10.0));
        assert_eq!(shape(&l), [(0.0, 200.0, None), (0.0, 200.0, None)]);
    }

    #[test]
    fn a_life_begun_before_the_window_enters_late_and_one_ended_before_is_outside() {
        // window opens at day 100 (meter 1000 h); a part fitted at day 50 (500 h) fails at
        // day 120 (1200 h): entry 500 h, exit 700 h. The life that ended at day 50 is out.
        let events = [
            ev(0, 0.0, EventKind::Install),
            fail(50, 500.0, "wear"),
            fail(120, 1200.0, "wear"),
        ];
        let l = component_lives(&events, &window(100, 200, 10.0));
        assert_eq!(
            shape(&l),
            [(500.0, 700.0, Some("wear")), (0.0, 800.0, None)]
        );
        // a life ending exactly at w0 is outside it too
        let events = [fail(100, 1000.0, "wear")];
        let l = component_lives(&events, &window(100, 200, 10.0));
        assert_eq!(shape(&l), [(0.0, 1000.0, None)]);
    }

    #[test]
    fn with_no_installation_known_the_part_is_original_from_meter_zero() {
        let l = component_lives(&[fail(120, 1200.0, "wear")], &window(100, 200, 10.0));
        assert_eq!(
            shape(&l),
            [(1000.0, 1200.0, Some("wear")), (0.0, 800.0, None)]
        );
        assert_eq!(l.lives[0].installed_at, None);
    }

    #[test]
    fn a_calendar_axis_without_origin_drops_the_original_life_until_the_first_renewal() {
        // calendar axis: ages are hours since 2024-01-01, no commissioning date
        let h = |day: i64| day as f64 * 24.0;
        let w = LifeWindow {
            w0: t(0),
            w1: t(100),
            age_at_w0: Some(h(0)),
            age_at_w1: Some(h(100)),
            origin: None,
        };
        let events = [fail(30, h(30), "corrosion"), renew(31, h(31))];
        let l = component_lives(&events, &w);
        assert_eq!(shape(&l), [(0.0, h(69), None)]);
        assert_eq!(l.lives[0].installed_at, Some(t(31)));
        assert_eq!(l.findings.len(), 1);
        assert_eq!(l.findings[0].kind, "component_age_unknown");
    }

    #[test]
    fn a_meter_axis_other_than_runtime_reads_its_own_ages() {
        // blower hours: 5 h a day, fitted at 250 h (day 50), failed at 600 h (day 120)
        let events = [renew(50, 250.0), fail(120, 600.0, "bearing")];
        let l = component_lives(&events, &window(100, 200, 5.0));
        assert_eq!(
            shape(&l),
            [(250.0, 350.0, Some("bearing")), (0.0, 400.0, None)]
        );
    }

    #[test]
    fn competing_modes_are_suspensions_of_each_other_and_failures_of_the_component() {
        let events = [
            ev(0, 0.0, EventKind::Install),
            fail(10, 100.0, "wear"),
            fail(25, 250.0, "seal"),
            // two modes in one incident: one life, not two
            fail(30, 300.0, "wear"),
            fail(30, 300.0, "seal"),
        ];
        let l = component_lives(&events, &window(0, 40, 10.0));
        assert_eq!(
            shape(&l),
            [
                (0.0, 100.0, Some("wear")),
                (0.0, 150.0, Some("seal")),
                (0.0, 50.0, Some("wear")),
                (0.0, 100.0, None)
            ]
        );
        let failed = |mode: Option<&str>| -> Vec<bool> {
            l.lives.iter().map(|x| x.fails_in(mode)).collect()
        };
        assert_eq!(failed(Some("wear")), [true, false, true, false]);
        assert_eq!(failed(Some("seal")), [false, true, false, false]);
        assert_eq!(failed(None), [true, true, true, false]);
    }

    #[test]
    fn an_event_without_age_drops_its_lives_with_a_finding() {
        let mut r = renew(10, 0.0);
        r.age = None;
        let events = [ev(0, 0.0, EventKind::Install), r, fail(30, 300.0, "wear")];
        let l = component_lives(&events, &window(0, 40, 10.0));
        assert_eq!(shape(&l), [(0.0, 100.0, None)]);
        let kinds: Vec<&str> = l.findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, ["life_without_age", "life_without_age"]);
    }

    #[test]
    fn events_at_or_after_the_window_end_are_not_read() {
        let events = [ev(0, 0.0, EventKind::Install), fail(40, 400.0, "wear")];
        let l = component_lives(&events, &window(0, 40, 10.0));
        assert_eq!(shape(&l), [(0.0, 400.0, None)]);
    }
}
