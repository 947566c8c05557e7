//! Components, failure modes and maintenance kinds of the catalog.
//!
//! A model's *components* are its replaceable parts. Each ages on one axis (runtime
//! hours, another cumulative meter, or calendar time), fails in one or more *failure
//! modes* (each optionally indicated by alarm or fault codes), and may be a consumable
//! whose remaining life the device reports in a percentage field.
//!
//! The file keeps today's shape and adds to it (`[[model.component]]`,
//! `[[model.component.failure_mode]]`, `[[maintenance_kind]]`); the catalog resolves
//! every model into one list of [`Component`]s:
//! - each `[[model.component]]` as written; one without `failure_mode` entries has one
//!   implicit mode whose id is the component id;
//! - each `[[model.consumable]]` as a component with its `field` as `life_field`, aging
//!   on runtime hours, with no failure mode of its own;
//! - each alarm with `counts_as_failure = true` and `failure_mode = m` attaches its code
//!   to the component that has mode `m` (or to the `component` it names); when no
//!   component has it, an implicit component with id `m` and the one mode `m` is created.
//!   This is what a failure mode meant before components existed: the part whose age
//!   counts.
//!
//! `ModelSpec::consumables` stays the list the depletion rules, forecasts and the
//! simulator read: every component with a `life_field` is in it.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::alarm::AlarmCode;
use crate::device::string_enum;
use crate::order::PartRef;
use crate::telemetry::{known_field, valid_field_name};

use super::{CatalogError, ConsumableSpec, ModelSpec, validate_parts};

/// Why a string is not a component, failure mode or maintenance kind id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {value:?} must be a lower-case letter followed by at most 63 lower-case letters, digits or '_'"
)]
pub struct CatalogIdError {
    /// What the id names (`component id`, `failure mode id`, …).
    pub what: &'static str,
    /// The refused text.
    pub value: String,
}

/// `[a-z][a-z0-9_]{0,63}`: the shape of component, failure mode and maintenance kind ids.
pub fn is_catalog_id(s: &str) -> bool {
    valid_field_name(s)
}

macro_rules! catalog_id {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses `[a-z][a-z0-9_]{0,63}`.
            pub fn parse(s: &str) -> Result<Self, CatalogIdError> {
                if is_catalog_id(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(CatalogIdError { what: $what, value: s.to_owned() })
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = CatalogIdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> Self {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        // written out for the pattern: the derive cannot put one on a newtype's schema
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(concat!("A ", $what, ": a lower-case letter, then up to 63 lower-case letters, digits or _")))
                    .pattern(Some("^[a-z][a-z0-9_]{0,63}$"))
                    .max_length(Some(64))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }
    };
}

catalog_id!(
    /// A component id, unique within its model: `comp1`, `sieve_bed`, `filter`.
    ComponentId,
    "component id"
);

catalog_id!(
    /// A failure mode id, unique within its model and a global key across the catalog
    /// (one failure-risk model per mode, order cause `failure_risk:<mode>`).
    ModeId,
    "failure mode id"
);

/// What a component's age is measured on.
///
/// Text form (TOML, JSON, SQL): `runtime_hours` (the default), `calendar`, or
/// `meter:<field>` for another cumulative meter the device reports in hours
/// (`meter:blower_hours`). `meter:runtime_hours` is `runtime_hours`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AgesOn {
    /// The device's `runtime_hours` meter.
    #[default]
    Runtime,
    /// Wall-clock time since installation, in hours.
    Calendar,
    /// Another cumulative meter field, in hours.
    Meter(String),
}

impl AgesOn {
    /// Parses the text form; the error says what is accepted.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "runtime_hours" => Ok(Self::Runtime),
            "calendar" => Ok(Self::Calendar),
            _ => {
                let Some(field) = s.strip_prefix("meter:") else {
                    return Err(format!(
                        "ages_on {s:?} must be runtime_hours, calendar or meter:<field>"
                    ));
                };
                if field == "runtime_hours" {
                    return Ok(Self::Runtime);
                }
                if !valid_field_name(field) {
                    return Err(format!(
                        "ages_on {s:?}: the meter field must match [a-z][a-z0-9_]{{0,63}}"
                    ));
                }
                match known_field(field) {
                    Some(f) if f.unit != "h" => Err(format!(
                        "ages_on {s:?}: {field} is measured in {}, not a meter in hours",
                        f.unit
                    )),
                    _ => Ok(Self::Meter(field.to_owned())),
                }
            }
        }
    }

    /// The telemetry field the age is read from: `runtime_hours`, the meter's field, or
    /// `None` for calendar time.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Runtime => Some("runtime_hours"),
            Self::Calendar => None,
            Self::Meter(f) => Some(f),
        }
    }
}

impl fmt::Display for AgesOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Runtime => f.write_str("runtime_hours"),
            Self::Calendar => f.write_str("calendar"),
            Self::Meter(field) => write!(f, "meter:{field}"),
        }
    }
}

impl TryFrom<String> for AgesOn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<AgesOn> for String {
    fn from(a: AgesOn) -> Self {
        a.to_string()
    }
}

impl utoipa::PartialSchema for AgesOn {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "What the component's age is measured on: runtime_hours, calendar or meter:<field>",
            ))
            .pattern(Some(
                "^(runtime_hours|calendar|meter:[a-z][a-z0-9_]{0,63})$",
            ))
            .into()
    }
}

