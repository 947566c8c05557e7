//! Operations: dead letters by reason with their payload, webhooks and their delivery
//! log (admins, as in the API), ingest, journal, store and sink figures.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use fleetpulse_api::auth::{ADMINS, READERS};
use fleetpulse_domain::RejectReason;
use fleetpulse_domain::store::DeadLetterQuery;
use maud::{Markup, html};

use crate::UiState;
use crate::layout::{self, Nav, badge, tile};
use crate::session::Viewer;
use crate::table::{Cell, Params, Table, number, text};

/// Dead letters listed at once (newest first; narrow by reason).
pub const DEAD_LETTER_LIMIT: usize = 200;
/// Deliveries listed per webhook.
pub const DELIVERY_LIMIT: usize = 50;

/// The ingest counters as figure tiles, from the process's ingest snapshot (JSON).
pub fn ingest_tiles(snapshot: &serde_json::Value) -> Markup {
    let n = |k: &str| snapshot.get(k).and_then(serde_json::Value::as_u64);
    let shown = |k: &str| n(k).map_or("—".to_owned(), |v| v.to_string());
    let sink = snapshot.get("sink");
    let s = |k: &str| {
        sink.and_then(|s| s.get(k))
            .and_then(serde_json::Value::as_u64)
    };
    html! {
        div.tiles {
            (tile("messages received", &shown("received_messages"), None, ""))
            (tile("readings stored", &shown("readings_stored"), None, ""))
            (tile("duplicates", &shown("duplicates"), None, ""))
            (tile("dead-lettered", &shown("dead_lettered"), Some("/operations"), if n("dead_lettered").unwrap_or(0) > 0 { "warn" } else { "" }))
            (tile("journal backlog (records)", &shown("journal_unapplied_records"), None, if n("journal_unapplied_records").unwrap_or(0) > 10_000 { "warn" } else { "" }))
            (tile("device connections", &shown("device_connections"), None, ""))
            (tile("commit errors", &shown("commit_errors"), None, if n("commit_errors").unwrap_or(0) > 0 { "bad" } else { "" }))
            @if snapshot.get("held").and_then(serde_json::Value::as_bool) == Some(true) {
                (tile("ingest", "held", None, "bad"))
            }
            @if sink.is_some() {
                (tile("sink: readings written", &s("written_readings").map_or("—".into(), |v| v.to_string()), None, ""))
                (tile("sink: spool (readings)", &s("spool_readings").map_or("—".into(), |v| v.to_string()), None, if s("spool_readings").unwrap_or(0) > 0 { "warn" } else { "" }))
                (tile("sink", if sink.and_then(|s| s.get("healthy")).and_then(serde_json::Value::as_bool) == Some(false) { "unhealthy" } else { "healthy" }, None, ""))
            }
        }
    }
}

