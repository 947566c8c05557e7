//! Helpers for the security system tests: a throw-away PKI (rcgen, ring), the real
//! `mosquitto_pub` over TLS, a Mosquitto broker with a TLS listener, password file and
//! ACL, and a fleetpulse process whose every output line is kept (to prove that no
//! secret ever reaches a log).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::{eventually, fleetpulse_bin, free_port};

/// `mqtt://ADDR` or `mqtts://ADDR`, as the binary announces its device endpoint.
pub fn endpoint_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let addr = url
        .trim()
        .strip_prefix("mqtt://")
        .or_else(|| url.trim().strip_prefix("mqtts://"))
        .with_context(|| format!("not an mqtt:// or mqtts:// url: {url}"))?;
    Ok(addr.parse()?)
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test certificate authority with a server certificate for `localhost` and
/// `127.0.0.1`, writing PEM files to a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM): what clients trust, and what signs device certificates.
    pub ca_file: PathBuf,
    /// The server certificate and key for `localhost` / `127.0.0.1`.
    pub server: CertFiles,
}

impl Pki {
    pub fn new() -> anyhow::Result<Pki> {
        let dir = tempfile::tempdir()?;
        let ca = new_ca("fleetpulse test CA")?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem())?;
        let mut pki = Pki {
            dir,
            ca,
            ca_file,
            server: CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
        };
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        pki.server = pki.issue("server", params)?;
        Ok(pki)
    }

    /// A device certificate with subject CN = `common_name`, signed by this CA.
    pub fn device(&self, common_name: &str) -> anyhow::Result<CertFiles> {
        self.issue(common_name, device_params(common_name)?)
    }

    /// A device certificate with CN = `common_name` from a CA nobody trusts.
    pub fn untrusted_device(&self, common_name: &str) -> anyhow::Result<CertFiles> {
        let rogue = new_ca("rogue CA")?;
        let key = KeyPair::generate()?;
        let cert = device_params(common_name)?.signed_by(&key, &rogue)?;
        self.write(&format!("rogue-{common_name}"), &cert.pem(), &key)
    }

    fn issue(&self, name: &str, params: CertificateParams) -> anyhow::Result<CertFiles> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        self.write(name, &cert.pem(), &key)
    }

    fn write(&self, name: &str, cert_pem: &str, key: &KeyPair) -> anyhow::Result<CertFiles> {
        let files = CertFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert_pem)?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn new_ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn device_params(common_name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// How `mosquitto_pub` connects.
#[derive(Clone, Debug, Default)]
pub struct PubOptions {
    /// Trust this CA and speak TLS; `None`: plain MQTT.
    pub cafile: Option<PathBuf>,
    /// A client certificate to present.
    pub cert: Option<CertFiles>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Publishes one message at QoS 1 with the real `mosquitto_pub` and returns how it
/// ended (a refused CONNECT or a failed handshake is a non-zero exit, not an `Err`).
pub async fn mosquitto_pub_with(
    addr: SocketAddr,
    client_id: &str,
    topic: &str,
    payload: &str,
    opts: &PubOptions,
) -> anyhow::Result<Output> {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-i", client_id, "-q", "1", "-t", topic, "-m", payload]);
    if let Some(ca) = &opts.cafile {
        cmd.arg("--cafile").arg(ca);
    }
    if let Some(c) = &opts.cert {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    if let Some(u) = &opts.username {
        cmd.args(["-u", u]);
    }
    if let Some(p) = &opts.password {
        cmd.args(["-P", p]);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.kill_on_drop(true).output())
        .await
        .context("mosquitto_pub did not finish within 20 s")?
        .context("running mosquitto_pub (scripts/test installs mosquitto-clients)")?;
    Ok(out)
}

/// `mosquitto_pub_with` that must succeed.
pub async fn mosquitto_pub_ok(
    addr: SocketAddr,
    client_id: &str,
    topic: &str,
    payload: &str,
    opts: &PubOptions,
) -> anyhow::Result<()> {
    let out = mosquitto_pub_with(addr, client_id, topic, payload, opts).await?;
    anyhow::ensure!(
        out.status.success(),
        "mosquitto_pub failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Creates a Mosquitto password file with `mosquitto_passwd`.
pub fn mosquitto_password_file(path: &Path, users: &[(&str, &str)]) -> anyhow::Result<()> {
    std::fs::write(path, "")?;
    for (user, password) in users {
        let status = std::process::Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(path)
            .args([user, password])
            .stdout(Stdio::null())
            .status()
            .context("running mosquitto_passwd (package mosquitto)")?;
        anyhow::ensure!(status.success(), "mosquitto_passwd failed for {user}");
    }
    Ok(())
}

/// What a secured test broker enforces.
#[derive(Default)]
pub struct BrokerSecurity<'a> {
    /// TLS listener with this PKI's server certificate; `None`: plain MQTT.
    pub tls: Option<&'a Pki>,
    /// Users and passwords; empty: anonymous clients allowed.
    pub users: &'a [(&'a str, &'a str)],
    /// An ACL file for `acl_file`.
    pub acl_file: Option<&'a Path>,
}

/// A private Mosquitto with TLS, passwords and/or an ACL on a free loopback port.
pub struct SecureMosquitto {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl SecureMosquitto {
    pub async fn start(security: BrokerSecurity<'_>) -> anyhow::Result<SecureMosquitto> {
        let bin = crate::Mosquitto::binary().context(
            "mosquitto is not installed: scripts/test installs it (apt-get install mosquitto)",
        )?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let mut conf = format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\npersistence false\n\
             max_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        );
        if let Some(pki) = security.tls {
            conf.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate false\n",
                pki.ca_file.display(),
                pki.server.cert.display(),
                pki.server.key.display()
            ));
        }
        if security.users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let passwd = dir.path().join("passwd");
            mosquitto_password_file(&passwd, security.users)?;
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                passwd.display()
            ));
        }
        if let Some(acl) = security.acl_file {
            conf.push_str(&format!("acl_file {}\n", acl.display()));
        }
        Self::run(bin, dir, port, conf).await
    }

    /// Mosquitto configured by the shipped `config/mosquitto.example.conf` and
    /// `config/mosquitto.acl.example`, with only paths and the port replaced (each
    /// replacement must apply: the test breaks when the example changes shape). With
    /// `mutual_tls`, its commented client-certificate lines are switched on.
    pub async fn from_example_conf(
        pki: &Pki,
        users: &[(&str, &str)],
        mutual_tls: bool,
    ) -> anyhow::Result<SecureMosquitto> {
        let bin = crate::Mosquitto::binary().context(
            "mosquitto is not installed: scripts/test installs it (apt-get install mosquitto)",
        )?;
        let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut conf = std::fs::read_to_string(config_dir.join("mosquitto.example.conf"))?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let passwd = dir.path().join("passwd");
        mosquitto_password_file(&passwd, users)?;
        let acl = config_dir.join("mosquitto.acl.example");
        let mut replace = |from: &str, to: String| -> anyhow::Result<()> {
            anyhow::ensure!(conf.contains(from), "mosquitto.example.conf lacks {from:?}");
            conf = conf.replace(from, &to);
            Ok(())
        };
        replace("listener 8883", format!("listener {port} 127.0.0.1"))?;
        replace(
            "/etc/mosquitto/certs/ca.pem",
            pki.ca_file.display().to_string(),
        )?;
        replace(
            "/etc/mosquitto/certs/broker.pem",
            pki.server.cert.display().to_string(),
        )?;
        replace(
            "/etc/mosquitto/certs/broker.key",
            pki.server.key.display().to_string(),
        )?;
        replace("/etc/mosquitto/passwd", passwd.display().to_string())?;
        replace("/etc/mosquitto/fleetpulse.acl", acl.display().to_string())?;
        replace("persistence true", "persistence false".to_owned())?;
        replace(
            "persistence_location /var/lib/mosquitto/",
            "log_dest stderr\nlog_type error\nlog_type warning".to_owned(),
        )?;
        if mutual_tls {
            replace(
                "#require_certificate true",
                "require_certificate true".to_owned(),
            )?;
            replace(
                "#use_identity_as_username true",
                "use_identity_as_username true".to_owned(),
            )?;
        }
        Self::run(bin, dir, port, conf).await
    }

    async fn run(
        bin: PathBuf,
        dir: tempfile::TempDir,
        port: u16,
        conf: String,
    ) -> anyhow::Result<SecureMosquitto> {
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(&conf_path, conf)?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = crate::spawn_mosquitto(&bin, &conf_path, addr).await?;
        Ok(SecureMosquitto {
            child,
            addr,
            _dir: dir,
        })
    }

    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A fleetpulse process whose stdout and stderr lines are all kept.
