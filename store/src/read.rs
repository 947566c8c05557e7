//! Everything that reads.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fleetpulse_domain::alarm::{AlarmCode, AlarmEpisode};
use fleetpulse_domain::catalog::ModelId;
use fleetpulse_domain::order::{Cause, Order, OrderDevice, PartRef, Sla};
use fleetpulse_domain::rules::LatestState;
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::{
    AlarmQuery, DeadLetter, DeadLetterQuery, Device, DeviceDetail, DeviceQuery, DeviceSummary,
    OrderQuery, Page, ReadingCursor, ReadingQuery, Rollup, StoreError, StoreStats, StoredReading,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::convert::{from_ms, json_err, ms, parse_col, sql_err};

/// Most rows one page returns.
pub const MAX_PAGE: usize = 1000;

fn page_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

const DEVICE_COLS: &str = "d.serial, d.model, d.kind, d.status, d.criticality, d.region, d.address, d.firmware, d.connection, d.registered_at, d.last_seen_at, d.commissioned_at, d.runtime_hours_at_registration, d.observed_from";
/// How many columns `DEVICE_COLS` has (the latest state follows them in a list).
const DEVICE_COL_COUNT: usize = 14;
const LATEST_COLS: &str = "l.seq, l.ts, l.received_at, l.vals, l.alarms, l.firmware";

fn device_from(row: &Row<'_>) -> Result<Device, StoreError> {
    let get_s = |i: usize| row.get::<_, String>(i).map_err(sql_err);
    let get_o = |i: usize| row.get::<_, Option<String>>(i).map_err(sql_err);
    let serial = Serial::parse(&get_s(0)?)
        .map_err(|e| StoreError::Internal(format!("devices.serial: {e}")))?;
    let model = get_o(1)?
        .map(|m| {
            ModelId::parse(&m).map_err(|e| StoreError::Internal(format!("devices.model: {e}")))
        })
        .transpose()?;
    Ok(Device {
        serial,
        model,
        kind: get_o(2)?
            .map(|k| parse_col("devices.kind", &k))
            .transpose()?,
        status: parse_col("devices.status", &get_s(3)?)?,
        criticality: parse_col("devices.criticality", &get_s(4)?)?,
        region: get_o(5)?,
        address: get_o(6)?,
        firmware: get_o(7)?,
        connection: parse_col("devices.connection", &get_s(8)?)?,
        registered_at: from_ms(row.get(9).map_err(sql_err)?),
        last_seen_at: row.get::<_, Option<i64>>(10).map_err(sql_err)?.map(from_ms),
        commissioned_at: row.get::<_, Option<i64>>(11).map_err(sql_err)?.map(from_ms),
        runtime_hours_at_registration: row.get(12).map_err(sql_err)?,
        observed_from: row.get::<_, Option<i64>>(13).map_err(sql_err)?.map(from_ms),
    })
}

/// Latest state from the 6 columns starting at `at`; `None` when the device has none.
fn latest_from(row: &Row<'_>, at: usize) -> Result<Option<LatestState>, StoreError> {
    let Some(seq) = row.get::<_, Option<i64>>(at).map_err(sql_err)? else {
        return Ok(None);
    };
    let vals: String = row.get(at + 3).map_err(sql_err)?;
    let alarms: String = row.get(at + 4).map_err(sql_err)?;
    Ok(Some(LatestState {
        seq: u64::try_from(seq).unwrap_or(0),
        ts: row
            .get::<_, Option<i64>>(at + 1)
            .map_err(sql_err)?
            .map(from_ms),
        received_at: row
            .get::<_, Option<i64>>(at + 2)
            .map_err(sql_err)?
            .map(from_ms),
        values: serde_json::from_str(&vals).map_err(json_err)?,
        alarms: serde_json::from_str(&alarms).map_err(json_err)?,
        firmware: row.get(at + 5).map_err(sql_err)?,
    }))
}

pub(crate) fn latest_state(
    conn: &Connection,
    serial: &Serial,
) -> Result<Option<LatestState>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {LATEST_COLS} FROM latest_state l WHERE l.serial = ?1"
        ))
        .map_err(sql_err)?;
    let mut rows = stmt.query([serial.as_str()]).map_err(sql_err)?;
    match rows.next().map_err(sql_err)? {
        Some(row) => latest_from(row, 0),
        None => Ok(None),
    }
}

