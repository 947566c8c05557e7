//! Property test ("fuzz") of the whole ingest path: arbitrary topics and payloads go
//! through [`decode`] (the function both sources call), the pipeline's journal (a real
//! [`Journal`] in a temporary directory, appended and synced before the ack) and the
//! applier on a real SQLite store.
//!
//! Invariants, for every generated sequence of messages:
//! - nothing panics and the pipeline drains within a bound (no stall);
//! - every message is acknowledged once;
//! - every accepted reading is stored once, counted as a duplicate, or refused by the
//!   store into a dead letter, and nothing else: the store's read API agrees with the
//!   counters;
//! - every dead letter decode produced, plus one per store refusal, is in the store:
//!   as its own row, or counted on the row of the same message (`repeats`), as many
//!   times as the counters say;
//! - hourly rollups stay finite.
//!
//! Cases per property: `PROPTEST_CASES` (default below, kept small for `scripts/test`);
//! a long pass is described in `docs/fuzzing.md`. Failing inputs are kept by proptest in
//! `ingest/proptest-regressions/fuzz_ingest.txt` and replayed first on every run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use fleetpulse_domain::Serial;
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::policy::Policy;
use fleetpulse_domain::store::{DeadLetterQuery, ReadingQuery, Store, UnknownDevicePolicy};
use fleetpulse_domain::telemetry::TelemetryLimits;
use fleetpulse_ingest::pipeline::{Ack, Inbound};
use fleetpulse_ingest::{Decoded, Journal, JournalConfig, Pipeline, PipelineConfig, decode};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// How long one case may take to drain before it counts as a stall.
const STALL: Duration = Duration::from_secs(30);

/// Cases per property: `PROPTEST_CASES` or a small default for the test script.
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
            "proptest-regressions/fuzz_ingest.txt",
        ))),
        ..ProptestConfig::default()
    }
}

// --- generators ----------------------------------------------------------------------

/// Serials: a few valid ones (so readings collide on seq) and arbitrary text.
fn serial() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => prop::sample::select(vec!["FZA1", "FZB2", "FZC3"]).prop_map(str::to_owned),
        1 => "[A-Za-z0-9/+#\\-_ ]{0,12}",
    ]
}

fn topic(serial: &str) -> BoxedStrategy<String> {
    let serial = serial.to_owned();
    prop_oneof![
        8 => Just(format!("fleetpulse/v1/devices/{serial}/telemetry")),
        1 => Just(format!("fleetpulse/v1/devices/{serial}/status")),
        1 => "\\PC{0,40}",
    ]
    .boxed()
}

/// A JSON number or other value as raw text: the edges of f64, i64 and u64, and wrong
/// types. Raw text lets the generator write what serde_json would never print (1e400).
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (-1000i64..1000).prop_map(|n| n.to_string()),
        2 => any::<f64>().prop_map(|f| format!("{f:e}")),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        2 => prop::sample::select(vec![
            "1.7e308", "-1.7e308", "1e15", "-1e15", "1e16", "1e400", "-1e400", "-0", "0.5",
            "9223372036854775807", "9223372036854775808", "18446744073709551615",
            "18446744073709551616", "\"NaN\"", "\"inf\"", "NaN", "Infinity", "null", "true",
            "\"7\"", "[]", "{}", "[1,2]",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A measurement: mostly ordinary, sometimes at or past the edges.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        // inside every known field's range (0..=100 for percentages)
        8 => (0f64..100.0).prop_map(|f| f.to_string()),
        1 => number_text(),
    ]
}

fn seq_text() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => (1u64..30).prop_map(|n| n.to_string()),
        1 => number_text(),
    ]
}

fn ts_text() -> impl Strategy<Value = String> {
    let now = Utc::now();
    prop_oneof![
        12 => (-3600i64 * 48..240).prop_map(move |s| {
            format!("\"{}\"", (now + chrono::Duration::seconds(s)).to_rfc3339_opts(SecondsFormat::Millis, true))
        }),
        1 => prop::sample::select(vec![
            "\"1970-01-01T00:00:00Z\"", "\"9999-12-31T23:59:59Z\"", "\"2026-02-30T00:00:00Z\"",
            "\"yesterday\"", "0", "null", "\"+275760-09-13T00:00:00Z\"",
        ])
        .prop_map(str::to_owned),
    ]
}

/// One reading object as text: mostly valid keys, with edge values and extra keys.
fn reading_text() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        4 => prop::sample::select(vec!["runtime_hours", "filter_life_pct", "vendor_x"])
            .prop_map(str::to_owned),
        1 => "[a-z_]{1,10}",
    ];
    (
        seq_text(),
        ts_text(),
        prop_oneof![
            12 => prop::sample::select(vec!["\"OC-5A\"", "\"OC-10\"", "\"HV-200\""]),
            1 => prop::sample::select(vec!["\"ZZ-9\"", "5", "null"]),
        ],
        prop::collection::vec((field, value_text()), 0..5),
        prop::option::of(prop_oneof![
            12 => prop::sample::select(vec!["[]", "[\"E12\"]"]),
            1 => prop::sample::select(vec!["[1]", "\"E1\"", "{}"]),
        ]),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(seq, ts, model, fields, alarms, drop_seq)| {
            let mut parts = Vec::new();
            if !drop_seq {
                parts.push(format!("\"seq\":{seq}"));
            }
            parts.push(format!("\"ts\":{ts}"));
            parts.push(format!("\"model\":{model}"));
            for (k, v) in fields {
                parts.push(format!("\"{k}\":{v}"));
            }
            if let Some(a) = alarms {
                parts.push(format!("\"alarms\":{a}"));
            }
            format!("{{{}}}", parts.join(","))
        })
}

