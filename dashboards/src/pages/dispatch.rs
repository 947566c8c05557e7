//! Dispatch: the order queue with filters and SLA countdowns, live (the order stream);
//! an order's detail with its evidence and history; the lifecycle actions (acknowledge,
//! assign, start, complete with outcome, cancel) as forms, version-checked like the
//! API's `If-Match`, with a conflict shown plainly.

use std::str::FromStr;

use axum::Form;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use fleetpulse_api::auth::{DISPATCHERS, READERS};
use fleetpulse_domain::dispatch::{CompletionOutcome, OrderAction, TransitionError};
use fleetpulse_domain::order::{Cause, Order, OrderKind, OrderStatus, Priority, SlaState};
use fleetpulse_domain::store::OrderQuery;
use fleetpulse_domain::{AlarmCode, LifecycleStatus};
use maud::{Markup, html};

use crate::UiState;
use crate::layout::{self, Nav, badge, relative};
use crate::session::Viewer;
use crate::table::{Cell, Params, Table, number, text};

/// Most orders the queue shows at once (filters narrow it).
pub const QUEUE_LIMIT: usize = 300;

/// A badge class for an SLA state.
fn sla_badge(state: Option<SlaState>) -> Markup {
    match state {
        Some(s) => badge(
            &format!("sla-{}", s.as_str()),
            &s.as_str().replace('_', " "),
        ),
        None => badge("sla-closed", "closed"),
    }
}

/// The countdown to an order's counting deadline; the script ticks it every second.
fn countdown(o: &Order, now: DateTime<Utc>) -> Markup {
    match o.sla.next_deadline(o.status) {
        Some((name, at)) => html! {
            time.countdown datetime=(at.to_rfc3339()) data-deadline=(at.to_rfc3339())
                title=(format!("{} {}", name.replace('_', " "), layout::time(at))) {
                (relative(at, now))
            }
        },
        None => html! { "—" },
    }
}

fn parse_opt<T: FromStr>(p: &Params, key: &str) -> Result<Option<T>, String> {
    match p.get(key) {
        None | Some("any") => Ok(None),
        Some(v) => v
            .parse::<T>()
            .map(Some)
            .map_err(|_| format!("{key} = {v:?} is not one of the offered values")),
    }
}

/// The queue's filters from the URL.
fn queue_query(p: &Params, now: DateTime<Utc>) -> Result<OrderQuery, String> {
    let status: Option<OrderStatus> = parse_opt(p, "status")?;
    let sla: Option<SlaState> = parse_opt(p, "sla")?;
    Ok(OrderQuery {
        status,
        active_only: status.is_none() && p.get("closed") != Some("1"),
        serial: None,
        cause: p
            .get("cause")
            .map(|c| Cause::parse(c).map_err(|e| format!("cause: {e}")))
            .transpose()?,
        kind: parse_opt::<OrderKind>(p, "kind")?,
        priority: parse_opt::<Priority>(p, "priority")?,
        after: None,
        limit: QUEUE_LIMIT,
        region: p.get("region").map(str::to_owned),
        model: p.get("model").map(str::to_owned),
        updated_since: None,
        sla: sla.map(|s| (s, now)),
    })
}

/// The queue table (also what the live refresh fetches).
pub fn queue_table(orders: &[Order], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(
        "queue",
        "Orders",
        vec![
            number("id", "Order"),
            text("priority", "Priority"),
            text("status", "Status"),
            text("sla", "SLA"),
            number("due", "Next deadline"),
            text("device", "Device"),
            text("model", "Model"),
            text("region", "Region"),
            text("cause", "Cause"),
            text("title", "Title"),
            number("updated", "Updated"),
        ],
    )
    .filterable()
    .sorted_by("due", false)
    .empty("No order matches these filters.");
    for o in orders {
        let sla = o.sla.state(o.status, o.created_at, now);
        let deadline = o.sla.next_deadline(o.status).map(|(_, t)| t);
        let device = o.device.as_ref();
        t.push(vec![
            Cell::num(Some(o.id as f64), 0).link(&format!("/dispatch/orders/{}", o.id)),
            Cell::text(o.priority.as_str()).shown(badge(
                &format!("prio-{}", o.priority.as_str().to_lowercase()),
                o.priority.as_str(),
            )),
            Cell::text(o.status.as_str()).shown(badge(
                &format!("status-{}", o.status.as_str()),
                &o.status.as_str().replace('_', " "),
            )),
            Cell::text(sla.map_or("closed", |s| s.as_str())).shown(sla_badge(sla)),
            Cell::time(deadline).shown(countdown(o, now)),
            Cell::text(o.serial.as_str()).link(&format!("/devices/{}", o.serial.as_str())),
            Cell::text(
                device
                    .and_then(|d| d.model.as_ref())
                    .map_or("—", |m| m.as_str()),
            ),
            Cell::text(device.and_then(|d| d.region.as_deref()).unwrap_or("—")),
            Cell::text(o.cause.as_str()),
            Cell::text(o.title.clone()),
            Cell::time(Some(o.updated_at)),
        ]);
    }
    t
}

