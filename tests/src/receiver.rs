//! A real HTTP webhook receiver for the system tests (axum on a loopback port). It can
//! answer 500, hang past the sender's timeout, be down altogether, or accept; it checks
//! every signature the way the documentation tells integrators to.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio::task::JoinHandle;

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 500 to everything.
    Fail,
    /// Holds the request open for a minute (past any sane sender timeout).
    Hang,
    /// Verifies and records, answers 204.
    Accept,
}

/// One accepted delivery.
#[derive(Clone, Debug)]
pub struct Received {
    pub event_id: i64,
    pub order_id: i64,
    pub kind: String,
    pub attempt: u64,
    pub signature_ok: bool,
    pub timestamp_fresh: bool,
}

#[derive(Clone)]
struct Shared {
    mode: Arc<Mutex<Mode>>,
    received: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<u64>>,
    secret: String,
}

/// A running (or stopped) receiver on a fixed port.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
    task: Option<JoinHandle<()>>,
}

/// Verifies `X-Fleetpulse-Signature` over `"<timestamp>.<body>"`, in constant time.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> (bool, bool) {
    let ts = headers
        .get("x-fleetpulse-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let sig = headers
        .get("x-fleetpulse-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("v1="))
        .and_then(|hex| {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()
        });
    let (Some(ts), Some(sig)) = (ts, sig) else {
        return (false, false);
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = ts.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let ok = ring::hmac::verify(&key, &signed, &sig).is_ok();
    let fresh = (chrono::Utc::now().timestamp() - ts).abs() <= 300;
    (ok, fresh)
}

/// Every answer closes its connection, so a stopped receiver is really gone (no pooled
/// keep-alive connection outlives the listener).
async fn hook(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(axum::http::HeaderName, &'static str); 1]) {
    (
        answer(s, headers, body).await,
        [(axum::http::header::CONNECTION, "close")],
    )
}

async fn answer(s: Shared, headers: HeaderMap, body: Bytes) -> StatusCode {
    if let Ok(mut n) = s.requests.lock() {
        *n += 1;
    }
    let mode = s.mode.lock().map(|m| *m).unwrap_or(Mode::Fail);
    match mode {
        Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::SERVICE_UNAVAILABLE
        }
        Mode::Accept => {
            let (signature_ok, timestamp_fresh) = verify(&s.secret, &headers, &body);
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let r = Received {
                event_id: v["event"]["id"].as_i64().unwrap_or(-1),
                order_id: v["event"]["order_id"].as_i64().unwrap_or(-1),
                kind: v["type"].as_str().unwrap_or("").to_owned(),
                attempt: v["attempt"].as_u64().unwrap_or(0),
                signature_ok,
                timestamp_fresh,
            };
            if let Ok(mut all) = s.received.lock() {
                all.push(r);
            }
            StatusCode::NO_CONTENT
        }
    }
}

impl Receiver {
    /// Starts on a free loopback port in `mode`, checking signatures with `secret`.
    pub async fn start(mode: Mode, secret: &str) -> anyhow::Result<Receiver> {
        let mut r = Receiver {
            addr: SocketAddr::from(([127, 0, 0, 1], crate::free_port())),
            shared: Shared {
                mode: Arc::new(Mutex::new(mode)),
                received: Arc::default(),
                requests: Arc::default(),
                secret: secret.to_owned(),
            },
            task: None,
        };
        r.resume().await?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        if let Ok(mut m) = self.shared.mode.lock() {
            *m = mode;
        }
    }

    /// Requests seen so far, whatever the answer.
    pub fn requests(&self) -> u64 {
        self.shared.requests.lock().map(|n| *n).unwrap_or(0)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Goes away: the port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Comes back on the same port.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(self.shared.clone());
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
