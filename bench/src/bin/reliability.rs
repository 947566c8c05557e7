//! Reliability statistics benchmark. Prints figures; asserts nothing.
//!
//! Builds a synthetic [`ReliabilityData`] in memory — by default 100 000 devices across the
//! catalog's four models, 24 months of exposure each (2.4 M device-month rows), failures
//! per failure mode drawn from known Weibull distributions (a renewal process per device
//! and mode from age 0), a repair order for most failures plus preventive orders (about
//! 200 000 failure and maintenance events in all), alarm episodes and data-quality
//! findings — then times the full recomputation of every statistic:
//! `compute` grouped by model and by model × failure mode (MTBF, Weibull with bounds,
//! Pareto, trend by month, MTTR), and prints wall seconds and peak RSS (VmHWM).
//!
//! It then writes the same Weibull populations (model × failure mode, and per model) to a
//! temporary CSV, times Python `reliability`'s `Fit_Weibull_2P` on them (only the fits,
//! timed inside Python) against the Rust fits of the same populations, prints the ratio,
//! and the largest relative difference of β and η between the two.
//!
//! Run: `cargo run --release -p fleetpulse-bench --bin reliability` (`--no-python` to skip
//! the comparison; `--devices`, `--months`, `--seed` to vary the data).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use clap::Parser;
use fleetpulse_analytics::{GroupKey, ReportQuery, compute, weibull, weibull_samples};
use fleetpulse_domain::reliability::{
    AlarmRecord, DataQualityIssue, ExposureRow, FailureRecord, FailureSource, Period,
    PopulationDevice, ReliabilityData, RepairRecord,
};
use fleetpulse_domain::serial::Serial;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Parser, Debug)]
#[command(about = "fleetpulse reliability statistics benchmark")]
struct Args {
    /// Devices in the fleet (split evenly over the catalog's models).
    #[arg(long, default_value_t = 100_000)]
    devices: usize,
    /// Months of exposure per device.
    #[arg(long, default_value_t = 24)]
    months: u32,
    /// Seed of the generator.
    #[arg(long, default_value_t = 6)]
    seed: u64,
    /// Skip the Python `reliability` comparison.
    #[arg(long)]
    no_python: bool,
    /// The Python interpreter with `reliability` installed.
    #[arg(long, default_value = "python3")]
    python: String,
}

/// One catalog model with its failure modes: (mode, code, true β, true η in hours).
struct Model {
    id: &'static str,
    kind: &'static str,
    /// Usage in hours per day: (min, max).
    usage: (f64, f64),
    modes: &'static [(&'static str, &'static str, f64, f64)],
    warnings: &'static [&'static str],
}

/// The catalog's models (config/catalog.toml) and failure modes, with the Weibull
/// parameters the benchmark draws from.
const MODELS: &[Model] = &[
    Model {
        id: "OC-5A",
        kind: "oxygen_concentrator",
        usage: (14.0, 24.0),
        modes: &[
            ("compressor", "E101", 2.2, 20_800.0),
            ("sieve_bed", "E102", 1.6, 27_200.0),
            ("cooling", "E103", 0.8, 96_000.0),
        ],
        warnings: &["W201", "W202", "W203", "P301"],
    },
    Model {
        id: "OC-10",
        kind: "oxygen_concentrator",
        usage: (14.0, 24.0),
        modes: &[
            ("compressor", "E101", 2.6, 19_200.0),
            ("sieve_bed", "E102", 1.4, 24_000.0),
            ("rotary_valve", "E104", 3.1, 22_400.0),
        ],
        warnings: &["W201", "W204", "P301"],
    },
    Model {
        id: "HV-200",
        kind: "ventilator",
        usage: (8.0, 24.0),
        modes: &[
            ("blower", "V101", 1.9, 24_000.0),
            ("battery", "V102", 3.5, 12_800.0),
            ("pressure_sensor", "V103", 0.9, 48_000.0),
        ],
        warnings: &["V201", "V202", "V203", "V401"],
    },
    Model {
        id: "HV-150",
        kind: "ventilator",
        usage: (8.0, 24.0),
        modes: &[
            ("blower", "V101", 1.7, 20_800.0),
            ("battery", "V102", 3.0, 11_200.0),
        ],
        warnings: &["V201", "V202", "V301"],
    },
];

