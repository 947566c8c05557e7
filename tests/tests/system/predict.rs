//! The analytics worker against the real binary: a device at a customer that goes
//! silent without saying goodbye gets an inspection order after the policy's delay, one
//! that disconnects gracefully does not; storm control holds predicted orders beyond its
//! hourly limit in `/api/v1/orders/queue`; predictions, models and the on-demand run
//! through the API; models trained on demand (`POST /api/v1/models/train`, `fleetpulse
//! train`) are stored with their reports and served at `/api/v1/models`; a run as of a
//! past time (`--as-of`, `?as_of=`) raises no order and a training run stores its as-of.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fleetpulse_system_tests::dispatch::Client;
use fleetpulse_system_tests::{App, eventually, reading, telemetry_topic};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const POLICY: &str = include_str!("../../../config/policy.toml");

/// `serve` with a policy whose silence delay and storm limit the test chooses, and a
/// prediction run every second.
async fn serve(dir: &Path, silent_after: &str, max_per_hour: u32) -> anyhow::Result<App> {
    let policy = POLICY
        .replace(
            "silent_after = \"24h\"",
            &format!("silent_after = \"{silent_after}\""),
        )
        .replace(
            "max_per_hour = 60",
            &format!("max_per_hour = {max_per_hour}"),
        );
    anyhow::ensure!(policy.contains(silent_after), "policy template changed");
    let path = dir.join("policy.toml");
    std::fs::write(&path, policy)?;
    let path = path.display().to_string();
    App::spawn_with_env(
        dir,
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &[
            ("FLEETPULSE_POLICY__PATH", path.as_str()),
            ("FLEETPULSE_ANALYTICS__PREDICT_INTERVAL_S", "1"),
        ],
    )
    .await
}

async fn register(admin: &Client, serial: &str, region: &str) -> anyhow::Result<()> {
    let a = admin
        .post(
            "/api/v1/devices",
            &json!({"serial": serial, "model": "OC-5A", "status": "at_customer", "region": region, "address": "1 Main St"}),
        )
        .await?;
    anyhow::ensure!(
        a.status == 201,
        "register {serial}: {} {}",
        a.status,
        a.body
    );
    Ok(())
}

/// A firmware-like client: connects with its last will on its status topic, publishes a
/// reading and waits for its PUBACK.
async fn connect_and_report(
    addr: SocketAddr,
    serial: &str,
) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let mut opts = MqttOptions::new(serial, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_last_will(LastWill::new(
        format!("fleetpulse/v1/devices/{serial}/status"),
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    let (client, mut events) = AsyncClient::new(opts, 16);
    client
        .publish(
            telemetry_topic(serial),
            QoS::AtLeastOnce,
            false,
            reading(1, json!({"runtime_hours": 12.0, "filter_life_pct": 90.0})),
        )
        .await?;
    pubacks(&mut events, 1).await?;
    Ok((client, events))
}

/// Polls the connection until `n` PUBACKs arrived (within [`WAIT`]).
async fn pubacks(events: &mut EventLoop, n: usize) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, async {
        let mut acked = 0;
        while acked < n {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await? {
                acked += 1;
            }
        }
        anyhow::Ok(())
    })
    .await?
}

/// The connection drops without DISCONNECT (power cut, network gone): the socket closes.
async fn lose_connection(addr: SocketAddr, serial: &str) -> anyhow::Result<()> {
    let (client, events) = connect_and_report(addr, serial).await?;
    drop(events);
    drop(client);
    Ok(())
}

