//! The dispatch API against the real binary: every lifecycle transition (legal and
//! illegal), optimistic concurrency, completion effects on the device, manual orders
//! with the rules' dedupe, API tokens and roles (401 vs 403), the audit log.

use std::time::Duration;

use fleetpulse_system_tests::dispatch::{Client, create_token};
use fleetpulse_system_tests::{App, eventually, mosquitto_pub, reading, telemetry_topic};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn serve() -> anyhow::Result<(tempfile::TempDir, App)> {
    let dir = tempfile::tempdir()?;
    let app = App::serve_builtin(dir.path()).await?;
    Ok((dir, app))
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

fn version(order: &Value) -> u64 {
    order["version"].as_u64().expect("order has a version")
}

#[tokio::test]
async fn an_order_goes_through_every_transition_and_refuses_illegal_ones() -> anyhow::Result<()> {
    let (dir, app) = serve().await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let token = create_token(dir.path(), "dispatcher", "alice").await?;
    let alice = Client::new(&app, Some(&token))?;
    register(&admin, "OC5-D0001").await?;

    // a dispatcher's own order; the same (serial, cause) again updates it
    let new = json!({"serial": "OC5-D0001", "cause": "customer_call", "kind": "inspection",
                     "title": "Patient reports noise", "notes": "called at 9:05"});
    let created = alice.post("/api/v1/orders", &new).await?;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_i64().expect("id");
    assert_eq!(created.body["origin"], json!("manual"));
    assert_eq!(
        created.body["priority"],
        json!("P3"),
        "policy's manual priority"
    );
    assert_eq!(created.etag.as_deref(), Some("\"1\""));
    // a person reporting again is a new trigger episode (`updated`); one that raises the
    // priority is `escalated`
    let again = alice.post("/api/v1/orders", &new).await?;
    assert_eq!(
        again.status, 200,
        "dedupe answers the existing order: {}",
        again.body
    );
    assert_eq!(again.body["id"], json!(id));
    assert_eq!(again.body["trigger_count"], json!(2));
    let mut urgent = new.clone();
    urgent["priority"] = json!("P1");
    let escalated = alice.post("/api/v1/orders", &urgent).await?;
    assert_eq!(escalated.status, 200);
    assert_eq!(
        (
            escalated.body["trigger_count"].clone(),
            escalated.body["priority"].clone()
        ),
        (json!(3), json!("P1"))
    );

    let path = |step: &str| format!("/api/v1/orders/{id}/{step}");
    let current = alice.get(&format!("/api/v1/orders/{id}")).await?;
    let v = version(&current.body);
    assert_eq!(current.etag, Some(format!("\"{v}\"")));

    // no If-Match: 428; a stale one: 412 with the current version
    let a = alice
        .post_if_match(&path("acknowledge"), None, &json!({}))
        .await?;
    assert_eq!(a.status, 428, "{}", a.body);
    assert_eq!(a.body["code"], json!("if_match_required"));
    let a = alice
        .post_if_match(&path("acknowledge"), Some(v - 1), &json!({}))
        .await?;
    assert_eq!(a.status, 412, "{}", a.body);
    assert_eq!(a.body["details"]["current_version"], json!(v));

    // illegal from open: start → 409 with the allowed next states
    let a = alice
        .post_if_match(&path("start"), Some(v), &json!({}))
        .await?;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(a.body["code"], json!("illegal_transition"));
    assert_eq!(a.body["details"]["status"], json!("open"));
    assert_eq!(
        a.body["details"]["allowed_next"],
        json!(["acknowledged", "cancelled"])
    );

    let a = alice
        .post_if_match(&path("acknowledge"), Some(v), &json!({}))
        .await?;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], json!("acknowledged"));
    assert!(a.body["acknowledged_at"].is_string());
    let v = version(&a.body);
    assert_eq!(a.etag, Some(format!("\"{v}\"")));

    // acknowledge twice: 409; complete before assigning: 409
    let a = alice
        .post_if_match(&path("acknowledge"), Some(v), &json!({}))
        .await?;
    assert_eq!(
        (a.status, a.body["details"]["allowed_next"].clone()),
        (409, json!(["assigned", "cancelled"]))
    );
    let a = alice
        .post_if_match(
            &path("complete"),
            Some(v),
            &json!({"failure_confirmed": false}),
        )
        .await?;
    assert_eq!(a.status, 409, "{}", a.body);

    // assign needs an engineer; unknown fields are refused by name
    let a = alice
        .post_if_match(
            &path("assign"),
            Some(v),
            &json!({"engineer": "E-7", "colour": "red"}),
        )
        .await?;
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(
        a.body["message"].as_str().unwrap_or("").contains("colour"),
        "{}",
        a.body
    );
    let a = alice
        .post_if_match(
            &path("assign"),
            Some(v),
            &json!({"engineer": "E-7", "planned_visit_at": "2030-01-02T09:00:00Z"}),
        )
        .await?;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["engineer"], json!("E-7"));
    assert_eq!(a.body["planned_visit_at"], json!("2030-01-02T09:00:00Z"));
    // re-assignment is a legal step
    let a = alice
        .post_if_match(
            &path("assign"),
            Some(version(&a.body)),
            &json!({"engineer": "E-9"}),
        )
        .await?;
    assert_eq!((a.status, a.body["engineer"].clone()), (200, json!("E-9")));
    let a = alice
        .post_if_match(&path("start"), Some(version(&a.body)), &json!({}))
        .await?;
    assert_eq!(
        (a.status, a.body["status"].clone()),
        (200, json!("in_progress"))
    );
    let outcome = json!({"failure_confirmed": false, "labour_minutes": 25, "notes": "loose panel fixed",
                         "signature_ref": "SIG-1", "parts_replaced": [{"number": "SCREW-4", "qty": 2}]});
    let a = alice
        .post_if_match(&path("complete"), Some(version(&a.body)), &outcome)
        .await?;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], json!("completed"));
    assert_eq!(a.body["outcome"]["parts_replaced"][0]["qty"], json!(2));
    assert!(a.body["closed_at"].is_string());
    // closed: nothing is allowed any more
    let a = alice
        .post_if_match(
            &path("cancel"),
            Some(version(&a.body)),
            &json!({"reason": "late"}),
        )
        .await?;
    assert_eq!(a.status, 409);
    assert_eq!(a.body["details"]["allowed_next"], json!([]));

    // the history has every step with its actor, in order
    let h = alice.get(&path("history")).await?;
    assert_eq!(h.status, 200, "{}", h.body);
    let kinds: Vec<&str> = h.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "updated",
            "escalated",
            "acknowledged",
            "assigned",
            "assigned",
            "started",
            "completed"
        ]
    );
    let actors: Vec<&str> = h.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert!(actors.iter().all(|a| a.ends_with(":alice")), "{actors:?}");

    // a new order for the same cause may exist once the old one is closed; cancel from open
    let fresh = alice.post("/api/v1/orders", &new).await?;
    assert_eq!(fresh.status, 201, "{}", fresh.body);
    assert_ne!(fresh.body["id"], json!(id));
    let fid = fresh.body["id"].as_i64().expect("id");
    let a = alice
        .post_if_match(
            &format!("/api/v1/orders/{fid}/cancel"),
            Some(version(&fresh.body)),
            &json!({"reason": "duplicate of a call"}),
        )
        .await?;
    assert_eq!(
        (
            a.status,
            a.body["status"].clone(),
            a.body["cancel_reason"].clone()
        ),
        (200, json!("cancelled"), json!("duplicate of a call"))
    );

    // the audit log holds before/after of each change; only the API's readers see it
    let audit = admin
        .get(&format!("/api/v1/audit?target=order:{id}"))
        .await?;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let entries = audit.body["items"].as_array().expect("items");
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "order.create",
            "order.retrigger",
            "order.retrigger",
            "order.acknowledged",
            "order.assigned",
            "order.assigned",
            "order.started",
            "order.completed"
        ]
    );
    let ack = &entries[3];
    assert_eq!(
        (
            ack["before"]["status"].clone(),
            ack["after"]["status"].clone()
        ),
        (json!("open"), json!("acknowledged"))
    );
    // there is no way to change it through the API
    for method_path in ["/api/v1/audit"] {
        let a = admin.delete(method_path).await?;
        assert_eq!(a.status, 405, "{}", a.body);
    }
    Ok(())
}