impl utoipa::ToSchema for AgesOn {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("AgesOn")
    }
}

/// A `[[model.component]]` entry as written in the catalog file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// `[a-z][a-z0-9_]{0,63}`, unique among the model's components and consumables.
    pub id: String,
    /// Name a person recognises (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// `runtime_hours` (default), `calendar` or `meter:<field>`; see [`AgesOn`].
    #[serde(default)]
    pub ages_on: Option<String>,
    /// A consumable: the telemetry field carrying its remaining life in percent (a
    /// percentage field of the contract or a vendor field). Needs `order_at_pct`,
    /// `rated_life_hours`, `skill` and `labour_minutes`.
    #[serde(default)]
    pub life_field: Option<String>,
    /// With `life_field`: a maintenance order is raised at or below this level.
    #[serde(default)]
    pub order_at_pct: Option<f64>,
    /// Rated life in runtime hours from new (required with `life_field`).
    #[serde(default)]
    pub rated_life_hours: Option<f64>,
    /// Skill its replacement needs (required with `life_field`).
    #[serde(default)]
    pub skill: Option<String>,
    /// Standard labour of its replacement (required with `life_field`).
    #[serde(default)]
    pub labour_minutes: Option<u32>,
    /// Parts its replacement uses.
    #[serde(default)]
    pub parts: Vec<PartRef>,
    /// Its failure modes; none: one implicit mode whose id is the component id.
    #[serde(default, rename = "failure_mode")]
    pub failure_modes: Vec<FailureModeSpec>,
}

/// A `[[model.component.failure_mode]]` entry as written in the catalog file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureModeSpec {
    /// `[a-z][a-z0-9_]{0,63}`, unique among the model's failure modes.
    pub id: String,
    /// Alarm or fault codes that indicate this mode (no alarm entry is needed).
    #[serde(default)]
    pub codes: Vec<String>,
    /// How long before a failure of this mode it can show in the telemetry (its P-F
    /// interval), 1 to 365 days: the failure-risk model of the mode warns over it.
    #[serde(default)]
    pub warning_horizon_days: Option<f64>,
}

string_enum!(
    /// Where a resolved component comes from in the catalog file.
    DeclaredAs {
        /// A `[[model.component]]` entry.
        Component => "component",
        /// A `[[model.consumable]]` entry.
        Consumable => "consumable",
        /// Implicit: the `failure_mode` of an alarm with `counts_as_failure` that no
        /// component declares.
        FailureAlarm => "failure_alarm",
    }
);

/// A resolved component of a model (see the module doc for how each is made).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Component {
    /// Unique within the model.
    pub id: ComponentId,
    /// Name a person recognises.
    pub name: String,
    /// What its age is measured on.
    pub ages_on: AgesOn,
    /// A consumable: the field carrying its remaining life in percent.
    pub life_field: Option<String>,
    /// A consumable: the level at which a maintenance order is raised.
    pub order_at_pct: Option<f64>,
    /// Rated life in runtime hours from new.
    pub rated_life_hours: Option<f64>,
    /// Skill its replacement needs.
    pub skill: Option<String>,
    /// Standard labour of its replacement.
    pub labour_minutes: Option<u32>,
    /// Parts its replacement uses.
    pub parts: Vec<PartRef>,
    /// Its failure modes (empty only for a `[[model.consumable]]` no failure alarm names).
    pub failure_modes: Vec<FailureMode>,
    /// Where it comes from in the file.
    pub declared_as: DeclaredAs,
}

impl Component {
    /// Its failure mode `id`.
    pub fn failure_mode(&self, id: &str) -> Option<&FailureMode> {
        self.failure_modes.iter().find(|f| f.id.as_str() == id)
    }

    /// The failure mode `code` indicates.
    pub fn mode_for_code(&self, code: &AlarmCode) -> Option<&FailureMode> {
        self.failure_modes.iter().find(|f| f.codes.contains(code))
    }
}

/// A resolved failure mode of a component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailureMode {
    /// Unique within the model; the same id in several models is the same mode.
    pub id: ModeId,
    /// Codes that indicate it: its own `codes` plus the codes of the failure alarms that
    /// name it.
    pub codes: Vec<AlarmCode>,
    /// Its P-F interval in days, from the mode or from its alarms.
    pub warning_horizon_days: Option<f64>,
}

/// A maintenance kind (`[[maintenance_kind]]`, catalog-wide). `service`, `consumable`,
/// `replacement` and `inspection` are built in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceKindSpec {
    /// `[a-z][a-z0-9_]{0,63}`, unique, not a built-in id.
    pub id: String,
    /// A record of this kind names a component, whose life restarts (a renewal).
    #[serde(default)]
    pub renews_component: bool,
    /// Built in rather than declared in the file.
    #[serde(default, skip_deserializing)]
    pub built_in: bool,
}

/// The built-in maintenance kinds with `renews_component`: `service` (preventive
/// service), `consumable` (a consumable changed; the component must have a life field),
/// `replacement` (a component replaced), `inspection`.
pub const BUILT_IN_MAINTENANCE_KINDS: &[(&str, bool)] = &[
    ("service", false),
    ("consumable", true),
    ("replacement", true),
    ("inspection", false),
];