const REGIONS: &[&str] = &["north", "south", "east", "west", "central"];

fn month_start(start: DateTime<Utc>, m: u32) -> DateTime<Utc> {
    let total = start.year() * 12 + start.month0() as i32 + m as i32;
    Utc.with_ymd_and_hms(
        total.div_euclid(12),
        total.rem_euclid(12) as u32 + 1,
        1,
        0,
        0,
        0,
    )
    .single()
    .expect("first of a month is a valid UTC instant")
}

/// The synthetic fleet.
fn generate(args: &Args) -> anyhow::Result<ReliabilityData> {
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let start = Utc
        .with_ymd_and_hms(2024, 12, 1, 0, 0, 0)
        .single()
        .context("start date")?;
    let end = month_start(start, args.months);
    let mut data = ReliabilityData {
        period: Some(Period {
            from: start,
            to: end,
        }),
        devices: Vec::with_capacity(args.devices),
        exposure: Vec::with_capacity(args.devices * args.months as usize),
        ..ReliabilityData::default()
    };
    let month_starts: Vec<DateTime<Utc>> =
        (0..=args.months).map(|m| month_start(start, m)).collect();
    let (mut failure_id, mut order_id) = (0i64, 0i64);
    for d in 0..args.devices {
        let model = &MODELS[d % MODELS.len()];
        let serial = Serial::parse(&format!("{}-{d:06}", model.id)).context("serial")?;
        let per_day = rng.random_range(model.usage.0..model.usage.1);
        // a constant daily usage: age grows linearly with calendar time
        let mut age = 0.0;
        for m in 0..args.months as usize {
            let days = (month_starts[m + 1] - month_starts[m]).num_seconds() as f64 / 86_400.0;
            let hours = per_day * days;
            let gap = if rng.random::<f64>() < 0.01 { 6.0 } else { 0.0 };
            data.exposure.push(ExposureRow {
                serial: serial.clone(),
                month: month_starts[m],
                hours,
                resets: 0,
                gap_hours: gap,
            });
            if gap > 0.0 {
                data.quality.push(DataQualityIssue {
                    serial: serial.clone(),
                    kind: "gap".to_owned(),
                    at: Some(month_starts[m]),
                    detail: "6 h without readings".to_owned(),
                });
            }
            age += hours;
        }
        let age_at_end = age;
        let at_age = |a: f64| start + Duration::seconds((a / per_day * 86_400.0) as i64);
        for &(mode, code, beta, eta) in model.modes {
            // a renewal process: the repaired part starts again at its failure age
            let mut t = 0.0;
            loop {
                let u = 1.0 - rng.random::<f64>();
                t += eta * (-u.ln()).powf(1.0 / beta);
                if t > age_at_end {
                    break;
                }
                failure_id += 1;
                let at = at_age(t);
                let from_alarm_only = rng.random::<f64>() < 0.08;
                let order = if from_alarm_only {
                    None
                } else {
                    order_id += 1;
                    let created = at + Duration::minutes(rng.random_range(1..2880));
                    let started = created + Duration::minutes(rng.random_range(60..4320));
                    let closed = started + Duration::minutes(rng.random_range(30..480));
                    let closed = (closed < end).then_some(closed);
                    data.repairs.push(RepairRecord {
                        order_id,
                        serial: serial.clone(),
                        cause: format!("critical_alarm:{code}"),
                        created_at: created,
                        started_at: Some(started),
                        closed_at: closed,
                        completed: closed.map(|_| true),
                        failure_confirmed: closed.map(|_| true),
                        fault_code: Some(code.to_owned()),
                        labour_minutes: Some(rng.random_range(30..240)),
                    });
                    Some(order_id)
                };
                data.failures.push(FailureRecord {
                    id: failure_id,
                    serial: serial.clone(),
                    at,
                    age_hours: Some(t),
                    code: Some(code.to_owned()),
                    failure_mode: Some(mode.to_owned()),
                    component: None,
                    source: if order.is_some() {
                        FailureSource::RepairOrder
                    } else {
                        FailureSource::Alarm
                    },
                    order_id: order,
                    alarm_episode_id: None,
                });
            }
        }
        // a preventive order for one device in four; warning episodes
        if rng.random::<f64>() < 0.25 {
            order_id += 1;
            let created = at_age(rng.random_range(0.0..age_at_end));
            let closed = created + Duration::hours(rng.random_range(24..240));
            data.repairs.push(RepairRecord {
                order_id,
                serial: serial.clone(),
                cause: "service_interval".to_owned(),
                created_at: created,
                started_at: Some(closed - Duration::hours(1)),
                closed_at: (closed < end).then_some(closed),
                completed: (closed < end).then_some(true),
                failure_confirmed: Some(false),
                fault_code: None,
                labour_minutes: Some(60),
            });
        }
        for _ in 0..rng.random_range(0..3) {
            let code = model.warnings[rng.random_range(0..model.warnings.len())];
            data.alarms.push(AlarmRecord {
                serial: serial.clone(),
                code: code.to_owned(),
                severity: Some("warning".to_owned()),
                started_at: at_age(rng.random_range(0.0..age_at_end)),
                duration_s: Some(rng.random_range(10.0..3600.0)),
            });
        }
        data.devices.push(PopulationDevice {
            serial,
            model: Some(model.id.to_owned()),
            kind: Some(model.kind.to_owned()),
            region: Some(REGIONS[d % REGIONS.len()].to_owned()),
            age_at_start: Some(0.0),
            age_at_end: Some(age_at_end),
        });
    }
    Ok(data)
}

