//! Reliability statistics (`GET /api/v1/reliability/{mtbf,weibull,pareto,trend,mttr}`,
//! roles quality, planner and admin) and history import
//! (`POST /api/v1/reliability/import/{failures,maintenance}`, roles quality and admin).
//!
//! Each statistic reads the store's [`ReliabilityData`] of the period (the store refolds
//! changed device-months first) and computes the report with
//! [`fleetpulse_analytics::compute`]; JSON answers carry the period, the query as
//! understood (confidence, sides, termination, grouping), the rows (each with its method
//! and sample sizes), the sample the report was computed on and the data-quality
//! warnings. `format=csv` or `Accept: text/csv` answers the statistic's table as CSV.
//! Data side: docs/reliability-data.md; methods: docs/reliability.md.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use fleetpulse_analytics::mtbf::{Sides, Termination};
use fleetpulse_analytics::{
    AnalyticsError, ConditionalQuery, GroupKey, MtbfRow, MttrRow, ParetoRow, ReliabilityReport,
    ReportQuery, TrendRow, Warning, WeibullRow,
};
use fleetpulse_domain::dispatch::Role;
use fleetpulse_domain::reliability::{
    DataRequest, FailureSource, ImportKind, ImportReport, Period, ReliabilityData,
};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{self, Query};

/// Who may read the statistics (admin may do everything).
pub const READERS: &[Role] = &[Role::Quality, Role::Planner];

/// Who may import history (admin may do everything).
pub const IMPORTERS: &[Role] = &[Role::Quality];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/reliability/mtbf", get(mtbf))
        .route("/api/v1/reliability/weibull", get(weibull))
        .route("/api/v1/reliability/pareto", get(pareto))
        .route("/api/v1/reliability/trend", get(trend))
        .route("/api/v1/reliability/mttr", get(mttr))
        .route("/api/v1/reliability/import/failures", post(import_failures))
        .route(
            "/api/v1/reliability/import/maintenance",
            post(import_maintenance),
        )
}

/// Loads past failures from CSV (`Content-Type: text/csv`; header row with the columns
/// `serial`, `at` (RFC 3339), and optionally `runtime_hours`, `fault_code`,
/// `failure_mode`, `notes`). Bad rows are reported with their line number (the header is
/// line 1) and do not stop the good ones; rows imported before count as duplicates.
/// A header with an unknown or missing column refuses the file (422).
#[utoipa::path(post, path = "/api/v1/reliability/import/failures", tag = "reliability",
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row"),
    responses((status = 200, description = "What was loaded, and every refused row with its line and reason", body = ImportReport)))]
async fn import_failures(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    crate::routes::history::import_csv(
        caller,
        state,
        headers,
        body,
        ImportKind::Failures,
        "reliability",
        crate::MAX_BODY_BYTES,
    )
    .await
}

/// Loads past services and consumable replacements from CSV (`Content-Type: text/csv`;
/// columns `serial`, `at` (RFC 3339), `kind` (`service` or `consumable`), and optionally
/// `runtime_hours`, `consumable` (required with kind consumable), `notes`). Same row
/// rules as the failure import.
#[utoipa::path(post, path = "/api/v1/reliability/import/maintenance", tag = "reliability",
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row"),
    responses((status = 200, description = "What was loaded, and every refused row with its line and reason", body = ImportReport)))]
async fn import_maintenance(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    crate::routes::history::import_csv(
        caller,
        state,
        headers,
        body,
        ImportKind::Maintenance,
        "reliability",
        crate::MAX_BODY_BYTES,
    )
    .await
}

/// Longest period one statistic covers.
pub const MAX_PERIOD_DAYS: i64 = 20 * 366;
/// Most R(t) ages one request asks for.
pub const MAX_AT_HOURS: usize = 50;