/// The built-in kinds followed by the file's, validated.
pub(super) fn maintenance_kinds(
    declared: Vec<MaintenanceKindSpec>,
) -> Result<Vec<MaintenanceKindSpec>, CatalogError> {
    let mut kinds: Vec<MaintenanceKindSpec> = BUILT_IN_MAINTENANCE_KINDS
        .iter()
        .map(|&(id, renews_component)| MaintenanceKindSpec {
            id: id.to_owned(),
            renews_component,
            built_in: true,
        })
        .collect();
    for k in declared {
        let at = |what: &str| CatalogError::Invalid(format!("maintenance_kind {:?}: {what}", k.id));
        if !is_catalog_id(&k.id) {
            return Err(at("id must match [a-z][a-z0-9_]{0,63}"));
        }
        match kinds.iter().find(|e| e.id == k.id) {
            Some(e) if e.built_in => return Err(at("is built in; it cannot be redefined")),
            Some(_) => return Err(at("defined twice")),
            None => kinds.push(MaintenanceKindSpec {
                built_in: false,
                ..k
            }),
        }
    }
    Ok(kinds)
}

/// Resolves a validated model's components and fills `consumables` from the components
/// with a life field. Errors name the model and the key.
pub(super) fn resolve(m: &mut ModelSpec) -> Result<Vec<Component>, CatalogError> {
    let model = m.id.to_string();
    let err = |what: String| CatalogError::Invalid(format!("model {model}: {what}"));
    let mut out: Vec<Component> = Vec::new();
    let mut modes: BTreeSet<String> = BTreeSet::new();

    for c in &m.consumables {
        out.push(Component {
            id: ComponentId::parse(&c.id).map_err(|e| err(format!("consumable {}: {e}", c.id)))?,
            name: c.name.clone(),
            ages_on: AgesOn::Runtime,
            life_field: Some(c.field.clone()),
            order_at_pct: Some(c.order_at_pct),
            rated_life_hours: Some(c.rated_life_hours),
            skill: Some(c.skill.clone()),
            labour_minutes: Some(c.labour_minutes),
            parts: c.parts.clone(),
            failure_modes: Vec::new(),
            declared_as: DeclaredAs::Consumable,
        });
    }

    let mut derived_consumables = Vec::new();
    for spec in &m.components {
        let at = |what: String| err(format!("component {}: {what}", spec.id));
        let id = ComponentId::parse(&spec.id).map_err(|e| at(e.to_string()))?;
        if out.iter().any(|c| c.id == id) {
            return Err(at(
                "defined twice (component and consumable ids share one namespace)".into(),
            ));
        }
        let component = resolve_component(spec, id, &mut modes).map_err(at)?;
        if let Some(consumable) = as_consumable(&component) {
            derived_consumables.push(consumable);
        }
        out.push(component);
    }
    m.consumables.extend(derived_consumables);

    for a in m.alarms.iter().filter(|a| a.counts_as_failure) {
        let at = |what: String| err(format!("alarm {}: {what}", a.code));
        let mode_text = a.failure_mode.as_deref().unwrap_or_default();
        let mode = ModeId::parse(mode_text).map_err(|e| at(format!("failure_mode: {e}")))?;
        let target = match &a.component {
            Some(named) => {
                let Some(i) = out.iter().position(|c| c.id.as_str() == named) else {
                    return Err(at(format!(
                        "component {named:?} is not a component or consumable of the model"
                    )));
                };
                let c = &out[i];
                let owns = c.failure_mode(mode.as_str()).is_some();
                // a consumable declares no modes: a failure alarm may give it one
                let may_add = c.declared_as == DeclaredAs::Consumable;
                if !owns && !may_add {
                    return Err(at(format!(
                        "failure_mode {mode} is not a failure mode of component {named} ({})",
                        mode_list(c)
                    )));
                }
                i
            }
            None => match out
                .iter()
                .position(|c| c.failure_mode(mode.as_str()).is_some())
            {
                Some(i) => i,
                None => match out.iter().position(|c| c.id.as_str() == mode.as_str()) {
                    Some(i) if out[i].failure_modes.is_empty() => i,
                    Some(_) => {
                        return Err(at(format!(
                            "failure_mode {mode} is ambiguous: component {mode} exists but has no \
                             mode {mode}; name the component (component = \"…\") or declare the mode"
                        )));
                    }
                    None => {
                        out.push(Component {
                            id: ComponentId::parse(mode.as_str())
                                .expect("a mode id is a valid component id: same syntax"),
                            name: mode.to_string(),
                            ages_on: AgesOn::Runtime,
                            life_field: None,
                            order_at_pct: None,
                            rated_life_hours: None,
                            skill: None,
                            labour_minutes: None,
                            parts: Vec::new(),
                            failure_modes: Vec::new(),
                            declared_as: DeclaredAs::FailureAlarm,
                        });
                        out.len() - 1
                    }
                },
            },
        };
        let component = &mut out[target];
        if component.failure_mode(mode.as_str()).is_none() {
            if !modes.insert(mode.to_string()) {
                return Err(at(format!(
                    "failure_mode {mode} is already a mode of another component"
                )));
            }
            component.failure_modes.push(FailureMode {
                id: mode.clone(),
                codes: Vec::new(),
                warning_horizon_days: None,
            });
        }
        let fm = component
            .failure_modes
            .iter_mut()
            .find(|f| f.id == mode)
            .expect("the mode was found or added above");
        if !fm.codes.contains(&a.code) {
            fm.codes.push(a.code.clone());
        }
        match (fm.warning_horizon_days, a.warning_horizon_days) {
            (Some(have), Some(h)) if have != h => {
                return Err(at(format!(
                    "warning_horizon_days = {h} differs from the {have} days failure mode {mode} already has"
                )));
            }
            (None, Some(h)) => fm.warning_horizon_days = Some(h),
            _ => {}
        }
    }

    // one code, one mode: a code must say which mode failed
    let mut code_mode: Vec<(&AlarmCode, &ModeId)> = Vec::new();
    for fm in out.iter().flat_map(|c| c.failure_modes.iter()) {
        for code in &fm.codes {
            if let Some((_, other)) = code_mode.iter().find(|(c, _)| *c == code) {
                return Err(err(format!(
                    "code {code} indicates two failure modes, {other} and {}",
                    fm.id
                )));
            }
            code_mode.push((code, &fm.id));
        }
    }
    Ok(out)
}

