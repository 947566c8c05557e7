//! Reliability data on the SQLite store: one failure event per incident (alarm episode,
//! repair order, retraction), exposure consolidated from the runtime-hour rollups
//! (resets, gaps, backlogs, month boundaries), the data of a period, history import.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use fleetpulse_domain::alarm::AlarmCode;
use fleetpulse_domain::dispatch::{Actor, CompletionOutcome, Dispatch, OrderAction};
use fleetpulse_domain::order::{Cause, OrderIntent, OrderKind, Priority};
use fleetpulse_domain::reliability::{FailureSource, ImportKind, Period, ReliabilitySource};
use fleetpulse_domain::store::{IngestBatch, NewDevice, OrderQuery, Store, UnknownDevicePolicy};
use fleetpulse_domain::{Catalog, ModelId, Policy, Reading, Serial};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use serde_json::json;

const CATALOG: &str = include_str!("../../config/catalog.toml");
const POLICY: &str = include_str!("../../config/policy.toml");

async fn open(dir: &std::path::Path) -> (SqliteStore, Arc<Policy>) {
    let catalog = Arc::new(Catalog::from_toml_str(CATALOG).expect("catalog"));
    let policy = Arc::new(Policy::from_toml_str(POLICY).expect("policy"));
    let store = SqliteStore::open(
        &dir.join("fleetpulse.db"),
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
    .await
    .expect("open");
    (store, policy)
}

fn sn(s: &str) -> Serial {
    Serial::parse(s).expect("serial")
}

/// 2026-01-01T00:00:00Z plus `h` hours.
fn at(h: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::hours(h)
}

fn reading(
    serial: &str,
    seq: u64,
    ts: DateTime<Utc>,
    runtime: Option<f64>,
    alarms: &[&str],
) -> Reading {
    let mut values = BTreeMap::new();
    if let Some(r) = runtime {
        values.insert("runtime_hours".to_owned(), r);
    }
    values.insert("o2_purity_pct".to_owned(), 95.0);
    Reading {
        serial: sn(serial),
        seq,
        ts,
        received_at: Utc::now(),
        model: Some("OC-5A".into()),
        firmware: None,
        alarms: Some(
            alarms
                .iter()
                .map(|c| AlarmCode::parse(c).expect("code"))
                .collect(),
        ),
        values,
    }
}

async fn commit(store: &SqliteStore, readings: Vec<Reading>) {
    store
        .commit_batch(IngestBatch {
            readings,
            ..Default::default()
        })
        .await
        .expect("commit");
}

fn whole(from: DateTime<Utc>, to: DateTime<Utc>) -> Period {
    Period { from, to }
}

fn all_time() -> Period {
    whole(at(-24 * 400), Utc::now() + Duration::days(1))
}

async fn complete(store: &SqliteStore, id: i64, outcome: CompletionOutcome) {
    let actor = Actor("test".into());
    let mut version = store
        .order(id)
        .await
        .expect("order")
        .expect("exists")
        .version;
    for action in [
        OrderAction::Acknowledge,
        OrderAction::Assign {
            engineer: "eng-1".into(),
            planned_visit_at: None,
        },
        OrderAction::Start,
        OrderAction::Complete(outcome),
    ] {
        version = store
            .transition(id, version, action, actor.clone(), Utc::now())
            .await
            .expect("transition")
            .version;
    }
}

fn outcome(confirmed: bool, code: Option<&str>) -> CompletionOutcome {
    serde_json::from_value(json!({
        "failure_confirmed": confirmed,
        "fault_code": code,
        "labour_minutes": 95,
    }))
    .expect("outcome")
}

async fn the_order(store: &SqliteStore, serial: &str) -> i64 {
    let page = store
        .list_orders(OrderQuery {
            serial: Some(sn(serial)),
            ..Default::default()
        })
        .await
        .expect("orders");
    assert_eq!(page.items.len(), 1, "one order for {serial}");
    page.items[0].id
}

/// A device runs two hours, raises E101 (compressor, counts as failure) at 1000.5 h.
async fn compressor_alarm(store: &SqliteStore, serial: &str) {
    commit(
        store,
        vec![
            reading(serial, 1, at(0), Some(1000.0), &[]),
            reading(serial, 2, at(1), Some(1000.5), &["E101"]),
        ],
    )
    .await;
}

#[tokio::test]
async fn an_alarm_and_the_repair_that_confirms_it_are_one_failure_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path()).await;
    compressor_alarm(&store, "OC5-R1").await;

    let data = store.reliability_data(all_time()).await.expect("data");
    assert_eq!(data.failures.len(), 1);
    let alarm_event = &data.failures[0];
    assert_eq!(alarm_event.source, FailureSource::Alarm);
    assert_eq!(alarm_event.age_hours, Some(1000.5));
    assert_eq!(alarm_event.code.as_deref(), Some("E101"));
    assert_eq!(alarm_event.failure_mode.as_deref(), Some("compressor"));
    assert_eq!(alarm_event.at, at(1));
    assert!(alarm_event.alarm_episode_id.is_some());

    let order = the_order(&store, "OC5-R1").await;
    complete(&store, order, outcome(true, Some("E102"))).await;

    let data = store.reliability_data(all_time()).await.expect("data");
    assert_eq!(data.failures.len(), 1, "upgraded, not a second event");
    let f = &data.failures[0];
    assert_eq!(f.id, alarm_event.id);
    assert_eq!(f.source, FailureSource::RepairOrder);
    assert_eq!(f.order_id, Some(order));
    assert_eq!(f.code.as_deref(), Some("E102"), "the engineer's fault code");
    assert_eq!(f.failure_mode.as_deref(), Some("sieve_bed"), "its mode");
    assert_eq!(f.age_hours, Some(1000.5), "age at the alarm's start");
    assert_eq!(f.alarm_episode_id, alarm_event.alarm_episode_id);
    let repair = data
        .repairs
        .iter()
        .find(|r| r.order_id == order)
        .expect("repair");
    assert_eq!(repair.completed, Some(true));
    assert_eq!(repair.failure_confirmed, Some(true));
    assert_eq!(repair.fault_code.as_deref(), Some("E102"));
    assert_eq!(repair.labour_minutes, Some(95));
    assert_eq!(data.alarms.len(), 1);
    assert_eq!(data.alarms[0].code, "E101");

    let history = store.order_history(order).await.expect("history");
    let completed = history.last().expect("events");
    assert_eq!(completed.data["effects"]["failure_event_id"], json!(f.id));
    // the device's failure list shows the one event too
    assert_eq!(
        store
            .failure_events(&sn("OC5-R1"))
            .await
            .expect("failures")
            .len(),
        1
    );
}

