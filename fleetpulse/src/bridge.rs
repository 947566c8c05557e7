//! `fleetpulse bridge`, `fleetpulse simulate-modbus`, and the bridge of `demo
//! --modbus-devices`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fleetpulse_domain::Catalog;
use fleetpulse_firmware_bridge::config::{MqttConfig, OutboxConfig, Secret};
use fleetpulse_firmware_bridge::registers::{BUILT_IN_MAPS, built_in_maps};
use fleetpulse_firmware_bridge::simulated::{ModbusFleet, ModbusFleetConfig};
use fleetpulse_firmware_bridge::{Bridge, BridgeConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::{announce, init_logging, shutdown_on_signal};
use crate::cli::{BridgeArgs, FleetArgs, SimulateModbusArgs};
use crate::config::{Config, EMBEDDED_CATALOG, LogFormat};

/// `fleetpulse bridge`: load, validate, poll and publish until Ctrl-C / SIGTERM.
pub async fn run_bridge(args: BridgeArgs) -> anyhow::Result<()> {
    init_logging("info", LogFormat::Text);
    let mut cfg = BridgeConfig::load(&args.config, EMBEDDED_CATALOG)?;
    if let Some(url) = args.mqtt_url {
        cfg.mqtt.url = url;
    }
    if let Some(password) = args.device_password {
        let password = Secret::new(password);
        cfg.mqtt.password = Some(password.clone());
        for d in &mut cfg.devices {
            d.password = Some(password.clone());
        }
    }
    if let Some(dir) = args.outbox {
        cfg.outbox.dir = dir;
    }
    if let Some(addr) = args.metrics {
        cfg.metrics_listen = Some(addr);
    }
    if args.check {
        println!(
            "{}: {} devices, publishing to {}, outbox {}",
            args.config.display(),
            cfg.devices.len(),
            cfg.mqtt.url,
            cfg.outbox.dir.display()
        );
        for (model, map) in &cfg.maps {
            println!(
                "  {model}: {} fields, {} alarm bits, {} reads per poll ({})",
                map.fields.len(),
                map.alarms.len(),
                map.reads.len(),
                map.source.display()
            );
        }
        return Ok(());
    }
    let devices = cfg.devices.len();
    let url = cfg.mqtt.url.clone();
    let bridge = Bridge::start(cfg).await?;
    if let Some(addr) = bridge.metrics_addr() {
        announce(&format!("bridge metrics on http://{addr}/metrics"));
    }
    announce(&format!(
        "bridge polling {devices} devices, publishing to {url}"
    ));
    let report = bridge.run(shutdown_on_signal()).await?;
    announce(&format!(
        "bridge stopped: {}",
        serde_json::to_string(&report)?
    ));
    Ok(())
}

/// `fleetpulse simulate-modbus`.
pub async fn simulate_modbus(args: SimulateModbusArgs) -> anyhow::Result<()> {
    init_logging("info", LogFormat::Text);
    let catalog = Catalog::from_toml_str(EMBEDDED_CATALOG)?;
    let maps = built_in_maps(&catalog)?;
    let stop = shutdown_on_signal();
    if let Some(secs) = args.duration {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            s.cancel();
        });
    }
    let fleet = ModbusFleet::start(
        ModbusFleetConfig {
            devices: args.devices,
            seed: args.seed,
            speed: args.speed,
            tick: Duration::from_millis(args.interval_ms.max(10)),
            serial_prefix: args.serial_prefix.clone(),
            listen: args.listen,
            unit: 1,
            clock: fleetpulse_domain::Clock::Wall,
        },
        &catalog,
        &maps,
        stop.clone(),
    )
    .await?;
    if let Some(path) = &args.bridge_config {
        write_bridge_config(path, &fleet, &args)?;
        announce(&format!(
            "bridge configuration written to {}",
            path.display()
        ));
    }
    announce(&format!(
        "simulating {} modbus devices on {}",
        fleet.devices().len(),
        args.listen
    ));
    fleet.join().await;
    announce("stopped cleanly");
    Ok(())
}

fn write_bridge_config(
    path: &Path,
    fleet: &ModbusFleet,
    args: &SimulateModbusArgs,
) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let registers = dir.join("registers");
    std::fs::create_dir_all(&registers)
        .with_context(|| format!("creating {}", registers.display()))?;
    for (model, text) in BUILT_IN_MAPS {
        let p = registers.join(format!("{model}.toml"));
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    let text = format!(
        "# Written by `fleetpulse simulate-modbus`: a bridge polling {} simulated devices.\n\
         registers_dir = \"registers\"\n\n[mqtt]\nurl = \"{}\"\n\n[polling]\ninterval_ms = {}\ntimeout_ms = 1000\n\n{}",
        fleet.devices().len(),
        args.mqtt_url,
        args.interval_ms,
        fleet.bridge_devices_toml(args.interval_ms)
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `demo --modbus-devices N`: simulated Modbus devices and a bridge publishing them to the
/// built-in endpoint at `mqtt_url`; both stop with `stop`.
pub async fn start_demo_bridge(
    devices: usize,
    fleet: &FleetArgs,
    mqtt_url: String,
    cfg: &Config,
    catalog: &Arc<Catalog>,
    clock: fleetpulse_domain::Clock,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let maps = built_in_maps(catalog)?;
    let interval = Duration::from_millis(fleet.interval_ms.max(10));
    // the devices outlive the bridge, so its last polls do not see them vanish
    let sim_stop = CancellationToken::new();
    let sim = ModbusFleet::start(
        ModbusFleetConfig {
            devices,
            seed: fleet.seed,
            speed: fleet.speed,
            tick: interval,
            serial_prefix: "MB".into(),
            clock,
            ..ModbusFleetConfig::default()
        },
        catalog,
        &maps,
        sim_stop.clone(),
    )
    .await?;
    let password = cfg.mqtt.password.clone().map(Secret::new);
    let mut mqtt = MqttConfig::new(mqtt_url);
    mqtt.password = password.clone();
    let bridge_cfg = BridgeConfig {
        mqtt,
        outbox: OutboxConfig {
            dir: cfg.data.dir.join("bridge"),
            ..OutboxConfig::default()
        },
        metrics_listen: None,
        devices: sim
            .bridge_devices(interval, Duration::from_secs(1))
            .into_iter()
            .map(|mut d| {
                d.password = password.clone();
                d
            })
            .collect(),
        maps,
    };
    let bridge = Bridge::start(bridge_cfg).await?;
    announce(&format!(
        "bridging {devices} simulated modbus devices to the device endpoint"
    ));
    Ok(tokio::spawn(async move {
        match bridge.run(stop).await {
            Ok(report) => info!(?report, "firmware bridge finished"),
            Err(e) => warn!(error = %e, "firmware bridge ended with an error"),
        }
        sim_stop.cancel();
        sim.join().await;
    }))
}