pub(crate) fn device_row(conn: &Connection, serial: &Serial) -> Result<Option<Device>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {DEVICE_COLS} FROM devices d WHERE d.serial = ?1"
        ))
        .map_err(sql_err)?;
    let mut rows = stmt.query([serial.as_str()]).map_err(sql_err)?;
    match rows.next().map_err(sql_err)? {
        Some(row) => device_from(row).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn device_detail(
    conn: &Connection,
    serial: &Serial,
) -> Result<Option<DeviceDetail>, StoreError> {
    let Some(device) = device_row(conn, serial)? else {
        return Ok(None);
    };
    let latest = latest_state(conn, serial)?;
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {EPISODE_COLS} FROM alarm_episodes WHERE serial = ?1 AND ended_at IS NULL ORDER BY id"))
        .map_err(sql_err)?;
    let open_alarms = collect(
        stmt.query([serial.as_str()]).map_err(sql_err)?,
        episode_from,
    )?;
    let open_orders = list_orders(
        conn,
        &OrderQuery {
            serial: Some(serial.clone()),
            active_only: true,
            limit: MAX_PAGE,
            ..Default::default()
        },
    )?
    .items;
    Ok(Some(DeviceDetail {
        device,
        latest,
        open_alarms,
        open_orders,
    }))
}

fn collect<T>(
    mut rows: rusqlite::Rows<'_>,
    mut f: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        out.push(f(row)?);
    }
    Ok(out)
}

pub(crate) fn list_devices(
    conn: &Connection,
    q: &DeviceQuery,
) -> Result<Page<DeviceSummary>, StoreError> {
    let limit = page_limit(q.limit);
    let mut sql = format!(
        "SELECT {DEVICE_COLS}, {LATEST_COLS} FROM devices d LEFT JOIN latest_state l ON l.serial = d.serial WHERE 1 = 1"
    );
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(after) = &q.after {
        sql.push_str(" AND d.serial > ?");
        args.push(SqlValue::Text(after.clone()));
    }
    if let Some(status) = q.status {
        sql.push_str(" AND d.status = ?");
        args.push(SqlValue::Text(status.as_str().to_owned()));
    }
    if let Some(model) = &q.model {
        sql.push_str(" AND d.model = ?");
        args.push(SqlValue::Text(model.clone()));
    }
    if let Some(region) = &q.region {
        sql.push_str(" AND d.region = ?");
        args.push(SqlValue::Text(region.clone()));
    }
    if let Some(c) = q.criticality {
        sql.push_str(" AND d.criticality = ?");
        args.push(SqlValue::Text(c.as_str().to_owned()));
    }
    sql.push_str(" ORDER BY d.serial LIMIT ?");
    args.push(SqlValue::Integer(limit as i64));
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let items = collect(
        stmt.query(params_from_iter(args)).map_err(sql_err)?,
        |row| {
            Ok(DeviceSummary {
                device: device_from(row)?,
                latest: latest_from(row, DEVICE_COL_COUNT)?,
            })
        },
    )?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|d| d.device.serial.to_string()))
        .flatten();
    Ok(Page { items, next })
}

/// Most readings one page returns: the API's `limit` maximum for raw readings. A page
/// as long as the limit it was read with always carries a `next` cursor, so a client is
/// never handed a silently shortened answer.
pub const MAX_READING_PAGE: usize = 10_000;

