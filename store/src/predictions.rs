//! Predictions on SQLite (migration 0009): what the predictors read
//! ([`prediction_data`]), the latest prediction per (serial, kind, target) and the run
//! history, trained models, and the orders predictions raise — planned by a pure
//! [`PredictionPlanner`] and applied here in the transaction that stores the run.
//!
//! Reading for thousands of devices: one pass over the device table, then per device
//! one range seek on the rollups' primary key `(serial, hour, field)` for the history
//! window, folded into days in memory; alarm episodes, failures, replacements and
//! prediction outcomes are each read in one query ordered by serial and grouped. All of
//! it inside one read transaction, so the data is one consistent snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::device::{ConnectionState, LifecycleStatus};
use fleetpulse_domain::order::{Cause, OrderIntent, OrderStatus, OrderTask};
use fleetpulse_domain::prediction::{
    AlarmSpan, DeviceHistory, Disconnect, FailureLabel, FieldDay, HourPoint, ModelReport,
    Prediction, PredictionData, PredictionOutcome, Replacement, TrainedModel,
};
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::{
    ActiveOrder, HeldOrder, Page, PlanAction, PlanDevice, PlanInput, PlannedOrder,
    PredictionPlanner, PredictionQuery, PredictionRun, RunReport, StoreError, StoredPrediction,
    StormCounts,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use serde_json::json;

use crate::convert::{from_ms, json_err, ms, parse_col, sql_err};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// Actor of the order changes predictions make.
pub(crate) const ACTOR: &str = "predictions";

fn serial_of(s: &str, what: &str) -> Result<Serial, StoreError> {
    Serial::parse(s).map_err(|e| StoreError::Internal(format!("{what}: {e}")))
}

/// See [`fleetpulse_domain::store::PredictionStore::prediction_data`].
pub(crate) fn prediction_data(
    conn: &Connection,
    catalog: &Catalog,
    as_of: DateTime<Utc>,
    history_days: u32,
    recent_days: u32,
) -> Result<PredictionData, StoreError> {
    conn.execute_batch("BEGIN").map_err(sql_err)?;
    let result = read_all(conn, catalog, as_of, history_days, recent_days);
    let _ = conn.execute_batch("COMMIT");
    result
}

/// Reads everything known before `as_of` (see the module doc for the rules, one comment
/// each below). Nothing dated at or after `as_of` changes the result: the as-of test
/// (`store/tests/as_of.rs`) compares two stores that differ only after it.
fn read_all(
    conn: &Connection,
    catalog: &Catalog,
    as_of: DateTime<Utc>,
    history_days: u32,
    recent_days: u32,
) -> Result<PredictionData, StoreError> {
    let end = ms(as_of);
    // whole UTC days: the first day of the history starts at midnight
    let from = (end - i64::from(history_days) * DAY_MS).div_euclid(DAY_MS) * DAY_MS;
    let recent_from = end - i64::from(recent_days) * DAY_MS;
    let (mut devices, stale) = read_devices(conn, end)?;
    let index: HashMap<String, usize> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.serial.to_string(), i))
        .collect();

    // Rule (rollups): an hour bucket [h, h + 1 h) is read only when it ended by `as_of`;
    // the bucket of the hour containing `as_of` folds readings from after it.
    let mut rollups = conn
        .prepare_cached(
            "SELECT hour, field, count, sum, min, max, last FROM rollups \
             WHERE serial = ?1 AND hour >= ?2 AND hour <= ?3 ORDER BY hour",
        )
        .map_err(sql_err)?;
    for d in &mut devices {
        let mut rows = rollups
            .query(params![d.serial.as_str(), from, end - HOUR_MS])
            .map_err(sql_err)?;
        let mut last_hour: Option<i64> = None;
        while let Some(r) = rows.next().map_err(sql_err)? {
            let hour: i64 = r.get(0).map_err(sql_err)?;
            last_hour = Some(hour);
            // the field name is borrowed from the row; a String only for a new series
            let field = r
                .get_ref(1)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(sql_err)?;
            let count: i64 = r.get(2).map_err(sql_err)?;
            let (sum, min, max, last): (f64, f64, f64, f64) = (
                r.get(3).map_err(sql_err)?,
                r.get(4).map_err(sql_err)?,
                r.get(5).map_err(sql_err)?,
                r.get(6).map_err(sql_err)?,
            );
            let day = hour.div_euclid(DAY_MS) * DAY_MS;
            if !d.daily.contains_key(field) {
                d.daily.insert(field.to_owned(), Vec::new());
            }
            let series = d.daily.get_mut(field).expect("inserted above");
            match series.last_mut() {
                Some(f) if crate::convert::ms(f.day) == day => {
                    // mean carried as a sum until the day is complete (fixed below)
                    f.count += u32::try_from(count).unwrap_or(0);
                    f.mean += sum;
                    f.min = f.min.min(min);
                    f.max = f.max.max(max);
                    f.last = last;
                }
                _ => series.push(FieldDay {
                    day: from_ms(day),
                    count: u32::try_from(count).unwrap_or(0),
                    mean: sum,
                    min,
                    max,
                    last,
                }),
            }
            if hour >= recent_from {
                if !d.recent_hourly.contains_key(field) {
                    d.recent_hourly.insert(field.to_owned(), Vec::new());
                }
                let points = d.recent_hourly.get_mut(field).expect("inserted above");
                points.push(HourPoint {
                    hour: from_ms(hour),
                    last,
                });
            }
        }
        for series in d.daily.values_mut() {
            for f in series {
                f.mean /= f64::from(f.count.max(1));
            }
        }
        // last seen: the latest reading before as_of, at least the start of the latest
        // hour read (history imported without raw readings)
        let reading: Option<i64> = conn
            .prepare_cached("SELECT MAX(ts) FROM readings WHERE serial = ?1 AND ts < ?2")
            .and_then(|mut s| s.query_row(params![d.serial.as_str(), end], |r| r.get(0)))
            .map_err(sql_err)?;
        let seen = [d.last_seen_at.map(ms), reading, last_hour]
            .into_iter()
            .flatten()
            .max();
        d.last_seen_at = seen.map(from_ms);
    }
    for (d, _) in devices.iter_mut().zip(&stale).filter(|(_, s)| **s) {
        settle_connection(d);
    }

    let mut by_serial =
        |sql: &str,
         args: &[&dyn rusqlite::ToSql],
         f: &mut dyn FnMut(&mut DeviceHistory, &rusqlite::Row<'_>) -> Result<(), StoreError>|
         -> Result<(), StoreError> {
            let mut stmt = conn.prepare_cached(sql).map_err(sql_err)?;
            let mut rows = stmt.query(args).map_err(sql_err)?;
            while let Some(r) = rows.next().map_err(sql_err)? {
                let serial: String = r.get(0).map_err(sql_err)?;
                if let Some(&i) = index.get(&serial) {
                    f(&mut devices[i], r)?;
                }
            }
            Ok(())
        };

    // Rule (alarm episodes): an episode started before as_of; one that ended at or after
    // it was still active then.
    by_serial(
        "SELECT serial, code, started_at, ended_at, runtime_hours_at_start FROM alarm_episodes \
         WHERE started_at < ?1 AND (ended_at IS NULL OR ended_at >= ?2) ORDER BY serial, started_at, id",
        &[&end, &from],
        &mut |d, r| {
            let ended: Option<i64> = r.get(3).map_err(sql_err)?;
            d.alarms.push(AlarmSpan {
                code: r.get(1).map_err(sql_err)?,
                started_at: from_ms(r.get(2).map_err(sql_err)?),
                ended_at: ended.filter(|&e| e < end).map(from_ms),
                runtime_hours_at_start: r.get(4).map_err(sql_err)?,
            });
            Ok(())
        },
    )?;

    // Rule (failure events): an event dated before as_of (a repair order's own event is
    // dated at its completion). A retraction at or after as_of had not happened: the
    // event counts. An alarm event a repair order confirmed at or after as_of is the alarm
    // event it was then: source `alarm`, the alarm's code and mode, the meter at the
    // episode's start (the upgrade fills a missing meter from the completion). Events
    // upgraded before `confirmed_at` existed (migration 0011) are told by their order's
    // completion after the event and their episode's code.
    by_serial(
        "SELECT f.serial, f.at, f.runtime_hours, f.failure_mode, f.fault_code, f.source, f.retracted_at, \
         COALESCE(f.confirmed_at, CASE WHEN f.source = 'repair_order' AND e.id IS NOT NULL AND o.closed_at > f.at \
         THEN o.closed_at END), COALESCE(f.alarm_fault_code, e.code), f.alarm_failure_mode, e.runtime_hours_at_start, \
         f.component FROM failure_events f LEFT JOIN alarm_episodes e ON e.id = f.alarm_episode_id \
         LEFT JOIN orders o ON o.id = f.order_id WHERE f.at < ?1 ORDER BY f.serial, f.at, f.id",
        &[&end],
        &mut |d, r| {
            let confirmed_later = r
                .get::<_, Option<i64>>(7)
                .map_err(sql_err)?
                .is_some_and(|c| c >= end);
            let (code, mode, source, hours): (Option<String>, Option<String>, String, Option<f64>) =
                if confirmed_later {
                    (
                        r.get(8).map_err(sql_err)?,
                        r.get(9).map_err(sql_err)?,
                        "alarm".to_owned(),
                        r.get(10).map_err(sql_err)?,
                    )
                } else {
                    (
                        r.get(4).map_err(sql_err)?,
                        r.get(3).map_err(sql_err)?,
                        r.get(5).map_err(sql_err)?,
                        r.get(2).map_err(sql_err)?,
                    )
                };
            let model = d.model.as_deref();
            // the catalog knows the mode of an alarm code where the event did not say it
            let mode = mode.or_else(|| {
                let model = catalog.model(model?)?;
                let code = fleetpulse_domain::AlarmCode::parse(code.as_deref()?).ok()?;
                model.alarm(&code)?.failure_mode.clone()
            });
            let retracted = r
                .get::<_, Option<i64>>(6)
                .map_err(sql_err)?
                .is_some_and(|t| t < end);
            let at = from_ms(r.get(1).map_err(sql_err)?);
            // a repair that confirmed a failure replaced the failed part: its component
            if source == "repair_order"
                && !retracted
                && let Some(part) = &mode
            {
                let component: Option<String> = r.get(11).map_err(sql_err)?;
                let component = component.or_else(|| {
                    catalog
                        .failure_mode(model?, part)
                        .map(|(c, _)| c.id.to_string())
                });
                d.replacements.push(Replacement {
                    part: part.clone(),
                    at,
                    runtime_hours: hours,
                    component,
                });
            }
            d.failures.push(FailureLabel {
                at,
                runtime_hours: hours,
                failure_mode: mode,
                code,
                source,
                retracted,
            });
            Ok(())
        },
    )?;

    // Rule (replacements): those dated before as_of. A maintenance record of a kind that
    // renews a component names it (every failure mode of the component starts again); a
    // consumable is the component of the same id.
    by_serial(
        "SELECT serial, consumable, at, runtime_hours, 'consumable', consumable FROM consumable_replacements \
         WHERE at < ?1 UNION ALL SELECT serial, consumable, at, runtime_hours, kind, component \
         FROM maintenance_records WHERE at < ?1 ORDER BY 1, 3",
        &[&end],
        &mut |d, r| {
            let consumable: Option<String> = r.get(1).map_err(sql_err)?;
            let kind: String = r.get(4).map_err(sql_err)?;
            let component: Option<String> = r.get(5).map_err(sql_err)?;
            let renewed = component.filter(|_| {
                catalog
                    .maintenance_kind(&kind)
                    .is_some_and(|k| k.renews_component)
            });
            let part = if kind == "service" {
                kind
            } else {
                renewed.clone().or(consumable).unwrap_or(kind)
            };
            d.replacements.push(Replacement {
                part,
                at: from_ms(r.get(2).map_err(sql_err)?),
                runtime_hours: r.get(3).map_err(sql_err)?,
                component: renewed,
            });
            Ok(())
        },
    )?;

    // Rule (prediction outcomes): orders raised before as_of; one closed at or after it
    // was still open then (no closing time, no outcome).
    by_serial(
        "SELECT serial, id, cause, created_at, closed_at, json_extract(outcome, '$.failure_confirmed'), \
         json_extract(outcome, '$.fault_code'), json_extract(evidence, '$.model_version'), status FROM orders \
         WHERE created_at < ?1 AND (origin = 'prediction' OR json_extract(evidence, '$.rule') = 'prediction') \
         ORDER BY serial, id",
        &[&end],
        &mut |d, r| {
            let closed_at = r
                .get::<_, Option<i64>>(4)
                .map_err(sql_err)?
                .filter(|&c| c < end);
            let status: OrderStatus =
                parse_col("orders.status", &r.get::<_, String>(8).map_err(sql_err)?)?;
            let confirmed: Option<i64> = r.get(5).map_err(sql_err)?;
            let fault_code: Option<String> = r.get(6).map_err(sql_err)?;
            let closed = closed_at.is_some();
            d.outcomes.push(PredictionOutcome {
                order_id: r.get(1).map_err(sql_err)?,
                cause: r.get(2).map_err(sql_err)?,
                raised_at: from_ms(r.get(3).map_err(sql_err)?),
                closed_at: closed_at.map(from_ms),
                failure_confirmed: (closed && status == OrderStatus::Completed)
                    .then_some(confirmed.map(|c| c != 0))
                    .flatten(),
                fault_code: fault_code.filter(|_| closed),
                model_version: r.get(7).map_err(sql_err)?,
            });
            Ok(())
        },
    )?;
    for d in &mut devices {
        d.replacements.sort_by_key(|r| r.at);
    }
    Ok(PredictionData {
        as_of: Some(as_of),
        history_days,
        recent_days,
        devices,
    })
}