fn resolve_component(
    spec: &ComponentSpec,
    id: ComponentId,
    modes: &mut BTreeSet<String>,
) -> Result<Component, String> {
    let name = match &spec.name {
        Some(n) if n.trim().is_empty() => return Err("name is empty".into()),
        Some(n) => n.clone(),
        None => id.to_string(),
    };
    let ages_on = match &spec.ages_on {
        Some(text) => AgesOn::parse(text)?,
        None => AgesOn::Runtime,
    };
    if let Some(field) = &spec.life_field {
        check_life_field("life_field", field)?;
        let complete = spec.order_at_pct.is_some()
            && spec.rated_life_hours.is_some()
            && spec.skill.as_deref().is_some_and(|s| !s.trim().is_empty())
            && spec.labour_minutes.is_some_and(|l| l > 0);
        if !complete {
            return Err(format!(
                "life_field {field:?} needs order_at_pct, rated_life_hours, skill and labour_minutes > 0"
            ));
        }
    } else if spec.order_at_pct.is_some() {
        return Err("order_at_pct needs a life_field".into());
    }
    if let Some(p) = spec.order_at_pct {
        check_order_at_pct(p)?;
    }
    if let Some(h) = spec.rated_life_hours {
        check_rated_life(h)?;
    }
    if spec.skill.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return Err("skill is empty".into());
    }
    validate_parts(&spec.parts).map_err(|e| format!("parts: {e}"))?;

    let mut failure_modes = Vec::new();
    for f in &spec.failure_modes {
        let at = |what: String| format!("failure_mode {}: {what}", f.id);
        let mode_id = ModeId::parse(&f.id).map_err(|e| at(e.to_string()))?;
        if !modes.insert(f.id.clone()) {
            return Err(at("defined twice in the model".into()));
        }
        let mut codes: Vec<AlarmCode> = Vec::new();
        for text in &f.codes {
            let code = AlarmCode::parse(text).map_err(|e| at(format!("codes: {e}")))?;
            if codes.contains(&code) {
                return Err(at(format!("codes: {code} listed twice")));
            }
            codes.push(code);
        }
        if let Some(h) = f.warning_horizon_days
            && !(h.is_finite() && (1.0..=365.0).contains(&h))
        {
            return Err(at(format!(
                "warning_horizon_days = {h} must be 1 to 365 days"
            )));
        }
        failure_modes.push(FailureMode {
            id: mode_id,
            codes,
            warning_horizon_days: f.warning_horizon_days,
        });
    }
    if failure_modes.is_empty() {
        if !modes.insert(id.to_string()) {
            return Err(format!(
                "its implicit failure mode {id} is already a mode of another component"
            ));
        }
        failure_modes.push(FailureMode {
            id: ModeId::parse(id.as_str()).expect("a component id is a valid mode id"),
            codes: Vec::new(),
            warning_horizon_days: None,
        });
    }
    Ok(Component {
        id,
        name,
        ages_on,
        life_field: spec.life_field.clone(),
        order_at_pct: spec.order_at_pct,
        rated_life_hours: spec.rated_life_hours,
        skill: spec.skill.clone(),
        labour_minutes: spec.labour_minutes,
        parts: spec.parts.clone(),
        failure_modes,
        declared_as: DeclaredAs::Component,
    })
}

/// The legacy consumable view of a component with a life field.
fn as_consumable(c: &Component) -> Option<ConsumableSpec> {
    Some(ConsumableSpec {
        id: c.id.to_string(),
        name: c.name.clone(),
        field: c.life_field.clone()?,
        order_at_pct: c.order_at_pct?,
        rated_life_hours: c.rated_life_hours?,
        skill: c.skill.clone()?,
        labour_minutes: c.labour_minutes?,
        parts: c.parts.clone(),
    })
}

pub(super) fn mode_list(c: &Component) -> String {
    if c.failure_modes.is_empty() {
        return "it has none".into();
    }
    let ids: Vec<&str> = c.failure_modes.iter().map(|f| f.id.as_str()).collect();
    format!("its modes: {}", ids.join(", "))
}

