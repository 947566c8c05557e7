//! Ingest security with real peers: TLS on the built-in endpoint checked with the
//! third-party `mosquitto_pub`, per-device tokens from the CLI, mutual TLS tying a
//! certificate to its serial, `mqtts://` to a real Mosquitto, the shipped Mosquitto ACL,
//! and secrets that never reach a log. Results are read through the HTTP API only.

use std::path::Path;
use std::time::Duration;

use fleetpulse_system_tests::tls::{
    BrokerSecurity, LoggedApp, Pki, PubOptions, SecureMosquitto, device_credential,
    mosquitto_pub_ok, mosquitto_pub_with,
};
use fleetpulse_system_tests::{eventually, reading, telemetry_topic};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

async fn wait_for_seqs(app: &LoggedApp, serial: &str, want: &[u64]) -> anyhow::Result<()> {
    eventually(
        WAIT,
        &format!("{serial} to have readings {want:?}"),
        || async { Ok((app.seqs(serial).await? == want).then_some(())) },
    )
    .await
}

/// Server-side TLS settings for the built-in endpoint, as environment variables.
fn endpoint_tls_env(pki: &Pki) -> Vec<(&'static str, String)> {
    vec![
        (
            "FLEETPULSE_MQTT__TLS__CERT_FILE",
            path(&pki.server.cert).to_owned(),
        ),
        (
            "FLEETPULSE_MQTT__TLS__KEY_FILE",
            path(&pki.server.key).to_owned(),
        ),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_endpoint_with_device_tokens() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let data = tempfile::tempdir()?;
    let serial = "OC5-S0001";
    let (ok, token, stderr) = device_credential(data.path(), serial, &[]);
    assert!(ok, "{stderr}");
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 64, "a 32-byte token in hex: {token:?}");

    let mut env = endpoint_tls_env(&pki);
    env.push(("FLEETPULSE_MQTT__AUTH", "device_credentials".into()));
    let app = LoggedApp::spawn(
        data.path(),
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &env_refs(&env),
    )
    .await?;
    assert!(
        app.output().contains("listening on mqtts://"),
        "{}",
        app.output()
    );
    let addr = app.mqtt.expect("endpoint address");
    let topic = telemetry_topic(serial);
    let device = |password: &str| PubOptions {
        cafile: Some(pki.ca_file.clone()),
        username: Some(serial.to_owned()),
        password: Some(password.to_owned()),
        ..PubOptions::default()
    };

    // the device's own token over TLS: accepted and stored
    mosquitto_pub_ok(
        addr,
        serial,
        &topic,
        &reading(1, json!({"filter_life_pct": 90.0})),
        &device(&token),
    )
    .await?;
    wait_for_seqs(&app, serial, &[1]).await?;

    // a wrong token: refused, nothing stored
    let wrong = "0".repeat(64);
    let out = mosquitto_pub_with(
        addr,
        serial,
        &topic,
        &reading(2, json!({})),
        &device(&wrong),
    )
    .await?;
    assert!(!out.status.success(), "a wrong token must be refused");
    app.wait_for_output("reason=\"wrong_token\"").await?;

    // another device's token does not open this device
    let (ok, other_token, _) = device_credential(data.path(), "OC5-S0002", &[]);
    assert!(ok);
    let out = mosquitto_pub_with(
        addr,
        serial,
        &topic,
        &reading(3, json!({})),
        &device(other_token.trim()),
    )
    .await?;
    assert!(
        !out.status.success(),
        "another device's token must be refused"
    );

    // a plain MQTT client on the TLS port fails, and the endpoint keeps serving
    let plain = PubOptions {
        username: Some(serial.to_owned()),
        password: Some(token.clone()),
        ..PubOptions::default()
    };
    let out = mosquitto_pub_with(addr, serial, &topic, &reading(4, json!({})), &plain).await?;
    assert!(
        !out.status.success(),
        "plain MQTT on the TLS port must fail"
    );
    app.wait_for_output("reason=\"tls_handshake_failed\"")
        .await?;

    // rotation: the old token stops working at once, the new one works
    let (ok, rotated, _) = device_credential(data.path(), serial, &[]);
    assert!(ok);
    let rotated = rotated.trim().to_owned();
    assert_ne!(rotated, token);
    let out = mosquitto_pub_with(
        addr,
        serial,
        &topic,
        &reading(5, json!({})),
        &device(&token),
    )
    .await?;
    assert!(
        !out.status.success(),
        "the rotated-out token must be refused"
    );
    mosquitto_pub_ok(
        addr,
        serial,
        &topic,
        &reading(6, json!({})),
        &device(&rotated),
    )
    .await?;
    wait_for_seqs(&app, serial, &[1, 6]).await?;

    // revocation
    let (ok, _, stderr) = device_credential(data.path(), serial, &["--revoke"]);
    assert!(ok && stderr.contains("revoked"), "{stderr}");
    let out = mosquitto_pub_with(
        addr,
        serial,
        &topic,
        &reading(7, json!({})),
        &device(&rotated),
    )
    .await?;
    assert!(!out.status.success(), "a revoked token must be refused");
    app.wait_for_output("reason=\"no_credential_issued\"")
        .await?;

    assert_eq!(
        app.seqs(serial).await?,
        [1, 6],
        "only accepted devices' readings are stored"
    );
    let logs = app.stop().await?;
    for secret in [
        token.as_str(),
        rotated.as_str(),
        wrong.as_str(),
        other_token.trim(),
    ] {
        assert!(!logs.contains(secret), "a token leaked into the logs");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_ties_the_certificate_to_the_serial() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let data = tempfile::tempdir()?;
    let mut env = endpoint_tls_env(&pki);
    env.push((
        "FLEETPULSE_MQTT__TLS__CLIENT_CA_FILE",
        path(&pki.ca_file).to_owned(),
    ));
    // device tokens required of anyone without a certificate: a certificate alone must do
    env.push(("FLEETPULSE_MQTT__AUTH", "device_credentials".into()));
    let app = LoggedApp::spawn(
        data.path(),
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &env_refs(&env),
    )
    .await?;
    let addr = app.mqtt.expect("endpoint address");
    let with_cert = |cert| PubOptions {
        cafile: Some(pki.ca_file.clone()),
        cert: Some(cert),
        ..PubOptions::default()
    };
    let m1 = pki.device("OC5-M0001")?;

    // CN = client id: accepted without any password
    mosquitto_pub_ok(
        addr,
        "OC5-M0001",
        &telemetry_topic("OC5-M0001"),
        &reading(1, json!({})),
        &with_cert(m1.clone()),
    )
    .await?;
    wait_for_seqs(&app, "OC5-M0001", &[1]).await?;

    // the same certificate used as another serial: not authorised
    let out = mosquitto_pub_with(
        addr,
        "OC5-M0002",
        &telemetry_topic("OC5-M0002"),
        &reading(1, json!({})),
        &with_cert(m1),
    )
    .await?;
    assert!(
        !out.status.success(),
        "a certificate naming another serial must be refused"
    );
    app.wait_for_output("reason=\"certificate_names_another_device\"")
        .await?;

    // a certificate from a CA the endpoint does not trust: the handshake fails
    let rogue = pki.untrusted_device("OC5-M0003")?;
    let out = mosquitto_pub_with(
        addr,
        "OC5-M0003",
        &telemetry_topic("OC5-M0003"),
        &reading(1, json!({})),
        &with_cert(rogue),
    )
    .await?;
    assert!(
        !out.status.success(),
        "an untrusted certificate must be refused"
    );
    app.wait_for_output("UnknownIssuer").await?;

    // no certificate at all (client certificates are required by default)
    let no_cert = PubOptions {
        cafile: Some(pki.ca_file.clone()),
        ..PubOptions::default()
    };
    let out = mosquitto_pub_with(
        addr,
        "OC5-M0004",
        &telemetry_topic("OC5-M0004"),
        &reading(1, json!({})),
        &no_cert,
    )
    .await?;
    assert!(
        !out.status.success(),
        "a device without a certificate must be refused"
    );
    app.wait_for_output("peer sent no certificates").await?;

    tokio::time::sleep(Duration::from_millis(300)).await;
    for refused in ["OC5-M0002", "OC5-M0003", "OC5-M0004"] {
        assert!(
            app.seqs(refused).await?.is_empty(),
            "{refused} must have nothing stored"
        );
    }
    app.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mode_over_tls_stores_readings() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let broker = SecureMosquitto::start(BrokerSecurity {
        tls: Some(&pki),
        users: &[
            ("fleetpulse-ingest", "ingest-pw-7f3a"),
            ("OC5-E0001", "device-pw-1"),
        ],
        acl_file: None,
    })
    .await?;
    let data = tempfile::tempdir()?;
    let url = format!("mqtts://{}", broker.addr);
    let app = LoggedApp::spawn(
        data.path(),
        &["serve", "--mqtt-url", &url],
        &[
            ("FLEETPULSE_BROKER__CLIENT_ID", "fleetpulse-tls-e2e"),
            ("FLEETPULSE_BROKER__USERNAME", "fleetpulse-ingest"),
            ("FLEETPULSE_BROKER__PASSWORD", "ingest-pw-7f3a"),
            ("FLEETPULSE_BROKER__TLS__CA_FILE", path(&pki.ca_file)),
        ],
    )
    .await?;
    eventually(WAIT, "ingest subscribed over TLS", || async {
        let h = app.get_ok("/health").await?;
        Ok((h["ingest"]["connected"] == json!(true)).then_some(()))
    })
    .await?;
    let device = PubOptions {
        cafile: Some(pki.ca_file.clone()),
        username: Some("OC5-E0001".into()),
        password: Some("device-pw-1".into()),
        ..PubOptions::default()
    };
    for seq in 1..=3 {
        mosquitto_pub_ok(
            broker.addr,
            "OC5-E0001",
            &telemetry_topic("OC5-E0001"),
            &reading(seq, json!({"filter_life_pct": 80.0})),
            &device,
        )
        .await?;
    }
    wait_for_seqs(&app, "OC5-E0001", &[1, 2, 3]).await?;
    let logs = app.stop().await?;
    assert!(
        !logs.contains("ingest-pw-7f3a"),
        "the broker password leaked into the logs"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_mosquitto_acl_keeps_devices_on_their_own_topics() -> anyhow::Result<()> {
    let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/mosquitto.acl.example");
    let broker = SecureMosquitto::start(BrokerSecurity {
        tls: None,
        users: &[
            ("fleetpulse-ingest", "ingest-pw"),
            ("OC5-A0001", "pw-a"),
            ("OC5-A0002", "pw-b"),
        ],
        acl_file: Some(&acl),
    })
    .await?;
    let data = tempfile::tempdir()?;
    let url = format!("mqtt://{}", broker.addr);
    let app = LoggedApp::spawn(
        data.path(),
        &["serve", "--mqtt-url", &url],
        &[
            ("FLEETPULSE_BROKER__CLIENT_ID", "fleetpulse-acl-test"),
            ("FLEETPULSE_BROKER__USERNAME", "fleetpulse-ingest"),
            ("FLEETPULSE_BROKER__PASSWORD", "ingest-pw"),
        ],
    )
    .await?;
    eventually(WAIT, "ingest subscribed through the ACL", || async {
        let h = app.get_ok("/health").await?;
        Ok((h["ingest"]["connected"] == json!(true)).then_some(()))
    })
    .await?;
    let as_a = PubOptions {
        username: Some("OC5-A0001".into()),
        password: Some("pw-a".into()),
        ..PubOptions::default()
    };
    // A writes to B's topic (the broker drops it), then to its own
    mosquitto_pub_ok(
        broker.addr,
        "OC5-A0001",
        &telemetry_topic("OC5-A0002"),
        &reading(99, json!({})),
        &as_a,
    )
    .await?;
    mosquitto_pub_ok(
        broker.addr,
        "OC5-A0001",
        &telemetry_topic("OC5-A0001"),
        &reading(1, json!({})),
        &as_a,
    )
    .await?;
    wait_for_seqs(&app, "OC5-A0001", &[1]).await?;
    // B's own reading, published after A's forgery, arrives; the forgery never does
    let as_b = PubOptions {
        username: Some("OC5-A0002".into()),
        password: Some("pw-b".into()),
        ..PubOptions::default()
    };
    mosquitto_pub_ok(
        broker.addr,
        "OC5-A0002",
        &telemetry_topic("OC5-A0002"),
        &reading(1, json!({})),
        &as_b,
    )
    .await?;
    wait_for_seqs(&app, "OC5-A0002", &[1]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.seqs("OC5-A0002").await?,
        [1],
        "A's write to B's topic must never reach ingest"
    );
    app.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_or_error_messages() -> anyhow::Result<()> {
    // built-in endpoint with a shared password; a device tries a wrong one. The password
    // looks like a number: it must be taken verbatim (leading zeros included).
    let device_pw = "00712345678901";
    let wrong_pw = "wrong-secret-Zt55";
    // A time-series sink that is down, with its API token set.
    let sink_token = "sink-token-Rb93";
    let dead_sink = format!("http://127.0.0.1:{}", fleetpulse_system_tests::free_port());
    let data = tempfile::tempdir()?;
    let app = LoggedApp::spawn(
        data.path(),
        &[
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--sink-url",
            &dead_sink,
        ],
        &[
            ("FLEETPULSE_MQTT__PASSWORD", device_pw),
            ("FLEETPULSE_SINK__TOKEN", sink_token),
        ],
    )
    .await?;
    let addr = app.mqtt.expect("endpoint address");
    let opts = |pw: &str| PubOptions {
        username: Some("OC5-P0001".into()),
        password: Some(pw.into()),
        ..PubOptions::default()
    };
    let out = mosquitto_pub_with(
        addr,
        "OC5-P0001",
        &telemetry_topic("OC5-P0001"),
        &reading(1, json!({})),
        &opts(wrong_pw),
    )
    .await?;
    assert!(!out.status.success());
    app.wait_for_output("reason=\"wrong_password\"").await?;
    mosquitto_pub_ok(
        addr,
        "OC5-P0001",
        &telemetry_topic("OC5-P0001"),
        &reading(2, json!({})),
        &opts(device_pw),
    )
    .await?;
    wait_for_seqs(&app, "OC5-P0001", &[2]).await?;
    app.wait_for_output("time-series write failed").await?;
    let mut logs = app.stop().await?;

    // external mode: a broker that refuses ingest's (wrong) password
    let broker_pw = "broker-secret-Lm42";
    let broker = SecureMosquitto::start(BrokerSecurity {
        users: &[("fleetpulse-ingest", "the-real-password")],
        ..BrokerSecurity::default()
    })
    .await?;
    let data = tempfile::tempdir()?;
    let url = format!("mqtt://{}", broker.addr);
    let app = LoggedApp::spawn(
        data.path(),
        &["serve", "--mqtt-url", &url],
        &[
            ("FLEETPULSE_BROKER__USERNAME", "fleetpulse-ingest"),
            ("FLEETPULSE_BROKER__PASSWORD", broker_pw),
        ],
    )
    .await?;
    app.wait_for_output("the broker refused the connection")
        .await?;
    logs.push_str(&app.stop().await?);

    // external mode: no broker at all
    let data = tempfile::tempdir()?;
    let dead = format!("mqtt://127.0.0.1:{}", fleetpulse_system_tests::free_port());
    let app = LoggedApp::spawn(
        data.path(),
        &["serve", "--mqtt-url", &dead],
        &[("FLEETPULSE_BROKER__PASSWORD", broker_pw)],
    )
    .await?;
    app.wait_for_output("broker connection failed").await?;
    logs.push_str(&app.stop().await?);

    // a configuration error with secrets set: check-config and a refused start
    let data = tempfile::tempdir()?;
    let out = std::process::Command::new(fleetpulse_system_tests::fleetpulse_bin())
        .args([
            "serve",
            "--mqtt-url",
            "mqtt://127.0.0.1:1",
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--data")
        .arg(data.path())
        .env("FLEETPULSE_BROKER__PASSWORD", broker_pw)
        .env("FLEETPULSE_BROKER__TLS__CA_FILE", "/nonexistent/ca.pem")
        .output()?;
    assert!(!out.status.success());
    logs.push_str(&String::from_utf8_lossy(&out.stdout));
    logs.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(
        logs.contains("mqtts://"),
        "the tls-on-plain-url error names the fix: {logs}"
    );

    for secret in [device_pw, wrong_pw, broker_pw, sink_token] {
        assert!(!logs.contains(secret), "{secret} leaked into the output");
    }
    Ok(())
}

#[test]
fn check_config_reads_the_tls_files_and_names_the_setting() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(fleetpulse_system_tests::fleetpulse_bin());
        cmd.arg("check-config");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run check-config");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let pki = Pki::new().expect("pki");
    let (ok, text) = run(&[
        ("FLEETPULSE_MQTT__TLS__CERT_FILE", path(&pki.server.cert)),
        ("FLEETPULSE_MQTT__TLS__KEY_FILE", path(&pki.server.key)),
        ("FLEETPULSE_MQTT__TLS__CLIENT_CA_FILE", path(&pki.ca_file)),
    ]);
    assert!(ok && text.contains("[mqtt.tls]"), "{text}");

    let (ok, text) = run(&[
        ("FLEETPULSE_MQTT__TLS__CERT_FILE", "/nonexistent/server.pem"),
        ("FLEETPULSE_MQTT__TLS__KEY_FILE", path(&pki.server.key)),
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("cannot read mqtt.tls.cert_file /nonexistent/server.pem"),
        "{text}"
    );

    // a key that does not belong to the certificate
    let other = pki.device("OC5-K0001").expect("device cert");
    let (ok, text) = run(&[
        ("FLEETPULSE_MQTT__TLS__CERT_FILE", path(&pki.server.cert)),
        ("FLEETPULSE_MQTT__TLS__KEY_FILE", path(&other.key)),
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("mqtt.tls.key_file"), "{text}");
    let key = std::fs::read_to_string(&other.key).expect("key");
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        !text.contains(&body[..20]),
        "key material in an error: {text}"
    );

    let (ok, text) = run(&[
        ("FLEETPULSE_MQTT__AUTH", "device_credentials"),
        ("FLEETPULSE_MQTT__PASSWORD", "pw-Hq2"),
    ]);
    assert!(
        !ok && text.contains("mqtt.password") && !text.contains("pw-Hq2"),
        "{text}"
    );
}

/// The shipped Mosquitto configuration with client certificates switched on: each
/// certificate's CN becomes the user name the shipped ACL checks, and fleetpulse logs in
/// with a client certificate of its own over `mqtts://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_mosquitto_conf_with_client_certificates() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let broker = SecureMosquitto::from_example_conf(&pki, &[], true).await?;
    let ingest = pki.device("fleetpulse-ingest")?;
    let data = tempfile::tempdir()?;
    let url = format!("mqtts://{}", broker.addr);
    let app = LoggedApp::spawn(
        data.path(),
        &["serve", "--mqtt-url", &url],
        &[
            ("FLEETPULSE_BROKER__CLIENT_ID", "fleetpulse-mtls"),
            ("FLEETPULSE_BROKER__TLS__CA_FILE", path(&pki.ca_file)),
            ("FLEETPULSE_BROKER__TLS__CERT_FILE", path(&ingest.cert)),
            ("FLEETPULSE_BROKER__TLS__KEY_FILE", path(&ingest.key)),
        ],
    )
    .await?;
    eventually(
        WAIT,
        "ingest subscribed with its client certificate",
        || async {
            let h = app.get_ok("/health").await?;
            Ok((h["ingest"]["connected"] == json!(true)).then_some(()))
        },
    )
    .await?;
    let as_device = |cn: &str| -> anyhow::Result<PubOptions> {
        Ok(PubOptions {
            cafile: Some(pki.ca_file.clone()),
            cert: Some(pki.device(cn)?),
            ..PubOptions::default()
        })
    };
    let c1 = as_device("OC5-C0001")?;
    // a forgery on another device's topic, then the device's own reading
    mosquitto_pub_ok(
        broker.addr,
        "OC5-C0001",
        &telemetry_topic("OC5-C0002"),
        &reading(99, json!({})),
        &c1,
    )
    .await?;
    mosquitto_pub_ok(
        broker.addr,
        "OC5-C0001",
        &telemetry_topic("OC5-C0001"),
        &reading(1, json!({})),
        &c1,
    )
    .await?;
    wait_for_seqs(&app, "OC5-C0001", &[1]).await?;
    mosquitto_pub_ok(
        broker.addr,
        "OC5-C0002",
        &telemetry_topic("OC5-C0002"),
        &reading(1, json!({})),
        &as_device("OC5-C0002")?,
    )
    .await?;
    wait_for_seqs(&app, "OC5-C0002", &[1]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.seqs("OC5-C0002").await?,
        [1],
        "the forgery never reached ingest"
    );

    // without a certificate the broker refuses the device
    let no_cert = PubOptions {
        cafile: Some(pki.ca_file.clone()),
        ..PubOptions::default()
    };
    let out = mosquitto_pub_with(
        broker.addr,
        "OC5-C0003",
        &telemetry_topic("OC5-C0003"),
        &reading(1, json!({})),
        &no_cert,
    )
    .await?;
    assert!(
        !out.status.success(),
        "a device without a certificate must be refused"
    );
    app.stop().await?;
    Ok(())
}

/// `client_cert = "optional"`: a device with a certificate needs nothing else; one
/// without falls back to `mqtt.auth` (here its own token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_fall_back_to_device_tokens() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let data = tempfile::tempdir()?;
    let (ok, token, stderr) = device_credential(data.path(), "OC5-O0002", &[]);
    assert!(ok, "{stderr}");
    let mut env = endpoint_tls_env(&pki);
    env.push((
        "FLEETPULSE_MQTT__TLS__CLIENT_CA_FILE",
        path(&pki.ca_file).to_owned(),
    ));
    env.push(("FLEETPULSE_MQTT__TLS__CLIENT_CERT", "optional".into()));
    env.push(("FLEETPULSE_MQTT__AUTH", "device_credentials".into()));
    let app = LoggedApp::spawn(
        data.path(),
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &env_refs(&env),
    )
    .await?;
    let addr = app.mqtt.expect("endpoint address");

    let with_cert = PubOptions {
        cafile: Some(pki.ca_file.clone()),
        cert: Some(pki.device("OC5-O0001")?),
        ..PubOptions::default()
    };
    mosquitto_pub_ok(
        addr,
        "OC5-O0001",
        &telemetry_topic("OC5-O0001"),
        &reading(1, json!({})),
        &with_cert,
    )
    .await?;
    let with_token = |password: &str| PubOptions {
        cafile: Some(pki.ca_file.clone()),
        username: Some("OC5-O0002".into()),
        password: Some(password.into()),
        ..PubOptions::default()
    };
    mosquitto_pub_ok(
        addr,
        "OC5-O0002",
        &telemetry_topic("OC5-O0002"),
        &reading(1, json!({})),
        &with_token(token.trim()),
    )
    .await?;
    wait_for_seqs(&app, "OC5-O0001", &[1]).await?;
    wait_for_seqs(&app, "OC5-O0002", &[1]).await?;

    // no certificate and no valid token: refused
    let out = mosquitto_pub_with(
        addr,
        "OC5-O0002",
        &telemetry_topic("OC5-O0002"),
        &reading(2, json!({})),
        &with_token("not-the-token"),
    )
    .await?;
    assert!(!out.status.success(), "a wrong token must be refused");
    app.wait_for_output("reason=\"wrong_token\"").await?;
    app.stop().await?;
    Ok(())
}