/// The connection as of the data: the registry keeps only the latest state and the
/// latest disconnect. Where that state is dated at or after as_of (a reading, status or
/// disconnect since), it is derived from what is known before: offline after a
/// disconnect not followed by a report, online once the device reported, else unknown.
fn settle_connection(d: &mut DeviceHistory) {
    d.connection = match (d.last_seen_at, d.last_disconnect) {
        (None, Some(_)) => ConnectionState::Offline,
        (Some(seen), Some(end)) if end.at >= seen => ConnectionState::Offline,
        (Some(_), _) => ConnectionState::Online,
        (None, None) => ConnectionState::Unknown,
    };
}

/// Rule (devices): the devices in service before as_of: commissioned (registered, when
/// the commissioning is not known) before it, and not retired then. Their lifecycle
/// status is the one they had at as_of (`device_status_history`); one registered at or
/// after as_of reads as registered at its commissioning; a disconnect at or after as_of
/// is left out, and so is a last-seen time (the rollup pass sets it from the readings
/// before as_of).
fn read_devices(
    conn: &Connection,
    end: i64,
) -> Result<(Vec<DeviceHistory>, Vec<bool>), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT serial, model, kind, region, status, criticality, registered_at, connection, last_seen_at, \
             disconnected_at, disconnect_graceful, commissioned_at, \
             (SELECT to_status FROM device_status_history h WHERE h.serial = d.serial AND h.at < ?1 \
              ORDER BY h.at DESC, h.id DESC LIMIT 1), \
             (SELECT from_status FROM device_status_history h WHERE h.serial = d.serial AND h.at >= ?1 \
              ORDER BY h.at, h.id LIMIT 1) \
             FROM devices d WHERE COALESCE(commissioned_at, registered_at) < ?1 ORDER BY serial",
        )
        .map_err(sql_err)?;
    let mut rows = stmt.query([end]).map_err(sql_err)?;
    let (mut out, mut stale) = (Vec::new(), Vec::new());
    while let Some(r) = rows.next().map_err(sql_err)? {
        let text = |i: usize| r.get::<_, String>(i).map_err(sql_err);
        // the status then: set by the last change before as_of, else left by the first
        // change after it, else the current one
        let before: Option<String> = r.get(12).map_err(sql_err)?;
        let after: Option<String> = r.get(13).map_err(sql_err)?;
        let status: LifecycleStatus = match before.or(after) {
            Some(s) => parse_col("device_status_history.status", &s)?,
            None => parse_col("devices.status", &text(4)?)?,
        };
        if status == LifecycleStatus::Retired {
            continue;
        }
        let seen: Option<i64> = r.get(8).map_err(sql_err)?;
        let disconnected: Option<i64> = r.get(9).map_err(sql_err)?;
        let graceful: Option<bool> = r.get(10).map_err(sql_err)?;
        stale.push(seen.is_some_and(|t| t >= end) || disconnected.is_some_and(|t| t >= end));
        // registered at or after as_of: back-filled history of a device commissioned
        // before it, which as of then is known from its commissioning
        let commissioned: Option<i64> = r.get(11).map_err(sql_err)?;
        let registered: i64 = r.get(6).map_err(sql_err)?;
        let registered = match commissioned {
            Some(c) if registered >= end => c,
            _ => registered,
        };
        out.push(DeviceHistory {
            serial: serial_of(&text(0)?, "devices.serial")?,
            model: r.get(1).map_err(sql_err)?,
            kind: r.get(2).map_err(sql_err)?,
            region: r.get(3).map_err(sql_err)?,
            status,
            criticality: parse_col("devices.criticality", &text(5)?)?,
            registered_at: from_ms(registered),
            commissioned_at: commissioned.map(from_ms),
            connection: parse_col("devices.connection", &text(7)?)?,
            last_seen_at: seen.filter(|&t| t < end).map(from_ms),
            last_disconnect: disconnected.filter(|&t| t < end).map(|at| Disconnect {
                at: from_ms(at),
                graceful: graceful.unwrap_or(false),
            }),
            daily: BTreeMap::new(),
            recent_hourly: BTreeMap::new(),
            alarms: Vec::new(),
            failures: Vec::new(),
            replacements: Vec::new(),
            outcomes: Vec::new(),
        });
    }
    Ok((out, stale))
}

