//! Failure events, one per incident, and the reliability data of a period
//! ([`fleetpulse_domain::reliability::ReliabilitySource`]).
//!
//! Lifecycle of a failure event (migration 0007):
//! - An alarm episode whose catalog entry `counts_as_failure` becomes an event with
//!   source `alarm` when it opens ([`episode_opened`]), at the episode's start and the
//!   meter's `runtime_hours` then (its age). An episode of the same code on the same
//!   device while an order for it is active, or within [`SAME_INCIDENT_HOURS`] of an
//!   earlier alarm event of that code, is the same incident: no second event.
//! - A `critical_alarm:<code>` order remembers the episode it was raised for
//!   (`orders.alarm_episode_id`, set when it is created: [`link_order_to_episode`]).
//! - When that order is completed ([`record_repair_outcome`]) with the failure confirmed,
//!   the same event is upgraded (source `repair_order`, the order id, the outcome's fault
//!   code and its failure mode; `confirmed_at`, `alarm_fault_code` and
//!   `alarm_failure_mode` keep when and what the alarm event was), not a second one
//!   inserted; completed without a confirmed
//!   failure (no fault found), the alarm event is retracted: kept with `retracted_at`
//!   and the reason, and left out of the statistics. A confirmed repair order with no
//!   alarm event behind it inserts its own event, at the completion and the meter then.
//! - Imported history ([`crate::import`]) has source `import`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use fleetpulse_domain::alarm::AlarmCode;
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::catalog::ModelSpec;
use fleetpulse_domain::dispatch::CompletionOutcome;
use fleetpulse_domain::order::{Cause, Order};
use fleetpulse_domain::reliability::{
    AlarmRecord, DataQualityIssue, DataRequest, ExposureRow, FailureRecord, FailureSource, Period,
    PopulationDevice, ReliabilityData, RepairRecord,
};
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::{OrderChange, StoreError};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Map, Value, json};

use crate::convert::{from_ms, ms, sql_err};
use crate::exposure::{GAP_THRESHOLD_HOURS, month_of};

/// An alarm of the same code on the same device this soon after an earlier alarm event
/// is the same incident (a flapping alarm, a device restarted by the patient).
pub const SAME_INCIDENT_HOURS: i64 = 24;

const HOUR_MS: i64 = 3_600_000;

const ACTIVE: &str = "status IN ('open', 'acknowledged', 'assigned', 'in_progress')";

