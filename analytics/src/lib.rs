//! Reliability statistics for fleetpulse: MTBF with chi-square bounds, 2-parameter Weibull
//! maximum-likelihood fits with right-censored data (suspensions) and Fisher-matrix bounds,
//! Pareto of failures and alarm episodes, failure-rate trend per 1000 device-hours by
//! month, and MTTR with first-time-fix rate.
//!
//! **Data model.** The store hands over one [`ReliabilityData`] per period: the population
//! (devices with model, kind, region and runtime-hour meter ages), operating hours per
//! device and month (exposure), confirmed failure events, repair orders, alarm episodes and
//! data-quality findings. [`report::compute`] groups them (fleet, model, kind, region,
//! failure mode, code) with polars — the big tables (device-month exposure, failures) are
//! dictionary-encoded into integer columns and aggregated lazily — and runs the scalar
//! statistics ([`mtbf`], [`weibull`]) in plain Rust on the aggregated figures.
//!
//! **Guarantees.** Operating time is runtime hours, never calendar time. Every figure says
//! how it was computed (method string, confidence level) and on how much data (failures,
//! suspensions, devices, hours). No NaN or infinity reaches the output: anything undefined
//! (MTBF with zero failures, a Weibull fit with too few failures, a rate over zero hours) is
//! `None`, and a group whose fit fails carries its error message instead of failing the
//! whole report. Data-quality findings of the store are summarised in the report's
//! warnings, together with the exclusions this crate makes (e.g. failures without an age
//! cannot enter a Weibull fit). Results match the Python `reliability` package (Weibull
//! MLE, Fisher bounds) and `scipy.stats.chi2` (MTBF bounds); see `docs/reliability.md`
//! and the tests in `analytics/tests/` for the reference values and their provenance.
//!
//! [`ReliabilityData`]: fleetpulse_domain::reliability::ReliabilityData

mod csv;
mod frames;
pub mod lives;
pub mod mtbf;
pub mod mttr;
pub mod pareto;
pub mod predict;
pub mod report;
pub mod trend;
pub mod weibull;

/// The reference data sets of `tests/refdata` (generated), for unit tests of private solvers.
#[cfg(test)]
#[path = "../tests/refdata/mod.rs"]
mod refdata;

pub use report::{
    ConditionalQuery, GroupKey, GroupValue, MtbfRow, MttrRow, ParetoRow, ReliabilityAt,
    ReliabilityReport, ReportQuery, TrendRow, Warning, WeibullRow, WeibullSample, compute,
    weibull_samples,
};

/// Why a statistic could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalyticsError {
    /// A confidence level outside the open interval (0, 1).
    #[error("confidence level must be strictly between 0 and 1, got {0}")]
    InvalidConfidence(f64),
    /// Input values that no statistic accepts (negative, NaN or infinite hours, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Too few failures for a Weibull fit.
    #[error("too few failures ({got}; at least {needed} needed)")]
    TooFewFailures {
        /// Failures available.
        got: usize,
        /// Failures the method needs.
        needed: usize,
    },
    /// Every failure time is equal and no suspension is longer: the shape parameter is
    /// unbounded, so there is no maximum-likelihood estimate.
    #[error(
        "all failure times are equal ({0} h) and no suspension is longer: the Weibull shape is unbounded"
    )]
    AllEqual(f64),
    /// The optimiser did not converge.
    #[error("Weibull fit did not converge: {0}")]
    NoConvergence(String),
    /// The dataframe engine failed (a bug, not a data problem).
    #[error("dataframe engine error: {0}")]
    Frame(String),
}

impl From<polars::error::PolarsError> for AnalyticsError {
    fn from(e: polars::error::PolarsError) -> Self {
        AnalyticsError::Frame(e.to_string())
    }
}

/// Checks that a confidence level lies strictly between 0 and 1.
pub fn check_confidence(confidence: f64) -> Result<(), AnalyticsError> {
    if confidence.is_finite() && confidence > 0.0 && confidence < 1.0 {
        Ok(())
    } else {
        Err(AnalyticsError::InvalidConfidence(confidence))
    }
}