// ---- applying a run -------------------------------------------------------------------

fn plan_device(tx: &Transaction<'_>, serial: &Serial) -> Result<Option<PlanDevice>, StoreError> {
    let row = tx
        .prepare_cached("SELECT model, criticality, status, region FROM devices WHERE serial = ?1")
        .and_then(|mut s| {
            s.query_row([serial.as_str()], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()
        })
        .map_err(sql_err)?;
    let Some((model, criticality, status, region)) = row else {
        return Ok(None);
    };
    let mut stmt = tx
        .prepare_cached(
            "SELECT o.id, o.cause, o.created_at, o.due_at, \
             (SELECT json_group_array(t.cause) FROM order_tasks t WHERE t.order_id = o.id) FROM orders o \
             WHERE o.serial = ?1 AND o.status IN ('open', 'acknowledged', 'assigned', 'in_progress') ORDER BY o.id",
        )
        .map_err(sql_err)?;
    let mut rows = stmt.query([serial.as_str()]).map_err(sql_err)?;
    let mut active = Vec::new();
    while let Some(r) = rows.next().map_err(sql_err)? {
        let cause: String = r.get(1).map_err(sql_err)?;
        let tasks: String = r.get(4).map_err(sql_err)?;
        let tasks: Vec<String> = serde_json::from_str(&tasks).map_err(json_err)?;
        active.push(ActiveOrder {
            id: r.get(0).map_err(sql_err)?,
            cause: Cause::parse(&cause)
                .map_err(|e| StoreError::Internal(format!("orders.cause: {e}")))?,
            created_at: from_ms(r.get(2).map_err(sql_err)?),
            due_at: r.get::<_, Option<i64>>(3).map_err(sql_err)?.map(from_ms),
            task_causes: tasks.iter().filter_map(|c| Cause::parse(c).ok()).collect(),
        });
    }
    Ok(Some(PlanDevice {
        serial: serial.clone(),
        model,
        criticality: parse_col("devices.criticality", &criticality)?,
        status: parse_col("devices.status", &status)?,
        region,
        active,
    }))
}

fn storm_counts(tx: &Transaction<'_>, now: DateTime<Utc>) -> Result<StormCounts, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT COALESCE(d.region, ''), COUNT(*) FROM orders o JOIN devices d ON d.serial = o.serial \
             WHERE o.origin = 'prediction' AND o.created_at > ?1 GROUP BY 1",
        )
        .map_err(sql_err)?;
    let mut rows = stmt
        .query([ms(now - Duration::hours(1))])
        .map_err(sql_err)?;
    let mut counts = StormCounts::default();
    while let Some(r) = rows.next().map_err(sql_err)? {
        let n = u32::try_from(r.get::<_, i64>(1).map_err(sql_err)?).unwrap_or(u32::MAX);
        counts.fleet += n;
        counts.by_region.insert(r.get(0).map_err(sql_err)?, n);
    }
    Ok(counts)
}

