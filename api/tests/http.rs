//! The HTTP API against the real SQLite store in a temporary directory: each test builds
//! its own app, feeds it through the `Store` trait or the API, and reads the answers
//! through `router()` with `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use fleetpulse_api::{AppState, AuthMode, IngestStatus};
use fleetpulse_domain::order::{Cause, OrderIntent, OrderKind, Priority, Sla};
use fleetpulse_domain::rules::{DeviceContext, OrderRules, StateChange};
use fleetpulse_domain::store::{IngestBatch, NewDeadLetter, Store, UnknownDevicePolicy};
use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};
use fleetpulse_domain::{Catalog, RejectReason, Serial};
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use serde_json::{Value, json};
use tower::ServiceExt;

const CATALOG: &str = r#"
[[model]]
id = "OC-5A"
name = "Concentrator 5 L"
kind = "oxygen_concentrator"
default_criticality = "high"
service_interval_hours = 5000
service_skill = "concentrator_service"
service_labour_minutes = 60

[[model.consumable]]
id = "filter"
name = "Inlet filter"
field = "filter_life_pct"
order_at_pct = 15
rated_life_hours = 2000
skill = "basic_maintenance"
labour_minutes = 15
parts = [{ number = "F-1", name = "Filter" }]

[[model.alarm]]
code = "E101"
title = "Compressor failure"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "compressor"
solution = "Replace the compressor"
labour_minutes = 120
skill = "concentrator_repair"
"#;

/// A filter at or below 15 % calls for a maintenance order.
struct FilterRule;

impl OrderRules for FilterRule {
    fn evaluate(
        &self,
        device: &DeviceContext<'_>,
        change: &StateChange<'_>,
        now: DateTime<Utc>,
    ) -> Vec<OrderIntent> {
        let Some(level) = change
            .after
            .values
            .get("filter_life_pct")
            .copied()
            .filter(|v| *v <= 15.0)
        else {
            return Vec::new();
        };
        vec![OrderIntent {
            serial: device.serial.clone(),
            cause: Cause::consumable_depletion("filter"),
            kind: OrderKind::Maintenance,
            priority: Priority::P3,
            title: "Replace the inlet filter".into(),
            solution: "Swap the filter".into(),
            skills: vec!["basic_maintenance".into()],
            parts: Vec::new(),
            labour_minutes: 15,
            evidence: json!({ "field": "filter_life_pct", "value": level }),
            triggered_at: now,
            sla: Sla {
                respond_by: now + Duration::hours(4),
                arrive_by: now + Duration::days(2),
                complete_by: now + Duration::days(3),
            },
            new_episode: true,
        }]
    }
}

/// Fixed ingest counters, so `/health` can be checked for passing them through.
struct FakeIngest;

impl IngestStatus for FakeIngest {
    fn snapshot(&self) -> Value {
        json!({ "received_messages": 7, "connected": true })
    }

    fn write_prometheus(&self, out: &mut String) {
        out.push_str("fleetpulse_ingest_received_messages_total 7\n");
    }
}

/// Runs of a store's prediction data with no predictors: stores the run, releases what
/// the storm queue may release (nothing here), raises nothing.
struct EmptyRuns(Arc<SqliteStore>);

struct PlansNothing;

impl fleetpulse_domain::store::PredictionPlanner for PlansNothing {
    fn plan(
        &self,
        _: &fleetpulse_domain::store::PlanInput<'_>,
    ) -> Vec<fleetpulse_domain::store::PlanAction> {
        Vec::new()
    }
}

#[async_trait::async_trait]
impl fleetpulse_api::PredictionRunner for EmptyRuns {
    async fn train_now(
        &self,
        _as_of: Option<chrono::DateTime<Utc>>,
    ) -> Result<Vec<fleetpulse_domain::prediction::ModelReport>, fleetpulse_domain::store::StoreError>
    {
        Ok(Vec::new())
    }

    async fn run_now(
        &self,
        trigger: &str,
        as_of: Option<chrono::DateTime<Utc>>,
    ) -> Result<fleetpulse_domain::store::RunReport, fleetpulse_domain::store::StoreError> {
        use fleetpulse_domain::store::PredictionStore;
        let data = self
            .0
            .prediction_data(as_of.unwrap_or_else(Utc::now), 30, 7)
            .await?;
        self.0
            .apply_predictions(
                fleetpulse_domain::store::PredictionRun {
                    as_of: Utc::now(),
                    trigger: trigger.to_owned(),
                    devices: data.devices.len(),
                    predictions: Vec::new(),
                },
                Arc::new(PlansNothing),
            )
            .await
    }
}

fn policy() -> Arc<fleetpulse_domain::Policy> {
    Arc::new(
        fleetpulse_domain::Policy::from_toml_str(include_str!("../../config/policy.toml"))
            .expect("shipped policy is valid"),
    )
}

/// One app over its own database.
struct TestApp {
    router: Router,
    /// The real store (`None` for an app over a deliberately failing store).
    store: Option<Arc<SqliteStore>>,
    _dir: tempfile::TempDir,
}

/// An answer: status, headers and the body as JSON (`Null` when empty or not JSON).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn spawn_app() -> TestApp {
    spawn_app_with(Arc::new(FakeIngest), AuthMode::Disabled).await
}

async fn spawn_app_with(ingest: Arc<dyn IngestStatus>, auth: AuthMode) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = Arc::new(Catalog::from_toml_str(CATALOG).expect("test catalog is valid"));
    let opts = StoreOptions {
        clock: Default::default(),
        catalog: catalog.clone(),
        rules: Arc::new(FilterRule),
        unknown_device: UnknownDevicePolicy::AutoRegister,
        durability: Durability::Full,
        sink_spool: false,
        cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
    };
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("fleetpulse.db"), opts)
            .await
            .expect("store opens"),
    );
    let router = fleetpulse_api::router(AppState {
        store: store.clone(),
        catalog,
        ingest,
        dispatch: store.clone(),
        webhooks: store.clone(),
        reliability: store.clone(),
        predictions: store.clone(),
        predictor: Arc::new(EmptyRuns(store.clone())),
        policy: policy(),
        // most tests here are about the read API; auth has its own tests (the system
        // tests' dispatch.rs) but for the header's syntax
        auth,
        streams: Default::default(),
        clock: Default::default(),
    });
    TestApp {
        router,
        store: Some(store),
        _dir: dir,
    }
}

impl TestApp {
    /// The answer as it came: status, headers and body bytes.
    async fn send_raw(&self, req: Request<Body>) -> (StatusCode, header::HeaderMap, Vec<u8>) {
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, headers, bytes.to_vec())
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let (status, headers, bytes) = self.send_raw(req).await;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Request::get(path).body(Body::empty()).expect("request"))
            .await
    }

    /// A GET answered with text (not JSON): status, content type and body.
    async fn get_text(&self, path: &str) -> (StatusCode, String, String) {
        let req = Request::get(path).body(Body::empty()).expect("request");
        let (status, headers, bytes) = self.send_raw(req).await;
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (
            status,
            content_type,
            String::from_utf8(bytes).expect("utf-8"),
        )
    }

    async fn post_json(&self, path: &str, body: &Value) -> Answer {
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        self.send(req).await
    }

    async fn register(&self, serial: &str) -> Answer {
        self.post_json(
            "/api/v1/devices",
            &json!({ "serial": serial, "model": "OC-5A", "status": "at_customer", "address": "1 Main St" }),
        )
        .await
    }

    /// Commits readings of one device, each a JSON object without `seq` and `ts`:
    /// reading `i` gets seq `i + 1` and device time `t0 + i` hours.
    async fn feed(&self, serial: &str, t0: DateTime<Utc>, readings: &[Value]) {
        let sn = Serial::parse(serial).expect("valid serial");
        let payload: Vec<Value> = readings
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut r = r.clone();
                r["seq"] = json!(i + 1);
                r["ts"] = json!(rfc3339(t0 + Duration::hours(i as i64)));
                r
            })
            .collect();
        let parsed = parse_telemetry(
            &sn,
            Value::Array(payload).to_string().as_bytes(),
            Utc::now(),
            &TelemetryLimits::default(),
        );
        let readings = parsed
            .into_iter()
            .map(|r| r.expect("test readings are valid"))
            .collect();
        self.commit(IngestBatch {
            readings,
            ..Default::default()
        })
        .await;
    }

    async fn commit(&self, batch: IngestBatch) {
        let store = self.store.as_ref().expect("an app over the real store");
        store.commit_batch(batch).await.expect("commit");
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A whole second some hours ago, so readings after it are neither stale nor in the future.
fn hours_ago(h: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp() - h * 3600, 0).expect("valid time")
}