/// VmHWM (peak resident set) and VmRSS of this process, in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

const PYTHON_FITS: &str = r#"
import csv, json, sys, time, warnings
warnings.filterwarnings("ignore")
from reliability.Fitters import Fit_Weibull_2P
groups = {}
with open(sys.argv[1]) as fh:
    for row in csv.DictReader(fh):
        g = groups.setdefault(row["group"], ([], []))
        (g[0] if row["failed"] == "1" else g[1]).append(float(row["hours"]))
out = {}
total = 0.0
for name, (f, s) in groups.items():
    t0 = time.perf_counter()
    fit = Fit_Weibull_2P(failures=f, right_censored=s or None, CI=0.90, show_probability_plot=False, print_results=False)
    total += time.perf_counter() - t0
    out[name] = {"alpha": fit.alpha, "beta": fit.beta}
print(json.dumps({"seconds": total, "fits": out}))
"#;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "reliability benchmark: {} devices, {} months, seed {}",
        args.devices, args.months, args.seed
    );
    let t = Instant::now();
    let data = generate(&args)?;
    let (_, rss_data) = memory_mib();
    println!(
        "generated in {:.2} s: {} devices, {} exposure rows, {} failures, {} repair orders ({} failure and maintenance events), {} alarm episodes, {} quality findings; RSS with the data {:.0} MiB",
        t.elapsed().as_secs_f64(),
        data.devices.len(),
        data.exposure.len(),
        data.failures.len(),
        data.repairs.len(),
        data.failures.len() + data.repairs.len(),
        data.alarms.len(),
        data.quality.len(),
        rss_data,
    );

    let queries = [
        ("fleet", vec![GroupKey::Fleet]),
        ("model", vec![GroupKey::Model]),
        (
            "model x failure_mode",
            vec![GroupKey::Model, GroupKey::FailureMode],
        ),
    ];
    let total = Instant::now();
    let mut reports = Vec::new();
    for (name, keys) in &queries {
        let q = ReportQuery {
            group_by: keys.clone(),
            reliability_at_hours: vec![1000.0, 8760.0],
            conditional: Some(fleetpulse_analytics::ConditionalQuery {
                age_hours: 8760.0,
                horizon_hours: 720.0,
            }),
            ..ReportQuery::default()
        };
        let t = Instant::now();
        let report = compute(&data, &q)?;
        println!(
            "  compute group_by {name:<22} {:>6.3} s  ({} MTBF rows, {} Weibull fits, {} trend rows, {} Pareto bars, {} MTTR rows)",
            t.elapsed().as_secs_f64(),
            report.mtbf.len(),
            report.weibull.len(),
            report.trend.len(),
            report.pareto_failures.len() + report.pareto_alarms.len(),
            report.mttr.len(),
        );
        reports.push((q, report));
    }
    let wall = total.elapsed().as_secs_f64();
    let (hwm, _) = memory_mib();
    println!(
        "full recomputation (fleet + model + model x failure_mode, every table): {wall:.3} s wall (target < 5 s); peak RSS (VmHWM) {hwm:.0} MiB (target < 2048 MiB)"
    );

    // recovered parameters against the generator's
    let truth: HashMap<String, (f64, f64)> = MODELS
        .iter()
        .flat_map(|m| {
            m.modes.iter().map(move |&(mode, _, b, e)| {
                (format!("model={}, failure_mode={mode}", m.id), (b, e))
            })
        })
        .collect();
    println!("  Weibull model x failure_mode: fitted vs generated (90 % two-sided bounds)");
    for w in &reports[2].1.weibull {
        let Some(&(b, e)) = truth.get(&w.group_label) else {
            continue;
        };
        let f = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.3}"));
        println!(
            "    {:<40} n={:>5}/{:<6} β {} [{}, {}] (true {b})  η {} [{}, {}] (true {e})",
            w.group_label,
            w.n_failures,
            w.n_suspensions,
            f(w.beta),
            f(w.beta_lower),
            f(w.beta_upper),
            f(w.eta).trim_end_matches(".000"),
            f(w.eta_lower),
            f(w.eta_upper),
        );
    }

    if args.no_python {
        return Ok(());
    }
    // the same Weibull populations, fitted by Rust and by Python reliability
    let mut samples = Vec::new();
    for (q, _) in &reports[1..] {
        samples.extend(weibull_samples(&data, q)?);
    }
    let t = Instant::now();
    let mut rust_fits = HashMap::new();
    for s in &samples {
        if let Ok(fit) = weibull::fit(&s.failures, &s.suspensions) {
            rust_fits.insert(s.group_label.clone(), (fit.eta, fit.beta));
        }
    }
    let rust_seconds = t.elapsed().as_secs_f64();
    let dir = tempfile::tempdir()?;
    let csv_path = dir.path().join("lifetimes.csv");
    let mut csv = String::from("group,failed,hours\n");
    for s in &samples {
        for (times, flag) in [(&s.failures, 1), (&s.suspensions, 0)] {
            for t in times.iter() {
                writeln!(csv, "\"{}\",{flag},{t}", s.group_label)?;
            }
        }
    }
    std::fs::File::create(&csv_path)?.write_all(csv.as_bytes())?;
    let script = dir.path().join("fits.py");
    std::fs::write(&script, PYTHON_FITS)?;
    let units: usize = samples
        .iter()
        .map(|s| s.failures.len() + s.suspensions.len())
        .sum();
    println!(
        "  Weibull fits compared: {} populations, {units} lifetimes (model and model x failure_mode)",
        samples.len()
    );
    let out = Command::new(&args.python)
        .arg(&script)
        .arg(&csv_path)
        .output()
        .with_context(|| format!("running {}", args.python))?;
    if !out.status.success() {
        bail!(
            "python reliability fits failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("python output: {}", String::from_utf8_lossy(&out.stdout)))?;
    let py_seconds = result["seconds"].as_f64().context("python seconds")?;
    let mut worst: f64 = 0.0;
    for (label, (eta, beta)) in &rust_fits {
        let py = &result["fits"][label.as_str()];
        if let (Some(a), Some(b)) = (py["alpha"].as_f64(), py["beta"].as_f64()) {
            worst = worst.max(((eta - a) / a).abs()).max(((beta - b) / b).abs());
        }
    }
    println!(
        "  Weibull fits: Rust {rust_seconds:.4} s, Python reliability {} Fit_Weibull_2P {py_seconds:.2} s: Rust is {:.0}x faster; largest relative difference of β, η: {worst:.1e}",
        python_reliability_version(&args.python),
        py_seconds / rust_seconds
    );
    Ok(())
}

fn python_reliability_version(python: &str) -> String {
    Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('reliability'))",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