/// Query of every `GET /api/v1/reliability/…` statistic.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatParams {
    /// Start of the period (RFC 3339, inclusive); default 365 days before `to`. Exposure is
    /// monthly: the period includes the operating hours of every month it touches.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// End of the period (RFC 3339, exclusive); default now. At most 20 years after `from`.
    /// A period ending inside a month counts that month's operating hours up to its end.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// Read the data as it was known at this instant (RFC 3339, not in the future, after
    /// `from`): nothing recorded at or after it is read, the period ends there when it is
    /// earlier, and later corrections (a retraction, a repair order's confirmation, an
    /// order's closure) are left out. Default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    as_of: Option<String>,
    /// Grouping, comma-separated, in column order: `fleet` (default, no split), `model`,
    /// `kind`, `region` (split the population) and `failure_mode`, `code`, `component`
    /// (split the failures; each group keeps its devices' operating hours). Weibull fits
    /// split by `component` or `failure_mode` (not `code`) are on the component lives:
    /// from installation or renewal to failure, suspended at a preventive replacement or
    /// the period's end, with delayed entry for parts already running.
    #[param(value_type = Option<String>, pattern = "^[\\s,]*((fleet|model|kind|region|failure_mode|code|component)(\\s*,[\\s,]*(fleet|model|kind|region|failure_mode|code|component))*[\\s,]*)?$")]
    group_by: Option<String>,
    /// Confidence level of every bound, strictly between 0 and 1; default 0.9.
    #[param(value_type = Option<f64>, exclusive_minimum = 0, exclusive_maximum = 1)]
    confidence: Option<String>,
    /// `two_sided` (default), `lower` or `upper`: which bounds to compute.
    #[param(value_type = Option<String>, pattern = "^(two_sided|lower|upper)$")]
    sides: Option<String>,
    /// MTBF bounds for a `time`-terminated (default) or `failure`-terminated test.
    #[param(value_type = Option<String>, pattern = "^(time|failure)$")]
    termination: Option<String>,
    /// Failure sources to count, comma-separated: `repair_order`, `import`, `alarm`;
    /// default all.
    #[param(value_type = Option<String>, pattern = "^[\\s,]*(repair_order|import|alarm)(\\s*,[\\s,]*(repair_order|import|alarm))*[\\s,]*$")]
    sources: Option<String>,
    /// Weibull: ages (runtime hours, comma-separated, ≥ 0, at most 50) at which to report
    /// the reliability R(t).
    #[param(value_type = Option<String>, pattern = "^[\\s,]*([0-9]{1,9}([.][0-9]{1,6})?(\\s*,[\\s,]*[0-9]{1,9}([.][0-9]{1,6})?){0,49}[\\s,]*)?$")]
    at_hours: Option<String>,
    /// Weibull: the age (runtime hours, ≥ 0) of a unit that has survived so far, for the
    /// conditional probability of failing within `horizon_hours`; give both or neither.
    #[param(value_type = Option<f64>, minimum = 0)]
    age_hours: Option<String>,
    /// Weibull: the horizon (runtime hours, > 0) of the conditional probability.
    #[param(value_type = Option<f64>, exclusive_minimum = 0)]
    horizon_hours: Option<String>,
    /// MTTR: a completed repair is a first-time fix when no further repair order for the
    /// device is created within this many days after it closed (1 to 365; default 30).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 365)]
    ftf_window_days: Option<String>,
    /// `json` (default) or `csv` (the statistic's table; also chosen by `Accept: text/csv`).
    #[param(value_type = Option<String>, pattern = "^(json|csv)$")]
    format: Option<String>,
    /// Pareto as CSV: `failures` (default) or `alarms`. The JSON answer has both.
    #[param(value_type = Option<String>, pattern = "^(failures|alarms)$")]
    of: Option<String>,
}

