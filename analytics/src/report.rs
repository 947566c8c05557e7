//! The reliability report: every statistic of one period for the requested grouping, the
//! entry point the API and the `fleetpulse report reliability` command call.
//!
//! Grouping keys are of two kinds. **Device keys** (model, kind, region) split the
//! population: a group's exposure is the operating hours of its devices. **Event keys**
//! (failure mode, code) split the failures only: every device of the device group is
//! exposed to every failure mode, so a group `model × failure mode` has the model's
//! operating hours and the failures of that mode. Rows for event keys exist for the
//! values observed in the period's failures (the catalog is not consulted, so a mode that
//! never failed has no row).
//!
//! Weibull fits of groups split by component or failure mode (not by code) are on the
//! **component lives** when the data holds them (`ReliabilityData::component_lives`): each
//! part's life from its installation to its failure, suspended at a renewal without
//! failure or at the period's end, with delayed entry for a part already running when
//! observation began (docs/reliability.md). Without lives, and for every other grouping,
//! a device's lifetimes are the runtime between its failures of the group, from meter 0.

use std::collections::BTreeMap;

use fleetpulse_domain::reliability::{FailureSource, Period, ReliabilityData};
use serde::{Deserialize, Serialize};

use crate::csv::Csv;
use crate::mtbf::{Sides, Termination};
use crate::{AnalyticsError, check_confidence};

/// A grouping dimension.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GroupKey {
    /// The whole population in one group (the default; no split).
    Fleet,
    /// Catalog model id.
    Model,
    /// Device kind (`oxygen_concentrator`, …).
    Kind,
    /// Region of the device.
    Region,
    /// Catalog failure mode of the failure (`compressor`, …): an event key.
    FailureMode,
    /// Fault or alarm code of the failure: an event key.
    Code,
    /// Catalog component of the failure (`comp1`, `sieve_bed`, …): an event key. Its
    /// Weibull fit is on the component lives (renewals, delayed entry).
    Component,
}

impl GroupKey {
    /// The snake-case name used in JSON and CSV headers.
    pub fn name(self) -> &'static str {
        match self {
            GroupKey::Fleet => "fleet",
            GroupKey::Model => "model",
            GroupKey::Kind => "kind",
            GroupKey::Region => "region",
            GroupKey::FailureMode => "failure_mode",
            GroupKey::Code => "code",
            GroupKey::Component => "component",
        }
    }

    /// Whether the key splits failures only (failure mode, code, component), not the
    /// population.
    pub fn is_event_key(self) -> bool {
        matches!(
            self,
            GroupKey::FailureMode | GroupKey::Code | GroupKey::Component
        )
    }

    /// Whether a Weibull fit of a group with this key is on component lives (when the
    /// data has them).
    pub fn fits_component_lives(self) -> bool {
        matches!(self, GroupKey::FailureMode | GroupKey::Component)
    }
}

/// The age and horizon of a conditional failure probability.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConditionalQuery {
    /// Age of the unit that has survived so far (runtime hours).
    pub age_hours: f64,
    /// Horizon Δt (runtime hours).
    pub horizon_hours: f64,
}

/// What to compute. `Default`: the whole fleet, two-sided 90 %, time-terminated, every
/// failure source, a 30-day first-time-fix window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReportQuery {
    /// Grouping keys, in column order; empty or `[fleet]` is the whole population.
    pub group_by: Vec<GroupKey>,
    /// Confidence level, strictly between 0 and 1.
    pub confidence: f64,
    /// Bounds to compute (MTBF, trend, Weibull).
    pub sides: Sides,
    /// Time- or failure-terminated MTBF bounds.
    pub termination: Termination,
    /// Failure sources to count; `None` is all of them.
    pub sources: Option<Vec<FailureSource>>,
    /// A completed repair is a first-time fix when no further repair order for the same
    /// serial is created within this many days after it closed.
    pub ftf_window_days: u32,
    /// Ages (runtime hours) at which to report the Weibull reliability R(t).
    pub reliability_at_hours: Vec<f64>,
    /// Conditional failure probability to report with each Weibull fit.
    pub conditional: Option<ConditionalQuery>,
}