/// `GET /operations`.
pub async fn page(
    viewer: Viewer,
    State(state): State<UiState>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = viewer.caller.require(READERS) {
        return layout::api_error(e);
    }
    let p = Params::parse(raw.as_deref());
    let reason = match p.get("reason").filter(|r| *r != "any") {
        None => None,
        Some(r) => match r.parse::<RejectReason>() {
            Ok(r) => Some(r),
            Err(_) => {
                return layout::refusal(
                    StatusCode::BAD_REQUEST,
                    &format!("reason = {r:?} is not a dead-letter reason"),
                );
            }
        },
    };
    let letters = match state
        .app
        .store
        .dead_letters(DeadLetterQuery {
            reason,
            after: None,
            limit: DEAD_LETTER_LIMIT,
        })
        .await
    {
        Ok(page) => page.items,
        Err(e) => return layout::api_error(e.into()),
    };
    let stats = state.app.store.stats().await.ok();
    let mut by_reason: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for d in &letters {
        let e = by_reason.entry(d.reason.as_str()).or_default();
        e.0 += 1;
        e.1 += d.repeats;
    }
    let mut reasons = Table::new(
        "reasons",
        "Dead letters by reason (listed below)",
        vec![
            text("reason", "Reason"),
            number("letters", "Letters"),
            number("repeats", "Repeats"),
        ],
    )
    .sorted_by("letters", true);
    for (r, (n, rep)) in &by_reason {
        reasons.push(vec![
            Cell::text(*r).link(&format!("/operations{}", p.with("reason", Some(r)))),
            Cell::count(*n),
            Cell::count(*rep),
        ]);
    }
    let mut dead = Table::new(
        "dead_letters",
        "Dead letters",
        vec![
            number("id", "Id"),
            number("received", "Received"),
            number("last", "Last seen"),
            text("reason", "Reason"),
            text("topic", "Topic"),
            text("client", "Client"),
            text("detail", "Detail"),
            number("repeats", "Repeats"),
            text("payload", "Payload"),
        ],
    )
    .filterable()
    .sorted_by("id", true)
    .empty("No dead letters: every message was accepted.");
    for d in &letters {
        let shown: String = d.payload.chars().take(400).collect();
        dead.push(vec![
            Cell::count(d.id.max(0) as u64),
            Cell::time(Some(d.received_at)),
            Cell::time(Some(d.last_seen_at)),
            Cell::text(d.reason.as_str()).shown(badge("reason", d.reason.as_str())),
            Cell::text(d.topic.clone()),
            Cell::text(d.client_id.clone()),
            Cell::text(d.detail.clone()),
            Cell::count(d.repeats),
            Cell::text(d.payload.clone()).shown(html! { details { summary { (d.payload.chars().take(40).collect::<String>()) "…" } pre { (shown) } } }),
        ]);
    }
    let mut hooks_table = Table::new(
        "webhooks",
        "Webhooks",
        vec![
            number("id", "Id"),
            text("name", "Name"),
            text("url", "URL"),
            text("state", "State"),
            number("pending", "Pending"),
            number("dead", "Dead"),
        ],
    )
    .empty("No webhooks registered (POST /api/v1/webhooks).");
    let mut deliveries = Table::new(
        "deliveries",
        "Latest deliveries",
        vec![
            number("id", "Id"),
            number("webhook", "Webhook"),
            number("event", "Event"),
            number("order", "Order"),
            text("state", "State"),
            number("attempts", "Attempts"),
            number("last", "Last attempt"),
            number("status", "Status"),
            text("error", "Error"),
        ],
    )
    .filterable()
    .sorted_by("id", true)
    .empty("No deliveries yet.");
    let admin = viewer.may(ADMINS);
    if admin {
        let hooks = state.app.webhooks.list_webhooks().await.unwrap_or_default();
        for h in &hooks {
            hooks_table.push(vec![
                Cell::count(h.id.max(0) as u64),
                Cell::text(h.name.clone()),
                Cell::text(h.url.clone()),
                Cell::text(if h.disabled_at.is_some() {
                    "disabled"
                } else {
                    "active"
                }),
                Cell::count(h.pending),
                Cell::count(h.dead),
            ]);
            if let Ok(page) = state
                .app
                .webhooks
                .deliveries(h.id, None, None, DELIVERY_LIMIT)
                .await
            {
                for d in page.items {
                    deliveries.push(vec![
                        Cell::count(d.id.max(0) as u64),
                        Cell::count(d.webhook_id.max(0) as u64),
                        Cell::count(d.event_id.max(0) as u64),
                        Cell::count(d.order_id.max(0) as u64)
                            .link(&format!("/dispatch/orders/{}", d.order_id)),
                        Cell::text(format!("{:?}", d.state).to_lowercase()),
                        Cell::count(u64::from(d.attempts)),
                        Cell::time(d.last_attempt_at),
                        Cell::num(d.last_status.map(f64::from), 0),
                        Cell::text(d.last_error.clone().unwrap_or_default()),
                    ]);
                }
            }
        }
    }
    if let Some(csv) = crate::table::csv_download(&p, &[&reasons, &dead, &hooks_table, &deliveries])
    {
        return csv;
    }
    let reasons_offered: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    let body = html! {
        h1 { "Operations" }
        section {
            h2 { "Ingest" }
            (ingest_tiles(&state.app.ingest.snapshot()))
            @if let Some(s) = &stats {
                div.tiles {
                    (tile("devices", &s.devices.to_string(), Some("/"), ""))
                    (tile("readings held", &s.readings.to_string(), None, ""))
                    (tile("dead letters (all time)", &s.dead_letters.to_string(), None, ""))
                    (tile("open alarm episodes", &s.open_alarm_episodes.to_string(), None, ""))
                    (tile("active orders", &s.active_orders.to_string(), Some("/dispatch"), ""))
                    (tile("store WAL (bytes)", &s.wal_bytes.to_string(), None, ""))
                }
            }
            @for problem in state.app.ingest.problems() {
                p.error role="alert" { (problem) }
            }
        }
        section {
            h2 { "Dead letters" }
            form.filters method="get" action="/operations" {
                label { "Reason " select name="reason" {
                    option value="any" { "any" }
                    @for r in &reasons_offered { option value=(r) selected[p.get("reason") == Some(*r)] { (r) } }
                } }
                button type="submit" { "Apply" }
            }
            p.note { "The newest " (DEAD_LETTER_LIMIT) " dead letters; a message a device sends again is one letter with its repeats counted." }
            (reasons.render(&p))
            (dead.render(&p))
        }
        section {
            h2 { "Webhooks" }
            @if admin {
                (hooks_table.render(&p))
                (deliveries.render(&p))
            } @else {
                p.note { "Webhooks and their delivery log are for administrators." }
            }
        }
    };
    layout::page(
        Some(&viewer),
        Nav::Operations,
        "Operations",
        &state.app.clock,
        body,
    )
}
