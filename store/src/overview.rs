//! The overview page's counts, in one read snapshot: each is a `GROUP BY` that SQLite
//! answers from an index (only the devices' connection reads the table), so what comes
//! back is a few dozen grouped rows, never the fleet's rows. The work is one walk of an
//! index per count, over the devices, the active orders, the open alarm episodes and
//! the day's dead letters; `examples/overview_load.rs` measures it.

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::order::{Priority, SlaState};
use fleetpulse_domain::store::{
    Count, DayCount, FleetOverview, SILENT_KEY, StoreError, UNKNOWN_KEY,
};
use fleetpulse_domain::telemetry::RejectReason;
use rusqlite::{Connection, params};

use crate::convert::{from_ms, ms, sql_err};
use crate::sla;

const DAY_MS: i64 = 86_400_000;

/// A device that is silent at a cutoff (`?1` = now − silent_after), as the silent-device
/// rule (`fleetpulse_rules::silent`) decides it without the habitual off-time: at a
/// customer, seen at least once and not since the cutoff, and its last connection did not
/// end gracefully at or after that last report. `last_seen_at <= ?1` is false for a
/// device never seen (NULL).
const SILENT: &str = "status = 'at_customer' AND last_seen_at <= ?1 \
     AND (disconnected_at IS NULL OR disconnect_graceful IS NOT 1 OR disconnected_at < last_seen_at)";

/// See [`fleetpulse_domain::store::Store::fleet_overview`].
pub(crate) fn fleet_overview(
    conn: &Connection,
    now: DateTime<Utc>,
    silent_after: Duration,
) -> Result<FleetOverview, StoreError> {
    // one snapshot: the total and every breakdown count the same rows
    conn.execute_batch("BEGIN").map_err(sql_err)?;
    let result = read_overview(conn, now, silent_after);
    let _ = conn.execute_batch("COMMIT");
    result
}

/// What the device breakdowns group by: each column has its own index, so each count
/// walks an index of the devices instead of their rows.
const DEVICE_GROUPS: [&str; 4] = ["status", "model", "region", "criticality"];

fn device_group_sql(column: &str) -> String {
    format!("SELECT {column}, COUNT(*) FROM devices GROUP BY {column}")
}

/// Devices by connection, silent ones apart (`?1`: the silence cutoff). No index: ingest
/// rewrites `connection` and `last_seen_at` when a device reports (once a minute at
/// most), and an index holding them would be rewritten with every such update, a cost
/// on the ingest path; this count reads the table instead.
fn connection_sql() -> String {
    format!(
        "SELECT CASE WHEN {SILENT} THEN '{SILENT_KEY}' ELSE connection END, COUNT(*) \
         FROM devices GROUP BY 1"
    )
}

/// Open episodes by severity: a walk of the partial index of open episodes' severities.
const ALARMS_SQL: &str =
    "SELECT severity, COUNT(*) FROM alarm_episodes WHERE ended_at IS NULL GROUP BY severity";

/// Active orders per (status, priority), with how many of them are breached and at risk
/// at `?1` (on track: neither), the states of [`sla::condition`]. The partial covering
/// index of active orders walks them in (status, priority) order: no row is read and the
/// groups need no sort.
fn orders_sql() -> String {
    let (breached, at_risk) = sla::per_status();
    format!(
        "SELECT status, priority, COUNT(*), SUM({breached}), SUM(NOT ({breached}) AND ({at_risk})) \
         FROM orders WHERE {} GROUP BY status, priority",
        sla::ACTIVE
    )
}

/// Dead letters first received in `[?1, ?2)` by reason: for each reason a range of the
/// (reason, receipt) index, counted in index order (no sort). Every reason the store
/// writes is a [`RejectReason`], and each is listed.
fn letters_sql() -> String {
    let reasons: Vec<String> = RejectReason::ALL
        .iter()
        .map(|r| format!("'{}'", r.as_str()))
        .collect();
    format!(
        "SELECT reason, COUNT(*) FROM dead_letters WHERE reason IN ({}) \
         AND received_at >= ?1 AND received_at < ?2 GROUP BY reason",
        reasons.join(", ")
    )
}