#[tokio::test]
async fn no_fault_found_retracts_the_alarm_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path()).await;
    compressor_alarm(&store, "OC5-R2").await;
    let order = the_order(&store, "OC5-R2").await;
    complete(&store, order, outcome(false, None)).await;

    let data = store.reliability_data(all_time()).await.expect("data");
    assert!(data.failures.is_empty(), "retracted: not in the statistics");
    assert!(
        store
            .failure_events(&sn("OC5-R2"))
            .await
            .expect("failures")
            .is_empty(),
        "the device's failure list leaves it out too"
    );
    let history = store.order_history(order).await.expect("history");
    let retracted = &history.last().expect("events").data["effects"]["failure_event_retracted"];
    let id = retracted.as_i64().expect("the retracted event is named");
    let db = rusqlite::Connection::open(dir.path().join("fleetpulse.db")).expect("db");
    let (source, reason): (String, String) = db
        .query_row(
            "SELECT source, retract_reason FROM failure_events WHERE id = ?1 AND retracted_at IS NOT NULL",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("kept for the record");
    assert_eq!(source, "alarm");
    assert!(reason.contains("no fault found"), "{reason}");
}

#[tokio::test]
async fn a_flapping_alarm_during_its_repair_is_one_incident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path()).await;
    compressor_alarm(&store, "OC5-R3").await;
    commit(
        &store,
        vec![
            reading("OC5-R3", 3, at(2), Some(1001.0), &[]),
            reading("OC5-R3", 4, at(3), Some(1001.5), &["E101"]),
            reading("OC5-R3", 5, at(4), Some(1002.0), &[]),
        ],
    )
    .await;
    let data = store.reliability_data(all_time()).await.expect("data");
    assert_eq!(data.alarms.len(), 2, "two episodes");
    assert_eq!(data.failures.len(), 1, "one incident");
    let order = the_order(&store, "OC5-R3").await;
    complete(&store, order, outcome(true, Some("E101"))).await;
    let data = store.reliability_data(all_time()).await.expect("data");
    assert_eq!(data.failures.len(), 1);
    assert_eq!(data.failures[0].source, FailureSource::RepairOrder);
}

