//! The model, alarm and service catalog (`config/catalog.toml`), loaded at start and
//! validated: a catalog that would make a rule misfire is refused with the model and code
//! that are wrong.
//!
//! Besides models and their alarms, the catalog knows each model's components (its
//! replaceable parts, their failure modes and what they age on) and the maintenance
//! kinds; see [`components`] for how today's consumables and failure alarms resolve into
//! components.

mod components;

pub use components::{
    AgesOn, BUILT_IN_MAINTENANCE_KINDS, CatalogIdError, Component, ComponentId, ComponentSpec,
    DeclaredAs, FailureMode, FailureModeSpec, MaintenanceKindSpec, ModeId, is_catalog_id,
};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::alarm::{AlarmCode, Category, Severity};
use crate::device::{Criticality, DeviceKind};
use crate::order::PartRef;

/// A device model identifier, e.g. `OC-5A`: 1 to 64 characters of `A-Z a-z 0-9 - _ .`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelId(String);

// written out for the pattern: the derive cannot put one on a newtype's schema
impl utoipa::PartialSchema for ModelId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A model id, e.g. OC-5A: 1 to 64 of A-Z a-z 0-9 - _ ."))
            .pattern(Some("^[A-Za-z0-9._-]{1,64}$"))
            .max_length(Some(64))
            .into()
    }
}

impl utoipa::ToSchema for ModelId {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("ModelId")
    }
}

/// Why a string is not a model id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model id {0:?} must be 1 to 64 characters of letters, digits, '-', '_' or '.'")]
pub struct ModelIdError(pub String);

impl ModelId {
    /// Parses a model id.
    pub fn parse(s: &str) -> Result<Self, ModelIdError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ModelIdError(s.to_owned()))
        }
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelId {
    type Error = ModelIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ModelId::parse(&s)
    }
}

impl From<ModelId> for String {
    fn from(m: ModelId) -> Self {
        m.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The catalog file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(rename = "model")]
    models: Vec<ModelSpec>,
    #[serde(default, rename = "maintenance_kind")]
    maintenance_kinds: Vec<MaintenanceKindSpec>,
}

/// One device model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The model id devices name (`OC-5A`).
    pub id: ModelId,
    /// Marketing name a person recognises.
    pub name: String,
    /// What kind of device it is.
    pub kind: DeviceKind,
    /// Criticality a device of this model gets when registered without one.
    pub default_criticality: Criticality,
    /// Runtime hours between preventive services (0: no interval service).
    pub service_interval_hours: f64,
    /// Skill a preventive service needs.
    pub service_skill: String,
    /// Standard labour of a preventive service.
    pub service_labour_minutes: u32,
    /// Parts a preventive service uses.
    #[serde(default)]
    pub service_parts: Vec<PartRef>,
    /// Consumables that wear with use (filters, sieve beds, batteries). In a loaded
    /// catalog this also holds every `[[model.component]]` with a `life_field`, in this
    /// shape, so the depletion rules, forecasts and the simulator see them.
    #[serde(default, rename = "consumable")]
    pub consumables: Vec<ConsumableSpec>,
    /// Components as written (`[[model.component]]`). The resolved list, with the
    /// consumables and failure alarms folded in, is [`Catalog::components`]; it is the one
    /// serialised (as `components`, by the catalog route), so this one is not.
    #[serde(default, rename = "component", skip_serializing)]
    pub components: Vec<ComponentSpec>,
    /// Alarm codes this model raises.
    #[serde(default, rename = "alarm")]
    pub alarms: Vec<AlarmSpec>,
}

/// A consumable whose remaining life the device reports as a percentage field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumableSpec {
    /// Short id (`[a-z][a-z0-9_]{0,63}`, shared with component ids); the order cause is
    /// `<id>_depletion`.
    pub id: String,
    /// Name a person recognises.
    pub name: String,
    /// Telemetry field carrying remaining life in percent: a `%` field of the contract
    /// (e.g. `filter_life_pct`) or a vendor field.
    pub field: String,
    /// A maintenance order is raised when the field is at or below this value.
    pub order_at_pct: f64,
    /// Rated life in runtime hours from new (used by forecasts).
    pub rated_life_hours: f64,
    /// Skill its replacement needs.
    pub skill: String,
    /// Standard labour of its replacement.
    pub labour_minutes: u32,
    /// Parts its replacement uses.
    #[serde(default)]
    pub parts: Vec<PartRef>,
}

