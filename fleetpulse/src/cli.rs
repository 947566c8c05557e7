//! Command line: `serve`, `demo`, `simulate`, `bridge`, `simulate-modbus`, `check-config`,
//! `device`, `token`, `import`, `report`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

/// fleetpulse: telemetry from connected home medical equipment in, maintenance and repair
/// work orders out.
#[derive(Debug, Parser)]
#[command(name = "fleetpulse", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role in one process: device endpoint (or external-broker ingest),
    /// pipeline, rules and HTTP API.
    Serve(ServeArgs),
    /// `serve` plus a simulated fleet publishing to the built-in endpoint: try the whole
    /// chain with nothing installed.
    Demo(DemoArgs),
    /// Run only the fleet simulator against any MQTT endpoint (fleetpulse's own, or a broker).
    Simulate(SimulateArgs),
    /// Load and validate the configuration, catalog and policy; print the effective
    /// configuration (secrets redacted) and exit.
    CheckConfig(CommonArgs),
    /// Poll Modbus TCP devices by register map and publish them as v1 telemetry over
    /// MQTT (the firmware bridge; docs/bridge.md).
    Bridge(BridgeArgs),
    /// Serve simulated devices as Modbus TCP servers (one port each), optionally writing
    /// a bridge configuration that polls them.
    SimulateModbus(SimulateModbusArgs),
    /// Manage devices in the registry.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage API tokens (works while `serve` runs).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Load history of any age from CSV: devices, failures, maintenance, meters,
    /// telemetry, alarms (columns in docs/reliability-data.md); bad rows are reported by
    /// line, the good ones load, re-importing adds nothing.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Write reliability reports as CSV and JSON files.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Run the predictors once over the store and raise their orders (due dates,
    /// bundling, storm control), as the analytics worker's schedule does; prints the run
    /// report as JSON. Works while `serve` runs. With --as-of (a past time) on the data
    /// before it, raising no order and storing nothing: the forecasts are printed.
    Predict(AnalyticsArgs),
    /// Train the failure-risk models once over the store, as the analytics worker's
    /// schedule does (stored; deployed only where they beat both baselines and the
    /// current model); prints their reports as JSON. Works while `serve` runs. With
    /// --as-of, on the data before it; the models are stored with that as-of.
    Train(AnalyticsArgs),
    /// Backtest the failure-risk predictions: train with what was known at
    /// --train-until, replay the forecasts over (train-until, until] every --step-hours as
    /// the analytics worker raises warnings, and score them per failure mode next to the
    /// baselines; prints a table and writes backtest.csv and backtest.json. Reads the
    /// store only: nothing is stored, no order is raised.
    Backtest(BacktestArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BacktestArgs {
    /// Train as of this time (RFC 3339): nothing at or after it is read for training.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub train_until: chrono::DateTime<chrono::Utc>,
    /// Replay up to this time (RFC 3339, not in the future; default: now).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Hours between two replayed forecasts of a device (the live worker forecasts every
    /// analytics.predict_interval_s).
    #[arg(long, value_name = "HOURS", default_value_t = 24.0)]
    pub step_hours: f64,
    /// Directory backtest.csv and backtest.json are written to (created when missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Devices with their commissioning: serial, model, status, criticality, region,
    /// address, commissioned_at, runtime_hours_at_registration, observed_from.
    Devices(ImportArgs),
    /// Past failures: serial, at, runtime_hours, fault_code, failure_mode, component,
    /// notes.
    Failures(ImportArgs),
    /// Past maintenance: serial, at, runtime_hours, kind (a catalog maintenance kind:
    /// service, consumable, replacement, inspection, ...), component (consumable is its
    /// old name), notes.
    Maintenance(ImportArgs),
    /// Meter history: serial, at, runtime_hours and other cumulative hour meters (one
    /// column each).
    Meters(ImportArgs),
    /// Telemetry backfill of registered devices, of any age: serial, at and one column
    /// per telemetry field; written as hourly rollups.
    Telemetry(ImportArgs),
    /// Past alarm (error) events as alarm episodes: serial, started_at, ended_at (empty:
    /// an instant event), code, severity, runtime_hours. They raise no failure event and
    /// no order.
    Alarms(ImportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The CSV file (header row first; UTF-8).
    pub file: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// MTBF, Weibull, Pareto, trend and MTTR tables of a period, one CSV file each, and
    /// the whole report as JSON.
    Reliability(ReliabilityReportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ReliabilityReportArgs {
    /// Start of the period (RFC 3339, inclusive); default: 12 months before --to.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// End of the period (RFC 3339, exclusive); default: now.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Read the data as it was known at this time (RFC 3339, not in the future): nothing
    /// recorded at or after it is read; the period ends there when that is earlier.
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
    /// Directory the files are written to (created when missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Groupings, comma-separated: fleet, model, kind, region, failure_mode, code,
    /// component. Weibull fits by component or failure_mode are on component lives
    /// (written to component_lives.csv).
    #[arg(long, value_name = "LIST", default_value = "fleet")]
    pub group_by: String,
    /// Confidence level of the bounds, 0 < c < 1.
    #[arg(long, default_value_t = 0.9)]
    pub confidence: f64,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token and print it once on stdout; only its SHA-256 digest is stored.
    Create(TokenCreateArgs),
    /// List tokens (id, name, role, created, revoked); never a secret.
    List(StoreArgs),
    /// Revoke a token by id: it stops working at once.
    Revoke(TokenRevokeArgs),
}

/// Where the store is, for commands that only touch the store.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Configuration file (TOML), for data.dir.
    #[arg(long, short = 'c', env = "FLEETPULSE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory where state lives (data.dir).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

impl StoreArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data: self.data.clone(),
            ..Overrides::default()
        }
    }
}

/// `predict` and `train`: the store, and the as-of time of the run.
#[derive(Debug, Clone, Args)]
pub struct AnalyticsArgs {
    /// Run as of this time (RFC 3339, e.g. 2025-06-01T00:00:00Z; not in the future;
    /// default: now): nothing at or after it is read (docs/predictions.md, "As-of time").
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 time such as 2025-06-01T00:00:00Z: {e}"))
}

#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    /// dispatcher, planner, quality, admin or device-admin.
    #[arg(long)]
    pub role: String,
    /// Who or what uses the token (shown in the audit log).
    #[arg(long, default_value = "cli")]
    pub name: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TokenRevokeArgs {
    /// The token's id (from `token list`).
    pub id: i64,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Issue a new MQTT token for a device (mqtt.auth = "device_credentials") and print it
    /// once on stdout; only its SHA-256 digest is stored. Running it again rotates the
    /// token: the old one stops working at once. Works while `serve` runs.
    Credential(CredentialArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CredentialArgs {
    /// The device's serial: its MQTT client id and user name.
    pub serial: String,
    /// Remove the device's token instead: it can no longer log in with one.
    #[arg(long)]
    pub revoke: bool,
    /// Configuration file (TOML), for data.dir.
    #[arg(long, short = 'c', env = "FLEETPULSE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory where state lives (data.dir).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

impl CredentialArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data: self.data.clone(),
            ..Overrides::default()
        }
    }
}

/// Options every service command takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Configuration file (TOML). Without it: embedded defaults, then FLEETPULSE_* variables.
    #[arg(long, short = 'c', env = "FLEETPULSE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP API listen address (http.listen), e.g. 127.0.0.1:8080; port 0 picks a free one.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Directory where state lives (data.dir).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Subscribe to an external MQTT broker instead of running the built-in device
    /// endpoint (broker.url), e.g. mqtt://127.0.0.1:1883.
    #[arg(long, value_name = "URL", conflicts_with = "mqtt_listen")]
    pub mqtt_url: Option<String>,
    /// Built-in MQTT device endpoint listen address (mqtt.listen); port 0 picks a free one.
    #[arg(long, value_name = "ADDR")]
    pub mqtt_listen: Option<SocketAddr>,
    /// Also write every stored reading to a time-series server speaking the InfluxDB v2
    /// write API (sink.url), e.g. http://127.0.0.1:8086; the other [sink] settings
    /// complete it.
    #[arg(long, value_name = "URL")]
    pub sink_url: Option<String>,
}