/// Switched off normally: MQTT DISCONNECT.
async fn say_goodbye(addr: SocketAddr, serial: &str) -> anyhow::Result<()> {
    let (client, mut events) = connect_and_report(addr, serial).await?;
    client.disconnect().await?;
    tokio::time::timeout(WAIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await?;
    Ok(())
}

/// `fleetpulse <command> --data <dir>` beside the running service, with the test's
/// policy; its standard output as JSON.
async fn run_cli(dir: &Path, command: &str) -> anyhow::Result<Value> {
    let out = tokio::process::Command::new(fleetpulse_system_tests::fleetpulse_bin())
        .args([command, "--data"])
        .arg(dir)
        .env("FLEETPULSE_POLICY__PATH", dir.join("policy.toml"))
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "fleetpulse {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn orders_of(admin: &Client, query: &str) -> anyhow::Result<Vec<Value>> {
    let a = admin.get(&format!("/api/v1/orders?{query}")).await?;
    anyhow::ensure!(a.status == 200, "{}", a.body);
    Ok(a.body["items"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn predict_a_silent_device_gets_an_inspection_and_a_graceful_one_does_not()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = serve(dir.path(), "3s", 60).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let addr = app.mqtt.expect("built-in endpoint");
    register(&admin, "OC5-LOST1", "north").await?;
    register(&admin, "OC5-BYE1", "north").await?;

    lose_connection(addr, "OC5-LOST1").await?;
    say_goodbye(addr, "OC5-BYE1").await?;

    let orders = eventually(
        WAIT,
        "an inspection order for the silent device",
        || async {
            let o = orders_of(&admin, "cause=silent_device&serial=OC5-LOST1").await?;
            Ok((!o.is_empty()).then_some(o))
        },
    )
    .await?;
    let order = &orders[0];
    assert_eq!(order["kind"], json!("inspection"));
    assert_eq!(order["origin"], json!("prediction"));
    assert!(order["due_at"].is_string(), "{order}");
    assert_eq!(order["evidence"]["model_version"], json!("silent-v1"));
    assert_eq!(
        order["evidence"]["evidence"]["last_disconnect"]["graceful"],
        json!(false),
        "{order}"
    );

    // the device that said goodbye was silent as long: a few more runs raise nothing
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        orders_of(&admin, "cause=silent_device&serial=OC5-BYE1")
            .await?
            .is_empty()
    );
    let preds = admin.get("/api/v1/predictions?kind=silent").await?;
    assert_eq!(preds.status, 200, "{}", preds.body);
    let serials: Vec<&str> = preds.body["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["serial"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(serials, vec!["OC5-LOST1"]);
    let mine = admin.get("/api/v1/devices/OC5-LOST1/predictions").await?;
    let silent = mine.body["items"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["kind"] == json!("silent")))
        .cloned()
        .unwrap_or_default();
    assert_eq!(silent["order_id"], order["id"], "{}", mine.body);
    Ok(())
}

#[tokio::test]
async fn predict_storm_control_holds_orders_beyond_the_hourly_limit_in_the_queue()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = serve(dir.path(), "2s", 1).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let addr = app.mqtt.expect("built-in endpoint");
    for s in ["OC5-STORM1", "OC5-STORM2", "OC5-STORM3"] {
        register(&admin, s, "south").await?;
        lose_connection(addr, s).await?;
    }

    let queue = eventually(WAIT, "two orders held by storm control", || async {
        let q = admin.get("/api/v1/orders/queue").await?;
        anyhow::ensure!(q.status == 200, "{}", q.body);
        let items = q.body["items"].as_array().cloned().unwrap_or_default();
        Ok((items.len() == 2).then_some(items))
    })
    .await?;
    assert!(
        queue.iter().all(|h| h["reason"] == json!("fleet_limit")),
        "{queue:?}"
    );
    assert!(queue.iter().all(|h| h["cause"] == json!("silent_device")));
    let raised = orders_of(&admin, "cause=silent_device").await?;
    assert_eq!(raised.len(), 1, "one order within the hour: {raised:?}");

    // an on-demand run says the same: nothing raised, two still held
    let run = admin.post("/api/v1/predictions/run", &json!({})).await?;
    assert_eq!(run.status, 200, "{}", run.body);
    assert_eq!(run.body["raised"], json!(0), "{}", run.body);
    assert_eq!(run.body["queued"], json!(2), "{}", run.body);

    // a critical alarm is not held back: raised at commit
    let (client, mut events) = connect_and_report(addr, "OC5-STORM1").await?;
    client
        .publish(
            telemetry_topic("OC5-STORM1"),
            QoS::AtLeastOnce,
            false,
            reading(2, json!({"alarms": ["E101"]})),
        )
        .await?;
    pubacks(&mut events, 1).await?;
    // acked once in the journal; the store applies it within moments
    let alarm = eventually(WAIT, "the critical alarm's repair order", || async {
        let o = orders_of(&admin, "cause=critical_alarm:E101&serial=OC5-STORM1").await?;
        Ok((!o.is_empty()).then_some(o))
    })
    .await?;
    assert_eq!(alarm.len(), 1, "{alarm:?}");
    assert_eq!(alarm[0]["kind"], json!("repair"));
    let queued = admin.get("/api/v1/orders/queue").await?;
    assert!(
        queued.body["items"]
            .as_array()
            .is_some_and(|q| q.iter().all(|h| h["cause"] == json!("silent_device"))),
        "{}",
        queued.body
    );

    // the CLI runs the same, beside the running service
    let cli = run_cli(dir.path(), "predict").await?;
    assert_eq!(
        (cli["raised"].clone(), cli["queued"].clone()),
        (json!(0), json!(2)),
        "{cli}"
    );

    let models = admin.get("/api/v1/models").await?;
    assert_eq!((models.status, models.body.clone()), (200, json!([])));
    let missing = admin.get("/api/v1/models/risk-nope").await?;
    assert_eq!(missing.status, 404);
    Ok(())
}

/// Publishes `readings` (payloads) from `serial` and waits for each PUBACK.
async fn publish_all(addr: SocketAddr, serial: &str, readings: &[Value]) -> anyhow::Result<()> {
    let mut opts = MqttOptions::new(serial, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, readings.len() + 4);
    for r in readings {
        client
            .publish(
                telemetry_topic(serial),
                QoS::AtLeastOnce,
                false,
                r.to_string(),
            )
            .await?;
    }
    pubacks(&mut events, readings.len()).await?;
    client.disconnect().await?;
    Ok(())
}

#[tokio::test]
async fn predict_a_wearing_filter_gets_a_dated_maintenance_order_before_it_reaches_its_order_level()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = serve(dir.path(), "24h", 60).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let addr = app.mqtt.expect("built-in endpoint");
    register(&admin, "OC5-WEAR1", "north").await?;

    // ten days of history, a reading every 6 hours: 12 runtime hours a day, the filter
    // losing 0.05 % per runtime hour (0.6 % a day), from 30 % to 24 %
    let now = chrono::Utc::now();
    let readings: Vec<Value> = (0..=40u32)
        .map(|i| {
            let hours_ago = f64::from(240 - i * 6);
            let runtime = 1000.0 + f64::from(i) * 3.0;
            json!({
                "seq": i + 1,
                "ts": (now - chrono::Duration::minutes((hours_ago * 60.0) as i64)).to_rfc3339(),
                "runtime_hours": runtime,
                "filter_life_pct": 30.0 - 0.05 * (runtime - 1000.0),
                "o2_purity_pct": 93.5,
            })
        })
        .collect();
    publish_all(addr, "OC5-WEAR1", &readings).await?;
    app.applied().await?;

    let run = admin.post("/api/v1/predictions/run", &json!({})).await?;
    assert_eq!(run.status, 200, "{}", run.body);
    let preds = admin.get("/api/v1/devices/OC5-WEAR1/predictions").await?;
    assert_eq!(preds.status, 200, "{}", preds.body);
    let items = preds.body["items"].as_array().cloned().unwrap_or_default();
    let filter = items
        .iter()
        .find(|p| p["kind"] == json!("consumable_depletion") && p["target"] == json!("filter"))
        .unwrap_or_else(|| panic!("a filter depletion forecast: {}", preds.body));
    // 24 % now, order level 15 %, 0.6 % a day: the level is reached in 15 days
    let due: chrono::DateTime<chrono::Utc> = serde_json::from_value(filter["due_at"].clone())?;
    let days = (due - now).num_minutes() as f64 / 1440.0;
    assert!(
        (13.0..17.0).contains(&days),
        "depletion in {days:.1} days: {filter}"
    );
    let low: chrono::DateTime<chrono::Utc> = serde_json::from_value(filter["due_low"].clone())?;
    let high: chrono::DateTime<chrono::Utc> = serde_json::from_value(filter["due_high"].clone())?;
    assert!(low <= due && due <= high, "{filter}");
    assert_eq!(filter["model_version"], json!("depletion-v1"));

    // due 3 days (the policy's lead) before that, within the 14-day raise horizon
    let orders = orders_of(&admin, "serial=OC5-WEAR1&cause=filter_depletion").await?;
    assert_eq!(orders.len(), 1, "{orders:?}");
    let order = &orders[0];
    assert_eq!(order["kind"], json!("maintenance"));
    assert_eq!(order["origin"], json!("prediction"));
    assert_eq!(order["parts"][0]["number"], json!("OC5-FLT-01"));
    let order_due: chrono::DateTime<chrono::Utc> = serde_json::from_value(order["due_at"].clone())?;
    let lead_h = (due - order_due).num_minutes() as f64 / 60.0;
    assert!(
        (71.0..73.0).contains(&lead_h),
        "lead {lead_h:.1} h: {order}"
    );

    // the service interval (5 000 h) is 330 days away: forecast, no order
    let service = items
        .iter()
        .find(|p| p["kind"] == json!("service_interval"))
        .unwrap_or_else(|| panic!("a service forecast: {}", preds.body));
    let service_due: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(service["due_at"].clone())?;
    let service_days = (service_due - now).num_days();
    assert!(
        (250..420).contains(&service_days),
        "service in {service_days} days: {service}"
    );
    assert!(
        orders_of(&admin, "serial=OC5-WEAR1&cause=service_interval")
            .await?
            .is_empty()
    );
    Ok(())
}