impl Default for ReportQuery {
    fn default() -> Self {
        Self {
            group_by: Vec::new(),
            confidence: 0.90,
            sides: Sides::TwoSided,
            termination: Termination::Time,
            sources: None,
            ftf_window_days: 30,
            reliability_at_hours: Vec::new(),
            conditional: None,
        }
    }
}

impl ReportQuery {
    /// Checks the numbers a caller can get wrong.
    pub fn validate(&self) -> Result<(), AnalyticsError> {
        check_confidence(self.confidence)?;
        if let Some(bad) = self
            .reliability_at_hours
            .iter()
            .find(|t| !(t.is_finite() && **t >= 0.0))
        {
            return Err(AnalyticsError::InvalidInput(format!(
                "reliability_at_hours must be finite and non-negative, got {bad}"
            )));
        }
        if let Some(c) = self.conditional
            && !(c.age_hours.is_finite()
                && c.age_hours >= 0.0
                && c.horizon_hours.is_finite()
                && c.horizon_hours > 0.0)
        {
            return Err(AnalyticsError::InvalidInput(format!(
                "conditional needs a finite age ≥ 0 and a finite horizon > 0, got age {} h, horizon {} h",
                c.age_hours, c.horizon_hours
            )));
        }
        Ok(())
    }

    /// The grouping keys without `fleet` and without repeats, in the caller's order.
    pub fn keys(&self) -> Vec<GroupKey> {
        let mut keys = Vec::new();
        for &k in &self.group_by {
            if k != GroupKey::Fleet && !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }
}

/// One grouping key's value in a row; `value` is `None` when the record does not say
/// (a device without a model, a failure without a code).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
pub struct GroupValue {
    /// The key.
    pub key: GroupKey,
    /// Its value.
    pub value: Option<String>,
}

/// MTBF of one group.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MtbfRow {
    /// The group's key values (empty for the whole fleet).
    pub group: Vec<GroupValue>,
    /// `fleet`, or `model=OC-5A, failure_mode=compressor`.
    pub group_label: String,
    /// Devices of the population in the group.
    pub devices: u64,
    /// Operating hours of the group's devices in the period.
    pub operating_hours: f64,
    /// Failures of the group in the period.
    pub failures: u64,
    /// Operating hours / failures; `None` with zero failures or hours.
    pub mtbf_hours: Option<f64>,
    /// Lower confidence bound on MTBF.
    pub mtbf_lower: Option<f64>,
    /// Upper confidence bound on MTBF.
    pub mtbf_upper: Option<f64>,
    /// Failures per 1000 operating hours.
    pub rate_per_1000h: Option<f64>,
    /// Lower bound on the rate.
    pub rate_lower: Option<f64>,
    /// Upper bound on the rate.
    pub rate_upper: Option<f64>,
    /// Confidence level.
    pub confidence: f64,
    /// How the bounds were computed.
    pub method: String,
}

/// R(t) of a Weibull fit at one age.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReliabilityAt {
    /// Age (runtime hours).
    pub t_hours: f64,
    /// R(t).
    pub reliability: f64,
    /// Lower bound on R(t).
    pub lower: Option<f64>,
    /// Upper bound on R(t).
    pub upper: Option<f64>,
}

/// The conditional failure probability of a Weibull fit.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConditionalFailure {
    /// Age survived so far (runtime hours).
    pub age_hours: f64,
    /// Horizon (runtime hours).
    pub horizon_hours: f64,
    /// `1 − R(age + horizon) / R(age)`.
    pub probability: f64,
}

