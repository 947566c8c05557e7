//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the ingest counters and
//! the store's counts, and per webhook its pending and dead deliveries.

use std::fmt::Write as _;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// A scrape must not hang on a hung store: the store's gauges are left out after this.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)), security(()))]
async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::with_capacity(8 * 1024);
    state.ingest.write_prometheus(&mut out);
    let stats = tokio::time::timeout(STORE_TIMEOUT, state.store.stats()).await;
    let up = match stats {
        Ok(Ok(s)) => {
            let gauges = [
                ("devices", "Devices in the registry.", s.devices),
                (
                    "readings",
                    "Raw readings kept (within retention).",
                    s.readings,
                ),
                ("dead_letters", "Dead letters kept.", s.dead_letters),
                (
                    "open_alarm_episodes",
                    "Alarm episodes not yet cleared.",
                    s.open_alarm_episodes,
                ),
                (
                    "active_orders",
                    "Orders open, acknowledged, assigned or in progress.",
                    s.active_orders,
                ),
                ("orders", "Orders of any status.", s.orders),
                (
                    "wal_bytes",
                    "Size of the store's write-ahead log in bytes (near or under 64 MiB when checkpoints keep up).",
                    s.wal_bytes,
                ),
            ];
            for (name, help, value) in gauges {
                let _ = writeln!(out, "# HELP fleetpulse_store_{name} {help}");
                let _ = writeln!(out, "# TYPE fleetpulse_store_{name} gauge");
                let _ = writeln!(out, "fleetpulse_store_{name} {value}");
            }
            1
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "metrics: the store did not answer");
            0
        }
        Err(_) => {
            tracing::warn!(
                timeout_s = STORE_TIMEOUT.as_secs(),
                "metrics: the store timed out"
            );
            0
        }
    };
    if let Ok(Ok(hooks)) = tokio::time::timeout(STORE_TIMEOUT, state.webhooks.list_webhooks()).await
        && !hooks.is_empty()
    {
        let _ = writeln!(
            out,
            "# HELP fleetpulse_webhook_deliveries Webhook deliveries waiting (pending, incl. backing off) or given up (dead)."
        );
        let _ = writeln!(out, "# TYPE fleetpulse_webhook_deliveries gauge");
        for h in hooks {
            let _ = writeln!(
                out,
                "fleetpulse_webhook_deliveries{{webhook=\"{}\",state=\"pending\"}} {}",
                h.id, h.pending
            );
            let _ = writeln!(
                out,
                "fleetpulse_webhook_deliveries{{webhook=\"{}\",state=\"dead\"}} {}",
                h.id, h.dead
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP fleetpulse_store_up 1 when the store answered this scrape."
    );
    let _ = writeln!(out, "# TYPE fleetpulse_store_up gauge");
    let _ = writeln!(out, "fleetpulse_store_up {up}");
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
