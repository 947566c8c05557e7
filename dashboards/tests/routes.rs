//! The pages' routes against the real SQLite store: sign-in, sessions, roles, CSRF,
//! sign-out, revoked tokens, and the dispatch actions with their version check.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, Duration, Utc};
use fleetpulse_api::{AppState, AuthMode, IngestStatus};
use fleetpulse_domain::dispatch::{Actor, Dispatch, Role};
use fleetpulse_domain::order::{Cause, OrderIntent, OrderKind, Priority, Sla};
use fleetpulse_domain::rules::{DeviceContext, OrderRules, StateChange};
use fleetpulse_domain::store::{NewDevice, Store, StoreError, UnknownDevicePolicy};
use fleetpulse_domain::{Catalog, Clock, ModelId, Serial};
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use tower::ServiceExt;

struct NoRules;

impl OrderRules for NoRules {
    fn evaluate(
        &self,
        _: &DeviceContext<'_>,
        _: &StateChange<'_>,
        _: DateTime<Utc>,
    ) -> Vec<OrderIntent> {
        Vec::new()
    }
}

struct NoIngest;

impl IngestStatus for NoIngest {
    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({ "received_messages": 0 })
    }
    fn write_prometheus(&self, _: &mut String) {}
}

/// The pages never run predictions themselves.
struct NoRuns;

#[async_trait::async_trait]
impl fleetpulse_api::PredictionRunner for NoRuns {
    async fn run_now(
        &self,
        _: &str,
        _: Option<DateTime<Utc>>,
    ) -> Result<fleetpulse_domain::store::RunReport, StoreError> {
        Err(StoreError::Unavailable("not in these tests".into()))
    }
    async fn train_now(
        &self,
        _: Option<DateTime<Utc>>,
    ) -> Result<Vec<fleetpulse_domain::prediction::ModelReport>, StoreError> {
        Err(StoreError::Unavailable("not in these tests".into()))
    }
}

fn t0() -> DateTime<Utc> {
    "2026-03-02T08:00:00Z".parse().expect("time")
}

struct Pages {
    router: Router,
    store: Arc<SqliteStore>,
    order: i64,
    _dir: tempfile::TempDir,
}

