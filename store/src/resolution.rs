//! Orders follow the device (policy `[resolution]`, migration 0012): what the store does
//! with an active order when the device, or a prediction run, shows that the condition
//! behind its cause has gone or come back.
//!
//! - **Close**: cancelled at once, `cancel_reason` `resolved by the device: …` (a fresh
//!   consumable). Cancelled, not completed: nobody did this order's work, and a completion
//!   would count as SLA met and feed the repair statistics.
//! - **Mark**: `condition_cleared_at` and `condition_evidence` are set; the order stays
//!   open. With a delay (an alarm that needs no visit) `cancel_at` is set too, and
//!   [`cancel_due`] cancels the order once it passes.
//! - **Returned**: the marks are cleared (a pending cancel with them).
//!
//! The system closes only what the system raised and nobody is working on: an order a
//! person created (`origin = manual`) or one `in_progress` is marked instead. Every
//! change bumps the version and writes its event (actor `system`) in the caller's
//! transaction, so it is atomic with the readings or the run that caused it; a mark that
//! is already there is not written again.

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::order::{Cause, OrderStatus};
use fleetpulse_domain::rules::{ConditionChange, ResolveAction};
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::{OrderChange, StoreError};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use crate::audit::insert_audit;
use crate::convert::{from_ms, json_err, ms, parse_col, sql_err};
use crate::orders::insert_event;

/// Actor of every change made here.
pub(crate) const ACTOR: &str = "system";

/// The active order of a (serial, cause), as far as resolution needs it.
struct Target {
    id: i64,
    serial: Serial,
    cause: Cause,
    status: OrderStatus,
    origin: String,
    cleared_at: Option<i64>,
    cancel_at: Option<i64>,
}

impl Target {
    /// The system may close it: it raised it, and nobody is working on it.
    fn closable(&self) -> bool {
        self.origin != "manual" && self.status != OrderStatus::InProgress
    }
}

const TARGET_COLS: &str = "id, serial, cause, status, origin, condition_cleared_at, cancel_at";

/// A row of [`TARGET_COLS`] as SQLite gives it.
type RawTarget = (
    i64,
    String,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
);

fn target_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawTarget> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn parse_target(row: RawTarget) -> Result<Target, StoreError> {
    let (id, serial, cause, status, origin, cleared_at, cancel_at) = row;
    Ok(Target {
        id,
        serial: Serial::parse(&serial)
            .map_err(|e| StoreError::Internal(format!("orders.serial: {e}")))?,
        cause: Cause::parse(&cause)
            .map_err(|e| StoreError::Internal(format!("orders.cause: {e}")))?,
        status: parse_col("orders.status", &status)?,
        origin,
        cleared_at,
        cancel_at,
    })
}

fn active(
    tx: &Transaction<'_>,
    serial: &Serial,
    cause: &Cause,
) -> Result<Option<Target>, StoreError> {
    let row = tx
        .prepare_cached(&format!(
            "SELECT {TARGET_COLS} FROM orders WHERE serial = ?1 AND cause = ?2 \
             AND status IN ('open', 'acknowledged', 'assigned', 'in_progress')"
        ))
        .and_then(|mut s| {
            s.query_row(params![serial.as_str(), cause.as_str()], target_from)
                .optional()
        })
        .map_err(sql_err)?;
    row.map(parse_target).transpose()
}

