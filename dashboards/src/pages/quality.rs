//! Quality: for a chosen period and grouping (model, kind, region, failure mode, code,
//! component), the MTBF table with bounds, a Weibull probability plot per group (median
//! ranks with suspensions, the fitted line, the Fisher-matrix band, β and η with their
//! bounds in the legend), the reliability curve R(t) with bounds, failure and alarm
//! Pareto charts, the failure trend per 1 000 device-hours by month with bounds, MTTR and
//! first-time fix; the data-quality warnings shown beside the figures they affect; every
//! table downloadable as CSV. The figures are the API's (`/api/v1/reliability/…`): the
//! same data read and the same computation ([`fleetpulse_api::routes::reliability::report`]).

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use fleetpulse_analytics::mtbf::{Sides, Termination};
use fleetpulse_analytics::{
    GroupKey, ReliabilityReport, ReportQuery, Warning, WeibullRow, WeibullSample,
};
use fleetpulse_domain::reliability::Period;
use maud::{Markup, html};

use crate::UiState;
use crate::charts::{
    self, Bar, BarChart, BoundSides, Confidence, LifeMarker, ReliabilityCurve, TrendChart,
    TrendGroup, TrendPoint, WeibullLine, WeibullPlot,
};
use crate::layout::{self, Nav, svg};
use crate::session::Viewer;
use crate::table::{Cell, Params, Table, number, text};

/// Groupings offered (the API accepts any combination; these are the useful ones).
pub const GROUPINGS: &[(&str, &str)] = &[
    ("fleet", "whole fleet"),
    ("model", "model"),
    ("kind", "device kind"),
    ("region", "region"),
    ("failure_mode", "failure mode"),
    ("component", "component"),
    ("code", "fault code"),
    ("model,failure_mode", "model × failure mode"),
];
/// Periods offered, in days before the end.
pub const PERIODS: &[(&str, i64)] = &[("90d", 90), ("365d", 365), ("730d", 730), ("1825d", 1825)];
/// Most Weibull plots drawn (one per group; the table has every group).
pub const MAX_PLOTS: usize = 12;

/// The page's query, parsed: period, grouping, confidence, sides, termination.
#[derive(Clone, Debug)]
pub struct Selection {
    pub period: Period,
    pub grouping: &'static str,
    pub query: ReportQuery,
}

fn keys(grouping: &str) -> Vec<GroupKey> {
    grouping
        .split(',')
        .filter_map(|k| match k {
            "model" => Some(GroupKey::Model),
            "kind" => Some(GroupKey::Kind),
            "region" => Some(GroupKey::Region),
            "failure_mode" => Some(GroupKey::FailureMode),
            "code" => Some(GroupKey::Code),
            "component" => Some(GroupKey::Component),
            _ => None,
        })
        .collect()
}

fn date(p: &Params, key: &str) -> Result<Option<DateTime<Utc>>, String> {
    p.get(key)
        .map(|v| {
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
                .or_else(|_| v.parse::<DateTime<Utc>>())
                .map_err(|_| format!("{key} = {v:?} is not a date (YYYY-MM-DD)"))
        })
        .transpose()
}