async fn pages(auth: AuthMode) -> Pages {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = Arc::new(
        Catalog::from_toml_str(include_str!("../../config/catalog.toml")).expect("shipped catalog"),
    );
    let clock = Clock::Fixed(t0());
    let store = Arc::new(
        SqliteStore::open(
            &dir.path().join("fleetpulse.db"),
            StoreOptions {
                clock,
                catalog: catalog.clone(),
                rules: Arc::new(NoRules),
                unknown_device: UnknownDevicePolicy::AutoRegister,
                durability: Durability::Full,
                sink_spool: false,
                cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
            },
        )
        .await
        .expect("store opens"),
    );
    let serial = Serial::parse("OC-0001").expect("serial");
    store
        .register_device(NewDevice {
            serial: serial.clone(),
            model: ModelId::parse("OC-5A").expect("model"),
            status: None,
            criticality: None,
            region: Some("north".into()),
            address: Some("1 Main St".into()),
            commissioned_at: None,
            runtime_hours_at_registration: None,
            observed_from: None,
        })
        .await
        .expect("device");
    let (order, _) = store
        .create_manual_order(
            OrderIntent {
                serial,
                cause: Cause::consumable_depletion("filter"),
                kind: OrderKind::Maintenance,
                priority: Priority::P2,
                title: "Replace the inlet filter".into(),
                solution: "Swap the filter".into(),
                skills: vec!["basic_maintenance".into()],
                parts: Vec::new(),
                labour_minutes: 15,
                evidence: serde_json::json!({ "field": "filter_life_pct", "value": 12.0 }),
                triggered_at: t0(),
                sla: Sla {
                    respond_by: t0() + Duration::hours(4),
                    arrive_by: t0() + Duration::days(2),
                    complete_by: t0() + Duration::days(3),
                },
                new_episode: true,
            },
            Actor("test".into()),
        )
        .await
        .expect("order");
    let policy = Arc::new(
        fleetpulse_domain::Policy::from_toml_str(include_str!("../../config/policy.toml"))
            .expect("shipped policy"),
    );
    let app = AppState {
        store: store.clone(),
        catalog,
        ingest: Arc::new(NoIngest),
        dispatch: store.clone(),
        policy,
        auth,
        webhooks: store.clone(),
        reliability: store.clone(),
        predictions: store.clone(),
        predictor: Arc::new(NoRuns),
        streams: Default::default(),
        clock,
    };
    let router = fleetpulse_api::router(app.clone())
        .merge(fleetpulse_dashboards::router(app, Default::default()));
    Pages {
        router,
        store,
        order: order.id,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value the answer sets for cookie `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap_or("")[name.len() + 1..].to_owned())
    }

    /// The value of the first hidden input `name` on the page.
    fn hidden(&self, name: &str) -> String {
        let marker = format!(r#"name="{name}" value=""#);
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {}", self.body));
        let rest = &self.body[at + marker.len()..];
        rest[..rest.find('"').expect("closing quote")].to_owned()
    }
}

impl Pages {
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, session: Option<&str>) -> Answer {
        let mut req = Request::get(path);
        if let Some(s) = session {
            req = req.header(header::COOKIE, format!("fp_session={s}"));
        }
        self.send(req.body(Body::empty()).expect("request")).await
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Answer {
        let mut req =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let body = serde_urlencoded::to_string(form).expect("form");
        self.send(req.body(Body::from(body)).expect("request"))
            .await
    }

    async fn token(&self, role: Role) -> (i64, String) {
        let (token, digest) = fleetpulse_api::auth::new_token().expect("token");
        let t = self
            .store
            .create_api_token(role.as_str(), role, digest, Actor("test".into()))
            .await
            .expect("token stored");
        (t.id, token)
    }

    /// Signs in through the form; answers the session id.
    async fn sign_in(&self, token: &str) -> String {
        let form = self.get("/sign-in?next=%2Fdispatch", None).await;
        assert_eq!(form.status, StatusCode::OK);
        let nonce = form.cookie("fp_signin").expect("double-submit cookie");
        assert_eq!(form.hidden("nonce"), nonce);
        let done = self
            .post(
                "/sign-in",
                Some(&format!("fp_signin={nonce}")),
                &[("token", token), ("nonce", &nonce), ("next", "/dispatch")],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(done.location(), "/dispatch");
        let set = done
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("fp_session="))
            .expect("session cookie")
            .to_owned();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(part), "{set} lacks {part}");
        }
        assert!(!set.contains("Secure"), "no TLS here: {set}");
        done.cookie("fp_session").expect("session id")
    }
}

#[tokio::test]
async fn without_a_session_pages_send_to_sign_in_and_a_wrong_token_is_refused() {
    let p = pages(AuthMode::Required).await;
    for path in [
        "/",
        "/dispatch",
        "/planner",
        "/quality",
        "/operations",
        "/devices/OC-0001",
    ] {
        let a = p.get(path, None).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            a.location().starts_with("/sign-in?next="),
            "{path}: {}",
            a.location()
        );
    }
    let bogus = p.get("/dispatch", Some("not-a-session")).await;
    assert_eq!(bogus.location(), "/sign-in?next=%2Fdispatch&reason=expired");
    // the assets and the sign-in page are public
    assert_eq!(p.get("/ui/app.css", None).await.status, StatusCode::OK);
    let form = p.get("/sign-in", None).await;
    let nonce = form.cookie("fp_signin").expect("nonce");
    let wrong = p
        .post(
            "/sign-in",
            Some(&format!("fp_signin={nonce}")),
            &[("token", "fpt_0000"), ("nonce", &nonce)],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("unknown or revoked"), "{}", wrong.body);
    assert!(wrong.cookie("fp_session").is_none());
    // a form posted from elsewhere (no double-submit cookie) is refused
    let (_, token) = p.token(Role::Dispatcher).await;
    let forged = p
        .post("/sign-in", None, &[("token", &token), ("nonce", &nonce)])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.cookie("fp_session").is_none());
}

#[tokio::test]
async fn a_dispatcher_acts_with_the_csrf_token_and_a_stale_version_is_a_plain_conflict() {
    let p = pages(AuthMode::Required).await;
    let (_, token) = p.token(Role::Dispatcher).await;
    let session = p.sign_in(&token).await;
    let cookie = format!("fp_session={session}");
    let queue = p.get("/dispatch", Some(&session)).await;
    assert_eq!(queue.status, StatusCode::OK);
    assert!(
        queue
            .body
            .contains(&format!("/dispatch/orders/{}", p.order)),
        "the order is listed"
    );
    let path = format!("/dispatch/orders/{}", p.order);
    let page = p.get(&path, Some(&session)).await;
    assert!(
        page.body.contains("Acknowledge"),
        "a dispatcher gets the actions"
    );
    let csrf = page.hidden("csrf");
    let version = page.hidden("version");
    // no CSRF token, or another one: refused, nothing changes
    for bad in ["", "0000"] {
        let refused = p
            .post(
                &format!("{path}/acknowledge"),
                Some(&cookie),
                &[("csrf", bad), ("version", &version)],
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{bad:?}");
    }
    let o = p.store.order(p.order).await.expect("read").expect("order");
    assert_eq!(o.status.as_str(), "open");
    let done = p
        .post(
            &format!("{path}/acknowledge"),
            Some(&cookie),
            &[("csrf", &csrf), ("version", &version)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), format!("{path}?done=acknowledged"));
    let o = p.store.order(p.order).await.expect("read").expect("order");
    assert_eq!(o.status.as_str(), "acknowledged");
    let history = p.store.order_history(p.order).await.expect("history");
    assert!(
        history
            .iter()
            .any(|e| e.kind == "acknowledged" && e.actor.contains("dispatcher"))
    );
    // the same form again carries the old version: a conflict, said plainly
    let stale = p
        .post(
            &format!("{path}/assign"),
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("engineer", "eng-1"),
            ],
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert!(
        stale.body.contains("someone changed this order"),
        "{}",
        stale.body
    );
    // and with the current version it goes through to completion
    for (action, extra) in [
        ("assign", ("engineer", "eng-1")),
        ("start", ("notes", "")),
        ("complete", ("consumable", "filter")),
    ] {
        let page = p.get(&path, Some(&session)).await;
        let v = page.hidden("version");
        let r = p
            .post(
                &format!("{path}/{action}"),
                Some(&cookie),
                &[("csrf", &csrf), ("version", &v), extra],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{action}: {}", r.body);
    }
    let o = p.store.order(p.order).await.expect("read").expect("order");
    assert_eq!(o.status.as_str(), "completed");
    assert_eq!(o.outcome.expect("outcome").consumables_replaced, ["filter"]);
}

#[tokio::test]
async fn a_quality_engineer_reads_orders_but_gets_no_actions() {
    let p = pages(AuthMode::Required).await;
    let (_, token) = p.token(Role::Quality).await;
    let session = p.sign_in(&token).await;
    let path = format!("/dispatch/orders/{}", p.order);
    let page = p.get(&path, Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains(">Acknowledge<"),
        "no lifecycle buttons for quality"
    );
    assert!(page.body.contains("dispatchers act on them"));
    let csrf = page.hidden("csrf");
    let r = p
        .post(
            &format!("{path}/acknowledge"),
            Some(&format!("fp_session={session}")),
            &[("csrf", &csrf), ("version", "1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let o = p.store.order(p.order).await.expect("read").expect("order");
    assert_eq!(o.status.as_str(), "open");
}

#[tokio::test]
async fn sign_out_and_revocation_end_the_session() {
    let p = pages(AuthMode::Required).await;
    let (id, token) = p.token(Role::Planner).await;
    let session = p.sign_in(&token).await;
    let page = p.get("/dispatch", Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.hidden("csrf");
    let cookie = format!("fp_session={session}");
    // sign-out needs the CSRF token too
    assert_eq!(
        p.post("/sign-out", Some(&cookie), &[("csrf", "x")])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let out = p.post("/sign-out", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.cookie("fp_session").as_deref(), Some(""));
    assert_eq!(
        p.get("/dispatch", Some(&session)).await.status,
        StatusCode::SEE_OTHER
    );

    let again = p.sign_in(&token).await;
    assert_eq!(
        p.get("/dispatch", Some(&again)).await.status,
        StatusCode::OK
    );
    p.store
        .revoke_api_token(id, Actor("test".into()))
        .await
        .expect("revoke");
    let after = p.get("/dispatch", Some(&again)).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert!(
        after.location().ends_with("reason=revoked"),
        "{}",
        after.location()
    );
    // and the session is gone for good, not only refused once
    let later = p.get("/dispatch", Some(&again)).await;
    assert!(
        later.location().ends_with("reason=expired"),
        "{}",
        later.location()
    );
}

#[tokio::test]
async fn with_auth_disabled_pages_open_directly_and_forms_still_need_the_csrf_token() {
    let p = pages(AuthMode::Disabled).await;
    let fleet = p.get("/", None).await;
    assert_eq!(fleet.status, StatusCode::OK);
    assert!(fleet.body.contains(r#"data-page="fleet""#));
    assert_eq!(p.get("/sign-in", None).await.location(), "/");
    let path = format!("/dispatch/orders/{}", p.order);
    let page = p.get(&path, None).await;
    let csrf = page.hidden("csrf");
    let forged = p
        .post(&format!("{path}/acknowledge"), None, &[("version", "1")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let ok = p
        .post(
            &format!("{path}/acknowledge"),
            None,
            &[("csrf", &csrf), ("version", "1")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    // the API is still there, beside the pages
    assert_eq!(p.get("/api/v1/orders", None).await.status, StatusCode::OK);
    assert_eq!(p.get("/nope", None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tables_download_as_csv_and_sort_by_url() {
    let p = pages(AuthMode::Disabled).await;
    let csv = p.get("/dispatch?csv=queue", None).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/csv")
    );
    let mut lines = csv.body.lines();
    assert_eq!(
        lines.next(),
        Some("id,priority,status,sla,due,device,model,region,cause,title,updated")
    );
    let row = lines.next().expect("one order");
    assert!(
        row.starts_with(&format!("{},P2,open,on_track,", p.order)),
        "{row}"
    );
    assert!(
        row.contains("OC-0001,OC-5A,north,filter_depletion,Replace the inlet filter"),
        "{row}"
    );
    let filtered = p.get("/dispatch?priority=P1", None).await;
    assert!(filtered.body.contains("No order matches these filters."));
    let bad = p.get("/dispatch?priority=P9", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