/// What a report was computed on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// Devices of the population.
    pub devices: usize,
    /// Device-month exposure rows.
    pub exposure_rows: usize,
    /// Operating hours of the whole population in the period.
    pub operating_hours: f64,
    /// Failure events in the period (retracted ones excluded; before the `sources` filter).
    pub failures: usize,
    /// Repair orders created or closed in the period.
    pub repairs: usize,
    /// Alarm episodes that started in the period.
    pub alarms: usize,
    /// Data-quality findings of the store (summarised in `warnings`).
    pub quality_findings: usize,
    /// Component lives read (for Weibull fits by component or failure mode).
    pub component_lives: usize,
}

/// Fields every statistic's JSON answer has.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Context {
    /// The period `[from, to)` (ending at `as_of` when that is earlier).
    pub period: Period,
    /// The as-of time of the read, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<Utc>>,
    /// The query as understood: grouping, confidence, sides, termination, sources, ….
    pub query: ReportQuery,
    /// What the report was computed on.
    pub sample: Sample,
    /// Data-quality findings and exclusions (meter resets, gaps, devices without a meter,
    /// failures without an age, …).
    pub warnings: Vec<Warning>,
}

/// `GET /api/v1/reliability/mtbf`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MtbfAnswer {
    #[serde(flatten)]
    pub context: Context,
    /// One row per group: operating hours, failures, MTBF and failure rate per 1000 h with
    /// chi-square bounds, the method.
    pub rows: Vec<MtbfRow>,
}

/// `GET /api/v1/reliability/weibull`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WeibullAnswer {
    #[serde(flatten)]
    pub context: Context,
    /// One fit per group (2-parameter MLE with suspensions, Fisher-matrix bounds), or the
    /// reason there is none (`error`).
    pub rows: Vec<WeibullRow>,
}

/// `GET /api/v1/reliability/pareto`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParetoAnswer {
    #[serde(flatten)]
    pub context: Context,
    /// Failures by code and by failure mode, with shares and cumulative shares.
    pub failures: Vec<ParetoRow>,
    /// Alarm episodes by code.
    pub alarms: Vec<ParetoRow>,
}

/// `GET /api/v1/reliability/trend`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrendAnswer {
    #[serde(flatten)]
    pub context: Context,
    /// Failures per 1000 device-hours per group and month, with bounds.
    pub rows: Vec<TrendRow>,
}

/// `GET /api/v1/reliability/mttr`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MttrAnswer {
    #[serde(flatten)]
    pub context: Context,
    /// Mean and median time to repair, hands-on time, first-time-fix rate per group.
    pub rows: Vec<MttrRow>,
}

/// One statistic's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stat {
    Mtbf,
    Weibull,
    Pareto,
    Trend,
    Mttr,
}

/// A parsed request.
struct Request {
    period: Period,
    as_of: Option<DateTime<Utc>>,
    query: ReportQuery,
    csv: bool,
    pareto_of_alarms: bool,
}

fn list(raw: Option<&str>) -> Vec<&str> {
    raw.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

fn number(parameter: &'static str, raw: &str) -> Result<f64, ApiError> {
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            ApiError::parameter(
                parameter,
                format!("{parameter} = {raw:?} is not a finite number"),
            )
        })
}

fn choice<T: Copy>(
    parameter: &'static str,
    raw: Option<&str>,
    allowed: &[(&str, T)],
    default: T,
) -> Result<T, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    allowed
        .iter()
        .find(|(name, _)| *name == raw)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            ApiError::parameter(
                parameter,
                format!("{parameter} = {raw:?} is not one of {}", names.join(", ")),
            )
        })
}

const GROUP_KEYS: &[(&str, GroupKey)] = &[
    ("fleet", GroupKey::Fleet),
    ("model", GroupKey::Model),
    ("kind", GroupKey::Kind),
    ("region", GroupKey::Region),
    ("failure_mode", GroupKey::FailureMode),
    ("code", GroupKey::Code),
    ("component", GroupKey::Component),
];

const SOURCES: &[(&str, FailureSource)] = &[
    ("repair_order", FailureSource::RepairOrder),
    ("import", FailureSource::Import),
    ("alarm", FailureSource::Alarm),
];