#[tokio::test]
async fn a_confirmed_repair_without_an_alarm_is_its_own_event_and_a_warning_alarm_is_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, policy) = open(dir.path()).await;
    // W201 does not count as a failure
    commit(
        &store,
        vec![
            reading("OC5-R4", 1, at(0), Some(10.0), &[]),
            reading("OC5-R4", 2, at(1), Some(11.0), &["W201"]),
        ],
    )
    .await;
    let now = Utc::now();
    let intent = OrderIntent {
        serial: sn("OC5-R4"),
        cause: Cause::parse("customer_call").expect("cause"),
        kind: OrderKind::Repair,
        priority: Priority::P2,
        title: "Patient reports noise".into(),
        solution: String::new(),
        skills: vec![],
        parts: vec![],
        labour_minutes: 30,
        evidence: json!({}),
        triggered_at: now,
        sla: policy.sla_for(Priority::P2, now),
        new_episode: true,
    };
    let (order, _) = store
        .create_manual_order(intent, Actor("test".into()))
        .await
        .expect("order");
    assert!(
        store
            .reliability_data(all_time())
            .await
            .expect("data")
            .failures
            .is_empty()
    );
    complete(&store, order.id, outcome(true, Some("E103"))).await;
    let data = store.reliability_data(all_time()).await.expect("data");
    assert_eq!(data.failures.len(), 1);
    let f = &data.failures[0];
    assert_eq!(
        (f.source, f.order_id),
        (FailureSource::RepairOrder, Some(order.id))
    );
    assert_eq!(f.age_hours, Some(11.0), "the meter at completion");
    assert_eq!(f.failure_mode.as_deref(), Some("cooling"));
    assert_eq!(f.alarm_episode_id, None);
}

fn hours_of(data: &fleetpulse_domain::reliability::ReliabilityData, serial: &str) -> f64 {
    data.exposure
        .iter()
        .filter(|e| e.serial.as_str() == serial)
        .map(|e| e.hours)
        .sum()
}

