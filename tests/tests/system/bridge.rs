//! The firmware bridge against real peers: a pymodbus server holding known values, the
//! simulator's tokio-modbus devices with injected faults, and fleetpulse's built-in
//! endpoint going away and coming back. Every assertion on telemetry goes through
//! fleetpulse's HTTP API.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetpulse_domain::Catalog;
use fleetpulse_firmware_bridge::registers::{BUILT_IN_MAPS, built_in_maps};
use fleetpulse_firmware_bridge::simulated::{Behaviour, ModbusFleet, ModbusFleetConfig};
use fleetpulse_system_tests::modbus::{BridgeProc, PtyPair, PyModbus, write_bridge_config};
use fleetpulse_system_tests::tls::{Pki, device_credential};
use fleetpulse_system_tests::{App, eventually, fleetpulse_bin, free_port};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const CATALOG: &str = include_str!("../../../config/catalog.toml");

/// A register map using every data type and word order, scaled values, bits and alarms.
const TEST_MAP: &str = r#"
model = "OC-5A"

[[field]]
name = "vendor_f32_abcd"
function = "holding"
address = 0
type = "f32"
order = "ABCD"
[[field]]
name = "vendor_f32_cdab"
function = "holding"
address = 2
type = "f32"
order = "CDAB"
[[field]]
name = "vendor_f32_badc"
function = "holding"
address = 4
type = "f32"
order = "BADC"
[[field]]
name = "vendor_f32_dcba"
function = "holding"
address = 6
type = "f32"
order = "DCBA"
[[field]]
name = "vendor_u32_abcd"
function = "holding"
address = 8
type = "u32"
order = "ABCD"
[[field]]
name = "vendor_u32_cdab"
function = "holding"
address = 10
type = "u32"
order = "CDAB"
[[field]]
name = "vendor_u32_badc"
function = "holding"
address = 12
type = "u32"
order = "BADC"
[[field]]
name = "vendor_u32_dcba"
function = "holding"
address = 14
type = "u32"
order = "DCBA"
[[field]]
name = "vendor_i32"
function = "holding"
address = 16
type = "i32"
order = "CDAB"

[[field]]
name = "o2_purity_pct"
function = "input"
address = 0
type = "u16"
scale = 0.1
unit = "%"
[[field]]
name = "temperature_c"
function = "input"
address = 1
type = "i16"
scale = 0.1
unit = "°C"
[[field]]
name = "flow_lpm"
function = "input"
address = 2
type = "u16"
scale = 0.01
[[field]]
name = "outlet_pressure_kpa"
function = "input"
address = 3
type = "u16"
scale = 0.5
offset = -20
[[field]]
name = "runtime_hours"
function = "input"
address = 4
type = "u64"
scale = 0.01
[[field]]
name = "filter_life_pct"
function = "input"
address = 8
type = "f32"
order = "DCBA"

[[field]]
name = "vendor_door_open"
function = "coil"
address = 0
type = "bool"
[[field]]
name = "vendor_fan_on"
function = "holding"
address = 20
type = "bool"
bit = 4

[[alarm]]
code = "E101"
function = "holding"
address = 20
bit = 0
[[alarm]]
code = "E102"
function = "holding"
address = 20
bit = 1
[[alarm]]
code = "W202"
function = "holding"
address = 20
bit = 9
[[alarm]]
code = "W201"
function = "discrete"
address = 2
[[alarm]]
code = "P301"
function = "discrete"
address = 3
"#;

/// Known values for pymodbus to hold (it encodes each itself, with `struct.pack`,
/// independently of the bridge), and what the bridge must publish for them.
fn known_spec() -> Value {
    json!([
        {"function": "holding", "address": 0, "type": "f32", "order": "ABCD", "value": 93.4},
        {"function": "holding", "address": 2, "type": "f32", "order": "CDAB", "value": -12.75},
        {"function": "holding", "address": 4, "type": "f32", "order": "BADC", "value": 1013.25},
        {"function": "holding", "address": 6, "type": "f32", "order": "DCBA", "value": 0.1},
        {"function": "holding", "address": 8, "type": "u32", "order": "ABCD", "value": 305419896u64},
        {"function": "holding", "address": 10, "type": "u32", "order": "CDAB", "value": 4000000000u64},
        {"function": "holding", "address": 12, "type": "u32", "order": "BADC", "value": 123456789},
        {"function": "holding", "address": 14, "type": "u32", "order": "DCBA", "value": 70000},
        {"function": "holding", "address": 16, "type": "i32", "order": "CDAB", "value": -123456},
        {"function": "input", "address": 0, "type": "u16", "value": 931},
        {"function": "input", "address": 1, "type": "i16", "value": -125},
        {"function": "input", "address": 2, "type": "u16", "value": 250},
        {"function": "input", "address": 3, "type": "u16", "value": 141},
        {"function": "input", "address": 4, "type": "u64", "value": 841250},
        {"function": "input", "address": 8, "type": "f32", "order": "DCBA", "value": 37.5},
        {"function": "coil", "address": 0, "value": true},
        {"function": "holding", "address": 20, "type": "bits", "bits": [0, 4, 9]},
        {"function": "discrete", "address": 2, "value": true},
    ])
}