/// Reads the selection from the URL: `period=365d` (or `from`/`to` dates), `group_by`,
/// `confidence`, `sides`, `termination`.
pub fn selection(p: &Params, now: DateTime<Utc>) -> Result<Selection, String> {
    let grouping = match p.get("group_by") {
        None => "fleet",
        Some(g) => GROUPINGS
            .iter()
            .find(|(k, _)| *k == g)
            .map(|(k, _)| *k)
            .ok_or_else(|| format!("group_by = {g:?} is not one of the offered groupings"))?,
    };
    let to = date(p, "to")?.unwrap_or(now);
    let days = match p.get("period") {
        None => 365,
        Some(v) => PERIODS
            .iter()
            .find(|(k, _)| *k == v)
            .map(|(_, d)| *d)
            .ok_or_else(|| format!("period = {v:?} is not one of 90d, 365d, 730d, 1825d"))?,
    };
    let from = date(p, "from")?.unwrap_or(to - Duration::days(days));
    if from >= to {
        return Err("from must be before to".into());
    }
    let mut query = ReportQuery {
        group_by: keys(grouping),
        ..ReportQuery::default()
    };
    if let Some(c) = p.get("confidence") {
        query.confidence = c
            .parse::<f64>()
            .ok()
            .filter(|c| *c > 0.0 && *c < 1.0)
            .ok_or_else(|| format!("confidence = {c:?} must be strictly between 0 and 1"))?;
    }
    query.sides = match p.get("sides") {
        None | Some("two_sided") => Sides::TwoSided,
        Some("lower") => Sides::Lower,
        Some("upper") => Sides::Upper,
        Some(s) => return Err(format!("sides = {s:?} is not two_sided, lower or upper")),
    };
    query.termination = match p.get("termination") {
        None | Some("time") => Termination::Time,
        Some("failure") => Termination::Failure,
        Some(t) => return Err(format!("termination = {t:?} is not time or failure")),
    };
    Ok(Selection {
        period: Period { from, to },
        grouping,
        query,
    })
}

/// Where a data-quality warning belongs: the Weibull section (ages, lives), MTTR
/// (repairs), or the rates (exposure: meters, gaps).
fn section_of(w: &Warning) -> &'static str {
    let k = w.kind.as_str();
    if k.starts_with("weibull") || k.contains("age") || k.contains("life") || k.contains("lives") {
        "weibull"
    } else if k.contains("repair") || k.contains("mttr") || k.contains("order") {
        "mttr"
    } else {
        "rates"
    }
}

fn warnings(list: &[&Warning]) -> Markup {
    html! {
        @for w in list {
            p.warning role="note" { strong { (w.kind.replace('_', " ")) " (" (w.count) ")" } ": " (w.detail) }
        }
    }
}

fn sides(q: &ReportQuery) -> BoundSides {
    match q.sides {
        Sides::TwoSided => BoundSides::TwoSided,
        Sides::Lower => BoundSides::Lower,
        Sides::Upper => BoundSides::Upper,
    }
}

fn both(a: Option<f64>, b: Option<f64>) -> Option<(f64, f64)> {
    Some((a?, b?))
}

/// The Weibull probability plot of one group.
pub fn weibull_chart(row: &WeibullRow, sample: Option<&WeibullSample>, q: &ReportQuery) -> String {
    let (failures, suspensions) = sample.map_or((Vec::new(), Vec::new()), |s| {
        (s.failures.clone(), s.suspensions.clone())
    });
    let fit = match (row.beta, row.eta) {
        (Some(beta), Some(eta)) => Some(WeibullLine {
            beta,
            eta,
            beta_bounds: both(row.beta_lower, row.beta_upper),
            eta_bounds: both(row.eta_lower, row.eta_upper),
            confidence: Some(Confidence {
                level: q.confidence,
                sides: sides(q),
            }),
        }),
        _ => None,
    };
    let band = match (row.beta, row.eta, row.beta_se, row.eta_se, row.cov_eta_beta) {
        (Some(beta), Some(eta), Some(bse), Some(ese), Some(cov)) => {
            let z = fleetpulse_analytics::weibull::z_value(q.confidence, q.sides).unwrap_or(1.645);
            let all: Vec<f64> = failures
                .iter()
                .chain(&suspensions)
                .copied()
                .filter(|t| *t > 0.0)
                .collect();
            let lo = all.iter().copied().fold(eta, f64::min) * 0.5;
            let hi = all.iter().copied().fold(eta, f64::max) * 2.0;
            charts::fisher_band(
                &charts::log_space(lo, hi, 60),
                beta,
                eta,
                [[ese * ese, cov], [cov, bse * bse]],
                z,
            )
        }
        _ => Vec::new(),
    };
    charts::weibull_plot(&WeibullPlot {
        title: format!("Weibull probability plot: {}", row.group_label),
        description: format!(
            "{} failures and {} suspensions of {}; {}",
            row.n_failures,
            row.n_suspensions,
            row.group_label,
            row.error.clone().unwrap_or_else(|| row.method.clone())
        ),
        failures,
        suspensions,
        show_suspensions: true,
        fit,
        band,
        time_label: "operating hours".into(),
        time_unit: "h".into(),
        ..Default::default()
    })
}

