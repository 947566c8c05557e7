//! Fleet (`/`): devices by status, model, region and connection (online, offline,
//! silent); open alarms by severity; active orders by status, priority and SLA state;
//! ingest health (readings per second, journal backlog, dead letters in the last 24 h,
//! sink spool). The figures refresh themselves every 5 s (`?fragment=tiles`); the
//! counts come from the store's own `GROUP BY`s ([`fleetpulse_domain::store::FleetOverview`]),
//! so the page costs the same on any fleet size.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use fleetpulse_api::auth::READERS;
use fleetpulse_domain::store::{Count, DeviceQuery, FleetOverview};
use fleetpulse_domain::{Criticality, LifecycleStatus};
use maud::{Markup, html};

use crate::UiState;
use crate::charts::{self, CountBar, CountSegment};
use crate::layout::{self, Nav, badge, svg, tile};
use crate::session::Viewer;
use crate::table::{Cell, Params, Table, number, text};

/// Devices listed at once (filters narrow it).
pub const DEVICE_LIMIT: usize = 500;

/// Readings stored per second, from the ingest counter sampled at each look: the rate
/// over the samples of the last minute (at least one second apart).
#[derive(Debug, Default)]
pub struct RateSampler {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl RateSampler {
    /// Records `total` now; answers the rate over the last minute, `None` until two
    /// samples a second or more apart exist.
    pub fn sample(&self, total: u64, at: Instant) -> Option<f64> {
        let mut s = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.push_back((at, total));
        while s.len() > 2
            && s.front()
                .is_some_and(|(t, _)| at.duration_since(*t).as_secs() > 60)
        {
            s.pop_front();
        }
        while s.len() > 120 {
            s.pop_front();
        }
        let (t0, n0) = *s.front()?;
        let secs = at.duration_since(t0).as_secs_f64();
        (secs >= 1.0).then(|| total.saturating_sub(n0) as f64 / secs)
    }
}

fn segments(list: &[Count], kind: impl Fn(&str) -> String) -> Vec<CountSegment> {
    list.iter()
        .map(|c| CountSegment {
            label: c.key.replace('_', " "),
            count: c.count,
            kind: kind(&c.key),
        })
        .collect()
}

/// A breakdown as a stacked bar and a table (its data, sortable, as CSV), each key
/// linking to `link(key)`.
fn breakdown(
    id: &'static str,
    title: &str,
    list: &[Count],
    kind: impl Fn(&str) -> String,
    link: impl Fn(&str) -> Option<String>,
) -> (Markup, Table) {
    let chart = charts::count_bar(&CountBar {
        title: title.into(),
        segments: segments(list, kind),
        size: charts::Size {
            width: 720,
            height: 72,
        },
    });
    let mut t = Table::new(
        id,
        title,
        vec![text("key", "Key"), number("count", "Count")],
    )
    .empty("None.");
    for c in list {
        let cell = Cell::text(c.key.clone());
        t.push(vec![
            match link(&c.key) {
                Some(href) => cell.link(&href),
                None => cell,
            },
            Cell::count(c.count),
        ]);
    }
    (html! { figure.chart.breakdown { (svg(chart)) } }, t)
}

fn tiles(o: &FleetOverview, ingest: &serde_json::Value, rate: Option<f64>) -> Markup {
    let of = |l: &[Count], k: &str| Count::of(l, k);
    let n = |k: &str| ingest.get(k).and_then(serde_json::Value::as_u64);
    let active: u64 = o.orders_by_status.iter().map(|c| c.count).sum();
    let spool = ingest
        .get("sink")
        .and_then(|s| s.get("spool_readings"))
        .and_then(serde_json::Value::as_u64);
    html! {
        div.tiles #fleet-tiles data-poll="/?fragment=tiles" data-every="5000" {
            (tile("devices", &o.devices.to_string(), Some("#table-devices"), ""))
            (tile("online", &of(&o.by_connection, "online").to_string(), Some("/?connection=online#table-devices"), "good"))
            (tile("offline", &of(&o.by_connection, "offline").to_string(), Some("/?connection=offline#table-devices"), ""))
            (tile("silent", &of(&o.by_connection, "silent").to_string(), Some("/?connection=silent#table-devices"), if of(&o.by_connection, "silent") > 0 { "warn" } else { "" }))
            (tile("critical alarms", &of(&o.active_alarms_by_severity, "critical").to_string(), None, if of(&o.active_alarms_by_severity, "critical") > 0 { "bad" } else { "good" }))
            (tile("warning alarms", &of(&o.active_alarms_by_severity, "warning").to_string(), None, ""))
            (tile("active orders", &active.to_string(), Some("/dispatch"), ""))
            (tile("SLA breached", &of(&o.orders_by_sla, "breached").to_string(), Some("/dispatch?sla=breached"), if of(&o.orders_by_sla, "breached") > 0 { "bad" } else { "good" }))
            (tile("SLA at risk", &of(&o.orders_by_sla, "at_risk").to_string(), Some("/dispatch?sla=at_risk"), if of(&o.orders_by_sla, "at_risk") > 0 { "warn" } else { "" }))
            (tile("readings / s", &rate.map_or("measuring…".into(), |r| layout::num(Some(r), 1)), None, ""))
            (tile("journal backlog", &n("journal_unapplied_records").map_or("—".into(), |v| v.to_string()), Some("/operations"), if n("journal_unapplied_records").unwrap_or(0) > 10_000 { "warn" } else { "" }))
            (tile("dead letters, 24 h", &o.dead_letters_24h.to_string(), Some("/operations"), if o.dead_letters_24h > 0 { "warn" } else { "" }))
            @if let Some(s) = spool {
                (tile("sink spool (readings)", &s.to_string(), Some("/operations"), if s > 0 { "warn" } else { "" }))
            }
        }
    }
}