#[tokio::test]
async fn exposure_follows_the_meter_through_backlogs_resets_gaps_and_months() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path()).await;
    let s = "OC5-X1";
    // the last hours of December (hour -1 not yet uploaded), then January: 0.8 h of
    // running per hour
    let meter = |h: i64| 504.0 + 0.8 * h as f64;
    let live: Vec<Reading> = (-5..5)
        .filter(|h| *h != -1)
        .map(|h| reading(s, (10 + h) as u64, at(h), Some(meter(h)), &[]))
        .collect();
    commit(&store, live).await;
    let jan = whole(at(0), at(31 * 24));
    let data = store.reliability_data(jan).await.expect("data");
    let rows: Vec<_> = data
        .exposure
        .iter()
        .filter(|e| e.serial.as_str() == s)
        .collect();
    assert_eq!(rows.len(), 1, "January only");
    // the step from December's last value (hour -2) to January's first (hour 0) lies in
    // December: January counts its own four steps
    assert!((rows[0].hours - 3.2).abs() < 1e-9, "{}", rows[0].hours);
    let dev = data
        .devices
        .iter()
        .find(|d| d.serial.as_str() == s)
        .expect("device");
    assert_eq!(dev.age_at_start, Some(meter(-2)));
    assert!((dev.age_at_end.expect("age") - meter(4)).abs() < 1e-9);
    let dec_and_jan = whole(at(-24), at(31 * 24));
    let both = store.reliability_data(dec_and_jan).await.expect("data");
    let total = hours_of(&both, s);
    assert!((total - 7.2).abs() < 1e-9, "{total}");
    // two months are read by two readers: the ages come from the first and the last
    let dev = both
        .devices
        .iter()
        .find(|d| d.serial.as_str() == s)
        .expect("device");
    assert_eq!(dev.age_at_start, Some(meter(-5)));
    assert!((dev.age_at_end.expect("age") - meter(4)).abs() < 1e-9);
    assert_eq!(both.exposure.first().map(|e| e.month), Some(at(-24 * 31)));

    // the backlog of hour -1 lands: December is refolded, and January with it (its
    // baseline moved); January's hours and the total stay
    commit(&store, vec![reading(s, 9, at(-1), Some(meter(-1)), &[])]).await;
    let data = store.reliability_data(jan).await.expect("data");
    let row = data
        .exposure
        .iter()
        .find(|e| e.serial.as_str() == s)
        .expect("row");
    assert!((row.hours - 3.2).abs() < 1e-9, "{}", row.hours);
    let dev = data
        .devices
        .iter()
        .find(|d| d.serial.as_str() == s)
        .expect("device");
    assert_eq!(dev.age_at_start, Some(meter(-1)));
    let total = hours_of(&store.reliability_data(dec_and_jan).await.expect("data"), s);
    assert!((total - 7.2).abs() < 1e-9, "{total}");

    // two days of silence, then the meter again: a gap, its hours counted
    commit(
        &store,
        vec![reading(s, 200, at(4 + 48), Some(meter(4) + 30.0), &[])],
    )
    .await;
    let data = store.reliability_data(jan).await.expect("data");
    let row = data
        .exposure
        .iter()
        .find(|e| e.serial.as_str() == s)
        .expect("row");
    assert!((row.gap_hours - 48.0).abs() < 1e-9, "{}", row.gap_hours);
    assert!((row.hours - 33.2).abs() < 1e-9, "{}", row.hours);
    assert!(
        data.quality
            .iter()
            .any(|q| q.kind == "gap" && q.serial.as_str() == s && q.at == Some(at(4)))
    );

    // a meter reset: the hours after it count, the decrease is reported
    let r = "OC5-X2";
    let values = [900.0, 901.0, 0.5, 1.5, 2.5];
    commit(
        &store,
        values
            .iter()
            .enumerate()
            .map(|(i, v)| reading(r, i as u64 + 1, at(i as i64), Some(*v), &[]))
            .collect(),
    )
    .await;
    let data = store.reliability_data(jan).await.expect("data");
    let row = data
        .exposure
        .iter()
        .find(|e| e.serial.as_str() == r)
        .expect("row");
    assert_eq!(row.resets, 1);
    assert!((row.hours - 3.5).abs() < 1e-9, "{}", row.hours);
    let reset = data
        .quality
        .iter()
        .find(|q| q.kind == "meter_reset" && q.serial.as_str() == r)
        .expect("reported");
    assert_eq!(reset.at, Some(at(2)));
}

/// Hours of the UTC calendar month starting at `month`.
fn calendar_hours(month: DateTime<Utc>) -> f64 {
    use chrono::{Datelike, Months};
    let start = Utc
        .with_ymd_and_hms(month.year(), month.month(), 1, 0, 0, 0)
        .unwrap();
    ((start + Months::new(1)) - start).num_hours() as f64
}

