//! Device token digests: issued, rotated, revoked, and kept across a reopen.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use fleetpulse_domain::credentials::{DeviceCredentials, TokenDigest};
use fleetpulse_domain::store::UnknownDevicePolicy;
use fleetpulse_domain::{Catalog, Policy, Serial};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};

async fn open(path: &Path) -> SqliteStore {
    let catalog = Arc::new(
        Catalog::from_toml_str(include_str!("../../config/catalog.toml")).expect("catalog"),
    );
    let policy =
        Arc::new(Policy::from_toml_str(include_str!("../../config/policy.toml")).expect("policy"));
    SqliteStore::open(
        path,
        StoreOptions {
            clock: Default::default(),
            catalog,
            rules: Arc::new(CatalogRules::new(policy)),
            unknown_device: UnknownDevicePolicy::AutoRegister,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
            durability: Durability::Full,
        },
    )
    .await
    .expect("open store")
}

#[tokio::test]
async fn a_token_digest_is_issued_rotated_and_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fleetpulse.db");
    let serial = Serial::parse("OC5-CRED1").expect("serial");
    let store = open(&path).await;
    assert_eq!(store.token_digest(&serial).await.expect("read"), None);

    store
        .set_token_digest(&serial, TokenDigest([1; 32]), Utc::now())
        .await
        .expect("issue");
    store
        .set_token_digest(&serial, TokenDigest([2; 32]), Utc::now())
        .await
        .expect("rotate");
    drop(store);

    let store = open(&path).await;
    assert_eq!(
        store.token_digest(&serial).await.expect("read"),
        Some(TokenDigest([2; 32])),
        "the rotated digest replaced the first and survived a reopen"
    );
    assert!(store.revoke_token(&serial).await.expect("revoke"));
    assert!(!store.revoke_token(&serial).await.expect("revoke again"));
    assert_eq!(store.token_digest(&serial).await.expect("read"), None);
}

#[test]
fn a_digest_is_never_printed() {
    assert!(!format!("{:?}", TokenDigest([0xAB; 32])).contains("171"));
    assert!(!format!("{:?}", TokenDigest([0xAB; 32])).contains("ab"));
}