fn parse(p: &StatParams, headers: &HeaderMap, now: DateTime<Utc>) -> Result<Request, ApiError> {
    let to = extract::time("to", p.to.as_deref())?.unwrap_or(now);
    let from = extract::time("from", p.from.as_deref())?.unwrap_or(to - Duration::days(365));
    if from >= to {
        return Err(ApiError::parameter(
            "from",
            format!(
                "from ({}) must be before to ({})",
                from.to_rfc3339(),
                to.to_rfc3339()
            ),
        ));
    }
    if to - from > Duration::days(MAX_PERIOD_DAYS) {
        return Err(ApiError::parameter(
            "to",
            format!("the period is longer than {MAX_PERIOD_DAYS} days; ask for a shorter one"),
        ));
    }
    let as_of = extract::time("as_of", p.as_of.as_deref())?;
    if let Some(t) = as_of {
        if t > now {
            return Err(ApiError::parameter(
                "as_of",
                format!("as_of ({}) is in the future", t.to_rfc3339()),
            ));
        }
        if t <= from {
            return Err(ApiError::parameter(
                "as_of",
                format!(
                    "as_of ({}) must be after from ({})",
                    t.to_rfc3339(),
                    from.to_rfc3339()
                ),
            ));
        }
    }
    let mut query = ReportQuery::default();
    for name in list(p.group_by.as_deref()) {
        let key = choice("group_by", Some(name), GROUP_KEYS, GroupKey::Fleet)?;
        if !query.group_by.contains(&key) {
            query.group_by.push(key);
        }
    }
    if let Some(raw) = p.confidence.as_deref() {
        let c = number("confidence", raw)?;
        if !(c > 0.0 && c < 1.0) {
            return Err(ApiError::parameter(
                "confidence",
                format!("confidence = {raw:?} must be strictly between 0 and 1 (e.g. 0.9)"),
            ));
        }
        query.confidence = c;
    }
    query.sides = choice(
        "sides",
        p.sides.as_deref(),
        &[
            ("two_sided", Sides::TwoSided),
            ("lower", Sides::Lower),
            ("upper", Sides::Upper),
        ],
        Sides::TwoSided,
    )?;
    query.termination = choice(
        "termination",
        p.termination.as_deref(),
        &[
            ("time", Termination::Time),
            ("failure", Termination::Failure),
        ],
        Termination::Time,
    )?;
    if p.sources.is_some() {
        let mut sources = Vec::new();
        for name in list(p.sources.as_deref()) {
            let s = choice("sources", Some(name), SOURCES, FailureSource::RepairOrder)?;
            if !sources.contains(&s) {
                sources.push(s);
            }
        }
        if sources.is_empty() {
            return Err(ApiError::parameter(
                "sources",
                "sources is empty; name at least one of repair_order, import, alarm",
            ));
        }
        query.sources = Some(sources);
    }
    let ages = list(p.at_hours.as_deref());
    if ages.len() > MAX_AT_HOURS {
        return Err(ApiError::parameter(
            "at_hours",
            format!("at_hours lists {} ages; at most {MAX_AT_HOURS}", ages.len()),
        ));
    }
    for raw in ages {
        let t = number("at_hours", raw)?;
        if t < 0.0 {
            return Err(ApiError::parameter(
                "at_hours",
                format!("at_hours value {raw:?} is negative"),
            ));
        }
        query.reliability_at_hours.push(t);
    }
    match (p.age_hours.as_deref(), p.horizon_hours.as_deref()) {
        (None, None) => {}
        (Some(a), Some(h)) => {
            let age_hours = number("age_hours", a)?;
            let horizon_hours = number("horizon_hours", h)?;
            if age_hours < 0.0 {
                return Err(ApiError::parameter(
                    "age_hours",
                    format!("age_hours = {a:?} is negative"),
                ));
            }
            if horizon_hours <= 0.0 {
                return Err(ApiError::parameter(
                    "horizon_hours",
                    format!("horizon_hours = {h:?} must be greater than 0"),
                ));
            }
            query.conditional = Some(ConditionalQuery {
                age_hours,
                horizon_hours,
            });
        }
        (Some(_), None) => {
            return Err(ApiError::parameter(
                "horizon_hours",
                "age_hours needs horizon_hours too",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::parameter(
                "age_hours",
                "horizon_hours needs age_hours too",
            ));
        }
    }
    if let Some(raw) = p.ftf_window_days.as_deref() {
        query.ftf_window_days = raw
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .ok_or_else(|| {
                ApiError::parameter(
                    "ftf_window_days",
                    format!(
                        "ftf_window_days = {raw:?} must be a whole number of days from 1 to 365"
                    ),
                )
            })?;
    }
    let accept_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    let csv = choice(
        "format",
        p.format.as_deref(),
        &[("json", false), ("csv", true)],
        accept_csv,
    )?;
    let pareto_of_alarms = choice(
        "of",
        p.of.as_deref(),
        &[("failures", false), ("alarms", true)],
        false,
    )?;
    Ok(Request {
        period: Period { from, to },
        as_of,
        query,
        csv,
        pareto_of_alarms,
    })
}

fn analytics_err(e: AnalyticsError) -> ApiError {
    match e {
        AnalyticsError::Frame(m) => ApiError::Internal(format!("reliability report: {m}")),
        other => ApiError::Unprocessable {
            code: "invalid_query",
            message: other.to_string(),
            details: None,
        },
    }
}

/// Reads the period (as known at `as_of`, `None`: now) and computes the report for
/// `query` off the async workers: the statistics routes and the quality page.
pub async fn report(
    state: &AppState,
    period: Period,
    as_of: Option<DateTime<Utc>>,
    query: &ReportQuery,
) -> Result<(ReliabilityData, ReliabilityReport), ApiError> {
    let data = state
        .reliability
        .reliability_data_for(DataRequest {
            period,
            as_of,
            component_lives: query.keys().iter().any(|k| k.fits_component_lives()),
        })
        .await?;
    let query = query.clone();
    tokio::task::spawn_blocking(move || {
        let report = fleetpulse_analytics::compute(&data, &query);
        report.map(|r| (data, r))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reliability report task failed: {e}")))?
    .map_err(analytics_err)
}

fn context(period: Period, data: &ReliabilityData, report: &ReliabilityReport) -> Context {
    Context {
        period: data.period.unwrap_or(period),
        as_of: data.as_of,
        query: report.query.clone(),
        sample: Sample {
            devices: data.devices.len(),
            exposure_rows: data.exposure.len(),
            // from +0.0: `Sum` of no f64 is -0.0 (a period without exposure, e.g. imported
            // failures without meter history, would print `-0.0`)
            operating_hours: data.exposure.iter().fold(0.0, |sum, e| sum + e.hours),
            failures: data.failures.len(),
            repairs: data.repairs.len(),
            alarms: data.alarms.len(),
            quality_findings: data.quality.len(),
            component_lives: data.component_lives.len(),
        },
        warnings: report.warnings.clone(),
    }
}

fn csv_answer(report: &ReliabilityReport, table: &str) -> Result<Response, ApiError> {
    let (_, text) = report
        .tables_csv()
        .into_iter()
        .find(|(name, _)| *name == table)
        .ok_or_else(|| ApiError::Internal(format!("the report has no {table} table")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"reliability-{table}.csv\""),
            ),
        ],
        text,
    )
        .into_response())
}