/// No month over its calendar hours: what the analytics drop as `invalid_exposure_hours`
/// (NaN, negative or over 744 h; `analytics/src/frames.rs`) cannot occur.
fn assert_no_invalid_exposure(data: &fleetpulse_domain::reliability::ReliabilityData) {
    for row in &data.exposure {
        assert!(
            row.hours.is_finite() && row.hours >= 0.0 && row.hours <= calendar_hours(row.month),
            "{} {}: {} h in a month of {} h",
            row.serial.as_str(),
            row.month,
            row.hours,
            calendar_hours(row.month)
        );
    }
}

fn month_hours(
    data: &fleetpulse_domain::reliability::ReliabilityData,
    serial: &str,
    month: DateTime<Utc>,
) -> Option<f64> {
    data.exposure
        .iter()
        .find(|e| e.serial.as_str() == serial && e.month == month)
        .map(|e| e.hours)
}

#[tokio::test]
async fn a_silence_across_month_boundaries_is_split_between_the_months_after_a_backlog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path()).await;
    let rate = 0.75; // h of running per hour
    let meter = |h: i64| 1000.0 + rate * h as f64;
    let (jan, feb, mar) = (31 * 24, 28 * 24, 31 * 24);
    let period = whole(at(0), at(jan + feb + mar));
    // A: live through January until Jan 25 12:00, silent for 500 h, then live again from
    // Feb 14 08:00 (the case). B: silent from Jan 20 to Mar 10, February without
    // a single value.
    let a = "OC5-S1";
    let b = "OC5-S2";
    let (a_stop, a_speak) = (24 * 24 + 12, 24 * 24 + 12 + 500);
    let (b_stop, b_speak) = (19 * 24, jan + feb + 9 * 24);
    let hourly = |serial: &str, from: i64, to: i64| -> Vec<Reading> {
        (from..to)
            .map(|h| reading(serial, (h + 100) as u64, at(h), Some(meter(h)), &[]))
            .collect()
    };
    let mut january = hourly(a, -1, a_stop + 1);
    january.extend(hourly(b, -1, b_stop + 1));
    commit(&store, january).await;
    let before = store.reliability_data(period).await.expect("data");
    assert_no_invalid_exposure(&before);
    // the rest arrives later, as one backlog
    let mut backlog = hourly(a, a_speak, jan + feb + mar);
    backlog.extend(hourly(b, b_speak, jan + feb + mar));
    commit(&store, backlog).await;

    let data = store.reliability_data(period).await.expect("data");
    assert_no_invalid_exposure(&data);
    for s in [a, b] {
        // every month counts its own 0.75 h per hour: January was refolded when the
        // values after its end arrived, and February has its share even without values
        // (March has no value after it: its last hour waits for April's first value)
        for (month, hours) in [(at(0), jan), (at(jan), feb), (at(jan + feb), mar - 1)] {
            let got = month_hours(&data, s, month).unwrap_or(0.0);
            assert!(
                (got - rate * hours as f64).abs() < 1e-6,
                "{s} {month}: {got} h, expected {}",
                rate * hours as f64
            );
        }
        // the quarter adds up to the meter's increment (the step out of December stays
        // in December)
        let total = hours_of(&data, s);
        let increment = meter(jan + feb + mar - 1) - meter(0);
        assert!(
            (total - increment).abs() < 1e-6,
            "{s}: {total} vs {increment}"
        );
    }
    // the silences are reported once, where the meter speaks again
    let gaps: Vec<_> = data
        .quality
        .iter()
        .filter(|q| q.kind == "gap")
        .map(|q| (q.serial.as_str().to_owned(), q.at))
        .collect();
    assert_eq!(
        gaps,
        vec![
            (a.to_owned(), Some(at(a_stop))),
            (b.to_owned(), Some(at(b_stop)))
        ]
    );

    // a store folded before the split (no row for the silent February) and upgraded:
    // the upgrade queues a refold of every row it has, and February gets its row
    {
        let db = rusqlite::Connection::open(dir.path().join("fleetpulse.db")).expect("open");
        db.busy_timeout(std::time::Duration::from_secs(5))
            .expect("busy timeout");
        let removed = db
            .execute(
                "DELETE FROM exposure_months WHERE serial = ?1 AND samples = 0",
                [b],
            )
            .expect("delete");
        assert_eq!(removed, 1, "February of {b} is a month without values");
        db.execute(
            "INSERT OR IGNORE INTO exposure_dirty (month, serial) SELECT month, serial FROM exposure_months",
            [],
        )
        .expect("queue");
    }
    let again = store.reliability_data(period).await.expect("data");
    assert_eq!(again.exposure, data.exposure);
}