fn select(name: &str, label: &str, current: Option<&str>, options: &[&str]) -> Markup {
    html! {
        label {
            (label) " "
            select name=(name) {
                option value="any" { "any" }
                @for o in options {
                    option value=(o) selected[current == Some(*o)] { (o.replace('_', " ")) }
                }
            }
        }
    }
}

fn filters(p: &Params) -> Markup {
    let statuses: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
    let prios: Vec<&str> = Priority::ALL.iter().map(|s| s.as_str()).collect();
    let slas: Vec<&str> = SlaState::ALL.iter().map(|s| s.as_str()).collect();
    let kinds: Vec<&str> = OrderKind::ALL.iter().map(|s| s.as_str()).collect();
    html! {
        form.filters method="get" action="/dispatch" {
            (select("status", "Status", p.get("status"), &statuses))
            (select("priority", "Priority", p.get("priority"), &prios))
            (select("sla", "SLA", p.get("sla"), &slas))
            (select("kind", "Kind", p.get("kind"), &kinds))
            label { "Region " input type="text" name="region" size="10" value=(p.get("region").unwrap_or("")); }
            label { "Model " input type="text" name="model" size="8" value=(p.get("model").unwrap_or("")); }
            label { "Cause " input type="text" name="cause" size="22" placeholder="e.g. critical_alarm:E101" value=(p.get("cause").unwrap_or("")); }
            button type="submit" { "Apply" }
            a href="/dispatch" { "Clear" }
        }
    }
}

/// `GET /dispatch`: the queue. `?fragment=queue` answers only the table (the live refresh).
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
    let query = match queue_query(&p, now) {
        Ok(q) => q,
        Err(m) => return layout::refusal(StatusCode::BAD_REQUEST, &m),
    };
    let orders = match state.app.store.list_orders(query).await {
        Ok(page) => page.items,
        Err(e) => return layout::api_error(e.into()),
    };
    let table = queue_table(&orders, now);
    if let Some(csv) = crate::table::csv_download(&p, &[&table]) {
        return csv;
    }
    let rendered = table.render(&p);
    if p.get("fragment") == Some("queue") {
        return axum::response::Html(rendered.into_string()).into_response();
    }
    let body = html! {
        h1 { "Dispatch" }
        (filters(&p))
        div.live data-stream="/dispatch/stream" data-refresh=(format!("/dispatch{}", p.with("fragment", Some("queue")))) data-target="queue-live" {
            span.live-state aria-live="polite" { "live updates: connecting…" }
            ol.changes aria-label="Latest order changes" {}
        }
        @if orders.len() >= QUEUE_LIMIT {
            p.note { "Showing the first " (QUEUE_LIMIT) " orders; narrow the filters to see the rest." }
        }
        div #queue-live { (rendered) }
    };
    layout::page(
        Some(&viewer),
        Nav::Dispatch,
        "Dispatch",
        &state.app.clock,
        body,
    )
}

/// `GET /dispatch/stream`: the API's order stream for a page session.
pub async fn stream(
    viewer: Viewer,
    State(state): State<UiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let p = Params::parse(raw.as_deref());
    match fleetpulse_api::routes::order_feed::open_stream(
        viewer.caller,
        state.app,
        &headers,
        p.get("after"),
    )
    .await
    {
        Ok(sse) => sse.into_response(),
        Err(e) => e.into_response(),
    }
}