/// R(t) of one group with its Fisher-matrix band and B10/B50 marked.
pub fn reliability_chart(row: &WeibullRow, q: &ReportQuery) -> Option<String> {
    let (beta, eta) = (row.beta?, row.eta?);
    let times: Vec<f64> = (0..=80).map(|i| eta * 2.5 * f64::from(i) / 80.0).collect();
    let points = times
        .iter()
        .map(|&t| (t, 1.0 - charts::weibull_unreliability(t, beta, eta)))
        .collect();
    let band = match (row.beta_se, row.eta_se, row.cov_eta_beta) {
        (Some(bse), Some(ese), Some(cov)) => {
            let z = fleetpulse_analytics::weibull::z_value(q.confidence, q.sides).unwrap_or(1.645);
            charts::fisher_band(&times, beta, eta, [[ese * ese, cov], [cov, bse * bse]], z)
                .into_iter()
                .map(|(t, f_lo, f_hi)| (t, 1.0 - f_hi, 1.0 - f_lo))
                .collect()
        }
        _ => Vec::new(),
    };
    let mut markers = Vec::new();
    if let Some(b10) = row.b10_hours {
        markers.push(LifeMarker {
            at: b10,
            label: format!("B10 {} h", layout::num(Some(b10), 0)),
            kind: "b10".into(),
        });
    }
    if let Some(b50) = row.b50_hours {
        markers.push(LifeMarker {
            at: b50,
            label: format!("B50 {} h", layout::num(Some(b50), 0)),
            kind: "b50".into(),
        });
    }
    Some(charts::reliability_curve(&ReliabilityCurve {
        title: format!("Reliability R(t): {}", row.group_label),
        description: format!("R(t) = exp(−(t/η)^β) with β = {beta:.3}, η = {eta:.0} h"),
        points,
        band,
        markers,
        time_label: "operating hours".into(),
        time_unit: "h".into(),
        ..Default::default()
    }))
}