/// Active orders whose completion deadline is in `[?1, ?2)` per (UTC day since 1970,
/// priority), with their labour and that of their bundled tasks (through the tasks'
/// `(order_id, cause)` index). SQLite's division truncates towards zero, so a deadline
/// before 1970 is moved down a day: the day is always the one the deadline falls on.
fn days_sql() -> String {
    format!(
        "SELECT complete_by / {DAY_MS} - (complete_by % {DAY_MS} < 0), priority, COUNT(*), \
         SUM(labour_minutes + (SELECT COALESCE(SUM(t.labour_minutes), 0) FROM order_tasks t \
         WHERE t.order_id = orders.id)) \
         FROM orders WHERE {} AND complete_by >= ?1 AND complete_by < ?2 GROUP BY 1, 2 ORDER BY 1",
        sla::ACTIVE
    )
}

fn read_overview(
    conn: &Connection,
    now: DateTime<Utc>,
    silent_after: Duration,
) -> Result<FleetOverview, StoreError> {
    let [by_status, by_model, by_region, by_criticality] =
        DEVICE_GROUPS.map(|column| grouped(conn, &device_group_sql(column), []));
    let (by_status, by_model, by_region, by_criticality) =
        (by_status?, by_model?, by_region?, by_criticality?);
    let devices = by_status.iter().map(|(_, n)| n).sum();
    let by_connection = grouped(conn, &connection_sql(), params![ms(now - silent_after)])?;
    let alarms = grouped(conn, ALARMS_SQL, [])?;

    let (mut by_status_o, mut by_priority_o, mut by_sla_o) = (Vec::new(), Vec::new(), Vec::new());
    let mut stmt = conn.prepare_cached(&orders_sql()).map_err(sql_err)?;
    let mut rows = stmt.query(params![ms(now)]).map_err(sql_err)?;
    while let Some(r) = rows.next().map_err(sql_err)? {
        let n = count_col(r, 2)?;
        let breached = count_col(r, 3)?;
        let at_risk = count_col(r, 4)?;
        by_status_o.push((r.get::<_, String>(0).map_err(sql_err)?, n));
        by_priority_o.push((r.get::<_, String>(1).map_err(sql_err)?, n));
        by_sla_o.extend([
            (SlaState::Breached.as_str().to_owned(), breached),
            (SlaState::AtRisk.as_str().to_owned(), at_risk),
            (
                SlaState::OnTrack.as_str().to_owned(),
                n.saturating_sub(breached + at_risk),
            ),
        ]);
    }
    drop(rows);
    drop(stmt);

    let letters = grouped(
        conn,
        &letters_sql(),
        params![ms(now - Duration::hours(24)), ms(now)],
    )?;

    Ok(FleetOverview {
        devices,
        by_status: Count::ranked(known(by_status)),
        by_model: Count::ranked(known(by_model)),
        by_region: Count::ranked(known(by_region)),
        by_criticality: Count::ranked(known(by_criticality)),
        by_connection: Count::ranked(known(by_connection)),
        active_alarms_by_severity: Count::ranked(known(alarms)),
        orders_by_status: Count::ranked(by_status_o),
        orders_by_priority: Count::ranked(by_priority_o),
        orders_by_sla: Count::ranked(by_sla_o),
        dead_letters_24h: letters.iter().map(|(_, n)| n).sum(),
        dead_letters_by_reason_24h: Count::ranked(known(letters)),
    })
}