pub(crate) fn readings(
    conn: &Connection,
    q: &ReadingQuery,
) -> Result<Page<StoredReading>, StoreError> {
    let from = q.from.map_or(i64::MIN, ms);
    let to = q.to.map_or(i64::MAX, ms);
    let limit = q.limit.clamp(1, MAX_READING_PAGE);
    let (after_ts, after_seq) = q.after.map_or((i64::MIN, -1), |c| (c.ts_ms, c.seq));
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, ts, received_at, vals, alarms FROM readings \
             WHERE serial = ?1 AND ts >= ?2 AND ts < ?3 \
             AND (ts, seq) > (?4, ?5) ORDER BY ts, seq LIMIT ?6",
        )
        .map_err(sql_err)?;
    let rows = stmt
        .query(params![
            q.serial.as_str(),
            from,
            to,
            after_ts,
            after_seq,
            limit as i64
        ])
        .map_err(sql_err)?;
    let mut last = None;
    let items = collect(rows, |row| {
        let seq: i64 = row.get(0).map_err(sql_err)?;
        let ts: i64 = row.get(1).map_err(sql_err)?;
        let vals: String = row.get(3).map_err(sql_err)?;
        let alarms: Option<String> = row.get(4).map_err(sql_err)?;
        last = Some(ReadingCursor { ts_ms: ts, seq });
        Ok(StoredReading {
            serial: q.serial.clone(),
            seq: u64::try_from(seq).unwrap_or(0),
            ts: from_ms(ts),
            received_at: from_ms(row.get(2).map_err(sql_err)?),
            values: serde_json::from_str::<BTreeMap<String, f64>>(&vals).map_err(json_err)?,
            alarms: alarms
                .map(|a| serde_json::from_str::<Vec<AlarmCode>>(&a))
                .transpose()
                .map_err(json_err)?,
        })
    })?;
    let next = (items.len() == limit).then_some(last).flatten();
    Ok(Page {
        items,
        next: next.map(|c| c.to_string()),
    })
}

/// Hourly rollups of one device in `[from, to)`, of every field or of `field`.
pub(crate) fn rollups(
    conn: &Connection,
    serial: &Serial,
    field: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Rollup>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT hour, field, count, sum, min, max, last FROM rollups \
             WHERE serial = ?1 AND hour >= ?2 AND hour < ?3 AND (?4 IS NULL OR field = ?4) \
             ORDER BY hour, field",
        )
        .map_err(sql_err)?;
    let rows = stmt
        .query(params![serial.as_str(), ms(from), ms(to), field])
        .map_err(sql_err)?;
    collect(rows, |row| {
        Ok(Rollup {
            serial: serial.clone(),
            hour: from_ms(row.get(0).map_err(sql_err)?),
            field: row.get(1).map_err(sql_err)?,
            count: u64::try_from(row.get::<_, i64>(2).map_err(sql_err)?).unwrap_or(0),
            sum: row.get(3).map_err(sql_err)?,
            min: row.get(4).map_err(sql_err)?,
            max: row.get(5).map_err(sql_err)?,
            last: row.get(6).map_err(sql_err)?,
        })
    })
}

const EPISODE_COLS: &str = "id, serial, code, severity, started_at, started_seq, ended_at, ended_seq, duration_s, runtime_hours_at_start, \
     import_key IS NOT NULL";

fn episode_from(row: &Row<'_>) -> Result<AlarmEpisode, StoreError> {
    let serial: String = row.get(1).map_err(sql_err)?;
    let code: String = row.get(2).map_err(sql_err)?;
    Ok(AlarmEpisode {
        id: row.get(0).map_err(sql_err)?,
        serial: Serial::parse(&serial)
            .map_err(|e| StoreError::Internal(format!("alarm_episodes.serial: {e}")))?,
        code: AlarmCode::parse(&code)
            .map_err(|e| StoreError::Internal(format!("alarm_episodes.code: {e}")))?,
        severity: row
            .get::<_, Option<String>>(3)
            .map_err(sql_err)?
            .map(|s| parse_col("alarm_episodes.severity", &s))
            .transpose()?,
        started_at: from_ms(row.get(4).map_err(sql_err)?),
        started_seq: u64::try_from(row.get::<_, i64>(5).map_err(sql_err)?).unwrap_or(0),
        ended_at: row.get::<_, Option<i64>>(6).map_err(sql_err)?.map(from_ms),
        ended_seq: row
            .get::<_, Option<i64>>(7)
            .map_err(sql_err)?
            .and_then(|s| u64::try_from(s).ok()),
        duration_s: row.get(8).map_err(sql_err)?,
        runtime_hours_at_start: row.get(9).map_err(sql_err)?,
        imported: row.get(10).map_err(sql_err)?,
    })
}