fn tables(report: &ReliabilityReport) -> (Table, Table, Table, Table, Table, Table) {
    let mut mtbf = Table::new(
        "mtbf",
        "MTBF",
        vec![
            text("group", "Group"),
            number("devices", "Devices"),
            number("hours", "Operating h"),
            number("failures", "Failures"),
            number("mtbf", "MTBF (h)"),
            number("lower", "Lower"),
            number("upper", "Upper"),
            number("rate", "Failures / 1000 h"),
            text("method", "Method"),
        ],
    )
    .sorted_by("failures", true)
    .empty("No group has operating hours in this period.");
    for r in &report.mtbf {
        mtbf.push(vec![
            Cell::text(r.group_label.clone()),
            Cell::count(r.devices),
            Cell::num(Some(r.operating_hours), 0),
            Cell::count(r.failures),
            Cell::num(r.mtbf_hours, 0),
            Cell::num(r.mtbf_lower, 0),
            Cell::num(r.mtbf_upper, 0),
            Cell::num(r.rate_per_1000h, 4),
            Cell::text(r.method.clone()),
        ]);
    }
    let mut weibull = Table::new(
        "weibull",
        "Weibull fits",
        vec![
            text("group", "Group"),
            number("failures", "Failures"),
            number("suspensions", "Suspensions"),
            number("beta", "β"),
            number("beta_lower", "β lower"),
            number("beta_upper", "β upper"),
            number("eta", "η (h)"),
            number("eta_lower", "η lower"),
            number("eta_upper", "η upper"),
            number("b10", "B10 (h)"),
            text("note", "Method or why no fit"),
        ],
    )
    .sorted_by("failures", true)
    .empty("No group to fit.");
    for r in &report.weibull {
        weibull.push(vec![
            Cell::text(r.group_label.clone()),
            Cell::count(r.n_failures),
            Cell::count(r.n_suspensions),
            Cell::num(r.beta, 3),
            Cell::num(r.beta_lower, 3),
            Cell::num(r.beta_upper, 3),
            Cell::num(r.eta, 0),
            Cell::num(r.eta_lower, 0),
            Cell::num(r.eta_upper, 0),
            Cell::num(r.b10_hours, 0),
            Cell::text(r.error.clone().unwrap_or_else(|| r.method.clone())),
        ]);
    }
    let pareto = |id: &'static str, caption: &str, rows: &[fleetpulse_analytics::ParetoRow]| {
        let mut t = Table::new(
            id,
            caption,
            vec![
                text("group", "Group"),
                text("by", "By"),
                text("value", "Value"),
                number("count", "Count"),
                number("share", "Share"),
                number("cumulative", "Cumulative share"),
            ],
        )
        .sorted_by("count", true)
        .empty("Nothing in this period.");
        for r in rows {
            t.push(vec![
                Cell::text(r.group_label.clone()),
                Cell::text(r.by.clone()),
                Cell::text(r.value.clone().unwrap_or_else(|| "unknown".into())),
                Cell::count(r.count),
                Cell::num(Some(r.share), 3),
                Cell::num(Some(r.cumulative_share), 3),
            ]);
        }
        t
    };
    let pf = pareto(
        "pareto_failures",
        "Failures by code and failure mode",
        &report.pareto_failures,
    );
    let pa = pareto(
        "pareto_alarms",
        "Alarm episodes by code",
        &report.pareto_alarms,
    );
    let mut trend = Table::new(
        "trend",
        "Failure rate by month",
        vec![
            text("group", "Group"),
            text("month", "Month"),
            number("devices", "Devices"),
            number("hours", "Operating h"),
            number("failures", "Failures"),
            number("rate", "Failures / 1000 h"),
            number("lower", "Lower"),
            number("upper", "Upper"),
        ],
    )
    .empty("No month with operating hours.");
    for r in &report.trend {
        trend.push(vec![
            Cell::text(r.group_label.clone()),
            Cell::text(r.month.clone()),
            Cell::count(r.devices),
            Cell::num(Some(r.operating_hours), 0),
            Cell::count(r.failures),
            Cell::num(r.rate_per_1000h, 4),
            Cell::num(r.rate_lower, 4),
            Cell::num(r.rate_upper, 4),
        ]);
    }
    let mut mttr = Table::new(
        "mttr",
        "MTTR and first-time fix",
        vec![
            text("group", "Group"),
            number("repairs", "Repairs"),
            number("completed", "Completed"),
            number("mean", "MTTR mean (h)"),
            number("median", "MTTR median (h)"),
            number("hands_on", "Hands-on mean (h)"),
            number("ftf", "First-time fix"),
            number("eligible", "FTF eligible"),
        ],
    )
    .sorted_by("repairs", true)
    .empty("No repair order in this period.");
    for r in &report.mttr {
        mttr.push(vec![
            Cell::text(r.group_label.clone()),
            Cell::count(r.repairs),
            Cell::count(r.completed),
            Cell::num(r.mttr_mean_hours, 1),
            Cell::num(r.mttr_median_hours, 1),
            Cell::num(r.hands_on_mean_hours, 1),
            Cell::num(r.ftf_rate, 3),
            Cell::count(r.ftf_eligible),
        ]);
    }
    (mtbf, weibull, pf, pa, trend, mttr)
}

/// A Pareto chart of one `by` (code, failure mode) over the first group of the rows.
fn pareto_chart(title: &str, rows: &[fleetpulse_analytics::ParetoRow], by: &str) -> String {
    let first = rows.first().map(|r| r.group_label.clone());
    let bars: Vec<Bar> = rows
        .iter()
        .filter(|r| r.by == by && Some(&r.group_label) == first.as_ref())
        .take(15)
        .map(|r| Bar {
            label: r.value.clone().unwrap_or_else(|| "unknown".into()),
            value: r.count as f64,
        })
        .collect();
    charts::bar_chart(&BarChart {
        title: title.into(),
        description: format!("{title}, most frequent first, with the cumulative share"),
        bars,
        y_label: "count".into(),
        x_label: by.replace('_', " "),
        cumulative: true,
        ..Default::default()
    })
}