fn field(label: &str, value: Markup) -> Markup {
    html! { div.field { dt { (label) } dd { (value) } } }
}

fn opt_time(t: Option<DateTime<Utc>>) -> Markup {
    html! { @if let Some(t) = t { (layout::time(t)) } @else { "—" } }
}

/// The forms of the steps an order may take now (dispatchers and admins only).
fn actions(o: &Order, viewer: &Viewer, catalog_consumables: &[String]) -> Markup {
    if !viewer.may(DISPATCHERS) {
        return html! { p.note { "Your role (" (viewer.role_name()) ") may read orders; dispatchers act on them." } };
    }
    let next = o.status.allowed_next();
    let hidden = |action: &str| {
        html! {
            input type="hidden" name="csrf" value=(viewer.csrf);
            input type="hidden" name="version" value=(o.version);
            input type="hidden" name="action" value=(action);
        }
    };
    let url = |a: &str| format!("/dispatch/orders/{}/{a}", o.id);
    html! {
        div.actions {
            @if next.is_empty() { p.note { "This order is closed." } }
            @if next.contains(&OrderStatus::Acknowledged) {
                form method="post" action=(url("acknowledge")) { (hidden("acknowledge")) button type="submit" { "Acknowledge" } }
            }
            @if next.contains(&OrderStatus::Assigned) || o.status == OrderStatus::Assigned {
                form method="post" action=(url("assign")) {
                    (hidden("assign"))
                    label { "Engineer " input type="text" name="engineer" required maxlength="128" value=(o.engineer.as_deref().unwrap_or("")); }
                    label { "Planned visit (UTC) " input type="datetime-local" name="planned_visit_at"; }
                    button type="submit" { @if o.status == OrderStatus::Assigned { "Re-assign" } @else { "Assign" } }
                }
            }
            @if next.contains(&OrderStatus::InProgress) {
                form method="post" action=(url("start")) { (hidden("start")) button type="submit" { "Start work" } }
            }
            @if next.contains(&OrderStatus::Completed) {
                form.complete method="post" action=(url("complete")) {
                    (hidden("complete"))
                    fieldset {
                        legend { "Complete with outcome" }
                        label { input type="checkbox" name="failure_confirmed" value="true"; " The device had failed" }
                        label { "Fault code " input type="text" name="fault_code" size="6" placeholder="E101"; }
                        @for c in catalog_consumables {
                            label { input type="checkbox" name="consumable" value=(c); " Replaced " (c) }
                        }
                        label { "Labour minutes " input type="number" name="labour_minutes" min="0" max="100000"; }
                        label { "Device status after " select name="device_status" {
                            option value="" { "unchanged" }
                            @for s in LifecycleStatus::ALL { option value=(s.as_str()) { (s.as_str().replace('_', " ")) } }
                        } }
                        label.wide { "Notes " textarea name="notes" rows="2" maxlength="4000" {} }
                        button type="submit" { "Complete" }
                    }
                }
            }
            @if next.contains(&OrderStatus::Cancelled) {
                form method="post" action=(url("cancel")) {
                    (hidden("cancel"))
                    label { "Reason " input type="text" name="reason" required maxlength="500"; }
                    button.danger type="submit" { "Cancel order" }
                }
            }
        }
    }
}