#[tokio::test]
async fn two_dispatchers_cannot_overwrite_each_other() -> anyhow::Result<()> {
    let (dir, app) = serve().await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let a_tok = create_token(dir.path(), "dispatcher", "ann").await?;
    let b_tok = create_token(dir.path(), "dispatcher", "bob").await?;
    let (ann, bob) = (
        Client::new(&app, Some(&a_tok))?,
        Client::new(&app, Some(&b_tok))?,
    );
    register(&admin, "OC5-D0002").await?;
    let o = ann
        .post("/api/v1/orders", &json!({"serial": "OC5-D0002", "cause": "customer_call", "kind": "repair", "title": "No flow"}))
        .await?;
    let id = o.body["id"].as_i64().expect("id");
    let a = ann
        .post_if_match(
            &format!("/api/v1/orders/{id}/acknowledge"),
            Some(version(&o.body)),
            &json!({}),
        )
        .await?;
    let v = version(&a.body);

    // both read version v and assign different engineers at the same time
    let path = format!("/api/v1/orders/{id}/assign");
    let (body_a, body_b) = (json!({"engineer": "E-ANN"}), json!({"engineer": "E-BOB"}));
    let (ra, rb) = tokio::join!(
        ann.post_if_match(&path, Some(v), &body_a),
        bob.post_if_match(&path, Some(v), &body_b),
    );
    let (ra, rb) = (ra?, rb?);
    let mut statuses = [ra.status, rb.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412], "{} / {}", ra.body, rb.body);
    let winner = if ra.status == 200 { "E-ANN" } else { "E-BOB" };
    let now = ann.get(&format!("/api/v1/orders/{id}")).await?;
    assert_eq!(now.body["engineer"], json!(winner));
    assert_eq!(version(&now.body), v + 1);
    Ok(())
}