fn trend_chart(report: &ReliabilityReport) -> String {
    let months: Vec<String> = {
        let mut m: Vec<String> = report.trend.iter().map(|r| r.month.clone()).collect();
        m.sort();
        m.dedup();
        m
    };
    let mut groups: BTreeMap<String, Vec<TrendPoint>> = BTreeMap::new();
    for r in &report.trend {
        let Some(value) = r.rate_per_1000h else {
            continue;
        };
        let period = months.iter().position(|m| *m == r.month).unwrap_or(0);
        groups
            .entry(r.group_label.clone())
            .or_default()
            .push(TrendPoint {
                period,
                value,
                lower: r.rate_lower,
                upper: r.rate_upper,
            });
    }
    charts::rate_trend(&TrendChart {
        title: "Failures per 1 000 device-hours by month".into(),
        description: "Monthly failure rate per group with its confidence bounds".into(),
        y_label: "failures per 1 000 h".into(),
        x_label: "month".into(),
        periods: months,
        groups: groups
            .into_iter()
            .take(8)
            .map(|(name, points)| TrendGroup { name, points })
            .collect(),
        ..Default::default()
    })
}

fn filters(p: &Params, sel: &Selection) -> Markup {
    html! {
        form.filters method="get" action="/quality" {
            label { "Group by " select name="group_by" {
                @for (k, label) in GROUPINGS { option value=(k) selected[*k == sel.grouping] { (label) } }
            } }
            label { "Period " select name="period" {
                @for (k, d) in PERIODS { option value=(k) selected[p.get("period").unwrap_or("365d") == *k] { "last " (d) " days" } }
            } }
            label { "or from " input type="date" name="from" value=(p.get("from").unwrap_or("")); }
            label { "to " input type="date" name="to" value=(p.get("to").unwrap_or("")); }
            label { "Confidence " select name="confidence" {
                @for c in ["0.8", "0.9", "0.95", "0.99"] { option value=(c) selected[(sel.query.confidence - c.parse::<f64>().unwrap_or(0.0)).abs() < 1e-9] { (c) } }
            } }
            label { "Bounds " select name="sides" {
                @for (k, l) in [("two_sided", "two-sided"), ("lower", "lower only"), ("upper", "upper only")] { option value=(k) selected[p.get("sides").unwrap_or("two_sided") == k] { (l) } }
            } }
            label { "MTBF test " select name="termination" {
                @for (k, l) in [("time", "time-terminated"), ("failure", "failure-terminated")] { option value=(k) selected[p.get("termination").unwrap_or("time") == k] { (l) } }
            } }
            button type="submit" { "Apply" }
        }
    }
}

