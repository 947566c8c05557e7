//! Measures `fleet_overview` and `order_counts_by_day` on a large store.
//!
//! `cargo run -p fleetpulse-store --example overview_load -- [DEVICES] [ORDERS] [ACTIVE_PCT] [DB]`
//! (defaults 10 000 devices, 100 000 orders, 10 % of them active; a fourth argument keeps
//! the database there, to look at its query plans). The schema comes from opening the
//! store; the rows are inserted straight into it with SQL (the counts read tables and
//! indexes, not how the rows got there), from a fixed pseudo-random sequence: devices at
//! a customer (half), in stock, in repair or retired, of five models (a tenth without),
//! in nine regions (a tenth without), in four connection states, last seen over the past
//! three days (one in fifty never), a quarter with a connection end; orders created over
//! a year (active ones over the last three weeks) with the shipped policy's SLA
//! deadlines, `ACTIVE_PCT` % of them active, one in five active orders with a bundled
//! task; 200 000 alarm episodes over a year (1 % open); 200 000 dead letters over 30 days.
//! Each call is then timed 20 times on the store's pooled read connections and the min,
//! median and max printed.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, DurationRound, Utc};
use fleetpulse_domain::store::{Store, UnknownDevicePolicy};
use fleetpulse_domain::{Catalog, Policy, Priority};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use rusqlite::{Connection, params};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let devices: i64 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let orders: i64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let active_pct: i64 = args.next().map_or(Ok(10), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    // a fourth argument keeps the store there, to look at its query plans
    let path = match args.next() {
        Some(p) => std::path::PathBuf::from(p),
        None => dir.path().join("overview.db"),
    };
    let catalog = Arc::new(Catalog::from_toml_str(include_str!(
        "../../config/catalog.toml"
    ))?);
    let policy = Arc::new(Policy::from_toml_str(include_str!(
        "../../config/policy.toml"
    ))?);
    let store = SqliteStore::open(
        &path,
        StoreOptions {
            clock: Default::default(),
            catalog,
            rules: Arc::new(CatalogRules::new(policy.clone())),
            unknown_device: UnknownDevicePolicy::AutoRegister,
            durability: Durability::Normal,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await?;

    let now = Utc::now().duration_trunc(Duration::hours(1))?;
    let t = Instant::now();
    fill(&path, &policy, now, devices, orders, active_pct)?;
    println!(
        "filled: {devices} devices, {orders} orders ({active_pct} % active), 200 000 alarm episodes, \
         200 000 dead letters in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let silent_after = policy.prediction.silent_after.0;
    let overview = store.fleet_overview(now, silent_after).await?;
    println!("{}", serde_json::to_string(&overview)?);
    let timings = time(20, || store.fleet_overview(now, silent_after)).await?;
    report("fleet_overview", &timings);

    let day = now.duration_trunc(Duration::days(1))?;
    let (from, to) = (day - Duration::days(7), day + Duration::days(35));
    let days = store.order_counts_by_day(from, to).await?;
    println!(
        "order_counts_by_day over 6 weeks: {} days, {} orders",
        days.len(),
        days.iter().map(|d| d.orders).sum::<u64>()
    );
    let timings = time(20, || store.order_counts_by_day(from, to)).await?;
    report("order_counts_by_day (6 weeks)", &timings);
    Ok(())
}

async fn time<T, F, Fut>(
    runs: usize,
    mut f: F,
) -> Result<Vec<StdDuration>, Box<dyn std::error::Error>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, fleetpulse_domain::store::StoreError>>,
{
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await?;
        out.push(t.elapsed());
    }
    out.sort();
    Ok(out)
}

fn report(what: &str, sorted: &[StdDuration]) {
    let ms = |d: StdDuration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: min {:.2} ms, median {:.2} ms, max {:.2} ms ({} runs)",
        ms(sorted[0]),
        ms(sorted[sorted.len() / 2]),
        ms(sorted[sorted.len() - 1]),
        sorted.len()
    );
}

/// A small deterministic generator (no seed to pass around, the same store every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn fill(
    path: &std::path::Path,
    policy: &Policy,
    now: chrono::DateTime<Utc>,
    devices: i64,
    orders: i64,
    active_pct: i64,
) -> Result<(), Box<dyn std::error::Error>> {
    const STATUSES: [&str; 6] = [
        "at_customer",
        "at_customer",
        "at_customer",
        "in_stock",
        "in_repair",
        "retired",
    ];
    const MODELS: [&str; 5] = ["OC-5A", "OC-5B", "OC-10", "VT-200", "CP-1"];
    const CRITICALITY: [&str; 3] = ["life_supporting", "high", "standard"];
    const CONNECTION: [&str; 4] = ["online", "offline", "unreachable", "unknown"];
    const ACTIVE: [&str; 4] = ["open", "acknowledged", "assigned", "in_progress"];
    const CLOSED: [&str; 2] = ["completed", "cancelled"];
    const REASONS: [&str; 4] = [
        "malformed_json",
        "unknown_device",
        "missing_field",
        "payload_too_large",
    ];
    let now_ms = now.timestamp_millis();
    let mut rng = Lcg(42);
    let mut conn = Connection::open(path)?;
    let tx = conn.transaction()?;
    {
        let mut dev = tx.prepare(
            "INSERT INTO devices (serial, model, status, criticality, region, connection, registered_at, \
             last_seen_at, disconnected_at, disconnect_graceful) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for d in 0..devices {
            let seen = now_ms - rng.below(3 * 86_400_000) as i64;
            let disconnected = (rng.below(4) == 0).then(|| seen + rng.below(60_000) as i64);
            dev.execute(params![
                format!("OC5-{d:06}"),
                (rng.below(10) > 0).then(|| MODELS[rng.below(5) as usize]),
                STATUSES[rng.below(6) as usize],
                CRITICALITY[rng.below(3) as usize],
                (rng.below(10) > 0).then(|| format!("region-{}", rng.below(9))),
                CONNECTION[rng.below(4) as usize],
                now_ms - 400 * 86_400_000,
                (rng.below(50) > 0).then_some(seen),
                disconnected,
                disconnected.map(|_| rng.below(2) as i64),
            ])?;
        }
        let mut ord = tx.prepare(
            "INSERT INTO orders (id, serial, cause, kind, priority, status, title, solution, skills, parts, \
             labour_minutes, evidence, respond_by, arrive_by, complete_by, created_at, updated_at, \
             trigger_count, last_triggered_at, version) \
             VALUES (?1, ?2, ?3, 'repair', ?4, ?5, 't', '', '[]', '[]', ?6, '{}', ?7, ?8, ?9, ?10, ?10, 1, ?10, 1)",
        )?;
        let mut task = tx.prepare(
            "INSERT INTO order_tasks (order_id, cause, title, skills, parts, labour_minutes, evidence, \
             added_at, updated_at) VALUES (?1, 'extra', 't', '[]', '[]', 30, '{}', ?2, ?2)",
        )?;
        for id in 1..=orders {
            let active = rng.below(100) < active_pct as u64;
            let priority = Priority::ALL[rng.below(4) as usize];
            // active orders are recent (the last three weeks), closed ones over a year
            let age = if active {
                rng.below(21 * 86_400_000)
            } else {
                rng.below(365 * 86_400_000)
            } as i64;
            let created = now - Duration::milliseconds(age);
            let sla = policy.sla_for(priority, created);
            let status = if active {
                ACTIVE[rng.below(4) as usize]
            } else {
                CLOSED[rng.below(2) as usize]
            };
            ord.execute(params![
                id,
                format!("OC5-{:06}", rng.below(devices as u64)),
                format!("cause_{id}"),
                priority.as_str(),
                status,
                30 + rng.below(240) as i64,
                sla.respond_by.timestamp_millis(),
                sla.arrive_by.timestamp_millis(),
                sla.complete_by.timestamp_millis(),
                created.timestamp_millis(),
            ])?;
            if active && rng.below(5) == 0 {
                task.execute(params![id, created.timestamp_millis()])?;
            }
        }
        let mut alarm = tx.prepare(
            "INSERT INTO alarm_episodes (serial, code, severity, started_at, started_seq, ended_at) \
             VALUES (?1, 'E101', ?2, ?3, 1, ?4)",
        )?;
        for _ in 0..200_000 {
            let started = now_ms - rng.below(365 * 86_400_000) as i64;
            alarm.execute(params![
                format!("OC5-{:06}", rng.below(devices as u64)),
                ["critical", "warning", "info"][rng.below(3) as usize],
                started,
                (rng.below(100) > 0).then_some(started + 3_600_000),
            ])?;
        }
        let mut letter = tx.prepare(
            "INSERT INTO dead_letters (received_at, topic, client_id, reason, detail, payload, last_seen_at) \
             VALUES (?1, 't', 'c', ?2, '', x'00', ?1)",
        )?;
        for _ in 0..200_000 {
            let at = now_ms - rng.below(30 * 86_400_000) as i64;
            letter.execute(params![at, REASONS[rng.below(4) as usize]])?;
        }
    }
    tx.commit()?;
    Ok(())
}