pub(crate) fn alarm_episodes(
    conn: &Connection,
    q: &AlarmQuery,
) -> Result<Page<AlarmEpisode>, StoreError> {
    let limit = page_limit(q.limit);
    let mut sql = format!("SELECT {EPISODE_COLS} FROM alarm_episodes WHERE serial = ?");
    let mut args: Vec<SqlValue> = vec![SqlValue::Text(q.serial.as_str().to_owned())];
    match q.active {
        Some(true) => sql.push_str(" AND ended_at IS NULL"),
        Some(false) => sql.push_str(" AND ended_at IS NOT NULL"),
        None => {}
    }
    if let Some(severity) = q.severity {
        sql.push_str(" AND severity = ?");
        args.push(SqlValue::Text(severity.as_str().to_owned()));
    }
    if let Some(code) = &q.code {
        sql.push_str(" AND code = ?");
        args.push(SqlValue::Text(code.as_str().to_owned()));
    }
    if let Some(from) = q.from {
        sql.push_str(" AND started_at >= ?");
        args.push(SqlValue::Integer(ms(from)));
    }
    if let Some(to) = q.to {
        sql.push_str(" AND started_at < ?");
        args.push(SqlValue::Integer(ms(to)));
    }
    if let Some(after) = q.after {
        sql.push_str(" AND (started_at < ? OR (started_at = ? AND id < ?))");
        args.extend([
            SqlValue::Integer(after.ts_ms),
            SqlValue::Integer(after.ts_ms),
            SqlValue::Integer(after.seq),
        ]);
    }
    // by start, not by id: an imported episode is written after the live ones it may
    // predate
    sql.push_str(" ORDER BY started_at DESC, id DESC LIMIT ?");
    args.push(SqlValue::Integer(limit as i64));
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let items = collect(
        stmt.query(params_from_iter(args)).map_err(sql_err)?,
        episode_from,
    )?;
    let next = (items.len() == limit)
        .then(|| {
            items.last().map(|e| {
                ReadingCursor {
                    ts_ms: ms(e.started_at),
                    seq: e.id,
                }
                .to_string()
            })
        })
        .flatten();
    Ok(Page { items, next })
}

pub(crate) const ORDER_COLS: &str = "id, serial, cause, kind, priority, status, title, solution, skills, parts, labour_minutes, \
     evidence, respond_by, arrive_by, complete_by, created_at, updated_at, trigger_count, last_triggered_at, version, \
     origin, engineer, planned_visit_at, acknowledged_at, started_at, closed_at, cancel_reason, outcome, due_at, \
     condition_cleared_at, condition_evidence, cancel_at";

pub(crate) fn order_from(row: &Row<'_>) -> Result<Order, StoreError> {
    let text = |i: usize| row.get::<_, String>(i).map_err(sql_err);
    let serial = text(1)?;
    let cause = text(2)?;
    Ok(Order {
        id: row.get(0).map_err(sql_err)?,
        serial: Serial::parse(&serial)
            .map_err(|e| StoreError::Internal(format!("orders.serial: {e}")))?,
        cause: Cause::parse(&cause)
            .map_err(|e| StoreError::Internal(format!("orders.cause: {e}")))?,
        kind: parse_col("orders.kind", &text(3)?)?,
        priority: parse_col("orders.priority", &text(4)?)?,
        status: parse_col("orders.status", &text(5)?)?,
        title: text(6)?,
        solution: text(7)?,
        skills: serde_json::from_str(&text(8)?).map_err(json_err)?,
        parts: serde_json::from_str::<Vec<PartRef>>(&text(9)?).map_err(json_err)?,
        labour_minutes: row.get(10).map_err(sql_err)?,
        evidence: serde_json::from_str(&text(11)?).map_err(json_err)?,
        sla: Sla {
            respond_by: from_ms(row.get(12).map_err(sql_err)?),
            arrive_by: from_ms(row.get(13).map_err(sql_err)?),
            complete_by: from_ms(row.get(14).map_err(sql_err)?),
        },
        created_at: from_ms(row.get(15).map_err(sql_err)?),
        updated_at: from_ms(row.get(16).map_err(sql_err)?),
        trigger_count: row.get(17).map_err(sql_err)?,
        last_triggered_at: from_ms(row.get(18).map_err(sql_err)?),
        version: row.get(19).map_err(sql_err)?,
        origin: text(20)?,
        engineer: row.get(21).map_err(sql_err)?,
        planned_visit_at: row.get::<_, Option<i64>>(22).map_err(sql_err)?.map(from_ms),
        acknowledged_at: row.get::<_, Option<i64>>(23).map_err(sql_err)?.map(from_ms),
        started_at: row.get::<_, Option<i64>>(24).map_err(sql_err)?.map(from_ms),
        closed_at: row.get::<_, Option<i64>>(25).map_err(sql_err)?.map(from_ms),
        cancel_reason: row.get(26).map_err(sql_err)?,
        outcome: row
            .get::<_, Option<String>>(27)
            .map_err(sql_err)?
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(json_err)?,
        due_at: row.get::<_, Option<i64>>(28).map_err(sql_err)?.map(from_ms),
        tasks: Vec::new(),
        condition_cleared_at: row.get::<_, Option<i64>>(29).map_err(sql_err)?.map(from_ms),
        condition_evidence: row
            .get::<_, Option<String>>(30)
            .map_err(sql_err)?
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(json_err)?,
        cancel_at: row.get::<_, Option<i64>>(31).map_err(sql_err)?.map(from_ms),
        device: None,
    })
}

