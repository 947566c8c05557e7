//! The chain end to end in both modes: device state, orders raised exactly once, dead
//! letters beside kept readings.

use std::net::SocketAddr;
use std::time::Duration;

use fleetpulse_system_tests::{
    App, Mosquitto, eventually, mosquitto_pub, reading, telemetry_topic,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// How the test publishes: straight to fleetpulse's endpoint, or to a broker it subscribes to.
#[derive(Clone, Copy)]
struct Publisher {
    addr: SocketAddr,
}

impl Publisher {
    /// One message with the third-party `mosquitto_pub` client (client id = serial, as the
    /// built-in endpoint requires).
    async fn pub_cli(&self, serial: &str, payload: &str) -> anyhow::Result<()> {
        mosquitto_pub(self.addr, serial, &telemetry_topic(serial), payload).await
    }

    /// Several messages over one rumqttc connection at QoS 1, in order; returns when every
    /// PUBACK arrived.
    async fn pub_rumqttc(&self, serial: &str, payloads: &[String]) -> anyhow::Result<()> {
        let mut opts = MqttOptions::new(serial, self.addr.ip().to_string(), self.addr.port());
        opts.set_keep_alive(Duration::from_secs(10));
        let (client, mut events) = AsyncClient::new(opts, 100);
        for p in payloads {
            client
                .publish(telemetry_topic(serial), QoS::AtLeastOnce, false, p.clone())
                .await?;
        }
        let mut acked = 0;
        let result = tokio::time::timeout(WAIT, async {
            while acked < payloads.len() {
                match events.poll().await? {
                    Event::Incoming(Packet::PubAck(_)) => acked += 1,
                    Event::Outgoing(Outgoing::Disconnect) => anyhow::bail!("disconnected"),
                    _ => {}
                }
            }
            Ok(())
        })
        .await;
        let _ = client.disconnect().await;
        result.map_err(|_| {
            anyhow::anyhow!("only {acked} of {} PUBACKs within {WAIT:?}", payloads.len())
        })?
    }
}

async fn device(app: &App, serial: &str) -> anyhow::Result<Value> {
    app.get_ok(&format!("/api/v1/devices/{serial}")).await
}

/// The chain every mode must deliver: device with latest state, one filter order despite
/// repeated triggers, one critical-alarm order despite repeated raises.
async fn device_state_and_orders_are_raised_exactly_once(
    app: &App,
    p: Publisher,
    serial: &str,
) -> anyhow::Result<()> {
    let (status, body) = app
        .post("/api/v1/devices", &json!({"serial": serial, "model": "OC-5A", "status": "at_customer", "region": "north", "address": "1 Main St"}))
        .await?;
    assert_eq!(status, 201, "{body}");

    p.pub_cli(serial, &reading(1, json!({"model": "OC-5A", "runtime_hours": 100.0, "filter_life_pct": 50.0, "o2_purity_pct": 94.1, "alarms": []})))
        .await?;
    let detail = eventually(WAIT, "latest state of the device", || async {
        let d = device(app, serial).await?;
        Ok((d["latest"]["seq"] == json!(1)).then_some(d))
    })
    .await?;
    assert_eq!(detail["latest"]["values"]["filter_life_pct"], json!(50.0));
    assert_eq!(detail["latest"]["values"]["o2_purity_pct"], json!(94.1));
    assert_eq!(detail["status"], json!("at_customer"));

    // filter at or below 15 % three times → one maintenance order, one trigger episode
    for (seq, level) in [(2, 14.0), (3, 13.0), (4, 12.0)] {
        p.pub_cli(
            serial,
            &reading(
                seq,
                json!({"runtime_hours": 100.0 + seq as f64, "filter_life_pct": level}),
            ),
        )
        .await?;
    }
    let filter_orders = eventually(WAIT, "all three filter readings", || async {
        let d = device(app, serial).await?;
        if d["latest"]["seq"] != json!(4) {
            return Ok(None);
        }
        let o = app
            .orders(&format!("serial={serial}&cause=filter_depletion"))
            .await?;
        Ok(Some(o))
    })
    .await?;
    assert_eq!(filter_orders.len(), 1, "{filter_orders:?}");
    let order = &filter_orders[0];
    assert_eq!(order["kind"], json!("maintenance"));
    assert_eq!(order["status"], json!("open"));
    assert_eq!(order["parts"][0]["number"], json!("OC5-FLT-01"));
    // readings that stay below the threshold are the same episode: they change nothing
    // a dispatcher acts on, so the order keeps its first trigger's evidence and version
    assert_eq!(
        (order["trigger_count"].clone(), order["version"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(order["evidence"]["value"], json!(14.0));

    // critical alarm raised, still active, cleared, raised again → one repair order
    let alarm_readings: Vec<String> = [
        (5, json!(["E101"])),
        (6, json!(["E101", "W202"])),
        (7, json!([])),
        (8, json!(["E101"])),
    ]
    .into_iter()
    .map(|(seq, alarms)| reading(seq, json!({"alarms": alarms, "filter_life_pct": 12.0})))
    .collect();
    p.pub_rumqttc(serial, &alarm_readings).await?;
    let repair = eventually(WAIT, "one repair order triggered twice", || async {
        let o = app
            .orders(&format!("serial={serial}&cause=critical_alarm:E101"))
            .await?;
        Ok((o.len() == 1 && o[0]["trigger_count"] == json!(2)).then_some(o))
    })
    .await?;
    assert_eq!(repair[0]["kind"], json!("repair"));
    assert_eq!(repair[0]["skills"], json!(["concentrator_repair"]));
    assert!(repair[0]["sla"]["respond_by"].is_string());
    let all = app
        .orders(&format!("serial={serial}&status=active"))
        .await?;
    assert_eq!(
        all.len(),
        2,
        "exactly the filter and the repair order: {all:?}"
    );

    let detail = device(app, serial).await?;
    assert_eq!(detail["latest"]["seq"], json!(8));
    assert_eq!(
        detail["open_alarms"].as_array().map(Vec::len),
        Some(1),
        "{detail}"
    );
    assert_eq!(
        detail["open_orders"].as_array().map(Vec::len),
        Some(2),
        "{detail}"
    );
    let alarms = app
        .get_ok(&format!("/api/v1/devices/{serial}/alarms"))
        .await?;
    assert_eq!(alarms["next"], Value::Null, "one page: {alarms}");
    let e101: Vec<&Value> = alarms["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["code"] == json!("E101"))
        .collect();
    assert_eq!(e101.len(), 2, "two E101 episodes: {alarms}");
    assert!(
        e101.iter()
            .any(|e| e["ended_at"].is_string() && e["duration_s"].is_number()),
        "{alarms}"
    );
    Ok(())
}

/// Malformed messages in a burst become dead letters; the good ones around them are kept.
async fn bad_input_is_dead_lettered_and_good_input_kept(
    app: &App,
    p: Publisher,
    serial: &str,
) -> anyhow::Result<()> {
    let burst = vec![
        reading(10, json!({"model": "OC-5A", "filter_life_pct": 80.0})),
        "this is not json".to_owned(),
        json!({"seq": "eleven", "ts": chrono::Utc::now().to_rfc3339()}).to_string(),
        reading(11, json!({"filter_life_pct": 79.5})),
        reading(12, json!({"filter_life_pct": 400.0})),
    ];
    p.pub_rumqttc(serial, &burst).await?;
    let readings = eventually(WAIT, "the two good readings", || async {
        let seqs: Vec<u64> = app
            .readings(serial, "")
            .await?
            .iter()
            .filter_map(|x| x["seq"].as_u64())
            .collect();
        Ok((seqs == [10, 11]).then_some(seqs))
    })
    .await?;
    assert_eq!(readings, [10, 11]);
    let letters = app.get_ok("/api/v1/dead-letters?limit=1000").await?;
    let mine: Vec<&Value> = letters["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["topic"].as_str().is_some_and(|t| t.contains(serial)))
        .collect();
    let mut reasons: Vec<&str> = mine.iter().filter_map(|d| d["reason"].as_str()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["malformed_json", "out_of_range", "wrong_type"],
        "{letters}"
    );
    assert!(
        mine.iter()
            .any(|d| d["payload"] == json!("this is not json"))
    );
    assert!(
        mine.iter()
            .all(|d| d["detail"].as_str().is_some_and(|s| !s.is_empty()))
    );

    // the same rejections, counted by reason, for a Prometheus scrape
    let metrics = app.get_text("/metrics").await?;
    for reason in ["malformed_json", "out_of_range", "wrong_type"] {
        let line = format!("fleetpulse_ingest_rejected_total{{reason=\"{reason}\"}} 1");
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l == "fleetpulse_ingest_connected 1"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_endpoint_end_to_end() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let app = App::serve_builtin(data.path()).await?;
    let p = Publisher {
        addr: app.mqtt.expect("built-in endpoint address"),
    };
    device_state_and_orders_are_raised_exactly_once(&app, p, "OC5-B0001").await?;
    bad_input_is_dead_lettered_and_good_input_kept(&app, p, "OC5-B0002").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_broker_end_to_end() -> anyhow::Result<()> {
    let broker = Mosquitto::start().await?;
    let data = tempfile::tempdir()?;
    let app = App::serve_external(data.path(), broker.addr, "fleetpulse-e2e").await?;
    assert!(app.mqtt.is_none(), "external mode runs no device endpoint");
    // the subscription is in place once the service reports it connected; give it a moment
    eventually(WAIT, "ingest connected to the broker", || async {
        let h = app.get_ok("/health").await?;
        Ok((h["ingest"]["connected"] == json!(true)).then_some(()))
    })
    .await?;
    let p = Publisher { addr: broker.addr };
    device_state_and_orders_are_raised_exactly_once(&app, p, "OC5-X0001").await?;
    bad_input_is_dead_lettered_and_good_input_kept(&app, p, "OC5-X0002").await?;
    Ok(())
}