/// 61 days of daily readings from three concentrators (a backlog with old timestamps);
/// OC5-TRAIN1's compressor fails 20 days ago (E101 for one reading).
async fn three_concentrators(app: &App, admin: &Client) -> anyhow::Result<()> {
    let addr = app.mqtt.expect("built-in endpoint");
    let now = chrono::Utc::now();
    for (k, serial) in ["OC5-TRAIN1", "OC5-TRAIN2", "OC5-TRAIN3"]
        .iter()
        .enumerate()
    {
        register(admin, serial, "north").await?;
        let readings: Vec<Value> = (0..=60u32)
            .map(|i| {
                let days_ago = i64::from(60 - i);
                let alarms: Vec<&str> = if k == 0 && days_ago == 20 {
                    vec!["E101"]
                } else {
                    Vec::new()
                };
                json!({
                    "seq": i + 1,
                    "ts": (now - chrono::Duration::days(days_ago)).to_rfc3339(),
                    "runtime_hours": 1000.0 + f64::from(i) * 12.0,
                    "temperature_c": 40.0 + k as f64,
                    "o2_purity_pct": 93.5,
                    "alarms": alarms,
                })
            })
            .collect();
        publish_all(addr, serial, &readings).await?;
    }
    app.applied().await
}

#[tokio::test]
async fn predict_models_trained_on_demand_are_stored_and_served_with_their_decision()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = serve(dir.path(), "24h", 60).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    three_concentrators(&app, &admin).await?;

    let trained = admin.post("/api/v1/models/train", &json!({})).await?;
    assert_eq!(trained.status, 200, "{}", trained.body);
    let reports = trained.body.as_array().cloned().unwrap_or_default();
    let modes: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["failure_mode"].as_str())
        .collect();
    // OC-5A's failure modes (config/catalog.toml), each with a report
    for mode in ["compressor", "cooling", "sieve_bed"] {
        assert!(modes.contains(&mode), "{mode}: {}", trained.body);
    }
    // one failure is far from the ten a model needs: reported, stored, not deployed
    for r in &reports {
        assert_eq!(r["deployed"], json!(false), "{r}");
        let decision = r["decision"].as_str().unwrap_or_default();
        assert!(
            decision.starts_with("not trained") && decision.contains("at least 10 needed"),
            "{r}"
        );
    }
    let compressor = reports
        .iter()
        .find(|r| r["failure_mode"] == json!("compressor"))
        .expect("a compressor report");
    let version = compressor["version"].as_str().expect("a version");
    let served = admin.get(&format!("/api/v1/models/{version}")).await?;
    assert_eq!(served.status, 200, "{}", served.body);
    assert_eq!(&served.body, compressor);
    let listed = admin.get("/api/v1/models").await?;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(reports.len()),
        "{}",
        listed.body
    );
    // no role below planner may start a training run
    let quality = admin
        .post(
            "/api/v1/tokens",
            &json!({"role": "quality", "name": "quality engineer"}),
        )
        .await?;
    assert_eq!(quality.status, 201, "{}", quality.body);
    let token = quality.body["token"].as_str().expect("a token").to_owned();
    let engineer = Client::new(&app, Some(&token))?;
    let refused = engineer.post("/api/v1/models/train", &json!({})).await?;
    assert_eq!(refused.status, 403, "{}", refused.body);

    // the CLI trains the same, beside the running service
    let cli = run_cli(dir.path(), "train").await?;
    assert_eq!(cli.as_array().map(Vec::len), Some(reports.len()), "{cli}");
    Ok(())
}