/// See [`fleetpulse_domain::store::Store::order_counts_by_day`].
pub(crate) fn order_counts_by_day(
    conn: &Connection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DayCount>, StoreError> {
    let mut stmt = conn.prepare_cached(&days_sql()).map_err(sql_err)?;
    let mut rows = stmt.query(params![ms(from), ms(to)]).map_err(sql_err)?;
    let mut out: Vec<DayCount> = Vec::new();
    while let Some(r) = rows.next().map_err(sql_err)? {
        let day_no: i64 = r.get(0).map_err(sql_err)?;
        let priority: String = r.get(1).map_err(sql_err)?;
        let n = count_col(r, 2)?;
        let labour = count_col(r, 3)?;
        let day = from_ms(day_no * DAY_MS).date_naive();
        if out.last().is_none_or(|d| d.day != day) {
            out.push(DayCount {
                day,
                orders: 0,
                by_priority: Priority::ALL
                    .iter()
                    .map(|p| Count {
                        key: p.as_str().to_owned(),
                        count: 0,
                    })
                    .collect(),
                labour_minutes: 0,
            });
        }
        let entry = out.last_mut().expect("pushed above");
        entry.orders += n;
        entry.labour_minutes += labour;
        match entry.by_priority.iter_mut().find(|c| c.key == priority) {
            Some(c) => c.count += n,
            // not a priority of this build: kept, after the known ones
            None => entry.by_priority.push(Count {
                key: priority,
                count: n,
            }),
        }
    }
    Ok(out)
}

/// `(key, count)` rows of a two-column `GROUP BY`; a NULL key stays `None`.
fn grouped<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> Result<Vec<(Option<String>, u64)>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(sql_err)?;
    let mut rows = stmt.query(params).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql_err)? {
        out.push((r.get(0).map_err(sql_err)?, count_col(r, 1)?));
    }
    Ok(out)
}

/// NULL keys under [`UNKNOWN_KEY`].
fn known(rows: Vec<(Option<String>, u64)>) -> impl Iterator<Item = (String, u64)> {
    rows.into_iter()
        .map(|(k, n)| (k.unwrap_or_else(|| UNKNOWN_KEY.to_owned()), n))
}

fn count_col(r: &rusqlite::Row<'_>, i: usize) -> Result<u64, StoreError> {
    let n: Option<i64> = r.get(i).map_err(sql_err)?;
    Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each count reads the index meant for it (a fresh store, no statistics: the plan
    /// SQLite picks in production), and only the connection count reads rows, of the
    /// devices table.
    #[test]
    fn every_count_walks_its_index() {
        let mut conn = Connection::open_in_memory().expect("open");
        crate::schema::migrate(&mut conn).expect("migrate");
        let plan = |sql: &str| -> String {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explain");
            let nulls = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
            let rows = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .expect("plan");
            rows.map(|r| r.expect("plan row"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        for column in DEVICE_GROUPS {
            let p = plan(&device_group_sql(column));
            assert!(
                p.contains(&format!("COVERING INDEX devices_by_{column}")),
                "{column}: {p}"
            );
        }
        let p = plan(ALARMS_SQL);
        assert!(p.contains("alarm_episodes_open_by_severity"), "{p}");
        let p = plan(&orders_sql());
        assert!(p.contains("COVERING INDEX orders_active_sla"), "{p}");
        assert!(
            !p.contains("TEMP B-TREE"),
            "groups stream in index order: {p}"
        );
        let p = plan(&days_sql());
        assert!(p.contains("COVERING INDEX orders_active_sla"), "{p}");
        let p = plan(&letters_sql());
        assert!(
            p.contains(
                "COVERING INDEX dead_letters_by_reason_received (reason=? AND received_at>? AND received_at<?)"
            ),
            "{p}"
        );
        assert!(
            !p.contains("TEMP B-TREE"),
            "groups stream in index order: {p}"
        );
        let p = plan(&connection_sql());
        assert!(p.starts_with("SCAN devices"), "{p}");
    }

    #[test]
    fn the_per_status_sla_tests_name_the_deadlines_that_count() {
        let (breached, at_risk) = sla::per_status();
        assert_eq!(
            breached,
            "CASE status WHEN 'open' THEN (respond_by < ?1 OR arrive_by < ?1 OR complete_by < ?1) \
             WHEN 'acknowledged' THEN (arrive_by < ?1 OR complete_by < ?1) \
             WHEN 'assigned' THEN (arrive_by < ?1 OR complete_by < ?1) \
             WHEN 'in_progress' THEN (complete_by < ?1) ELSE 0 END"
        );
        assert!(
            at_risk.contains(
                "WHEN 'in_progress' THEN (5 * (complete_by - ?1) < complete_by - created_at)"
            ),
            "{at_risk}"
        );
    }
}