/// A whole payload: a reading, a backlog array, deep nesting, arbitrary bytes, or a
/// valid reading with bytes spliced in.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => reading_text().prop_map(String::into_bytes),
        3 => prop::collection::vec(reading_text(), 0..12)
            .prop_map(|items| format!("[{}]", items.join(",")).into_bytes()),
        1 => (0usize..300).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes()),
        1 => (0usize..300).prop_map(|d| format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d)).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        1 => (reading_text(), any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(text, at, bytes)| {
                let mut p = text.into_bytes();
                let i = at.index(p.len() + 1);
                p.splice(i..i, bytes);
                p
            }),
        1 => prop::sample::select(vec![
            "{\"status\":\"online\"}", "online", "offline", "", "null", "[]", "\u{feff}{}",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// A message as the external source hands it to decode: topic, client id, payload.
/// The client id is the topic's serial most of the time, sometimes another device's.
fn message() -> impl Strategy<Value = (String, String, Vec<u8>)> {
    (serial(), serial(), prop::bool::weighted(0.1)).prop_flat_map(|(own, other, impostor)| {
        let client = if impostor { other } else { own.clone() };
        (topic(&own), Just(client), payload())
    })
}

// --- the pipeline --------------------------------------------------------------------

async fn open_store(path: &Path) -> Arc<SqliteStore> {
    let catalog =
        Catalog::from_toml_str(include_str!("../../config/catalog.toml")).expect("catalog");
    let policy = Policy::from_toml_str(include_str!("../../config/policy.toml")).expect("policy");
    Arc::new(
        SqliteStore::open(
            path,
            StoreOptions {
                clock: Default::default(),
                catalog: Arc::new(catalog),
                rules: Arc::new(CatalogRules::new(Arc::new(policy))),
                unknown_device: UnknownDevicePolicy::AutoRegister,
                // the journal is the durability under test; the store's own fsyncs
                // would only slow every case down
                durability: Durability::Normal,
                sink_spool: false,
                cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
            },
        )
        .await
        .expect("store opens"),
    )
}

/// What the pipeline was given, counted before it ran.
#[derive(Default)]
struct Sent {
    messages: usize,
    readings: usize,
    dead_letters: usize,
    serials: BTreeSet<String>,
}

impl Sent {
    fn add(&mut self, decoded: &Decoded) {
        self.messages += 1;
        self.readings += decoded.readings.len();
        self.dead_letters += decoded.dead_letters.len();
        self.serials.extend(
            decoded
                .readings
                .iter()
                .map(|r| r.serial.as_str().to_owned()),
        );
    }
}

/// Dead letter rows, and the receipts they count (the sum of their `repeats`).
async fn all_dead_letters(store: &dyn Store) -> (u64, u64) {
    let (mut rows, mut receipts) = (0, 0);
    let mut after = None;
    loop {
        let page = store
            .dead_letters(DeadLetterQuery {
                reason: None,
                after,
                limit: 500,
            })
            .await
            .expect("dead letters");
        rows += page.items.len() as u64;
        receipts += page.items.iter().map(|d| d.repeats).sum::<u64>();
        match page.items.last() {
            Some(last) if page.items.len() == 500 => after = Some(last.id),
            _ => return (rows, receipts),
        }
    }
}

/// One page is enough: a case sends at most 40 messages of at most 12 readings.
async fn stored_seqs(store: &dyn Store, serial: &Serial) -> Vec<u64> {
    let page = store
        .readings(ReadingQuery {
            serial: serial.clone(),
            from: None,
            to: None,
            after: None,
            limit: 1000,
        })
        .await
        .expect("readings");
    assert!(page.next.is_none(), "more than one page");
    page.items.iter().map(|r| r.seq).collect()
}

async fn run_case(messages: Vec<(String, String, Vec<u8>)>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir.path().join("fleet.db")).await;
    let journal = Journal::open(
        &dir.path().join("journal"),
        None,
        JournalConfig {
            segment_mib: 1,
            apply_max_entries: 50,
            ..JournalConfig::default()
        },
    )
    .expect("journal");
    let (pipeline, mut handle) = Pipeline::new(store.clone(), PipelineConfig::default());
    let pipeline = pipeline.with_journal(journal, &mut handle);
    let task = tokio::spawn(pipeline.run());

    let limits = TelemetryLimits::default();
    let acked = Arc::new(AtomicUsize::new(0));
    let mut sent = Sent::default();
    for (topic, client, payload) in &messages {
        let decoded = decode(topic, client, payload, Utc::now(), &limits);
        sent.add(&decoded);
        let counter = acked.clone();
        let ack = Ack::new(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        handle
            .submit(Inbound::new(decoded, Some(ack)))
            .await
            .expect("pipeline open");
    }
    handle.close();
    let drained = tokio::time::timeout(STALL, handle.drained()).await;
    prop_assert!(drained.is_ok(), "the pipeline stalled");
    task.await.expect("pipeline task");

    prop_assert_eq!(
        acked.load(Ordering::Relaxed),
        sent.messages,
        "one ack per message"
    );
    let stats = handle.stats().snapshot();
    prop_assert_eq!(
        stats.readings_stored + stats.duplicates + stats.store_refused,
        sent.readings as u64,
        "every accepted reading is stored, a duplicate, or refused: {:?}",
        stats
    );
    let mut stored = 0usize;
    let mut per_serial = BTreeMap::new();
    for serial in &sent.serials {
        let serial = Serial::parse(serial).expect("a decoded reading has a valid serial");
        let seqs = stored_seqs(store.as_ref(), &serial).await;
        let distinct: BTreeSet<_> = seqs.iter().collect();
        prop_assert_eq!(distinct.len(), seqs.len(), "{} stored a seq twice", serial);
        stored += seqs.len();
        per_serial.insert(serial.as_str().to_owned(), seqs.len());
        let rollups = store
            .rollups(
                &serial,
                Utc::now() - chrono::Duration::days(3650),
                Utc::now() + chrono::Duration::days(3650),
            )
            .await
            .expect("rollups");
        for r in &rollups {
            prop_assert!(
                r.sum.is_finite() && r.min.is_finite() && r.max.is_finite() && r.last.is_finite(),
                "rollup not finite: {:?}",
                r
            );
        }
    }
    prop_assert_eq!(
        stored as u64,
        stats.readings_stored,
        "the read API shows what was counted as stored: {:?}",
        per_serial
    );
    let (rows, receipts) = all_dead_letters(store.as_ref()).await;
    prop_assert_eq!(
        receipts,
        sent.dead_letters as u64 + stats.store_refused,
        "every dead letter (decoded or refused by the store) is kept once, as a row or a repeat"
    );
    prop_assert_eq!(
        (rows, stats.dead_lettered),
        (receipts - stats.dead_letter_repeats, receipts),
        "the counters say how many were repeats"
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(24))]

    /// decode alone: never panics, and every backlog element is accounted for.
    #[test]
    fn decode_accounts_for_every_element((topic, client, payload) in message()) {
        let decoded = decode(&topic, &client, &payload, Utc::now(), &TelemetryLimits::default());
        prop_assert!(decoded.entries() >= 1, "a message leaves at least one entry");
        prop_assert_eq!(decoded.payload_bytes, payload.len());
        // a backlog on the sender's own telemetry topic: one entry per element
        let own_telemetry = Serial::parse(&client).is_ok()
            && topic == format!("fleetpulse/v1/devices/{client}/telemetry");
        if let Ok(serde_json::Value::Array(items)) = serde_json::from_slice(&payload)
            && own_telemetry
            && !items.is_empty()
        {
            prop_assert_eq!(decoded.readings.len() + decoded.dead_letters.len(), items.len());
        }
    }

    /// decode → journal → apply on a real store.
    #[test]
    fn the_ingest_path_loses_nothing_and_never_stalls(
        messages in prop::collection::vec(message(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run_case(messages))?;
    }
}

/// The kept corpus: the poison of issue 20, run through the same invariants as the
/// generated cases (on the code before that fix, seq 2^63 stalled the applier for good
/// and the 1.7e308 pair left an infinite rollup sum).
#[test]
fn the_poison_of_issue_20_keeps_the_invariants() {
    let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let topic = "fleetpulse/v1/devices/FZA1/telemetry".to_owned();
    let reading = |seq: &str, extra: &str| {
        format!(r#"{{"seq":{seq},"ts":"{ts}","model":"OC-5A","alarms":[]{extra}}}"#).into_bytes()
    };
    let messages = vec![
        (topic.clone(), "FZA1".to_owned(), reading("1", "")),
        (
            topic.clone(),
            "FZA1".to_owned(),
            reading("9223372036854775808", ""),
        ),
        (topic.clone(), "FZA1".to_owned(), reading("-5", "")),
        (
            topic.clone(),
            "FZA1".to_owned(),
            reading("2", r#","vendor_x":1.7e308"#),
        ),
        (
            topic.clone(),
            "FZA1".to_owned(),
            reading("3", r#","vendor_x":1.7e308"#),
        ),
        (
            topic.clone(),
            "FZA1".to_owned(),
            reading("4", r#","vendor_x":-1.7e308"#),
        ),
        (topic.clone(), "FZB2".to_owned(), reading("5", "")),
        (topic.clone(), "FZA1".to_owned(), vec![b'['; 300 * 1024]),
        (topic, "FZA1".to_owned(), reading("6", "")),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(run_case(messages))
        .expect("the invariants hold");
}