fn by_id(tx: &Transaction<'_>, id: i64) -> Result<Option<Target>, StoreError> {
    let row = tx
        .prepare_cached(&format!("SELECT {TARGET_COLS} FROM orders WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], target_from).optional())
        .map_err(sql_err)?;
    row.map(parse_target).transpose()
}

fn version(tx: &Transaction<'_>, id: i64) -> Result<u32, StoreError> {
    tx.prepare_cached("SELECT version FROM orders WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)))
        .map_err(sql_err)
}

fn changed(t: &Target) -> OrderChange {
    OrderChange {
        order_id: t.id,
        serial: t.serial.clone(),
        cause: t.cause.clone(),
        created: false,
    }
}

/// Applies what a commit's step showed about a cause to the device's active order of it.
/// `Some` when the order changed (for the commit report: it wakes the order streams).
pub(crate) fn apply(
    tx: &Transaction<'_>,
    serial: &Serial,
    change: &ConditionChange,
    now: DateTime<Utc>,
) -> Result<Option<OrderChange>, StoreError> {
    let Some(t) = active(tx, serial, change.cause())? else {
        return Ok(None);
    };
    let done = match change {
        ConditionChange::Gone {
            action, evidence, ..
        } => gone(tx, &t, *action, evidence, now)?,
        ConditionChange::Returned { evidence, .. } => returned(tx, &t, evidence, now)?,
    };
    Ok(done.then(|| changed(&t)))
}

/// The condition behind `t`'s cause has gone: close or mark it, per `action` (a mark that
/// is there already stays as it is: the clock of a pending cancel is not restarted).
fn gone(
    tx: &Transaction<'_>,
    t: &Target,
    action: ResolveAction,
    evidence: &Value,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    if t.cleared_at.is_some() {
        return Ok(false);
    }
    let action = if t.closable() {
        action
    } else {
        ResolveAction::Mark
    };
    match action {
        ResolveAction::Close => {
            let reason = format!("resolved by the device: {}", describe(evidence));
            close(tx, t, &reason, evidence, now, now)?;
        }
        ResolveAction::CancelAfter(delay) => mark(tx, t, evidence, Some(now + delay), now)?,
        ResolveAction::Mark => mark(tx, t, evidence, None, now)?,
    }
    Ok(true)
}

/// `field = value (seq N)` of a reading's evidence, for a cancel reason.
fn describe(evidence: &Value) -> String {
    let value = match &evidence["value"] {
        Value::Number(n) => format!("{n}"),
        other => other.to_string(),
    };
    format!(
        "{} = {value} reported (seq {})",
        evidence["field"].as_str().unwrap_or("?"),
        evidence["seq"]
    )
}

fn mark(
    tx: &Transaction<'_>,
    t: &Target,
    evidence: &Value,
    cancel_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE orders SET condition_cleared_at = ?2, condition_evidence = ?3, cancel_at = ?4, \
         updated_at = ?2, version = version + 1 WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.id,
            ms(now),
            evidence.to_string(),
            cancel_at.map(ms)
        ])
    })
    .map_err(sql_err)?;
    let data = json!({ "evidence": evidence, "cancel_at": cancel_at });
    insert_event(
        tx,
        t.id,
        &t.serial,
        now,
        ACTOR,
        "condition_cleared",
        Some(t.status),
        t.status,
        version(tx, t.id)?,
        &data,
    )?;
    tracing::info!(order_id = t.id, serial = %t.serial, cause = %t.cause, cancel_at = ?cancel_at, "order condition cleared");
    Ok(())
}

/// Cancels `t` as resolved by the device; `cleared_at` is when the condition went.
fn close(
    tx: &Transaction<'_>,
    t: &Target,
    reason: &str,
    evidence: &Value,
    cleared_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let before = crate::read::order(tx, t.id)?;
    tx.prepare_cached(
        "UPDATE orders SET status = 'cancelled', cancel_reason = ?2, closed_at = ?3, updated_at = ?3, \
         condition_cleared_at = ?4, condition_evidence = ?5, cancel_at = NULL, version = version + 1 \
         WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.id,
            reason,
            ms(now),
            ms(cleared_at),
            evidence.to_string()
        ])
    })
    .map_err(sql_err)?;
    let after = crate::read::order(tx, t.id)?
        .ok_or_else(|| StoreError::Internal(format!("order {} vanished", t.id)))?;
    let data = json!({
        "reason": reason,
        "resolved_by_device": true,
        "condition_cleared_at": cleared_at,
        "evidence": evidence,
    });
    insert_event(
        tx,
        t.id,
        &t.serial,
        now,
        ACTOR,
        "cancelled",
        Some(t.status),
        OrderStatus::Cancelled,
        after.version,
        &data,
    )?;
    insert_audit(
        tx,
        now,
        ACTOR,
        "order.resolved",
        &format!("order:{}", t.id),
        before
            .map(|b| serde_json::to_value(&b))
            .transpose()
            .map_err(json_err)?
            .as_ref(),
        Some(&serde_json::to_value(&after).map_err(json_err)?),
    )?;
    tracing::info!(order_id = t.id, serial = %t.serial, cause = %t.cause, reason, "order resolved by the device");
    Ok(())
}