/// Asserts a device's latest state carries exactly the values of [`known_spec`].
fn assert_known_values(detail: &Value) {
    let expected: BTreeMap<&str, f64> = [
        ("vendor_f32_abcd", 93.4),
        ("vendor_f32_cdab", -12.75),
        ("vendor_f32_badc", 1013.25),
        ("vendor_f32_dcba", 0.1),
        ("vendor_u32_abcd", 305_419_896.0),
        ("vendor_u32_cdab", 4_000_000_000.0),
        ("vendor_u32_badc", 123_456_789.0),
        ("vendor_u32_dcba", 70_000.0),
        ("vendor_i32", -123_456.0),
        ("o2_purity_pct", 93.1),
        ("temperature_c", -12.5),
        ("flow_lpm", 2.5),
        ("outlet_pressure_kpa", 50.5),
        ("runtime_hours", 8412.5),
        ("filter_life_pct", 37.5),
        ("vendor_door_open", 1.0),
        ("vendor_fan_on", 1.0),
    ]
    .into_iter()
    .collect();
    let values = detail["latest"]["values"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let got: BTreeMap<&str, f64> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_f64().unwrap_or(f64::NAN)))
        .collect();
    assert_eq!(got, expected, "published values");
    let mut alarms: Vec<&str> = detail["latest"]["alarms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    alarms.sort_unstable();
    assert_eq!(alarms, ["E101", "W201", "W202"], "active alarm bits");
}