const QUEUE_COLS: &str = "id, serial, cause, priority, region, due_at, held_at, reason, intent";

fn held_from(r: &rusqlite::Row<'_>) -> Result<HeldOrder, StoreError> {
    let intent: String = r.get(8).map_err(sql_err)?;
    let stored: StoredHeld = serde_json::from_str(&intent).map_err(json_err)?;
    Ok(HeldOrder {
        id: r.get(0).map_err(sql_err)?,
        serial: serial_of(
            &r.get::<_, String>(1).map_err(sql_err)?,
            "order_queue.serial",
        )?,
        cause: Cause::parse(&r.get::<_, String>(2).map_err(sql_err)?)
            .map_err(|e| StoreError::Internal(format!("order_queue.cause: {e}")))?,
        priority: parse_col(
            "order_queue.priority",
            &r.get::<_, String>(3).map_err(sql_err)?,
        )?,
        region: r.get(4).map_err(sql_err)?,
        due_at: r.get::<_, Option<i64>>(5).map_err(sql_err)?.map(from_ms),
        held_at: from_ms(r.get(6).map_err(sql_err)?),
        reason: r.get(7).map_err(sql_err)?,
        intent: stored.intent,
        tasks: stored.tasks,
    })
}

/// What `order_queue.intent` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredHeld {
    intent: OrderIntent,
    tasks: Vec<OrderTask>,
}

