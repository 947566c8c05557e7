//! Maintenance rows: `serial, at, kind, runtime_hours, component, consumable, notes`.
//!
//! `kind` is a maintenance kind of the catalog (built in: `service`, `consumable`,
//! `replacement`, `inspection`; more with `[[maintenance_kind]]`). A kind that renews a
//! component (`renews_component`) needs the component, which must be one of the device
//! model's; `consumable` needs a component with a life field. `consumable` is the old
//! name of the `component` column and may be used instead of it. The import key is
//! `maintenance|serial|at|kind|component`, the same bytes as before components existed.

use chrono::{DateTime, Utc};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::store::StoreError;
use rusqlite::{Transaction, params};

use super::{Loaded, Row, common, identifier};
use crate::convert::{ms, sql_err};

/// The columns of a maintenance file.
pub(super) const COLUMNS: &[&str] = &[
    "serial",
    "at",
    "runtime_hours",
    "kind",
    "component",
    "consumable",
    "notes",
];

pub(super) fn import(
    tx: &Transaction<'_>,
    catalog: &Catalog,
    row: &Row,
    now: DateTime<Utc>,
) -> Result<Result<Loaded, String>, StoreError> {
    let c = match common(tx, row, now)? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let known_kinds = || {
        catalog
            .maintenance_kinds()
            .iter()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kind = match row.get("kind") {
        Some(k) => match catalog.maintenance_kind(k) {
            Some(spec) => spec,
            None => {
                return Ok(Err(format!(
                    "kind {k:?} is not a maintenance kind of the catalog ({})",
                    known_kinds()
                )));
            }
        },
        None => return Ok(Err(format!("kind is empty ({})", known_kinds()))),
    };
    let component = match (identifier(row, "component"), identifier(row, "consumable")) {
        (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        (Ok(Some(a)), Ok(Some(b))) if a != b => {
            return Ok(Err(format!(
                "component {a:?} and consumable {b:?} differ (consumable is the old name of component: give one)"
            )));
        }
        (Ok(a), Ok(b)) => a.or(b),
    };
    let Some(id) = component.as_deref() else {
        if kind.renews_component {
            return Ok(Err(format!(
                "kind {} renews a component: name it in the component column",
                kind.id
            )));
        }
        return insert(tx, &c, &kind.id, None);
    };
    let Some(spec) = c.device.model.as_deref().and_then(|m| catalog.model(m)) else {
        return Ok(Err(format!(
            "serial {} has no model in the catalog: component {id:?} cannot be checked",
            c.serial
        )));
    };
    let model = spec.id.as_str();
    if kind.id == "consumable" {
        if catalog
            .component(model, id)
            .is_none_or(|k| k.life_field.is_none())
        {
            let known: Vec<&str> = spec.consumables.iter().map(|s| s.id.as_str()).collect();
            return Ok(Err(format!(
                "consumable {id:?} is not a consumable of model {model} (known: {})",
                known.join(", ")
            )));
        }
    } else if catalog.component(model, id).is_none() {
        let known: Vec<&str> = catalog
            .components(model)
            .iter()
            .map(|k| k.id.as_str())
            .collect();
        return Ok(Err(format!(
            "component {id:?} is not a component of model {model} ({})",
            known.join(", ")
        )));
    }
    insert(tx, &c, &kind.id, Some(id))
}

fn insert(
    tx: &Transaction<'_>,
    c: &super::Common,
    kind: &str,
    component: Option<&str>,
) -> Result<Result<Loaded, String>, StoreError> {
    let key = format!(
        "maintenance|{}|{}|{kind}|{}",
        c.serial,
        ms(c.at),
        component.unwrap_or("")
    );
    // `consumable` keeps its meaning for the readers that predate components
    let consumable = component.filter(|_| kind == "consumable");
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO maintenance_records (serial, at, runtime_hours, kind, consumable, component, notes, \
             source, import_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'import', ?8)",
        )
        .and_then(|mut s| {
            s.execute(params![
                c.serial.as_str(),
                ms(c.at),
                c.runtime_hours,
                kind,
                consumable,
                component,
                c.notes,
                key
            ])
        })
        .map_err(sql_err)?;
    Ok(Ok(if inserted == 1 {
        Loaded::Imported
    } else {
        Loaded::Duplicate
    }))
}