#[tokio::test]
async fn pymodbus_values_in_every_word_order_arrive_exactly() -> anyhow::Result<()> {
    // arrange
    let mut device = PyModbus::start(&known_spec()).await?;
    let data = tempfile::tempdir()?;
    let app = App::serve_builtin(&data.path().join("fleetpulse")).await?;
    let mqtt = app.mqtt.expect("built-in endpoint");
    let config = write_bridge_config(
        data.path(),
        &format!("mqtt://{mqtt}"),
        &[("OC-5A", TEST_MAP)],
        &format!(
            "[[device]]\nserial = \"PYM-0001\"\nmodel = \"OC-5A\"\nfw = \"9.9.9\"\ntcp = \"{}\"\nunit = 1\ninterval_ms = 200\n",
            device.addr
        ),
    )?;

    // act
    let mut bridge = BridgeProc::spawn(&config, &data.path().join("outbox")).await?;
    let detail = eventually(Duration::from_secs(30), "a bridged reading", || async {
        let d = app.get_ok("/api/v1/devices/PYM-0001").await.ok();
        Ok(d.filter(|d| !d["latest"].is_null()))
    })
    .await?;

    // assert: exactly the values pymodbus holds, after type, order, scale and offset
    assert_known_values(&detail);
    assert_eq!(detail["model"], "OC-5A");
    assert_eq!(detail["firmware"], "9.9.9");
    assert_eq!(detail["connection"], "online");
    // the critical alarm bit became a repair order, like an MQTT device's would
    let orders = eventually(Duration::from_secs(10), "a repair order", || async {
        let o = app.orders("serial=PYM-0001&status=active").await?;
        Ok((!o.is_empty()).then_some(o))
    })
    .await?;
    assert!(
        orders.iter().any(|o| o["cause"] == "critical_alarm:E101"),
        "{orders:?}"
    );

    // the device goes away: the bridge reports it unreachable, with a transport reason
    device.stop().await;
    eventually(Duration::from_secs(20), "device unreachable", || async {
        let d = app.get_ok("/api/v1/devices/PYM-0001").await?;
        Ok((d["connection"] == "unreachable").then_some(()))
    })
    .await?;
    let failures = bridge
        .metric(r#"bridge_polls_total{serial="PYM-0001",result="transport"}"#)
        .await?;
    assert!(failures >= 1.0, "transport failures counted: {failures}");
    let report = bridge.interrupt().await?;
    assert_eq!(report["outbox_readings"], 0, "{report}");
    Ok(())
}

/// Five simulated devices; three turn faulty while the bridge runs.
#[tokio::test]
async fn faulty_devices_are_reported_apart_and_never_slow_the_others() -> anyhow::Result<()> {
    let catalog = Catalog::from_toml_str(CATALOG)?;
    let maps = built_in_maps(&catalog)?;
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let fleet = ModbusFleet::start(
        ModbusFleetConfig {
            devices: 6,
            serial_prefix: "FT".into(),
            tick: Duration::from_millis(200),
            ..ModbusFleetConfig::default()
        },
        &catalog,
        &maps,
        stop.clone(),
    )
    .await?;
    let data = tempfile::tempdir()?;
    let app = App::serve_builtin(&data.path().join("fleetpulse")).await?;
    let mqtt = app.mqtt.expect("built-in endpoint");
    let config = write_bridge_config(
        data.path(),
        &format!("mqtt://{mqtt}"),
        BUILT_IN_MAPS,
        &format!(
            "[polling]\ntimeout_ms = 400\nretry_max_ms = 1000\n\n{}",
            fleet.bridge_devices_toml(200)
        ),
    )?;
    let mut bridge = BridgeProc::spawn(&config, &data.path().join("outbox")).await?;
    let serial = |i: usize| fleet.devices()[i].serial.to_string();
    let ok = |i: usize| {
        format!(
            r#"bridge_polls_total{{serial="{}",result="ok"}}"#,
            serial(i)
        )
    };
    let failed = |i: usize, kind: &str| {
        format!(
            r#"bridge_polls_total{{serial="{}",result="{kind}"}}"#,
            serial(i)
        )
    };
    eventually(Duration::from_secs(30), "every device polled", || async {
        for i in 0..6 {
            if bridge.metric(&ok(i)).await? < 3.0 {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await?;

    // act: one hangs, one answers exception 0x04, one answers slowly, one sends garbage
    fleet.devices()[0].set_behaviour(Behaviour::Silent);
    fleet.devices()[1].set_behaviour(Behaviour::Exception(4));
    fleet.devices()[2].set_behaviour(Behaviour::Slow(Duration::from_millis(250)));
    fleet.devices()[3].set_behaviour(Behaviour::Garbage);
    let before: Vec<f64> = {
        let mut v = Vec::new();
        for i in 0..6 {
            v.push(bridge.metric(&ok(i)).await?);
        }
        v
    };
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;

    // assert: the healthy ones kept their 5 polls a second
    for i in [4, 5] {
        let polls = bridge.metric(&ok(i)).await? - before[i];
        assert!(
            polls >= 16.0,
            "{}: {polls} polls in {window:?} beside faulty devices (20 expected)",
            serial(i)
        );
    }
    // the slow one still delivers, with its latency visible
    let slow_polls = bridge.metric(&ok(2)).await? - before[2];
    assert!(slow_polls >= 2.0, "slow device still polled: {slow_polls}");
    let slow_latency = bridge
        .metric(&format!(
            r#"bridge_device_last_poll_seconds{{serial="{}"}}"#,
            serial(2)
        ))
        .await?;
    assert!(slow_latency >= 0.25, "slow latency {slow_latency}");
    // failures are counted by kind, and only by their kind
    assert!(bridge.metric(&failed(0, "transport")).await? >= 1.0);
    assert_eq!(bridge.metric(&failed(0, "exception")).await?, 0.0);
    assert!(bridge.metric(&failed(1, "exception")).await? >= 1.0);
    assert_eq!(bridge.metric(&failed(1, "transport")).await?, 0.0);
    assert!(bridge.metric(&failed(3, "decode")).await? >= 1.0);
    assert_eq!(bridge.metric(&failed(3, "transport")).await?, 0.0);
    assert_eq!(bridge.metric(&ok(0)).await?, before[0]);
    // fleetpulse shows each faulty device unreachable; the others online
    for i in [0, 1, 3] {
        let s = serial(i);
        eventually(
            Duration::from_secs(10),
            "unreachable in the API",
            || async {
                let d = app.get_ok(&format!("/api/v1/devices/{s}")).await?;
                Ok((d["connection"] == "unreachable").then_some(()))
            },
        )
        .await?;
    }
    for i in [2, 4, 5] {
        let d = app
            .get_ok(&format!("/api/v1/devices/{}", serial(i)))
            .await?;
        assert_eq!(d["connection"], "online", "{}", serial(i));
    }

    // a device that answers again is back online and polled at its rate
    fleet.devices()[0].set_behaviour(Behaviour::Normal);
    let s0 = serial(0);
    eventually(Duration::from_secs(10), "back online", || async {
        let d = app.get_ok(&format!("/api/v1/devices/{s0}")).await?;
        Ok((d["connection"] == "online").then_some(()))
    })
    .await?;
    let report = bridge.interrupt().await?;
    assert_eq!(report["outbox_readings"], 0, "{report}");
    Ok(())
}

/// Every device's readings: each `seq` from the first to the last stored exactly once,
/// taken in `seq` order (`ts`) and received in `seq` order (`received_at`). Returns how
/// many readings are stored.
async fn assert_every_seq_once_in_order(app: &App, fleet: &ModbusFleet) -> anyhow::Result<usize> {
    let mut total = 0;
    for d in fleet.devices() {
        let r = app.readings(d.serial.as_str(), "").await?;
        let time = |v: &Value| {
            v.as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_micros())
                .unwrap_or_default()
        };
        let mut readings: Vec<(u64, i64, i64)> = r
            .iter()
            .map(|x| {
                (
                    x["seq"].as_u64().unwrap_or_default(),
                    time(&x["ts"]),
                    time(&x["received_at"]),
                )
            })
            .collect();
        readings.sort_unstable();
        anyhow::ensure!(!readings.is_empty(), "{}: nothing stored", d.serial);
        let (first, last) = (readings[0].0, readings[readings.len() - 1].0);
        assert_eq!(
            readings.len() as u64,
            last - first + 1,
            "{}: every seq from {first} to {last} stored once",
            d.serial
        );
        assert!(
            readings.windows(2).all(|w| w[0].1 < w[1].1),
            "{}: seq order is poll order",
            d.serial
        );
        assert!(
            readings.windows(2).all(|w| w[0].2 <= w[1].2),
            "{}: received in seq order",
            d.serial
        );
        total += readings.len();
    }
    Ok(total)
}

/// fleetpulse is killed while the bridge polls; the bridge is killed too and restarted
/// on the same outbox; then fleetpulse comes back. Every reading that got a `seq` is
/// stored once, with no gap, in the order it was polled.
#[tokio::test]
async fn an_mqtt_outage_and_a_bridge_restart_lose_nothing() -> anyhow::Result<()> {
    let catalog = Catalog::from_toml_str(CATALOG)?;
    let maps = built_in_maps(&catalog)?;
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let fleet = ModbusFleet::start(
        ModbusFleetConfig {
            devices: 3,
            serial_prefix: "OUT".into(),
            tick: Duration::from_millis(100),
            ..ModbusFleetConfig::default()
        },
        &catalog,
        &maps,
        stop.clone(),
    )
    .await?;
    let data = tempfile::tempdir()?;
    let store_dir = data.path().join("fleetpulse");
    let (mqtt_port, http_port) = (free_port(), free_port());
    let mqtt_listen = format!("127.0.0.1:{mqtt_port}");
    let http = format!("127.0.0.1:{http_port}");
    let serve_args = ["serve", "--mqtt-listen", &mqtt_listen, "--http", &http];
    let mut app = App::spawn(&store_dir, &serve_args).await?;
    let config = write_bridge_config(
        data.path(),
        &format!("mqtt://{mqtt_listen}"),
        BUILT_IN_MAPS,
        &fleet.bridge_devices_toml(100),
    )?;
    let outbox = data.path().join("outbox");
    let mut bridge = BridgeProc::spawn(&config, &outbox).await?;
    eventually(Duration::from_secs(20), "first readings stored", || async {
        Ok((app.stored_readings().await? >= 6).then_some(()))
    })
    .await?;

    // act: fleetpulse goes away; the bridge keeps polling into its outbox
    app.kill().await;
    eventually(Duration::from_secs(10), "the outbox filling", || async {
        Ok((bridge.metric("bridge_outbox_readings").await? >= 15.0).then_some(()))
    })
    .await?;
    // the bridge dies too (SIGKILL: nothing flushed) and starts again on its outbox
    bridge.kill().await;
    let mut bridge = BridgeProc::spawn(&config, &outbox).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = bridge.metric("bridge_outbox_readings").await?;
    assert!(held >= 15.0, "the outbox survived the restart: {held}");
    let app = App::spawn(&store_dir, &serve_args).await?;
    eventually(Duration::from_secs(30), "the outbox drained", || async {
        Ok((bridge.metric("bridge_outbox_readings").await? < 3.0).then_some(()))
    })
    .await?;
    let report = bridge.interrupt().await?;

    // assert
    assert_eq!(
        report["outbox_readings"], 0,
        "everything acknowledged: {report}"
    );
    let total = assert_every_seq_once_in_order(&app, &fleet).await?;
    assert!(
        total as f64 >= report["polls"].as_f64().unwrap_or(0.0),
        "every poll of the second bridge run is stored ({total} stored, report {report})"
    );
    Ok(())
}

#[tokio::test]
async fn demo_runs_a_mixed_fleet_of_mqtt_and_modbus_devices() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut app = App::spawn(
        data.path(),
        &[
            "demo",
            "--devices",
            "4",
            "--modbus-devices",
            "4",
            "--interval-ms",
            "250",
            "--mqtt-listen",
            "127.0.0.1:0",
        ],
    )
    .await?;
    eventually(
        Duration::from_secs(30),
        "MQTT and Modbus devices live",
        || async {
            let d = app.get_ok("/api/v1/devices?limit=100").await?;
            let live = |prefix: &str| {
                d["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|x| {
                        x["serial"].as_str().is_some_and(|s| s.starts_with(prefix))
                            && x["latest"]["seq"].as_u64().is_some()
                            && x["connection"] == "online"
                    })
                    .count()
            };
            Ok((live("SIM-") == 4 && live("MB-") == 4).then_some(()))
        },
    )
    .await?;
    let status = app.interrupt().await?;
    assert!(status.success(), "Ctrl-C stops the demo cleanly: {status}");
    Ok(())
}

/// Modbus RTU over a pseudo-terminal pair (socat): pymodbus serves two unit ids on one
/// serial line, the bridge polls both over the shared bus.
#[tokio::test]
async fn rtu_devices_on_one_serial_line_arrive_exactly() -> anyhow::Result<()> {
    // arrange: unit 1 holds the known values, unit 2 a few of its own. Parity none: this
    // kernel's pseudo-terminals refuse even parity (termios EINVAL); odd and none work.
    let mut pty = PtyPair::start().await?;
    let mut spec = known_spec();
    if let Some(items) = spec.as_array_mut() {
        items.extend([
            json!({"unit": 2, "function": "input", "address": 0, "type": "u16", "value": 955}),
            json!({"unit": 2, "function": "input", "address": 2, "type": "u16", "value": 300}),
            json!({"unit": 2, "function": "input", "address": 3, "type": "u16", "value": 100}),
            json!({"unit": 2, "function": "holding", "address": 20, "type": "bits", "bits": [1]}),
        ]);
    }
    let _device = PyModbus::start_rtu(&spec, &pty.device_end, "N").await?;
    let data = tempfile::tempdir()?;
    let app = App::serve_builtin(&data.path().join("fleetpulse")).await?;
    let mqtt = app.mqtt.expect("built-in endpoint");
    let line = format!(
        "rtu = {{ port = \"{}\", baud = 19200, parity = \"none\" }}",
        pty.bridge_end.display()
    );
    let config = write_bridge_config(
        data.path(),
        &format!("mqtt://{mqtt}"),
        &[("OC-5A", TEST_MAP)],
        &format!(
            "[[device]]\nserial = \"RTU-0001\"\nmodel = \"OC-5A\"\n{line}\nunit = 1\ninterval_ms = 300\n\n\
             [[device]]\nserial = \"RTU-0002\"\nmodel = \"OC-5A\"\n{line}\nunit = 2\ninterval_ms = 300\n"
        ),
    )?;

    // act
    let mut bridge = BridgeProc::spawn(&config, &data.path().join("outbox")).await?;
    let detail = |serial: &'static str| {
        let app = &app;
        async move {
            eventually(Duration::from_secs(30), "a reading over RTU", || async {
                let d = app.get_ok(&format!("/api/v1/devices/{serial}")).await.ok();
                Ok(d.filter(|d| !d["latest"].is_null()))
            })
            .await
        }
    };
    let one = detail("RTU-0001").await?;
    let two = detail("RTU-0002").await?;

    // assert
    assert_known_values(&one);
    assert_eq!(two["latest"]["values"]["o2_purity_pct"], 95.5);
    assert_eq!(two["latest"]["values"]["flow_lpm"], 3.0);
    assert_eq!(two["latest"]["values"]["outlet_pressure_kpa"], 30.0);
    assert_eq!(two["latest"]["alarms"], json!(["E102"]));
    for unit in ["RTU-0001", "RTU-0002"] {
        let ok = bridge
            .metric(&format!(
                r#"bridge_polls_total{{serial="{unit}",result="ok"}}"#
            ))
            .await?;
        assert!(ok >= 1.0, "{unit} polled over the shared line");
    }
    let report = bridge.interrupt().await?;
    assert_eq!(report["outbox_readings"], 0, "{report}");
    pty.stop().await;
    Ok(())
}

/// Nobody acknowledges: the outbox holds at most `max_readings_per_device` per device
/// (what it holds is never dropped), counts the polls it could not store, and polling
/// goes on.
#[tokio::test]
async fn a_full_outbox_stores_no_more_and_counts_what_it_refused() -> anyhow::Result<()> {
    let catalog = Catalog::from_toml_str(CATALOG)?;
    let maps = built_in_maps(&catalog)?;
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let fleet = ModbusFleet::start(
        ModbusFleetConfig {
            devices: 1,
            serial_prefix: "FULL".into(),
            tick: Duration::from_millis(50),
            ..ModbusFleetConfig::default()
        },
        &catalog,
        &maps,
        stop.clone(),
    )
    .await?;
    let data = tempfile::tempdir()?;
    let nobody = format!("mqtt://127.0.0.1:{}", free_port());
    let config = write_bridge_config(
        data.path(),
        &nobody,
        BUILT_IN_MAPS,
        &format!(
            "[outbox]\nmax_readings_per_device = 5\n\n{}",
            fleet.bridge_devices_toml(50)
        ),
    )?;
    let mut bridge = BridgeProc::spawn(&config, &data.path().join("outbox")).await?;
    let serial = fleet.devices()[0].serial.to_string();
    eventually(Duration::from_secs(20), "refused polls counted", || async {
        Ok((bridge.metric("bridge_outbox_full_total").await? >= 10.0).then_some(()))
    })
    .await?;
    assert_eq!(bridge.metric("bridge_outbox_readings").await?, 5.0);
    let ok = format!(r#"bridge_polls_total{{serial="{serial}",result="ok"}}"#);
    let polls = bridge.metric(&ok).await?;
    assert!(polls >= 15.0, "polling goes on: {polls}");
    let report = bridge.interrupt().await?;
    assert_eq!(report["outbox_readings"], 5, "{report}");
    Ok(())
}

/// Through an external broker: the broker stops (saving its state) while the bridge
/// polls, and comes back; fleetpulse ingests from it throughout. Every poll is delivered
/// once, in order.
#[tokio::test]
async fn a_broker_outage_loses_nothing() -> anyhow::Result<()> {
    let catalog = Catalog::from_toml_str(CATALOG)?;
    let maps = built_in_maps(&catalog)?;
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let fleet = ModbusFleet::start(
        ModbusFleetConfig {
            devices: 3,
            serial_prefix: "BRK".into(),
            tick: Duration::from_millis(100),
            ..ModbusFleetConfig::default()
        },
        &catalog,
        &maps,
        stop.clone(),
    )
    .await?;
    let mut broker = fleetpulse_system_tests::load::PersistentMosquitto::start(
        fleetpulse_system_tests::free_port(),
    )
    .await?;
    let data = tempfile::tempdir()?;
    let app = App::serve_external(
        &data.path().join("fleetpulse"),
        broker.addr,
        "fleetpulse-bridge-test",
    )
    .await?;
    let config = write_bridge_config(
        data.path(),
        &format!("mqtt://{}", broker.addr),
        BUILT_IN_MAPS,
        &fleet.bridge_devices_toml(100),
    )?;
    let mut bridge = BridgeProc::spawn(&config, &data.path().join("outbox")).await?;
    eventually(Duration::from_secs(20), "first readings stored", || async {
        Ok((app.stored_readings().await? >= 6).then_some(()))
    })
    .await?;

    // act: the broker goes away; the bridge keeps polling into its outbox
    broker.stop_gracefully().await?;
    eventually(Duration::from_secs(10), "the outbox filling", || async {
        Ok((bridge.metric("bridge_outbox_readings").await? >= 15.0).then_some(()))
    })
    .await?;
    broker.restart().await?;
    eventually(Duration::from_secs(30), "the outbox drained", || async {
        Ok((bridge.metric("bridge_outbox_readings").await? < 3.0).then_some(()))
    })
    .await?;
    let report = bridge.interrupt().await?;

    // assert
    assert_eq!(report["outbox_readings"], 0, "{report}");
    let polls = report["polls"].as_u64().unwrap_or(0) as usize;
    let total = eventually(Duration::from_secs(20), "every poll stored", || async {
        let n = app.stored_readings().await? as usize;
        Ok((n >= polls).then_some(n))
    })
    .await?;
    assert_eq!(total, polls, "stored readings = polls of the bridge");
    assert_eq!(assert_every_seq_once_in_order(&app, &fleet).await?, polls);
    Ok(())
}

/// fleetpulse with `mqtt.auth = "device_credentials"`: the bridge logs each device in with
/// its own token; a device without one is refused and its readings wait in the outbox.
#[tokio::test]
async fn each_device_logs_in_with_its_own_token() -> anyhow::Result<()> {
    let catalog = Catalog::from_toml_str(CATALOG)?;
    let maps = built_in_maps(&catalog)?;
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let fleet = ModbusFleet::start(
        ModbusFleetConfig {
            devices: 3,
            serial_prefix: "TOK".into(),
            tick: Duration::from_millis(200),
            ..ModbusFleetConfig::default()
        },
        &catalog,
        &maps,
        stop.clone(),
    )
    .await?;
    let data = tempfile::tempdir()?;
    let store_dir = data.path().join("fleetpulse");
    let mut devices = String::new();
    for (i, d) in fleet.devices().iter().enumerate() {
        devices += &format!(
            "[[device]]\nserial = \"{}\"\nmodel = \"{}\"\ntcp = \"{}\"\ninterval_ms = 200\n",
            d.serial, d.model, d.addr
        );
        if i < 2 {
            let (ok, token, stderr) = device_credential(&store_dir, d.serial.as_str(), &[]);
            assert!(ok, "{stderr}");
            devices += &format!("password = \"{}\"\n", token.trim());
        }
        devices += "\n";
    }
    let app = App::spawn_with_env(
        &store_dir,
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &[("FLEETPULSE_MQTT__AUTH", "device_credentials")],
    )
    .await?;
    let mqtt = app.mqtt.expect("built-in endpoint");
    let config = write_bridge_config(
        data.path(),
        &format!("mqtt://{mqtt}"),
        BUILT_IN_MAPS,
        &devices,
    )?;
    let mut bridge = BridgeProc::spawn(&config, &data.path().join("outbox")).await?;

    for d in &fleet.devices()[..2] {
        let serial = d.serial.to_string();
        eventually(Duration::from_secs(20), "readings with a token", || async {
            let (status, body) = app.get(&format!("/api/v1/devices/{serial}")).await?;
            Ok((status == 200 && !body["latest"].is_null()).then_some(()))
        })
        .await?;
    }
    let refused = fleet.devices()[2].serial.to_string();
    eventually(Duration::from_secs(10), "a refused login", || async {
        Ok((bridge.metric("bridge_mqtt_connect_failures_total").await? >= 1.0).then_some(()))
    })
    .await?;
    let (status, body) = app.get(&format!("/api/v1/devices/{refused}")).await?;
    assert!(
        status == 404 || body["latest"].is_null(),
        "no reading without a token: {status} {body}"
    );
    // it is still polled; its readings wait in the outbox
    let polled = format!(r#"bridge_polls_total{{serial="{refused}",result="ok"}}"#);
    eventually(
        Duration::from_secs(10),
        "the refused device polled",
        || async { Ok((bridge.metric(&polled).await? >= 2.0).then_some(())) },
    )
    .await?;
    let report = bridge.interrupt().await?;
    assert!(
        report["outbox_readings"].as_u64() > Some(0),
        "the refused device's readings stay for later: {report}"
    );
    Ok(())
}

/// Issue 20: with the MQTT side unreachable the bridge says so at once (one WARN at the
/// first failed connect), and then at most once per `UNREACHABLE_WARN_EVERY` however
/// often the links retry.
#[tokio::test]
async fn an_unreachable_mqtt_side_is_logged_at_once_and_then_rate_limited() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let nobody = format!("mqtt://127.0.0.1:{}", free_port());
    let config = write_bridge_config(
        data.path(),
        &nobody,
        BUILT_IN_MAPS,
        &format!(
            "[[device]]\nserial = \"UNR-1\"\nmodel = \"OC-5A\"\ntcp = \"127.0.0.1:{}\"\n",
            free_port()
        ),
    )?;
    let mut bridge = BridgeProc::spawn(&config, &data.path().join("outbox")).await?;
    let needle = "cannot connect to the MQTT side";
    let line = bridge.wait_for_line(needle, Duration::from_secs(5)).await?;
    assert!(line.contains("WARN") && line.contains(&nobody), "{line}");
    // the link retries every 100 ms–1 s (write_bridge_config): let it fail several times more
    eventually(Duration::from_secs(20), "more failed connects", || async {
        Ok((bridge.metric("bridge_mqtt_connect_failures_total").await? >= 6.0).then_some(()))
    })
    .await?;
    assert_eq!(
        bridge.lines_with(needle).len(),
        1,
        "one WARN per minute, not one per retry"
    );
    bridge.interrupt().await?;
    Ok(())
}

/// Issue 20: a relative `outbox.dir` is taken from the config file's folder (as a service
/// manager starts the bridge elsewhere), not from the working directory.
#[tokio::test]
async fn a_relative_outbox_dir_lives_beside_the_config_file() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let elsewhere = tempfile::tempdir()?;
    let config = write_bridge_config(
        data.path(),
        &format!("mqtt://127.0.0.1:{}", free_port()),
        BUILT_IN_MAPS,
        &format!(
            "[outbox]\ndir = \"state\"\n\n[[device]]\nserial = \"REL-1\"\nmodel = \"OC-5A\"\ntcp = \"127.0.0.1:{}\"\n",
            free_port()
        ),
    )?;
    let mut child = tokio::process::Command::new(fleetpulse_bin())
        .arg("bridge")
        .arg("-c")
        .arg(&config)
        .current_dir(elsewhere.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let beside = data.path().join("state/outbox.db");
    eventually(
        Duration::from_secs(20),
        "outbox.db beside the file",
        || async { Ok(beside.exists().then_some(())) },
    )
    .await?;
    assert!(
        !elsewhere.path().join("state").exists(),
        "nothing in the working directory"
    );
    child.kill().await?;
    Ok(())
}

/// The built-in endpoint over TLS with device tokens; with `mutual`, client certificates
/// (CA = the test PKI's) are required instead.
async fn tls_app(pki: &Pki, store_dir: &std::path::Path, mutual: bool) -> anyhow::Result<App> {
    let p = |p: &std::path::Path| p.display().to_string();
    let mut env = vec![
        ("FLEETPULSE_MQTT__TLS__CERT_FILE", p(&pki.server.cert)),
        ("FLEETPULSE_MQTT__TLS__KEY_FILE", p(&pki.server.key)),
        ("FLEETPULSE_MQTT__AUTH", "device_credentials".into()),
    ];
    if mutual {
        env.push(("FLEETPULSE_MQTT__TLS__CLIENT_CA_FILE", p(&pki.ca_file)));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    App::spawn_with_env(store_dir, &["serve", "--mqtt-listen", "127.0.0.1:0"], &env).await
}

/// Issue 20, bridge item 1: the real bridge polls pymodbus and publishes over TLS to the
/// real binary's TLS endpoint: one device with its own token (server CA from a path
/// relative to the config file, host name `localhost` checked against the certificate),
/// and one with a client certificate naming its serial and no password (an endpoint that
/// requires client certificates). Both are stored with exactly the values pymodbus holds.
#[tokio::test]
async fn the_bridge_publishes_over_tls_with_a_token_or_a_client_certificate() -> anyhow::Result<()>
{
    let pki = Pki::new()?;
    let device = PyModbus::start(&known_spec()).await?;
    let data = tempfile::tempdir()?;
    let store_dir = data.path().join("fleetpulse");
    let (ok, token, stderr) = device_credential(&store_dir, "TLS-0001", &[]);
    assert!(ok, "{stderr}");
    let app = tls_app(&pki, &store_dir, false).await?;
    let port = app.mqtt.expect("built-in endpoint").port();
    let url = format!("mqtts://localhost:{port}");
    let mtls_app = tls_app(&pki, &data.path().join("fleetpulse-mtls"), true).await?;
    let mtls_port = mtls_app.mqtt.expect("built-in endpoint").port();
    let device_toml = |serial: &str| {
        format!(
            "[[device]]\nserial = \"{serial}\"\nmodel = \"OC-5A\"\ntcp = \"{}\"\nunit = 1\ninterval_ms = 200\n",
            device.addr
        )
    };

    // a token, and the CA beside the config file (a relative path)
    let with_token = data.path().join("token");
    std::fs::create_dir_all(with_token.join("certs"))?;
    std::fs::copy(&pki.ca_file, with_token.join("certs/ca.pem"))?;
    let config = write_bridge_config(
        &with_token,
        &url,
        &[("OC-5A", TEST_MAP)],
        &format!(
            "[mqtt.tls]\nca_file = \"certs/ca.pem\"\n\n{}password = \"{}\"\n",
            device_toml("TLS-0001"),
            token.trim()
        ),
    )?;
    let mut by_token = BridgeProc::spawn(&config, &with_token.join("outbox")).await?;

    // a client certificate (CN = serial), no password
    let cert = pki.device("TLS-0002")?;
    let with_cert = data.path().join("cert");
    let config = write_bridge_config(
        &with_cert,
        &format!("mqtts://localhost:{mtls_port}"),
        &[("OC-5A", TEST_MAP)],
        &format!(
            "[mqtt.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n{}",
            pki.ca_file.display(),
            cert.cert.display(),
            cert.key.display(),
            device_toml("TLS-0002")
        ),
    )?;
    let mut by_cert = BridgeProc::spawn(&config, &with_cert.join("outbox")).await?;

    for (app, serial) in [(&app, "TLS-0001"), (&mtls_app, "TLS-0002")] {
        let detail = eventually(Duration::from_secs(30), "a reading over TLS", || async {
            let d = app.get_ok(&format!("/api/v1/devices/{serial}")).await.ok();
            Ok(d.filter(|d| !d["latest"].is_null()))
        })
        .await?;
        assert_known_values(&detail);
    }
    for bridge in [&mut by_token, &mut by_cert] {
        assert!(
            bridge.lines_with("TLS handshake failed").is_empty(),
            "no handshake failure"
        );
        let report = bridge.interrupt().await?;
        assert!(report["acked"].as_u64() > Some(0), "{report}");
    }
    Ok(())
}

/// Issue 20, bridge item 1: a server certificate from a CA the bridge does not trust
/// fails the handshake with one WARN naming the certificate problem (rustls' "invalid
/// peer certificate: …"; `BadSignature` here, as both test CAs carry the same name), the
/// rate-limited WARN of an unreachable MQTT side, and retries;
/// nothing is stored and the readings wait in the outbox.
#[tokio::test]
async fn a_wrong_ca_is_named_in_the_log_and_the_bridge_keeps_retrying() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let stranger = Pki::new()?;
    let device = PyModbus::start(&known_spec()).await?;
    let data = tempfile::tempdir()?;
    let store_dir = data.path().join("fleetpulse");
    let (ok, token, stderr) = device_credential(&store_dir, "TLS-0003", &[]);
    assert!(ok, "{stderr}");
    let app = tls_app(&pki, &store_dir, false).await?;
    let port = app.mqtt.expect("built-in endpoint").port();
    let config = write_bridge_config(
        data.path(),
        &format!("mqtts://localhost:{port}"),
        &[("OC-5A", TEST_MAP)],
        &format!(
            "[mqtt.tls]\nca_file = \"{}\"\n\n[[device]]\nserial = \"TLS-0003\"\nmodel = \"OC-5A\"\ntcp = \"{}\"\nunit = 1\ninterval_ms = 200\npassword = \"{}\"\n",
            stranger.ca_file.display(),
            device.addr,
            token.trim()
        ),
    )?;
    let mut bridge = BridgeProc::spawn(&config, &data.path().join("outbox")).await?;
    let line = bridge
        .wait_for_line("TLS handshake failed", Duration::from_secs(10))
        .await?;
    assert!(
        line.contains("WARN")
            && line.contains("invalid peer certificate")
            && line.contains("TLS-0003"),
        "{line}"
    );
    let unreachable = bridge
        .wait_for_line("cannot connect to the MQTT side", Duration::from_secs(10))
        .await?;
    assert!(unreachable.contains("WARN"), "{unreachable}");
    // it keeps retrying (every 100 ms–1 s), with no new WARN per retry
    eventually(Duration::from_secs(20), "more failed connects", || async {
        Ok((bridge.metric("bridge_mqtt_connect_failures_total").await? >= 5.0).then_some(()))
    })
    .await?;
    assert_eq!(bridge.lines_with("TLS handshake failed").len(), 1);
    let (status, body) = app.get("/api/v1/devices/TLS-0003").await?;
    assert!(
        status == 404 || body["latest"].is_null(),
        "nothing stored: {status} {body}"
    );
    let report = bridge.interrupt().await?;
    assert!(
        report["outbox_readings"].as_u64() > Some(0),
        "the readings wait in the outbox: {report}"
    );
    Ok(())
}