#[tokio::test]
async fn completing_a_repair_records_the_failure_resets_the_filter_and_moves_the_device()
-> anyhow::Result<()> {
    let (dir, app) = serve().await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let disp = Client::new(
        &app,
        Some(&create_token(dir.path(), "dispatcher", "d").await?),
    )?;
    let serial = "OC5-D0003";
    register(&admin, serial).await?;
    let mqtt = app.mqtt.expect("built-in endpoint");
    mosquitto_pub(
        mqtt,
        serial,
        &telemetry_topic(serial),
        &reading(
            1,
            json!({"runtime_hours": 1234.5, "filter_life_pct": 10.0, "alarms": ["E101"]}),
        ),
    )
    .await?;
    let orders = eventually(WAIT, "the filter and repair orders", || async {
        let o = app
            .orders(&format!("serial={serial}&status=active"))
            .await?;
        Ok((o.len() == 2).then_some(o))
    })
    .await?;
    let repair = orders
        .iter()
        .find(|o| o["cause"] == json!("critical_alarm:E101"))
        .expect("repair order");
    let id = repair["id"].as_i64().expect("id");
    let h = disp.get(&format!("/api/v1/orders/{id}/history")).await?;
    assert_eq!(h.body["events"][0]["kind"], json!("created"));
    assert_eq!(h.body["events"][0]["actor"], json!("rules"));

    let mut v = version(repair);
    for (step, body) in [
        ("acknowledge", json!({})),
        ("assign", json!({"engineer": "E-1"})),
        ("start", json!({})),
    ] {
        let a = disp
            .post_if_match(&format!("/api/v1/orders/{id}/{step}"), Some(v), &body)
            .await?;
        assert_eq!(a.status, 200, "{step}: {}", a.body);
        v = version(&a.body);
    }
    // a consumable the model does not have is refused before anything changes
    let bad = disp
        .post_if_match(
            &format!("/api/v1/orders/{id}/complete"),
            Some(v),
            &json!({"failure_confirmed": true, "consumables_replaced": ["sparkplug"]}),
        )
        .await?;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(
        bad.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("sparkplug")
    );
    let done = disp
        .post_if_match(
            &format!("/api/v1/orders/{id}/complete"),
            Some(v),
            &json!({
        "failure_confirmed": true, "fault_code": "E101", "consumables_replaced": ["filter"],
        "parts_replaced": [{"number": "OC5-CMP-01", "qty": 1}], "labour_minutes": 95,
        "notes": "compressor seized", "device_status": "in_repair"}),
        )
        .await?;
    assert_eq!(done.status, 200, "{}", done.body);

    let failures = disp
        .get(&format!("/api/v1/devices/{serial}/failures"))
        .await?;
    let f = failures.body.as_array().expect("failures");
    assert_eq!(f.len(), 1, "{}", failures.body);
    assert_eq!(f[0]["order_id"], json!(id));
    assert_eq!(f[0]["runtime_hours"], json!(1234.5));
    assert_eq!(f[0]["fault_code"], json!("E101"));
    assert_eq!(f[0]["source"], json!("repair_order"));

    let device = disp.get(&format!("/api/v1/devices/{serial}")).await?;
    assert_eq!(device.body["status"], json!("in_repair"));
    assert_eq!(
        device.body["latest"]["values"]["filter_life_pct"],
        json!(100.0)
    );

    let history = disp
        .get(&format!("/api/v1/devices/{serial}/history"))
        .await?;
    assert_eq!(history.status, 200, "{}", history.body);
    assert_eq!(
        history.body["status_history"][0]["to_status"],
        json!("in_repair")
    );
    assert_eq!(history.body["failures"].as_array().map(Vec::len), Some(1));
    assert_eq!(history.body["orders"].as_array().map(Vec::len), Some(2));
    let events = disp.get(&format!("/api/v1/orders/{id}/history")).await?;
    let last = events.body["events"]
        .as_array()
        .and_then(|e| e.last().cloned())
        .expect("event");
    assert_eq!(
        last["data"]["effects"]["consumables_reset"][0]["consumable"],
        json!("filter")
    );
    assert!(
        last["data"]["effects"]["failure_event_id"].is_i64(),
        "{last}"
    );
    Ok(())
}