/// Issue 21: a client that gave up on `POST /api/v1/models/train` (after 2 s) left no
/// model and no log line: the handler's future, and the training it awaited, were
/// dropped with the connection. Here the request waits behind another training run
/// (runs never overlap) that this test holds up at its store write by holding the
/// store's write lock; the client hangs up meanwhile, then the lock is released. The
/// abandoned run still runs, stores its models and logs that its caller left. On the
/// old code it was dropped with the handler while it waited for its turn: only the first
/// run's models are stored.
#[tokio::test]
async fn predict_a_training_request_abandoned_by_its_client_still_stores_its_models()
-> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("serve.log");
    let app = App::spawn_logging_to(
        dir.path(),
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &[("RUST_LOG", "info")],
        &log,
    )
    .await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    three_concentrators(&app, &admin).await?;
    let none = admin.get("/api/v1/models").await?;
    assert_eq!(none.body, json!([]), "no model before");

    // a first training run that cannot store its models until the lock is released
    // (within the store's 5 s busy timeout)
    let lock = rusqlite::Connection::open(dir.path().join("fleetpulse.db"))?;
    lock.execute_batch("BEGIN IMMEDIATE")?;
    let first_client = Client::new(&app, Some(&app.admin_token))?;
    let first =
        tokio::spawn(async move { first_client.post("/api/v1/models/train", &json!({})).await });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // the training request, then the client hangs up while the run waits its turn
    let host = app.api.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&host).await?;
    conn.write_all(
        format!(
            "POST /api/v1/models/train HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
            app.admin_token
        )
        .as_bytes(),
    )
    .await?;
    conn.flush().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.execute_batch("ROLLBACK")?;
    let first = first.await??;
    assert_eq!(first.status, 200, "{}", first.body);
    // a report for every failure mode of the catalog (issue 23): OC-5A's three with their
    // features, the other models' four saying why they were not trained
    let reports = first.body.as_array().cloned().unwrap_or_default();
    assert_eq!(reports.len(), 7, "{}", first.body);
    let trained = reports
        .iter()
        .filter(|r| r["features"].as_array().is_some_and(|f| !f.is_empty()))
        .count();
    assert_eq!(trained, 3, "{}", first.body);
    assert!(
        reports
            .iter()
            .all(|r| r["deployed"] == json!(true) || r["decision"].is_string()),
        "{}",
        first.body
    );

    // every mode's report, from both runs
    eventually(WAIT, "the abandoned run's models", || async {
        let listed = admin.get("/api/v1/models").await?;
        Ok((listed.body.as_array().map_or(0, Vec::len) == 14).then_some(()))
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;
    eventually(WAIT, "the log line", || async {
        let text = std::fs::read_to_string(&log)?;
        Ok(text
            .lines()
            .any(|l| {
                l.contains("training run finished after its caller left")
                    && l.contains("trigger=\"api\"")
                    && l.contains("stored=7")
            })
            .then_some(()))
    })
    .await?;
    Ok(())
}

/// Size of the store's `-wal` file, 0 when there is none.
fn wal_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("fleetpulse.db-wal")).map_or(0, |m| m.len())
}

