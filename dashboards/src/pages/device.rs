//! Device (`/devices/{serial}`): its latest state; a chart per measured field over a
//! chosen range (raw readings for ranges up to 7 days, hourly rollups — mean with the
//! min–max band — for longer ones) with alarm episodes shaded and orders and failures
//! marked on the time axis; a consumable's chart carries its depletion forecast with
//! the interval; the failure risk per mode with its threshold and top features; and the
//! status, order, failure and maintenance history.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use fleetpulse_api::auth::READERS;
use fleetpulse_domain::Serial;
use fleetpulse_domain::alarm::AlarmEpisode;
use fleetpulse_domain::prediction::PredictionKind;
use fleetpulse_domain::store::{
    AlarmQuery, OrderQuery, PredictionQuery, ReadingQuery, StoredPrediction,
};
use maud::{Markup, html};

use crate::UiState;
use crate::charts::{self, Forecast, Marker, Series, Span, Threshold, TimeSeriesChart};
use crate::layout::{self, Nav, badge, svg};
use crate::session::Viewer;
use crate::table::{Cell, Params, Table, number, text};

/// The ranges offered, and whether each reads raw readings (else hourly rollups).
pub const RANGES: &[(&str, i64, bool)] = &[
    ("24h", 1, true),
    ("7d", 7, true),
    ("30d", 30, false),
    ("90d", 90, false),
    ("365d", 365, false),
];
/// Most raw readings one page reads (pages of 10 000).
pub const MAX_READINGS: usize = 50_000;
/// Most alarm episodes marked on the charts.
pub const MAX_EPISODES: usize = 2_000;

/// Hourly rollups folded into one bucket.
struct Bucket {
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
    last: f64,
}

/// One field's points: (time, value) and, from rollups, (time, min, max).
#[derive(Debug, Default)]
pub struct FieldData {
    pub points: Vec<(DateTime<Utc>, f64)>,
    pub band: Vec<(DateTime<Utc>, f64, f64)>,
}

/// The chart of one field with the device's episodes, orders and failures on it.
#[allow(clippy::too_many_arguments)]
pub fn field_chart(
    field: &str,
    data: FieldData,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    raw: bool,
    episodes: &[AlarmEpisode],
    markers: &[Marker],
    threshold: Option<Threshold>,
    forecast: Option<Forecast>,
) -> String {
    let unit = unit_of(field);
    let spans = episodes
        .iter()
        .map(|e| Span {
            from: e.started_at,
            to: e.ended_at,
            label: format!(
                "{} {}",
                e.code.as_str(),
                e.severity.map_or("", |s| s.as_str())
            ),
            kind: "alarm".into(),
            severity: e.severity.map_or("info", |s| s.as_str()).into(),
        })
        .collect();
    charts::time_series(&TimeSeriesChart {
        title: field.replace('_', " "),
        description: format!(
            "{field} from {} to {}: {}",
            layout::time(from),
            layout::time(to),
            if raw {
                "readings"
            } else if to - from > Duration::days(90) {
                "daily mean of the hourly rollups with the day's minimum and maximum"
            } else {
                "hourly mean with the hour's minimum and maximum"
            }
        ),
        y_label: field.replace('_', " "),
        y_unit: unit.into(),
        from,
        to,
        series: vec![Series {
            name: field.into(),
            points: data.points,
            band: data.band,
        }],
        thresholds: threshold.into_iter().collect(),
        markers: markers.to_vec(),
        spans,
        forecast,
        // a reading every few minutes: a gap of 6 h (raw), of 12 hourly rollups or of 2
        // days breaks the line
        max_gap: Some(Duration::hours(if raw {
            6
        } else if to - from > Duration::days(90) {
            48
        } else {
            12
        })),
        ..Default::default()
    })
}

/// The unit a field's name says (`_pct`, `_hours`, `_c`, `_lpm`, `_kpa`, `_pa`, `_v`).
pub fn unit_of(field: &str) -> &'static str {
    let suffixes: &[(&str, &str)] = &[
        ("_pct", "%"),
        ("_hours", "h"),
        ("_c", "°C"),
        ("_lpm", "L/min"),
        ("_kpa", "kPa"),
        ("_pa", "Pa"),
        ("_mbar", "mbar"),
        ("_v", "V"),
        ("_a", "A"),
        ("_rpm", "rpm"),
        ("_db", "dB"),
    ];
    suffixes
        .iter()
        .find(|(s, _)| field.ends_with(s))
        .map_or("", |(_, u)| u)
}

