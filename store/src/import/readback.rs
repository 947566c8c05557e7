//! Reading a device's history back: maintenance and meter values.

use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::history::{MaintenanceEntry, MeterQuery, MeterValue};
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::StoreError;
use rusqlite::{Connection, params};

use crate::convert::{from_ms, ms, sql_err};

/// Imported maintenance records and order consumable replacements, oldest first.
pub(crate) fn maintenance(
    conn: &Connection,
    serial: &Serial,
) -> Result<Vec<MaintenanceEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT at, kind, COALESCE(component, consumable), runtime_hours, source, NULL, notes, id, 0 \
             FROM maintenance_records WHERE serial = ?1 \
             UNION ALL SELECT at, 'consumable', consumable, runtime_hours, 'order', order_id, NULL, id, 1 \
             FROM consumable_replacements WHERE serial = ?1 ORDER BY 1, 9, 8",
        )
        .map_err(sql_err)?;
    let rows = stmt
        .query_map([serial.as_str()], |r| {
            Ok(MaintenanceEntry {
                at: from_ms(r.get(0)?),
                kind: r.get(1)?,
                component: r.get(2)?,
                runtime_hours: r.get(3)?,
                source: r.get(4)?,
                order_id: r.get(5)?,
                notes: r.get(6)?,
            })
        })
        .map_err(sql_err)?;
    rows.collect::<Result<_, _>>().map_err(sql_err)
}

/// The meter fields of a device: `runtime_hours`, the meters its model's components age
/// on, and the fields of its imported meter history.
fn meter_fields(
    conn: &Connection,
    catalog: &Catalog,
    serial: &Serial,
) -> Result<Vec<String>, StoreError> {
    let model: Option<String> = conn
        .query_row(
            "SELECT model FROM devices WHERE serial = ?1",
            [serial.as_str()],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    let mut fields = vec!["runtime_hours".to_owned()];
    if let Some(m) = model.as_deref() {
        fields.extend(
            catalog
                .components(m)
                .iter()
                .filter_map(|c| c.ages_on.field().map(str::to_owned)),
        );
    }
    let mut stmt = conn
        .prepare_cached("SELECT DISTINCT field FROM meter_history WHERE serial = ?1")
        .map_err(sql_err)?;
    let imported = stmt
        .query_map([serial.as_str()], |r| r.get::<_, String>(0))
        .map_err(sql_err)?;
    for f in imported {
        fields.push(f.map_err(sql_err)?);
    }
    fields.sort();
    fields.dedup();
    Ok(fields)
}

/// Meter values of a device, oldest first, at most `query.limit`.
pub(crate) fn meters(
    conn: &Connection,
    catalog: &Catalog,
    serial: &Serial,
    query: &MeterQuery,
) -> Result<Vec<MeterValue>, StoreError> {
    let fields = match &query.field {
        Some(f) => vec![f.clone()],
        None => meter_fields(conn, catalog, serial)?,
    };
    let from = query.from.map_or(i64::MIN, ms);
    let to = query.to.map_or(i64::MAX, ms);
    let mut stmt = conn
        .prepare_cached(
            "SELECT at, value, 'import' FROM meter_history WHERE serial = ?1 AND field = ?2 AND at >= ?3 AND at < ?4 \
             UNION ALL SELECT r.hour, r.last, CASE WHEN r.last_seq > 0 THEN 'live' ELSE 'backfill' END FROM rollups r \
             WHERE r.serial = ?1 AND r.field = ?2 AND r.hour >= ?3 AND r.hour < ?4 AND (r.last_seq > 0 OR EXISTS \
             (SELECT 1 FROM backfill_hours b WHERE b.serial = r.serial AND b.hour = r.hour)) ORDER BY 1 LIMIT ?5",
        )
        .map_err(sql_err)?;
    let mut out = Vec::new();
    for field in fields {
        let rows = stmt
            .query_map(
                params![serial.as_str(), field, from, to, query.limit as i64],
                |r| {
                    Ok(MeterValue {
                        field: field.clone(),
                        at: from_ms(r.get(0)?),
                        value: r.get(1)?,
                        source: r.get(2)?,
                    })
                },
            )
            .map_err(sql_err)?;
        for v in rows {
            out.push(v.map_err(sql_err)?);
        }
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.field.cmp(&b.field)));
    out.truncate(query.limit);
    Ok(out)
}