async fn order_view(
    state: &UiState,
    viewer: &Viewer,
    id: i64,
    notice: Option<(bool, String)>,
    status: StatusCode,
) -> Response {
    let now = state.app.clock.now();
    let order = match state.app.store.order(id).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            return layout::refusal(
                StatusCode::NOT_FOUND,
                &format!("Order {id} does not exist."),
            );
        }
        Err(e) => return layout::api_error(e.into()),
    };
    let history = match state.app.dispatch.order_history(id).await {
        Ok(h) => h,
        Err(e) => return layout::api_error(e.into()),
    };
    let consumables: Vec<String> = order
        .device
        .as_ref()
        .and_then(|d| d.model.as_ref())
        .and_then(|m| state.app.catalog.model(m.as_str()))
        .map(|m| m.consumables.iter().map(|c| c.id.clone()).collect())
        .unwrap_or_default();
    let sla = order.sla.state(order.status, order.created_at, now);
    let mut hist = Table::new(
        "history",
        "History",
        vec![
            number("at", "At"),
            text("kind", "Event"),
            text("from", "From"),
            text("to", "To"),
            text("actor", "By"),
            number("version", "Version"),
            text("data", "Detail"),
        ],
    )
    .sorted_by("at", false);
    for e in &history {
        hist.push(vec![
            Cell::time(Some(e.at)),
            Cell::text(e.kind.clone()),
            Cell::text(e.from_status.map_or("—", |s| s.as_str())),
            Cell::text(e.to_status.as_str()),
            Cell::text(e.actor.clone()),
            Cell::count(u64::from(e.version)),
            Cell::text(if e.data.is_null() {
                String::new()
            } else {
                e.data.to_string()
            }),
        ]);
    }
    let p = Params::default();
    let evidence = serde_json::to_string_pretty(&order.evidence).unwrap_or_default();
    let body = html! {
        p { a href="/dispatch" { "← the queue" } }
        h1 { "Order " (order.id) ": " (order.title) }
        @if let Some((ok, m)) = &notice {
            p class=(if *ok { "notice" } else { "error" }) role="alert" { (m) }
        }
        div.order-head {
            (badge(&format!("prio-{}", order.priority.as_str().to_lowercase()), order.priority.as_str()))
            (badge(&format!("status-{}", order.status.as_str()), &order.status.as_str().replace('_', " ")))
            (sla_badge(sla))
            " " (countdown(&order, now))
            span.version { "version " (order.version) }
        }
        div.columns {
            dl.fields {
                (field("Device", html! { a href=(format!("/devices/{}", order.serial.as_str())) { (order.serial.as_str()) } }))
                @if let Some(d) = &order.device {
                    (field("Model", html! { (d.model.as_ref().map_or("—", |m| m.as_str())) }))
                    (field("Region", html! { (d.region.as_deref().unwrap_or("—")) }))
                    (field("Address", html! { (d.address.as_deref().unwrap_or("—")) }))
                    (field("Criticality", html! { (d.criticality.as_str()) }))
                    (field("Firmware", html! { (d.firmware.as_deref().unwrap_or("—")) }))
                }
                (field("Cause", html! { code { (order.cause.as_str()) } }))
                (field("Kind", html! { (order.kind.as_str()) }))
                (field("Origin", html! { (order.origin) }))
                (field("Solution", html! { (order.solution) }))
                (field("Skills", html! { (order.skills.join(", ")) }))
                (field("Parts", html! { @for part in &order.parts { (part.qty) " × " (part.name) " (" (part.number) ") " } }))
                (field("Labour", html! { (order.labour_minutes) " min" }))
                (field("Created", html! { (layout::time(order.created_at)) }))
                (field("Respond by", html! { (layout::time(order.sla.respond_by)) }))
                (field("Arrive by", html! { (layout::time(order.sla.arrive_by)) }))
                (field("Complete by", html! { (layout::time(order.sla.complete_by)) }))
                (field("Due", opt_time(order.due_at)))
                (field("Engineer", html! { (order.engineer.as_deref().unwrap_or("—")) }))
                (field("Planned visit", opt_time(order.planned_visit_at)))
                (field("Triggered", html! { (order.trigger_count) " × (last " (layout::time(order.last_triggered_at)) ")" }))
                @if let Some(c) = order.condition_cleared_at {
                    (field("Condition clear since", html! { (layout::time(c)) }))
                }
                @if let Some(c) = order.cancel_at {
                    (field("Cancels itself at", html! { (layout::time(c)) }))
                }
                @if let Some(r) = &order.cancel_reason {
                    (field("Cancel reason", html! { (r) }))
                }
            }
            section.evidence {
                h3 { "Evidence" }
                pre { (evidence) }
                @if !order.tasks.is_empty() {
                    h3 { "Bundled work" }
                    ul { @for t in &order.tasks { li { code { (t.cause.as_str()) } " " (t.title) } } }
                }
                @if let Some(out) = &order.outcome {
                    h3 { "Outcome" }
                    pre { (serde_json::to_string_pretty(out).unwrap_or_default()) }
                }
            }
        }
        h2 { "Actions" }
        (actions(&order, viewer, &consumables))
        (hist.render(&p))
    };
    let mut r = layout::page(
        Some(viewer),
        Nav::Dispatch,
        &format!("Order {}", order.id),
        &state.app.clock,
        body,
    );
    *r.status_mut() = status;
    r
}

