//! Planner: work due in the next 7 or 30 days (consumable depletion and service
//! forecasts, with their intervals, and the orders already raised) as a list and as a
//! calendar by day; devices at risk ranked by probability × criticality with their
//! evidence; visits that bundle several jobs; the storm-control queue with when each
//! held order can be released; the failure-risk models (deployed or not and why, their
//! validation next to the baselines).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use fleetpulse_api::auth::READERS;
use fleetpulse_domain::order::Order;
use fleetpulse_domain::prediction::{Prediction, PredictionKind};
use fleetpulse_domain::store::{OrderQuery, PredictionQuery, StoredPrediction};
use fleetpulse_domain::{Criticality, Serial};
use maud::{Markup, html};

use crate::UiState;
use crate::layout::{self, Nav, badge, tile};
use crate::session::Viewer;
use crate::table::{Cell, Params, Table, number, text};

/// Most stored predictions read for one page (pages of 1000).
pub const MAX_PREDICTIONS: usize = 100_000;
/// Devices at risk listed.
pub const AT_RISK_LIMIT: usize = 200;
/// Rows of the work-due list (soonest first; the calendar counts every job).
pub const DUE_ROWS: usize = 300;
/// Held orders listed.
pub const HELD_LIMIT: usize = 500;

/// The weight of a device's criticality in the at-risk ranking: a life-supporting
/// device at 20 % ranks with a standard one at 80 %.
pub fn criticality_weight(c: Criticality) -> f64 {
    match c {
        Criticality::LifeSupporting => 4.0,
        Criticality::High => 2.0,
        Criticality::Standard => 1.0,
    }
}

/// Every stored prediction `query` selects (pages of 1000, at most [`MAX_PREDICTIONS`]).
async fn read_predictions(
    state: &UiState,
    mut query: PredictionQuery,
) -> Result<Vec<StoredPrediction>, fleetpulse_api::ApiError> {
    let mut out = Vec::new();
    query.limit = 1000;
    loop {
        let page = state.app.predictions.predictions(query.clone()).await?;
        out.extend(page.items);
        match page.next {
            Some(_) if out.len() < MAX_PREDICTIONS => {
                query.after = out.last().map(|p| {
                    let p = &p.prediction;
                    (
                        p.serial.as_str().to_owned(),
                        p.kind.as_str().to_owned(),
                        p.target.clone(),
                    )
                });
            }
            _ => return Ok(out),
        }
    }
}

/// The predictions the page shows: consumable and service work due before
/// `due_before`, and failure risks at or above `min_probability`.
async fn planner_predictions(
    state: &UiState,
    due_before: DateTime<Utc>,
    min_probability: f64,
) -> Result<Vec<StoredPrediction>, fleetpulse_api::ApiError> {
    let mut out = Vec::new();
    for kind in [
        PredictionKind::ConsumableDepletion,
        PredictionKind::ServiceInterval,
    ] {
        out.extend(
            read_predictions(
                state,
                PredictionQuery {
                    kind: Some(kind),
                    due_before: Some(due_before),
                    ..Default::default()
                },
            )
            .await?,
        );
    }
    out.extend(
        read_predictions(
            state,
            PredictionQuery {
                kind: Some(PredictionKind::FailureRisk),
                min_probability: Some(min_probability),
                ..Default::default()
            },
        )
        .await?,
    );
    Ok(out)
}

/// Predicted work whose due date falls in `[now, now + days)` (overdue work included:
/// it is due now), soonest first.
pub fn due_within(
    predictions: &[StoredPrediction],
    now: DateTime<Utc>,
    days: i64,
) -> Vec<&StoredPrediction> {
    let end = now + Duration::days(days);
    let mut due: Vec<&StoredPrediction> = predictions
        .iter()
        .filter(|p| {
            matches!(
                p.prediction.kind,
                PredictionKind::ConsumableDepletion | PredictionKind::ServiceInterval
            )
        })
        .filter(|p| p.prediction.due_at.is_some_and(|d| d < end))
        .collect();
    due.sort_by_key(|p| p.prediction.due_at);
    due
}