impl CommonArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            http: self.http,
            data: self.data.clone(),
            mqtt_url: self.mqtt_url.clone(),
            mqtt_listen: self.mqtt_listen,
            sink_url: self.sink_url.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Shape of a simulated fleet.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Number of simulated devices.
    #[arg(long, default_value_t = 300)]
    pub devices: usize,
    /// Seed: the same seed gives the same fleet, the same readings and the same failures.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Time-speed factor: simulated seconds per wall-clock second. `demo` runs the whole
    /// process on a simulated clock this fast (timestamps, runtime hours, wear, SLA
    /// deadlines and statistics agree); `simulate` accelerates the devices' physics and
    /// stamps readings with the wall clock.
    #[arg(long, default_value_t = 3600.0)]
    pub speed: f64,
    /// Wall-clock milliseconds between two readings of one device.
    #[arg(long, default_value_t = 2000)]
    pub interval_ms: u64,
    /// Serial prefix of the simulated devices.
    #[arg(long, default_value = "SIM")]
    pub serial_prefix: String,
    /// Append the simulator's ground truth (failures, repairs, filter changes) as JSON
    /// lines to this file.
    #[arg(long, value_name = "FILE")]
    pub ground_truth: Option<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Also simulate this many Modbus TCP devices (serials MB-…), polled by a firmware
    /// bridge in the same process that publishes to the built-in endpoint.
    #[arg(long, default_value_t = 0)]
    pub modbus_devices: usize,
    /// Days of the fleet's history written through the history import before the demo
    /// goes live, ending at the demo clock's start (0: none). Only into a data directory
    /// without devices.
    #[arg(long, default_value_t = 730, value_name = "DAYS")]
    pub history_days: u32,
}