/// Issue 21: the WAL grew to 2.2 GB under repeated `fleetpulse predict` runs. Under 100
/// on-demand runs in `serve` it stays bounded and is reported in `/health` and
/// `/metrics`; `serve` leaves none behind when it stops, and neither does each of 100
/// `fleetpulse predict` runs (before the fix, the first one left its WAL behind).
#[tokio::test]
async fn predict_runs_in_serve_and_on_the_command_line_keep_the_wal_bounded() -> anyhow::Result<()>
{
    const LIMIT: u64 = 64 * 1024 * 1024;
    let dir = tempfile::tempdir()?;
    let mut app = serve(dir.path(), "24h", 60).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    three_concentrators(&app, &admin).await?;
    let mut largest = 0;
    for run in 0..100 {
        let report = admin.post("/api/v1/predictions/run", &json!({})).await?;
        assert_eq!(report.status, 200, "run {run}: {}", report.body);
        let wal = wal_bytes(dir.path());
        largest = largest.max(wal);
        assert!(wal <= LIMIT, "run {run}: the WAL is {wal} bytes");
    }
    let health = admin.get("/health").await?;
    let reported = health.body["store"]["wal_bytes"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no store.wal_bytes in {}", health.body))?;
    assert!(reported <= LIMIT, "{}", health.body);
    let metrics = app.get_text("/metrics").await?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("fleetpulse_store_wal_bytes ")),
        "{metrics}"
    );
    let stopped = app.interrupt().await?;
    assert!(stopped.success(), "{stopped}");
    assert_eq!(
        wal_bytes(dir.path()),
        0,
        "serve left a WAL behind (largest {largest})"
    );

    for run in 0..100 {
        let report = run_cli(dir.path(), "predict").await?;
        assert!(report["run_id"].is_i64(), "run {run}: {report}");
        let wal = wal_bytes(dir.path());
        assert_eq!(
            wal, 0,
            "run {run}: fleetpulse predict left {wal} bytes of WAL"
        );
    }
    Ok(())
}

