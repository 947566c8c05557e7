//! The dispatch side of the SQLite store with a controlled clock: SLA escalation (once per
//! breached deadline) and attainment per period; the audit log cannot be altered even
//! with SQL.

use std::sync::Arc;

use chrono::{Duration, Utc};
use fleetpulse_domain::dispatch::{Actor, Dispatch, OrderAction};
use fleetpulse_domain::order::{Cause, OrderIntent, OrderKind, Priority};
use fleetpulse_domain::store::{NewDevice, Store, UnknownDevicePolicy};
use fleetpulse_domain::{Catalog, ModelId, Policy, Serial};
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
            durability: Durability::Full,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await
    .expect("open");
    (store, policy)
}

fn intent(policy: &Policy, serial: &str, cause: &str) -> OrderIntent {
    let now = Utc::now();
    OrderIntent {
        serial: Serial::parse(serial).expect("serial"),
        cause: Cause::parse(cause).expect("cause"),
        kind: OrderKind::Repair,
        priority: Priority::P3,
        title: "t".into(),
        solution: String::new(),
        skills: vec![],
        parts: vec![],
        labour_minutes: 0,
        evidence: json!({}),
        triggered_at: now,
        sla: policy.sla_for(Priority::P3, now),
        new_episode: true,
    }
}

#[tokio::test]
async fn each_breached_deadline_escalates_once_and_attainment_counts_met_and_missed() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, policy) = open(dir.path()).await;
    store
        .register_device(NewDevice {
            serial: Serial::parse("OC5-T0001").expect("serial"),
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
    let actor = Actor("test".into());
    let (late, _) = store
        .create_manual_order(intent(&policy, "OC5-T0001", "call_a"), actor.clone())
        .await
        .expect("order");
    let (on_time, _) = store
        .create_manual_order(intent(&policy, "OC5-T0001", "call_b"), actor.clone())
        .await
        .expect("order");
    // on_time is acknowledged at once (P3: respond within 4 h)
    store
        .transition(
            on_time.id,
            on_time.version,
            OrderAction::Acknowledge,
            actor.clone(),
            Utc::now(),
        )
        .await
        .expect("ack");

    let t = Utc::now();
    assert_eq!(
        store
            .escalate_sla_breaches(t + Duration::hours(1))
            .await
            .expect("scan"),
        0
    );
    // at +5 h the unacknowledged order breached its respond deadline: escalated once
    assert_eq!(
        store
            .escalate_sla_breaches(t + Duration::hours(5))
            .await
            .expect("scan"),
        1
    );
    assert_eq!(
        store
            .escalate_sla_breaches(t + Duration::hours(6))
            .await
            .expect("scan"),
        0
    );
    let h = store.order_history(late.id).await.expect("history");
    let esc = h
        .iter()
        .find(|e| e.kind == "sla_breached")
        .expect("escalation event");
    assert_eq!(
        (esc.actor.as_str(), esc.data["deadline"].clone()),
        ("sla", json!("respond_by"))
    );
    // at +4 days both missed their 3-day arrive deadline, the late one its respond too
    assert_eq!(
        store
            .escalate_sla_breaches(t + Duration::days(4))
            .await
            .expect("scan"),
        2
    );

    let a = store
        .sla_attainment(
            t - Duration::hours(1),
            t + Duration::hours(1),
            t + Duration::hours(5),
        )
        .await
        .expect("attainment");
    let p3 = &a["by_priority"][0];
    assert_eq!(p3["priority"], json!("P3"));
    assert_eq!(p3["orders"], json!(2));
    assert_eq!(p3["respond"]["met"], json!(1));
    assert_eq!(p3["respond"]["missed"], json!(1));
    assert_eq!(p3["respond"]["attainment_pct"], json!(50.0));
    // arrive is not due yet at +5 h: undecided
    assert_eq!(p3["arrive"]["attainment_pct"], json!(null));
}

#[tokio::test]
async fn the_audit_log_and_order_history_refuse_updates_and_deletes() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, _) = open(dir.path()).await;
    store
        .create_api_token(
            "x",
            fleetpulse_domain::dispatch::Role::Admin,
            [7; 32],
            Actor("cli".into()),
        )
        .await
        .expect("token");
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("fleetpulse.db")).expect("open");
    let err = conn
        .execute("UPDATE audit_log SET actor = 'someone else'", [])
        .expect_err("append-only");
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(conn.execute("DELETE FROM audit_log", []).is_err());
}
