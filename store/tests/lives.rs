//! Component lives through the store: the RENEWAL_TRUNCATED event history
//! (analytics/tests/refdata/renewal/*.csv, made by analytics/reference/make_reference.py
//! from its own ground truth) goes in through the product's history imports, and the
//! lives the store builds are the generator's lives; the report's Weibull fits per
//! component and per failure mode on them are lifelines' fits with `entry=`. Also: the
//! as-of time leaves out what was recorded at or after it.

#[path = "../../analytics/tests/refdata/mod.rs"]
mod refdata;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use fleetpulse_analytics::{GroupKey, ReportQuery, compute};
use fleetpulse_domain::reliability::{
    DataRequest, ImportKind, Period, ReliabilityData, ReliabilitySource,
};
use fleetpulse_domain::store::UnknownDevicePolicy;
use fleetpulse_domain::{Catalog, Policy};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use refdata::{
    RENEWAL_COMP1, RENEWAL_COMP1_WEAR, RENEWAL_COMP2, RENEWAL_COMP2_SEAL, RENEWAL_COMP2_WEAR,
    RENEWAL_LIVES, TruncatedRef,
};

const CATALOG: &str = include_str!("../../config/catalog.toml");
const POLICY: &str = include_str!("../../config/policy.toml");
const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../analytics/tests/refdata/renewal/"
);

/// The generator's machine: two components, the second with two competing modes.
const RT1: &str = r#"
[[model]]
id = "RT-1"
name = "Renewal test machine"
kind = "other"
default_criticality = "standard"
service_interval_hours = 0
service_skill = ""
service_labour_minutes = 0

[[model.component]]
id = "comp1"
[[model.component.failure_mode]]
id = "comp1_wear"

[[model.component]]
id = "comp2"
[[model.component.failure_mode]]
id = "comp2_wear"
[[model.component.failure_mode]]
id = "comp2_seal"
"#;