/// Fills in each order's device as the registry has it now (one lookup per device of
/// the page), so an order follows its device's moves and updates.
pub(crate) fn attach_devices(conn: &Connection, orders: &mut [Order]) -> Result<(), StoreError> {
    let mut seen: std::collections::HashMap<Serial, Option<OrderDevice>> =
        std::collections::HashMap::new();
    for o in orders.iter_mut() {
        if !seen.contains_key(&o.serial) {
            let device = device_row(conn, &o.serial)?.map(|d| OrderDevice {
                model: d.model,
                kind: d.kind,
                region: d.region,
                address: d.address,
                criticality: d.criticality,
                firmware: d.firmware,
            });
            seen.insert(o.serial.clone(), device);
        }
        o.device = seen[&o.serial].clone();
    }
    Ok(())
}

/// Fills in the tasks bundled into each order (one query for the page).
pub(crate) fn attach_tasks(conn: &Connection, orders: &mut [Order]) -> Result<(), StoreError> {
    if orders.is_empty() {
        return Ok(());
    }
    let (lo, hi) = orders.iter().fold((i64::MAX, i64::MIN), |(lo, hi), o| {
        (lo.min(o.id), hi.max(o.id))
    });
    let mut stmt = conn
        .prepare_cached(
            "SELECT order_id, cause, title, skills, parts, labour_minutes, due_at, evidence, added_at \
             FROM order_tasks WHERE order_id BETWEEN ?1 AND ?2 ORDER BY order_id, id",
        )
        .map_err(sql_err)?;
    let mut rows = stmt.query(params![lo, hi]).map_err(sql_err)?;
    let index: std::collections::HashMap<i64, usize> =
        orders.iter().enumerate().map(|(i, o)| (o.id, i)).collect();
    while let Some(row) = rows.next().map_err(sql_err)? {
        let order_id: i64 = row.get(0).map_err(sql_err)?;
        let Some(&i) = index.get(&order_id) else {
            continue;
        };
        let text = |i: usize| row.get::<_, String>(i).map_err(sql_err);
        orders[i].tasks.push(fleetpulse_domain::order::OrderTask {
            cause: Cause::parse(&text(1)?)
                .map_err(|e| StoreError::Internal(format!("order_tasks.cause: {e}")))?,
            title: text(2)?,
            skills: serde_json::from_str(&text(3)?).map_err(json_err)?,
            parts: serde_json::from_str(&text(4)?).map_err(json_err)?,
            labour_minutes: row.get(5).map_err(sql_err)?,
            due_at: row.get::<_, Option<i64>>(6).map_err(sql_err)?.map(from_ms),
            evidence: serde_json::from_str(&text(7)?).map_err(json_err)?,
            added_at: from_ms(row.get(8).map_err(sql_err)?),
        });
    }
    Ok(())
}