/// `GET /quality`.
pub async fn page(
    viewer: Viewer,
    State(state): State<UiState>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = viewer
        .caller
        .require(fleetpulse_api::routes::reliability::READERS)
    {
        return layout::api_error(e);
    }
    let p = Params::parse(raw.as_deref());
    let now = state.app.clock.now();
    let sel = match selection(&p, now) {
        Ok(s) => s,
        Err(m) => return layout::refusal(StatusCode::BAD_REQUEST, &m),
    };
    let (data, report) =
        match fleetpulse_api::routes::reliability::report(&state.app, sel.period, None, &sel.query)
            .await
        {
            Ok(r) => r,
            Err(e) => return layout::api_error(e),
        };
    let samples = {
        let q = sel.query.clone();
        tokio::task::spawn_blocking(move || {
            fleetpulse_analytics::weibull_samples(&data, &q).unwrap_or_default()
        })
        .await
        .unwrap_or_default()
    };
    let (mtbf, weibull, pf, pa, trend, mttr) = tables(&report);
    if let Some(csv) = crate::table::csv_download(&p, &[&mtbf, &weibull, &pf, &pa, &trend, &mttr]) {
        return csv;
    }
    let by_section = |s: &str| {
        report
            .warnings
            .iter()
            .filter(|w| section_of(w) == s)
            .collect::<Vec<_>>()
    };
    let mut rows: Vec<(&WeibullRow, Option<&WeibullSample>)> = report
        .weibull
        .iter()
        .map(|r| (r, samples.iter().find(|s| s.group_label == r.group_label)))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.0.n_failures));
    let plotted: Vec<_> = rows.iter().take(MAX_PLOTS).collect();
    let period = sel.period;
    let body = html! {
        h1 { "Quality" }
        (filters(&p, &sel))
        p.note {
            "Period " (layout::day(period.from)) " – " (layout::day(period.to)) " · "
            (data_summary(&report)) " · the same figures as "
            code { "/api/v1/reliability/{mtbf,weibull,pareto,trend,mttr}" } " (docs/reliability.md states every method)"
        }
        section #rates {
            h2 { "MTBF" }
            (warnings(&by_section("rates")))
            (mtbf.render(&p))
        }
        section {
            h2 { "Weibull" }
            (warnings(&by_section("weibull")))
            p.note { "Points: failures at Johnson's adjusted median ranks with Benard's approximation (suspensions as ticks on the time axis; delayed entry is in the fit, not in the plotting positions). Line: the maximum-likelihood fit; band: Fisher-matrix bounds." }
            figure.chart #weibull {
                @if plotted.is_empty() { (svg(charts::weibull_plot(&WeibullPlot::default()))) }
                div.grid {
                    @for (row, sample) in &plotted { div { (svg(weibull_chart(row, *sample, &sel.query))) } }
                }
                figcaption { (plotted.len()) " of " (rows.len()) " groups plotted (most failures first); the table has every group." }
            }
            (weibull.render(&p))
            figure.chart #reliability {
                div.grid {
                    @for (row, _) in plotted.iter().take(4) {
                        @if let Some(c) = reliability_chart(row, &sel.query) { div { (svg(c)) } }
                    }
                }
            }
        }
        section {
            h2 { "Pareto" }
            div.grid {
                figure.chart #pareto { (svg(pareto_chart("Failures by failure mode", &report.pareto_failures, "failure_mode"))) }
                figure.chart #pareto-codes { (svg(pareto_chart("Failures by code", &report.pareto_failures, "code"))) }
                figure.chart #pareto-alarms { (svg(pareto_chart("Alarm episodes by code", &report.pareto_alarms, "code"))) }
            }
            (pf.render(&p))
            (pa.render(&p))
        }
        section {
            h2 { "Trend" }
            figure.chart #trend { (svg(trend_chart(&report))) }
            (trend.render(&p))
        }
        section #mttr {
            h2 { "MTTR and first-time fix" }
            (warnings(&by_section("mttr")))
            (mttr.render(&p))
        }
    };
    layout::page(
        Some(&viewer),
        Nav::Quality,
        "Quality",
        &state.app.clock,
        body,
    )
}

