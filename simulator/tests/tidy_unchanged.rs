//! The default fleet (no `untidy` profile) is the fleet it was before the profile existed
//! (issue 22): a fixed seed gives byte-identical payloads, ground truth and predictor
//! history. The reference fingerprints were computed by this test on commit 1fe2a3e,
//! before the profile was written.

use chrono::{DateTime, Duration, TimeZone, Utc};
use fleetpulse_domain::Catalog;
use fleetpulse_simulator::{Fleet, FleetConfig, simulate};

/// FNV-1a, 64 bit: a fingerprint that does not depend on the Rust release.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn catalog() -> Catalog {
    Catalog::from_toml_str(include_str!("../../config/catalog.toml")).expect("shipped catalog")
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time")
}

fn tidy(devices: usize, seed: u64) -> Fleet {
    let cfg: FleetConfig = serde_json::from_value(serde_json::json!({
        "devices": devices,
        "seed": seed,
        "serial_prefix": "FP",
    }))
    .expect("a config without the profile");
    Fleet::new(&cfg, &catalog()).expect("fleet")
}

#[test]
fn payloads_and_truth_of_a_default_fleet_are_unchanged() {
    let mut f = tidy(24, 9);
    let (mut fp, mut readings) = (Fnv::new(), 0);
    for k in 0..600 {
        for m in f.step(3.0, start() + Duration::seconds(k)) {
            fp.add(&m.payload);
            readings += 1;
        }
    }
    let truth = f.take_ground_truth();
    for e in &truth {
        fp.add(e.to_json_line().as_bytes());
    }
    println!(
        "payloads: {readings} readings, {} truth events, fnv {:#018x}",
        truth.len(),
        fp.0
    );
    assert_eq!(
        (readings, truth.len(), fp.0),
        (14_400, 41, 0x812f_8139_3061_0f71)
    );
}

#[test]
fn the_predictors_history_of_a_default_fleet_is_unchanged() {
    let catalog = catalog();
    let mut f = tidy(24, 9);
    let (rec, truth) = simulate(&mut f, &catalog, start(), 200);
    let mut fp = Fnv::new();
    for as_of in [start() + Duration::days(100), start() + Duration::days(200)] {
        let data = rec.snapshot(as_of);
        fp.add(&serde_json::to_vec(&data).expect("serializes"));
    }
    for e in &truth {
        fp.add(e.to_json_line().as_bytes());
    }
    println!("history: {} truth events, fnv {:#018x}", truth.len(), fp.0);
    assert_eq!((truth.len(), fp.0), (95, 0x651c_128f_62b9_0500));
}