/// A life field: a percentage field of the contract or a vendor field.
pub(super) fn check_life_field(key: &str, field: &str) -> Result<(), String> {
    let ok = match known_field(field) {
        Some(f) => f.unit == "%",
        None => valid_field_name(field),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} {field:?} is not a percentage field of the telemetry contract nor a vendor field name ([a-z][a-z0-9_]{{0,63}})"
        ))
    }
}

pub(super) fn check_order_at_pct(p: f64) -> Result<(), String> {
    if (0.0..100.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("order_at_pct = {p} must be in 0..100"))
    }
}

pub(super) fn check_rated_life(h: f64) -> Result<(), String> {
    if h.is_finite() && h > 0.0 {
        Ok(())
    } else {
        Err(format!("rated_life_hours = {h} must be positive"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::catalog::Catalog;

    const SHIPPED: &str = include_str!("../../../config/catalog.toml");

    /// (component id, where from, [(mode id, codes)])
    type Shape = (String, DeclaredAs, Vec<(String, Vec<AlarmCode>)>);

    fn code(s: &str) -> AlarmCode {
        AlarmCode::parse(s).expect("code")
    }

    #[test]
    fn the_shipped_catalog_resolves_to_its_filter_plus_one_component_per_failure_mode() {
        let catalog = Catalog::from_toml_str(SHIPPED).expect("shipped catalog");
        for m in catalog.models() {
            let mut expected: Vec<Shape> =
                vec![("filter".into(), DeclaredAs::Consumable, Vec::new())];
            let mut by_mode: BTreeMap<String, Vec<AlarmCode>> = BTreeMap::new();
            let mut order = Vec::new();
            for a in m.alarms.iter().filter(|a| a.counts_as_failure) {
                let mode = a.failure_mode.clone().expect("failure alarms name a mode");
                if !by_mode.contains_key(&mode) {
                    order.push(mode.clone());
                }
                by_mode.entry(mode).or_default().push(a.code.clone());
            }
            for mode in order {
                let codes = by_mode[&mode].clone();
                expected.push((mode.clone(), DeclaredAs::FailureAlarm, vec![(mode, codes)]));
            }
            let got: Vec<Shape> = catalog
                .components(m.id.as_str())
                .iter()
                .map(|c| {
                    let modes = c
                        .failure_modes
                        .iter()
                        .map(|f| (f.id.to_string(), f.codes.clone()))
                        .collect();
                    (c.id.to_string(), c.declared_as, modes)
                })
                .collect();
            assert_eq!(got, expected, "model {}", m.id);
            assert_eq!(
                m.consumables.len(),
                1,
                "model {}: consumables as written",
                m.id
            );
            for c in catalog.components(m.id.as_str()) {
                assert_eq!(c.ages_on, AgesOn::Runtime);
            }
        }

        let oc5 = catalog.components("OC-5A");
        let ids: Vec<&str> = oc5.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["filter", "compressor", "sieve_bed", "cooling"]);
        assert_eq!(oc5[0].life_field.as_deref(), Some("filter_life_pct"));
        assert_eq!(oc5[0].rated_life_hours, Some(2160.0));
        assert_eq!(oc5[2].failure_modes[0].codes, [code("E102")]);
        assert_eq!(oc5[2].failure_modes[0].warning_horizon_days, Some(21.0));
        assert_eq!(oc5[1].failure_modes[0].warning_horizon_days, None);

        let modes: Vec<String> = catalog
            .failure_modes()
            .into_iter()
            .map(String::from)
            .collect();
        let mut from_alarms: Vec<String> = catalog
            .models()
            .flat_map(|m| m.alarms.iter())
            .filter(|a| a.counts_as_failure)
            .filter_map(|a| a.failure_mode.clone())
            .collect();
        from_alarms.sort();
        from_alarms.dedup();
        assert_eq!(
            modes, from_alarms,
            "the modes are the failure alarms' modes, as before"
        );
        let kinds: Vec<&str> = catalog
            .maintenance_kinds()
            .iter()
            .map(|k| k.id.as_str())
            .collect();
        assert_eq!(
            kinds,
            ["service", "consumable", "replacement", "inspection"]
        );
    }

    #[test]
    fn failures_resolve_on_the_shipped_catalog_as_the_alarms_said() {
        let catalog = Catalog::from_toml_str(SHIPPED).expect("shipped catalog");
        let r = |c: Option<&str>, m: Option<&str>, k: Option<&str>| {
            catalog
                .resolve_failure("OC-5A", c, m, k.map(code).as_ref())
                .map(|o| o.map(|(c, m)| format!("{c}/{m}")))
        };
        assert_eq!(
            r(None, None, Some("E102")),
            Ok(Some("sieve_bed/sieve_bed".into()))
        );
        assert_eq!(
            r(None, None, Some("W201")),
            Ok(None),
            "a code of no failure mode"
        );
        assert_eq!(r(None, None, None), Ok(None), "a device-level failure");
        assert_eq!(
            r(None, Some("compressor"), Some("E102")),
            Ok(Some("compressor/compressor".into())),
            "an explicit mode wins over the code's"
        );
        assert_eq!(
            r(Some("cooling"), None, None),
            Ok(Some("cooling/cooling".into()))
        );
        let unknown = r(None, Some("rotary_valve"), None).expect_err("not an OC-5A mode");
        assert!(
            unknown.contains("rotary_valve") && unknown.contains("OC-5A"),
            "{unknown}"
        );
        let no_mode = r(Some("filter"), None, None).expect_err("a consumable has no mode");
        assert!(no_mode.contains("filter"), "{no_mode}");
        let unknown = r(Some("comp9"), None, None).expect_err("no such component");
        assert!(unknown.contains("comp9"), "{unknown}");
        assert!(
            catalog
                .resolve_failure("XX-1", None, Some("compressor"), None)
                .is_err()
        );
        assert_eq!(catalog.resolve_failure("XX-1", None, None, None), Ok(None));
    }

    const NEW_SHAPE: &str = r#"
[[maintenance_kind]]
id = "calibration"

[[maintenance_kind]]
id = "overhaul"
renews_component = true

[[model]]
id = "PM-1"
name = "Press"
kind = "other"
default_criticality = "standard"
service_interval_hours = 0
service_skill = ""
service_labour_minutes = 0

[[model.component]]
id = "comp1"
name = "Component 1"
life_field = "comp1_life_pct"
order_at_pct = 15
rated_life_hours = 2000
skill = "basic_maintenance"
labour_minutes = 15
parts = [{ number = "C1", name = "Component 1" }]
[[model.component.failure_mode]]
id = "comp1_wear"
codes = ["error1"]
warning_horizon_days = 14
[[model.component.failure_mode]]
id = "comp1_crack"

[[model.component]]
id = "comp2"
ages_on = "meter:blower_hours"

[[model.component]]
id = "comp3"
ages_on = "calendar"

[[model.component]]
id = "comp4"
ages_on = "meter:spindle_hours"
[[model.component.failure_mode]]
id = "comp4_bearing"

[[model.alarm]]
code = "ERROR4"
title = "Spindle stop"
severity = "warning"
category = "hardware"
counts_as_failure = true
failure_mode = "comp4_bearing"
component = "comp4"
solution = "Check the spindle"
labour_minutes = 0
skill = ""
"#;

    #[test]
    fn components_with_digits_modes_without_alarms_meters_and_calendar_load() {
        let catalog = Catalog::from_toml_str(NEW_SHAPE).expect("new shape loads");
        let comps = catalog.components("PM-1");
        let ids: Vec<&str> = comps.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["comp1", "comp2", "comp3", "comp4"]);
        let c1 = catalog.component("PM-1", "comp1").expect("comp1");
        assert_eq!(c1.declared_as, DeclaredAs::Component);
        assert_eq!(c1.failure_modes.len(), 2);
        assert_eq!(c1.failure_modes[0].codes, [code("ERROR1")]);
        assert_eq!(c1.failure_modes[0].warning_horizon_days, Some(14.0));
        assert_eq!(
            catalog
                .component("PM-1", "comp2")
                .map(|c| c.ages_on.clone()),
            Some(AgesOn::Meter("blower_hours".into()))
        );
        let c3 = catalog.component("PM-1", "comp3").expect("comp3");
        assert_eq!(c3.ages_on, AgesOn::Calendar);
        assert_eq!(c3.ages_on.field(), None);
        assert_eq!(c3.name, "comp3", "the name defaults to the id");
        let implicit: Vec<&str> = c3.failure_modes.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(implicit, ["comp3"], "no declared mode: one implicit mode");
        let c4 = catalog.component("PM-1", "comp4").expect("comp4");
        assert_eq!(
            c4.failure_modes[0].codes,
            [code("ERROR4")],
            "the alarm attached"
        );

        // a component with a life field is a consumable for the depletion rules
        let model = catalog.model("PM-1").expect("model");
        assert_eq!(model.consumables.len(), 1);
        assert_eq!(model.consumables[0].id, "comp1");
        assert_eq!(model.consumables[0].field, "comp1_life_pct");
        assert_eq!(model.consumables[0].rated_life_hours, 2000.0);

        let modes: Vec<String> = catalog
            .failure_modes()
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            modes,
            [
                "comp1_crack",
                "comp1_wear",
                "comp2",
                "comp3",
                "comp4_bearing"
            ]
        );

        let r = |c: Option<&str>, m: Option<&str>, k: Option<&str>| {
            catalog
                .resolve_failure("PM-1", c, m, k.map(code).as_ref())
                .map(|o| o.map(|(c, m)| format!("{c}/{m}")))
        };
        assert_eq!(r(Some("comp2"), None, None), Ok(Some("comp2/comp2".into())));
        assert_eq!(
            r(None, None, Some("ERROR1")),
            Ok(Some("comp1/comp1_wear".into()))
        );
        assert_eq!(
            r(Some("comp1"), None, Some("ERROR1")),
            Ok(Some("comp1/comp1_wear".into()))
        );
        assert_eq!(
            r(None, Some("comp1_crack"), None),
            Ok(Some("comp1/comp1_crack".into()))
        );
        let several = r(Some("comp1"), None, None).expect_err("two modes, no code");
        assert!(several.contains("comp1_wear, comp1_crack"), "{several}");
        let wrong = r(Some("comp2"), Some("comp1_wear"), None).expect_err("mode of comp1");
        assert!(
            wrong.contains("comp2") && wrong.contains("comp1_wear"),
            "{wrong}"
        );

        let kind = catalog.maintenance_kind("overhaul").expect("declared kind");
        assert!(kind.renews_component && !kind.built_in);
        let kind = catalog
            .maintenance_kind("calibration")
            .expect("declared kind");
        assert!(!kind.renews_component);
        let kind = catalog.maintenance_kind("replacement").expect("built in");
        assert!(kind.renews_component && kind.built_in);
        assert!(catalog.maintenance_kind("repair").is_none());
    }

    fn refused(text: &str) -> String {
        Catalog::from_toml_str(text)
            .expect_err("must be refused")
            .to_string()
    }

    fn assert_names(message: &str, keys: &[&str]) {
        for key in keys {
            assert!(message.contains(key), "{key:?} not in {message:?}");
        }
    }

    #[test]
    fn component_mistakes_are_refused_naming_model_and_key() {
        let comp3 = "[[model.component]]\nid = \"comp3\"";
        assert_names(
            &refused(&NEW_SHAPE.replace(comp3, "[[model.component]]\nid = \"comp2\"")),
            &["model PM-1", "component comp2", "defined twice"],
        );
        assert_names(
            &refused(&NEW_SHAPE.replace(comp3, "[[model.component]]\nid = \"Comp-3\"")),
            &["model PM-1", "component Comp-3", "component id"],
        );
        assert_names(
            &refused(&NEW_SHAPE.replace("id = \"comp1_crack\"", "id = \"comp1_wear\"")),
            &["model PM-1", "failure_mode comp1_wear", "defined twice"],
        );
        assert_names(
            &refused(&NEW_SHAPE.replace("id = \"comp4_bearing\"", "id = \"comp2\"")),
            &["model PM-1", "component comp4", "failure_mode comp2"],
        );
        for bad in ["hours", "meter:", "meter:Blower", "meter:o2_purity_pct"] {
            assert_names(
                &refused(&NEW_SHAPE.replace("\"calendar\"", &format!("{bad:?}"))),
                &["model PM-1", "component comp3", "ages_on"],
            );
        }
        assert_names(
            &refused(&NEW_SHAPE.replace("rated_life_hours = 2000\n", "")),
            &[
                "model PM-1",
                "component comp1",
                "life_field",
                "rated_life_hours",
            ],
        );
        assert_names(
            &refused(&NEW_SHAPE.replace("skill = \"basic_maintenance\"\n", "")),
            &["model PM-1", "component comp1", "life_field", "skill"],
        );
        assert_names(
            &refused(&NEW_SHAPE.replace("life_field = \"comp1_life_pct\"\n", "")),
            &[
                "model PM-1",
                "component comp1",
                "order_at_pct needs a life_field",
            ],
        );
        assert_names(
            &refused(&NEW_SHAPE.replace("\"comp1_life_pct\"", "\"runtime_hours\"")),
            &[
                "model PM-1",
                "component comp1",
                "life_field",
                "percentage field",
            ],
        );
        assert_names(
            &refused(&NEW_SHAPE.replace("warning_horizon_days = 14", "warning_horizon_days = 0")),
            &[
                "model PM-1",
                "failure_mode comp1_wear",
                "warning_horizon_days",
            ],
        );
        // an alarm's mode that the component it names does not have
        assert_names(
            &refused(&NEW_SHAPE.replace("component = \"comp4\"", "component = \"comp2\"")),
            &[
                "model PM-1",
                "alarm ERROR4",
                "comp4_bearing",
                "component comp2",
            ],
        );
        assert_names(
            &refused(&NEW_SHAPE.replace("component = \"comp4\"", "component = \"comp9\"")),
            &["model PM-1", "alarm ERROR4", "comp9"],
        );
        // ambiguous: a component with the mode's id exists but declares other modes
        assert_names(
            &refused(&NEW_SHAPE.replace("component = \"comp4\"\n", "").replace(
                "failure_mode = \"comp4_bearing\"",
                "failure_mode = \"comp1\"",
            )),
            &["model PM-1", "alarm ERROR4", "ambiguous", "comp1"],
        );
        // one code, two modes
        assert_names(
            &refused(&NEW_SHAPE.replace("codes = [\"error1\"]", "codes = [\"ERROR4\"]")),
            &["model PM-1", "ERROR4", "two failure modes"],
        );
        // two horizons for one mode
        assert_names(
            &refused(
                &NEW_SHAPE
                    .replace(
                        "component = \"comp4\"",
                        "component = \"comp4\"\nwarning_horizon_days = 7",
                    )
                    .replace(
                        "id = \"comp4_bearing\"",
                        "id = \"comp4_bearing\"\nwarning_horizon_days = 9",
                    ),
            ),
            &["model PM-1", "alarm ERROR4", "warning_horizon_days"],
        );
        assert_names(
            &refused(&NEW_SHAPE.replace(
                "counts_as_failure = true\nfailure_mode = \"comp4_bearing\"\ncomponent = \"comp4\"",
                "counts_as_failure = false\ncomponent = \"comp4\"",
            )),
            &[
                "model PM-1",
                "alarm ERROR4",
                "component needs counts_as_failure",
            ],
        );
    }

    #[test]
    fn maintenance_kind_mistakes_are_refused() {
        assert_names(
            &refused(&NEW_SHAPE.replace("id = \"calibration\"", "id = \"replacement\"")),
            &["maintenance_kind \"replacement\"", "built in"],
        );
        assert_names(
            &refused(&NEW_SHAPE.replace("id = \"calibration\"", "id = \"overhaul\"")),
            &["maintenance_kind \"overhaul\"", "defined twice"],
        );
        assert_names(
            &refused(&NEW_SHAPE.replace("id = \"calibration\"", "id = \"Cal-1\"")),
            &["maintenance_kind \"Cal-1\"", "[a-z]"],
        );
        assert!(
            refused(&NEW_SHAPE.replace("renews_component = true", "renews = true"))
                .contains("renews")
        );
    }

    #[test]
    fn consumables_alarms_and_components_share_one_namespace() {
        let legacy = SHIPPED;
        // a consumable may now have digits in its id
        let c = Catalog::from_toml_str(&legacy.replacen("id = \"filter\"", "id = \"filter2\"", 1))
            .expect("digits allowed");
        assert!(c.component("OC-5A", "filter2").is_some());
        // a failure alarm naming a consumable gives it the mode
        let text = legacy.replacen(
            "failure_mode = \"compressor\"",
            "failure_mode = \"filter_clog\"\ncomponent = \"filter\"",
            1,
        );
        let c = Catalog::from_toml_str(&text).expect("a consumable may get a failure mode");
        let filter = c.component("OC-5A", "filter").expect("filter");
        assert_eq!(filter.failure_modes[0].id.as_str(), "filter_clog");
        assert_eq!(filter.failure_modes[0].codes, [code("E101")]);
        assert!(c.component("OC-5A", "compressor").is_none());
        // a failure alarm whose mode is a consumable's id attaches to that consumable
        let text = legacy.replacen(
            "failure_mode = \"compressor\"",
            "failure_mode = \"filter\"",
            1,
        );
        let c = Catalog::from_toml_str(&text).expect("mode = consumable id");
        let filter = c.component("OC-5A", "filter").expect("filter");
        assert_eq!(filter.failure_modes[0].id.as_str(), "filter");
        assert_eq!(filter.declared_as, DeclaredAs::Consumable);
        // a component with the id of a consumable
        let text = format!(
            "{}\n[[model.component]]\nid = \"filter\"\n",
            &legacy[..legacy.find("[[model.alarm]]").expect("alarm")]
        );
        assert_names(
            &refused(&text),
            &["model OC-5A", "component filter", "defined twice"],
        );
    }

    #[test]
    fn the_docs_example_loads_as_described() {
        let doc = include_str!("../../../docs/reliability-data.md");
        let section = &doc[doc
            .find("## Catalog: components, failure modes, maintenance kinds")
            .expect("the catalog section")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + section[start..].find("```").expect("its end");
        let catalog = Catalog::from_toml_str(&section[start..end]).expect("the example loads");

        let shapes: Vec<(&str, String, Vec<&str>)> = catalog
            .components("PM-1")
            .iter()
            .map(|c| {
                let modes = c.failure_modes.iter().map(|f| f.id.as_str()).collect();
                (c.id.as_str(), c.ages_on.to_string(), modes)
            })
            .collect();
        assert_eq!(
            shapes,
            [
                ("comp1", "runtime_hours".to_owned(), vec!["comp1_wear"]),
                ("comp2", "meter:blower_hours".to_owned(), vec!["comp2"]),
                ("comp3", "calendar".to_owned(), vec!["comp3"]),
            ]
        );
        let comp3 = catalog.component("PM-1", "comp3").expect("comp3");
        assert_eq!(
            comp3.failure_modes[0].codes,
            [code("E7")],
            "the alarm attached"
        );
        assert_eq!(
            catalog.resolve_failure("PM-1", None, None, Some(&code("ERROR1"))),
            Ok(Some((
                ComponentId::parse("comp1").expect("id"),
                ModeId::parse("comp1_wear").expect("id")
            )))
        );
        let model = catalog.model("PM-1").expect("model");
        assert_eq!(model.consumables.len(), 1);
        assert_eq!(model.consumables[0].field, "comp1_life_pct");
        let calibration = catalog.maintenance_kind("calibration").expect("declared");
        assert!(!calibration.renews_component);
    }

    #[test]
    fn ages_on_round_trips_through_its_text() {
        for text in [
            "runtime_hours",
            "calendar",
            "meter:blower_hours",
            "meter:vendor_h2",
        ] {
            let a = AgesOn::parse(text).expect(text);
            assert_eq!(a.to_string(), text);
            let json = serde_json::to_string(&a).expect("json");
            assert_eq!(serde_json::from_str::<AgesOn>(&json).expect("back"), a);
        }
        assert_eq!(AgesOn::parse("meter:runtime_hours"), Ok(AgesOn::Runtime));
        assert_eq!(AgesOn::Runtime.field(), Some("runtime_hours"));
        assert!(ComponentId::parse("comp1").is_ok());
        assert!(ComponentId::parse("1comp").is_err());
        assert!(ModeId::parse(&"a".repeat(65)).is_err());
    }
}
