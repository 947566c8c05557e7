//! The order lifecycle on SQLite (migration 0004): transitions with optimistic
//! concurrency, the append-only history (`order_events`, also the sequence the stream and
//! webhooks follow), completion effects on the device, manual orders, device status
//! changes.
//!
//! Every change writes its history event and its audit entry in the same transaction as
//! the change itself: there is no order change without its event, and no event without
//! its change.

use chrono::{DateTime, Utc};
use fleetpulse_domain::LifecycleStatus;
use fleetpulse_domain::dispatch::{
    Actor, CompletionOutcome, FailureEvent, OrderAction, OrderEvent, StatusChange,
    StatusHistoryEntry, TransitionError,
};
use fleetpulse_domain::order::{Order, OrderIntent, OrderStatus};
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::{Device, OrderChange, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde_json::{Value, json};

use crate::StoreOptions;
use crate::audit::insert_audit;
use crate::convert::{from_ms, json_err, ms, parse_col, sql_err};
use crate::read;

/// Longest free text accepted in an order change (notes, reasons).
pub const MAX_TEXT: usize = 4000;
/// Longest identifier accepted (engineer id, part number, signature reference).
pub const MAX_ID: usize = 128;

/// The changes that make an order more urgent: an `escalated` event rather than `updated`.
const URGENCY_FIELDS: [&str; 4] = ["priority", "respond_by", "arrive_by", "complete_by"];

/// [`crate::write::upsert_order`], then the history event of what it did: `created` for
/// a new order; for a repeat trigger that changed the active order, `escalated` when it
/// made it more urgent (priority or deadlines), `updated` for any other change a
/// dispatcher acts on (a new trigger episode, title, solution, skills, parts, labour),
/// with each change's `before` and `after` in `data.changes`. A repeat trigger that
/// changed nothing bumps no version and records no event, so a device reporting a low
/// filter every few seconds neither floods the stream and the webhooks nor makes a
/// dispatcher's `If-Match` stale.
pub(crate) fn upsert_recorded(
    tx: &Transaction<'_>,
    intent: &OrderIntent,
    now: DateTime<Utc>,
    actor: &str,
) -> Result<OrderChange, StoreError> {
    let upsert = crate::write::upsert_order(tx, intent, now)?;
    let change = upsert.change;
    if change.created {
        crate::reliability::link_order_to_episode(tx, &change, now)?;
    }
    record_upsert(tx, intent, &change, upsert.changes, now, actor)?;
    // the trigger shows the condition back: a mark of it cleared goes (after the
    // trigger's own event, so the versions of the events rise in order)
    if upsert.was_cleared {
        crate::resolution::trigger_returned(tx, change.order_id, &intent.evidence, now)?;
    }
    Ok(change)
}

/// The history event of what [`crate::write::upsert_order`] did (none for a repeat
/// trigger that changed nothing).
fn record_upsert(
    tx: &Transaction<'_>,
    intent: &OrderIntent,
    change: &OrderChange,
    changes: serde_json::Map<String, Value>,
    now: DateTime<Utc>,
    actor: &str,
) -> Result<(), StoreError> {
    let (kind, data) = if change.created {
        let data = json!({
            "cause": intent.cause,
            "priority": intent.priority,
            "evidence": intent.evidence,
        });
        ("created", data)
    } else if changes.is_empty() {
        return Ok(());
    } else {
        let escalated = URGENCY_FIELDS.iter().any(|f| changes.contains_key(*f));
        let mut data = json!({ "changes": changes });
        if intent.new_episode {
            data["evidence"] = intent.evidence.clone();
        }
        (if escalated { "escalated" } else { "updated" }, data)
    };
    let (status, version): (String, u32) = tx
        .prepare_cached("SELECT status, version FROM orders WHERE id = ?1")
        .and_then(|mut s| s.query_row([change.order_id], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(sql_err)?;
    let status: OrderStatus = parse_col("orders.status", &status)?;
    let from = (!change.created).then_some(status);
    insert_event(
        tx,
        change.order_id,
        &intent.serial,
        now,
        actor,
        kind,
        from,
        status,
        version,
        &data,
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_event(
    tx: &Transaction<'_>,
    order_id: i64,
    serial: &Serial,
    at: DateTime<Utc>,
    actor: &str,
    kind: &str,
    from: Option<OrderStatus>,
    to: OrderStatus,
    version: u32,
    data: &Value,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO order_events (order_id, serial, at, actor, kind, from_status, to_status, version, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            order_id,
            serial.as_str(),
            ms(at),
            actor,
            kind,
            from.map(|f| f.as_str()),
            to.as_str(),
            version,
            data.to_string()
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), TransitionError> {
    if text.trim().is_empty() {
        return Err(TransitionError::Invalid(format!(
            "{what} must not be empty"
        )));
    }
    if text.chars().count() > max {
        return Err(TransitionError::Invalid(format!(
            "{what} is longer than {max} characters"
        )));
    }
    Ok(())
}

/// Checks what an action carries against limits, the catalog and the order's device,
/// before any write.
fn validate(
    action: &OrderAction,
    device: &Device,
    model: Option<&fleetpulse_domain::ModelSpec>,
) -> Result<(), TransitionError> {
    match action {
        OrderAction::Acknowledge | OrderAction::Start => Ok(()),
        OrderAction::Assign { engineer, .. } => check_text("engineer", engineer, MAX_ID),
        OrderAction::Cancel { reason } => check_text("reason", reason, MAX_TEXT),
        OrderAction::Complete(o) => validate_outcome(o, device, model),
    }
}

fn validate_outcome(
    o: &CompletionOutcome,
    device: &Device,
    model: Option<&fleetpulse_domain::ModelSpec>,
) -> Result<(), TransitionError> {
    if let Some(notes) = &o.notes {
        check_text("notes", notes, MAX_TEXT)?;
    }
    if let Some(sig) = &o.signature_ref {
        check_text("signature_ref", sig, MAX_ID)?;
    }
    if o.parts_replaced.len() > 100 {
        return Err(TransitionError::Invalid(
            "parts_replaced lists more than 100 parts".into(),
        ));
    }
    for p in &o.parts_replaced {
        check_text("parts_replaced[].number", &p.number, MAX_ID)?;
        if p.qty == 0 {
            return Err(TransitionError::Invalid(format!(
                "part {} has qty 0; report at least 1",
                p.number
            )));
        }
    }
    if o.fault_code.is_some() && !o.failure_confirmed {
        return Err(TransitionError::Invalid(
            "fault_code is only meaningful with failure_confirmed = true".into(),
        ));
    }
    if o.device_status == Some(LifecycleStatus::Unassigned) {
        return Err(TransitionError::Invalid(
            "device_status cannot be unassigned".into(),
        ));
    }
    // a completion sets no address: the device must have one already
    if let Some(status) = o.device_status
        && !status.allows_address(device.address.as_deref())
    {
        return Err(TransitionError::AddressRequired {
            serial: device.serial.clone(),
        });
    }
    for c in &o.consumables_replaced {
        let known = model.is_some_and(|m| m.consumables.iter().any(|s| &s.id == c));
        if !known {
            let allowed: Vec<&str> = model
                .map(|m| m.consumables.iter().map(|s| s.id.as_str()).collect())
                .unwrap_or_default();
            return Err(TransitionError::Invalid(format!(
                "consumable {c:?} is not a consumable of this device's model (known: {allowed:?})"
            )));
        }
    }
    Ok(())
}

pub(crate) fn transition(
    conn: &mut Connection,
    opts: &StoreOptions,
    id: i64,
    expected_version: u32,
    action: OrderAction,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Order, TransitionError> {
    let tx = conn.transaction().map_err(sql_err)?;
    let before = read::order(&tx, id)?.ok_or(TransitionError::NotFound(id))?;
    if before.version != expected_version {
        return Err(TransitionError::VersionMismatch {
            id,
            expected: expected_version,
            current: before.version,
        });
    }
    let wanted = action.target();
    if !before.status.allowed_next().contains(&wanted) {
        return Err(TransitionError::Illegal {
            id,
            current: before.status,
            wanted,
            allowed: before.status.allowed_next().to_vec(),
        });
    }
    let device = read::device_row(&tx, &before.serial)?.ok_or_else(|| {
        StoreError::Internal(format!("order {id} names unknown device {}", before.serial))
    })?;
    let model = device
        .model
        .as_ref()
        .and_then(|m| opts.catalog.model(m.as_str()));
    validate(&action, &device, model)?;

    let t = ms(now);
    let status = wanted.as_str();
    let changed = match &action {
        OrderAction::Acknowledge => tx.execute(
            "UPDATE orders SET status = ?2, acknowledged_at = ?3, updated_at = ?3, version = version + 1 WHERE id = ?1",
            params![id, status, t],
        ),
        OrderAction::Assign {
            engineer,
            planned_visit_at,
        } => tx.execute(
            "UPDATE orders SET status = ?2, engineer = ?3, planned_visit_at = ?4, updated_at = ?5, version = version + 1 \
             WHERE id = ?1",
            params![id, status, engineer, planned_visit_at.map(ms), t],
        ),
        // work started on site: the system no longer cancels it (policy `[resolution]`)
        OrderAction::Start => tx.execute(
            "UPDATE orders SET status = ?2, started_at = ?3, updated_at = ?3, cancel_at = NULL, \
             version = version + 1 WHERE id = ?1",
            params![id, status, t],
        ),
        OrderAction::Complete(outcome) => tx.execute(
            "UPDATE orders SET status = ?2, outcome = ?3, closed_at = ?4, updated_at = ?4, version = version + 1 WHERE id = ?1",
            params![
                id,
                status,
                serde_json::to_string(outcome).map_err(json_err)?,
                t
            ],
        ),
        OrderAction::Cancel { reason } => tx.execute(
            "UPDATE orders SET status = ?2, cancel_reason = ?3, closed_at = ?4, updated_at = ?4, version = version + 1 WHERE id = ?1",
            params![id, status, reason, t],
        ),
    }
    .map_err(sql_err)?;
    if changed != 1 {
        return Err(
            StoreError::Internal(format!("order {id} vanished inside its transaction")).into(),
        );
    }

    let mut effects = json!({});
    if let OrderAction::Complete(outcome) = &action {
        effects = apply_outcome(&tx, &before, model, outcome, actor, now)?;
    }

    let after = read::order(&tx, id)?
        .ok_or_else(|| StoreError::Internal(format!("order {id} vanished")))?;
    let mut data = serde_json::to_value(&action).map_err(json_err)?;
    if let Some(obj) = data.as_object_mut() {
        obj.remove("action");
        if !effects.as_object().is_some_and(|o| o.is_empty()) {
            obj.insert("effects".into(), effects);
        }
    }
    insert_event(
        &tx,
        id,
        &before.serial,
        now,
        &actor.0,
        action.event_kind(),
        Some(before.status),
        wanted,
        after.version,
        &data,
    )?;
    insert_audit(
        &tx,
        now,
        &actor.0,
        &format!("order.{}", action.event_kind()),
        &format!("order:{id}"),
        Some(&serde_json::to_value(&before).map_err(json_err)?),
        Some(&serde_json::to_value(&after).map_err(json_err)?),
    )?;
    tx.commit().map_err(sql_err)?;
    tracing::info!(order_id = id, from = %before.status, to = %wanted, actor = %actor.0, "order changed");
    Ok(after)
}

/// What a completion does to the device: failure event, consumable baselines, status.
fn apply_outcome(
    tx: &Transaction<'_>,
    order: &Order,
    model: Option<&fleetpulse_domain::ModelSpec>,
    outcome: &CompletionOutcome,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    let serial = order.serial.as_str();
    let runtime_hours: Option<f64> = tx
        .query_row(
            "SELECT json_extract(vals, '$.runtime_hours') FROM latest_state WHERE serial = ?1",
            [serial],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err)?
        .flatten();
    let mut effects =
        crate::reliability::record_repair_outcome(tx, order, model, outcome, runtime_hours, now)?;
    let mut reset = Vec::new();
    for c in &outcome.consumables_replaced {
        let Some(spec) = model.and_then(|m| m.consumables.iter().find(|s| &s.id == c)) else {
            continue; // validated before: unreachable
        };
        tx.execute(
            "INSERT INTO consumable_replacements (serial, consumable, at, runtime_hours, order_id) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![serial, c, ms(now), runtime_hours, order.id],
        )
        .map_err(sql_err)?;
        // the new part is full: the latest state shows it until the device reports again
        tx.execute(
            "UPDATE latest_state SET vals = json_set(vals, ?2, 100.0) WHERE serial = ?1",
            params![serial, format!("$.\"{}\"", spec.field)],
        )
        .map_err(sql_err)?;
        reset.push(json!({"consumable": c, "field": spec.field, "pct": 100.0}));
    }
    if !reset.is_empty() {
        effects.insert("consumables_reset".into(), Value::Array(reset));
    }
    if let Some(status) = outcome.device_status {
        let change = StatusChange {
            status,
            criticality: None,
            region: None,
            address: None,
            reason: Some(format!("order {} completed", order.id)),
        };
        set_device_status(tx, &order.serial, &change, actor, now)?;
        effects.insert("device_status".into(), json!(status));
    }
    Ok(Value::Object(effects))
}

/// Updates a device's status (and location) with a history row; returns the device before.
fn set_device_status(
    tx: &Transaction<'_>,
    serial: &Serial,
    change: &StatusChange,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Device, StoreError> {
    let before = read::device_row(tx, serial)?
        .ok_or_else(|| StoreError::NotFound(format!("device {serial}")))?;
    // the routes refuse this first, each with `address_required`; the store keeps the
    // rule for any other caller
    let address = change.address.as_deref().or(before.address.as_deref());
    if !change.status.allows_address(address) {
        return Err(StoreError::Invalid(format!(
            "device {serial} has no address: a device at a customer needs an address"
        )));
    }
    tx.execute(
        "UPDATE devices SET status = ?2, criticality = COALESCE(?3, criticality), \
         region = COALESCE(?4, region), address = COALESCE(?5, address) WHERE serial = ?1",
        params![
            serial.as_str(),
            change.status.as_str(),
            change.criticality.map(|c| c.as_str()),
            change.region,
            change.address
        ],
    )
    .map_err(sql_err)?;
    tx.execute(
        "INSERT INTO device_status_history (serial, at, actor, from_status, to_status, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            serial.as_str(),
            ms(now),
            actor.0,
            before.status.as_str(),
            change.status.as_str(),
            change.reason
        ],
    )
    .map_err(sql_err)?;
    Ok(before)
}

pub(crate) fn change_device_status(
    conn: &mut Connection,
    serial: &Serial,
    change: StatusChange,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Device, StoreError> {
    if change.status == LifecycleStatus::Unassigned {
        return Err(StoreError::Invalid(
            "a device cannot be set back to unassigned".into(),
        ));
    }
    let tx = conn.transaction().map_err(sql_err)?;
    let before = set_device_status(&tx, serial, &change, actor, now)?;
    let after = read::device_row(&tx, serial)?
        .ok_or_else(|| StoreError::Internal("device vanished".into()))?;
    insert_audit(
        &tx,
        now,
        &actor.0,
        "device.status",
        &format!("device:{serial}"),
        Some(&serde_json::to_value(&before).map_err(json_err)?),
        Some(&serde_json::to_value(&after).map_err(json_err)?),
    )?;
    tx.commit().map_err(sql_err)?;
    Ok(after)
}

pub(crate) fn create_manual_order(
    conn: &mut Connection,
    intent: OrderIntent,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<(Order, bool), StoreError> {
    let tx = conn.transaction().map_err(sql_err)?;
    if read::device_row(&tx, &intent.serial)?.is_none() {
        return Err(StoreError::NotFound(format!("device {}", intent.serial)));
    }
    let before = tx
        .query_row(
            "SELECT id FROM orders WHERE serial = ?1 AND cause = ?2 \
             AND status IN ('open', 'acknowledged', 'assigned', 'in_progress')",
            params![intent.serial.as_str(), intent.cause.as_str()],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .map_err(sql_err)?
        .map(|id| read::order(&tx, id))
        .transpose()?
        .flatten();
    let change = upsert_recorded(&tx, &intent, now, &actor.0)?;
    if change.created {
        tx.execute(
            "UPDATE orders SET origin = 'manual' WHERE id = ?1",
            [change.order_id],
        )
        .map_err(sql_err)?;
    }
    let after = read::order(&tx, change.order_id)?
        .ok_or_else(|| StoreError::Internal("order vanished".into()))?;
    insert_audit(
        &tx,
        now,
        &actor.0,
        if change.created {
            "order.create"
        } else {
            "order.retrigger"
        },
        &format!("order:{}", change.order_id),
        before
            .map(|b| serde_json::to_value(&b))
            .transpose()
            .map_err(json_err)?
            .as_ref(),
        Some(&serde_json::to_value(&after).map_err(json_err)?),
    )?;
    tx.commit().map_err(sql_err)?;
    Ok((after, change.created))
}

pub(crate) const EVENT_COLS: &str =
    "id, order_id, serial, at, actor, kind, from_status, to_status, version, data";

pub(crate) fn event_from(row: &Row<'_>) -> Result<OrderEvent, StoreError> {
    let serial: String = row.get(2).map_err(sql_err)?;
    let from: Option<String> = row.get(6).map_err(sql_err)?;
    let to: String = row.get(7).map_err(sql_err)?;
    let data: String = row.get(9).map_err(sql_err)?;
    Ok(OrderEvent {
        id: row.get(0).map_err(sql_err)?,
        order_id: row.get(1).map_err(sql_err)?,
        serial: Serial::parse(&serial)
            .map_err(|e| StoreError::Internal(format!("order_events.serial: {e}")))?,
        at: from_ms(row.get(3).map_err(sql_err)?),
        actor: row.get(4).map_err(sql_err)?,
        kind: row.get(5).map_err(sql_err)?,
        from_status: from
            .map(|f| parse_col("order_events.from_status", &f))
            .transpose()?,
        to_status: parse_col("order_events.to_status", &to)?,
        version: row.get(8).map_err(sql_err)?,
        data: serde_json::from_str(&data).map_err(json_err)?,
    })
}

fn collect<T>(
    mut rows: rusqlite::Rows<'_>,
    f: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        out.push(f(row)?);
    }
    Ok(out)
}

pub(crate) fn order_history(conn: &Connection, id: i64) -> Result<Vec<OrderEvent>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLS} FROM order_events WHERE order_id = ?1 ORDER BY id"
        ))
        .map_err(sql_err)?;
    collect(stmt.query([id]).map_err(sql_err)?, event_from)
}

pub(crate) fn order_events_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<OrderEvent>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLS} FROM order_events WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))
        .map_err(sql_err)?;
    collect(
        stmt.query(params![after, limit.clamp(1, 10_000) as i64])
            .map_err(sql_err)?,
        event_from,
    )
}

/// The device's failure events, oldest first. A row without a component (recorded from an
/// alarm or before components existed) gets the component of its failure mode in the
/// catalog, when the model has one.
pub(crate) fn failure_events(
    conn: &Connection,
    catalog: &fleetpulse_domain::catalog::Catalog,
    serial: &Serial,
) -> Result<Vec<FailureEvent>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, serial, at, runtime_hours, source, order_id, fault_code, notes, component, failure_mode \
             , model FROM failure_events WHERE serial = ?1 AND retracted_at IS NULL ORDER BY at, id",
        )
        .map_err(sql_err)?;
    collect(stmt.query([serial.as_str()]).map_err(sql_err)?, |row| {
        let failure_mode: Option<String> = row.get(9).map_err(sql_err)?;
        let model: Option<String> = row.get(10).map_err(sql_err)?;
        let component: Option<String> = row.get(8).map_err(sql_err)?;
        let component = component.or_else(|| {
            let (model, mode) = (model.as_deref()?, failure_mode.as_deref()?);
            catalog
                .failure_mode(model, mode)
                .map(|(c, _)| c.id.to_string())
        });
        Ok(FailureEvent {
            id: row.get(0).map_err(sql_err)?,
            serial: serial.clone(),
            at: from_ms(row.get(2).map_err(sql_err)?),
            runtime_hours: row.get(3).map_err(sql_err)?,
            source: row.get(4).map_err(sql_err)?,
            order_id: row.get(5).map_err(sql_err)?,
            fault_code: row.get(6).map_err(sql_err)?,
            component,
            failure_mode,
            notes: row.get(7).map_err(sql_err)?,
        })
    })
}

pub(crate) fn device_status_history(
    conn: &Connection,
    serial: &Serial,
) -> Result<Vec<StatusHistoryEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT at, actor, from_status, to_status, reason FROM device_status_history \
             WHERE serial = ?1 ORDER BY id",
        )
        .map_err(sql_err)?;
    collect(stmt.query([serial.as_str()]).map_err(sql_err)?, |row| {
        let from: Option<String> = row.get(2).map_err(sql_err)?;
        let to: String = row.get(3).map_err(sql_err)?;
        Ok(StatusHistoryEntry {
            at: from_ms(row.get(0).map_err(sql_err)?),
            actor: row.get(1).map_err(sql_err)?,
            from_status: from
                .map(|f| parse_col("device_status_history.from_status", &f))
                .transpose()?,
            to_status: parse_col("device_status_history.to_status", &to)?,
            reason: row.get(4).map_err(sql_err)?,
        })
    })
}