fn data_summary(report: &ReliabilityReport) -> String {
    let failures: u64 = report.mtbf.iter().map(|r| r.failures).sum();
    let hours: f64 = report.mtbf.iter().map(|r| r.operating_hours).sum();
    format!(
        "{} groups, {failures} failures over {} operating hours",
        report.mtbf.len(),
        layout::num(Some(hours), 0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selection_reads_the_url_and_refuses_what_it_does_not_offer() {
        let now: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().expect("t");
        let s = selection(
            &Params::parse(Some(
                "group_by=model%2Cfailure_mode&period=90d&confidence=0.95&sides=lower",
            )),
            now,
        )
        .expect("valid");
        assert_eq!(s.query.group_by, [GroupKey::Model, GroupKey::FailureMode]);
        assert_eq!(s.period.to, now);
        assert_eq!(s.period.from, now - Duration::days(90));
        assert_eq!(s.query.confidence, 0.95);
        assert_eq!(s.query.sides, Sides::Lower);
        let dated =
            selection(&Params::parse(Some("from=2026-01-01&to=2026-03-01")), now).expect("dates");
        assert_eq!(
            dated.period.from,
            "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().expect("t")
        );
        assert!(dated.query.group_by.is_empty(), "fleet: no split");
        for bad in [
            "group_by=serial",
            "period=1d",
            "confidence=1.5",
            "from=2026-03-01&to=2026-01-01",
            "from=yesterday",
        ] {
            assert!(selection(&Params::parse(Some(bad)), now).is_err(), "{bad}");
        }
    }

    /// A fit's row as the report has it, from the fit of these failures (the analytics
    /// crate's own MLE and Fisher matrix).
    fn row(failures: &[f64], suspensions: &[f64]) -> WeibullRow {
        let fit = fleetpulse_analytics::weibull::fit(failures, suspensions).expect("fit");
        let cov = fit.covariance.expect("covariance");
        WeibullRow {
            group: Vec::new(),
            group_label: "model=OC-5A".into(),
            n_failures: failures.len() as u64,
            n_suspensions: suspensions.len() as u64,
            beta: Some(fit.beta),
            beta_se: Some(cov[1][1].sqrt()),
            beta_lower: Some(fit.beta * 0.8),
            beta_upper: Some(fit.beta * 1.2),
            eta: Some(fit.eta),
            eta_se: Some(cov[0][0].sqrt()),
            eta_lower: Some(fit.eta * 0.9),
            eta_upper: Some(fit.eta * 1.1),
            cov_eta_beta: Some(cov[0][1]),
            log_likelihood: Some(fit.log_likelihood),
            aic: None,
            bic: None,
            b10_hours: Some(fit.eta * (-(0.9f64).ln()).powf(1.0 / fit.beta)),
            b10_lower: None,
            b10_upper: None,
            b50_hours: None,
            b50_lower: None,
            b50_upper: None,
            reliability: Vec::new(),
            conditional: None,
            confidence: 0.9,
            method: "MLE".into(),
            error: None,
        }
    }

    #[test]
    fn the_weibull_plot_has_a_point_per_failure_the_fit_its_band_and_the_legend() {
        let failures = [310.0, 520.0, 640.0, 790.0, 1020.0, 1180.0];
        let suspensions = [900.0, 1500.0];
        let r = row(&failures, &suspensions);
        let sample = WeibullSample {
            group: Vec::new(),
            group_label: r.group_label.clone(),
            failures: failures.to_vec(),
            suspensions: suspensions.to_vec(),
            lives: Vec::new(),
        };
        let svg = weibull_chart(&r, Some(&sample), &ReportQuery::default());
        assert_eq!(
            svg.matches("class=\"point failure\"").count(),
            failures.len()
        );
        assert_eq!(
            svg.matches("class=\"suspension\"").count(),
            suspensions.len()
        );
        assert_eq!(svg.matches("class=\"fit\"").count(), 1);
        assert_eq!(
            svg.matches("class=\"band\"").count(),
            1,
            "the Fisher band is drawn"
        );
        assert!(
            svg.contains(&format!(
                "β = {}",
                crate::charts::format_value(r.beta.expect("β"), 3)
            )),
            "{svg}"
        );
        assert!(
            svg.contains("90 % two-sided"),
            "the confidence is in the legend"
        );
        assert!(svg.contains("model=OC-5A"));
        let curve =
            reliability_chart(&r, &ReportQuery::default()).expect("a fitted group has R(t)");
        assert!(curve.contains("B10"), "B10 is marked");
        // a group without a fit says why instead of drawing a line
        let mut none = row(&failures, &suspensions);
        (none.beta, none.eta, none.error) = (
            None,
            None,
            Some("too few failures (1; at least 2 needed)".into()),
        );
        let svg = weibull_chart(&none, Some(&sample), &ReportQuery::default());
        assert_eq!(svg.matches("class=\"fit\"").count(), 0);
        assert!(
            svg.contains("too few failures"),
            "the reason is in the description"
        );
        assert!(reliability_chart(&none, &ReportQuery::default()).is_none());
        // no data at all: the no-data state, not an error
        let empty = weibull_chart(&none, None, &ReportQuery::default());
        assert!(empty.contains("no-data"));
    }
}