/// `GET /dispatch/orders/{id}`.
pub async fn order(
    viewer: Viewer,
    State(state): State<UiState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = viewer.caller.require(READERS) {
        return layout::api_error(e);
    }
    let Ok(id) = id.parse::<i64>() else {
        return layout::refusal(StatusCode::NOT_FOUND, "No such order.");
    };
    let p = Params::parse(raw.as_deref());
    let notice = p
        .get("done")
        .map(|d| (true, format!("Done: the order is {}.", d.replace('_', " "))));
    order_view(&state, &viewer, id, notice, StatusCode::OK).await
}

/// A lifecycle form as posted (every action's fields; each uses its own).
#[derive(Debug, Default)]
pub struct ActionForm {
    csrf: Option<String>,
    version: Option<String>,
    engineer: Option<String>,
    planned_visit_at: Option<String>,
    failure_confirmed: Option<String>,
    fault_code: Option<String>,
    /// Every ticked consumable (the field repeats).
    consumable: Vec<String>,
    labour_minutes: Option<String>,
    device_status: Option<String>,
    notes: Option<String>,
    reason: Option<String>,
}

impl ActionForm {
    /// The form's fields as posted (`application/x-www-form-urlencoded` pairs); unknown
    /// fields are ignored, a repeated single field keeps its last value.
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut f = Self::default();
        for (k, v) in pairs {
            let slot = match k.as_str() {
                "csrf" => &mut f.csrf,
                "version" => &mut f.version,
                "engineer" => &mut f.engineer,
                "planned_visit_at" => &mut f.planned_visit_at,
                "failure_confirmed" => &mut f.failure_confirmed,
                "fault_code" => &mut f.fault_code,
                "labour_minutes" => &mut f.labour_minutes,
                "device_status" => &mut f.device_status,
                "notes" => &mut f.notes,
                "reason" => &mut f.reason,
                "consumable" => {
                    f.consumable.push(v);
                    continue;
                }
                _ => continue,
            };
            *slot = Some(v);
        }
        f
    }
}

fn nonempty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// The action a form asks for, or why it cannot be one.
fn action_of(name: &str, f: &ActionForm) -> Result<OrderAction, String> {
    Ok(match name {
        "acknowledge" => OrderAction::Acknowledge,
        "start" => OrderAction::Start,
        "assign" => OrderAction::Assign {
            engineer: nonempty(f.engineer.as_deref())
                .ok_or("name the engineer")?
                .to_owned(),
            planned_visit_at: match nonempty(f.planned_visit_at.as_deref()) {
                None => None,
                Some(t) => Some(
                    NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M")
                        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S"))
                        .map_err(|_| format!("planned visit {t:?} is not a date and time"))?
                        .and_utc(),
                ),
            },
        },
        "complete" => OrderAction::Complete(CompletionOutcome {
            failure_confirmed: f.failure_confirmed.as_deref() == Some("true"),
            fault_code: nonempty(f.fault_code.as_deref())
                .map(|c| AlarmCode::parse(c).map_err(|e| format!("fault code: {e}")))
                .transpose()?,
            parts_replaced: Vec::new(),
            consumables_replaced: f.consumable.clone(),
            labour_minutes: nonempty(f.labour_minutes.as_deref())
                .map(|m| {
                    m.parse::<u32>()
                        .map_err(|_| format!("labour minutes {m:?} is not a whole number"))
                })
                .transpose()?,
            notes: nonempty(f.notes.as_deref()).map(str::to_owned),
            signature_ref: None,
            device_status: nonempty(f.device_status.as_deref())
                .map(|s| {
                    s.parse::<LifecycleStatus>()
                        .map_err(|_| format!("device status {s:?} is not one"))
                })
                .transpose()?,
        }),
        "cancel" => OrderAction::Cancel {
            reason: nonempty(f.reason.as_deref())
                .ok_or("give a reason to cancel")?
                .to_owned(),
        },
        other => return Err(format!("{other:?} is not an order action")),
    })
}

