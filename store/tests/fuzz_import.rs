//! Property test ("fuzz") of the history CSV imports (`fleetpulse import failures|
//! maintenance|devices|meters|telemetry|alarms`), on a real SQLite store: arbitrary bytes never panic or fail the store;
//! in a file whose header is valid, every data row is accounted for exactly once
//! (imported, duplicate, same incident or reported with its line), every bad row is
//! reported with its own line, every good row is kept, and importing the same file again
//! loads nothing twice.
//!
//! Cases: `PROPTEST_CASES` (small default for `scripts/test`); see `docs/fuzzing.md`.
//! Failing inputs are kept in `store/proptest-regressions/fuzz_import.txt`.

use std::collections::BTreeSet;
use std::sync::Arc;

use fleetpulse_domain::reliability::{ImportKind, ImportReport, ReliabilitySource};
use fleetpulse_domain::store::{NewDevice, Store, StoreError, UnknownDevicePolicy};
use fleetpulse_domain::{Catalog, ModelId, Policy, Serial};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const CATALOG: &str = include_str!("../../config/catalog.toml");
const POLICY: &str = include_str!("../../config/policy.toml");
const FAILURE_HEADER: &str = "serial,at,runtime_hours,fault_code,failure_mode,component,notes";
const MAINTENANCE_HEADER: &str = "serial,at,runtime_hours,kind,consumable,notes";
const DEVICE_HEADER: &str =
    "serial,model,status,region,commissioned_at,runtime_hours_at_registration,observed_from";
const METER_HEADER: &str = "serial,at,runtime_hours,blower_hours";
const TELEMETRY_HEADER: &str = "serial,at,runtime_hours,o2_purity_pct,filter_life_pct";
const ALARM_HEADER: &str = "serial,started_at,ended_at,code,severity,runtime_hours";

/// The kinds the fuzz covers.
const KINDS: &[ImportKind] = &[
    ImportKind::Failures,
    ImportKind::Maintenance,
    ImportKind::Devices,
    ImportKind::Meters,
    ImportKind::Telemetry,
    ImportKind::Alarms,
];

fn header(kind: ImportKind) -> &'static str {
    match kind {
        ImportKind::Failures => FAILURE_HEADER,
        ImportKind::Maintenance => MAINTENANCE_HEADER,
        ImportKind::Devices => DEVICE_HEADER,
        ImportKind::Meters => METER_HEADER,
        ImportKind::Telemetry => TELEMETRY_HEADER,
        ImportKind::Alarms => ALARM_HEADER,
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `cases` cases; failures are kept in this crate's `proptest-regressions/` (the
/// default place, beside `src/`, is not found from `tests/`) and replayed first.
fn config(cases_by_default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(cases_by_default),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz_import.txt",
        ))),
        ..ProptestConfig::default()
    }
}