/// The calendar of the window: one cell per day with the number of jobs due (overdue
/// ones on the first day).
pub fn calendar(due: &[&StoredPrediction], now: DateTime<Utc>, days: i64) -> Markup {
    let today = now.date_naive();
    let mut per_day: BTreeMap<chrono::NaiveDate, Vec<&Prediction>> = BTreeMap::new();
    for p in due {
        if let Some(d) = p.prediction.due_at {
            per_day
                .entry(d.date_naive().max(today))
                .or_default()
                .push(&p.prediction);
        }
    }
    use chrono::Datelike;
    let lead = today.weekday().num_days_from_monday();
    html! {
        div.calendar role="grid" aria-label=(format!("Work due by day, next {days} days")) {
            @for h in ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"] { div.head role="columnheader" { (h) } }
            @for _ in 0..lead { div.day.pad aria-hidden="true" {} }
            @for i in 0..days {
                @let d = today + chrono::Days::new(i as u64);
                @let jobs = per_day.get(&d).map(Vec::as_slice).unwrap_or(&[]);
                div class=(if i == 0 { "day today" } else { "day" }) role="gridcell" data-day=(d.to_string()) {
                    div.date { (d.format("%b %-d")) }
                    @if !jobs.is_empty() {
                        div.n { (jobs.len()) }
                        div.what { (summary(jobs)) }
                    }
                }
            }
        }
    }
}

fn summary(jobs: &[&Prediction]) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for j in jobs {
        *by.entry(j.target.as_str()).or_default() += 1;
    }
    by.iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// When each held order can be released at the earliest, in whole hours from now: the
/// queue releases most urgent first as the hour's counts fall, so position k (0-based)
/// fleet-wide waits at least ⌈(k+1)/fleet limit⌉ hours, and its region's position r at
/// least ⌈(r+1)/region limit⌉ (an estimate: more urgent arrivals push it back).
/// `regions` are the held orders' regions in release order.
pub fn release_estimate(regions: &[Option<&str>], per_hour: u32, per_region_hour: u32) -> Vec<u32> {
    let mut in_region: HashMap<Option<&str>, u32> = HashMap::new();
    regions
        .iter()
        .enumerate()
        .map(|(k, region)| {
            let r = in_region.entry(*region).or_default();
            let fleet = (k as u32 + 1).div_ceil(per_hour.max(1));
            let region = (*r + 1).div_ceil(per_region_hour.max(1));
            *r += 1;
            fleet.max(region)
        })
        .collect()
}

