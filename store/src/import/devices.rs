//! Device rows: `serial, model, status, criticality, region, address, commissioned_at,
//! runtime_hours_at_registration, observed_from` (the columns of
//! `POST /api/v1/devices/import`, with the same checks as `POST /api/v1/devices`).
//!
//! A serial registered before counts as a duplicate when every value the row gives is
//! the registered one; a different value is refused on the line, naming the column (an
//! import never silently updates a device).

use chrono::{DateTime, Utc};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::store::{Device, NewDevice, StoreError};
use rusqlite::Transaction;
use serde_json::{Map, Value};

use super::{Loaded, Row};
use crate::read;
use crate::write::register_in;

/// The columns of a device file.
pub(super) const COLUMNS: &[&str] = &[
    "serial",
    "model",
    "status",
    "criticality",
    "region",
    "address",
    "commissioned_at",
    "runtime_hours_at_registration",
    "observed_from",
];

/// The columns every device file has.
pub(super) const REQUIRED: &[&str] = &["serial", "model"];

/// The row as the body `POST /api/v1/devices` takes.
fn new_device(row: &Row) -> Result<NewDevice, String> {
    let mut obj = Map::new();
    for (k, v) in &row.cells {
        let value = match k.as_str() {
            "runtime_hours_at_registration" => match v.parse::<f64>() {
                Ok(n) if n.is_finite() => Value::from(n),
                _ => return Err(format!("{k} {v:?} is not a number")),
            },
            _ => Value::String(v.clone()),
        };
        obj.insert(k.clone(), value);
    }
    serde_json::from_value(Value::Object(obj)).map_err(|e| e.to_string())
}

/// The columns whose value in `d` differs from the registered device's.
fn differences(d: &NewDevice, row: &Row, reg: &Device, catalog: &Catalog) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |column: &str, same: bool, theirs: String| {
        if row.get(column).is_some() && !same {
            out.push(format!("{column} (registered: {theirs})"));
        }
    };
    check(
        "model",
        reg.model.as_ref() == Some(&d.model),
        reg.model.as_ref().map_or("none".into(), |m| m.to_string()),
    );
    check(
        "status",
        d.status == Some(reg.status),
        reg.status.as_str().into(),
    );
    let criticality = d.criticality.or_else(|| {
        catalog
            .model(d.model.as_str())
            .map(|m| m.default_criticality)
    });
    check(
        "criticality",
        criticality == Some(reg.criticality),
        reg.criticality.as_str().into(),
    );
    check(
        "region",
        d.region == reg.region,
        format!("{:?}", reg.region),
    );
    check(
        "address",
        d.address == reg.address,
        format!("{:?}", reg.address),
    );
    let time = |t: Option<DateTime<Utc>>| t.map_or("none".into(), |t| t.to_rfc3339());
    check(
        "commissioned_at",
        d.commissioned_at == reg.commissioned_at,
        time(reg.commissioned_at),
    );
    check(
        "runtime_hours_at_registration",
        d.runtime_hours_at_registration == reg.runtime_hours_at_registration,
        format!("{:?}", reg.runtime_hours_at_registration),
    );
    check(
        "observed_from",
        d.observed_from == reg.observed_from,
        time(reg.observed_from),
    );
    out
}

pub(super) fn import(
    tx: &Transaction<'_>,
    catalog: &Catalog,
    row: &Row,
    now: DateTime<Utc>,
) -> Result<Result<Loaded, String>, StoreError> {
    let d = match new_device(row) {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    if catalog.model(d.model.as_str()).is_none() {
        let known: Vec<&str> = catalog.models().map(|m| m.id.as_str()).collect();
        return Ok(Err(format!(
            "model {} is not in the catalog; known models: {}",
            d.model,
            known.join(", ")
        )));
    }
    if let Some(status) = d.status
        && !status.allows_address(d.address.as_deref())
    {
        return Ok(Err("a device at a customer needs an address".into()));
    }
    if let Some(reg) = read::device_row(tx, &d.serial)?
        && reg.status != fleetpulse_domain::LifecycleStatus::Unassigned
    {
        let diff = differences(&d, row, &reg, catalog);
        return Ok(if diff.is_empty() {
            Ok(Loaded::Duplicate)
        } else {
            Err(format!(
                "device {} is already registered with other values: {}; change it with POST /api/v1/devices/{}/status, an import does not update",
                d.serial,
                diff.join(", "),
                d.serial
            ))
        });
    }
    match register_in(tx, catalog, d, now) {
        Ok(_) => Ok(Ok(Loaded::Imported)),
        Err(StoreError::Invalid(e) | StoreError::Conflict(e)) => Ok(Err(e)),
        Err(e) => Err(e),
    }
}
