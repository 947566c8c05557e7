//! The order stream (`GET /api/v1/orders/stream`) against the real binary: a revoked
//! token ends its streams and gets no order after the revocation, a new order reaches an
//! open stream through the commit notifier (the shared store look is set to an hour, so
//! no poll can deliver it), and the per-token cap refuses one stream too many and frees
//! the place of a stream that closed.

use std::time::Duration;

use fleetpulse_system_tests::App;
use fleetpulse_system_tests::dispatch::{Answer, Client, SseReader};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const STREAM: &str = "/api/v1/orders/stream";

/// `fleetpulse serve` whose shared store look runs once an hour: only the in-process
/// notifier can wake a stream within a test.
async fn serve(env: &[(&str, &str)]) -> anyhow::Result<(tempfile::TempDir, App)> {
    let dir = tempfile::tempdir()?;
    let mut all = vec![("FLEETPULSE_HTTP__STREAMS__STORE_POLL_MS", "3600000")];
    all.extend_from_slice(env);
    let app =
        App::spawn_with_env(dir.path(), &["serve", "--mqtt-listen", "127.0.0.1:0"], &all).await?;
    Ok((dir, app))
}

/// A token made through the API: (id, secret).
async fn token(admin: &Client, name: &str, role: &str) -> anyhow::Result<(i64, String)> {
    let t = admin
        .post("/api/v1/tokens", &json!({"name": name, "role": role}))
        .await?;
    anyhow::ensure!(t.status == 201, "token: {} {}", t.status, t.body);
    let id = t.body["id"].as_i64().expect("token id");
    let secret = t.body["token"].as_str().expect("token secret").to_owned();
    Ok((id, secret))
}

async fn register(admin: &Client, serial: &str) -> anyhow::Result<()> {
    let a = admin
        .post(
            "/api/v1/devices",
            &json!({"serial": serial, "model": "OC-5A", "status": "at_customer", "region": "north", "address": "1 Main St"}),
        )
        .await?;
    anyhow::ensure!(
        a.status == 201,
        "register {serial}: {} {}",
        a.status,
        a.body
    );
    Ok(())
}

/// The answer to a stream request that must be refused; an error if a stream opens.
async fn refused(client: &Client) -> anyhow::Result<Answer> {
    tokio::time::timeout(Duration::from_secs(5), client.get(STREAM))
        .await
        .map_err(|_| anyhow::anyhow!("the stream opened instead of being refused"))?
}

async fn manual_order(admin: &Client, serial: &str) -> anyhow::Result<i64> {
    let o = admin
        .post(
            "/api/v1/orders",
            &json!({"serial": serial, "cause": "customer_call", "kind": "repair", "title": "t"}),
        )
        .await?;
    anyhow::ensure!(o.status == 201, "order: {} {}", o.status, o.body);
    Ok(o.body["id"].as_i64().expect("order id"))
}

#[tokio::test]
async fn a_new_order_reaches_an_open_stream_and_a_revoked_token_ends_it() -> anyhow::Result<()> {
    let (_dir, app) = serve(&[]).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let (tid, secret) = token(&admin, "wallboard", "planner").await?;
    let screen = Client::new(&app, Some(&secret))?;
    register(&admin, "OC5-R0001").await?;
    register(&admin, "OC5-R0002").await?;
    let mut live = SseReader::open(&screen, STREAM, None).await?;
    // a second stream of another token stays open throughout
    let mut other = SseReader::open(&admin, STREAM, None).await?;

    // delivered by the commit notifier: the store look is an hour away
    let first = manual_order(&admin, "OC5-R0001").await?;
    let e = live.next(WAIT).await?;
    assert_eq!(e.event.as_deref(), Some("order.created"));
    assert_eq!(e.data["order"]["id"], json!(first));
    assert_eq!(other.next(WAIT).await?.data["order"]["id"], json!(first));

    // revoked through the API: the stream ends at once, and an order made right after
    // the revocation never reaches it
    let r = admin.delete(&format!("/api/v1/tokens/{tid}")).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let after = manual_order(&admin, "OC5-R0002").await?;
    let leaked: Vec<Value> = live
        .until_end(Duration::from_secs(5))
        .await?
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert!(
        leaked.is_empty(),
        "a revoked token got events after its revocation: {leaked:?}"
    );
    // the token's next attempt is refused
    assert_eq!(refused(&screen).await?.status, 401);
    // the other token's stream goes on
    assert_eq!(other.next(WAIT).await?.data["order"]["id"], json!(after));
    Ok(())
}

#[tokio::test]
async fn the_stream_cap_refuses_one_too_many_and_a_closed_stream_frees_its_place()
-> anyhow::Result<()> {
    let (_dir, app) = serve(&[("FLEETPULSE_HTTP__STREAMS__MAX_PER_TOKEN", "2")]).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let (_, secret) = token(&admin, "wallboard", "planner").await?;
    let screen = Client::new(&app, Some(&secret))?;

    let first = SseReader::open(&screen, STREAM, None).await?;
    let _second = SseReader::open(&screen, STREAM, None).await?;
    let third = refused(&screen).await?;
    assert_eq!(third.status, 429, "{}", third.body);
    assert_eq!(third.body["code"], json!("too_many_streams"));
    assert_eq!(third.body["details"]["max_streams_per_token"], json!(2));
    assert!(
        third.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("http.streams.max_per_token")),
        "{}",
        third.body
    );
    // the cap is per token: another token still opens one
    let _admin_stream = SseReader::open(&admin, STREAM, None).await?;

    // the client hangs up: its place is free again (the server notices the closed
    // connection at the latest at the 15 s keep-alive comment)
    drop(first);
    let reopened = fleetpulse_system_tests::eventually(WAIT, "a freed stream place", || {
        let screen = &screen;
        async move { SseReader::open(screen, STREAM, None).await.map(Some) }
    })
    .await?;
    // and the cap holds again with the new stream
    assert_eq!(refused(&screen).await?.status, 429);
    drop(reopened);
    Ok(())
}