fn features(p: &Prediction) -> String {
    p.top_features
        .iter()
        .take(3)
        .map(|f| {
            format!(
                "{} = {} ({:+.2})",
                f.feature,
                layout::num(Some(f.value), 2),
                f.contribution
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `GET /planner?days=7|30`.
pub async fn page(
    viewer: Viewer,
    State(state): State<UiState>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = viewer.caller.require(READERS) {
        return layout::api_error(e);
    }
    let p = Params::parse(raw.as_deref());
    let days: i64 = match p.get("days") {
        None => 30,
        Some(d) => match d.parse::<i64>() {
            Ok(d @ 1..=90) => d,
            _ => {
                return layout::refusal(
                    StatusCode::BAD_REQUEST,
                    "days must be a whole number from 1 to 90",
                );
            }
        },
    };
    let now = state.app.clock.now();
    let reports = state
        .app
        .predictions
        .model_reports()
        .await
        .unwrap_or_default();
    // the lowest threshold a risk can be held against: of the deployed models, and the
    // policy's default for predictions that carry none
    let min_threshold = reports
        .iter()
        .filter(|r| r.deployed)
        .map(|r| r.metrics.threshold)
        .fold(state.app.policy.prediction.default_risk_threshold, f64::min);
    let predictions = match planner_predictions(
        &state,
        now + Duration::days(days.max(30)),
        min_threshold,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return layout::api_error(e),
    };
    let due = due_within(&predictions, now, days);
    let due_7 = due_within(&predictions, now, 7).len();
    let due_30 = due_within(&predictions, now, 30).len();

    let mut due_table = Table::new(
        "due",
        format!("Work due in the next {days} days"),
        vec![
            number("due", "Due"),
            text("interval", "Interval"),
            text("device", "Device"),
            text("kind", "Work"),
            text("target", "For"),
            text("order", "Order"),
            text("model", "Model version"),
        ],
    )
    .filterable()
    .sorted_by("due", false)
    .empty("Nothing is due in this window.");
    for sp in due.iter().take(DUE_ROWS) {
        let pr = &sp.prediction;
        let interval = match (pr.due_low, pr.due_high) {
            (Some(l), Some(h)) => format!("{} – {}", layout::day(l), layout::day(h)),
            _ => "—".into(),
        };
        due_table.push(vec![
            Cell::time(pr.due_at),
            Cell::text(interval),
            Cell::text(pr.serial.as_str()).link(&format!("/devices/{}", pr.serial.as_str())),
            Cell::text(pr.kind.as_str().replace('_', " ")),
            Cell::text(pr.target.clone()),
            match sp.order_id {
                Some(id) => Cell::text(format!("#{id}")).link(&format!("/dispatch/orders/{id}")),
                None => Cell::text("not yet raised"),
            },
            Cell::text(pr.model_version.clone()),
        ]);
    }

    // at risk: failure-risk predictions at or above their threshold, by probability ×
    // criticality
    let mut risky: Vec<&Prediction> = predictions
        .iter()
        .map(|sp| &sp.prediction)
        .filter(|pr| pr.kind == PredictionKind::FailureRisk)
        .filter(|pr| matches!((pr.probability, pr.threshold), (Some(p), Some(t)) if p >= t))
        .collect();
    risky.sort_by(|a, b| {
        b.probability
            .partial_cmp(&a.probability)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    risky.truncate(AT_RISK_LIMIT);
    let mut criticality: HashMap<Serial, Criticality> = HashMap::new();
    for pr in &risky {
        if !criticality.contains_key(&pr.serial)
            && let Ok(Some(d)) = state.app.store.device(&pr.serial).await
        {
            criticality.insert(pr.serial.clone(), d.device.criticality);
        }
    }
    let mut risk_table = Table::new(
        "at_risk",
        "Devices at risk",
        vec![
            number("rank", "Probability × criticality"),
            text("device", "Device"),
            text("criticality", "Criticality"),
            text("mode", "Failure mode"),
            number("p", "Probability"),
            number("threshold", "Threshold"),
            number("horizon", "Horizon (d)"),
            text("features", "Top features (contribution)"),
        ],
    )
    .filterable()
    .sorted_by("rank", true)
    .empty("No device is at or above its model's threshold.");
    for pr in &risky {
        let c = criticality
            .get(&pr.serial)
            .copied()
            .unwrap_or(Criticality::Standard);
        let prob = pr.probability.unwrap_or(0.0);
        risk_table.push(vec![
            Cell::num(Some(prob * criticality_weight(c)), 3),
            Cell::text(pr.serial.as_str()).link(&format!("/devices/{}", pr.serial.as_str())),
            Cell::text(c.as_str().replace('_', " ")),
            Cell::text(pr.target.clone()),
            Cell::num(Some(prob), 3),
            Cell::num(pr.threshold, 3),
            Cell::num(pr.horizon_days, 0),
            Cell::text(features(pr)),
        ]);
    }

    // bundled visits: active orders carrying further jobs
    let orders: Vec<Order> = match state
        .app
        .store
        .list_orders(OrderQuery {
            active_only: true,
            limit: 1000,
            ..OrderQuery::default()
        })
        .await
    {
        Ok(page) => page.items,
        Err(e) => return layout::api_error(e.into()),
    };
    let mut bundles = Table::new(
        "bundles",
        "Visits that bundle several jobs",
        vec![
            number("order", "Order"),
            text("device", "Device"),
            text("main", "Main job"),
            text("also", "Also on this visit"),
            number("labour", "Labour (min)"),
            number("due", "Due"),
        ],
    )
    .sorted_by("due", false)
    .empty("No visit bundles several jobs right now.");
    for o in orders.iter().filter(|o| !o.tasks.is_empty()) {
        let labour = o.labour_minutes + o.tasks.iter().map(|t| t.labour_minutes).sum::<u32>();
        bundles.push(vec![
            Cell::count(o.id as u64).link(&format!("/dispatch/orders/{}", o.id)),
            Cell::text(o.serial.as_str()).link(&format!("/devices/{}", o.serial.as_str())),
            Cell::text(o.title.clone()),
            Cell::text(
                o.tasks
                    .iter()
                    .map(|t| t.title.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Cell::count(u64::from(labour)),
            Cell::time(o.due_at),
        ]);
    }

    let held = match state.app.predictions.held_orders(None, HELD_LIMIT).await {
        Ok(page) => page.items,
        Err(e) => return layout::api_error(e.into()),
    };
    let storm = &state.app.policy.storm;
    let regions: Vec<Option<&str>> = held.iter().map(|h| h.region.as_deref()).collect();
    let waits = release_estimate(&regions, storm.max_per_hour, storm.max_per_region_per_hour);
    let mut held_table = Table::new(
        "held",
        "Storm-control queue (release order)",
        vec![
            number("position", "Position"),
            text("device", "Device"),
            text("cause", "Cause"),
            text("priority", "Priority"),
            text("region", "Region"),
            number("due", "Due"),
            number("held", "Held since"),
            number("release", "Released within (h, earliest)"),
            text("reason", "Why held"),
        ],
    )
    .empty("Nothing is held: predicted orders are within the hourly limits.");
    for (k, (h, wait)) in held.iter().zip(&waits).enumerate() {
        held_table.push(vec![
            Cell::count(k as u64 + 1),
            Cell::text(h.serial.as_str()).link(&format!("/devices/{}", h.serial.as_str())),
            Cell::text(h.cause.as_str()),
            Cell::text(h.priority.as_str()),
            Cell::text(h.region.as_deref().unwrap_or("—")),
            Cell::time(h.due_at),
            Cell::time(Some(h.held_at)),
            Cell::count(u64::from(*wait)),
            Cell::text(h.reason.clone()),
        ]);
    }

    let reports = state
        .app
        .predictions
        .model_reports()
        .await
        .unwrap_or_default();
    let mut models = Table::new("models", "Failure-risk models", vec![
        text("mode", "Failure mode"), text("version", "Version"), text("algorithm", "Algorithm"), number("trained", "Trained"), text("deployed", "Deployed"), number("pr_auc", "PR-AUC"), number("best_baseline", "Best baseline PR-AUC"), number("precision", "Warning precision"), number("recall", "Warned ahead"), text("decision", "Decision"),
    ])
    .filterable()
    .sorted_by("trained", true)
    .empty("No model trained yet (the analytics worker trains on its schedule, or POST /api/v1/models/train).");
    for r in &reports {
        let best = r
            .baselines
            .values()
            .map(|b| b.pr_auc)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let w = r.metrics.warnings.as_ref();
        models.push(vec![
            Cell::text(r.failure_mode.clone()),
            Cell::text(r.version.clone()),
            Cell::text(r.algorithm.clone()),
            Cell::time(Some(r.trained_at)),
            Cell::text(if r.deployed {
                "deployed"
            } else {
                "not deployed"
            })
            .shown(if r.deployed {
                badge("deployed", "deployed")
            } else {
                badge("", "not deployed")
            }),
            Cell::num(Some(r.metrics.pr_auc), 3),
            Cell::num(best, 3),
            Cell::num(w.and_then(|w| w.precision), 2),
            Cell::num(w.map(|w| w.recall), 2),
            Cell::text(r.decision.clone()),
        ]);
    }

    if let Some(csv) = crate::table::csv_download(
        &p,
        &[&due_table, &risk_table, &bundles, &held_table, &models],
    ) {
        return csv;
    }
    let body = html! {
        h1 { "Planner" }
        div.tiles {
            (tile("due in 7 days", &due_7.to_string(), Some("/planner?days=7"), ""))
            (tile("due in 30 days", &due_30.to_string(), Some("/planner?days=30"), ""))
            (tile("devices at risk", &risky.len().to_string(), Some("#table-at_risk"), if risky.is_empty() { "good" } else { "warn" }))
            (tile("bundled visits", &bundles.rows.len().to_string(), Some("#table-bundles"), ""))
            (tile("held by storm control", &held.len().to_string(), Some("#table-held"), if held.is_empty() { "" } else { "warn" }))
        }
        form.filters method="get" action="/planner" {
            label { "Window " select name="days" {
                @for d in [7_i64, 14, 30, 60, 90] { option value=(d) selected[d == days] { "next " (d) " days" } }
            } }
            button type="submit" { "Show" }
        }
        section {
            h2 { "Calendar" }
            (calendar(&due, now, days))
        }
        @if due.len() > DUE_ROWS { p.note { "The list shows the " (DUE_ROWS) " soonest of " (due.len()) " jobs; the calendar counts them all, and " a href=(format!("/planner{}", p.with("csv", Some("due")))) { "the CSV" } " lists these rows." } }
        (due_table.render(&p))
        (risk_table.render(&p))
        (bundles.render(&p))
        section {
            h2 { "Storm control" }
            p.note { "Predicted orders beyond " (storm.max_per_hour) " an hour fleet-wide, or " (storm.max_per_region_per_hour) " an hour in one region, wait here and are released most urgent first as the hour's counts fall." }
            (held_table.render(&p))
        }
        (models.render(&p))
    };
    layout::page(
        Some(&viewer),
        Nav::Planner,
        "Planner",
        &state.app.clock,
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_waits_follow_the_fleet_and_region_limits() {
        let queue = [Some("n"), Some("n"), Some("n"), Some("s"), None];
        // 3 an hour fleet-wide, 2 an hour per region: the third northern order waits for
        // its region's second hour, the fourth and fifth for the fleet's second hour
        assert_eq!(release_estimate(&queue, 3, 2), [1, 1, 2, 2, 2]);
        // a limit of 0 (nothing released) is read as 1, never a division by zero
        assert_eq!(release_estimate(&[None, None], 0, 0), [1, 2]);
    }
}