/// What an alarm code means for a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmSpec {
    /// The code the device reports.
    pub code: AlarmCode,
    /// What it means, for a person.
    pub title: String,
    /// How serious it is.
    pub severity: Severity,
    /// What part of the device it concerns.
    pub category: Category,
    /// An episode of this alarm is a failure event (reliability statistics).
    pub counts_as_failure: bool,
    /// The failure mode it indicates (`compressor`, `sieve_bed`, `blower`, …):
    /// `[a-z][a-z0-9_]{0,63}`. With `counts_as_failure`, its code is added to the
    /// component that has this mode, or an implicit component of the same id is made.
    #[serde(default)]
    pub failure_mode: Option<String>,
    /// With `counts_as_failure`: the component whose `failure_mode` this is, when the
    /// mode alone does not say it (a consumable, or a component declaring the mode).
    #[serde(default)]
    pub component: Option<String>,
    /// How long before a failure of this mode it can show in the telemetry (its P-F
    /// interval), in days: the failure-risk model of the mode warns over this horizon.
    /// Unset: `analytics.model.horizon_days`.
    #[serde(default)]
    pub warning_horizon_days: Option<f64>,
    /// An order for this alarm stays open when the alarm clears: the fault calls for an
    /// engineer even if the device stopped reporting it (policy `[resolution]`). Unset:
    /// [`AlarmSpec::needs_visit`] derives it from the severity and the device.
    #[serde(default)]
    pub needs_visit: Option<bool>,
    /// What the engineer should do.
    pub solution: String,
    /// Standard labour of the repair.
    pub labour_minutes: u32,
    /// Skill the repair needs.
    pub skill: String,
    /// Parts the repair suggests.
    #[serde(default)]
    pub parts: Vec<PartRef>,
}

impl AlarmSpec {
    /// Whether an order for this alarm needs a visit even after the alarm cleared: the
    /// catalog's `needs_visit` when set, otherwise `true` for a critical alarm and for any
    /// alarm of a life-supporting device (a ventilator's alarm is not left to chance).
    pub fn needs_visit(&self, criticality: Criticality) -> bool {
        self.needs_visit.unwrap_or(
            self.severity == Severity::Critical || criticality == Criticality::LifeSupporting,
        )
    }
}

/// A validated catalog: models, their resolved components, and the maintenance kinds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Catalog {
    models: BTreeMap<ModelId, ModelSpec>,
    components: BTreeMap<ModelId, Vec<Component>>,
    maintenance_kinds: Vec<MaintenanceKindSpec>,
}

/// Why a catalog was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// Not TOML, or not the catalog's shape (an unknown key, a wrong type).
    #[error("catalog is not valid TOML for the expected shape: {0}")]
    Syntax(String),
    /// The shape is right but a value is not; the text names the model and key.
    #[error("catalog: {0}")]
    Invalid(String),
}