/// `fleetpulse <args> --data <dir>` beside the running service, with the test's policy:
/// whether it succeeded, its standard output and its standard error.
async fn cli_with(dir: &Path, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = tokio::process::Command::new(fleetpulse_system_tests::fleetpulse_bin())
        .args(args)
        .arg("--data")
        .arg(dir)
        .env("FLEETPULSE_POLICY__PATH", dir.join("policy.toml"))
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Issue 21, item 4: a back-test without faketime or a copy of the store. A device went
/// silent; `fleetpulse predict --as-of` a time after that forecasts it silent and raises
/// nothing (a forecast of the past is not a work order, and the run is not stored),
/// where the run as of now raises the inspection; the route does the same and refuses
/// an as-of in the future; `fleetpulse train --as-of` stores its models with that as-of.
#[tokio::test]
async fn predict_as_of_a_past_time_raises_no_order_and_training_as_of_stores_the_as_of()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // silent after 2 s; the schedule's first run (after 15 minutes) is not in the test
    let policy = POLICY.replace("silent_after = \"24h\"", "silent_after = \"2s\"");
    anyhow::ensure!(policy.contains("\"2s\""), "policy template changed");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy)?;
    let path = path.display().to_string();
    let app = App::spawn_with_env(
        dir.path(),
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &[("FLEETPULSE_POLICY__PATH", path.as_str())],
    )
    .await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    register(&admin, "OC5-ASOF1", "north").await?;
    lose_connection(app.mqtt.expect("built-in endpoint"), "OC5-ASOF1").await?;
    app.applied().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let as_of = chrono::Utc::now() - chrono::Duration::milliseconds(200);
    let as_of_text = as_of.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    let (ok, out, err) = cli_with(dir.path(), &["predict", "--as-of", &as_of_text]).await?;
    anyhow::ensure!(ok, "fleetpulse predict --as-of: {err}");
    let run: Value = serde_json::from_str(&out)?;
    assert_eq!(run["orders_applied"], json!(false), "{run}");
    assert_eq!(run["note"], json!("orders: not applied (as_of before now)"));
    assert_eq!(
        (run["run_id"].clone(), run["raised"].clone()),
        (json!(0), json!(0))
    );
    assert!(
        err.contains("orders: not applied (as_of before now)"),
        "{err}"
    );
    let silent = |run: &Value| {
        run["forecasts"].as_array().is_some_and(|f| {
            f.iter()
                .any(|p| p["serial"] == json!("OC5-ASOF1") && p["kind"] == json!("silent"))
        })
    };
    assert!(silent(&run), "{run}");
    assert!(orders_of(&admin, "cause=silent_device").await?.is_empty());
    let stored = admin.get("/api/v1/predictions").await?;
    assert_eq!(
        stored.body["items"],
        json!([]),
        "not stored: {}",
        stored.body
    );

    // the route: the same, and an as-of in the future refused
    let api = admin
        .post(
            &format!("/api/v1/predictions/run?as_of={as_of_text}"),
            &json!({}),
        )
        .await?;
    assert_eq!(api.status, 200, "{}", api.body);
    assert_eq!(api.body["orders_applied"], json!(false), "{}", api.body);
    assert!(silent(&api.body), "{}", api.body);
    for route in ["/api/v1/predictions/run", "/api/v1/models/train"] {
        let future = admin
            .post(&format!("{route}?as_of=2999-01-01T00:00:00Z"), &json!({}))
            .await?;
        assert_eq!(future.status, 400, "{route}: {}", future.body);
        assert!(
            future.body.to_string().contains("future"),
            "{}",
            future.body
        );
    }
    let (ok, _, err) =
        cli_with(dir.path(), &["predict", "--as-of", "2999-01-01T00:00:00Z"]).await?;
    assert!(!ok && err.contains("in the future"), "{err}");
    assert!(orders_of(&admin, "cause=silent_device").await?.is_empty());

    // as of now, the same data raises the inspection
    let now = run_cli(dir.path(), "predict").await?;
    assert_eq!(now["orders_applied"], json!(true), "{now}");
    assert_eq!(now["raised"], json!(1), "{now}");
    assert_eq!(orders_of(&admin, "cause=silent_device").await?.len(), 1);

    // training as of the past time, on two months of history of a device commissioned
    // before it: its reports and the stored models say the as-of
    let commissioned = chrono::Utc::now() - chrono::Duration::days(100);
    let a = admin
        .post(
            "/api/v1/devices",
            &json!({"serial": "OC5-ASOF2", "model": "OC-5A", "status": "at_customer", "region": "north",
                    "address": "1 Main St", "commissioned_at": commissioned.to_rfc3339()}),
        )
        .await?;
    assert_eq!(a.status, 201, "{}", a.body);
    let history: Vec<Value> = (0..=60u32)
        .map(|i| {
            json!({
                "seq": i + 1,
                "ts": (chrono::Utc::now() - chrono::Duration::days(i64::from(61 - i))).to_rfc3339(),
                "runtime_hours": 1000.0 + f64::from(i) * 12.0,
                "o2_purity_pct": 93.5,
                "alarms": [],
            })
        })
        .collect();
    publish_all(app.mqtt.expect("built-in endpoint"), "OC5-ASOF2", &history).await?;
    app.applied().await?;
    let (ok, out, err) = cli_with(dir.path(), &["train", "--as-of", &as_of_text]).await?;
    anyhow::ensure!(ok, "fleetpulse train --as-of: {err}");
    let reports: Vec<Value> = serde_json::from_str(&out)?;
    assert!(!reports.is_empty(), "{out}");
    let at = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let millis = chrono::DateTime::parse_from_rfc3339(&as_of_text)?.with_timezone(&chrono::Utc);
    for r in &reports {
        assert_eq!(at(&r["as_of"]), Some(millis), "{r}");
    }
    let listed = admin.get("/api/v1/models").await?;
    let listed = listed.body.as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), reports.len());
    assert!(listed.iter().all(|r| at(&r["as_of"]) == Some(millis)));
    let db = rusqlite::Connection::open(fleetpulse_system_tests::load::db_path(dir.path()))?;
    let with_as_of: i64 = db.query_row(
        "SELECT COUNT(*) FROM models WHERE as_of = ?1",
        [millis.timestamp_millis()],
        |r| r.get(0),
    )?;
    assert_eq!(usize::try_from(with_as_of)?, reports.len());
    Ok(())
}
