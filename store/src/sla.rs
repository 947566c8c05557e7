//! SLA states as SQL over the `orders` columns: which deadlines count depends on the
//! status (`respond_by` while open, `arrive_by` until in progress, `complete_by` until
//! closed); an order is breached when a counting deadline passed, at risk when less than
//! a fifth of a counting deadline's time (from creation) is left.

use fleetpulse_domain::order::SlaState;
use rusqlite::types::Value as SqlValue;

/// Each counting deadline as (status list, deadline column). The conditions write
/// `+status` so SQLite walks the primary key (the page order) and stops at the page's
/// end, instead of merging three status-index searches and sorting every match
/// (measured in docs/benchmarks.md: 1.07 s → 20 ms p50 at 100 000 orders).
const COUNTING: [(&str, &str); 3] = [
    ("('open')", "respond_by"),
    ("('open', 'acknowledged', 'assigned')", "arrive_by"),
    (
        "('open', 'acknowledged', 'assigned', 'in_progress')",
        "complete_by",
    ),
];

fn breached() -> String {
    let parts: Vec<String> = COUNTING
        .iter()
        .map(|(st, col)| format!("(+status IN {st} AND {col} < ?)"))
        .collect();
    format!("({})", parts.join(" OR "))
}

fn at_risk() -> String {
    // 5 * (deadline - now) < deadline - created_at  ⇔  less than 20 % of the time left
    let parts: Vec<String> = COUNTING
        .iter()
        .map(|(st, col)| format!("(+status IN {st} AND 5 * ({col} - ?) < {col} - created_at)"))
        .collect();
    format!("({})", parts.join(" OR "))
}

/// Active orders (not completed or cancelled), as every order query selects them.
pub(crate) const ACTIVE: &str = "status IN ('open', 'acknowledged', 'assigned', 'in_progress')";

/// The WHERE condition of a state; bind [`args`] in order.
pub(crate) fn condition(state: SlaState) -> String {
    match state {
        SlaState::Breached => breached(),
        SlaState::AtRisk => format!("NOT {} AND {}", breached(), at_risk()),
        SlaState::OnTrack => format!("{ACTIVE} AND NOT {} AND NOT {}", breached(), at_risk()),
    }
}

/// The parameters of [`condition`]: `now` once per placeholder.
pub(crate) fn args(state: SlaState, now: i64) -> Vec<SqlValue> {
    let n = match state {
        SlaState::Breached => 3,
        SlaState::AtRisk | SlaState::OnTrack => 6,
    };
    vec![SqlValue::Integer(now); n]
}

/// [`condition`]'s breached and at-risk tests as one `CASE status` per state, for
/// counting many orders: each branch holds only the deadlines that count in its status
/// (from the same [`COUNTING`] table), so a row is tested against one to three deadlines
/// instead of every status list (a third of the time over 10 000 active orders). `?1` is
/// now; a closed order is neither.
pub(crate) fn per_status() -> (String, String) {
    let branches = |test: &dyn Fn(&str) -> String| {
        let mut sql = String::from("CASE status");
        for status in OrderStatus::ALL.iter().filter(|s| s.is_active()) {
            let quoted = format!("'{}'", status.as_str());
            let tests: Vec<String> = COUNTING
                .iter()
                .filter(|(statuses, _)| statuses.contains(&quoted))
                .map(|(_, col)| test(col))
                .collect();
            sql.push_str(&format!(" WHEN {quoted} THEN ({})", tests.join(" OR ")));
        }
        sql.push_str(" ELSE 0 END");
        sql
    };
    (
        branches(&|col| format!("{col} < ?1")),
        branches(&|col| format!("5 * ({col} - ?1) < {col} - created_at")),
    )
}

use chrono::{DateTime, Utc};
use fleetpulse_domain::order::OrderStatus;
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::StoreError;
use rusqlite::{Connection, params};
use serde_json::json;

use crate::convert::{ms, parse_col, sql_err};