#[tokio::test]
async fn a_device_without_a_meter_is_reported_and_has_no_exposure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path()).await;
    commit(
        &store,
        vec![
            reading("OC5-N1", 1, at(0), None, &[]),
            reading("OC5-N1", 2, at(1), None, &[]),
        ],
    )
    .await;
    let data = store.reliability_data(all_time()).await.expect("data");
    assert!(data.exposure.is_empty());
    let q = data
        .quality
        .iter()
        .find(|q| q.serial.as_str() == "OC5-N1")
        .expect("finding");
    assert_eq!(q.kind, "no_meter");
    let dev = data
        .devices
        .iter()
        .find(|d| d.serial.as_str() == "OC5-N1")
        .expect("device");
    assert_eq!((dev.age_at_start, dev.age_at_end), (None, None));
    assert_eq!(dev.model.as_deref(), Some("OC-5A"));
    assert_eq!(dev.kind.as_deref(), Some("oxygen_concentrator"));
}

#[tokio::test]
async fn the_consolidation_pass_folds_only_what_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path()).await;
    commit(
        &store,
        (0..5)
            .map(|i| reading("OC5-C1", i + 1, at(i as i64), Some(i as f64), &[]))
            .collect(),
    )
    .await;
    let first = store.consolidate_exposure(100).await.expect("fold");
    assert_eq!((first.pairs, first.remaining), (1, 0));
    assert_eq!(first.rollup_rows, 5);
    assert_eq!(
        store.consolidate_exposure(100).await.expect("fold").pairs,
        0,
        "nothing dirty"
    );
    // a reading without the meter dirties nothing
    commit(&store, vec![reading("OC5-C1", 50, at(30), None, &[])]).await;
    assert_eq!(
        store.consolidate_exposure(100).await.expect("fold").pairs,
        0
    );
    // a redelivered reading is a duplicate: nothing dirty either
    commit(&store, vec![reading("OC5-C1", 1, at(0), Some(0.0), &[])]).await;
    assert_eq!(
        store.consolidate_exposure(100).await.expect("fold").pairs,
        0
    );
}

async fn register(store: &SqliteStore, serial: &str, model: &str) {
    store
        .register_device(NewDevice {
            serial: sn(serial),
            model: ModelId::parse(model).expect("model"),
            status: None,
            criticality: None,
            region: Some("north".into()),
            address: None,
            commissioned_at: None,
            runtime_hours_at_registration: None,
            observed_from: None,
        })
        .await
        .expect("register");
}