#[derive(Debug, Clone, Args)]
pub struct BridgeArgs {
    /// Bridge configuration file (TOML): devices, MQTT side, outbox, polling.
    #[arg(
        long,
        short = 'c',
        env = "FLEETPULSE_BRIDGE_CONFIG",
        value_name = "FILE"
    )]
    pub config: PathBuf,
    /// Publish to this endpoint or broker instead of mqtt.url, e.g. mqtt://127.0.0.1:1884.
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// Password the devices present (user name = serial), instead of mqtt.password.
    #[arg(long, env = "FLEETPULSE_DEVICE_PASSWORD", hide_env_values = true)]
    pub device_password: Option<String>,
    /// Outbox directory (outbox.dir).
    #[arg(long, value_name = "DIR")]
    pub outbox: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics (metrics_listen); port 0 picks one.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Validate the configuration and register maps, print a summary and exit.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateModbusArgs {
    /// Number of simulated Modbus devices.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// Seed: the same seed gives the same fleet.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Simulated device seconds per wall-clock second.
    #[arg(long, default_value_t = 3600.0)]
    pub speed: f64,
    /// Serial prefix of the simulated devices.
    #[arg(long, default_value = "MB")]
    pub serial_prefix: String,
    /// Address the devices listen on (one free port each).
    #[arg(long, default_value = "127.0.0.1")]
    pub listen: IpAddr,
    /// Write a bridge configuration polling these devices to FILE (and the built-in
    /// register maps to registers/ beside it).
    #[arg(long, value_name = "FILE")]
    pub bridge_config: Option<PathBuf>,
    /// mqtt.url of the written bridge configuration.
    #[arg(long, default_value = "mqtt://127.0.0.1:1884")]
    pub mqtt_url: String,
    /// Poll interval of the written bridge configuration.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Where the devices connect: fleetpulse's device endpoint or a broker, mqtt://host:port.
    #[arg(long, value_name = "URL")]
    pub mqtt_url: String,
    /// Password the devices present (user name = serial), if the endpoint requires one.
    #[arg(long, env = "FLEETPULSE_DEVICE_PASSWORD", hide_env_values = true)]
    pub device_password: Option<String>,
    /// Catalog file (default: the one built into the binary).
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed_and_flags_parse() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "fleetpulse",
            "demo",
            "--devices",
            "10",
            "--seed",
            "7",
            "--speed",
            "60",
            "--http",
            "127.0.0.1:0",
            "--data",
            "/tmp/x",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .expect("valid");
        let Command::Demo(d) = cli.command else {
            panic!("demo expected")
        };
        assert_eq!(
            (d.fleet.devices, d.fleet.seed, d.fleet.speed),
            (10, 7, 60.0)
        );
        let cli = Cli::try_parse_from([
            "fleetpulse",
            "bridge",
            "-c",
            "bridge.toml",
            "--metrics",
            "127.0.0.1:0",
            "--outbox",
            "/tmp/o",
        ])
        .expect("valid");
        let Command::Bridge(b) = cli.command else {
            panic!("bridge expected")
        };
        assert_eq!(b.config, PathBuf::from("bridge.toml"));
        assert!(b.metrics.is_some() && !b.check);
        let cli =
            Cli::try_parse_from(["fleetpulse", "demo", "--modbus-devices", "5"]).expect("valid");
        let Command::Demo(d) = cli.command else {
            panic!("demo expected")
        };
        assert_eq!(d.modbus_devices, 5);
        assert!(
            Cli::try_parse_from([
                "fleetpulse",
                "serve",
                "--mqtt-url",
                "mqtt://h:1",
                "--mqtt-listen",
                "127.0.0.1:0"
            ])
            .is_err()
        );
        let cli = Cli::try_parse_from(["fleetpulse", "device", "credential", "OC5-1", "--revoke"])
            .expect("valid");
        let Command::Device(DeviceCommand::Credential(c)) = cli.command else {
            panic!("device credential expected")
        };
        assert!(c.revoke && c.serial == "OC5-1");
    }
}
