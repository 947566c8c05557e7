//! The page shell (top bar, stylesheet, script), refusals, and small formatting helpers
//! every page uses.

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::session::Viewer;

/// The stylesheet, embedded.
pub const CSS: &str = include_str!("../assets/app.css");
/// The script, embedded: the live order queue and SLA countdowns; nothing else needs it.
pub const JS: &str = include_str!("../assets/app.js");
/// The icon of the browser tab, embedded.
pub const ICON: &str = include_str!("../assets/icon.svg");

/// The pages of the top bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    Fleet,
    Device,
    Planner,
    Quality,
    Dispatch,
    Operations,
    SignIn,
}

const ITEMS: &[(Nav, &str, &str)] = &[
    (Nav::Fleet, "/", "Fleet"),
    (Nav::Planner, "/planner", "Planner"),
    (Nav::Quality, "/quality", "Quality"),
    (Nav::Dispatch, "/dispatch", "Dispatch"),
    (Nav::Operations, "/operations", "Operations"),
];

/// A whole page: `page` names it for tests and scripts (`<main data-page=…>`).
pub fn page(
    viewer: Option<&Viewer>,
    active: Nav,
    title: &str,
    clock: &fleetpulse_domain::Clock,
    body: Markup,
) -> Response {
    let now = clock.now();
    let markup = html! {
        (DOCTYPE)
        html lang="en" data-now=(now.to_rfc3339()) data-speed=(clock.speed()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fleetpulse" }
                link rel="icon" href="/ui/icon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/ui/app.css";
                script src="/ui/app.js" defer {}
            }
            body {
                header.topbar {
                    a.brand href="/" { "fleetpulse" }
                    nav aria-label="Pages" {
                        @for (nav, href, label) in ITEMS {
                            @if *nav == active {
                                a href=(href) aria-current="page" { (label) }
                            } @else {
                                a href=(href) { (label) }
                            }
                        }
                        a href="/api/docs" { "API" }
                    }
                    div.who {
                        span.clock title="The server's clock (simulated in the demo)" {
                            (time(now))
                        }
                        @if let Some(v) = viewer {
                            span.user { (v.name) " · " (v.role_name()) }
                            @if v.signed_in {
                                form method="post" action="/sign-out" {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main data-page=(format!("{active:?}").to_lowercase()) {
                    (body)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A short page that says why a request was refused.
pub fn refusal(status: StatusCode, message: &str) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Refused · fleetpulse" }
                link rel="icon" href="/ui/icon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/ui/app.css";
            }
            body {
                main data-page="refusal" {
                    h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                    p.error role="alert" { (message) }
                    p { a href="/" { "Back to the fleet" } }
                }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// A refused request, for handlers: the API's error as a page with its status.
pub fn api_error(e: fleetpulse_api::ApiError) -> Response {
    let status = e.status();
    if status.is_server_error() {
        tracing::error!(error = %e, "page failed");
        return refusal(
            status,
            "Something went wrong on the server; the log has the detail.",
        );
    }
    refusal(status, &e.to_string())
}

pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// The tab icon (also at `/favicon.ico`, where browsers look without a link).
pub async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// `2026-03-01 14:05 UTC`.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `2026-03-01`.
pub fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// `in 3 h 20 min`, `5 d ago`: a span for people.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    let span = human_span(secs.unsigned_abs());
    if secs >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// `3 h 20 min`, `2 d 4 h`, `45 s`.
pub fn human_span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        if h > 0 {
            format!("{d} d {h} h")
        } else {
            format!("{d} d")
        }
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{secs} s")
    }
}

/// A number for a table: at most `digits` decimals, no trailing zeros, `—` when absent.
pub fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => {
            let s = format!("{v:.digits$}");
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_owned()
            } else {
                s
            };
            if s == "-0" { "0".to_owned() } else { s }
        }
        _ => "—".to_owned(),
    }
}

/// A coloured label (`badge <class>`), e.g. a status, priority, severity or SLA state.
pub fn badge(class: &str, text: &str) -> Markup {
    html! { span class=(format!("badge {class}")) { (text) } }
}

/// An inline SVG chart from the chart functions (their output is escaped by them).
pub fn svg(chart: String) -> Markup {
    PreEscaped(chart)
}

/// A figure tile: a big number with a label (and an optional link).
pub fn tile(label: &str, value: &str, href: Option<&str>, class: &str) -> Markup {
    html! {
        div class=(format!("tile {class}")) {
            @if let Some(h) = href {
                a href=(h) { span.value { (value) } span.label { (label) } }
            } @else {
                span.value { (value) } span.label { (label) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_numbers_read_like_a_person_wrote_them() {
        assert_eq!(human_span(45), "45 s");
        assert_eq!(human_span(3 * 3600 + 20 * 60), "3 h 20 min");
        assert_eq!(human_span(2 * 86_400 + 4 * 3600), "2 d 4 h");
        assert_eq!(num(Some(1.50), 2), "1.5");
        assert_eq!(num(Some(-0.0001), 2), "0");
        assert_eq!(num(Some(1200.0), 0), "1200");
        assert_eq!(num(None, 2), "—");
        assert_eq!(num(Some(f64::NAN), 2), "—");
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("t");
        assert_eq!(
            relative(now + chrono::Duration::minutes(90), now),
            "in 1 h 30 min"
        );
        assert_eq!(relative(now - chrono::Duration::days(5), now), "5 d ago");
    }
}