/// The condition behind `t`'s cause is back: its marks (and a pending cancel) go.
fn returned(
    tx: &Transaction<'_>,
    t: &Target,
    evidence: &Value,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(cleared_at) = t.cleared_at else {
        return Ok(false);
    };
    tx.prepare_cached(
        "UPDATE orders SET condition_cleared_at = NULL, condition_evidence = NULL, cancel_at = NULL, \
         updated_at = ?2, version = version + 1 WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![t.id, ms(now)]))
    .map_err(sql_err)?;
    let data = json!({
        "evidence": evidence,
        "cleared_at": from_ms(cleared_at),
        "cancel_at": t.cancel_at.map(from_ms),
    });
    insert_event(
        tx,
        t.id,
        &t.serial,
        now,
        ACTOR,
        "condition_returned",
        Some(t.status),
        t.status,
        version(tx, t.id)?,
        &data,
    )?;
    tracing::info!(order_id = t.id, serial = %t.serial, cause = %t.cause, "order condition returned");
    Ok(true)
}

/// A trigger (rules or predictions) hit order `id` again: the condition holds, so a mark
/// of it being cleared goes. `true` when there was one.
pub(crate) fn trigger_returned(
    tx: &Transaction<'_>,
    id: i64,
    evidence: &Value,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    match by_id(tx, id)? {
        Some(t) if t.status.is_active() => returned(tx, &t, evidence, now),
        _ => Ok(false),
    }
}

/// A prediction run scored an active failure-risk order's mode below the threshold:
/// marked (`run_id`, the prediction's model, probability and threshold as evidence).
pub(crate) fn risk_fell(
    tx: &Transaction<'_>,
    id: i64,
    evidence: &Value,
    now: DateTime<Utc>,
) -> Result<Option<OrderChange>, StoreError> {
    let Some(t) = by_id(tx, id)?.filter(|t| t.status.is_active()) else {
        return Ok(None);
    };
    Ok(gone(tx, &t, ResolveAction::Mark, evidence, now)?.then(|| changed(&t)))
}

/// Cancels every active order whose `cancel_at` passed by `now` (an alarm that needs no
/// visit stayed clear for the policy's delay): actor `system`, the reading that cleared it
/// as evidence. An order started meanwhile (`in_progress`) is left alone. Returns the
/// orders cancelled.
pub(crate) fn cancel_due(
    conn: &mut Connection,
    now: DateTime<Utc>,
) -> Result<Vec<OrderChange>, StoreError> {
    let tx = conn.transaction().map_err(sql_err)?;
    let due: Vec<(Target, Option<String>)> = {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT {TARGET_COLS}, condition_evidence FROM orders \
                 WHERE cancel_at IS NOT NULL AND cancel_at <= ?1 \
                 AND status IN ('open', 'acknowledged', 'assigned', 'in_progress') ORDER BY cancel_at, id"
            ))
            .map_err(sql_err)?;
        let rows = stmt
            .query_map([ms(now)], |r| {
                Ok((target_from(r)?, r.get::<_, Option<String>>(7)?))
            })
            .map_err(sql_err)?;
        let mut due = Vec::new();
        for row in rows {
            let (t, evidence) = row.map_err(sql_err)?;
            due.push((parse_target(t)?, evidence));
        }
        due
    };
    let mut out = Vec::new();
    for (t, evidence) in due {
        if !t.closable() {
            continue;
        }
        let (Some(cleared_at), Some(cancel_at)) = (t.cleared_at, t.cancel_at) else {
            continue;
        };
        let evidence: Value = evidence
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(json_err)?
            .unwrap_or(Value::Null);
        let clear_for = Duration::milliseconds(cancel_at - cleared_at);
        let reason = format!(
            "resolved by the device: {} cleared at {} and stayed clear for {}",
            evidence["alarm"]
                .as_str()
                .map_or_else(|| "the condition".to_owned(), |a| format!("alarm {a}")),
            from_ms(cleared_at).to_rfc3339(),
            human(clear_for)
        );
        close(&tx, &t, &reason, &evidence, from_ms(cleared_at), now)?;
        out.push(changed(&t));
    }
    tx.commit().map_err(sql_err)?;
    Ok(out)
}

/// `2h`, `90m`, `45s`: the largest whole unit.
fn human(d: Duration) -> String {
    let s = d.num_seconds();
    if s % 86_400 == 0 && s > 0 {
        format!("{}d", s / 86_400)
    } else if s % 3_600 == 0 && s > 0 {
        format!("{}h", s / 3_600)
    } else if s % 60 == 0 && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
