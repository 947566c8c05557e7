//! Component lives from the store: for every device whose model has catalog components,
//! each component's events (installation at commissioning, renewals, failures) and its
//! observation window, turned into lives by [`fleetpulse_analytics`]-free rules in
//! fleetpulse_domain::lives. The rules of a life are in docs/reliability.md
//! ("Component lives and delayed entry"); this module only reads what they need:
//!
//! - **Events.** Installation: the device's `commissioned_at` (age 0 on a meter axis).
//!   Renewals: maintenance records of a kind that renews a component (`replacement`,
//!   `consumable`, declared kinds with `renews_component`) and consumables replaced by
//!   completed orders. Failures: failure events not retracted as of the read, with their
//!   component (the event's own, else the catalog's owner of its failure mode or code).
//! - **Window.** From the later of the period's start and the device's observation start
//!   (`observed_from`, else `commissioned_at`; without either, the period's start) to the
//!   period's end (the as-of time when earlier). A device's own components
//!   ([`device_components`]) are read since its observation start, or without one since
//!   it was new (meters at 0 before their first reading).
//! - **Ages.** Runtime hours by default: the event's own `runtime_hours`, else the meter
//!   then. Another meter (`ages_on = "meter:<field>"`): the meter then. Calendar: hours
//!   since 1970, so differences are hours in service. "The meter then" is interpolated
//!   between the readings around the instant (imported meter history, hourly rollups of
//!   live or back-filled telemetry, and the ages recorded on events); at the window's end
//!   it is the last reading before it (nothing at or after the end is read).

use std::collections::BTreeMap;

use fleetpulse_domain::alarm::AlarmCode;
use fleetpulse_domain::catalog::{AgesOn, Catalog, Component};
use fleetpulse_domain::history::DeviceComponent;
use fleetpulse_domain::lives::{ComponentEvent, EventKind, LifeWindow, component_lives};
use fleetpulse_domain::reliability::{ComponentLifeRecord, DataQualityIssue};
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

use crate::convert::{from_ms, sql_err};
use crate::reliability::as_of;

const HOUR_MS: f64 = 3_600_000.0;

/// A device with catalog components, as the lives read it.
struct Device {
    serial: String,
    model: String,
    commissioned_at: Option<i64>,
    observed_from: Option<i64>,
}

/// Where a time falls on a meter: the readings around it.
#[derive(Clone, Copy, Debug, Default)]
struct Around {
    before: Option<(i64, f64)>,
    after: Option<(i64, f64)>,
}