async fn answer(
    caller: Caller,
    state: AppState,
    headers: HeaderMap,
    p: StatParams,
    stat: Stat,
) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    let req = parse(&p, &headers, state.clock.now())?;
    let (data, report) = report(&state, req.period, req.as_of, &req.query).await?;
    if req.csv {
        let table = match stat {
            Stat::Mtbf => "mtbf",
            Stat::Weibull => "weibull",
            Stat::Pareto if req.pareto_of_alarms => "pareto_alarms",
            Stat::Pareto => "pareto_failures",
            Stat::Trend => "trend",
            Stat::Mttr => "mttr",
        };
        return csv_answer(&report, table);
    }
    let context = context(req.period, &data, &report);
    Ok(match stat {
        Stat::Mtbf => Json(MtbfAnswer {
            context,
            rows: report.mtbf,
        })
        .into_response(),
        Stat::Weibull => Json(WeibullAnswer {
            context,
            rows: report.weibull,
        })
        .into_response(),
        Stat::Pareto => Json(ParetoAnswer {
            context,
            failures: report.pareto_failures,
            alarms: report.pareto_alarms,
        })
        .into_response(),
        Stat::Trend => Json(TrendAnswer {
            context,
            rows: report.trend,
        })
        .into_response(),
        Stat::Mttr => Json(MttrAnswer {
            context,
            rows: report.mttr,
        })
        .into_response(),
    })
}