pub struct LoggedApp {
    child: Child,
    pub api: String,
    pub mqtt: Option<SocketAddr>,
    output: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl LoggedApp {
    /// Spawns `fleetpulse ARGS --http 127.0.0.1:0 --data DIR` with `env` and waits until
    /// its API is ready.
    pub async fn spawn(
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<LoggedApp> {
        let admin_token = crate::dispatch::create_token(data_dir, "admin", "system-tests").await?;
        let mut cmd = Command::new(fleetpulse_bin());
        cmd.args(args)
            .args(["--http", "127.0.0.1:0", "--data"])
            .arg(data_dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning fleetpulse")?;
        let output = Arc::new(Mutex::new(String::new()));
        keep_lines(child.stdout.take().context("stdout")?, Arc::clone(&output));
        keep_lines(child.stderr.take().context("stderr")?, Arc::clone(&output));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = output.lock().map(|o| o.clone()).unwrap_or_default();
            if let Some(api) = announced(&text, "fleetpulse: api listening on ") {
                let mqtt = announced(&text, "fleetpulse: mqtt device endpoint listening on ")
                    .map(|u| endpoint_addr(&u))
                    .transpose()?;
                return Ok(LoggedApp {
                    child,
                    api,
                    mqtt,
                    output,
                    http: crate::dispatch::client_with_token(&admin_token)?,
                });
            }
            if let Some(status) = child.try_wait()? {
                bail!("fleetpulse exited before it was ready ({status}):\n{text}");
            }
            if Instant::now() > deadline {
                bail!("fleetpulse not ready within 60 s:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything it printed so far, stdout and stderr.
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Waits until its output contains `needle`.
    pub async fn wait_for_output(&self, needle: &str) -> anyhow::Result<()> {
        eventually(Duration::from_secs(20), needle, || async {
            Ok(self.output().contains(needle).then_some(()))
        })
        .await
    }

    /// GET that must answer 200 with JSON.
    pub async fn get_ok(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.http.get(format!("{}{path}", self.api)).send().await?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        anyhow::ensure!(status == 200, "GET {path} answered {status}: {body}");
        Ok(body)
    }

    /// The `seq` of every stored reading of `serial`.
    pub async fn seqs(&self, serial: &str) -> anyhow::Result<Vec<u64>> {
        let r = self
            .get_ok(&format!("/api/v1/devices/{serial}/readings"))
            .await;
        let Ok(r) = r else {
            return Ok(Vec::new()); // unknown device: nothing stored
        };
        Ok(r["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["seq"].as_u64())
            .collect())
    }

    /// SIGINT, waits for the exit, and returns everything it printed.
    pub async fn stop(mut self) -> anyhow::Result<String> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        // let the readers drain what the process wrote last
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(self.output())
    }
}

fn announced(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|rest| rest.trim().to_owned())
}

fn keep_lines(stream: impl AsyncRead + Unpin + Send + 'static, into: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[fleetpulse] {line}");
            if let Ok(mut out) = into.lock() {
                out.push_str(&line);
                out.push('\n');
            }
        }
    });
}

/// `fleetpulse device credential SERIAL --data DIR [extra]`: returns (success, stdout,
/// stderr).
pub fn device_credential(data_dir: &Path, serial: &str, extra: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(fleetpulse_bin())
        .args(["device", "credential", serial, "--data"])
        .arg(data_dir)
        .args(extra)
        .output()
        .expect("run fleetpulse device credential");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
