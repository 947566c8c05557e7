//! The model, alarm and service catalog (`config/catalog.toml`), loaded at start and
//! validated: a catalog that would make a rule misfire is refused with the model and code
//! that are wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::alarm::{AlarmCode, Category, Severity};
use crate::device::{Criticality, DeviceKind};
use crate::order::PartRef;
use crate::telemetry::known_field;

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
}

/// One device model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub id: ModelId,
    /// Marketing name a person recognises.
    pub name: String,
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
    /// Consumables that wear with use (filters, sieve beds, batteries).
    #[serde(default, rename = "consumable")]
    pub consumables: Vec<ConsumableSpec>,
    /// Alarm codes this model raises.
    #[serde(default, rename = "alarm")]
    pub alarms: Vec<AlarmSpec>,
}

/// A consumable whose remaining life the device reports as a percentage field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumableSpec {
    /// Short id; the order cause is `<id>_depletion`.
    pub id: String,
    pub name: String,
    /// Telemetry field carrying remaining life in percent (e.g. `filter_life_pct`).
    pub field: String,
    /// A maintenance order is raised when the field is at or below this value.
    pub order_at_pct: f64,
    /// Rated life in runtime hours from new (used by forecasts).
    pub rated_life_hours: f64,
    pub skill: String,
    pub labour_minutes: u32,
    #[serde(default)]
    pub parts: Vec<PartRef>,
}

/// What an alarm code means for a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmSpec {
    pub code: AlarmCode,
    pub title: String,
    pub severity: Severity,
    pub category: Category,
    /// An episode of this alarm is a failure event (reliability statistics).
    pub counts_as_failure: bool,
    /// The failure mode it indicates (`compressor`, `sieve_bed`, `blower`, …).
    #[serde(default)]
    pub failure_mode: Option<String>,
    /// How long before a failure of this mode it can show in the telemetry (its P-F
    /// interval), in days: the failure-risk model of the mode warns over this horizon.
    /// Unset: `analytics.model.horizon_days`.
    #[serde(default)]
    pub warning_horizon_days: Option<f64>,
    /// What the engineer should do.
    pub solution: String,
    pub labour_minutes: u32,
    pub skill: String,
    #[serde(default)]
    pub parts: Vec<PartRef>,
}

/// A validated catalog.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Catalog {
    models: BTreeMap<ModelId, ModelSpec>,
}

/// Why a catalog was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog is not valid TOML for the expected shape: {0}")]
    Syntax(String),
    #[error("catalog: {0}")]
    Invalid(String),
}

impl Catalog {
    /// Parses and validates a catalog file's text.
    pub fn from_toml_str(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|e| CatalogError::Syntax(e.to_string()))?;
        Self::from_models(file.models)
    }

    /// Validates a list of models.
    pub fn from_models(models: Vec<ModelSpec>) -> Result<Self, CatalogError> {
        let mut by_id = BTreeMap::new();
        for m in models {
            validate_model(&m)?;
            let id = m.id.clone();
            if by_id.insert(id.clone(), m).is_some() {
                return Err(invalid(format!("model {id} is defined twice")));
            }
        }
        if by_id.is_empty() {
            return Err(invalid("no [[model]] entries".into()));
        }
        Ok(Self { models: by_id })
    }

    pub fn model(&self, id: &str) -> Option<&ModelSpec> {
        self.models.get(id)
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models.values()
    }
}

impl std::borrow::Borrow<str> for ModelId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl ModelSpec {
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
        if c.id.is_empty() || !c.id.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_') {
            return Err(at_c("id must be lower-case letters and '_'".into()));
        }
        match known_field(&c.field) {
            Some(f) if f.unit == "%" => {}
            _ => {
                return Err(at_c(format!(
                    "field {:?} is not a percentage field of the telemetry contract",
                    c.field
                )));
            }
        }
        if !(0.0..100.0).contains(&c.order_at_pct) {
            return Err(at_c(format!(
                "order_at_pct = {} must be in 0..100",
                c.order_at_pct
            )));
        }
        if !(c.rated_life_hours.is_finite() && c.rated_life_hours > 0.0) {
            return Err(at_c(format!(
                "rated_life_hours = {} must be positive",
                c.rated_life_hours
            )));
        }
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