/// `GET /` (`?fragment=tiles`: the figures only, for the refresh).
pub async fn page(
    viewer: Viewer,
    State(state): State<UiState>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = viewer.caller.require(READERS) {
        return layout::api_error(e);
    }
    let p = Params::parse(raw.as_deref());
    let now = state.app.clock.now();
    let overview = match state
        .app
        .store
        .fleet_overview(now, state.app.policy.prediction.silent_after.0)
        .await
    {
        Ok(o) => o,
        Err(e) => return layout::api_error(e.into()),
    };
    let ingest = state.app.ingest.snapshot();
    let stored = ingest
        .get("readings_stored")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let rate = state.readings_rate.sample(stored, Instant::now());
    if p.get("fragment") == Some("tiles") {
        // the refresh replaces the tiles' inside
        let inner = tiles(&overview, &ingest, rate).into_string();
        let start = inner.find('>').map_or(0, |i| i + 1);
        let end = inner.rfind("</div>").unwrap_or(inner.len());
        return Html(inner[start..end].to_owned()).into_response();
    }
    // the device list, filtered by the URL
    let status = match p
        .get("status")
        .map(str::parse::<LifecycleStatus>)
        .transpose()
    {
        Ok(s) => s,
        Err(_) => {
            return layout::refusal(StatusCode::BAD_REQUEST, "status is not a lifecycle status");
        }
    };
    let criticality = match p
        .get("criticality")
        .map(str::parse::<Criticality>)
        .transpose()
    {
        Ok(c) => c,
        Err(_) => return layout::refusal(StatusCode::BAD_REQUEST, "criticality is not one"),
    };
    let connection = p.get("connection");
    let silent_after = state.app.policy.prediction.silent_after.0;
    // silent in the list: at a customer, not online, not heard from for `silent_after`
    // (the tile's count also leaves out devices whose last connection ended gracefully,
    // which the list does not know)
    let is_silent = |d: &fleetpulse_domain::store::DeviceSummary| {
        d.device.status == LifecycleStatus::AtCustomer
            && d.device.connection.as_str() != "online"
            && d.device
                .last_seen_at
                .is_some_and(|t| t <= now - silent_after)
    };
    let conn_of = |d: &fleetpulse_domain::store::DeviceSummary| {
        if is_silent(d) {
            "silent"
        } else {
            d.device.connection.as_str()
        }
    };
    // the store filters by status, model, region and criticality; the connection is
    // looked at here, page by page, until the list is full
    let mut devices = Vec::new();
    let mut after = None;
    loop {
        let page = match state
            .app
            .store
            .list_devices(DeviceQuery {
                after,
                limit: 1000.min(DEVICE_LIMIT * 2),
                status,
                model: p.get("model").map(str::to_owned),
                region: p.get("region").map(str::to_owned),
                criticality,
            })
            .await
        {
            Ok(page) => page,
            Err(e) => return layout::api_error(e.into()),
        };
        devices.extend(
            page.items
                .into_iter()
                .filter(|d| connection.is_none_or(|c| c == conn_of(d))),
        );
        match page.next {
            Some(next) if devices.len() < DEVICE_LIMIT => after = Some(next),
            _ => break,
        }
    }
    devices.truncate(DEVICE_LIMIT);
    let mut table = Table::new(
        "devices",
        "Devices",
        vec![
            text("serial", "Serial"),
            text("model", "Model"),
            text("status", "Status"),
            text("connection", "Connection"),
            text("region", "Region"),
            text("criticality", "Criticality"),
            text("firmware", "Firmware"),
            number("seen", "Last seen"),
            text("alarms", "Active alarms"),
        ],
    )
    .filterable()
    .sorted_by("serial", false)
    .empty("No device matches these filters.");
    for d in &devices {
        let conn = conn_of(d);
        let alarms = d
            .latest
            .as_ref()
            .map(|l| {
                l.alarms
                    .iter()
                    .map(|a| a.as_str().to_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        table.push(vec![
            Cell::text(d.device.serial.as_str())
                .link(&format!("/devices/{}", d.device.serial.as_str())),
            Cell::text(d.device.model.as_ref().map_or("—", |m| m.as_str())),
            Cell::text(d.device.status.as_str().replace('_', " ")),
            Cell::text(conn).shown(badge(&format!("conn-{conn}"), conn)),
            Cell::text(d.device.region.as_deref().unwrap_or("—")),
            Cell::text(d.device.criticality.as_str().replace('_', " ")),
            Cell::text(d.device.firmware.as_deref().unwrap_or("—")),
            Cell::time(d.device.last_seen_at),
            Cell::text(alarms),
        ]);
    }
    let pr = &p;
    let with =
        |k: &'static str| move |v: &str| Some(format!("/{}#table-devices", pr.with(k, Some(v))));
    let (status_chart, status_table) = breakdown(
        "by_status",
        "Devices by status",
        &overview.by_status,
        |k| format!("status-{k}"),
        with("status"),
    );
    let (conn_chart, conn_table) = breakdown(
        "by_connection",
        "Devices by connection",
        &overview.by_connection,
        |k| format!("conn-{k}"),
        with("connection"),
    );
    let (model_chart, model_table) = breakdown(
        "by_model",
        "Devices by model",
        &overview.by_model,
        |_| String::new(),
        with("model"),
    );
    let (region_chart, region_table) = breakdown(
        "by_region",
        "Devices by region",
        &overview.by_region,
        |_| String::new(),
        with("region"),
    );
    let (alarm_chart, alarm_table) = breakdown(
        "alarms",
        "Open alarms by severity",
        &overview.active_alarms_by_severity,
        |k| format!("sev-{k}"),
        |_| None,
    );
    let (ostatus_chart, ostatus_table) = breakdown(
        "orders_by_status",
        "Active orders by status",
        &overview.orders_by_status,
        |k| format!("status-{k}"),
        |k| Some(format!("/dispatch?status={k}")),
    );
    let (prio_chart, prio_table) = breakdown(
        "orders_by_priority",
        "Active orders by priority",
        &overview.orders_by_priority,
        |k| format!("prio-{}", k.to_lowercase()),
        |k| Some(format!("/dispatch?priority={k}")),
    );
    let (sla_chart, sla_table) = breakdown(
        "orders_by_sla",
        "Active orders by SLA state",
        &overview.orders_by_sla,
        |k| format!("sla-{k}"),
        |k| Some(format!("/dispatch?sla={k}")),
    );
    let all = [
        &status_table,
        &conn_table,
        &model_table,
        &region_table,
        &alarm_table,
        &ostatus_table,
        &prio_table,
        &sla_table,
        &table,
    ];
    if let Some(csv) = crate::table::csv_download(&p, &all) {
        return csv;
    }
    let filtered = ["status", "model", "region", "criticality", "connection"]
        .iter()
        .any(|k| p.get(k).is_some());
    let body = html! {
        h1 { "Fleet" }
        (tiles(&overview, &ingest, rate))
        @for problem in state.app.ingest.problems() { p.error role="alert" { (problem) } }
        div.grid {
            section.card { h2 { "Devices" } (status_chart) (conn_chart) (model_chart) (region_chart) }
            section.card { h2 { "Alarms and orders" } (alarm_chart) (ostatus_chart) (prio_chart) (sla_chart) }
        }
        details {
            summary { "The counts as tables" }
            div.grid {
                (status_table.render(&p)) (conn_table.render(&p)) (model_table.render(&p)) (region_table.render(&p))
                (alarm_table.render(&p)) (ostatus_table.render(&p)) (prio_table.render(&p)) (sla_table.render(&p))
            }
        }
        @if filtered { p { a href="/#table-devices" { "Clear the device filters" } } }
        @if devices.len() >= DEVICE_LIMIT { p.note { "The first " (DEVICE_LIMIT) " devices by serial; filter by status, model, region or connection to see others." } }
        (table.render(&p))
    };
    layout::page(Some(&viewer), Nav::Fleet, "Fleet", &state.app.clock, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rate_is_over_the_last_minute_once_a_second_has_passed() {
        let s = RateSampler::default();
        let t0 = Instant::now();
        assert_eq!(s.sample(100, t0), None);
        assert_eq!(s.sample(150, t0 + Duration::from_millis(500)), None);
        assert_eq!(s.sample(300, t0 + Duration::from_secs(2)), Some(100.0));
        // samples older than a minute drop out, but the last two always stay: a quiet
        // spell between looks still gives a rate (over the time since the previous look)
        let later = s
            .sample(10_300, t0 + Duration::from_secs(122))
            .expect("rate");
        assert!((later - 10_000.0 / 120.0).abs() < 1e-9, "{later}");
    }
}