impl Catalog {
    /// Parses and validates a catalog file's text.
    pub fn from_toml_str(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|e| CatalogError::Syntax(e.to_string()))?;
        Self::new(file.models, file.maintenance_kinds)
    }

    /// Validates a list of models, with only the built-in maintenance kinds.
    pub fn from_models(models: Vec<ModelSpec>) -> Result<Self, CatalogError> {
        Self::new(models, Vec::new())
    }

    /// Validates models and the declared maintenance kinds, and resolves each model's
    /// components.
    pub fn new(
        models: Vec<ModelSpec>,
        maintenance_kinds: Vec<MaintenanceKindSpec>,
    ) -> Result<Self, CatalogError> {
        let mut by_id = BTreeMap::new();
        let mut resolved_by_model = BTreeMap::new();
        for mut m in models {
            validate_model(&m)?;
            let resolved = components::resolve(&mut m)?;
            let id = m.id.clone();
            if by_id.insert(id.clone(), m).is_some() {
                return Err(invalid(format!("model {id} is defined twice")));
            }
            resolved_by_model.insert(id, resolved);
        }
        if by_id.is_empty() {
            return Err(invalid("no [[model]] entries".into()));
        }
        Ok(Self {
            models: by_id,
            components: resolved_by_model,
            maintenance_kinds: components::maintenance_kinds(maintenance_kinds)?,
        })
    }

    /// The model `id`.
    pub fn model(&self, id: &str) -> Option<&ModelSpec> {
        self.models.get(id)
    }

    /// Every model, by id.
    pub fn models(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models.values()
    }

    /// The resolved components of `model` (empty for a model not in the catalog): its
    /// consumables first, then its `[[model.component]]` entries, then the implicit
    /// components of its failure alarms, each in file order.
    pub fn components(&self, model: &str) -> &[Component] {
        self.components.get(model).map_or(&[], Vec::as_slice)
    }

    /// The component `id` of `model`.
    pub fn component(&self, model: &str, id: &str) -> Option<&Component> {
        self.components(model).iter().find(|c| c.id.as_str() == id)
    }

    /// The component of `model` with failure mode `mode`, and the mode.
    pub fn failure_mode(&self, model: &str, mode: &str) -> Option<(&Component, &FailureMode)> {
        self.components(model)
            .iter()
            .find_map(|c| c.failure_mode(mode).map(|f| (c, f)))
    }

    /// Every failure mode of every model, sorted, each once.
    pub fn failure_modes(&self) -> Vec<ModeId> {
        let modes: BTreeSet<&ModeId> = self
            .components
            .values()
            .flatten()
            .flat_map(|c| c.failure_modes.iter().map(|f| &f.id))
            .collect();
        modes.into_iter().cloned().collect()
    }

    /// Which component and failure mode of `model` a failure record names:
    /// - component and mode: the mode must be one of the component's;
    /// - component only: the mode its `code` indicates, else its only mode;
    /// - mode only: the component that has it;
    /// - neither: the mode the `code` indicates, if any.
    ///
    /// An explicit mode wins over the code's. `Ok(None)`: a device-level failure (no
    /// component, no mode). `Err`: a name the model does not have, or a component whose
    /// mode cannot be told; the text says which.
    pub fn resolve_failure(
        &self,
        model: &str,
        component: Option<&str>,
        mode: Option<&str>,
        code: Option<&AlarmCode>,
    ) -> Result<Option<(ComponentId, ModeId)>, String> {
        let Some(resolved) = self.components.get(model) else {
            return match (component, mode) {
                (None, None) => Ok(None),
                _ => Err(format!(
                    "model {model} is not in the catalog: it has no components or failure modes"
                )),
            };
        };
        let pair = |c: &Component, f: &FailureMode| Some((c.id.clone(), f.id.clone()));
        match (component, mode) {
            (Some(cid), mode) => {
                let Some(c) = resolved.iter().find(|c| c.id.as_str() == cid) else {
                    let ids: Vec<&str> = resolved.iter().map(|c| c.id.as_str()).collect();
                    return Err(format!(
                        "component {cid:?} is not a component of model {model} ({})",
                        ids.join(", ")
                    ));
                };
                if let Some(m) = mode {
                    return match c.failure_mode(m) {
                        Some(f) => Ok(pair(c, f)),
                        None => Err(format!(
                            "failure_mode {m:?} is not a failure mode of component {cid} of model {model} ({})",
                            components::mode_list(c)
                        )),
                    };
                }
                if let Some(f) = code.and_then(|code| c.mode_for_code(code)) {
                    return Ok(pair(c, f));
                }
                match c.failure_modes.as_slice() {
                    [f] => Ok(pair(c, f)),
                    [] => Err(format!(
                        "component {cid} of model {model} has no failure mode: declare it as \
                         [[model.component]] (or give one of its alarms counts_as_failure)"
                    )),
                    _ => Err(format!(
                        "component {cid} of model {model} has several failure modes ({}): name the failure_mode",
                        components::mode_list(c)
                    )),
                }
            }
            (None, Some(m)) => match self.failure_mode(model, m) {
                Some((c, f)) => Ok(pair(c, f)),
                None => {
                    let modes: Vec<&str> = resolved
                        .iter()
                        .flat_map(|c| c.failure_modes.iter().map(|f| f.id.as_str()))
                        .collect();
                    Err(format!(
                        "failure_mode {m:?} is not a failure mode of model {model} ({})",
                        modes.join(", ")
                    ))
                }
            },
            (None, None) => Ok(resolved.iter().find_map(|c| {
                code.and_then(|code| c.mode_for_code(code))
                    .map(|f| (c.id.clone(), f.id.clone()))
            })),
        }
    }

    /// The maintenance kind `id` (built in or declared).
    pub fn maintenance_kind(&self, id: &str) -> Option<&MaintenanceKindSpec> {
        self.maintenance_kinds.iter().find(|k| k.id == id)
    }

    /// Every maintenance kind: the built-in ones, then the file's, in order.
    pub fn maintenance_kinds(&self) -> &[MaintenanceKindSpec] {
        &self.maintenance_kinds
    }
}