impl Around {
    fn later_before(self, other: Option<(i64, f64)>) -> Self {
        let before = match (self.before, other) {
            (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        Self { before, ..self }
    }

    fn earlier_after(self, other: Option<(i64, f64)>) -> Self {
        let after = match (self.after, other) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        Self { after, ..self }
    }

    /// The value at `t`: a reading at `t`, else linear between the readings around it,
    /// else the last one before it (a meter that has not moved since).
    fn at(self, t: i64) -> Option<f64> {
        match (self.before, self.after) {
            (Some((tb, vb)), _) if tb == t => Some(vb),
            (Some((tb, vb)), Some((ta, va))) if ta > tb && va >= vb => {
                Some(vb + (va - vb) * (t - tb) as f64 / (ta - tb) as f64)
            }
            (Some((_, vb)), _) => Some(vb),
            (None, _) => None,
        }
    }
}

/// Reads a meter's readings around instants, from every place the store keeps them.
struct MeterReader<'c> {
    conn: &'c Connection,
    /// Readings are not read at or after this instant.
    end: i64,
}

impl MeterReader<'_> {
    /// The readings of `field` of `serial` around `t`: at or before it, and (when
    /// `look_ahead`) the first after it, all before `self.end`.
    fn around(
        &self,
        serial: &str,
        field: &str,
        t: i64,
        look_ahead: bool,
    ) -> Result<Around, StoreError> {
        let one = |sql: &str, a: i64, b: i64| -> Result<Option<(i64, f64)>, StoreError> {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut s| {
                    s.query_row(params![serial, field, a, b], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(sql_err)
        };
        // an hourly rollup's last value is dated at the end of its hour: it is "at or
        // before t" when its hour ended by t, and readable when it ended by the end
        let mut around = Around::default()
            .later_before(one(
                "SELECT at, value FROM meter_history WHERE serial = ?1 AND field = ?2 AND at <= ?3 AND at < ?4 \
                 ORDER BY at DESC LIMIT 1",
                t,
                self.end,
            )?)
            .later_before(one(
                "SELECT hour + 3600000, last FROM rollups WHERE serial = ?1 AND field = ?2 AND hour <= ?3 - 3600000 \
                 AND hour <= ?4 - 3600000 ORDER BY hour DESC LIMIT 1",
                t,
                self.end,
            )?);
        if field == "runtime_hours" {
            around = around
                .later_before(one(
                    "SELECT at, runtime_hours FROM failure_events WHERE serial = ?1 AND ?2 = 'runtime_hours' \
                     AND runtime_hours IS NOT NULL AND at <= ?3 AND at < ?4 ORDER BY at DESC LIMIT 1",
                    t,
                    self.end,
                )?)
                .later_before(one(
                    "SELECT at, runtime_hours FROM maintenance_records WHERE serial = ?1 AND ?2 = 'runtime_hours' \
                     AND runtime_hours IS NOT NULL AND at <= ?3 AND at < ?4 ORDER BY at DESC LIMIT 1",
                    t,
                    self.end,
                )?);
        }
        if !look_ahead || t >= self.end - 1 {
            return Ok(around);
        }
        around = around
            .earlier_after(one(
                "SELECT at, value FROM meter_history WHERE serial = ?1 AND field = ?2 AND at > ?3 AND at < ?4 \
                 ORDER BY at LIMIT 1",
                t,
                self.end,
            )?)
            .earlier_after(one(
                "SELECT hour + 3600000, last FROM rollups WHERE serial = ?1 AND field = ?2 AND hour > ?3 - 3600000 \
                 AND hour <= ?4 - 3600000 ORDER BY hour LIMIT 1",
                t,
                self.end,
            )?);
        if field == "runtime_hours" {
            around = around
                .earlier_after(one(
                    "SELECT at, runtime_hours FROM failure_events WHERE serial = ?1 AND ?2 = 'runtime_hours' \
                     AND runtime_hours IS NOT NULL AND at > ?3 AND at < ?4 ORDER BY at LIMIT 1",
                    t,
                    self.end,
                )?)
                .earlier_after(one(
                    "SELECT at, runtime_hours FROM maintenance_records WHERE serial = ?1 AND ?2 = 'runtime_hours' \
                     AND runtime_hours IS NOT NULL AND at > ?3 AND at < ?4 ORDER BY at LIMIT 1",
                    t,
                    self.end,
                )?);
        }
        Ok(around)
    }
}

/// The age axis value of `component` at `t` (`own`: a runtime-hour value recorded with
/// the event). `interpolate`: between the readings around `t`; else the last before it.
#[allow(clippy::too_many_arguments)] // the reader, the device, the instant and its recorded age
fn axis_at(
    meters: &MeterReader<'_>,
    device: &Device,
    ages_on: &AgesOn,
    t: i64,
    own: Option<f64>,
    interpolate: bool,
) -> Result<Option<f64>, StoreError> {
    match ages_on.field() {
        None => Ok(Some(t as f64 / HOUR_MS)),
        Some("runtime_hours") if own.is_some() => Ok(own),
        Some(field) => {
            let mut around = meters.around(&device.serial, field, t, interpolate)?;
            // a commissioned device's meters read 0 at commissioning
            if let Some(c) = device.commissioned_at
                && c <= t
                && around.before.is_none_or(|b| b.0 < c)
            {
                around.before = Some((c, 0.0));
            }
            Ok(around.at(t))
        }
    }
}

/// An event of one component before it is turned into an axis value.
struct RawEvent {
    at: i64,
    runtime_hours: Option<f64>,
    kind: EventKind,
}

/// The component lives of every device in `[from, to)` (see the module doc), with the
/// findings of lives left out. `to` is the period's end or the as-of time; `known`: the
/// as-of time of corrections (a retraction or confirmation at or after it is not read).
pub(crate) fn lives(
    conn: &Connection,
    catalog: &Catalog,
    from: i64,
    to: i64,
    known: i64,
) -> Result<(Vec<ComponentLifeRecord>, Vec<DataQualityIssue>), StoreError> {
    let (lives, findings, _) = lives_of(conn, catalog, None, from, to, known, false)?;
    Ok((lives, findings))
}

/// The components of one device as of `to` (`known` as in [`lives`]): each with the part
/// fitted then, its age and its lives since the device was observed.
pub(crate) fn device_components(
    conn: &Connection,
    catalog: &Catalog,
    serial: &Serial,
    to: i64,
    known: i64,
) -> Result<Vec<DeviceComponent>, StoreError> {
    let model: Option<String> = conn
        .query_row(
            "SELECT model FROM devices WHERE serial = ?1",
            [serial.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err)?
        .flatten();
    let Some(model) = model else {
        return Ok(Vec::new());
    };
    let (lives, _, fitted) = lives_of(conn, catalog, Some(serial.as_str()), 0, to, known, true)?;
    Ok(catalog
        .components(&model)
        .iter()
        .map(|c| {
            let own: Vec<ComponentLifeRecord> = lives
                .iter()
                .filter(|l| l.component == c.id.as_str())
                .cloned()
                .collect();
            let now = fitted
                .iter()
                .find(|f| f.serial == serial.as_str() && f.component == c.id.as_str());
            DeviceComponent {
                component: c.id.as_str().to_owned(),
                name: c.name.clone(),
                ages_on: c.ages_on.to_string(),
                failure_modes: c
                    .failure_modes
                    .iter()
                    .map(|f| f.id.as_str().to_owned())
                    .collect(),
                installed_at: now.and_then(|f| f.installed_at),
                age_hours: now.and_then(|f| f.age_hours),
                lives: own,
            }
        })
        .collect())
}

/// What [`lives_of`] reads: the lives, the findings of lives left out, and the part of
/// each component fitted at the window's end.
type LivesRead = (Vec<ComponentLifeRecord>, Vec<DataQualityIssue>, Vec<Fitted>);

/// The lives of every device (or the one `only` names) in `[from, to)`. `since_new`: a
/// device without an observation start is taken as observed since it was new (its
/// meters at 0 before their first reading), not from `from`.
#[allow(clippy::too_many_arguments)] // the window, its as-of time and two switches
fn lives_of(
    conn: &Connection,
    catalog: &Catalog,
    only: Option<&str>,
    from: i64,
    to: i64,
    known: i64,
    since_new: bool,
) -> Result<LivesRead, StoreError> {
    let devices: Vec<Device> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT serial, model, commissioned_at, observed_from FROM devices \
                 WHERE model IS NOT NULL AND (?1 IS NULL OR serial = ?1) ORDER BY serial",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map([only], |r| {
                Ok(Device {
                    serial: r.get(0)?,
                    model: r.get(1)?,
                    commissioned_at: r.get(2)?,
                    observed_from: r.get(3)?,
                })
            })
            .map_err(sql_err)?;
        rows.collect::<Result<_, _>>().map_err(sql_err)?
    };
    let meters = MeterReader { conn, end: to };
    let mut current = Vec::new();
    let mut out = Vec::new();
    let mut findings = Vec::new();
    for device in &devices {
        let components = catalog.components(&device.model);
        if components.is_empty() {
            continue;
        }
        let serial = Serial::parse(&device.serial).map_err(|e| {
            StoreError::Internal(format!("devices.serial holds {:?}: {e}", device.serial))
        })?;
        let raw = device_events(conn, catalog, device, components, to, known)?;
        // failures and renewals are complete from the observation start; without one,
        // from the period's start (a report) or since the device was new (its components)
        let observed = device.observed_from.or(device.commissioned_at);
        let w0 = observed.map_or(from, |o| from.max(o));
        if w0 >= to {
            continue;
        }
        for c in components {
            let own = raw.get(c.id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            let mut events = Vec::with_capacity(own.len() + 1);
            if let Some(at) = device.commissioned_at.filter(|&at| at < to) {
                events.push(ComponentEvent {
                    at: from_ms(at),
                    age: match c.ages_on {
                        AgesOn::Calendar => Some(at as f64 / HOUR_MS),
                        _ => Some(0.0),
                    },
                    kind: EventKind::Install,
                });
            }
            for e in own {
                events.push(ComponentEvent {
                    at: from_ms(e.at),
                    age: axis_at(&meters, device, &c.ages_on, e.at, e.runtime_hours, true)?,
                    kind: e.kind.clone(),
                });
            }
            events.sort_by_key(|e| e.at);
            let window = LifeWindow {
                w0: from_ms(w0),
                w1: from_ms(to),
                age_at_w0: match axis_at(&meters, device, &c.ages_on, w0, None, true)? {
                    None if since_new && observed.is_none() && c.ages_on.field().is_some() => {
                        Some(0.0)
                    }
                    age => age,
                },
                age_at_w1: axis_at(&meters, device, &c.ages_on, to, None, false)?,
                origin: match c.ages_on {
                    AgesOn::Calendar => None,
                    _ => Some(0.0),
                },
            };
            // the part fitted at the end: fitted at the last installation, renewal or
            // failure (a failure renews its part), aged from there to the window's end
            let last = events.iter().rev().find(|e| e.at < window.w1);
            let fitted = Fitted {
                serial: device.serial.clone(),
                component: c.id.as_str().to_owned(),
                installed_at: last.map(|e| e.at),
                age_hours: match last {
                    Some(e) => window.age_at_w1.zip(e.age).map(|(end, at)| end - at),
                    None => window.age_at_w1.zip(window.origin).map(|(end, o)| end - o),
                }
                .filter(|a| *a >= 0.0),
            };
            current.push(fitted);
            let lives = component_lives(&events, &window);
            for f in lives.findings {
                findings.push(DataQualityIssue {
                    serial: serial.clone(),
                    kind: f.kind.to_owned(),
                    at: Some(f.at),
                    detail: format!("component {}: {}", c.id.as_str(), f.detail),
                });
            }
            for l in lives.lives {
                out.push(ComponentLifeRecord {
                    serial: serial.clone(),
                    component: c.id.as_str().to_owned(),
                    ages_on: c.ages_on.to_string(),
                    installed_at: l.installed_at,
                    entry: l.entry,
                    exit: l.exit,
                    failure_mode: l.failure_mode,
                });
            }
        }
    }
    Ok((out, findings, current))
}

/// The part of a component fitted at the end of a window.
struct Fitted {
    serial: String,
    component: String,
    installed_at: Option<chrono::DateTime<chrono::Utc>>,
    age_hours: Option<f64>,
}

/// The renewals and failures of each component of `device` before `to`, by component id.
fn device_events(
    conn: &Connection,
    catalog: &Catalog,
    device: &Device,
    components: &[Component],
    to: i64,
    known: i64,
) -> Result<BTreeMap<String, Vec<RawEvent>>, StoreError> {
    let mut by_component: BTreeMap<String, Vec<RawEvent>> = BTreeMap::new();
    let is_component = |id: &str| components.iter().any(|c| c.id.as_str() == id);
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT at, runtime_hours, kind, COALESCE(component, consumable) FROM maintenance_records \
                 WHERE serial = ?1 AND at < ?2 \
                 UNION ALL SELECT at, runtime_hours, 'consumable', consumable FROM consumable_replacements \
                 WHERE serial = ?1 AND at < ?2 ORDER BY 1",
            )
            .map_err(sql_err)?;
        let mut rows = stmt.query(params![device.serial, to]).map_err(sql_err)?;
        while let Some(r) = rows.next().map_err(sql_err)? {
            let kind: String = r.get(2).map_err(sql_err)?;
            let component: Option<String> = r.get(3).map_err(sql_err)?;
            let renews = catalog
                .maintenance_kind(&kind)
                .is_some_and(|k| k.renews_component);
            let Some(component) = component.filter(|c| renews && is_component(c)) else {
                continue;
            };
            by_component.entry(component).or_default().push(RawEvent {
                at: r.get(0).map_err(sql_err)?,
                runtime_hours: r.get(1).map_err(sql_err)?,
                kind: EventKind::Renewal,
            });
        }
    }
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT at, runtime_hours, component, {mode}, {code} FROM failure_events \
             WHERE serial = :serial AND at < :to AND {counted} ORDER BY at, id",
            mode = as_of::MODE,
            code = as_of::CODE,
            counted = as_of::COUNTED,
        ))
        .map_err(sql_err)?;
    let mut rows = stmt
        .query(rusqlite::named_params! {":serial": device.serial, ":to": to, ":known": known})
        .map_err(sql_err)?;
    while let Some(r) = rows.next().map_err(sql_err)? {
        let component: Option<String> = r.get(2).map_err(sql_err)?;
        let mode: Option<String> = r.get(3).map_err(sql_err)?;
        let code: Option<String> = r.get(4).map_err(sql_err)?;
        let code = code.and_then(|c| AlarmCode::parse(&c).ok());
        let Ok(Some((component, mode))) = catalog.resolve_failure(
            &device.model,
            component.as_deref(),
            mode.as_deref(),
            code.as_ref(),
        ) else {
            continue; // a device-level failure: no component's life ends
        };
        by_component
            .entry(component.as_str().to_owned())
            .or_default()
            .push(RawEvent {
                at: r.get(0).map_err(sql_err)?,
                runtime_hours: r.get(1).map_err(sql_err)?,
                kind: EventKind::Failure {
                    mode: mode.as_str().to_owned(),
                },
            });
    }
    Ok(by_component)
}