fn assert_error_shape(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["code"], json!(code), "{}", a.body);
    assert!(
        a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        a.body
    );
    assert!(
        a.body.get("details").is_some(),
        "details is always present: {}",
        a.body
    );
}

fn message(a: &Answer) -> &str {
    a.body["message"].as_str().unwrap_or_default()
}

fn seqs(items: &Value) -> Vec<u64> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["seq"].as_u64())
        .collect()
}

// ---------------------------------------------------------------------------------------
// registering devices

#[tokio::test]
async fn registering_a_device_answers_201_with_its_location_then_409() {
    let app = spawn_app().await;

    let first = app.register("OC5-000001").await;
    let again = app.register("OC5-000001").await;

    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(
        first.headers[header::LOCATION],
        "/api/v1/devices/OC5-000001"
    );
    assert_eq!(first.body["serial"], json!("OC5-000001"));
    assert_eq!(
        first.body["criticality"],
        json!("high"),
        "the model's default criticality"
    );
    assert_error_shape(&again, StatusCode::CONFLICT, "conflict");
    assert!(message(&again).contains("OC5-000001"), "{}", again.body);
}

#[tokio::test]
async fn registering_a_model_outside_the_catalog_is_422_listing_the_known_models() {
    let app = spawn_app().await;

    let a = app
        .post_json(
            "/api/v1/devices",
            &json!({ "serial": "X-1", "model": "TOASTER-9" }),
        )
        .await;

    assert_error_shape(&a, StatusCode::UNPROCESSABLE_ENTITY, "unknown_model");
    assert!(
        message(&a).contains("TOASTER-9") && message(&a).contains("OC-5A"),
        "{}",
        a.body
    );
    assert_eq!(
        app.get("/api/v1/devices/X-1").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_unknown_json_field_is_refused_naming_the_field() {
    let app = spawn_app().await;

    let a = app
        .post_json(
            "/api/v1/devices",
            &json!({ "serial": "X-1", "model": "OC-5A", "colour": "red" }),
        )
        .await;

    assert!(a.status.is_client_error(), "{}", a.body);
    assert_eq!(a.body["code"], json!("invalid_body"));
    assert!(message(&a).contains("colour"), "{}", a.body);
}

#[tokio::test]
async fn bodies_that_are_not_json_get_actionable_errors() {
    let app = spawn_app().await;

    let no_type = app
        .send(
            Request::post("/api/v1/devices")
                .body(Body::from("{}"))
                .expect("request"),
        )
        .await;
    let broken = app
        .send(
            Request::post("/api/v1/devices")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"serial\":"))
                .expect("request"),
        )
        .await;
    let bad_serial = app
        .post_json(
            "/api/v1/devices",
            &json!({ "serial": "a/b", "model": "OC-5A" }),
        )
        .await;

    assert_error_shape(
        &no_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert!(message(&no_type).contains("application/json"));
    assert_error_shape(&broken, StatusCode::BAD_REQUEST, "malformed_body");
    assert_error_shape(
        &bad_serial,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert!(
        message(&bad_serial).contains("serial"),
        "{}",
        bad_serial.body
    );
}

// ---------------------------------------------------------------------------------------
// one device

#[tokio::test]
async fn device_detail_shows_latest_state_open_alarms_and_orders_after_readings() {
    let app = spawn_app().await;
    app.register("OC5-000002").await;

    app.feed(
        "OC5-000002",
        hours_ago(3),
        &[
            json!({ "runtime_hours": 100.0, "filter_life_pct": 40.0, "alarms": [] }),
            json!({ "runtime_hours": 101.0, "filter_life_pct": 12.0, "alarms": ["E101"] }),
        ],
    )
    .await;
    let d = app.get("/api/v1/devices/OC5-000002").await;

    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(d.body["status"], json!("at_customer"));
    assert_eq!(d.body["latest"]["seq"], json!(2));
    assert_eq!(d.body["latest"]["values"]["filter_life_pct"], json!(12.0));
    assert_eq!(
        d.body["open_alarms"][0]["code"],
        json!("E101"),
        "{}",
        d.body
    );
    assert_eq!(
        d.body["open_orders"][0]["cause"],
        json!("filter_depletion"),
        "{}",
        d.body
    );
}

#[tokio::test]
async fn an_unregistered_device_is_404_and_a_bad_serial_400() {
    let app = spawn_app().await;

    let missing = app.get("/api/v1/devices/OC5-1").await;
    let readings = app.get("/api/v1/devices/OC5-1/readings").await;
    let bad = app.get("/api/v1/devices/-dash-first").await;

    assert_error_shape(&missing, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(message(&missing), "device OC5-1 is not registered");
    assert_error_shape(&readings, StatusCode::NOT_FOUND, "not_found");
    assert_error_shape(&bad, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert!(
        message(&bad).contains("must start with a letter or digit"),
        "{}",
        bad.body
    );
    assert_eq!(bad.body["details"]["parameter"], json!("serial"));
}

#[tokio::test]
async fn readings_are_filtered_by_time_range() {
    let app = spawn_app().await;
    let t0 = hours_ago(20);
    let ten: Vec<Value> = (0..10)
        .map(|i| json!({ "runtime_hours": 100.0 + f64::from(i) }))
        .collect();
    app.feed("OC5-000003", t0, &ten).await;

    let from = rfc3339(t0 + Duration::hours(2));
    let to = rfc3339(t0 + Duration::hours(5));
    let all = app.get("/api/v1/devices/OC5-000003/readings").await;
    let window = app
        .get(&format!(
            "/api/v1/devices/OC5-000003/readings?from={from}&to={to}"
        ))
        .await;
    let first_two = app.get("/api/v1/devices/OC5-000003/readings?limit=2").await;

    assert_eq!(seqs(&all.body["items"]), (1..=10).collect::<Vec<_>>());
    assert_eq!(
        seqs(&window.body["items"]),
        [3, 4, 5],
        "from inclusive, to exclusive: {}",
        window.body
    );
    assert_eq!(seqs(&first_two.body["items"]), [1, 2]);
    assert_eq!(
        first_two.body["next"],
        json!(format!(
            "{}_2",
            (t0 + Duration::hours(1)).timestamp_millis()
        ))
    );
    assert_eq!(all.body["next"], Value::Null, "a short page is the last");
}

#[tokio::test]
async fn bad_or_reversed_times_are_400_naming_the_parameter_and_format() {
    let app = spawn_app().await;
    app.feed(
        "OC5-000004",
        hours_ago(2),
        &[json!({ "runtime_hours": 1.0 })],
    )
    .await;

    let bad = app
        .get("/api/v1/devices/OC5-000004/readings?from=yesterday")
        .await;
    let reversed = app
        .get(
            "/api/v1/devices/OC5-000004/readings?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        )
        .await;

    assert_error_shape(&bad, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert_eq!(bad.body["details"]["parameter"], json!("from"));
    assert!(
        message(&bad).contains("from") && message(&bad).contains("RFC 3339"),
        "{}",
        bad.body
    );
    assert_error_shape(&reversed, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert!(message(&reversed).contains("after"), "{}", reversed.body);
}

#[tokio::test]
async fn rollups_cover_the_last_day_by_default_and_alarms_list_episodes() {
    let app = spawn_app().await;
    app.feed(
        "OC5-000005",
        hours_ago(2),
        &[
            json!({ "flow_lpm": 2.0, "alarms": ["E101"] }),
            json!({ "flow_lpm": 4.0, "alarms": [] }),
        ],
    )
    .await;

    let rollups = app.get("/api/v1/devices/OC5-000005/rollups").await;
    let old = app
        .get("/api/v1/devices/OC5-000005/rollups?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z")
        .await;
    let alarms = app.get("/api/v1/devices/OC5-000005/alarms").await;

    let flow: Vec<&Value> = rollups
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["field"] == json!("flow_lpm"))
        .collect();
    assert_eq!(flow.len(), 2, "one rollup per hour: {}", rollups.body);
    assert_eq!(old.body, json!([]));
    assert_eq!(alarms.status, StatusCode::OK);
    assert_eq!(
        alarms.body["items"][0]["code"],
        json!("E101"),
        "{}",
        alarms.body
    );
    assert_eq!(alarms.body["next"], Value::Null, "{}", alarms.body);
    assert!(
        alarms.body["items"][0]["ended_at"].is_string(),
        "cleared by the second reading: {}",
        alarms.body
    );
}

#[tokio::test]
async fn rollups_of_one_field_leave_the_others_out() {
    let app = spawn_app().await;
    app.feed(
        "OC5-000008",
        hours_ago(2),
        &[
            json!({ "flow_lpm": 2.0, "o2_purity_pct": 93.0 }),
            json!({ "flow_lpm": 4.0, "o2_purity_pct": 94.0 }),
        ],
    )
    .await;
    let fields = |a: &Answer| -> Vec<String> {
        a.body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["field"].as_str().map(str::to_owned))
            .collect()
    };

    let all = app.get("/api/v1/devices/OC5-000008/rollups").await;
    let flow = app
        .get("/api/v1/devices/OC5-000008/rollups?field=flow_lpm")
        .await;
    let none = app
        .get("/api/v1/devices/OC5-000008/rollups?field=not_reported")
        .await;
    let bad = app
        .get("/api/v1/devices/OC5-000008/rollups?field=Flow")
        .await;

    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert!(
        fields(&all).contains(&"o2_purity_pct".to_owned()),
        "{}",
        all.body
    );
    assert_eq!(flow.status, StatusCode::OK, "{}", flow.body);
    assert_eq!(
        fields(&flow),
        ["flow_lpm", "flow_lpm"],
        "one per hour: {}",
        flow.body
    );
    let all_flow: Vec<&Value> = all
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["field"] == json!("flow_lpm"))
        .collect();
    assert_eq!(
        flow.body.as_array().map(|a| a.iter().collect::<Vec<_>>()),
        Some(all_flow)
    );
    assert_eq!(none.body, json!([]), "{}", none.body);
    assert_error_shape(&bad, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert!(message(&bad).contains("field name"), "{}", bad.body);
}

// ---------------------------------------------------------------------------------------
// lists

/// `(code, hours after t0 it started, still open)` of each episode of a page.
fn episodes(page: &Value) -> Vec<(String, i64, bool)> {
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let started = e["started_at"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .expect("started_at");
            (
                e["code"].as_str().unwrap_or_default().to_owned(),
                started.timestamp(),
                e["ended_at"].is_null(),
            )
        })
        .collect()
}

#[tokio::test]
async fn alarms_page_newest_first_and_filter_by_state_severity_code_and_start() {
    let app = spawn_app().await;
    // an OC-5A, so E101 has the catalog's severity (W9 is not in the catalog: none)
    assert_eq!(app.register("OC5-000070").await.status, StatusCode::CREATED);
    let t0 = hours_ago(10);
    app.feed(
        "OC5-000070",
        t0,
        &[
            json!({ "alarms": ["E101"] }),
            json!({ "alarms": [] }),
            json!({ "alarms": ["E101"] }),
            json!({ "alarms": ["W9"] }),
            json!({ "alarms": ["W9", "E101"] }),
        ],
    )
    .await;
    let at = |h: i64| (t0 + Duration::hours(h)).timestamp();
    let path = "/api/v1/devices/OC5-000070/alarms";

    let all = app.get(path).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let newest_first = vec![
        ("E101".to_owned(), at(4), true),
        ("W9".to_owned(), at(3), true),
        ("E101".to_owned(), at(2), false),
        ("E101".to_owned(), at(0), false),
    ];
    assert_eq!(episodes(&all.body), newest_first, "{}", all.body);
    assert_eq!(all.body["next"], Value::Null);

    // pages of two follow their cursor: none lost, none twice, the last says so
    let mut paged = Vec::new();
    let mut next = format!("{path}?limit=2");
    for _ in 0..3 {
        let page = app.get(&next).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        paged.extend(episodes(&page.body));
        match page.body["next"].as_str() {
            Some(cursor) => next = format!("{path}?limit=2&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, newest_first);

    let client = &app;
    let filtered = |query: &str| {
        let q = format!("{path}?{query}");
        async move {
            let a = client.get(&q).await;
            assert_eq!(a.status, StatusCode::OK, "{q}: {}", a.body);
            episodes(&a.body)
        }
    };
    assert_eq!(filtered("active=true").await, newest_first[..2]);
    assert_eq!(filtered("active=false").await, newest_first[2..]);
    let critical = filtered("severity=critical").await;
    assert_eq!(critical.len(), 3, "{critical:?}");
    assert!(critical.iter().all(|e| e.0 == "E101"), "{critical:?}");
    assert_eq!(filtered("code=w9").await, newest_first[1..2]);
    let from = rfc3339(t0 + Duration::hours(2));
    let to = rfc3339(t0 + Duration::hours(4));
    assert_eq!(
        filtered(&format!("from={from}&to={to}")).await,
        newest_first[1..3]
    );
    assert_eq!(
        filtered("active=false&code=E101&limit=1").await,
        newest_first[2..3]
    );

    let reversed = format!("from={to}&to={from}");
    for (query, parameter) in [
        ("active=yes", "active"),
        ("severity=loud", "severity"),
        ("code=a%20b", "code"),
        ("after=12", "after"),
        ("limit=0", "limit"),
        (reversed.as_str(), "from"),
    ] {
        let bad = app.get(&format!("{path}?{query}")).await;
        assert_error_shape(&bad, StatusCode::BAD_REQUEST, "invalid_parameter");
        assert!(message(&bad).contains(parameter), "{query}: {}", bad.body);
    }
    let unknown = app.get("/api/v1/devices/OC5-NOBODY/alarms").await;
    assert_error_shape(&unknown, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn devices_are_paginated_with_next_over_250_devices() {
    let app = spawn_app().await;
    let now = Utc::now();
    let readings = (0..250)
        .flat_map(|i| {
            let sn = Serial::parse(&format!("OC5-{i:06}")).expect("valid serial");
            let payload =
                json!({ "seq": 1, "ts": rfc3339(now - Duration::minutes(1)), "model": "OC-5A" });
            parse_telemetry(
                &sn,
                payload.to_string().as_bytes(),
                now,
                &TelemetryLimits::default(),
            )
        })
        .map(|r| r.expect("valid reading"))
        .collect();
    app.commit(IngestBatch {
        readings,
        ..Default::default()
    })
    .await;

    let mut serials = Vec::new();
    let mut pages = 0;
    let mut path = "/api/v1/devices?limit=100".to_owned();
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        let items = page.body["items"].as_array().expect("items");
        assert!(items.len() <= 100);
        serials.extend(
            items
                .iter()
                .filter_map(|d| d["serial"].as_str().map(str::to_owned)),
        );
        match page.body["next"].as_str() {
            Some(next) => path = format!("/api/v1/devices?limit=100&after={next}"),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }

    assert_eq!(pages, 3);
    assert_eq!(serials.len(), 250);
    let mut sorted = serials.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, serials, "in serial order, none twice");
    let filtered = app
        .get("/api/v1/devices?status=unassigned&model=OC-5A&limit=1")
        .await;
    assert_eq!(
        filtered.body["items"][0]["serial"],
        json!("OC5-000000"),
        "{}",
        filtered.body
    );
}

#[tokio::test]
async fn list_parameters_are_checked_and_named() {
    let app = spawn_app().await;

    let over = app.get("/api/v1/devices?limit=5000").await;
    let typo = app.get("/api/v1/devices?stauts=at_customer").await;
    let status = app.get("/api/v1/devices?status=lost").await;
    let cursor = app.get("/api/v1/orders?after=abc").await;

    assert_error_shape(&over, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert_eq!(over.body["details"]["parameter"], json!("limit"));
    assert!(message(&over).contains("1000"), "{}", over.body);
    assert_error_shape(&typo, StatusCode::BAD_REQUEST, "invalid_query");
    assert!(message(&typo).contains("stauts"), "{}", typo.body);
    assert_error_shape(&status, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert!(
        message(&status).contains("at_customer"),
        "lists the allowed values: {}",
        status.body
    );
    assert_eq!(cursor.body["details"]["parameter"], json!("after"));
}

#[tokio::test]
async fn orders_are_filtered_by_status_and_fetched_by_id() {
    let app = spawn_app().await;
    app.feed(
        "OC5-000006",
        hours_ago(1),
        &[json!({ "filter_life_pct": 10.0 })],
    )
    .await;
    app.feed(
        "OC5-000007",
        hours_ago(1),
        &[json!({ "filter_life_pct": 90.0 })],
    )
    .await;

    let open = app.get("/api/v1/orders?status=open").await;
    let active = app.get("/api/v1/orders?status=active&serial=OC5-000006&cause=filter_depletion&kind=maintenance&priority=p3").await;
    let completed = app.get("/api/v1/orders?status=completed").await;
    let all = app.get("/api/v1/orders").await;
    let bad = app.get("/api/v1/orders?status=done").await;

    assert_eq!(open.status, StatusCode::OK, "{}", open.body);
    assert_eq!(
        open.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        open.body
    );
    assert_eq!(open.body["items"][0]["serial"], json!("OC5-000006"));
    assert_eq!(open.body["next"], Value::Null);
    assert_eq!(
        active.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        active.body
    );
    assert_eq!(completed.body["items"], json!([]));
    assert_eq!(
        all.body["items"].as_array().map(Vec::len),
        Some(1),
        "default: every status"
    );
    assert_error_shape(&bad, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert!(message(&bad).contains("active"), "{}", bad.body);

    let id = open.body["items"][0]["id"].as_i64().expect("order id");
    let one = app.get(&format!("/api/v1/orders/{id}")).await;
    let missing = app.get("/api/v1/orders/999999").await;
    let not_a_number = app.get("/api/v1/orders/first").await;
    assert_eq!(one.body["cause"], json!("filter_depletion"));
    assert_eq!(one.body["evidence"]["value"], json!(10.0));
    assert_error_shape(&missing, StatusCode::NOT_FOUND, "not_found");
    assert_error_shape(&not_a_number, StatusCode::BAD_REQUEST, "invalid_parameter");
}

#[tokio::test]
async fn orders_carry_their_device_in_the_list_and_alone_and_say_so_in_the_openapi_document() {
    let app = spawn_app().await;
    let registered = app
        .post_json(
            "/api/v1/devices",
            &json!({ "serial": "OC5-000060", "model": "OC-5A", "status": "at_customer",
                     "criticality": "life_supporting", "region": "north", "address": "1 Main St" }),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    app.feed(
        "OC5-000060",
        hours_ago(1),
        &[json!({ "filter_life_pct": 10.0, "fw": "3.1.0" })],
    )
    .await;

    let listed = app.get("/api/v1/orders?serial=OC5-000060").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let id = listed.body["items"][0]["id"].as_i64().expect("order id");
    let one = app.get(&format!("/api/v1/orders/{id}")).await;
    let device = json!({
        "model": "OC-5A",
        "kind": "oxygen_concentrator",
        "region": "north",
        "address": "1 Main St",
        "criticality": "life_supporting",
        "firmware": "3.1.0",
    });
    assert_eq!(listed.body["items"][0]["device"], device, "{}", listed.body);
    assert_eq!(one.body["device"], device, "{}", one.body);

    let doc = app.get("/api/openapi.json").await;
    let schemas = &doc.body["components"]["schemas"];
    let on_order = &schemas["Order"]["properties"]["device"];
    assert!(on_order.is_object(), "{on_order}");
    assert!(on_order.to_string().contains("OrderDevice"), "{on_order}");
    let properties = schemas["OrderDevice"]["properties"]
        .as_object()
        .expect("OrderDevice has properties");
    let mut names: Vec<&str> = properties.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "address",
            "criticality",
            "firmware",
            "kind",
            "model",
            "region"
        ]
    );
}

#[tokio::test]
async fn dead_letters_are_listed_and_filtered_by_reason() {
    let app = spawn_app().await;
    let letter = |reason: RejectReason, payload: &str| NewDeadLetter {
        received_at: Utc::now(),
        topic: "fleetpulse/v1/devices/OC5-000008/telemetry".into(),
        client_id: "OC5-000008".into(),
        reason,
        detail: format!("test: {reason}"),
        payload: payload.as_bytes().to_vec(),
    };
    let dead_letters = vec![
        letter(RejectReason::MalformedJson, "this is not json"),
        letter(
            RejectReason::OutOfRange,
            r#"{"seq":1,"filter_life_pct":400}"#,
        ),
    ];
    app.commit(IngestBatch {
        dead_letters,
        ..Default::default()
    })
    .await;

    let all = app.get("/api/v1/dead-letters").await;
    let malformed = app.get("/api/v1/dead-letters?reason=malformed_json").await;
    let first = app.get("/api/v1/dead-letters?limit=1").await;
    let bad = app.get("/api/v1/dead-letters?reason=gibberish").await;

    assert_eq!(
        all.body["items"].as_array().map(Vec::len),
        Some(2),
        "{}",
        all.body
    );
    assert_eq!(malformed.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        malformed.body["items"][0]["payload"],
        json!("this is not json")
    );
    let next = first.body["next"].as_str().expect("a second page");
    let second = app
        .get(&format!("/api/v1/dead-letters?limit=1&after={next}"))
        .await;
    assert_eq!(
        second.body["items"][0]["reason"],
        json!("out_of_range"),
        "{}",
        second.body
    );
    assert_eq!(bad.body["details"]["parameter"], json!("reason"));
}

#[tokio::test]
async fn the_catalog_lists_its_models() {
    let app = spawn_app().await;

    let a = app.get("/api/v1/catalog/models").await;

    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body[0]["id"], json!("OC-5A"));
    assert_eq!(
        a.body[0]["alarm"][0]["code"],
        json!("E101"),
        "keys as in catalog.toml"
    );
    assert_eq!(
        a.body[0]["components"],
        json!([
            {
                "id": "filter", "name": "Inlet filter", "ages_on": "runtime_hours",
                "life_field": "filter_life_pct", "order_at_pct": 15.0,
                "rated_life_hours": 2000.0, "skill": "basic_maintenance",
                "labour_minutes": 15, "parts": [{ "number": "F-1", "name": "Filter", "qty": 1 }],
                "failure_modes": [], "declared_as": "consumable"
            },
            {
                "id": "compressor", "name": "compressor", "ages_on": "runtime_hours",
                "life_field": null, "order_at_pct": null, "rated_life_hours": null,
                "skill": null, "labour_minutes": null, "parts": [],
                "failure_modes": [
                    { "id": "compressor", "codes": ["E101"], "warning_horizon_days": null }
                ],
                "declared_as": "failure_alarm"
            }
        ]),
        "the resolved components: the consumable and the failure alarm's implicit component"
    );
    assert!(
        a.body[0].get("component").is_none(),
        "the components as written are not repeated"
    );
}

// ---------------------------------------------------------------------------------------
// health and the edges of the router

#[tokio::test]
async fn health_shows_store_counts_and_ingest_counters() {
    let app = spawn_app().await;
    app.feed(
        "OC5-000009",
        hours_ago(1),
        &[
            json!({ "runtime_hours": 1.0 }),
            json!({ "runtime_hours": 2.0 }),
        ],
    )
    .await;

    let h = app.get("/health").await;

    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.body["status"], json!("ok"));
    assert_eq!(h.body["store"]["readings"], json!(2));
    assert_eq!(h.body["store"]["devices"], json!(1));
    assert_eq!(h.body["ingest"], FakeIngest.snapshot());
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_ingest_counters_and_store_gauges() {
    let app = spawn_app().await;
    app.feed(
        "OC5-000010",
        hours_ago(1),
        &[json!({ "runtime_hours": 1.0 })],
    )
    .await;

    let (status, content_type, text) = app.get_text("/metrics").await;

    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    for line in [
        "fleetpulse_ingest_received_messages_total 7",
        "# TYPE fleetpulse_store_readings gauge",
        "fleetpulse_store_readings 1",
        "fleetpulse_store_devices 1",
        "fleetpulse_store_up 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn metrics_still_answer_when_the_store_fails() {
    use fleetpulse_domain::store::StoreError;
    let app = broken_app(|| StoreError::Unavailable("database is locked".into())).await;

    let (status, _, text) = app.get_text("/metrics").await;

    assert_eq!(status, StatusCode::OK);
    assert!(text.lines().any(|l| l == "fleetpulse_store_up 0"), "{text}");
    assert!(
        text.contains("fleetpulse_ingest_received_messages_total 7"),
        "{text}"
    );
    assert!(!text.contains("fleetpulse_store_readings "), "{text}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;

    let route = app.get("/api/v2/devices").await;
    let method = app
        .send(
            Request::builder()
                .method(Method::DELETE)
                .uri("/api/v1/devices")
                .body(Body::empty())
                .expect("request"),
        )
        .await;

    assert_error_shape(&route, StatusCode::NOT_FOUND, "not_found");
    assert!(
        message(&route).contains("/api/v2/devices"),
        "{}",
        route.body
    );
    assert_error_shape(
        &method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn serve_answers_over_tcp_and_stops_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fleetpulse_api::serve(listener, app.router.clone(), async {
        let _ = stopped.await;
    }));

    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    conn.read_to_string(&mut response).await.expect("read");
    let _ = stop.send(());
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "serve returns after shutdown: {result:?}"
    );
}

// ---------------------------------------------------------------------------------------
// a store that fails

mod broken {
    use chrono::{DateTime, Utc};
    use fleetpulse_domain::store::*;
    use fleetpulse_domain::{AlarmEpisode, Order, Serial};

    /// A store whose every call fails with the error `fail()` makes.
    pub struct BrokenStore(pub fn() -> StoreError);

    #[async_trait::async_trait]
    impl Store for BrokenStore {
        async fn commit_batch(&self, _: IngestBatch) -> Result<CommitReport, StoreError> {
            Err(self.0())
        }
        async fn register_device(&self, _: NewDevice) -> Result<Device, StoreError> {
            Err(self.0())
        }
        async fn device(&self, _: &Serial) -> Result<Option<DeviceDetail>, StoreError> {
            Err(self.0())
        }
        async fn list_devices(&self, _: DeviceQuery) -> Result<Page<DeviceSummary>, StoreError> {
            Err(self.0())
        }
        async fn readings(&self, _: ReadingQuery) -> Result<Page<StoredReading>, StoreError> {
            Err(self.0())
        }
        async fn rollups(
            &self,
            _: &Serial,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> Result<Vec<Rollup>, StoreError> {
            Err(self.0())
        }
        async fn alarm_episodes(
            &self,
            _: fleetpulse_domain::store::AlarmQuery,
        ) -> Result<Page<AlarmEpisode>, StoreError> {
            Err(self.0())
        }
        async fn list_orders(&self, _: OrderQuery) -> Result<Page<Order>, StoreError> {
            Err(self.0())
        }
        async fn order(&self, _: i64) -> Result<Option<Order>, StoreError> {
            Err(self.0())
        }
        async fn dead_letters(&self, _: DeadLetterQuery) -> Result<Page<DeadLetter>, StoreError> {
            Err(self.0())
        }
        async fn delete_readings_before(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
            Err(self.0())
        }
        async fn mark_all_offline(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
            Err(self.0())
        }
        async fn stats(&self) -> Result<StoreStats, StoreError> {
            Err(self.0())
        }
        async fn fleet_overview(
            &self,
            _: DateTime<Utc>,
            _: chrono::Duration,
        ) -> Result<FleetOverview, StoreError> {
            Err(self.0())
        }
        async fn order_counts_by_day(
            &self,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> Result<Vec<DayCount>, StoreError> {
            Err(self.0())
        }
    }
}

async fn broken_app(fail: fn() -> fleetpulse_domain::store::StoreError) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = Arc::new(Catalog::from_toml_str(CATALOG).expect("test catalog is valid"));
    let store: Arc<dyn Store> = Arc::new(broken::BrokenStore(fail));
    let dispatch = SqliteStore::open(
        &dir.path().join("fleetpulse.db"),
        StoreOptions {
            clock: Default::default(),
            catalog: catalog.clone(),
            rules: Arc::new(FilterRule),
            unknown_device: UnknownDevicePolicy::AutoRegister,
            durability: Durability::Full,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await
    .expect("store opens");
    let dispatch = Arc::new(dispatch);
    let router = fleetpulse_api::router(AppState {
        store,
        catalog,
        ingest: Arc::new(FakeIngest),
        predictions: dispatch.clone(),
        predictor: Arc::new(EmptyRuns(dispatch.clone())),
        webhooks: dispatch.clone(),
        reliability: dispatch.clone(),
        dispatch,
        policy: policy(),
        auth: AuthMode::Disabled,
        streams: Default::default(),
        clock: Default::default(),
    });
    TestApp {
        router,
        store: None,
        _dir: dir,
    }
}

#[tokio::test]
async fn health_is_503_degraded_with_the_same_shape_when_the_store_fails() {
    use fleetpulse_domain::store::StoreError;
    let app = broken_app(|| StoreError::Unavailable("database is locked".into())).await;

    let h = app.get("/health").await;

    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.body["status"], json!("degraded"));
    assert!(h.body["store"].is_object(), "{}", h.body);
    assert_eq!(h.body["ingest"], FakeIngest.snapshot());
}

/// Ingest counters with problems to report.
struct TroubledIngest(Vec<String>);

impl IngestStatus for TroubledIngest {
    fn snapshot(&self) -> Value {
        FakeIngest.snapshot()
    }

    fn write_prometheus(&self, out: &mut String) {
        FakeIngest.write_prometheus(out);
    }

    fn problems(&self) -> Vec<String> {
        self.0.clone()
    }
}

#[tokio::test]
async fn health_is_degraded_with_the_reason_when_ingest_is_held_or_entries_were_refused() {
    let held = "ingest journal appends fail (No space left on device)".to_owned();
    let refused = "the store refused 1 journal entry".to_owned();

    let app = spawn_app_with(
        Arc::new(TroubledIngest(vec![held.clone(), refused.clone()])),
        AuthMode::Disabled,
    )
    .await;
    let h = app.get("/health").await;
    assert_eq!(h.status, StatusCode::OK, "the API still serves");
    assert_eq!(h.body["status"], json!("degraded"));
    assert_eq!(h.body["reasons"], json!([held, refused]));
    assert_eq!(h.body["store"]["readings"], json!(0));

    let h = spawn_app().await.get("/health").await;
    assert_eq!(
        (h.status, &h.body["status"], &h.body["reasons"]),
        (StatusCode::OK, &json!("ok"), &json!([]))
    );
}

#[tokio::test]
async fn server_faults_answer_a_vague_message() {
    use fleetpulse_domain::store::StoreError;
    let app = broken_app(|| StoreError::Internal("page 7 of readings is corrupt".into())).await;

    let a = app.get("/api/v1/devices").await;

    assert_error_shape(&a, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert_eq!(message(&a), "internal error");
    assert!(!a.body.to_string().contains("corrupt"));
}

// ---------------------------------------------------------------------------------------
// the contract is exact: readings page, `If-Match` compares strongly, `Bearer` in any
// case, the delivery log pages, `at_customer` needs an address everywhere

/// Commits `n` readings of one device, three to each whole second of device time (so
/// pages must order ties by seq), seqs 1 to `n`.
async fn feed_many(app: &TestApp, serial: &str, n: u64) {
    let sn = Serial::parse(serial).expect("valid serial");
    let t0 = hours_ago(2);
    let now = Utc::now();
    let readings = (0..n)
        .flat_map(|i| {
            let ts = t0 + Duration::seconds(i64::try_from(i / 3).expect("small"));
            let payload = json!({ "seq": i + 1, "ts": rfc3339(ts), "runtime_hours": i });
            parse_telemetry(
                &sn,
                payload.to_string().as_bytes(),
                now,
                &TelemetryLimits::default(),
            )
        })
        .map(|r| r.expect("valid reading"))
        .collect();
    app.commit(IngestBatch {
        readings,
        ..Default::default()
    })
    .await;
}

/// Every page of a list from `first` on, following `next` as `after`.
async fn every_page(app: &TestApp, first: &str) -> Vec<Answer> {
    let mut pages = Vec::new();
    let mut path = first.to_owned();
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        let next = page.body["next"].as_str().map(str::to_owned);
        pages.push(page);
        match next {
            Some(next) => path = format!("{first}&after={next}"),
            None => return pages,
        }
        assert!(pages.len() < 100, "pagination does not end");
    }
}

#[tokio::test]
async fn readings_page_through_1500_with_the_cursor_none_lost_none_twice() {
    let app = spawn_app().await;
    feed_many(&app, "OC5-000020", 1500).await;

    let by_100 = every_page(&app, "/api/v1/devices/OC5-000020/readings?limit=100").await;
    let by_1000 = every_page(&app, "/api/v1/devices/OC5-000020/readings?limit=1000").await;
    let at_once = app
        .get("/api/v1/devices/OC5-000020/readings?limit=10000")
        .await;
    let over = app
        .get("/api/v1/devices/OC5-000020/readings?limit=10001")
        .await;
    let bad_cursor = app
        .get("/api/v1/devices/OC5-000020/readings?after=42")
        .await;

    let all: Vec<u64> = (1..=1500).collect();
    for pages in [&by_100, &by_1000] {
        let read: Vec<u64> = pages.iter().flat_map(|p| seqs(&p.body["items"])).collect();
        assert_eq!(read, all, "every reading once, in order");
    }
    // a full last page still has a cursor; the page after it is empty and ends the list
    assert_eq!(by_100.len(), 16);
    assert_eq!(by_100[15].body["items"], json!([]));
    assert_eq!(
        by_1000
            .iter()
            .map(|p| p.body["items"].as_array().map_or(0, Vec::len))
            .collect::<Vec<_>>(),
        [1000, 500]
    );
    assert_eq!(seqs(&at_once.body["items"]), all, "limit=10000 is honoured");
    assert_eq!(at_once.body["next"], Value::Null);
    assert_error_shape(&over, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert_eq!(over.body["details"]["parameter"], json!("limit"));
    assert!(
        message(&over).contains("10000") && message(&over).contains("after"),
        "{}",
        over.body
    );
    assert_error_shape(&bad_cursor, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert_eq!(bad_cursor.body["details"]["parameter"], json!("after"));
}

/// An open order (version 1) raised by a low filter reading.
async fn open_order(app: &TestApp, serial: &str) -> i64 {
    app.feed(serial, hours_ago(1), &[json!({ "filter_life_pct": 10.0 })])
        .await;
    let list = app.get(&format!("/api/v1/orders?serial={serial}")).await;
    list.body["items"][0]["id"]
        .as_i64()
        .expect("an order was raised")
}

impl TestApp {
    async fn post_if_match(&self, path: &str, if_match: &str) -> Answer {
        let req = Request::post(path)
            .header(header::IF_MATCH, if_match)
            .body(Body::empty())
            .expect("request");
        self.send(req).await
    }

    async fn post_if_match_json(&self, path: &str, if_match: &str, body: &Value) -> Answer {
        let req = Request::post(path)
            .header(header::IF_MATCH, if_match)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        self.send(req).await
    }
}

#[tokio::test]
async fn if_match_compares_strongly_and_star_matches_an_existing_order() {
    let app = spawn_app().await;
    let id = open_order(&app, "OC5-000021").await;
    let ack = format!("/api/v1/orders/{id}/acknowledge");
    let cancel = format!("/api/v1/orders/{id}/cancel");

    let weak = app.post_if_match(&ack, "W/\"1\"").await;
    let leading_zero = app.post_if_match(&ack, "\"01\"").await;
    let unquoted = app.post_if_match(&ack, "1").await;
    let missing_order = app
        .post_if_match("/api/v1/orders/999999/acknowledge", "*")
        .await;
    let list = app.post_if_match(&ack, "W/\"1\", \"7\", \"1\"").await;

    for refused in [&weak, &leading_zero] {
        assert_error_shape(refused, StatusCode::PRECONDITION_FAILED, "version_mismatch");
        assert_eq!(refused.body["details"]["current_version"], json!(1));
    }
    assert!(message(&weak).contains("weak"), "{}", weak.body);
    assert_error_shape(&unquoted, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert_eq!(unquoted.body["details"]["parameter"], json!("If-Match"));
    assert_error_shape(&missing_order, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        list.status,
        StatusCode::OK,
        "a list matches when one strong tag does: {}",
        list.body
    );
    assert_eq!(list.body["status"], json!("acknowledged"));
    assert_eq!(
        list.headers.get(header::ETAG).and_then(|v| v.to_str().ok()),
        Some("\"2\"")
    );

    // `*`: whatever the version is now
    let req = Request::post(&cancel)
        .header(header::IF_MATCH, "*")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "reason": "duplicate" }).to_string()))
        .expect("request");
    let star = app.send(req).await;
    assert_eq!(star.status, StatusCode::OK, "{}", star.body);
    assert_eq!(star.body["status"], json!("cancelled"));
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app_with(Arc::new(FakeIngest), AuthMode::Required).await;
    let store = app.store.as_ref().expect("real store");
    let (token, digest) = fleetpulse_api::auth::new_token().expect("token");
    fleetpulse_domain::dispatch::Dispatch::create_api_token(
        store.as_ref(),
        "reader",
        fleetpulse_domain::dispatch::Role::Dispatcher,
        digest,
        fleetpulse_domain::dispatch::Actor("test".into()),
    )
    .await
    .expect("token stored");

    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let req = Request::get("/api/v1/orders")
            .header(header::AUTHORIZATION, format!("{scheme} {token}"))
            .body(Body::empty())
            .expect("request");
        let a = app.send(req).await;
        assert_eq!(a.status, StatusCode::OK, "{scheme}: {}", a.body);
    }
    let req = Request::get("/api/v1/orders")
        .header(header::AUTHORIZATION, format!("Basic {token}"))
        .body(Body::empty())
        .expect("request");
    assert_error_shape(
        &app.send(req).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}

#[tokio::test]
async fn the_webhook_delivery_log_pages_with_after_newest_first() {
    use fleetpulse_domain::webhook::Webhooks;
    let app = spawn_app().await;
    let hook = app
        .post_json(
            "/api/v1/webhooks",
            &json!({ "name": "fsm", "url": "http://127.0.0.1:9/hook" }),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.body);
    let hook = hook.body["id"].as_i64().expect("webhook id");
    for i in 0..5 {
        open_order(&app, &format!("OC5-00003{i}")).await;
    }
    let store = app.store.as_ref().expect("real store");
    let queued = store.fan_out(100, Utc::now()).await.expect("fan out");
    assert_eq!(queued, 5, "one created event per order");

    let pages = every_page(&app, &format!("/api/v1/webhooks/{hook}/deliveries?limit=2")).await;
    let typo = app
        .get(&format!("/api/v1/webhooks/{hook}/deliveries?after=-1"))
        .await;

    let ids: Vec<i64> = pages
        .iter()
        .flat_map(|p| p.body["items"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d["id"].as_i64())
        .collect();
    assert_eq!(pages.len(), 3, "2 + 2 + 1");
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, none twice: {ids:?}"
    );
    assert_error_shape(&typo, StatusCode::BAD_REQUEST, "invalid_parameter");
}

#[tokio::test]
async fn at_customer_without_an_address_is_refused_alike_by_register_import_and_status_change() {
    let app = spawn_app().await;
    let registered = app
        .post_json(
            "/api/v1/devices",
            &json!({ "serial": "OC5-000040", "model": "OC-5A", "status": "at_customer" }),
        )
        .await;
    let req = Request::post("/api/v1/devices/import")
        .header(header::CONTENT_TYPE, "text/csv")
        .body(Body::from(
            "serial,model,status,address\nOC5-000041,OC-5A,at_customer,\nOC5-000042,OC-5A,at_customer,   \n",
        ))
        .expect("request");
    let imported = app.send(req).await;
    let in_stock = app
        .post_json(
            "/api/v1/devices",
            &json!({ "serial": "OC5-000043", "model": "OC-5A" }),
        )
        .await;
    assert_eq!(in_stock.status, StatusCode::CREATED, "{}", in_stock.body);
    let moved = app
        .post_json(
            "/api/v1/devices/OC5-000043/status",
            &json!({ "status": "at_customer" }),
        )
        .await;

    assert_error_shape(
        &registered,
        StatusCode::UNPROCESSABLE_ENTITY,
        "address_required",
    );
    assert_error_shape(&moved, StatusCode::UNPROCESSABLE_ENTITY, "address_required");
    assert_eq!(message(&registered), message(&moved));
    assert_eq!(registered.body["details"], moved.body["details"]);
    assert_eq!(imported.status, StatusCode::OK, "{}", imported.body);
    assert_eq!(imported.body["registered"], json!(0), "{}", imported.body);
    for row in imported.body["errors"].as_array().expect("errors") {
        assert_eq!(row["status"], json!(422), "{row}");
        assert_eq!(row["code"], json!("address_required"), "{row}");
        assert_eq!(row["message"], registered.body["message"], "{row}");
        assert_eq!(row["details"], registered.body["details"], "{row}");
    }
    assert_eq!(imported.body["failed"], json!(2));
    assert_eq!(
        app.get("/api/v1/devices/OC5-000040").await.status,
        StatusCode::NOT_FOUND
    );
}

/// The order completion route can put a device at a customer too (`device_status`): for
/// a device without an address it answers as the status change does, and changes nothing.
#[tokio::test]
async fn completing_an_order_with_device_status_at_customer_needs_an_address_too() {
    let app = spawn_app().await;
    let serial = "OC5-000044";
    let id = open_order(&app, serial).await;
    for (step, version) in [("acknowledge", 1), ("start", 3)] {
        if step == "start" {
            let assigned = app
                .post_if_match_json(
                    &format!("/api/v1/orders/{id}/assign"),
                    "\"2\"",
                    &json!({ "engineer": "eng-1" }),
                )
                .await;
            assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.body);
        }
        let stepped = app
            .post_if_match(
                &format!("/api/v1/orders/{id}/{step}"),
                &format!("\"{version}\""),
            )
            .await;
        assert_eq!(stepped.status, StatusCode::OK, "{step}: {}", stepped.body);
    }
    let complete = format!("/api/v1/orders/{id}/complete");
    let outcome = |status: &str| json!({ "failure_confirmed": false, "device_status": status });

    let completed = app
        .post_if_match_json(&complete, "\"4\"", &outcome("at_customer"))
        .await;
    let moved = app
        .post_json(
            &format!("/api/v1/devices/{serial}/status"),
            &json!({ "status": "at_customer" }),
        )
        .await;

    assert_error_shape(
        &completed,
        StatusCode::UNPROCESSABLE_ENTITY,
        "address_required",
    );
    assert_error_shape(&moved, StatusCode::UNPROCESSABLE_ENTITY, "address_required");
    assert_eq!(message(&completed), message(&moved));
    assert_eq!(completed.body["details"], moved.body["details"]);
    let order = app.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(
        (&order.body["status"], &order.body["version"]),
        (&json!("in_progress"), &json!(4)),
        "nothing written: {}",
        order.body
    );
    let device = app.get(&format!("/api/v1/devices/{serial}")).await;
    assert_ne!(
        device.body["status"],
        json!("at_customer"),
        "{}",
        device.body
    );
    // another status needs no address: the same step then completes
    let repaired = app
        .post_if_match_json(&complete, "\"4\"", &outcome("in_repair"))
        .await;
    assert_eq!(repaired.status, StatusCode::OK, "{}", repaired.body);
}

/// The shared look at the store wakes the streams for a revocation another process made
/// (here a second handle on the same SQLite file, as `fleetpulse token revoke` is).
#[tokio::test]
async fn the_shared_store_look_wakes_streams_for_another_process_revocation() {
    use fleetpulse_domain::dispatch::{Actor, Dispatch, Role};
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = Arc::new(Catalog::from_toml_str(CATALOG).expect("test catalog is valid"));
    let open = || async {
        Arc::new(
            SqliteStore::open(
                &dir.path().join("fleetpulse.db"),
                StoreOptions {
                    clock: Default::default(),
                    catalog: catalog.clone(),
                    rules: Arc::new(FilterRule),
                    unknown_device: UnknownDevicePolicy::AutoRegister,
                    durability: Durability::Full,
                    sink_spool: false,
                    cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
                },
            )
            .await
            .expect("store opens"),
        )
    };
    let ours = open().await;
    let theirs = open().await;
    let streams = fleetpulse_api::StreamStop::default();
    let mut revocations = streams.revocations();
    let _changes = streams.changes(); // a stream is open
    revocations.borrow_and_update();
    let watcher = streams.clone();
    let watch = tokio::spawn(async move {
        watcher
            .watch_store(ours, std::time::Duration::from_millis(20))
            .await;
    });
    // the other process revokes a token; a revocation made before the watcher took its
    // first mark cannot be told apart from the state it started with, so revoke another
    // one until a wake comes (the first normally does)
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut woken = false;
    for i in 0u8.. {
        let token = theirs
            .create_api_token("screen", Role::Planner, [i; 32], Actor("cli".into()))
            .await
            .expect("token");
        theirs
            .revoke_api_token(token.id, Actor("cli".into()))
            .await
            .expect("revoke");
        let wait = std::time::Duration::from_millis(500);
        if tokio::time::timeout(wait, revocations.changed())
            .await
            .is_ok()
        {
            woken = true;
            break;
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
    }
    assert!(
        woken,
        "no wake within 5 s of a revocation by another process"
    );
    streams.stop();
    tokio::time::timeout(std::time::Duration::from_secs(5), watch)
        .await
        .expect("the watcher ends with the streams")
        .expect("no panic");
}

impl TestApp {
    async fn post_csv(&self, path: &str, csv: &str) -> Answer {
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "text/csv")
            .body(Body::from(csv.to_owned()))
            .expect("request");
        self.send(req).await
    }
}

#[tokio::test]
async fn imported_failures_without_meter_history_report_zero_operating_hours_not_minus_zero() {
    let app = spawn_app().await;
    assert_eq!(app.register("OC5-NOEXP").await.status, StatusCode::CREATED);
    let failures = app
        .post_csv(
            "/api/v1/history/import/failures",
            "serial,at,runtime_hours,fault_code,component\n\
             OC5-NOEXP,2022-03-01T10:00:00Z,900,E101,\n",
        )
        .await;
    assert_eq!(failures.body["imported"], json!(1), "{}", failures.body);

    let period = "from=2022-01-01T00:00:00Z&to=2023-01-01T00:00:00Z";
    for stat in ["mtbf", "trend"] {
        let req = Request::get(format!("/api/v1/reliability/{stat}?{period}"))
            .body(Body::empty())
            .expect("request");
        let (status, _, bytes) = app.send_raw(req).await;
        let text = String::from_utf8(bytes).expect("utf-8");
        assert_eq!(status, StatusCode::OK, "{text}");
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["sample"]["failures"], json!(1), "{text}");
        assert_eq!(body["sample"]["exposure_rows"], json!(0), "{text}");
        let hours = body["sample"]["operating_hours"].as_f64().expect("hours");
        assert!(hours == 0.0 && hours.is_sign_positive(), "{text}");
        assert!(!text.contains("-0.0") && !text.contains(":-0"), "{text}");
    }
}

#[tokio::test]
async fn imported_history_is_read_back_per_device() {
    let app = spawn_app().await;
    assert_eq!(app.register("OC5-HIST").await.status, StatusCode::CREATED);

    let failures = app
        .post_csv(
            "/api/v1/history/import/failures",
            "serial,at,runtime_hours,fault_code,component\n\
             OC5-HIST,2022-03-01T10:00:00Z,900,E101,\n\
             OC5-HIST,2022-06-01T10:00:00Z,1500,,compressor\n\
             OC5-HIST,2022-06-01T10:00:00Z,1500,,valve\n",
        )
        .await;
    assert_eq!(failures.status, StatusCode::OK, "{}", failures.body);
    assert_eq!(failures.body["imported"], json!(2), "{}", failures.body);
    assert_eq!(
        failures.body["errors"][0]["line"],
        json!(4),
        "{}",
        failures.body
    );
    let read = app.get("/api/v1/devices/OC5-HIST/failures").await;
    let got: Vec<(Value, Value)> = read
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|f| (f["component"].clone(), f["failure_mode"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("compressor"), json!("compressor")),
            (json!("compressor"), json!("compressor")),
        ],
        "{}",
        read.body
    );

    let maintenance = app
        .post_csv(
            "/api/v1/history/import/maintenance",
            "serial,at,runtime_hours,kind,component,notes\n\
             OC5-HIST,2022-03-02T09:00:00Z,905,replacement,compressor,after the failure\n\
             OC5-HIST,2022-01-10T09:00:00Z,400,consumable,filter,\n\
             OC5-HIST,2022-04-01T09:00:00Z,1200,service,,\n",
        )
        .await;
    assert_eq!(
        maintenance.body["imported"],
        json!(3),
        "{}",
        maintenance.body
    );
    let read = app.get("/api/v1/devices/OC5-HIST/maintenance").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let got: Vec<(Value, Value, Value)> = read
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|m| {
            (
                m["kind"].clone(),
                m["component"].clone(),
                m["source"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("consumable"), json!("filter"), json!("import")),
            (json!("replacement"), json!("compressor"), json!("import")),
            (json!("service"), Value::Null, json!("import")),
        ],
        "oldest first: {}",
        read.body
    );
    assert_eq!(read.body[1]["notes"], json!("after the failure"));
    assert_eq!(
        app.get("/api/v1/devices/NOPE-1/maintenance").await.status,
        StatusCode::NOT_FOUND
    );

    // the compressor failed at 900 h, was replaced at 905 h, failed again at 1 500 h:
    // two lives from new, and the part fitted at the second failure
    let read = app.get("/api/v1/devices/OC5-HIST/components").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let compressor = read
        .body
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["component"] == json!("compressor"))
        .cloned()
        .expect("compressor");
    let lives: Vec<(Value, Value, Value)> = compressor["lives"]
        .as_array()
        .expect("lives")
        .iter()
        .map(|l| {
            (
                l["entry"].clone(),
                l["exit"].clone(),
                l["failure_mode"].clone(),
            )
        })
        .collect();
    assert_eq!(
        lives,
        vec![
            (json!(0.0), json!(900.0), json!("compressor")),
            (json!(0.0), json!(595.0), json!("compressor")),
        ],
        "{compressor}"
    );
    assert_eq!(compressor["installed_at"], json!("2022-06-01T10:00:00Z"));
    assert_eq!(compressor["age_hours"], json!(0.0), "{compressor}");
    let early = app
        .get("/api/v1/devices/OC5-HIST/components?as_of=2022-04-01T00:00:00Z")
        .await;
    let compressor = early
        .body
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["component"] == json!("compressor"))
        .cloned()
        .expect("compressor");
    assert_eq!(compressor["installed_at"], json!("2022-03-02T09:00:00Z"));
    assert_eq!(
        app.get("/api/v1/devices/OC5-HIST/components?as_of=2999-01-01T00:00:00Z")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn imported_alarm_events_are_listed_with_the_live_episodes_and_raise_no_failure() {
    let app = spawn_app().await;
    assert_eq!(app.register("OC5-ALRM").await.status, StatusCode::CREATED);
    // live: W201 from t0 to t0 + 1 h, W202 open since t0 + 2 h
    let t0 = hours_ago(4);
    app.feed(
        "OC5-ALRM",
        t0,
        &[
            json!({ "alarms": ["W201"] }),
            json!({ "alarms": [] }),
            json!({ "alarms": ["W202"] }),
        ],
    )
    .await;

    let csv = format!(
        "serial,started_at,ended_at,code,severity,runtime_hours\n\
         OC5-ALRM,2023-05-01T10:00:00Z,2023-05-01T10:05:00Z,E101,,1200\n\
         OC5-ALRM,2023-05-02T10:00:00Z,,ERROR4,,\n\
         OC5-ALRM,{},,W202,,\n\
         OC5-ALRM,{},,W201,,\n",
        rfc3339(t0 + Duration::hours(3)),
        rfc3339(t0 + Duration::minutes(30)),
    );
    let r = app.post_csv("/api/v1/history/import/alarms", &csv).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["imported"], json!(2), "{}", r.body);
    assert_eq!(r.body["errors"][0]["line"], json!(4), "{}", r.body);
    assert!(
        r.body["errors"][0]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("open live episode")),
        "{}",
        r.body
    );
    assert_eq!(r.body["same_incident"][0]["line"], json!(5), "{}", r.body);
    let again = app.post_csv("/api/v1/history/import/alarms", &csv).await;
    assert_eq!(
        (
            again.body["imported"].clone(),
            again.body["duplicates"].clone()
        ),
        (json!(0), json!(2)),
        "{}",
        again.body
    );

    let alarms = app.get("/api/v1/devices/OC5-ALRM/alarms").await;
    assert_eq!(alarms.status, StatusCode::OK, "{}", alarms.body);
    let got: Vec<(Value, Value)> = alarms.body["items"]
        .as_array()
        .expect("array")
        .iter()
        .map(|a| (a["code"].clone(), a["imported"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("W202"), json!(false)),
            (json!("W201"), json!(false)),
            (json!("ERROR4"), json!(true)),
            (json!("E101"), json!(true)),
        ],
        "newest first by start: {}",
        alarms.body
    );
    let instant = &alarms.body["items"][2];
    assert_eq!(instant["ended_at"], instant["started_at"], "{instant}");
    assert_eq!(instant["duration_s"], json!(0.0));
    assert_eq!(instant["severity"], Value::Null, "no catalog entry");
    assert_eq!(
        alarms.body["items"][3]["severity"],
        json!("critical"),
        "the catalog's"
    );
    assert_eq!(alarms.body["items"][3]["duration_s"], json!(300.0));
    assert_eq!(
        alarms.body["items"][3]["runtime_hours_at_start"],
        json!(1200.0)
    );

    let failures = app.get("/api/v1/devices/OC5-ALRM/failures").await;
    assert_eq!(
        failures.body,
        json!([]),
        "E101 counts as a failure live, not imported"
    );
    let detail = app.get("/api/v1/devices/OC5-ALRM").await;
    assert_eq!(
        detail.body["open_alarms"].as_array().map(Vec::len),
        Some(1),
        "{}",
        detail.body
    );
}

#[tokio::test]
async fn devices_come_in_with_their_commissioning_and_show_it() {
    let app = spawn_app().await;
    let a = app
        .post_csv(
            "/api/v1/history/import/devices",
            "serial,model,commissioned_at,runtime_hours_at_registration,observed_from\n\
             OC5-COM1,OC-5A,2020-02-01T00:00:00Z,3500,2022-01-01T00:00:00Z\n\
             OC5-COM2,NOPE,,,\n",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["imported"], json!(1), "{}", a.body);
    assert_eq!(a.body["errors"][0]["line"], json!(3), "{}", a.body);
    let d = app.get("/api/v1/devices/OC5-COM1").await;
    assert_eq!(d.body["commissioned_at"], json!("2020-02-01T00:00:00Z"));
    assert_eq!(d.body["runtime_hours_at_registration"], json!(3500.0));
    assert_eq!(d.body["observed_from"], json!("2022-01-01T00:00:00Z"));

    // the device import route takes the same columns
    let b = app
        .post_csv(
            "/api/v1/devices/import",
            "serial,model,commissioned_at,runtime_hours_at_registration\n\
             OC5-COM3,OC-5A,2021-03-01T00:00:00Z,10.5\n\
             OC5-COM4,OC-5A,2999-03-01T00:00:00Z,\n",
        )
        .await;
    assert_eq!(b.body["registered"], json!(1), "{}", b.body);
    assert_eq!(b.body["errors"][0]["row"], json!(3), "{}", b.body);
    let d = app.get("/api/v1/devices/OC5-COM3").await;
    assert_eq!(d.body["runtime_hours_at_registration"], json!(10.5));
}