impl std::borrow::Borrow<str> for ModelId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl ModelSpec {
    /// The alarm entry of `code`.
    pub fn alarm(&self, code: &AlarmCode) -> Option<&AlarmSpec> {
        self.alarms.iter().find(|a| &a.code == code)
    }
}

fn invalid(msg: String) -> CatalogError {
    CatalogError::Invalid(msg)
}

fn validate_model(m: &ModelSpec) -> Result<(), CatalogError> {
    let at = |what: String| invalid(format!("model {}: {what}", m.id));
    if m.name.trim().is_empty() {
        return Err(at("name is empty".into()));
    }
    if !(m.service_interval_hours.is_finite() && m.service_interval_hours >= 0.0) {
        return Err(at(format!(
            "service_interval_hours = {} must be a non-negative number",
            m.service_interval_hours
        )));
    }
    if m.service_interval_hours > 0.0 && m.service_skill.trim().is_empty() {
        return Err(at(
            "service_skill is empty but a service interval is set".into()
        ));
    }
    validate_parts(&m.service_parts).map_err(|e| at(format!("service_parts: {e}")))?;
    let mut seen = BTreeSet::new();
    for c in &m.consumables {
        let at_c = |what: String| at(format!("consumable {}: {what}", c.id));
        if !seen.insert(c.id.clone()) {
            return Err(at_c("defined twice".into()));
        }
        if !is_catalog_id(&c.id) {
            return Err(at_c(
                "id must be a lower-case letter, then up to 63 lower-case letters, digits or '_'"
                    .into(),
            ));
        }
        components::check_life_field("field", &c.field).map_err(&at_c)?;
        components::check_order_at_pct(c.order_at_pct).map_err(&at_c)?;
        components::check_rated_life(c.rated_life_hours).map_err(&at_c)?;
        if c.skill.trim().is_empty() || c.labour_minutes == 0 {
            return Err(at_c("skill and labour_minutes are required".into()));
        }
        validate_parts(&c.parts).map_err(|e| at_c(format!("parts: {e}")))?;
    }
    let mut codes = BTreeSet::new();
    for a in &m.alarms {
        let at_a = |what: String| at(format!("alarm {}: {what}", a.code));
        if !codes.insert(a.code.clone()) {
            return Err(at_a("defined twice".into()));
        }
        if a.title.trim().is_empty() || a.solution.trim().is_empty() {
            return Err(at_a("title and solution are required".into()));
        }
        if a.severity == Severity::Critical && (a.skill.trim().is_empty() || a.labour_minutes == 0)
        {
            return Err(at_a(
                "a critical alarm needs a skill and labour_minutes > 0 for its repair order".into(),
            ));
        }
        if a.counts_as_failure && a.failure_mode.as_deref().is_none_or(str::is_empty) {
            return Err(at_a("counts_as_failure needs a failure_mode".into()));
        }
        if a.component.is_some() && !a.counts_as_failure {
            return Err(at_a("component needs counts_as_failure".into()));
        }
        if let Some(h) = a.warning_horizon_days
            && !(a.counts_as_failure && h.is_finite() && (1.0..=365.0).contains(&h))
        {
            return Err(at_a(
                "warning_horizon_days needs counts_as_failure and 1 to 365 days".into(),
            ));
        }
        validate_parts(&a.parts).map_err(|e| at_a(format!("parts: {e}")))?;
    }
    Ok(())
}