/// Commit hook, once per alarm episode that opens: the failure event of an alarm that
/// counts as a failure (see the module doc for "same incident").
#[allow(clippy::too_many_arguments)] // the episode as the commit knows it
pub(crate) fn episode_opened(
    tx: &Transaction<'_>,
    serial: &Serial,
    model: Option<&ModelSpec>,
    code: &AlarmCode,
    episode_id: i64,
    at_ms: i64,
    runtime_hours: Option<f64>,
) -> Result<(), StoreError> {
    let Some((model, spec)) = model
        .and_then(|m| m.alarm(code).map(|a| (m, a)))
        .filter(|(_, a)| a.counts_as_failure)
    else {
        return Ok(());
    };
    let cause = Cause::critical_alarm(code);
    let active_order: Option<i64> = tx
        .prepare_cached(&format!(
            "SELECT id FROM orders WHERE serial = ?1 AND cause = ?2 AND {ACTIVE}"
        ))
        .and_then(|mut s| {
            s.query_row(params![serial.as_str(), cause.as_str()], |r| r.get(0))
                .optional()
        })
        .map_err(sql_err)?;
    let recent: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM failure_events WHERE serial = ?1 AND fault_code = ?2 AND source = 'alarm' \
             AND retracted_at IS NULL AND at >= ?3 LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    serial.as_str(),
                    code.as_str(),
                    at_ms - SAME_INCIDENT_HOURS * HOUR_MS
                ],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(sql_err)?;
    if let Some(same) = active_order
        .map(|o| ("order", o))
        .or(recent.map(|e| ("failure event", e)))
    {
        tracing::debug!(serial = %serial, code = %code, episode_id, same = ?same, "alarm episode belongs to an incident already recorded");
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO failure_events (serial, at, runtime_hours, source, fault_code, failure_mode, \
         alarm_episode_id, model, kind, updated_at) VALUES (?1, ?2, ?3, 'alarm', ?4, ?5, ?6, ?7, ?8, ?2)",
    )
    .and_then(|mut s| {
        s.execute(params![
            serial.as_str(),
            at_ms,
            runtime_hours,
            code.as_str(),
            spec.failure_mode,
            episode_id,
            model.id.as_str(),
            model.kind.as_str()
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

/// Commit hook, once per order created: a `critical_alarm:<code>` order is linked to
/// the device's open episode of that code, or to the latest one that ended within
/// [`SAME_INCIDENT_HOURS`] (a manual order raised after the alarm cleared).
pub(crate) fn link_order_to_episode(
    tx: &Transaction<'_>,
    change: &OrderChange,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let Some(code) = change.cause.as_str().strip_prefix("critical_alarm:") else {
        return Ok(());
    };
    let episode: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM alarm_episodes WHERE serial = ?1 AND code = ?2 \
             AND (ended_at IS NULL OR ended_at >= ?3) ORDER BY id DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    change.serial.as_str(),
                    code,
                    ms(now) - SAME_INCIDENT_HOURS * HOUR_MS
                ],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(sql_err)?;
    if let Some(episode) = episode {
        tx.prepare_cached("UPDATE orders SET alarm_episode_id = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![change.order_id, episode]))
            .map_err(sql_err)?;
    }
    Ok(())
}

/// The failure event of the incident an order was raised for: the event of its linked
/// episode, or else the latest alarm event of its code on the device not yet claimed by
/// an order and at most [`SAME_INCIDENT_HOURS`] older than the order.
fn incident_event(
    tx: &Transaction<'_>,
    order: &Order,
    episode: Option<i64>,
) -> Result<Option<(i64, Option<i64>)>, StoreError> {
    if let Some(ep) = episode {
        let linked = tx
            .query_row(
                "SELECT id, order_id FROM failure_events WHERE alarm_episode_id = ?1",
                [ep],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql_err)?;
        if linked.is_some() {
            return Ok(linked);
        }
    }
    let Some(code) = order.cause.as_str().strip_prefix("critical_alarm:") else {
        return Ok(None);
    };
    tx.query_row(
        "SELECT id, order_id FROM failure_events WHERE serial = ?1 AND fault_code = ?2 AND source = 'alarm' \
         AND order_id IS NULL AND at >= ?3 ORDER BY at DESC LIMIT 1",
        params![
            order.serial.as_str(),
            code,
            ms(order.created_at) - SAME_INCIDENT_HOURS * HOUR_MS
        ],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(sql_err)
}

/// Completion hook: what a repair order's outcome does to the failure events. Returns
/// the effects to record with the order's `completed` event.
pub(crate) fn record_repair_outcome(
    tx: &Transaction<'_>,
    order: &Order,
    model: Option<&ModelSpec>,
    outcome: &CompletionOutcome,
    runtime_hours: Option<f64>,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, StoreError> {
    let mut effects = Map::new();
    let episode: Option<i64> = tx
        .query_row(
            "SELECT alarm_episode_id FROM orders WHERE id = ?1",
            [order.id],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    let incident = incident_event(tx, order, episode)?;
    let fault_code = outcome.fault_code.as_ref().map(|c| c.to_string());
    let mode = outcome
        .fault_code
        .as_ref()
        .and_then(|c| model.and_then(|m| m.alarm(c)))
        .and_then(|a| a.failure_mode.clone());
    let t = ms(now);
    match (outcome.failure_confirmed, incident) {
        (true, Some((id, claimed))) if claimed.is_none_or(|o| o == order.id) => {
            // the alarm event as it was stays readable as of a time before the upgrade
            // (`prediction_data`): when, and the alarm's code and mode (the first upgrade's)
            tx.execute(
                "UPDATE failure_events SET source = 'repair_order', order_id = ?2, \
                 confirmed_at = COALESCE(confirmed_at, ?7), alarm_fault_code = COALESCE(alarm_fault_code, fault_code), \
                 alarm_failure_mode = COALESCE(alarm_failure_mode, failure_mode), \
                 fault_code = COALESCE(?3, fault_code), failure_mode = COALESCE(?4, failure_mode), \
                 runtime_hours = COALESCE(runtime_hours, ?5), notes = COALESCE(?6, notes), \
                 retracted_at = NULL, retract_reason = NULL, updated_at = ?7 WHERE id = ?1",
                params![
                    id,
                    order.id,
                    fault_code,
                    mode,
                    runtime_hours,
                    outcome.notes,
                    t
                ],
            )
            .map_err(sql_err)?;
            effects.insert("failure_event_id".into(), json!(id));
            effects.insert("failure_event".into(), json!("confirmed_alarm_event"));
        }
        (true, Some((id, _))) => {
            // a second order for an incident another order already confirmed
            effects.insert("failure_event_id".into(), json!(id));
            effects.insert("failure_event".into(), json!("already_confirmed"));
        }
        (true, None) => {
            let device: Option<(Option<String>, Option<String>)> = tx
                .query_row(
                    "SELECT model, kind FROM devices WHERE serial = ?1",
                    [order.serial.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql_err)?;
            let (dev_model, dev_kind) = device.unwrap_or_default();
            // the episode is free: an event of it would have been found above
            tx.execute(
                "INSERT INTO failure_events (serial, at, runtime_hours, source, order_id, fault_code, notes, \
                 failure_mode, alarm_episode_id, model, kind, updated_at) \
                 VALUES (?1, ?2, ?3, 'repair_order', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?2)",
                params![
                    order.serial.as_str(),
                    t,
                    runtime_hours,
                    order.id,
                    fault_code,
                    outcome.notes,
                    mode,
                    episode,
                    dev_model,
                    dev_kind
                ],
            )
            .map_err(sql_err)?;
            effects.insert("failure_event_id".into(), json!(tx.last_insert_rowid()));
        }
        (false, Some((id, None))) => {
            tx.execute(
                "UPDATE failure_events SET retracted_at = ?2, retract_reason = ?3, updated_at = ?2 WHERE id = ?1",
                params![
                    id,
                    t,
                    format!(
                        "repair order {} completed without a confirmed failure (no fault found)",
                        order.id
                    )
                ],
            )
            .map_err(sql_err)?;
            effects.insert("failure_event_retracted".into(), json!(id));
        }
        (false, _) => {}
    }
    Ok(effects)
}

/// A failure event as it was known at `:known` (the as-of time of a read; far in the
/// future for "now"): a retraction at or after it has not happened yet, and an alarm
/// event a repair order upgraded at or after it is still the alarm event, with the code
/// and mode it had then (migration 0011 keeps them in `alarm_fault_code`,
/// `alarm_failure_mode`).
pub(crate) mod as_of {
    /// Whether a repair order's upgrade happened at or after `:known`.
    macro_rules! later {
        () => {
            "(confirmed_at IS NOT NULL AND confirmed_at >= :known)"
        };
    }
    /// The event counts: not retracted as of `:known`.
    pub(crate) const COUNTED: &str = "(retracted_at IS NULL OR retracted_at >= :known)";
    /// `source` as of `:known`.
    pub(crate) const SOURCE: &str =
        concat!("CASE WHEN ", later!(), " THEN 'alarm' ELSE source END");
    /// `fault_code` as of `:known`.
    pub(crate) const CODE: &str = concat!(
        "CASE WHEN ",
        later!(),
        " THEN COALESCE(alarm_fault_code, fault_code) ELSE fault_code END"
    );
    /// `failure_mode` as of `:known`.
    pub(crate) const MODE: &str = concat!(
        "CASE WHEN ",
        later!(),
        " THEN COALESCE(alarm_failure_mode, failure_mode) ELSE failure_mode END"
    );
    /// `order_id` as of `:known`.
    pub(crate) const ORDER: &str = concat!("CASE WHEN ", later!(), " THEN NULL ELSE order_id END");
}

/// How long a device may be silent at the end of a period before it is reported.
const TRAILING_SILENCE_MS: i64 = (GAP_THRESHOLD_HOURS as i64) * HOUR_MS;

fn parse_serial(column: &str, s: &str) -> Result<Serial, StoreError> {
    Serial::parse(s).map_err(|e| StoreError::Internal(format!("{column} holds {s:?}: {e}")))
}

fn failure_source(s: &str) -> Result<FailureSource, StoreError> {
    match s {
        "repair_order" => Ok(FailureSource::RepairOrder),
        "import" => Ok(FailureSource::Import),
        "alarm" => Ok(FailureSource::Alarm),
        other => Err(StoreError::Internal(format!(
            "failure_events.source holds {other:?}"
        ))),
    }
}

/// What the reader tracks per device across its exposure rows of the period.
#[derive(Default)]
struct Meter {
    age_at_start: Option<f64>,
    age_at_end: Option<f64>,
    last_hour: Option<i64>,
}

/// The exposure rows of months `[from_month, to)` in month-major order, with each
/// serial's meter ages over them.
#[derive(Default)]
pub(crate) struct ExposurePart {
    rows: Vec<ExposureRow>,
    meters: HashMap<String, (Serial, Meter)>,
}

impl ExposurePart {
    /// `self` then `later` (the months after `self`'s): ages at the start from the first
    /// part that has the device, at the end from the last.
    pub(crate) fn then(mut self, later: ExposurePart) -> ExposurePart {
        self.rows.extend(later.rows);
        for (serial, (parsed, m)) in later.meters {
            let e = self
                .meters
                .entry(serial)
                .or_insert((parsed, Meter::default()));
            if e.1.age_at_start.is_none() {
                e.1.age_at_start = m.age_at_start;
            }
            e.1.age_at_end = m.age_at_end;
            e.1.last_hour = m.last_hour;
        }
        self
    }
}

/// A month boundary splitting the months of `[from, to)` in two halves (two readers
/// scan them at once), or `None` for a period of one month.
pub(crate) fn split_months(from: i64, to: i64) -> Option<i64> {
    let first = month_of(from);
    let mid = month_of(first + (to - first) / 2);
    (mid > first && mid < to).then_some(mid)
}

/// Reads the exposure rows of the months from `month_of(from)` up to `to`.
pub(crate) fn exposure_part(
    conn: &Connection,
    from: i64,
    to: i64,
) -> Result<ExposurePart, StoreError> {
    let first_month = month_of(from);
    let mut part = ExposurePart::default();
    let meters = &mut part.meters;
    // month-major (the primary key's order); per serial: its parsed serial (parsed once,
    // cloned into each row) and its meter
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT month, serial, hours, resets, gap_hours, baseline_value, first_value, last_hour, last_value \
                 FROM exposure_months WHERE month >= ?1 AND month < ?2 ORDER BY month, serial",
            )
            .map_err(sql_err)?;
        let mut rows = stmt.query(params![first_month, to]).map_err(sql_err)?;
        let mut month = (i64::MIN, DateTime::<Utc>::UNIX_EPOCH);
        while let Some(r) = rows.next().map_err(sql_err)? {
            let serial = r
                .get_ref(1)
                .and_then(|v| v.as_str().map_err(rusqlite::Error::from))
                .map_err(sql_err)?;
            if !meters.contains_key(serial) {
                let parsed = parse_serial("exposure_months.serial", serial)?;
                meters.insert(serial.to_owned(), (parsed, Meter::default()));
            }
            let Some((parsed, m)) = meters.get_mut(serial) else {
                continue; // inserted just above
            };
            let month_ms: i64 = r.get(0).map_err(sql_err)?;
            if month.0 != month_ms {
                month = (month_ms, from_ms(month_ms));
            }
            let baseline: Option<f64> = r.get(5).map_err(sql_err)?;
            let first_value: f64 = r.get(6).map_err(sql_err)?;
            let last_hour: i64 = r.get(7).map_err(sql_err)?;
            let last_value: f64 = r.get(8).map_err(sql_err)?;
            part.rows.push(ExposureRow {
                serial: parsed.clone(),
                month: month.1,
                hours: r.get(2).map_err(sql_err)?,
                resets: r.get(3).map_err(sql_err)?,
                gap_hours: r.get(4).map_err(sql_err)?,
            });
            if m.age_at_start.is_none() {
                m.age_at_start = Some(baseline.unwrap_or(first_value));
            }
            m.age_at_end = Some(last_value);
            m.last_hour = Some(last_hour);
        }
    }

    Ok(part)
}

/// The instants of a read: the period's start, its end (the as-of time when earlier),
/// and the as-of time of corrections (`i64::MAX`: now, every correction counts).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub from: i64,
    pub to: i64,
    pub known: i64,
    /// The end of the whole months read from the consolidated table; `[full_end, to)` is
    /// folded from the hourly rollups at read time when it is not empty.
    pub full_end: i64,
}

impl Bounds {
    pub(crate) fn of(request: &DataRequest, now: DateTime<Utc>) -> Self {
        let from = ms(request.period.from);
        let known = request.as_of.map_or(i64::MAX, ms);
        let to = ms(request.period.to).min(known);
        // The consolidated row of a month the period ends inside counts the hours after
        // the end: that month is folded up to the end at read time (unless nothing after
        // the end can have been recorded yet). A read as of a time also folds the last
        // month before a month boundary: its consolidated row shares out the meter's step
        // to its first reading after the boundary, which was not known then.
        let full_end = if to >= ms(now) {
            to
        } else if request.as_of.is_some() {
            month_of(to - 1)
        } else {
            month_of(to)
        };
        Self {
            from,
            to,
            known,
            full_end,
        }
    }

    /// Whether `[full_end, to)` is folded at read time.
    pub(crate) fn partial_month(&self) -> bool {
        self.full_end < self.to
    }
}

/// The operating hours of `[month, end)` folded from the hourly rollups of every device
/// (a period ending inside a month, or an as-of time): only hours that ended by `end`
/// are read. Findings of the fold are returned as data-quality findings.
pub(crate) fn exposure_partial(
    conn: &Connection,
    month: i64,
    end: i64,
) -> Result<(ExposurePart, Vec<DataQualityIssue>), StoreError> {
    let mut part = ExposurePart::default();
    let mut quality = Vec::new();
    let serials: Vec<String> = {
        let mut stmt = conn
            .prepare_cached("SELECT serial FROM devices ORDER BY serial")
            .map_err(sql_err)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(sql_err)?;
        rows.collect::<Result<_, _>>().map_err(sql_err)?
    };
    let mut before = conn
        .prepare_cached(
            "SELECT hour, last FROM rollups WHERE serial = ?1 AND field = 'runtime_hours' AND hour < ?2 \
             ORDER BY hour DESC LIMIT 1",
        )
        .map_err(sql_err)?;
    let mut within = conn
        .prepare_cached(
            "SELECT hour, last FROM rollups WHERE serial = ?1 AND field = 'runtime_hours' AND hour >= ?2 \
             AND hour <= ?3 - 3600000 ORDER BY hour",
        )
        .map_err(sql_err)?;
    for serial in serials {
        let samples: Vec<(i64, f64)> = within
            .query_map(params![serial, month, end], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql_err)?
            .collect::<Result<_, _>>()
            .map_err(sql_err)?;
        let Some(&(last_hour, last_value)) = samples.last() else {
            continue;
        };
        let baseline: Option<(i64, f64)> = before
            .query_row(params![serial, month], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(sql_err)?;
        let fold = crate::exposure::fold_samples(baseline, &samples, None, month, end);
        let parsed = parse_serial("devices.serial", &serial)?;
        for f in fold.findings {
            quality.push(DataQualityIssue {
                serial: parsed.clone(),
                kind: f.kind.to_owned(),
                at: Some(from_ms(f.at)),
                detail: f.detail,
            });
        }
        part.rows.push(ExposureRow {
            serial: parsed.clone(),
            month: from_ms(month),
            hours: fold.hours,
            resets: fold.resets,
            gap_hours: fold.gap_hours,
        });
        part.meters.insert(
            serial,
            (
                parsed,
                Meter {
                    age_at_start: Some(baseline.map_or(samples[0].1, |b| b.1)),
                    age_at_end: Some(last_value),
                    last_hour: Some(last_hour),
                },
            ),
        );
    }
    Ok((part, quality))
}

/// The reliability data of `request` (consolidated exposure must be folded first;
/// `exposure` holds the whole months up to `bounds.full_end` and the partial month).
pub(crate) fn reliability_data(
    conn: &Connection,
    catalog: &Catalog,
    request: DataRequest,
    now: DateTime<Utc>,
    exposure: ExposurePart,
    partial_quality: Vec<DataQualityIssue>,
) -> Result<ReliabilityData, StoreError> {
    let b = Bounds::of(&request, now);
    let (from, to, known) = (b.from, b.to, b.known);
    let first_month = month_of(from);
    let period = Period {
        from: request.period.from,
        to: from_ms(to),
    };
    let mut data = ReliabilityData {
        period: Some(period),
        as_of: request.as_of,
        ..Default::default()
    };

    let ExposurePart {
        rows: exposure,
        mut meters,
    } = exposure;
    data.exposure = exposure;

    // findings of the folds in the period
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT serial, at, kind, detail FROM exposure_findings WHERE month >= ?1 AND month < ?2 \
                 ORDER BY month, serial, at",
            )
            .map_err(sql_err)?;
        let mut rows = stmt
            .query(params![first_month, b.full_end])
            .map_err(sql_err)?;
        while let Some(r) = rows.next().map_err(sql_err)? {
            let serial: String = r.get(0).map_err(sql_err)?;
            data.quality.push(DataQualityIssue {
                serial: parse_serial("exposure_findings.serial", &serial)?,
                kind: r.get(2).map_err(sql_err)?,
                at: Some(from_ms(r.get(1).map_err(sql_err)?)),
                detail: r.get(3).map_err(sql_err)?,
            });
        }
    }
    data.quality.extend(partial_quality);

    // failures of the period as known at the as-of time
    let mut failing: HashSet<String> = HashSet::new();
    let mut models: HashMap<String, Option<String>> = HashMap::new();
    {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT id, serial, at, runtime_hours, {code}, {mode}, {source}, {order}, alarm_episode_id, component \
                 FROM failure_events WHERE at >= :from AND at < :to AND {counted} ORDER BY at, id",
                code = as_of::CODE,
                mode = as_of::MODE,
                source = as_of::SOURCE,
                order = as_of::ORDER,
                counted = as_of::COUNTED,
            ))
            .map_err(sql_err)?;
        let mut rows = stmt
            .query(rusqlite::named_params! {":from": from, ":to": to, ":known": known})
            .map_err(sql_err)?;
        while let Some(r) = rows.next().map_err(sql_err)? {
            let serial_text: String = r.get(1).map_err(sql_err)?;
            let serial = parse_serial("failure_events.serial", &serial_text)?;
            let source: String = r.get(6).map_err(sql_err)?;
            let mut rec = FailureRecord {
                id: r.get(0).map_err(sql_err)?,
                serial: serial.clone(),
                at: from_ms(r.get(2).map_err(sql_err)?),
                age_hours: r.get(3).map_err(sql_err)?,
                code: r.get(4).map_err(sql_err)?,
                failure_mode: r.get(5).map_err(sql_err)?,
                component: r.get(9).map_err(sql_err)?,
                source: failure_source(&source)?,
                order_id: r.get(7).map_err(sql_err)?,
                alarm_episode_id: r.get(8).map_err(sql_err)?,
            };
            // the component of a failure that does not name it: the catalog's owner of
            // its failure mode (or of the mode its code indicates)
            if rec.component.is_none() {
                if !models.contains_key(&serial_text) {
                    let model: Option<String> = conn
                        .query_row(
                            "SELECT model FROM devices WHERE serial = ?1",
                            [&serial_text],
                            |r| r.get(0),
                        )
                        .optional()
                        .map_err(sql_err)?
                        .flatten();
                    models.insert(serial_text.clone(), model);
                }
                if let Some(model) = models.get(&serial_text).and_then(Option::as_deref) {
                    let code = rec.code.as_deref().and_then(|c| AlarmCode::parse(c).ok());
                    if let Ok(Some((c, m))) = catalog.resolve_failure(
                        model,
                        None,
                        rec.failure_mode.as_deref(),
                        code.as_ref(),
                    ) {
                        rec.component = Some(c.as_str().to_owned());
                        rec.failure_mode = Some(m.as_str().to_owned());
                    }
                }
            }
            if rec.age_hours.is_none() {
                data.quality.push(DataQualityIssue {
                    serial,
                    kind: "failure_without_age".into(),
                    at: Some(rec.at),
                    detail: format!(
                        "failure event {} ({source}) has no runtime-hour age: counted in MTBF, left out of Weibull fits",
                        rec.id
                    ),
                });
            }
            failing.insert(serial_text);
            data.failures.push(rec);
        }
    }

    // population: devices registered before the end, or with data in the period
    {
        let mut before = conn
            .prepare_cached(
                "SELECT last_value, last_hour FROM exposure_months WHERE serial = ?1 AND month < ?2 \
                 ORDER BY month DESC LIMIT 1",
            )
            .map_err(sql_err)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT serial, model, kind, region, registered_at FROM devices ORDER BY serial",
            )
            .map_err(sql_err)?;
        let mut rows = stmt.query([]).map_err(sql_err)?;
        let silence_end = to.min(ms(now));
        while let Some(r) = rows.next().map_err(sql_err)? {
            let serial_text: String = r.get(0).map_err(sql_err)?;
            let registered_at: i64 = r.get(4).map_err(sql_err)?;
            let meter = meters.remove(&serial_text).map(|(_, m)| m);
            if registered_at >= to && meter.is_none() && !failing.contains(&serial_text) {
                continue;
            }
            let serial = parse_serial("devices.serial", &serial_text)?;
            let (age_at_start, age_at_end) = match &meter {
                Some(m) => (m.age_at_start, m.age_at_end),
                None => {
                    let last: Option<(f64, i64)> = before
                        .query_row(params![serial_text, first_month], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()
                        .map_err(sql_err)?;
                    data.quality.push(DataQualityIssue {
                        serial: serial.clone(),
                        kind: "no_meter".into(),
                        at: None,
                        detail: match last {
                            Some((v, h)) => format!(
                                "no runtime_hours in the period; the meter last read {v} h at {}",
                                from_ms(h).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            ),
                            None => {
                                "no runtime_hours reading in the period or before it: no exposure"
                                    .into()
                            }
                        },
                    });
                    (last.map(|l| l.0), last.map(|l| l.0))
                }
            };
            if let Some(last_hour) = meter.as_ref().and_then(|m| m.last_hour)
                && silence_end - last_hour > TRAILING_SILENCE_MS + HOUR_MS
            {
                data.quality.push(DataQualityIssue {
                    serial: serial.clone(),
                    kind: "gap".into(),
                    at: Some(from_ms(last_hour)),
                    detail: format!(
                        "no runtime_hours since {} ({} h before the end of the period)",
                        from_ms(last_hour).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        (silence_end - last_hour) / HOUR_MS
                    ),
                });
            }
            data.devices.push(PopulationDevice {
                serial,
                model: r.get(1).map_err(sql_err)?,
                kind: r.get(2).map_err(sql_err)?,
                region: r.get(3).map_err(sql_err)?,
                age_at_start,
                age_at_end,
            });
        }
    }

    data.repairs = repairs(conn, from, to, known)?;
    data.alarms = alarms(conn, from, to, known)?;
    if request.component_lives {
        let (lives, findings) = crate::lives::lives(conn, catalog, from, to, known)?;
        data.component_lives = lives;
        data.quality.extend(findings);
    }
    Ok(data)
}

/// Repair orders created or closed in `[from, to)`; one closed at or after `known` is
/// still active.
fn repairs(
    conn: &Connection,
    from: i64,
    to: i64,
    known: i64,
) -> Result<Vec<RepairRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, serial, cause, created_at, started_at, closed_at, status, outcome FROM orders \
             WHERE kind = 'repair' AND ((created_at >= ?1 AND created_at < ?2) OR (closed_at >= ?1 AND closed_at < ?2)) \
             ORDER BY id",
        )
        .map_err(sql_err)?;
    let mut rows = stmt.query(params![from, to]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql_err)? {
        let serial: String = r.get(1).map_err(sql_err)?;
        let closed_at: Option<i64> = r.get(5).map_err(sql_err)?;
        let closed_later = closed_at.is_some_and(|c| c >= known);
        let status: String = if closed_later {
            "open".into()
        } else {
            r.get(6).map_err(sql_err)?
        };
        let outcome: Option<String> = if closed_later {
            None
        } else {
            r.get(7).map_err(sql_err)?
        };
        let outcome: Option<Value> = outcome.and_then(|o| serde_json::from_str(&o).ok());
        let field = |k: &str| outcome.as_ref().and_then(|o| o.get(k).cloned());
        out.push(RepairRecord {
            order_id: r.get(0).map_err(sql_err)?,
            serial: parse_serial("orders.serial", &serial)?,
            cause: r.get(2).map_err(sql_err)?,
            created_at: from_ms(r.get(3).map_err(sql_err)?),
            started_at: r
                .get::<_, Option<i64>>(4)
                .map_err(sql_err)?
                .filter(|&s| s < known)
                .map(from_ms),
            closed_at: closed_at.filter(|_| !closed_later).map(from_ms),
            completed: match status.as_str() {
                "completed" => Some(true),
                "cancelled" => Some(false),
                _ => None,
            },
            failure_confirmed: field("failure_confirmed").and_then(|v| v.as_bool()),
            fault_code: field("fault_code").and_then(|v| v.as_str().map(str::to_owned)),
            labour_minutes: field("labour_minutes")
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok()),
        });
    }
    Ok(out)
}

/// Alarm episodes that started in `[from, to)`; one that ended at or after `known` has no
/// duration yet.
fn alarms(
    conn: &Connection,
    from: i64,
    to: i64,
    known: i64,
) -> Result<Vec<AlarmRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT serial, code, severity, started_at, CASE WHEN ended_at IS NULL OR ended_at >= ?3 \
             THEN NULL ELSE duration_s END FROM alarm_episodes \
             WHERE started_at >= ?1 AND started_at < ?2 ORDER BY started_at, id",
        )
        .map_err(sql_err)?;
    let mut rows = stmt.query(params![from, to, known]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql_err)? {
        let serial: String = r.get(0).map_err(sql_err)?;
        out.push(AlarmRecord {
            serial: parse_serial("alarm_episodes.serial", &serial)?,
            code: r.get(1).map_err(sql_err)?,
            severity: r.get(2).map_err(sql_err)?,
            started_at: from_ms(r.get(3).map_err(sql_err)?),
            duration_s: r.get(4).map_err(sql_err)?,
        });
    }
    Ok(out)
}