/// Weibull fit of one group: either the estimates or `error` saying why there are none.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WeibullRow {
    /// The group's key values.
    pub group: Vec<GroupValue>,
    /// `fleet`, or `model=OC-5A, failure_mode=compressor`.
    pub group_label: String,
    /// Failure lifetimes in the fit.
    pub n_failures: u64,
    /// Suspensions (right-censored lifetimes) in the fit.
    pub n_suspensions: u64,
    /// Shape β.
    pub beta: Option<f64>,
    /// Standard error of β (Fisher matrix).
    pub beta_se: Option<f64>,
    /// Lower bound on β.
    pub beta_lower: Option<f64>,
    /// Upper bound on β.
    pub beta_upper: Option<f64>,
    /// Scale η (runtime hours).
    pub eta: Option<f64>,
    /// Standard error of η.
    pub eta_se: Option<f64>,
    /// Lower bound on η.
    pub eta_lower: Option<f64>,
    /// Upper bound on η.
    pub eta_upper: Option<f64>,
    /// Covariance of η and β.
    pub cov_eta_beta: Option<f64>,
    /// Log-likelihood at the MLE.
    pub log_likelihood: Option<f64>,
    /// Akaike information criterion.
    pub aic: Option<f64>,
    /// Bayesian information criterion.
    pub bic: Option<f64>,
    /// B10 life: age by which 10 % have failed.
    pub b10_hours: Option<f64>,
    /// Lower bound on B10.
    pub b10_lower: Option<f64>,
    /// Upper bound on B10.
    pub b10_upper: Option<f64>,
    /// B50 life (median).
    pub b50_hours: Option<f64>,
    /// Lower bound on B50.
    pub b50_lower: Option<f64>,
    /// Upper bound on B50.
    pub b50_upper: Option<f64>,
    /// R(t) at the requested ages.
    pub reliability: Vec<ReliabilityAt>,
    /// Conditional failure probability, when requested.
    pub conditional: Option<ConditionalFailure>,
    /// Confidence level of the bounds.
    pub confidence: f64,
    /// How the fit and bounds were computed.
    pub method: String,
    /// Why there is no fit (e.g. `too few failures (1; at least 2 needed)`).
    pub error: Option<String>,
}

/// One bar of a Pareto chart.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ParetoRow {
    /// The device group (device keys only).
    pub group: Vec<GroupValue>,
    /// `fleet` or `model=OC-5A`.
    pub group_label: String,
    /// What the bars are: `code` or `failure_mode`.
    pub by: String,
    /// The code or mode; `None` for records without one.
    pub value: Option<String>,
    /// Failures (or alarm episodes) with this value.
    pub count: u64,
    /// Total in the group (the sample size).
    pub total: u64,
    /// `count / total`.
    pub share: f64,
    /// Share of this and every larger bar.
    pub cumulative_share: f64,
}

/// Failure rate of one group in one calendar month.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TrendRow {
    /// The group's key values.
    pub group: Vec<GroupValue>,
    /// `fleet`, or `model=OC-5A`.
    pub group_label: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Devices with exposure in the month.
    pub devices: u64,
    /// Operating hours in the month.
    pub operating_hours: f64,
    /// Failures in the month.
    pub failures: u64,
    /// Failures per 1000 operating hours.
    pub rate_per_1000h: Option<f64>,
    /// Lower bound on the rate.
    pub rate_lower: Option<f64>,
    /// Upper bound on the rate.
    pub rate_upper: Option<f64>,
    /// Confidence level.
    pub confidence: f64,
    /// How the bounds were computed.
    pub method: String,
}