fn validate_parts(parts: &[PartRef]) -> Result<(), String> {
    for p in parts {
        if p.number.trim().is_empty() || p.name.trim().is_empty() {
            return Err("a part needs a number and a name".into());
        }
        if p.qty == 0 {
            return Err(format!("part {} has qty 0", p.number));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[model]]
id = "OC-5A"
name = "Concentrator 5 L"
kind = "oxygen_concentrator"
default_criticality = "high"
service_interval_hours = 5000
service_skill = "concentrator_service"
service_labour_minutes = 60

[[model.consumable]]
id = "filter"
name = "Inlet filter"
field = "filter_life_pct"
order_at_pct = 15
rated_life_hours = 2000
skill = "basic_maintenance"
labour_minutes = 15
parts = [{ number = "F-1", name = "Filter" }]

[[model.alarm]]
code = "E101"
title = "Compressor failure"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "compressor"
solution = "Replace the compressor"
labour_minutes = 120
skill = "concentrator_repair"
"#;

    #[test]
    fn an_alarm_needs_a_visit_when_critical_or_on_a_life_supporting_device_unless_declared() {
        let c = Catalog::from_toml_str(GOOD).expect("valid");
        let m = c.model("OC-5A").expect("model");
        let critical = m.alarms[0].clone();
        assert!(critical.needs_visit(Criticality::High));
        let warning = AlarmSpec {
            severity: Severity::Warning,
            ..critical.clone()
        };
        assert!(!warning.needs_visit(Criticality::High));
        assert!(warning.needs_visit(Criticality::LifeSupporting));
        let declared = GOOD.replace(
            "code = \"E101\"\n",
            "code = \"E101\"\nneeds_visit = false\n",
        );
        let c = Catalog::from_toml_str(&declared).expect("valid");
        let a = &c.model("OC-5A").expect("model").alarms[0];
        assert!(
            !a.needs_visit(Criticality::LifeSupporting),
            "the catalog's word wins"
        );
        let bad = GOOD.replace(
            "code = \"E101\"\n",
            "code = \"E101\"\nneeds_visit = \"yes\"\n",
        );
        let err = Catalog::from_toml_str(&bad)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("needs_visit") || err.contains("bool"), "{err}");
    }

    #[test]
    fn a_good_catalog_loads() {
        let c = Catalog::from_toml_str(GOOD).expect("valid catalog");
        let m = c.model("OC-5A").expect("model present");
        assert_eq!(m.consumables[0].parts[0].qty, 1);
        assert_eq!(
            m.alarm(&AlarmCode::parse("e101").expect("code"))
                .map(|a| a.severity),
            Some(Severity::Critical)
        );
    }

    fn refused(text: &str) -> String {
        Catalog::from_toml_str(text)
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn mistakes_are_refused_with_what_is_wrong() {
        assert!(
            refused(&GOOD.replace("order_at_pct = 15", "order_at_pct = 150"))
                .contains("order_at_pct")
        );
        assert!(
            refused(&GOOD.replace("filter_life_pct", "runtime_hours")).contains("percentage field")
        );
        assert!(
            refused(&GOOD.replace("skill = \"concentrator_repair\"", "skill = \"\""))
                .contains("alarm E101")
        );
        assert!(
            refused(&GOOD.replace("failure_mode = \"compressor\"", "")).contains("failure_mode")
        );
        for bad in ["0", "400", "nan"] {
            let text = GOOD.replace(
                "failure_mode = \"compressor\"",
                &format!("failure_mode = \"compressor\"\nwarning_horizon_days = {bad}"),
            );
            assert!(refused(&text).contains("warning_horizon_days"), "{bad}");
        }
        let text = GOOD.replace(
            "failure_mode = \"compressor\"",
            "failure_mode = \"compressor\"\nwarning_horizon_days = 21",
        );
        let c = Catalog::from_toml_str(&text).expect("a 21-day horizon is valid");
        assert!(
            c.models()
                .flat_map(|m| m.alarms.iter())
                .any(|a| a.warning_horizon_days == Some(21.0))
        );
        assert!(
            refused(&GOOD.replace("kind = \"oxygen_concentrator\"", "kind = \"toaster\""))
                .contains("toaster")
        );
        assert!(
            refused(&GOOD.replace(
                "name = \"Concentrator 5 L\"",
                "name = \"x\"\ncolour = \"red\""
            ))
            .contains("colour")
        );
        assert!(
            refused(&format!(
                "{GOOD}\n{}",
                &GOOD[GOOD.find("[[model.alarm]]").expect("alarm")..]
            ))
            .contains("defined twice")
        );
        assert!(refused(&format!("{GOOD}\n{GOOD}")).contains("defined twice"));
        assert!(refused("model = []").contains("no [[model]]"));
    }
}