#[tokio::test]
async fn tokens_and_roles_answer_401_and_403_correctly() -> anyhow::Result<()> {
    let (dir, app) = serve().await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let nobody = Client::new(&app, None)?;
    let forged = Client::new(
        &app,
        Some("fpt_0000000000000000000000000000000000000000000000000000000000000000"),
    )?;
    let quality = Client::new(&app, Some(&create_token(dir.path(), "quality", "q").await?))?;
    let dispatcher = Client::new(
        &app,
        Some(&create_token(dir.path(), "dispatcher", "d").await?),
    )?;
    let device_admin = Client::new(
        &app,
        Some(&create_token(dir.path(), "device-admin", "da").await?),
    )?;

    // health stays open for load balancers; the API needs a token
    assert_eq!(nobody.get("/health").await?.status, 200);
    let a = nobody.get("/api/v1/orders").await?;
    assert_eq!(
        (a.status, a.body["code"].clone()),
        (401, json!("unauthorized"))
    );
    assert_eq!(forged.get("/api/v1/orders").await?.status, 401);

    // reading: every role; changing: only its role (403 names the allowed roles)
    assert_eq!(quality.get("/api/v1/orders").await?.status, 200);
    let a = quality
        .post(
            "/api/v1/devices",
            &json!({"serial": "OC5-R0001", "model": "OC-5A"}),
        )
        .await?;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(
        a.body["details"]["allowed_roles"],
        json!(["device-admin", "admin"])
    );
    let a = device_admin
        .post(
            "/api/v1/devices",
            &json!({"serial": "OC5-R0001", "model": "OC-5A"}),
        )
        .await?;
    assert_eq!(a.status, 201, "{}", a.body);
    let a = device_admin
        .post(
            "/api/v1/orders",
            &json!({"serial": "OC5-R0001", "cause": "x", "kind": "repair", "title": "t"}),
        )
        .await?;
    assert_eq!(a.status, 403);
    let o = dispatcher
        .post(
            "/api/v1/orders",
            &json!({"serial": "OC5-R0001", "cause": "x", "kind": "repair", "title": "t"}),
        )
        .await?;
    assert_eq!(o.status, 201, "{}", o.body);
    let id = o.body["id"].as_i64().expect("id");
    let a = quality
        .post_if_match(
            &format!("/api/v1/orders/{id}/acknowledge"),
            Some(1),
            &json!({}),
        )
        .await?;
    assert_eq!(a.status, 403);
    assert_eq!(dispatcher.get("/api/v1/audit").await?.status, 403);
    assert_eq!(quality.get("/api/v1/audit").await?.status, 200);
    assert_eq!(dispatcher.get("/api/v1/tokens").await?.status, 403);
    // a device status change is the device admin's
    let a = device_admin
        .post(
            "/api/v1/devices/OC5-R0001/status",
            &json!({"status": "in_transit", "reason": "to customer"}),
        )
        .await?;
    assert_eq!(
        (a.status, a.body["status"].clone()),
        (200, json!("in_transit"))
    );
    let a = device_admin
        .post(
            "/api/v1/devices/OC5-R0001/status",
            &json!({"status": "at_customer"}),
        )
        .await?;
    assert_eq!(
        (a.status, a.body["code"].clone()),
        (422, json!("address_required"))
    );

    // tokens through the API: shown once, listed without secrets, revoked at once
    let t = admin
        .post("/api/v1/tokens", &json!({"name": "fsm", "role": "planner"}))
        .await?;
    assert_eq!(t.status, 201, "{}", t.body);
    let secret = t.body["token"].as_str().expect("secret").to_owned();
    let planner = Client::new(&app, Some(&secret))?;
    assert_eq!(planner.get("/api/v1/orders").await?.status, 200);
    let list = admin.get("/api/v1/tokens").await?;
    assert!(
        !list.body.to_string().contains(&secret),
        "secrets are never listed"
    );
    let tid = t.body["id"].as_i64().expect("id");
    let r = admin.delete(&format!("/api/v1/tokens/{tid}")).await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["revoked_at"].is_string());
    assert_eq!(planner.get("/api/v1/orders").await?.status, 401);

    // every change so far is in the audit log with its actor
    let audit = admin.get("/api/v1/audit?limit=1000").await?;
    let actions: Vec<String> = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap_or(""),
                e["actor"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "token.create cli",
        "device.register token:",
        "order.create token:",
        "device.status token:",
        "token.revoke token:",
    ] {
        assert!(
            actions.iter().any(|a| a.starts_with(want)),
            "{want} missing from {actions:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn orders_are_filtered_by_region_model_sla_and_updated_since() -> anyhow::Result<()> {
    let (_dir, app) = serve().await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    register(&admin, "OC5-F0001").await?; // region north
    let a = admin
        .post(
            "/api/v1/devices",
            &json!({"serial": "OC5-F0002", "model": "OC-5A", "region": "south"}),
        )
        .await?;
    assert_eq!(a.status, 201, "{}", a.body);
    let mk = |serial: &str| json!({"serial": serial, "cause": "customer_call", "kind": "repair", "title": "t", "priority": "P3"});
    let north = admin.post("/api/v1/orders", &mk("OC5-F0001")).await?;
    let south = admin.post("/api/v1/orders", &mk("OC5-F0002")).await?;
    let (n_id, s_id) = (north.body["id"].clone(), south.body["id"].clone());
    let ids = |a: &fleetpulse_system_tests::dispatch::Answer| -> Vec<Value> {
        a.body["items"]
            .as_array()
            .map(|i| i.iter().map(|o| o["id"].clone()).collect())
            .unwrap_or_default()
    };

    assert_eq!(
        ids(&admin.get("/api/v1/orders?region=north").await?),
        vec![n_id.clone()]
    );
    assert_eq!(
        ids(&admin.get("/api/v1/orders?region=south&model=OC-5A").await?),
        vec![s_id.clone()]
    );
    assert!(ids(&admin.get("/api/v1/orders?model=VX-1").await?).is_empty());

    // SLA states at a chosen time (P3: respond within 4 h): a controllable clock
    let created: chrono::DateTime<chrono::Utc> =
        north.body["created_at"].as_str().expect("time").parse()?;
    let at = |h: f64| {
        (created + chrono::Duration::milliseconds((h * 3_600_000.0) as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let q = |state: &str, h: f64| format!("/api/v1/orders?sla={state}&sla_at={}", at(h));
    assert_eq!(ids(&admin.get(&q("on_track", 1.0)).await?).len(), 2);
    assert_eq!(ids(&admin.get(&q("at_risk", 3.5)).await?).len(), 2);
    assert_eq!(ids(&admin.get(&q("breached", 5.0)).await?).len(), 2);
    // acknowledging meets the respond deadline: the north order is on track again at +5 h
    let ack = admin
        .post_if_match(
            &format!("/api/v1/orders/{n_id}/acknowledge"),
            Some(version(&north.body)),
            &json!({}),
        )
        .await?;
    assert_eq!(ack.status, 200);
    assert_eq!(
        ids(&admin.get(&q("breached", 5.0)).await?),
        vec![s_id.clone()]
    );
    assert_eq!(
        ids(&admin.get(&q("on_track", 5.0)).await?),
        vec![n_id.clone()]
    );
    // and everything is breached after the 5-day completion deadline
    assert_eq!(ids(&admin.get(&q("breached", 24.0 * 6.0)).await?).len(), 2);
    let bad = admin.get("/api/v1/orders?sla=late").await?;
    assert_eq!(
        (bad.status, bad.body["details"]["parameter"].clone()),
        (400, json!("sla"))
    );

    // updated_since: only what changed since then
    let since = ack.body["updated_at"].as_str().expect("time").to_owned();
    let changed = admin
        .get(&format!("/api/v1/orders?updated_since={since}"))
        .await?;
    assert_eq!(ids(&changed), vec![n_id.clone()]);

    // stable pages: limit 1 walks both orders in id order
    let p1 = admin.get("/api/v1/orders?limit=1").await?;
    let next = p1.body["next"].as_str().expect("next").to_owned();
    let p2 = admin
        .get(&format!("/api/v1/orders?limit=1&after={next}"))
        .await?;
    assert_eq!([ids(&p1), ids(&p2)].concat(), vec![n_id, s_id]);
    Ok(())
}

#[tokio::test]
async fn the_order_stream_resumes_after_the_last_event_id() -> anyhow::Result<()> {
    use fleetpulse_system_tests::dispatch::SseReader;
    let (dir, app) = serve().await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let reader = Client::new(
        &app,
        Some(&create_token(dir.path(), "planner", "screen").await?),
    )?;
    assert_eq!(
        Client::new(&app, None)?
            .get("/api/v1/orders/stream")
            .await?
            .status,
        401
    );
    register(&admin, "OC5-S0001").await?;

    // a fresh stream starts with the next change
    let mut live = SseReader::open(&reader, "/api/v1/orders/stream", None).await?;
    let o = admin
        .post("/api/v1/orders", &json!({"serial": "OC5-S0001", "cause": "customer_call", "kind": "repair", "title": "t"}))
        .await?;
    let id = o.body["id"].as_i64().expect("id");
    let first = live.next(WAIT).await?;
    assert_eq!(first.event.as_deref(), Some("order.created"));
    assert_eq!(first.data["order"]["id"], json!(id));
    let last_seen = first.id.clone().expect("events have ids");
    drop(live);

    // changes while the client is away…
    let mut v = version(&o.body);
    for (step, body) in [
        ("acknowledge", json!({})),
        ("assign", json!({"engineer": "E-1"})),
        ("start", json!({})),
    ] {
        let a = admin
            .post_if_match(&format!("/api/v1/orders/{id}/{step}"), Some(v), &body)
            .await?;
        v = version(&a.body);
    }
    // …arrive in order after a reconnect with Last-Event-ID, and nothing before it
    let mut resumed = SseReader::open(&reader, "/api/v1/orders/stream", Some(&last_seen)).await?;
    let mut kinds = Vec::new();
    let mut prev: i64 = last_seen.parse()?;
    for _ in 0..3 {
        let e = resumed.next(WAIT).await?;
        let eid: i64 = e.id.as_deref().unwrap_or("0").parse()?;
        assert!(eid > prev, "ids increase: {eid} after {prev}");
        prev = eid;
        kinds.push(e.event.unwrap_or_default());
    }
    assert_eq!(
        kinds,
        ["order.acknowledged", "order.assigned", "order.started"]
    );
    // the same sequence can be paged
    let page = reader
        .get(&format!("/api/v1/orders/events?after={last_seen}"))
        .await?;
    assert_eq!(
        page.body["items"].as_array().map(Vec::len),
        Some(3),
        "{}",
        page.body
    );

    // an open stream does not hold up an orderly shutdown
    let mut app = app;
    let status = app.interrupt().await?;
    assert!(status.success(), "{status}");
    drop(resumed);
    Ok(())
}

/// Fast retries for the webhook tests.
const WEBHOOK_ENV: [(&str, &str); 5] = [
    ("FLEETPULSE_WEBHOOKS__TIMEOUT_MS", "400"),
    ("FLEETPULSE_WEBHOOKS__INITIAL_BACKOFF_MS", "100"),
    ("FLEETPULSE_WEBHOOKS__MAX_BACKOFF_MS", "400"),
    ("FLEETPULSE_WEBHOOKS__POLL_MS", "50"),
    ("FLEETPULSE_WEBHOOKS__MAX_ATTEMPTS", "1000"),
];

async fn deliveries(admin: &Client, hook: i64) -> anyhow::Result<Vec<Value>> {
    let a = admin
        .get(&format!("/api/v1/webhooks/{hook}/deliveries?limit=1000"))
        .await?;
    anyhow::ensure!(a.status == 200, "deliveries: {} {}", a.status, a.body);
    Ok(a.body["items"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn webhooks_survive_a_receiver_that_fails_times_out_and_comes_back() -> anyhow::Result<()> {
    use fleetpulse_system_tests::receiver::{Mode, Receiver};
    let dir = tempfile::tempdir()?;
    let app = App::spawn_with_env(
        dir.path(),
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &WEBHOOK_ENV,
    )
    .await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let secret = "a-shared-secret-of-the-receiver";
    let mut receiver = Receiver::start(Mode::Fail, secret).await?;
    let hook = admin
        .post(
            "/api/v1/webhooks",
            &json!({"name": "fsm", "url": receiver.url(), "secret": secret}),
        )
        .await?;
    assert_eq!(hook.status, 201, "{}", hook.body);
    assert_eq!(
        hook.body["secret"],
        json!(secret),
        "the secret is shown at creation"
    );
    let hook_id = hook.body["id"].as_i64().expect("id");
    assert!(
        !admin
            .get("/api/v1/webhooks")
            .await?
            .body
            .to_string()
            .contains(secret)
    );

    // two orders, each through four steps, while the receiver answers 500
    let mut order_ids = Vec::new();
    for serial in ["OC5-W0001", "OC5-W0002"] {
        register(&admin, serial).await?;
        let o = admin
            .post("/api/v1/orders", &json!({"serial": serial, "cause": "customer_call", "kind": "repair", "title": "t"}))
            .await?;
        let id = o.body["id"].as_i64().expect("id");
        let mut v = version(&o.body);
        for (step, body) in [
            ("acknowledge", json!({})),
            ("assign", json!({"engineer": "E-1"})),
            ("start", json!({})),
        ] {
            let a = admin
                .post_if_match(&format!("/api/v1/orders/{id}/{step}"), Some(v), &body)
                .await?;
            v = version(&a.body);
        }
        order_ids.push(id);
    }
    eventually(WAIT, "failed attempts answered 500", || async {
        let d = deliveries(&admin, hook_id).await?;
        Ok(d.iter()
            .any(|x| x["last_status"] == json!(500) && x["attempts"].as_u64() >= Some(2))
            .then_some(()))
    })
    .await?;

    // then it hangs past the sender's timeout…
    receiver.set_mode(Mode::Hang);
    eventually(WAIT, "an attempt that timed out", || async {
        let d = deliveries(&admin, hook_id).await?;
        Ok(d.iter()
            .any(|x| x["last_error"] == json!("timed out"))
            .then_some(()))
    })
    .await?;
    // …then it is down altogether…
    receiver.stop().await;
    eventually(WAIT, "an attempt that could not connect", || async {
        let d = deliveries(&admin, hook_id).await?;
        Ok(d.iter()
            .any(|x| {
                x["last_error"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("could not send")
            })
            .then_some(()))
    })
    .await?;
    assert!(receiver.received().is_empty());

    // …and comes back: every event arrives, signed, once, in order per order
    receiver.set_mode(Mode::Accept);
    receiver.resume().await?;
    let received = eventually(
        Duration::from_secs(30),
        "all 8 events delivered",
        || async {
            let r = receiver.received();
            Ok((r.len() >= 8).then_some(r))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = if receiver.received().len() > received.len() {
        receiver.received()
    } else {
        received
    };
    assert_eq!(
        received.len(),
        8,
        "no duplicates once accepted: {received:?}"
    );
    assert!(
        received.iter().all(|r| r.signature_ok && r.timestamp_fresh),
        "{received:?}"
    );
    // the first event of each order was retried through the outage; the later ones waited
    // behind it (never sent ahead of it), so they went through at their first attempt
    for r in &received {
        let first = r.kind == "order.created";
        assert_eq!(r.attempt > 1, first, "{r:?}");
    }
    for id in &order_ids {
        let kinds: Vec<&str> = received
            .iter()
            .filter(|r| r.order_id == *id)
            .map(|r| r.kind.as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "order.created",
                "order.acknowledged",
                "order.assigned",
                "order.started"
            ],
            "order {id}"
        );
        let ids: Vec<i64> = received
            .iter()
            .filter(|r| r.order_id == *id)
            .map(|r| r.event_id)
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
    }
    let log = deliveries(&admin, hook_id).await?;
    assert_eq!(log.len(), 8);
    assert!(
        log.iter().all(|d| d["state"] == json!("delivered")),
        "{log:?}"
    );
    let listed = admin.get("/api/v1/webhooks").await?;
    assert_eq!(
        (
            listed.body[0]["pending"].clone(),
            listed.body[0]["dead"].clone()
        ),
        (json!(0), json!(0))
    );
    Ok(())
}

#[tokio::test]
async fn a_delivery_that_keeps_failing_ends_dead_in_the_log() -> anyhow::Result<()> {
    use fleetpulse_system_tests::receiver::{Mode, Receiver};
    let dir = tempfile::tempdir()?;
    let mut env = WEBHOOK_ENV.to_vec();
    env.retain(|(k, _)| !k.ends_with("MAX_ATTEMPTS"));
    env.push(("FLEETPULSE_WEBHOOKS__MAX_ATTEMPTS", "3"));
    let app =
        App::spawn_with_env(dir.path(), &["serve", "--mqtt-listen", "127.0.0.1:0"], &env).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let receiver = Receiver::start(Mode::Fail, "0123456789abcdef").await?;
    let hook = admin
        .post(
            "/api/v1/webhooks",
            &json!({"name": "x", "url": receiver.url()}),
        )
        .await?;
    assert!(
        hook.body["secret"]
            .as_str()
            .unwrap_or("")
            .starts_with("whsec_"),
        "{}",
        hook.body
    );
    let hook_id = hook.body["id"].as_i64().expect("id");
    register(&admin, "OC5-W0003").await?;
    admin
        .post("/api/v1/orders", &json!({"serial": "OC5-W0003", "cause": "customer_call", "kind": "repair", "title": "t"}))
        .await?;
    let dead = eventually(WAIT, "a dead delivery", || async {
        let d = deliveries(&admin, hook_id).await?;
        Ok(d.into_iter().find(|x| x["state"] == json!("dead")))
    })
    .await?;
    assert_eq!(dead["attempts"], json!(3));
    assert_eq!(dead["last_status"], json!(500));
    assert_eq!(receiver.requests(), 3);
    let listed = admin.get("/api/v1/webhooks").await?;
    assert_eq!(listed.body[0]["dead"], json!(1));
    let metrics = app.get_text("/metrics").await?;
    assert!(
        metrics.contains(&format!(
            "fleetpulse_webhook_deliveries{{webhook=\"{hook_id}\",state=\"dead\"}} 1"
        )),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn devices_are_imported_in_bulk_and_their_history_and_sla_attainment_are_served()
-> anyhow::Result<()> {
    let (dir, app) = serve().await?;
    let da = Client::new(
        &app,
        Some(&create_token(dir.path(), "device-admin", "stock").await?),
    )?;
    let csv = "serial,model,status,region,address\n\
               OC5-I0001,OC-5A,at_customer,north,\"1 Main St, Apt \"\"B\"\"\"\n\
               OC5-I0002,OC-5A,in_stock,,\n\
               OC5-I0003,NOPE,in_stock,,\n\
               not a serial,OC-5A,,,\n\
               OC5-I0001,OC-5A,,,\n";
    let resp = fleetpulse_system_tests::http_client()
        .build()?
        .post(format!("{}/api/v1/devices/import", app.api))
        .bearer_auth(&app.admin_token)
        .header("Content-Type", "text/csv")
        .body(csv)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await?;
    assert_eq!(
        (body["registered"].clone(), body["failed"].clone()),
        (json!(2), json!(3)),
        "{body}"
    );
    let rows: Vec<u64> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["row"].as_u64())
        .collect();
    assert_eq!(rows, [4, 5, 6], "{body}");
    let d = da.get("/api/v1/devices/OC5-I0001").await?;
    assert_eq!(d.body["address"], json!("1 Main St, Apt \"B\""));

    let json_import = da
        .post("/api/v1/devices/import", &json!([{"serial": "OC5-I0004", "model": "OC-5A"}, {"serial": "OC5-I0005", "model": "OC-5A", "colour": "red"}]))
        .await?;
    assert_eq!(json_import.status, 200, "{}", json_import.body);
    assert_eq!(json_import.body["registered"], json!(1));
    assert!(
        json_import.body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("colour")
    );

    // lifecycle: in_stock → in_transit → at_customer (address, criticality) → history
    for body in [
        json!({"status": "in_transit"}),
        json!({"status": "at_customer", "address": "2 High St", "criticality": "life_supporting", "region": "south"}),
    ] {
        let a = da.post("/api/v1/devices/OC5-I0002/status", &body).await?;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let h = da.get("/api/v1/devices/OC5-I0002/history").await?;
    let steps: Vec<String> = h.body["status_history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|s| {
            format!(
                "{}>{}",
                s["from_status"].as_str().unwrap_or(""),
                s["to_status"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(steps, ["in_stock>in_transit", "in_transit>at_customer"]);
    assert_eq!(h.body["device"]["criticality"], json!("life_supporting"));

    // SLA attainment of the period: a fresh order is not due yet, so undecided
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let o = admin.post("/api/v1/orders", &json!({"serial": "OC5-I0002", "cause": "customer_call", "kind": "repair", "title": "t"})).await?;
    assert_eq!(
        o.body["priority"],
        json!("P2"),
        "manual P3, one step up for life-supporting"
    );
    let a = da.get("/api/v1/sla/attainment").await?;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["by_priority"][0]["orders"], json!(1));
    assert_eq!(
        a.body["by_priority"][0]["respond"]["attainment_pct"],
        json!(null)
    );
    let bad = da
        .get("/api/v1/sla/attainment?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z")
        .await?;
    assert_eq!(bad.status, 400);
    Ok(())
}

#[tokio::test]
async fn the_api_speaks_https_when_a_certificate_is_configured() -> anyhow::Result<()> {
    use fleetpulse_system_tests::tls::Pki;
    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("fleetpulse.toml");
    std::fs::write(
        &config,
        format!(
            "[http.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            pki.server.cert.display().to_string(),
            pki.server.key.display().to_string()
        ),
    )?;
    let config_arg = config.display().to_string();
    let app = App::spawn(
        dir.path(),
        &[
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--config",
            &config_arg,
        ],
    )
    .await?;
    assert!(app.api.starts_with("https://"), "{}", app.api);

    // a client that trusts the test CA (rustls with ring, as fleetpulse itself)
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(&pki.ca_file)?;
    for cert in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &ca_pem,
        )
    {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = fleetpulse_system_tests::http_client()
        .tls_backend_preconfigured(tls)
        .build()?;
    let port = app.api.rsplit(':').next().expect("port");
    let url = format!("https://localhost:{port}");
    let health = https.get(format!("{url}/health")).send().await?;
    assert_eq!(health.status().as_u16(), 200);
    let orders = https
        .get(format!("{url}/api/v1/orders"))
        .bearer_auth(&app.admin_token)
        .send()
        .await?;
    assert_eq!(orders.status().as_u16(), 200);
    // plain HTTP on the same port gets no API answer
    let plain = fleetpulse_system_tests::http_client()
        .build()?
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    Ok(())
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_unless_allowed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = tokio::process::Command::new(fleetpulse_system_tests::fleetpulse_bin())
        .args([
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http",
            "0.0.0.0:0",
            "--data",
        ])
        .arg(dir.path())
        .output()
        .await?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.allow_plain_http") && err.contains("[http.tls]"),
        "{err}"
    );
    let out = tokio::process::Command::new(fleetpulse_system_tests::fleetpulse_bin())
        .args([
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http",
            "0.0.0.0:0",
            "--data",
        ])
        .arg(dir.path())
        .env("FLEETPULSE_HTTP__AUTH", "disabled")
        .env("FLEETPULSE_HTTP__ALLOW_PLAIN_HTTP", "true")
        .output()
        .await?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loopback"),
        "auth disabled off loopback is refused too: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_answer_413_in_the_error_shape() -> anyhow::Result<()> {
    let (_dir, app) = serve().await?;
    let big = "x".repeat(2 * 1024 * 1024);
    for (path, ctype) in [
        ("/api/v1/devices/import", "text/csv"),
        ("/api/v1/orders", "application/json"),
    ] {
        let resp = fleetpulse_system_tests::http_client()
            .build()?
            .post(format!("{}{path}", app.api))
            .bearer_auth(&app.admin_token)
            .header("Content-Type", ctype)
            .body(big.clone())
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 413, "{path}");
        let body: Value = resp.json().await?;
        assert_eq!(body["code"], json!("payload_too_large"), "{path}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn webhook_events_wait_in_the_outbox_across_a_sigkill_of_fleetpulse() -> anyhow::Result<()> {
    use fleetpulse_system_tests::receiver::{Mode, Receiver};
    let dir = tempfile::tempdir()?;
    let args = ["serve", "--mqtt-listen", "127.0.0.1:0"];
    let mut app = App::spawn_with_env(dir.path(), &args, &WEBHOOK_ENV).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let secret = "outbox-survives-restarts";
    let receiver = Receiver::start(Mode::Fail, secret).await?;
    let hook = admin
        .post(
            "/api/v1/webhooks",
            &json!({"name": "fsm", "url": receiver.url(), "secret": secret}),
        )
        .await?;
    let hook_id = hook.body["id"].as_i64().expect("id");
    register(&admin, "OC5-K0001").await?;
    let o = admin
        .post("/api/v1/orders", &json!({"serial": "OC5-K0001", "cause": "customer_call", "kind": "repair", "title": "t"}))
        .await?;
    let id = o.body["id"].as_i64().expect("id");
    let a = admin
        .post_if_match(
            &format!("/api/v1/orders/{id}/acknowledge"),
            Some(version(&o.body)),
            &json!({}),
        )
        .await?;
    assert_eq!(a.status, 200);
    eventually(WAIT, "failed attempts", || async {
        Ok((receiver.requests() >= 2).then_some(()))
    })
    .await?;

    // no chance to flush anything: the events must still be in the store
    app.kill().await;
    receiver.set_mode(Mode::Accept);
    let app = App::spawn_with_env(dir.path(), &args, &WEBHOOK_ENV).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let received = eventually(WAIT, "both events after the restart", || async {
        let r = receiver.received();
        Ok((r.len() >= 2).then_some(r))
    })
    .await?;
    let kinds: Vec<&str> = received.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["order.created", "order.acknowledged"]);
    assert!(received.iter().all(|r| r.signature_ok));
    let log = deliveries(&admin, hook_id).await?;
    assert!(
        log.iter().all(|d| d["state"] == json!("delivered")),
        "{log:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_its_page_works_offline() -> anyhow::Result<()>
{
    let (_dir, app) = serve().await?;
    let nobody = Client::new(&app, None)?;
    let doc = nobody.get("/api/openapi.json").await?;
    assert_eq!(doc.status, 200, "the contract is public");
    assert!(doc.body["openapi"].as_str().unwrap_or("").starts_with("3."));
    let paths = doc.body["paths"].as_object().expect("paths");
    for route in [
        "/health",
        "/metrics",
        "/api/v1/devices",
        "/api/v1/devices/import",
        "/api/v1/devices/{serial}",
        "/api/v1/devices/{serial}/status",
        "/api/v1/devices/{serial}/history",
        "/api/v1/orders",
        "/api/v1/orders/{id}",
        "/api/v1/orders/{id}/acknowledge",
        "/api/v1/orders/{id}/assign",
        "/api/v1/orders/{id}/start",
        "/api/v1/orders/{id}/complete",
        "/api/v1/orders/{id}/cancel",
        "/api/v1/orders/{id}/history",
        "/api/v1/orders/events",
        "/api/v1/orders/stream",
        "/api/v1/sla/attainment",
        "/api/v1/tokens",
        "/api/v1/tokens/{id}",
        "/api/v1/audit",
        "/api/v1/webhooks",
        "/api/v1/webhooks/{id}/deliveries",
        "/api/v1/dead-letters",
        "/api/v1/catalog/models",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    // every error answer is the one shape; the bearer scheme is declared
    let ack = &paths["/api/v1/orders/{id}/acknowledge"]["post"]["responses"];
    for status in ["401", "403", "404", "409", "412", "428"] {
        assert!(ack[status].is_object(), "acknowledge documents {status}");
    }
    assert_eq!(
        doc.body["components"]["securitySchemes"]["bearer"]["scheme"],
        json!("bearer")
    );
    assert_eq!(
        doc.body["components"]["schemas"]["Role"]["enum"][4],
        json!("device-admin")
    );
    // the catalog route documents the resolved components of each model
    let schemas = &doc.body["components"]["schemas"];
    assert_eq!(
        paths["/api/v1/catalog/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["items"]["$ref"],
        json!("#/components/schemas/CatalogModel"),
        "{}",
        paths["/api/v1/catalog/models"]
    );
    assert!(
        schemas["Component"]["properties"]["failure_modes"].is_object()
            && schemas["FailureMode"]["properties"]["codes"].is_object()
            && schemas["AgesOn"]["pattern"].is_string(),
        "{}",
        schemas["Component"]
    );

    // the interactive page loads its assets from the binary, not from a CDN
    let http = fleetpulse_system_tests::http_client().build()?;
    let page = http.get(format!("{}/api/docs/", app.api)).send().await?;
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await?;
    assert!(
        html.contains("swagger-ui-bundle.js") && !html.contains("https://"),
        "{html}"
    );
    let bundle = http
        .get(format!("{}/api/docs/swagger-ui-bundle.js", app.api))
        .send()
        .await?;
    assert_eq!(bundle.status().as_u16(), 200);
    Ok(())
}

/// Issue 20, defect 7: a device that keeps reporting the low level that raised an order
/// does not move the order's version, so a dispatcher's `If-Match` stays valid; only a
/// change the dispatcher acts on would, and it would come with its event.
#[tokio::test]
async fn repeat_triggers_do_not_make_a_dispatchers_etag_stale() -> anyhow::Result<()> {
    let (dir, app) = serve().await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let disp = Client::new(
        &app,
        Some(&create_token(dir.path(), "dispatcher", "d").await?),
    )?;
    let serial = "OC5-D0020";
    register(&admin, serial).await?;
    let mqtt = app.mqtt.expect("built-in endpoint");
    let publish = |seq: u64, level: f64| async move {
        let fields = json!({"runtime_hours": 1000.0 + seq as f64, "filter_life_pct": level});
        mosquitto_pub(
            mqtt,
            serial,
            &telemetry_topic(serial),
            &reading(seq, fields),
        )
        .await
    };
    publish(1, 10.0).await?;
    let order = eventually(WAIT, "the filter order", || async {
        let o = app
            .orders(&format!("serial={serial}&cause=filter_depletion"))
            .await?;
        Ok(o.first().cloned())
    })
    .await?;
    let id = order["id"].as_i64().expect("id");
    let read = disp.get(&format!("/api/v1/orders/{id}")).await?;
    let v = version(&read.body);
    assert_eq!(read.etag, Some(format!("\"{v}\"")));

    // the dispatcher reads, the device keeps reporting a low (and falling) filter
    for seq in 2..=12 {
        publish(seq, 10.0 - 0.4 * seq as f64).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    app.applied().await?;
    let ack = disp
        .post_if_match(
            &format!("/api/v1/orders/{id}/acknowledge"),
            Some(v),
            &json!({}),
        )
        .await?;
    assert_eq!(ack.status, 200, "{}", ack.body);
    assert_eq!(
        (ack.body["trigger_count"].clone(), version(&ack.body)),
        (json!(1), v + 1),
        "one episode; the acknowledgement is the only change: {}",
        ack.body
    );
    let h = disp.get(&format!("/api/v1/orders/{id}/history")).await?;
    let kinds: Vec<&str> = h.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["created", "acknowledged"]);
    Ok(())
}