/// Repair times and first-time fix of one group.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MttrRow {
    /// The group's key values.
    pub group: Vec<GroupValue>,
    /// `fleet`, or `model=OC-5A`.
    pub group_label: String,
    /// Repair orders of the group (any state).
    pub repairs: u64,
    /// Completed repair orders with a valid created → closed interval.
    pub completed: u64,
    /// Mean hours from creation to completion.
    pub mttr_mean_hours: Option<f64>,
    /// Median hours from creation to completion.
    pub mttr_median_hours: Option<f64>,
    /// Completed orders with a start time (hands-on sample size).
    pub hands_on_n: u64,
    /// Mean hours from start to completion.
    pub hands_on_mean_hours: Option<f64>,
    /// Median hours from start to completion.
    pub hands_on_median_hours: Option<f64>,
    /// First-time-fix window (days).
    pub ftf_window_days: u32,
    /// Completed repairs whose window is decided (a repeat seen, or the window elapsed).
    pub ftf_eligible: u64,
    /// Of those, repairs with no further repair order in the window.
    pub ftf_fixed: u64,
    /// Completed repairs without a repeat whose window had not elapsed by the period's
    /// end: not counted either way.
    pub ftf_pending: u64,
    /// `ftf_fixed / ftf_eligible`.
    pub ftf_rate: Option<f64>,
}

/// A data-quality finding (of the store, or of this crate's exclusions), by kind.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Warning {
    /// `store` (from `ReliabilityData.quality`) or `analytics`.
    pub source: String,
    /// `meter_reset`, `gap`, `no_meter`, `failure_without_age`, `weibull_no_age`, …
    pub kind: String,
    /// Occurrences.
    pub count: u64,
    /// What it means for the figures, with one example.
    pub detail: String,
}

/// Every reliability table of one period.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReliabilityReport {
    /// The period the data covers.
    pub period: Option<Period>,
    /// The query the report answers.
    pub query: ReportQuery,
    /// MTBF per group.
    pub mtbf: Vec<MtbfRow>,
    /// Weibull fit per group.
    pub weibull: Vec<WeibullRow>,
    /// Pareto of failures by code and by failure mode, per device group.
    pub pareto_failures: Vec<ParetoRow>,
    /// Pareto of alarm episodes by code, per device group.
    pub pareto_alarms: Vec<ParetoRow>,
    /// Failures per 1000 device-hours by group and month.
    pub trend: Vec<TrendRow>,
    /// MTTR and first-time fix per group (event keys: fault code, failure mode of the
    /// linked failure).
    pub mttr: Vec<MttrRow>,
    /// Data-quality findings and exclusions.
    pub warnings: Vec<Warning>,
}

/// Computes every table of the report for `query` over `data`.
///
/// Errors only on an invalid query (confidence outside (0, 1), non-finite ages); bad
/// records are excluded and counted in `warnings`, and a group whose Weibull fit fails
/// carries the reason in its row.
pub fn compute(
    data: &ReliabilityData,
    query: &ReportQuery,
) -> Result<ReliabilityReport, AnalyticsError> {
    query.validate()?;
    crate::frames::build_report(data, query)
}

/// The lifetimes behind one group's Weibull fit (for probability plots, exports and
/// cross-checks against other tools).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WeibullSample {
    /// The group's key values.
    pub group: Vec<GroupValue>,
    /// `fleet`, or `model=OC-5A, failure_mode=compressor`.
    pub group_label: String,
    /// Failure lifetimes (runtime hours).
    pub failures: Vec<f64>,
    /// Suspensions (runtime hours).
    pub suspensions: Vec<f64>,
    /// Component lives with their entry ages (left truncation), when the fit is on
    /// component lives; `failures` and `suspensions` are then their exit ages.
    pub lives: Vec<crate::weibull::Life>,
}

/// The Weibull populations `compute` fits for `query`, one per group, in the same order
/// as the report's `weibull` table.
pub fn weibull_samples(
    data: &ReliabilityData,
    query: &ReportQuery,
) -> Result<Vec<WeibullSample>, AnalyticsError> {
    query.validate()?;
    crate::frames::weibull_samples(data, query)
}