pub(crate) fn held_orders(
    conn: &Connection,
    after: Option<i64>,
    limit: Option<usize>,
) -> Result<Vec<HeldOrder>, StoreError> {
    // release order is (priority, id); a page continues after the entry `after`
    let mut sql = format!("SELECT {QUEUE_COLS} FROM order_queue");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(after) = after {
        sql.push_str(
            " WHERE (priority, id) > (SELECT priority, id FROM order_queue WHERE id = ?1) \
             OR (NOT EXISTS (SELECT 1 FROM order_queue WHERE id = ?1) AND id > ?1)",
        );
        args.push(SqlValue::Integer(after));
    }
    sql.push_str(" ORDER BY priority, id");
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {}", limit.clamp(1, crate::read::MAX_PAGE)));
    }
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql_err)? {
        out.push(held_from(r)?);
    }
    Ok(out)
}

pub(crate) fn held_page(
    conn: &Connection,
    after: Option<i64>,
    limit: usize,
) -> Result<Page<HeldOrder>, StoreError> {
    let limit = limit.clamp(1, crate::read::MAX_PAGE);
    let items = held_orders(conn, after, Some(limit))?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|h| h.id.to_string()))
        .flatten();
    Ok(Page { items, next })
}

fn upsert_task(
    tx: &Transaction<'_>,
    order_id: i64,
    task: &OrderTask,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let existed: bool = tx
        .prepare_cached("SELECT 1 FROM order_tasks WHERE order_id = ?1 AND cause = ?2")
        .and_then(|mut s| s.exists(params![order_id, task.cause.as_str()]))
        .map_err(sql_err)?;
    tx.prepare_cached(
        "INSERT INTO order_tasks (order_id, cause, title, skills, parts, labour_minutes, due_at, evidence, added_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) \
         ON CONFLICT (order_id, cause) DO UPDATE SET title = excluded.title, skills = excluded.skills, \
         parts = excluded.parts, labour_minutes = excluded.labour_minutes, due_at = excluded.due_at, \
         evidence = excluded.evidence, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            order_id,
            task.cause.as_str(),
            task.title,
            serde_json::to_string(&task.skills).unwrap_or_else(|_| "[]".into()),
            serde_json::to_string(&task.parts).unwrap_or_else(|_| "[]".into()),
            task.labour_minutes,
            task.due_at.map(ms),
            task.evidence.to_string(),
            ms(now)
        ])
    })
    .map_err(sql_err)?;
    if !existed {
        // a new task changes the visit: the dispatch side hears about it
        let (serial, status, version): (String, String, u32) = tx
            .query_row(
                "UPDATE orders SET updated_at = ?2, version = version + 1 WHERE id = ?1 \
                 RETURNING serial, status, version",
                params![order_id, ms(now)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(sql_err)?;
        let status: OrderStatus = parse_col("orders.status", &status)?;
        crate::orders::insert_event(
            tx,
            order_id,
            &serial_of(&serial, "orders.serial")?,
            now,
            ACTOR,
            "task_added",
            Some(status),
            status,
            version,
            &json!({"task": task}),
        )?;
    }
    Ok(!existed)
}

/// A repeat raise of a predicted order sets its due date when it had none and moves it
/// only earlier, as a repeat trigger does with the SLA deadlines: a later forecast within
/// the same episode (a risk order is due `risk_due_after` after each run) does not move a
/// visit already planned, and a date that stays is no change. A move is a change the
/// dispatcher plans by: it bumps the version and records its event (`escalated` when the
/// date moved earlier, `updated` when the order had none) with `before` and `after`.
fn bring_due_at_forward(
    tx: &Transaction<'_>,
    order_id: i64,
    due_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let Some(due_at) = due_at else {
        return Ok(());
    };
    let before: Option<i64> = tx
        .prepare_cached("SELECT due_at FROM orders WHERE id = ?1")
        .and_then(|mut s| s.query_row([order_id], |r| r.get(0)))
        .map_err(sql_err)?;
    if before.is_some_and(|b| b <= ms(due_at)) {
        return Ok(());
    }
    let (serial, status, version): (String, String, u32) = tx
        .query_row(
            "UPDATE orders SET due_at = ?2, updated_at = ?3, version = version + 1 WHERE id = ?1 \
             RETURNING serial, status, version",
            params![order_id, ms(due_at), ms(now)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(sql_err)?;
    let status: OrderStatus = parse_col("orders.status", &status)?;
    crate::orders::insert_event(
        tx,
        order_id,
        &serial_of(&serial, "orders.serial")?,
        now,
        ACTOR,
        if before.is_some() {
            "escalated"
        } else {
            "updated"
        },
        Some(status),
        status,
        version,
        &json!({"changes": {"due_at": {"before": before.map(from_ms), "after": from_ms(ms(due_at))}}}),
    )?;
    Ok(())
}

/// See [`fleetpulse_domain::store::PredictionStore::apply_predictions`].
pub(crate) fn apply_predictions(
    conn: &mut Connection,
    run: &PredictionRun,
    planner: &Arc<dyn PredictionPlanner>,
    now: DateTime<Utc>,
) -> Result<RunReport, StoreError> {
    let tx = conn.transaction().map_err(sql_err)?;
    let held = held_orders(&tx, None, None)?;
    let mut devices = BTreeMap::new();
    for serial in run
        .predictions
        .iter()
        .map(|p| &p.serial)
        .chain(held.iter().map(|h| &h.serial))
    {
        if !devices.contains_key(serial)
            && let Some(d) = plan_device(&tx, serial)?
        {
            devices.insert(serial.clone(), d);
        }
    }
    let counts = storm_counts(&tx, now)?;
    let actions = planner.plan(&PlanInput {
        predictions: &run.predictions,
        devices: &devices,
        counts: &counts,
        held: &held,
        now,
    });

    tx.execute(
        "INSERT INTO prediction_runs (started_at, as_of, trigger, devices, predictions, report) VALUES (?1, ?2, ?3, ?4, ?5, '{}')",
        params![ms(now), ms(run.as_of), run.trigger, run.devices as i64, run.predictions.len() as i64],
    )
    .map_err(sql_err)?;
    let run_id = tx.last_insert_rowid();
    // the table holds the latest run's predictions
    tx.execute("DELETE FROM predictions", []).map_err(sql_err)?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO predictions (serial, kind, target, run_id, as_of, due_at, probability, model_version, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(sql_err)?;
        for p in &run.predictions {
            insert
                .execute(params![
                    p.serial.as_str(),
                    p.kind.as_str(),
                    p.target,
                    run_id,
                    ms(p.as_of),
                    p.due_at.map(ms),
                    p.probability,
                    p.model_version,
                    serde_json::to_string(p).map_err(json_err)?
                ])
                .map_err(sql_err)?;
        }
    }
    let mut report = RunReport {
        run_id,
        as_of: Some(run.as_of),
        devices: run.devices,
        predictions: run.predictions.len(),
        orders_applied: true,
        ..RunReport::default()
    };
    let link = |tx: &Transaction<'_>, idx: &[usize], order_id: i64| -> Result<(), StoreError> {
        for &i in idx {
            if let Some(p) = run.predictions.get(i) {
                tx.prepare_cached(
                    "UPDATE predictions SET order_id = ?4 WHERE serial = ?1 AND kind = ?2 AND target = ?3",
                )
                .and_then(|mut s| s.execute(params![p.serial.as_str(), p.kind.as_str(), p.target, order_id]))
                .map_err(sql_err)?;
            }
        }
        Ok(())
    };
    for action in actions {
        match action {
            PlanAction::Raise {
                order,
                predictions,
                released,
            } => {
                let change = crate::orders::upsert_recorded(&tx, &order.intent, now, ACTOR)?;
                if change.created {
                    tx.execute(
                        "UPDATE orders SET origin = 'prediction', due_at = ?2 WHERE id = ?1",
                        params![change.order_id, order.due_at.map(ms)],
                    )
                    .map_err(sql_err)?;
                    report.raised += 1;
                } else {
                    bring_due_at_forward(&tx, change.order_id, order.due_at, now)?;
                    report.updated += 1;
                }
                for task in &order.tasks {
                    upsert_task(&tx, change.order_id, task, now)?;
                    report.bundled += 1;
                }
                if let Some(id) = released {
                    tx.execute("DELETE FROM order_queue WHERE id = ?1", [id])
                        .map_err(sql_err)?;
                    report.released += 1;
                }
                link(&tx, &predictions, change.order_id)?;
                report.orders.push(change);
            }
            PlanAction::Bundle {
                order_id,
                task,
                prediction,
            } => {
                upsert_task(&tx, order_id, &task, now)?;
                report.bundled += 1;
                link(&tx, &[prediction], order_id)?;
            }
            PlanAction::Drop { queue_id } => {
                tx.execute("DELETE FROM order_queue WHERE id = ?1", [queue_id])
                    .map_err(sql_err)?;
                report.dropped += 1;
            }
            PlanAction::Hold {
                order,
                region,
                reason,
                predictions: _,
            } => {
                hold(&tx, &order, region.as_deref(), &reason, now)?;
                report.held += 1;
            }
            PlanAction::RiskFell {
                order_id,
                prediction,
                probability,
                threshold,
            } => {
                let p = run.predictions.get(prediction);
                let evidence = json!({
                    "rule": "risk_below_threshold",
                    "run_id": run_id,
                    "serial": p.map(|p| &p.serial),
                    "target": p.map(|p| &p.target),
                    "as_of": p.map(|p| p.as_of),
                    "model_version": p.map(|p| &p.model_version),
                    "probability": probability,
                    "threshold": threshold,
                });
                if let Some(change) = crate::resolution::risk_fell(&tx, order_id, &evidence, now)? {
                    report.risk_cleared += 1;
                    report.orders.push(change);
                }
            }
        }
    }
    report.queued = tx
        .query_row("SELECT COUNT(*) FROM order_queue", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sql_err)? as usize;
    let mut summary = serde_json::to_value(&report).map_err(json_err)?;
    if let Some(o) = summary.as_object_mut() {
        o.remove("orders");
    }
    tx.execute(
        "UPDATE prediction_runs SET report = ?2 WHERE id = ?1",
        params![run_id, summary.to_string()],
    )
    .map_err(sql_err)?;
    tx.commit().map_err(sql_err)?;
    if report.held > 0 {
        tracing::warn!(
            held = report.held,
            queued = report.queued,
            "storm control held predicted orders"
        );
    }
    Ok(report)
}

fn hold(
    tx: &Transaction<'_>,
    order: &PlannedOrder,
    region: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let body = serde_json::to_string(&StoredHeld {
        intent: order.intent.clone(),
        tasks: order.tasks.clone(),
    })
    .map_err(json_err)?;
    // an entry keeps its place in the queue; its order is refreshed
    tx.prepare_cached(
        "INSERT INTO order_queue (serial, cause, priority, region, due_at, intent, held_at, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (serial, cause) DO UPDATE SET priority = MIN(priority, excluded.priority), \
         region = excluded.region, due_at = excluded.due_at, intent = excluded.intent, reason = excluded.reason",
    )
    .and_then(|mut s| {
        s.execute(params![
            order.intent.serial.as_str(),
            order.intent.cause.as_str(),
            order.intent.priority.as_str(),
            region,
            order.due_at.map(ms),
            body,
            ms(now),
            reason
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

// ---- reading predictions and models ---------------------------------------------------

pub(crate) fn predictions(
    conn: &Connection,
    q: &PredictionQuery,
) -> Result<Page<StoredPrediction>, StoreError> {
    let limit = q.limit.clamp(1, crate::read::MAX_PAGE);
    let mut sql =
        "SELECT serial, kind, target, body, order_id FROM predictions WHERE 1 = 1".to_owned();
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some((s, k, t)) = &q.after {
        sql.push_str(" AND (serial, kind, target) > (?, ?, ?)");
        args.extend([s, k, t].map(|v| SqlValue::Text(v.clone())));
    }
    if let Some(s) = &q.serial {
        sql.push_str(" AND serial = ?");
        args.push(SqlValue::Text(s.to_string()));
    }
    if let Some(k) = q.kind {
        sql.push_str(" AND kind = ?");
        args.push(SqlValue::Text(k.as_str().to_owned()));
    }
    if let Some(t) = &q.target {
        sql.push_str(" AND target = ?");
        args.push(SqlValue::Text(t.clone()));
    }
    if let Some(t) = q.due_before {
        sql.push_str(" AND due_at < ?");
        args.push(SqlValue::Integer(crate::convert::ms(t)));
    }
    if let Some(p) = q.min_probability {
        sql.push_str(" AND probability >= ?");
        args.push(SqlValue::Real(p));
    }
    sql.push_str(" ORDER BY serial, kind, target LIMIT ?");
    args.push(SqlValue::Integer(limit as i64));
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(sql_err)?;
    let mut items = Vec::new();
    let mut last = None;
    while let Some(r) = rows.next().map_err(sql_err)? {
        let body: String = r.get(3).map_err(sql_err)?;
        let prediction: Prediction = serde_json::from_str(&body).map_err(json_err)?;
        last = Some(format!(
            "{}|{}|{}",
            r.get::<_, String>(0).map_err(sql_err)?,
            r.get::<_, String>(1).map_err(sql_err)?,
            r.get::<_, String>(2).map_err(sql_err)?
        ));
        items.push(StoredPrediction {
            prediction,
            order_id: r.get(4).map_err(sql_err)?,
        });
    }
    let next = (items.len() == limit).then_some(last).flatten();
    Ok(Page { items, next })
}

/// See [`fleetpulse_domain::store::PredictionStore::save_models`]. A model's as-of is
/// its report's `as_of` (else `trained_at`, the data's as-of before as-of training).
pub(crate) fn save_models(
    conn: &mut Connection,
    models: &[TrainedModel],
) -> Result<usize, StoreError> {
    let tx = conn.transaction().map_err(sql_err)?;
    for m in models {
        let as_of = ms(m.report.as_of.unwrap_or(m.report.trained_at));
        let mut deployed = m.report.deployed;
        if deployed {
            // a model trained as of an earlier time (a back-test) does not displace the
            // one that scores the fleet now when that one learned from later data
            tx.execute(
                "UPDATE models SET deployed = 0 WHERE failure_mode = ?1 AND deployed = 1 \
                 AND COALESCE(as_of, trained_at) <= ?2",
                params![m.report.failure_mode, as_of],
            )
            .map_err(sql_err)?;
            let later: bool = tx
                .prepare_cached("SELECT 1 FROM models WHERE failure_mode = ?1 AND deployed = 1")
                .and_then(|mut s| s.exists([&m.report.failure_mode]))
                .map_err(sql_err)?;
            deployed = !later;
        }
        tx.execute(
            "INSERT OR REPLACE INTO models (version, failure_mode, trained_at, deployed, report, parameters, as_of) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                m.report.version,
                m.report.failure_mode,
                ms(m.report.trained_at),
                deployed,
                serde_json::to_string(&m.report).map_err(json_err)?,
                m.parameters.to_string(),
                as_of
            ],
        )
        .map_err(sql_err)?;
    }
    tx.commit().map_err(sql_err)?;
    Ok(models.len())
}

/// See [`fleetpulse_domain::store::PredictionStore::models_as_of`]: per failure mode, the
/// model with the latest as-of up to `as_of` whose training decided to deploy it (the
/// report as stored keeps that decision; the `deployed` column says what scores now).
pub(crate) fn models_as_of(
    conn: &Connection,
    as_of: DateTime<Utc>,
) -> Result<Vec<TrainedModel>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT report, parameters, 1 FROM models m WHERE json_extract(report, '$.deployed') = 1 \
             AND COALESCE(as_of, trained_at) <= ?1 AND NOT EXISTS (SELECT 1 FROM models n \
             WHERE n.failure_mode = m.failure_mode AND json_extract(n.report, '$.deployed') = 1 \
             AND COALESCE(n.as_of, n.trained_at) <= ?1 AND (COALESCE(n.as_of, n.trained_at), n.version) \
             > (COALESCE(m.as_of, m.trained_at), m.version)) ORDER BY failure_mode",
        )
        .map_err(sql_err)?;
    let mut rows = stmt.query([ms(as_of)]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql_err)? {
        out.push(model_from(r)?);
    }
    Ok(out)
}

fn model_from(r: &rusqlite::Row<'_>) -> Result<TrainedModel, StoreError> {
    let report: String = r.get(0).map_err(sql_err)?;
    let parameters: String = r.get(1).map_err(sql_err)?;
    let mut report: ModelReport = serde_json::from_str(&report).map_err(json_err)?;
    // a later model of the mode may have replaced it
    report.deployed = r.get(2).map_err(sql_err)?;
    Ok(TrainedModel {
        report,
        parameters: serde_json::from_str(&parameters).map_err(json_err)?,
    })
}

pub(crate) fn models(
    conn: &Connection,
    version: Option<&str>,
    deployed_only: bool,
) -> Result<Vec<TrainedModel>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT report, parameters, deployed FROM models \
             WHERE (?1 IS NULL OR version = ?1) AND (?2 = 0 OR deployed = 1) ORDER BY trained_at DESC, version",
        )
        .map_err(sql_err)?;
    let mut rows = stmt
        .query(params![version, deployed_only])
        .map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql_err)? {
        out.push(model_from(r)?);
    }
    Ok(out)
}