/// MTBF per group: operating hours (runtime-hour meters) / failures, with chi-square
/// confidence bounds (one- or two-sided, time- or failure-terminated; with zero failures
/// only the lower bound), and the failure rate per 1000 operating hours.
#[utoipa::path(get, path = "/api/v1/reliability/mtbf", tag = "reliability", params(StatParams),
    responses((status = 200, description = "MTBF per group (CSV: the mtbf table)",
        content((MtbfAnswer = "application/json"), (String = "text/csv")))))]
async fn mtbf(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<StatParams>,
) -> Result<Response, ApiError> {
    answer(caller, state, headers, p, Stat::Mtbf).await
}

/// Weibull 2-parameter MLE per group with right-censored data (devices that did not fail
/// are suspensions at their age): β, η, Fisher-matrix bounds, log-likelihood, B10/B50,
/// R(t) at `at_hours`, the conditional failure probability for `age_hours` +
/// `horizon_hours`; a group with too few failures says why instead.
#[utoipa::path(get, path = "/api/v1/reliability/weibull", tag = "reliability", params(StatParams),
    responses((status = 200, description = "Weibull fit per group (CSV: the weibull table)",
        content((WeibullAnswer = "application/json"), (String = "text/csv")))))]
async fn weibull(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<StatParams>,
) -> Result<Response, ApiError> {
    answer(caller, state, headers, p, Stat::Weibull).await
}

/// Pareto of failures (by code and failure mode) and of alarm episodes (by code) per group,
/// with share and cumulative share.
#[utoipa::path(get, path = "/api/v1/reliability/pareto", tag = "reliability", params(StatParams),
    responses((status = 200, description = "Pareto tables (CSV: failures, or alarms with of=alarms)",
        content((ParetoAnswer = "application/json"), (String = "text/csv")))))]
async fn pareto(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<StatParams>,
) -> Result<Response, ApiError> {
    answer(caller, state, headers, p, Stat::Pareto).await
}

/// Failures per 1000 device-hours per group and month, with bounds.
#[utoipa::path(get, path = "/api/v1/reliability/trend", tag = "reliability", params(StatParams),
    responses((status = 200, description = "Monthly failure rate per group (CSV: the trend table)",
        content((TrendAnswer = "application/json"), (String = "text/csv")))))]
async fn trend(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<StatParams>,
) -> Result<Response, ApiError> {
    answer(caller, state, headers, p, Stat::Trend).await
}

/// Mean and median time to repair (order created → closed), hands-on time (started →
/// closed) and the first-time-fix rate per group, from the repair orders of the period.
#[utoipa::path(get, path = "/api/v1/reliability/mttr", tag = "reliability", params(StatParams),
    responses((status = 200, description = "MTTR and first-time fix per group (CSV: the mttr table)",
        content((MttrAnswer = "application/json"), (String = "text/csv")))))]
async fn mttr(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<StatParams>,
) -> Result<Response, ApiError> {
    answer(caller, state, headers, p, Stat::Mttr).await
}