/// `fleet` for no keys, else `model=OC-5A, failure_mode=compressor`.
pub(crate) fn group_label(group: &[GroupValue]) -> String {
    if group.is_empty() {
        return "fleet".to_owned();
    }
    group
        .iter()
        .map(|g| {
            format!(
                "{}={}",
                g.key.name(),
                g.value.as_deref().unwrap_or("(none)")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt(x: Option<f64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

fn group_columns(csv: &mut Csv, keys: &[GroupKey]) {
    csv.field("group");
    for k in keys {
        csv.field(k.name());
    }
}

fn group_fields(csv: &mut Csv, keys: &[GroupKey], label: &str, group: &[GroupValue]) {
    csv.field(label);
    let by_key: BTreeMap<GroupKey, &Option<String>> =
        group.iter().map(|g| (g.key, &g.value)).collect();
    for k in keys {
        csv.field(by_key.get(k).and_then(|v| v.as_deref()).unwrap_or(""));
    }
}

impl ReliabilityReport {
    /// One CSV document per table (RFC 4180: header row, CRLF line ends, fields quoted
    /// when they hold a comma, quote or line break): `mtbf`, `weibull`,
    /// `weibull_reliability`, `pareto_failures`, `pareto_alarms`, `trend`, `mttr`,
    /// `warnings`. Undefined figures are empty fields.
    pub fn tables_csv(&self) -> Vec<(&'static str, String)> {
        let keys = self.query.keys();
        let device_keys: Vec<GroupKey> =
            keys.iter().copied().filter(|k| !k.is_event_key()).collect();
        let mut out = Vec::new();

        let mut c = Csv::default();
        group_columns(&mut c, &keys);
        c.fields(&[
            "devices",
            "operating_hours",
            "failures",
            "mtbf_hours",
            "mtbf_lower",
            "mtbf_upper",
            "rate_per_1000h",
            "rate_lower",
            "rate_upper",
            "confidence",
            "method",
        ]);
        c.end_row();
        for r in &self.mtbf {
            group_fields(&mut c, &keys, &r.group_label, &r.group);
            c.field(&r.devices.to_string());
            c.field(&r.operating_hours.to_string());
            c.field(&r.failures.to_string());
            for v in [
                r.mtbf_hours,
                r.mtbf_lower,
                r.mtbf_upper,
                r.rate_per_1000h,
                r.rate_lower,
                r.rate_upper,
            ] {
                c.field(&opt(v));
            }
            c.field(&r.confidence.to_string());
            c.field(&r.method);
            c.end_row();
        }
        out.push(("mtbf", c.finish()));

        let mut c = Csv::default();
        group_columns(&mut c, &keys);
        c.fields(&[
            "n_failures",
            "n_suspensions",
            "beta",
            "beta_se",
            "beta_lower",
            "beta_upper",
            "eta",
            "eta_se",
            "eta_lower",
            "eta_upper",
            "cov_eta_beta",
            "log_likelihood",
            "aic",
            "bic",
            "b10_hours",
            "b10_lower",
            "b10_upper",
            "b50_hours",
            "b50_lower",
            "b50_upper",
            "conditional_age_hours",
            "conditional_horizon_hours",
            "conditional_probability",
            "confidence",
            "method",
            "error",
        ]);
        c.end_row();
        for r in &self.weibull {
            group_fields(&mut c, &keys, &r.group_label, &r.group);
            c.field(&r.n_failures.to_string());
            c.field(&r.n_suspensions.to_string());
            for v in [
                r.beta,
                r.beta_se,
                r.beta_lower,
                r.beta_upper,
                r.eta,
                r.eta_se,
                r.eta_lower,
                r.eta_upper,
                r.cov_eta_beta,
                r.log_likelihood,
                r.aic,
                r.bic,
                r.b10_hours,
                r.b10_lower,
                r.b10_upper,
                r.b50_hours,
                r.b50_lower,
                r.b50_upper,
                r.conditional.as_ref().map(|c| c.age_hours),
                r.conditional.as_ref().map(|c| c.horizon_hours),
                r.conditional.as_ref().map(|c| c.probability),
            ] {
                c.field(&opt(v));
            }
            c.field(&r.confidence.to_string());
            c.field(&r.method);
            c.field(r.error.as_deref().unwrap_or(""));
            c.end_row();
        }
        out.push(("weibull", c.finish()));

        let mut c = Csv::default();
        group_columns(&mut c, &keys);
        c.fields(&["t_hours", "reliability", "lower", "upper"]);
        c.end_row();
        for r in &self.weibull {
            for at in &r.reliability {
                group_fields(&mut c, &keys, &r.group_label, &r.group);
                c.field(&at.t_hours.to_string());
                c.field(&at.reliability.to_string());
                c.field(&opt(at.lower));
                c.field(&opt(at.upper));
                c.end_row();
            }
        }
        out.push(("weibull_reliability", c.finish()));

        for (name, rows) in [
            ("pareto_failures", &self.pareto_failures),
            ("pareto_alarms", &self.pareto_alarms),
        ] {
            let mut c = Csv::default();
            group_columns(&mut c, &device_keys);
            c.fields(&["by", "value", "count", "total", "share", "cumulative_share"]);
            c.end_row();
            for r in rows {
                group_fields(&mut c, &device_keys, &r.group_label, &r.group);
                c.field(&r.by);
                c.field(r.value.as_deref().unwrap_or(""));
                c.field(&r.count.to_string());
                c.field(&r.total.to_string());
                c.field(&r.share.to_string());
                c.field(&r.cumulative_share.to_string());
                c.end_row();
            }
            out.push((name, c.finish()));
        }

        let mut c = Csv::default();
        group_columns(&mut c, &keys);
        c.fields(&[
            "month",
            "devices",
            "operating_hours",
            "failures",
            "rate_per_1000h",
            "rate_lower",
            "rate_upper",
            "confidence",
            "method",
        ]);
        c.end_row();
        for r in &self.trend {
            group_fields(&mut c, &keys, &r.group_label, &r.group);
            c.field(&r.month);
            c.field(&r.devices.to_string());
            c.field(&r.operating_hours.to_string());
            c.field(&r.failures.to_string());
            for v in [r.rate_per_1000h, r.rate_lower, r.rate_upper] {
                c.field(&opt(v));
            }
            c.field(&r.confidence.to_string());
            c.field(&r.method);
            c.end_row();
        }
        out.push(("trend", c.finish()));

        let mut c = Csv::default();
        group_columns(&mut c, &keys);
        c.fields(&[
            "repairs",
            "completed",
            "mttr_mean_hours",
            "mttr_median_hours",
            "hands_on_n",
            "hands_on_mean_hours",
            "hands_on_median_hours",
            "ftf_window_days",
            "ftf_eligible",
            "ftf_fixed",
            "ftf_pending",
            "ftf_rate",
        ]);
        c.end_row();
        for r in &self.mttr {
            group_fields(&mut c, &keys, &r.group_label, &r.group);
            c.field(&r.repairs.to_string());
            c.field(&r.completed.to_string());
            c.field(&opt(r.mttr_mean_hours));
            c.field(&opt(r.mttr_median_hours));
            c.field(&r.hands_on_n.to_string());
            c.field(&opt(r.hands_on_mean_hours));
            c.field(&opt(r.hands_on_median_hours));
            c.field(&r.ftf_window_days.to_string());
            c.field(&r.ftf_eligible.to_string());
            c.field(&r.ftf_fixed.to_string());
            c.field(&r.ftf_pending.to_string());
            c.field(&opt(r.ftf_rate));
            c.end_row();
        }
        out.push(("mttr", c.finish()));

        let mut c = Csv::default();
        c.fields(&["source", "kind", "count", "detail"]);
        c.end_row();
        for w in &self.warnings {
            c.field(&w.source);
            c.field(&w.kind);
            c.field(&w.count.to_string());
            c.field(&w.detail);
            c.end_row();
        }
        out.push(("warnings", c.finish()));
        out
    }
}