/// `POST /dispatch/orders/{id}/{action}`: one lifecycle step from the order page.
pub async fn act(
    viewer: Viewer,
    State(state): State<UiState>,
    Path((id, action)): Path<(String, String)>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = ActionForm::from_pairs(pairs);
    if let Some(refused) = viewer.csrf_refusal(f.csrf.as_deref()) {
        return refused;
    }
    if let Err(e) = viewer.caller.require(DISPATCHERS) {
        return layout::api_error(e);
    }
    let Ok(id) = id.parse::<i64>() else {
        return layout::refusal(StatusCode::NOT_FOUND, "No such order.");
    };
    let Some(version) = f.version.as_deref().and_then(|v| v.parse::<u32>().ok()) else {
        return layout::refusal(
            StatusCode::BAD_REQUEST,
            "The form lacks the order's version; reload the order.",
        );
    };
    let step = match action_of(&action, &f) {
        Ok(a) => a,
        Err(m) => {
            return order_view(
                &state,
                &viewer,
                id,
                Some((false, m)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let now = state.app.clock.now();
    match state
        .app
        .dispatch
        .transition(id, version, step, viewer.caller.actor.clone(), now)
        .await
    {
        Ok(o) => {
            state.app.streams.order_changed();
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&format!(
                "/dispatch/orders/{}?done={}",
                o.id,
                o.status.as_str()
            )) {
                r.headers_mut().insert(axum::http::header::LOCATION, v);
            }
            r
        }
        Err(TransitionError::VersionMismatch {
            current, expected, ..
        }) => {
            let m = format!(
                "Not done: someone changed this order while you had it open (you saw version {expected}, it is at version {current} now). Its current state is below; check it and act again."
            );
            order_view(&state, &viewer, id, Some((false, m)), StatusCode::CONFLICT).await
        }
        Err(TransitionError::Illegal {
            current, wanted, ..
        }) => {
            let m = format!(
                "Not done: the order is {} and cannot become {}.",
                current.as_str().replace('_', " "),
                wanted.as_str().replace('_', " ")
            );
            order_view(&state, &viewer, id, Some((false, m)), StatusCode::CONFLICT).await
        }
        Err(TransitionError::NotFound(_)) => layout::refusal(
            StatusCode::NOT_FOUND,
            &format!("Order {id} does not exist."),
        ),
        Err(e @ (TransitionError::Invalid(_) | TransitionError::AddressRequired { .. })) => {
            order_view(
                &state,
                &viewer,
                id,
                Some((false, format!("Not done: {e}"))),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(TransitionError::Store(e)) => layout::api_error(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_become_actions_or_say_what_is_missing() {
        let f = ActionForm {
            engineer: Some(" eng-7 ".into()),
            planned_visit_at: Some("2026-03-01T09:30".into()),
            ..Default::default()
        };
        assert_eq!(
            action_of("assign", &f),
            Ok(OrderAction::Assign {
                engineer: "eng-7".into(),
                planned_visit_at: Some("2026-03-01T09:30:00Z".parse().expect("t")),
            })
        );
        assert_eq!(
            action_of("assign", &ActionForm::default()),
            Err("name the engineer".into())
        );
        let done = ActionForm {
            failure_confirmed: Some("true".into()),
            fault_code: Some("E101".into()),
            consumable: vec!["filter".into()],
            labour_minutes: Some("45".into()),
            ..Default::default()
        };
        let Ok(OrderAction::Complete(out)) = action_of("complete", &done) else {
            panic!("a completion");
        };
        assert!(out.failure_confirmed);
        assert_eq!(out.consumables_replaced, ["filter"]);
        assert_eq!(out.labour_minutes, Some(45));
        assert!(action_of("cancel", &ActionForm::default()).is_err());
        assert!(action_of("explode", &ActionForm::default()).is_err());
    }
}
