//! Runs a simulated fleet against an MQTT endpoint and prints its report: a quick way to
//! see what one process sustains.
//!
//! `cargo run --release -p fleetpulse-simulator --example load -- mqtt://127.0.0.1:1884 CATALOG.toml 5000 30`
//! (URL, catalog file, devices, seconds; 2 s publish interval, speed 3600).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fleetpulse_domain::Catalog;
use fleetpulse_simulator::{SimConfig, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, catalog, devices, seconds] = &args[..] else {
        anyhow::bail!("usage: load URL CATALOG.toml DEVICES SECONDS");
    };
    let catalog =
        Catalog::from_toml_str(&std::fs::read_to_string(catalog).context("reading the catalog")?)?;
    let cfg = SimConfig {
        mqtt_url: url.clone(),
        devices: devices.parse()?,
        seed: 42,
        speed: 3600.0,
        publish_interval: Duration::from_secs(2),
        serial_prefix: "LOAD".into(),
        password: None,
        ground_truth_path: None,
        max_duration: Some(Duration::from_secs(seconds.parse()?)),
        clock: Default::default(),
    };
    let report = run(cfg, Arc::new(catalog), std::future::pending()).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