async fn open(path: &Path) -> SqliteStore {
    let policy = Arc::new(Policy::from_toml_str(POLICY).expect("policy"));
    let catalog = Catalog::from_toml_str(&format!("{CATALOG}\n{RT1}")).expect("catalog");
    SqliteStore::open(
        path,
        StoreOptions {
            clock: Default::default(),
            catalog: Arc::new(catalog),
            rules: Arc::new(CatalogRules::new(policy)),
            unknown_device: UnknownDevicePolicy::AutoRegister,
            durability: Durability::Normal,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await
    .expect("open")
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("RFC 3339 time")
        .with_timezone(&Utc)
}

/// A store holding the whole renewal history, imported the way a user would.
async fn renewal_store(dir: &Path) -> SqliteStore {
    let store = open(&dir.join("fleet.db")).await;
    for (kind, file) in [
        (ImportKind::Devices, "devices.csv"),
        (ImportKind::Failures, "failures.csv"),
        (ImportKind::Maintenance, "maintenance.csv"),
        (ImportKind::Meters, "meters.csv"),
    ] {
        let csv = std::fs::read_to_string(format!("{DIR}{file}")).expect("refdata CSV");
        let report = store.import_history(kind, csv).await.expect("import");
        assert!(report.errors.is_empty(), "{file}: {:?}", report.errors);
        assert_eq!(report.imported, report.rows, "{file}: {report:?}");
    }
    store
}

/// The generator's observation window: 2024 up to its last meter reading.
fn year_2024() -> Period {
    Period {
        from: at("2024-01-01T00:00:00Z"),
        to: at("2025-01-01T00:00:00Z"),
    }
}

async fn lives_data(store: &SqliteStore, as_of: Option<DateTime<Utc>>) -> ReliabilityData {
    store
        .reliability_data_for(DataRequest {
            period: year_2024(),
            as_of,
            component_lives: true,
        })
        .await
        .expect("reliability data")
}

fn assert_fit(data: &ReliabilityData, key: GroupKey, value: &str, want: &TruncatedRef) {
    let report = compute(
        data,
        &ReportQuery {
            group_by: vec![key],
            ..ReportQuery::default()
        },
    )
    .expect("report");
    let row = report
        .weibull
        .iter()
        .find(|r| r.group.first().and_then(|g| g.value.as_deref()) == Some(value))
        .unwrap_or_else(|| panic!("no Weibull row for {value}: {:?}", report.weibull));
    let close =
        |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() <= 1e-6 * want.abs());
    assert!(
        close(row.beta, want.beta) && close(row.eta, want.eta),
        "{value}: β {:?} η {:?}, lifelines β {} η {}",
        row.beta,
        row.eta,
        want.beta,
        want.eta
    );
    assert!(
        close(row.beta_se, want.beta_se) && close(row.eta_se, want.eta_se),
        "{value}: {row:?}"
    );
    assert!(
        close(row.log_likelihood, want.loglik),
        "{value}: LL {:?} vs {}",
        row.log_likelihood,
        want.loglik
    );
    assert_eq!(row.n_failures as usize, want.failures, "{value}");
    assert_eq!(
        (row.n_failures + row.n_suspensions) as usize,
        want.lives,
        "{value}"
    );
    assert!(row.method.contains("left truncation"), "{}", row.method);
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_renewal_history_gives_the_generators_lives_and_lifelines_fits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = renewal_store(dir.path()).await;
    let data = lives_data(&store, None).await;
    let unexpected: Vec<_> = data
        .quality
        .iter()
        .filter(|q| {
            matches!(
                q.kind.as_str(),
                "component_age_unknown" | "life_without_age"
            )
        })
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");

    let mut got: Vec<(String, String, f64, f64, Option<String>)> = data
        .component_lives
        .iter()
        .map(|l| {
            (
                l.serial.as_str().to_owned(),
                l.component.clone(),
                l.entry,
                l.exit,
                l.failure_mode.clone(),
            )
        })
        .collect();
    let mut want: Vec<(String, String, f64, f64, Option<String>)> = RENEWAL_LIVES
        .iter()
        .map(|w| {
            (
                w.0.to_owned(),
                w.1.to_owned(),
                w.2,
                w.3,
                w.4.map(str::to_owned),
            )
        })
        .collect();
    let order = |a: &(String, String, f64, f64, Option<String>),
                 b: &(String, String, f64, f64, Option<String>)| {
        (&a.0, &a.1).cmp(&(&b.0, &b.1)).then(a.3.total_cmp(&b.3))
    };
    got.sort_by(order);
    want.sort_by(order);
    assert_eq!(
        got.len(),
        want.len(),
        "lives: store {} generator {}",
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(&want) {
        let same = g.0 == w.0
            && g.1 == w.1
            && (g.2 - w.2).abs() <= 1e-6 * w.3
            && (g.3 - w.3).abs() <= 1e-6 * w.3
            && g.4 == w.4;
        assert!(same, "store {g:?}, generator {w:?}");
    }

    assert_fit(&data, GroupKey::Component, "comp1", &RENEWAL_COMP1);
    assert_fit(&data, GroupKey::Component, "comp2", &RENEWAL_COMP2);
    assert_fit(
        &data,
        GroupKey::FailureMode,
        "comp1_wear",
        &RENEWAL_COMP1_WEAR,
    );
    assert_fit(
        &data,
        GroupKey::FailureMode,
        "comp2_wear",
        &RENEWAL_COMP2_WEAR,
    );
    assert_fit(
        &data,
        GroupKey::FailureMode,
        "comp2_seal",
        &RENEWAL_COMP2_SEAL,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn as_of_reads_nothing_recorded_at_or_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = renewal_store(dir.path()).await;
    let as_of = at("2024-07-01T00:00:00Z");
    let data = lives_data(&store, Some(as_of)).await;
    let period = data.period.expect("period");
    assert_eq!(period.to, as_of, "the period ends at the as-of time");
    assert!(data.failures.iter().all(|f| f.at < as_of));
    assert!(!data.failures.is_empty());
    assert!(data.exposure.iter().all(|e| e.month < as_of));
    // every life ends by the meter's last reading before the as-of time: a life running
    // then is a suspension at that age, and later failures are not read
    let full = lives_data(&store, None).await;
    assert!(data.component_lives.len() < full.component_lives.len());
    let failed = |d: &ReliabilityData| {
        d.component_lives
            .iter()
            .filter(|l| l.failure_mode.is_some())
            .count()
    };
    assert!(failed(&data) < failed(&full));

    // the same store cut at the as-of time gives the same data
    let cut = tempfile::tempdir().expect("tempdir");
    let early = open(&cut.path().join("fleet.db")).await;
    for (kind, file, time_column) in [
        (ImportKind::Devices, "devices.csv", None),
        (ImportKind::Failures, "failures.csv", Some(1)),
        (ImportKind::Maintenance, "maintenance.csv", Some(1)),
        (ImportKind::Meters, "meters.csv", Some(1)),
    ] {
        let text = std::fs::read_to_string(format!("{DIR}{file}")).expect("refdata CSV");
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, line)| {
                *i == 0
                    || time_column
                        .is_none_or(|c| line.split(',').nth(c).is_some_and(|t| at(t) < as_of))
            })
            .map(|(_, l)| l)
            .collect();
        let report = early
            .import_history(kind, kept.join("\n"))
            .await
            .expect("import");
        assert!(report.errors.is_empty(), "{file}: {:?}", report.errors);
    }
    let early_data = lives_data(&early, Some(as_of)).await;
    assert_eq!(early_data.component_lives, data.component_lives);
    assert_eq!(early_data.failures.len(), data.failures.len());
    assert!(
        early_data.exposure == data.exposure,
        "operating hours as of {as_of} differ from those of the store cut there"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_devices_components_show_the_part_fitted_now_and_its_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = renewal_store(dir.path()).await;
    let serial = fleetpulse_domain::Serial::parse("RT-001").expect("serial");
    let components = store
        .device_components(&serial, None)
        .await
        .expect("components");
    let ids: Vec<&str> = components.iter().map(|c| c.component.as_str()).collect();
    assert_eq!(ids, ["comp1", "comp2"]);
    let comp1 = &components[0];
    // RT-001's comp1: failed 2024-11-29 at 20 651.087 h, replaced the next day at
    // 20 676.444 h (maintenance.csv); the meter last read 21 223.371 h
    assert_eq!(comp1.installed_at, Some(at("2024-11-30T11:40:47Z")));
    let age = comp1.age_hours.expect("age");
    assert!((age - (21_223.371 - 20_676.444)).abs() < 1e-6, "{age}");
    assert_eq!(comp1.failure_modes, ["comp1_wear"]);
    // since commissioning (2021-08-28): every life from new, none left-truncated, the
    // last one running
    assert!(
        comp1.lives.iter().all(|l| l.entry == 0.0),
        "{:?}",
        comp1.lives
    );
    let last = comp1.lives.last().expect("lives");
    assert_eq!(last.failure_mode, None);
    assert!((last.exit - age).abs() < 1e-6);
    // the 2024 lives that ended in a failure are among them, at the same ages
    let failed_2024: Vec<f64> = RENEWAL_LIVES
        .iter()
        .filter(|l| l.0 == "RT-001" && l.1 == "comp1" && l.4.is_some())
        .map(|l| l.3)
        .collect();
    for exit in failed_2024 {
        assert!(
            comp1
                .lives
                .iter()
                .any(|l| l.failure_mode.is_some() && (l.exit - exit).abs() < 1e-6),
            "no life failing at {exit} h: {:?}",
            comp1.lives
        );
    }

    // as of mid-2024: the part fitted then, aged to the last reading before it
    let then = store
        .device_components(&serial, Some(at("2024-07-01T00:00:00Z")))
        .await
        .expect("components");
    assert_eq!(then[0].installed_at, Some(at("2024-03-29T21:16:09Z")));
}