async fn open(dir: &std::path::Path) -> SqliteStore {
    let catalog = Arc::new(Catalog::from_toml_str(CATALOG).expect("catalog"));
    let policy = Arc::new(Policy::from_toml_str(POLICY).expect("policy"));
    let store = SqliteStore::open(
        &dir.join("fleetpulse.db"),
        StoreOptions {
            clock: Default::default(),
            catalog,
            rules: Arc::new(CatalogRules::new(policy)),
            unknown_device: UnknownDevicePolicy::AutoRegister,
            durability: Durability::Normal,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await
    .expect("open");
    for serial in ["OC5-FZ1", "OC5-FZ2"] {
        store
            .register_device(NewDevice {
                serial: Serial::parse(serial).expect("serial"),
                model: ModelId::parse("OC-5A").expect("model"),
                status: None,
                criticality: None,
                region: None,
                address: None,
                commissioned_at: None,
                runtime_hours_at_registration: None,
                observed_from: None,
            })
            .await
            .expect("register");
    }
    store
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A row that must load: a registered device, a distinct day per row (so no two good
/// rows share an import key or an incident), valid everything.
fn good_row(kind: ImportKind, day: usize) -> String {
    let at = format!(
        "{}T10:00:00Z",
        (chrono::NaiveDate::from_ymd_opt(2020, 1, 1).expect("date")
            + chrono::Duration::days(day as i64 * 3))
        .format("%Y-%m-%d")
    );
    match kind {
        ImportKind::Failures => {
            format!("OC5-FZ1,{at},{},E101,,,\"seized, replaced\"", day * 10)
        }
        ImportKind::Maintenance => format!("OC5-FZ1,{at},{},consumable,filter,ok", day * 10),
        ImportKind::Devices => format!("OC5-FZD{day},OC-5A,in_stock,north,{at},{},", day * 10),
        ImportKind::Meters => format!("OC5-FZ1,{at},{},{day}", day * 10),
        ImportKind::Telemetry => format!("OC5-FZ1,{at},{},95.5,80", day * 10),
        ImportKind::Alarms => {
            let ended = at.replace("T10:", "T11:");
            format!("OC5-FZ1,{at},{ended},E101,,{}", day * 10)
        }
    }
}

/// A row that may be bad: arbitrary text, or cells of the right count with edge values
/// (for the second registered device, so it never collides with a good row).
fn other_row() -> impl Strategy<Value = String> {
    let cell = prop_oneof![
        Just(String::new()),
        prop::sample::select(vec![
            "OC5-FZ2",
            "NOPE-1",
            "bad serial",
            "2025-03-01T10:00:00Z",
            "2025-03-01T10:00:00+02:00",
            "2999-01-01T00:00:00Z",
            "yesterday",
            "-4",
            "1e400",
            "NaN",
            "inf",
            "E101",
            "E999",
            "ERROR1",
            "2025-03-01T09:00:00Z",
            "critical",
            "compressor",
            "service",
            "consumable",
            "filter",
            "replacement",
            "OC-5A",
            "in_service",
            "\"quoted, comma\"",
            "\"open",
            "\"\"",
            "x\"y",
            "\u{feff}",
        ])
        .prop_map(str::to_owned),
        "[^\n\r,\"]{0,12}",
    ];
    prop_oneof![
        3 => prop::collection::vec(cell, 4..=7).prop_map(|c| c.join(",")),
        1 => prop::collection::vec(
            prop_oneof![Just(String::new()), "[^\n\r]{0,12}"], 0..9
        ).prop_map(|c| c.join(",")),
        1 => "[^\n\r]{0,80}",
        1 => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).replace(['\n', '\r'], " ")),
    ]
}

/// A file: the header, then good rows and other rows in any order.
fn file() -> impl Strategy<Value = (ImportKind, String, Vec<usize>)> {
    (
        prop::sample::select(KINDS),
        prop::collection::vec(prop::option::weighted(0.6, other_row()), 0..40),
        prop::bool::ANY,
    )
        .prop_map(|(kind, rows, crlf)| {
            let mut lines = vec![header(kind).to_owned()];
            let mut good_lines = Vec::new();
            for (i, row) in rows.into_iter().enumerate() {
                match row {
                    Some(text) => lines.push(text),
                    None => {
                        lines.push(good_row(kind, i));
                        good_lines.push(lines.len());
                    }
                }
            }
            let newline = if crlf { "\r\n" } else { "\n" };
            (kind, lines.join(newline), good_lines)
        })
}

fn accounted(report: &ImportReport) -> usize {
    report.imported + report.duplicates + report.same_incident.len() + report.errors.len()
}

/// Data rows as the importer counts them: non-blank lines after the header.
fn data_rows(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .count()
        .saturating_sub(1)
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn arbitrary_bytes_never_panic_and_fail_only_as_invalid(
        kind in prop::sample::select(KINDS),
        header in prop::option::of(prop::sample::select(vec![FAILURE_HEADER, MAINTENANCE_HEADER, DEVICE_HEADER, METER_HEADER, TELEMETRY_HEADER, ALARM_HEADER, "serial,at"])),
        bytes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        // what the CLI hands over: the file as text (it refuses a file that is not UTF-8)
        let mut text = header.map(|h| format!("{h}\n")).unwrap_or_default();
        text.push_str(&String::from_utf8_lossy(&bytes));
        let dir = tempfile::tempdir().expect("tempdir");
        runtime().block_on(async {
            let store = open(dir.path()).await;
            match store.import_history(kind, text.clone()).await {
                Ok(report) => {
                    prop_assert_eq!(report.rows, data_rows(&text));
                    prop_assert_eq!(accounted(&report), report.rows, "{:?}", report);
                }
                Err(StoreError::Invalid(_)) => {}
                Err(e) => prop_assert!(false, "not a refusal of the file: {e}"),
            }
            Ok(())
        })?;
    }

    #[test]
    fn every_bad_row_is_reported_and_every_good_row_kept((kind, text, good_lines) in file()) {
        let dir = tempfile::tempdir().expect("tempdir");
        runtime().block_on(async {
            let store = open(dir.path()).await;
            let first = store.import_history(kind, text.clone()).await;
            let first = match first {
                Ok(r) => r,
                Err(e) => return Err(TestCaseError::fail(format!("a valid header refused: {e}"))),
            };
            prop_assert_eq!(first.rows, data_rows(&text));
            prop_assert_eq!(accounted(&first), first.rows, "every row once: {:?}", first);
            let issue_lines: Vec<usize> = first
                .errors
                .iter()
                .chain(&first.same_incident)
                .map(|i| i.line)
                .collect();
            let distinct: BTreeSet<usize> = issue_lines.iter().copied().collect();
            prop_assert_eq!(distinct.len(), issue_lines.len(), "a line reported twice");
            let last_line = text.lines().count();
            for line in &issue_lines {
                prop_assert!((2..=last_line).contains(line), "line {} of {}", line, last_line);
                prop_assert!(!good_lines.contains(line), "good line {} reported: {:?}", line, first);
            }
            prop_assert!(first.imported >= good_lines.len(), "good rows kept: {:?}", first);

            let again = store.import_history(kind, text.clone()).await.expect("again");
            prop_assert_eq!(again.imported, 0, "nothing loads twice: {:?}", again);
            prop_assert_eq!(again.duplicates, first.imported + first.duplicates);
            prop_assert_eq!(
                again.errors.iter().map(|i| i.line).collect::<Vec<_>>(),
                first.errors.iter().map(|i| i.line).collect::<Vec<_>>()
            );
            Ok(())
        })?;
    }
}
