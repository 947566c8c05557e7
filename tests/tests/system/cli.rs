//! The binary refuses bad configuration with the key named, and a taken port with the
//! setting named.

use std::process::Command;

use fleetpulse_system_tests::fleetpulse_bin;

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(fleetpulse_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run fleetpulse");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["serve", "demo", "simulate", "check-config"] {
        let (ok, text) = run(&[sub, "--help"], &[]);
        assert!(ok && text.contains("Usage"), "{sub} --help: {text}");
    }
    let (_, text) = run(&["demo", "--help"], &[]);
    for flag in [
        "--devices",
        "--seed",
        "--speed",
        "--http",
        "--data",
        "--mqtt-listen",
    ] {
        assert!(text.contains(flag), "demo --help lacks {flag}: {text}");
    }
}

#[test]
fn an_unknown_configuration_key_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("fleetpulse.toml");
    std::fs::write(&file, "[ingest.batch]\nlinger_msec = 5\n").expect("write");
    let (ok, text) = run(
        &[
            "check-config",
            "--config",
            file.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    assert!(!ok, "must fail: {text}");
    assert!(text.contains("linger_msec"), "{text}");
}

#[test]
fn a_bad_environment_value_is_refused_by_name() {
    let (ok, text) = run(
        &["check-config"],
        &[("FLEETPULSE_HTTP__LISTEN", "not-an-address")],
    );
    assert!(!ok, "must fail: {text}");
    assert!(text.contains("http.listen"), "{text}");
}

#[test]
fn check_config_prints_the_effective_configuration_without_secrets() {
    let (ok, text) = run(
        &["check-config", "--mqtt-listen", "127.0.0.1:0"],
        &[("FLEETPULSE_MQTT__PASSWORD", "s3cret-device-pw")],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("[mqtt]") && text.contains("listen = \"127.0.0.1:0\""),
        "{text}"
    );
    assert!(!text.contains("s3cret-device-pw"), "secret leaked: {text}");
}

#[test]
fn a_taken_device_port_names_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, text) = run(
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--mqtt-listen",
            &addr,
            "--data",
            dir.path().to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(!ok, "must fail: {text}");
    assert!(
        text.contains("mqtt.listen") && text.contains(&addr),
        "{text}"
    );
}

/// A taken HTTP port stops the start before any listener says "listening" (issue 23):
/// the device endpoint used to announce itself first, then the start failed on the API's
/// port, and a script waiting for the endpoint's line went on with a dead process.
#[test]
fn a_taken_http_port_stops_the_start_before_anything_listens() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    for command in ["serve", "demo"] {
        let mut args = vec![
            command,
            "--http",
            &addr,
            "--mqtt-listen",
            "127.0.0.1:0",
            "--data",
            dir.path().to_str().expect("utf-8"),
        ];
        if command == "demo" {
            args.extend(["--devices", "3", "--history-days", "2"]);
        }
        let (ok, text) = run(&args, &[]);
        assert!(!ok, "{command} must fail: {text}");
        assert!(
            text.contains("http.listen") && text.contains(&addr),
            "{command}: {text}"
        );
        assert!(!text.contains("listening"), "{command}: {text}");
        assert!(!text.contains("history loaded"), "{command}: {text}");
    }
}