#[tokio::test]
async fn failure_history_imports_good_rows_reports_bad_ones_and_never_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path()).await;
    register(&store, "OC5-H1", "OC-5A").await;
    register(&store, "HV2-H2", "HV-200").await;
    let csv = "serial,at,runtime_hours,fault_code,failure_mode,notes\n\
               OC5-H1,2025-03-01T10:00:00Z,1200.5,E101,,\"compressor seized, replaced\"\n\
               OC5-H1,yesterday,1300,E101,,\n\
               NOPE-1,2025-03-01T10:00:00Z,10,E101,,\n\
               \n\
               HV2-H2,2025-04-02T08:30:00+02:00,,,blower,\n\
               OC5-H1,2025-05-01T00:00:00Z,-4,,,\n\
               OC5-H1,2025-06-01T00:00:00Z,1400\n\
               OC5-H1,2099-01-01T00:00:00Z,1500,,,\n";
    let report = store
        .import_history(ImportKind::Failures, csv.into())
        .await
        .expect("import");
    assert_eq!(report.rows, 7);
    assert_eq!(report.imported, 2);
    let lines: Vec<usize> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 4, 7, 8, 9], "{:?}", report.errors);
    assert!(report.errors[0].reason.contains("RFC 3339"));
    assert!(report.errors[1].reason.contains("not registered"));
    assert!(report.errors[2].reason.contains("runtime_hours"));
    assert!(report.errors[3].reason.contains("fields"));
    assert!(report.errors[4].reason.contains("future"));

    let again = store
        .import_history(ImportKind::Failures, csv.into())
        .await
        .expect("import");
    assert_eq!((again.imported, again.duplicates), (0, 2));

    let period = whole(
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
    );
    let data = store.reliability_data(period).await.expect("data");
    assert_eq!(data.failures.len(), 2);
    let f = &data.failures[0];
    assert_eq!(f.source, FailureSource::Import);
    assert_eq!(f.age_hours, Some(1200.5));
    assert_eq!(
        f.failure_mode.as_deref(),
        Some("compressor"),
        "from the catalog"
    );
    let g = &data.failures[1];
    assert_eq!(g.at, Utc.with_ymd_and_hms(2025, 4, 2, 6, 30, 0).unwrap());
    assert_eq!(g.failure_mode.as_deref(), Some("blower"));
    assert!(data.quality.iter().any(|q| q.kind == "failure_without_age"));
}

#[tokio::test]
async fn an_imported_failure_already_recorded_live_is_the_same_incident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path()).await;
    commit(
        &store,
        vec![
            reading(
                "OC5-H3",
                1,
                Utc::now() - Duration::hours(3),
                Some(10.0),
                &[],
            ),
            reading(
                "OC5-H3",
                2,
                Utc::now() - Duration::hours(2),
                Some(11.0),
                &["E101"],
            ),
        ],
    )
    .await;
    let when = (Utc::now() - Duration::hours(1)).to_rfc3339();
    let csv = format!("serial,at,fault_code\nOC5-H3,{when},E101\n");
    let report = store
        .import_history(ImportKind::Failures, csv)
        .await
        .expect("import");
    assert_eq!(report.imported, 0);
    assert_eq!(report.same_incident.len(), 1);
    assert_eq!(report.same_incident[0].line, 2);
}

#[tokio::test]
async fn maintenance_history_checks_kind_and_consumable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path()).await;
    register(&store, "OC5-M1", "OC-5A").await;
    let csv = "serial,at,runtime_hours,kind,consumable,notes\n\
               OC5-M1,2025-03-01T10:00:00Z,1200,service,,annual\n\
               OC5-M1,2025-03-01T10:00:00Z,1200,consumable,filter,\n\
               OC5-M1,2025-03-02T10:00:00Z,1210,consumable,battery,\n\
               OC5-M1,2025-03-02T10:00:00Z,1210,repair,,\n\
               OC5-M1,2025-03-02T10:00:00Z,1210,consumable,,\n";
    let report = store
        .import_history(ImportKind::Maintenance, csv.into())
        .await
        .expect("import");
    assert_eq!(report.imported, 2, "{:?}", report.errors);
    let lines: Vec<usize> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![4, 5, 6]);
    assert!(
        report.errors[0]
            .reason
            .contains("not a consumable of model OC-5A")
    );
    let again = store
        .import_history(ImportKind::Maintenance, csv.into())
        .await
        .expect("import");
    assert_eq!(again.duplicates, 2);
    let err = store
        .import_history(ImportKind::Maintenance, "serial,at,kind,colour\n".into())
        .await
        .expect_err("unknown column");
    assert!(err.to_string().contains("colour"));
}

#[tokio::test]
async fn a_reversed_period_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path()).await;
    assert!(store.reliability_data(whole(at(5), at(1))).await.is_err());
}