async fn field_data(
    state: &UiState,
    serial: &Serial,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    raw: bool,
) -> Result<BTreeMap<String, FieldData>, fleetpulse_api::ApiError> {
    let mut fields: BTreeMap<String, FieldData> = BTreeMap::new();
    if raw {
        let mut after = None;
        let mut read = 0;
        loop {
            let page = state
                .app
                .store
                .readings(ReadingQuery {
                    serial: serial.clone(),
                    from: Some(from),
                    to: Some(to),
                    after,
                    limit: 10_000,
                })
                .await?;
            read += page.items.len();
            let more = page.next.is_some() && read < MAX_READINGS;
            for r in &page.items {
                for (k, v) in &r.values {
                    fields.entry(k.clone()).or_default().points.push((r.ts, *v));
                }
            }
            if !more {
                break;
            }
            after = fleetpulse_api::extract::reading_cursor(page.next.as_deref())?;
        }
    } else {
        // hourly rollups, folded into buckets of `bucket` hours (1 up to 90 days; a day
        // beyond: 365 points a year instead of 8 760, the same min–max envelope)
        let bucket = if to - from > Duration::days(90) {
            24
        } else {
            1
        };
        let mut acc: BTreeMap<(String, i64), Bucket> = BTreeMap::new();
        for r in state.app.store.rollups(serial, from, to).await? {
            let key = (
                r.field.clone(),
                r.hour.timestamp().div_euclid(bucket * 3600),
            );
            let e = acc.entry(key).or_insert(Bucket {
                sum: 0.0,
                count: 0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                last: r.last,
            });
            e.sum += r.sum;
            e.count += r.count;
            e.min = e.min.min(r.min);
            e.max = e.max.max(r.max);
            e.last = r.last;
        }
        for (
            (field, slot),
            Bucket {
                sum,
                count,
                min,
                max,
                last,
            },
        ) in acc
        {
            let Some(at) = DateTime::from_timestamp(slot * bucket * 3600, 0) else {
                continue;
            };
            let f = fields.entry(field).or_default();
            f.points
                .push((at, if count > 0 { sum / count as f64 } else { last }));
            f.band.push((at, min, max));
        }
    }
    Ok(fields)
}