/// Records an `sla_breached` order event for every counting deadline of an active order
/// that passed before `now` and has none yet (so each breach escalates exactly once).
/// Returns the (order id, deadline name) pairs escalated.
pub(crate) fn escalate(
    conn: &mut Connection,
    now: DateTime<Utc>,
) -> Result<Vec<(i64, &'static str)>, StoreError> {
    const NAMES: [&str; 3] = ["respond_by", "arrive_by", "complete_by"];
    let tx = conn.transaction().map_err(sql_err)?;
    let mut found = Vec::new();
    for ((statuses, col), name) in COUNTING.iter().zip(NAMES) {
        let sql = format!(
            "SELECT o.id, o.serial, o.status, o.version, o.{col} FROM orders o \
             WHERE o.status IN {statuses} AND o.{col} < ?1 AND NOT EXISTS ( \
               SELECT 1 FROM order_events e WHERE e.order_id = o.id AND e.kind = 'sla_breached' \
               AND json_extract(e.data, '$.deadline') = ?2)"
        );
        let mut stmt = tx.prepare_cached(&sql).map_err(sql_err)?;
        let rows = stmt
            .query_map(params![ms(now), name], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(sql_err)?;
        for row in rows {
            found.push((row.map_err(sql_err)?, name));
        }
    }
    let mut out = Vec::new();
    for ((id, serial, status, version, due), name) in found {
        let status: OrderStatus = parse_col("orders.status", &status)?;
        let serial = Serial::parse(&serial)
            .map_err(|e| StoreError::Internal(format!("orders.serial: {e}")))?;
        tx.execute(
            "INSERT INTO order_events (order_id, serial, at, actor, kind, from_status, to_status, version, data) \
             VALUES (?1, ?2, ?3, 'sla', 'sla_breached', ?4, ?4, ?5, ?6)",
            params![
                id,
                serial.as_str(),
                ms(now),
                status.as_str(),
                version,
                json!({ "deadline": name, "due": crate::convert::from_ms(due) }).to_string()
            ],
        )
        .map_err(sql_err)?;
        tracing::debug!(order_id = id, serial = %serial, deadline = name, "SLA breached: escalated");
        out.push((id, name));
    }
    tx.commit().map_err(sql_err)?;
    // one line per pass: a fast demo clock breaches many deadlines at once
    match out.as_slice() {
        [] => {}
        [(id, name)] => {
            tracing::warn!(order_id = id, deadline = name, "SLA breached: escalated")
        }
        many => tracing::warn!(
            orders = many.len(),
            first_order_id = many[0].0,
            "SLA deadlines breached: escalated (order.sla_breached events)"
        ),
    }
    Ok(out)
}

/// SLA attainment of the orders created in `[from, to)`, per priority, evaluated at `now`.
pub(crate) fn attainment(
    conn: &Connection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<serde_json::Value, StoreError> {
    // per deadline: met (done in time), missed (done late, or not done and past due),
    // pending (not done, not yet due). "done" for respond = acknowledged_at, arrive =
    // started_at (on site), complete = closed_at of a completed order.
    let sql = "SELECT priority, COUNT(*), \
        SUM(acknowledged_at IS NOT NULL AND acknowledged_at <= respond_by), \
        SUM((acknowledged_at IS NOT NULL AND acknowledged_at > respond_by) OR (acknowledged_at IS NULL AND status <> 'cancelled' AND respond_by < ?3)), \
        SUM(started_at IS NOT NULL AND started_at <= arrive_by), \
        SUM((started_at IS NOT NULL AND started_at > arrive_by) OR (started_at IS NULL AND status NOT IN ('cancelled', 'completed') AND arrive_by < ?3)), \
        SUM(status = 'completed' AND closed_at <= complete_by), \
        SUM((status = 'completed' AND closed_at > complete_by) OR (status NOT IN ('cancelled', 'completed') AND complete_by < ?3)), \
        SUM(status = 'cancelled') \
        FROM orders WHERE created_at >= ?1 AND created_at < ?2 GROUP BY priority ORDER BY priority";
    let mut stmt = conn.prepare_cached(sql).map_err(sql_err)?;
    let rows = stmt
        .query_map(params![ms(from), ms(to), ms(now)], |r| {
            let n = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0));
            Ok((
                r.get::<_, String>(0)?,
                n(1)?,
                [n(2)?, n(3)?, n(4)?, n(5)?, n(6)?, n(7)?],
                n(8)?,
            ))
        })
        .map_err(sql_err)?;
    let pct = |met: i64, missed: i64| {
        (met + missed > 0).then(|| (met as f64) * 100.0 / ((met + missed) as f64))
    };
    let mut per = Vec::new();
    for row in rows {
        let (priority, total, m, cancelled) = row.map_err(sql_err)?;
        let part = |met: i64, missed: i64| json!({"met": met, "missed": missed, "attainment_pct": pct(met, missed)});
        per.push(json!({
            "priority": priority, "orders": total, "cancelled": cancelled,
            "respond": part(m[0], m[1]), "arrive": part(m[2], m[3]), "complete": part(m[4], m[5]),
        }));
    }
    Ok(json!({ "from": from, "to": to, "evaluated_at": now, "by_priority": per }))
}