pub(crate) fn list_orders(conn: &Connection, q: &OrderQuery) -> Result<Page<Order>, StoreError> {
    let limit = page_limit(q.limit);
    let mut sql = format!("SELECT {ORDER_COLS} FROM orders WHERE id > ?");
    let mut args: Vec<SqlValue> = vec![SqlValue::Integer(q.after.unwrap_or(0))];
    if let Some(status) = q.status {
        sql.push_str(" AND status = ?");
        args.push(SqlValue::Text(status.as_str().to_owned()));
    } else if q.active_only {
        sql.push_str(" AND status IN ('open', 'acknowledged', 'assigned', 'in_progress')");
    }
    let mut text_filter = |column: &str, value: Option<String>| {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(SqlValue::Text(v));
        }
    };
    text_filter("serial", q.serial.as_ref().map(|s| s.to_string()));
    text_filter("cause", q.cause.as_ref().map(|c| c.to_string()));
    text_filter("kind", q.kind.map(|k| k.as_str().to_owned()));
    text_filter("priority", q.priority.map(|p| p.as_str().to_owned()));
    if let Some(region) = &q.region {
        sql.push_str(" AND serial IN (SELECT serial FROM devices WHERE region = ?)");
        args.push(SqlValue::Text(region.clone()));
    }
    if let Some(model) = &q.model {
        sql.push_str(" AND serial IN (SELECT serial FROM devices WHERE model = ?)");
        args.push(SqlValue::Text(model.clone()));
    }
    if let Some(since) = q.updated_since {
        sql.push_str(" AND updated_at >= ?");
        args.push(SqlValue::Integer(ms(since)));
    }
    if let Some((state, now)) = q.sla {
        sql.push_str(&format!(" AND {}", crate::sla::condition(state)));
        args.extend(crate::sla::args(state, ms(now)));
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    args.push(SqlValue::Integer(limit as i64));
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut items = collect(
        stmt.query(params_from_iter(args)).map_err(sql_err)?,
        order_from,
    )?;
    attach_tasks(conn, &mut items)?;
    attach_devices(conn, &mut items)?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|o| o.id.to_string()))
        .flatten();
    Ok(Page { items, next })
}

pub(crate) fn order(conn: &Connection, id: i64) -> Result<Option<Order>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {ORDER_COLS} FROM orders WHERE id = ?1"))
        .map_err(sql_err)?;
    let mut rows = stmt.query([id]).map_err(sql_err)?;
    let Some(row) = rows.next().map_err(sql_err)? else {
        return Ok(None);
    };
    let mut order = [order_from(row)?];
    attach_tasks(conn, &mut order)?;
    attach_devices(conn, &mut order)?;
    let [order] = order;
    Ok(Some(order))
}

pub(crate) fn dead_letters(
    conn: &Connection,
    q: &DeadLetterQuery,
) -> Result<Page<DeadLetter>, StoreError> {
    let limit = page_limit(q.limit);
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, received_at, topic, client_id, reason, detail, payload, repeats, last_seen_at \
             FROM dead_letters \
             WHERE id > ?1 AND (?2 IS NULL OR reason = ?2) ORDER BY id LIMIT ?3",
        )
        .map_err(sql_err)?;
    let rows = stmt
        .query(params![
            q.after.unwrap_or(0),
            q.reason.map(|r| r.as_str()),
            limit as i64
        ])
        .map_err(sql_err)?;
    let items = collect(rows, |row| {
        let payload: Vec<u8> = row.get(6).map_err(sql_err)?;
        Ok(DeadLetter {
            id: row.get(0).map_err(sql_err)?,
            received_at: from_ms(row.get(1).map_err(sql_err)?),
            topic: row.get(2).map_err(sql_err)?,
            client_id: row.get(3).map_err(sql_err)?,
            reason: parse_col(
                "dead_letters.reason",
                &row.get::<_, String>(4).map_err(sql_err)?,
            )?,
            detail: row.get(5).map_err(sql_err)?,
            payload: String::from_utf8_lossy(&payload).into_owned(),
            repeats: u64::try_from(row.get::<_, i64>(7).map_err(sql_err)?).unwrap_or(1),
            last_seen_at: from_ms(row.get(8).map_err(sql_err)?),
        })
    })?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(Page { items, next })
}

/// Table counts; `readings` is the writer's running count (see `Inner::readings`).
pub(crate) fn stats(conn: &Connection, readings: u64) -> Result<StoreStats, StoreError> {
    let count = |sql: &str| -> Result<u64, StoreError> {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(sql_err)
            .map(|n| u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    };
    Ok(StoreStats {
        devices: count("SELECT COUNT(*) FROM devices")?,
        readings,
        dead_letters: count("SELECT COUNT(*) FROM dead_letters")?,
        open_alarm_episodes: count("SELECT COUNT(*) FROM alarm_episodes WHERE ended_at IS NULL")?,
        active_orders: count(
            "SELECT COUNT(*) FROM orders WHERE status IN ('open', 'acknowledged', 'assigned', 'in_progress')",
        )?,
        orders: count("SELECT COUNT(*) FROM orders")?,
        wal_bytes: 0, // a file size, not a table: the caller fills it in
    })
}