fn risk_rows(predictions: &[StoredPrediction]) -> Markup {
    let risks: Vec<_> = predictions
        .iter()
        .map(|p| &p.prediction)
        .filter(|p| p.kind == PredictionKind::FailureRisk)
        .collect();
    html! {
        @if risks.is_empty() {
            p.empty { "No failure-risk score yet (models score the fleet after their first training)." }
        } @else {
            table {
                thead { tr { th scope="col" { "Failure mode" } th scope="col" { "Probability within horizon" } th.num scope="col" { "Threshold" } th scope="col" { "Top features (contribution, log-odds)" } th scope="col" { "Scored" } } }
                tbody {
                    @for r in risks {
                        @let p = r.probability.unwrap_or(0.0);
                        @let t = r.threshold.unwrap_or(1.0);
                        tr {
                            td { (r.target) }
                            td {
                                div.bar role="img" aria-label=(format!("{:.1} % against a threshold of {:.1} %", p * 100.0, t * 100.0)) {
                                    span style=(format!("width:{:.1}%;background:{}", (p * 100.0).clamp(0.0, 100.0), if p >= t { "var(--bad)" } else { "var(--accent)" })) {}
                                }
                                (format!("{:.1} %", p * 100.0)) " in " (layout::num(r.horizon_days, 0)) " d"
                                @if p >= t { " " (badge("sla-breached", "above threshold")) }
                            }
                            td.num { (format!("{:.1} %", t * 100.0)) }
                            td { @for f in r.top_features.iter().take(4) { code { (f.feature) } " = " (layout::num(Some(f.value), 2)) " (" (format!("{:+.2}", f.contribution)) ") " } }
                            td { (layout::time(r.as_of)) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /devices/{serial}?range=24h|7d|30d|90d|365d`.
pub async fn page(
    viewer: Viewer,
    State(state): State<UiState>,
    Path(raw_serial): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = viewer.caller.require(READERS) {
        return layout::api_error(e);
    }
    let Ok(serial) = Serial::parse(&raw_serial) else {
        return layout::refusal(StatusCode::NOT_FOUND, "That is not a device serial.");
    };
    let p = Params::parse(raw.as_deref());
    let range = p.get("range").unwrap_or("7d");
    let Some(&(range, days, raw_readings)) = RANGES.iter().find(|(r, _, _)| *r == range) else {
        return layout::refusal(
            StatusCode::BAD_REQUEST,
            "range must be one of 24h, 7d, 30d, 90d, 365d",
        );
    };
    let now = state.app.clock.now();
    let detail = match state.app.store.device(&serial).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return layout::refusal(
                StatusCode::NOT_FOUND,
                &format!("No device {serial} is registered."),
            );
        }
        Err(e) => return layout::api_error(e.into()),
    };
    let d = &detail.device;
    // the charts end at the newest reading when the device is quiet (or the clock is
    // behind its data), so a range always shows something if there is something
    let to = now.max(detail.latest.as_ref().and_then(|l| l.ts).unwrap_or(now));
    let from = to - Duration::days(days);
    let fields = match field_data(&state, &serial, from, to, raw_readings).await {
        Ok(f) => f,
        Err(e) => return layout::api_error(e),
    };
    let episodes = match state
        .app
        .store
        .alarm_episodes(AlarmQuery {
            serial: serial.clone(),
            active: None,
            severity: None,
            code: None,
            from: Some(from),
            to: Some(to),
            after: None,
            limit: MAX_EPISODES,
        })
        .await
    {
        Ok(p) => p.items,
        Err(e) => return layout::api_error(e.into()),
    };
    let orders = match state
        .app
        .store
        .list_orders(OrderQuery {
            serial: Some(serial.clone()),
            limit: 1000,
            ..OrderQuery::default()
        })
        .await
    {
        Ok(p) => p.items,
        Err(e) => return layout::api_error(e.into()),
    };
    let failures = state
        .app
        .dispatch
        .failure_events(&serial)
        .await
        .unwrap_or_default();
    let status_history = state
        .app
        .dispatch
        .device_status_history(&serial)
        .await
        .unwrap_or_default();
    let maintenance = state
        .app
        .reliability
        .device_maintenance(&serial)
        .await
        .unwrap_or_default();
    let predictions = state
        .app
        .predictions
        .predictions(PredictionQuery {
            due_before: None,
            min_probability: None,
            serial: Some(serial.clone()),
            kind: None,
            target: None,
            after: None,
            limit: 100,
        })
        .await
        .map(|p| p.items)
        .unwrap_or_default();

    let mut markers: Vec<Marker> = orders
        .iter()
        .filter(|o| o.created_at >= from && o.created_at < to)
        .map(|o| Marker {
            at: o.created_at,
            label: format!("order #{} {}", o.id, o.cause.as_str()),
            kind: "order".into(),
        })
        .collect();
    markers.extend(
        failures
            .iter()
            .filter(|f| f.at >= from && f.at < to)
            .map(|f| Marker {
                at: f.at,
                label: format!(
                    "failure {}",
                    f.failure_mode
                        .as_deref()
                        .or(f.fault_code.as_deref())
                        .unwrap_or("")
                ),
                kind: "failure".into(),
            }),
    );
    let model = d
        .model
        .as_ref()
        .and_then(|m| state.app.catalog.model(m.as_str()));
    let mut charts_html = Vec::new();
    for (field, data) in fields {
        let consumable = model.and_then(|m| m.consumables.iter().find(|c| c.field == field));
        let threshold = consumable.map(|c| Threshold {
            value: c.order_at_pct,
            label: format!("order at {} %", c.order_at_pct),
            kind: "order-level".into(),
        });
        let forecast = consumable.and_then(|c| {
            predictions
                .iter()
                .map(|p| &p.prediction)
                .find(|p| p.kind == PredictionKind::ConsumableDepletion && p.target == c.id)
                .and_then(|p| {
                    p.due_at.map(|at| Forecast {
                        series: 0,
                        at,
                        value: c.order_at_pct,
                        lower: p.due_low,
                        upper: p.due_high,
                        label: format!("{} due {}", c.name, layout::day(at)),
                    })
                })
        });
        let note = forecast.as_ref().map(|f| match (f.lower, f.upper) {
            (Some(l), Some(h)) => format!(
                "forecast: reaches its order level on {} (interval {} – {})",
                layout::day(f.at),
                layout::day(l),
                layout::day(h)
            ),
            _ => format!("forecast: reaches its order level on {}", layout::day(f.at)),
        });
        let chart = field_chart(
            &field,
            data,
            from,
            to,
            raw_readings,
            &episodes,
            &markers,
            threshold,
            forecast,
        );
        charts_html.push((field, chart, note));
    }

    let mut order_table = Table::new(
        "orders",
        "Orders",
        vec![
            number("id", "Order"),
            number("created", "Created"),
            text("cause", "Cause"),
            text("priority", "Priority"),
            text("status", "Status"),
            number("closed", "Closed"),
            text("title", "Title"),
        ],
    )
    .sorted_by("created", true)
    .filterable()
    .empty("No order for this device.");
    for o in &orders {
        order_table.push(vec![
            Cell::count(o.id.max(0) as u64).link(&format!("/dispatch/orders/{}", o.id)),
            Cell::time(Some(o.created_at)),
            Cell::text(o.cause.as_str()),
            Cell::text(o.priority.as_str()),
            Cell::text(o.status.as_str()).shown(badge(
                &format!("status-{}", o.status.as_str()),
                &o.status.as_str().replace('_', " "),
            )),
            Cell::time(o.closed_at),
            Cell::text(o.title.clone()),
        ]);
    }
    let mut failure_table = Table::new(
        "failures",
        "Failures",
        vec![
            number("at", "At"),
            number("hours", "Runtime h"),
            text("mode", "Failure mode"),
            text("code", "Code"),
            text("component", "Component"),
            text("source", "Source"),
        ],
    )
    .sorted_by("at", true)
    .empty("No failure recorded.");
    for f in &failures {
        failure_table.push(vec![
            Cell::time(Some(f.at)),
            Cell::num(f.runtime_hours, 0),
            Cell::text(f.failure_mode.clone().unwrap_or_default()),
            Cell::text(f.fault_code.clone().unwrap_or_default()),
            Cell::text(f.component.clone().unwrap_or_default()),
            Cell::text(f.source.clone()),
        ]);
    }
    let mut maint = Table::new(
        "maintenance",
        "Maintenance",
        vec![
            number("at", "At"),
            text("kind", "Kind"),
            text("component", "Component"),
            number("hours", "Runtime h"),
            text("source", "Source"),
            text("notes", "Notes"),
        ],
    )
    .sorted_by("at", true)
    .empty("No maintenance recorded.");
    for m in &maintenance {
        maint.push(vec![
            Cell::time(Some(m.at)),
            Cell::text(m.kind.clone()),
            Cell::text(m.component.clone().unwrap_or_default()),
            Cell::num(m.runtime_hours, 0),
            Cell::text(m.source.clone()),
            Cell::text(m.notes.clone().unwrap_or_default()),
        ]);
    }
    let mut statuses = Table::new(
        "status",
        "Status history",
        vec![
            number("at", "At"),
            text("from", "From"),
            text("to", "To"),
            text("by", "By"),
            text("reason", "Reason"),
        ],
    )
    .sorted_by("at", true)
    .empty("No status change recorded.");
    for s in &status_history {
        statuses.push(vec![
            Cell::time(Some(s.at)),
            Cell::text(s.from_status.map_or("—", |x| x.as_str())),
            Cell::text(s.to_status.as_str()),
            Cell::text(s.actor.clone()),
            Cell::text(s.reason.clone().unwrap_or_default()),
        ]);
    }
    let mut alarms = Table::new(
        "alarms",
        "Alarm episodes in the range",
        vec![
            number("from", "Started"),
            number("to", "Ended"),
            text("code", "Code"),
            text("severity", "Severity"),
            number("duration", "Duration (min)"),
        ],
    )
    .sorted_by("from", true)
    .empty("No alarm in this range.");
    for e in &episodes {
        alarms.push(vec![
            Cell::time(Some(e.started_at)),
            Cell::time(e.ended_at),
            Cell::text(e.code.as_str()),
            Cell::text(e.severity.map_or("", |s| s.as_str())).shown(badge(
                &format!("sev-{}", e.severity.map_or("info", |s| s.as_str())),
                e.severity.map_or("unknown", |s| s.as_str()),
            )),
            Cell::num(e.duration_s.map(|s| s / 60.0), 0),
        ]);
    }
    if let Some(csv) = crate::table::csv_download(
        &p,
        &[&order_table, &failure_table, &maint, &statuses, &alarms],
    ) {
        return csv;
    }
    let latest = detail.latest.as_ref();
    let body = html! {
        h1 { "Device " (serial.as_str()) }
        div.order-head {
            (badge(&format!("conn-{}", d.connection.as_str()), d.connection.as_str()))
            (badge("", &d.status.as_str().replace('_', " ")))
            (badge("", &d.criticality.as_str().replace('_', " ")))
            @for e in detail.open_alarms.iter() {
                (badge(&format!("sev-{}", e.severity.map_or("info", |s| s.as_str())), &format!("{} active", e.code.as_str())))
            }
        }
        div.columns {
            dl.fields {
                div.field { dt { "Model" } dd { (d.model.as_ref().map_or("—", |m| m.as_str())) @if let Some(m) = model { " · " (m.name) } } }
                div.field { dt { "Region" } dd { (d.region.as_deref().unwrap_or("—")) } }
                div.field { dt { "Address" } dd { (d.address.as_deref().unwrap_or("—")) } }
                div.field { dt { "Firmware" } dd { (d.firmware.as_deref().unwrap_or("—")) } }
                div.field { dt { "Commissioned" } dd { (d.commissioned_at.map(layout::day).unwrap_or_else(|| "—".into())) } }
                div.field { dt { "Last seen" } dd { (d.last_seen_at.map(|t| format!("{} ({})", layout::time(t), layout::relative(t, now))).unwrap_or_else(|| "never".into())) } }
                div.field { dt { "Open orders" } dd { (detail.open_orders.len()) } }
            }
            section {
                h3 { "Latest state" @if let Some(ts) = latest.and_then(|l| l.ts) { " · " (layout::time(ts)) } }
                @if let Some(l) = latest {
                    table { tbody {
                        @for (k, v) in &l.values { tr { th scope="row" { (k.replace('_', " ")) } td.num { (layout::num(Some(*v), 2)) " " (unit_of(k)) } } }
                    } }
                } @else { p.empty { "No reading yet." } }
            }
        }
        section {
            h2 { "Failure risk" }
            (risk_rows(&predictions))
        }
        section {
            h2 { "Signals" }
            nav.ranges aria-label="Range" {
                @for (r, _, _) in RANGES {
                    @if *r == range { strong { (r) } } @else { a href=(format!("/devices/{}{}", serial.as_str(), p.with("range", Some(r)))) { (r) } }
                    " "
                }
                span.note { @if raw_readings { "readings" } @else if days > 90 { "daily from the hourly rollups: mean, with the day's min–max band" } @else { "hourly rollups: mean, with the hour's min–max band" } " · alarm episodes shaded, orders and failures marked" }
            }
            @if charts_html.is_empty() { p.empty { "No reading in this range." } }
            div.grid {
                @for (field, chart, note) in &charts_html {
                    figure.chart id=(format!("chart-{field}")) {
                        (svg(chart.clone()))
                        @if let Some(n) = note { figcaption { (n) } }
                    }
                }
            }
        }
        (alarms.render(&p))
        (order_table.render(&p))
        (failure_table.render(&p))
        (maint.render(&p))
        (statuses.render(&p))
    };
    layout::page(
        Some(&viewer),
        Nav::Device,
        &format!("Device {serial}"),
        &state.app.clock,
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_come_from_field_names() {
        assert_eq!(unit_of("filter_life_pct"), "%");
        assert_eq!(unit_of("runtime_hours"), "h");
        assert_eq!(unit_of("outlet_temp_c"), "°C");
        assert_eq!(unit_of("flow_lpm"), "L/min");
        assert_eq!(unit_of("o2_purity"), "");
    }

    #[test]
    fn a_field_chart_shades_episodes_and_marks_orders() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("t");
        let data = FieldData {
            points: (0..48)
                .map(|h| (t0 + Duration::hours(h), 90.0 - h as f64))
                .collect(),
            band: Vec::new(),
        };
        let episode = AlarmEpisode {
            id: 1,
            serial: Serial::parse("OC-1").expect("serial"),
            code: fleetpulse_domain::AlarmCode::parse("E101").expect("code"),
            severity: Some(fleetpulse_domain::alarm::Severity::Critical),
            started_at: t0 + Duration::hours(10),
            started_seq: 1,
            ended_at: None,
            ended_seq: None,
            duration_s: None,
            runtime_hours_at_start: None,
            imported: false,
        };
        let order = Marker {
            at: t0 + Duration::hours(11),
            label: "order #7".into(),
            kind: "order".into(),
        };
        let svg = field_chart(
            "filter_life_pct",
            data,
            t0,
            t0 + Duration::hours(48),
            true,
            &[episode],
            &[order],
            None,
            None,
        );
        assert!(svg.contains("E101"), "the episode is labelled");
        assert!(svg.contains("order #7"), "the order is marked");
        assert!(svg.contains("filter life pct"));
        assert!(!svg.contains("NaN"));
    }
}
