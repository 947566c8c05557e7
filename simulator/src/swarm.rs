//! [`Swarm`]: thousands of lean firmware-like device connections in one process, for load
//! and crash tests and the ingest benchmark.
//!
//! Each device is one tokio task on a raw `TcpStream` speaking MQTT 3.1.1 with rumqttc's
//! codec (`rumqttc::mqttbytes::v4`). It publishes readings `seq = 1..=n` at QoS 1 with
//! at most `window` PUBLISHes awaiting their PUBACK, keeps every unacknowledged reading,
//! and after a lost connection reconnects (with a capped backoff) and resends them in
//! order with the DUP flag, like the firmware the telemetry contract describes. It ends
//! when every reading was acknowledged. The PUBACK latency (first send → PUBACK, resends
//! included) of every reading is recorded.
//!
//! What a PUBACK means depends on the server: fleetpulse's built-in endpoint sends it
//! after the commit; a broker sends it as soon as it holds the message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, Publish};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Builds the payload of reading `seq` of device `serial`.
pub type PayloadFn = Arc<dyn Fn(&str, u64) -> Vec<u8> + Send + Sync>;

/// What the swarm publishes, and how.
#[derive(Clone)]
pub struct SwarmConfig {
    /// The MQTT server: fleetpulse's built-in endpoint or a broker.
    pub addr: SocketAddr,
    /// One connection per serial; the serial is also the MQTT client id.
    pub serials: Vec<String>,
    /// Readings per device (`seq` 1..=n).
    pub readings_per_device: u64,
    /// QoS 1 PUBLISHes of one connection awaiting their PUBACK.
    pub window: usize,
    /// Connections being set up at once (a burst of thousands overflows listen backlogs).
    pub connect_concurrency: usize,
    /// Longest pause between reconnect attempts (it starts at 50 ms and doubles).
    pub max_backoff: Duration,
    /// Pacing: reading `seq` is first sent no earlier than `go + (seq - 1) × interval`
    /// (a device reporting on a schedule). `None`: as fast as the window allows.
    pub interval: Option<Duration>,
    pub payload: PayloadFn,
}

impl SwarmConfig {
    /// Devices `{prefix}-000000…`, realistic concentrator readings one second apart that
    /// end now (`ts` in ms).
    pub fn new(addr: SocketAddr, prefix: &str, devices: usize, readings_per_device: u64) -> Self {
        let end_ms = chrono::Utc::now().timestamp_millis();
        let per_device = i64::try_from(readings_per_device).unwrap_or(i64::MAX);
        let start_ms = end_ms - per_device.saturating_mul(1_000);
        Self {
            addr,
            serials: (0..devices).map(|i| format!("{prefix}-{i:06}")).collect(),
            readings_per_device,
            window: 16,
            connect_concurrency: 256,
            max_backoff: Duration::from_secs(1),
            interval: None,
            payload: Arc::new(move |serial, seq| concentrator_reading(serial, seq, start_ms)),
        }
    }

    pub fn total(&self) -> u64 {
        self.serials.len() as u64 * self.readings_per_device
    }
}

/// A ~200-byte oxygen-concentrator reading, deterministic in `(serial, seq)`.
pub fn concentrator_reading(serial: &str, seq: u64, start_ms: i64) -> Vec<u8> {
    let ts = start_ms + i64::try_from(seq).unwrap_or(i64::MAX / 2) * 1_000;
    let x = (seq % 100) as f64;
    format!(
        "{{\"seq\":{seq},\"ts\":{ts},\"serial\":\"{serial}\",\"model\":\"OC-5A\",\"fw\":\"2.1.0\",\
         \"runtime_hours\":{rh:.3},\"filter_life_pct\":{fl:.1},\"o2_purity_pct\":{o2:.1},\
         \"flow_lpm\":2.0,\"temperature_c\":{t:.1},\"alarms\":[]}}",
        rh = 1000.0 + seq as f64 / 3600.0,
        fl = 90.0 - x * 0.01,
        o2 = 93.0 + x * 0.01,
        t = 30.0 + x * 0.05,
    )
    .into_bytes()
}

/// Counters shared by every connection of a swarm.
#[derive(Debug, Default)]
pub struct SwarmCounters {
    /// Devices whose first CONNACK arrived.
    pub connected: AtomicU64,
    /// Readings sent for the first time.
    pub published: AtomicU64,
    /// Readings sent again (DUP) after a reconnect.
    pub resent: AtomicU64,
    /// Readings acknowledged.
    pub acked: AtomicU64,
    /// Connections lost or refused, then retried.
    pub reconnects: AtomicU64,
    /// PUBACKs for a packet id not in flight (would be a server bug).
    pub unexpected_acks: AtomicU64,
    /// PUBACKs that overtook the PUBACK of an older reading of the same connection
    /// (acks must come in arrival order).
    pub out_of_order_acks: AtomicU64,
    /// Devices with every reading acknowledged.
    pub finished: AtomicU64,
}

/// A point-in-time copy of [`SwarmCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwarmSnapshot {
    pub connected: u64,
    pub published: u64,
    pub resent: u64,
    pub acked: u64,
    pub reconnects: u64,
    pub unexpected_acks: u64,
    pub out_of_order_acks: u64,
    pub finished: u64,
}

impl SwarmCounters {
    pub fn snapshot(&self) -> SwarmSnapshot {
        SwarmSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            resent: self.resent.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            unexpected_acks: self.unexpected_acks.load(Ordering::Relaxed),
            out_of_order_acks: self.out_of_order_acks.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
        }
    }
}

/// What a finished swarm did.
#[derive(Clone, Debug)]
pub struct SwarmReport {
    pub counters: SwarmSnapshot,
    /// From [`Swarm::go`] to the last PUBACK.
    pub elapsed: Duration,
    /// First send → PUBACK of every reading, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl SwarmReport {
    /// The `q`-quantile (0..=1) of the PUBACK latency.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let last = self.latencies_us.len() - 1;
        let idx = ((last as f64) * q.clamp(0.0, 1.0)).round() as usize;
        Duration::from_micros(u64::from(self.latencies_us[idx.min(last)]))
    }
}

/// A running swarm. Connections are made at once; publishing starts with [`Swarm::go`].
pub struct Swarm {
    counters: Arc<SwarmCounters>,
    go: watch::Sender<Option<Instant>>,
    tasks: JoinSet<Vec<u32>>,
    devices: u64,
}

impl Swarm {
    /// Starts one task per device; each connects and waits for [`Swarm::go`].
    pub fn start(config: SwarmConfig) -> Swarm {
        let counters = Arc::new(SwarmCounters::default());
        let (go, go_rx) = watch::channel(None);
        let config = Arc::new(config);
        let connecting = Arc::new(tokio::sync::Semaphore::new(
            config.connect_concurrency.max(1),
        ));
        let mut tasks = JoinSet::new();
        for serial in config.serials.iter().cloned() {
            let device = Device {
                config: config.clone(),
                counters: counters.clone(),
                serial,
            };
            tasks.spawn(device.run(go_rx.clone(), connecting.clone()));
        }
        Swarm {
            counters,
            go,
            tasks,
            devices: config.serials.len() as u64,
        }
    }

    pub fn counters(&self) -> &Arc<SwarmCounters> {
        &self.counters
    }

    /// Waits until every device has connected once.
    pub async fn connected(&self, timeout: Duration) -> Result<(), SwarmError> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.counters.connected.load(Ordering::Relaxed);
            if n >= self.devices {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(SwarmError::NotConnected {
                    connected: n,
                    devices: self.devices,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Lets every device publish.
    pub fn go(&self) {
        self.go.send_replace(Some(Instant::now()));
    }

    /// Waits until every reading of every device was acknowledged.
    pub async fn finish(mut self, timeout: Duration) -> Result<SwarmReport, SwarmError> {
        let started = (*self.go.borrow()).unwrap_or_else(Instant::now);
        let mut latencies = Vec::new();
        let collect = async {
            while let Some(done) = self.tasks.join_next().await {
                latencies.extend(done.map_err(|e| SwarmError::Task(e.to_string()))?);
            }
            Ok::<_, SwarmError>(())
        };
        match tokio::time::timeout(timeout, collect).await {
            Ok(result) => result?,
            Err(_) => {
                let c = self.counters.snapshot();
                self.tasks.abort_all();
                return Err(SwarmError::NotFinished {
                    acked: c.acked,
                    finished: c.finished,
                    devices: self.devices,
                    waited: timeout,
                });
            }
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        Ok(SwarmReport {
            counters: self.counters.snapshot(),
            elapsed,
            latencies_us: latencies,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("only {connected} of {devices} devices connected")]
    NotConnected { connected: u64, devices: u64 },
    #[error(
        "after {waited:?}: {finished} of {devices} devices finished, {acked} readings acknowledged"
    )]
    NotFinished {
        acked: u64,
        finished: u64,
        devices: u64,
        waited: Duration,
    },
    #[error("a device task failed: {0}")]
    Task(String),
}

struct Device {
    config: Arc<SwarmConfig>,
    counters: Arc<SwarmCounters>,
    serial: String,
}

/// A reading sent and not yet acknowledged.
struct InFlight {
    seq: u64,
    first_sent: Instant,
}

#[derive(Debug)]
enum Lost {
    Io,
    Refused,
}

impl From<std::io::Error> for Lost {
    fn from(_: std::io::Error) -> Self {
        Lost::Io
    }
}

/// Packet ids cycle through 1..=u16::MAX, skipping none (the window is far smaller).
fn next_pkid(pkid: u16) -> u16 {
    if pkid == u16::MAX { 1 } else { pkid + 1 }
}

impl Device {
    async fn run(
        self,
        mut go: watch::Receiver<Option<Instant>>,
        connecting: Arc<tokio::sync::Semaphore>,
    ) -> Vec<u32> {
        let n = self.config.readings_per_device;
        let mut latencies = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let mut inflight: BTreeMap<u16, InFlight> = BTreeMap::new();
        let mut next_seq = 1u64;
        let mut pkid = 0u16;
        let mut first_connect = true;
        let mut go_at = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let stream = {
                let _permit = connecting.acquire().await;
                self.connect().await
            };
            let mut stream = match stream {
                Ok(s) => s,
                Err(_) => {
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    continue;
                }
            };
            backoff = Duration::from_millis(50);
            if first_connect {
                first_connect = false;
                self.counters.connected.fetch_add(1, Ordering::Relaxed);
                match go.wait_for(Option::is_some).await {
                    Ok(at) => go_at = (*at).unwrap_or_else(Instant::now),
                    Err(_) => return latencies,
                }
            }
            let result = self
                .session(
                    go_at,
                    &mut stream,
                    &mut inflight,
                    &mut next_seq,
                    &mut pkid,
                    &mut latencies,
                )
                .await;
            match result {
                Ok(()) => {
                    let mut buf = BytesMut::new();
                    if Packet::Disconnect.write(&mut buf, usize::MAX).is_ok() {
                        let _ = stream.write_all(&buf).await;
                    }
                    let _ = stream.shutdown().await;
                    self.counters.finished.fetch_add(1, Ordering::Relaxed);
                    return latencies;
                }
                Err(_) => {
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    async fn connect(&self) -> Result<TcpStream, Lost> {
        let mut stream = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect(self.config.addr),
        )
        .await
        .map_err(|_| Lost::Io)??;
        stream.set_nodelay(true)?;
        let mut connect = Connect::new(self.serial.as_str());
        connect.keep_alive = 60;
        connect.clean_session = true;
        let mut buf = BytesMut::new();
        Packet::Connect(connect)
            .write(&mut buf, usize::MAX)
            .map_err(|_| Lost::Refused)?;
        stream.write_all(&buf).await?;
        buf.clear();
        let packet =
            tokio::time::timeout(Duration::from_secs(10), read_packet(&mut stream, &mut buf))
                .await
                .map_err(|_| Lost::Io)??;
        match packet {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => Ok(stream),
            _ => Err(Lost::Refused),
        }
    }

    /// One connection's life: resend what is in flight, then keep the window full until
    /// every reading is acknowledged (`Ok`) or the connection is lost (`Err`).
    async fn session(
        &self,
        go_at: Instant,
        stream: &mut TcpStream,
        inflight: &mut BTreeMap<u16, InFlight>,
        next_seq: &mut u64,
        pkid: &mut u16,
        latencies: &mut Vec<u32>,
    ) -> Result<(), Lost> {
        let n = self.config.readings_per_device;
        let topic = format!("fleetpulse/v1/devices/{}/telemetry", self.serial);
        let mut out = BytesMut::with_capacity(4096);
        let mut inbuf = BytesMut::with_capacity(4096);
        // resend in seq order, flagged DUP
        let mut resend: Vec<(u16, u64)> = inflight.iter().map(|(k, v)| (*k, v.seq)).collect();
        resend.sort_by_key(|(_, seq)| *seq);
        for (id, seq) in resend {
            self.encode(&mut out, &topic, id, seq, true)?;
            self.counters.resent.fetch_add(1, Ordering::Relaxed);
        }
        let mut last_sent = Instant::now();
        loop {
            while inflight.len() < self.config.window
                && *next_seq <= n
                && self.due(go_at, *next_seq) <= Instant::now()
            {
                *pkid = next_pkid(*pkid);
                while inflight.contains_key(pkid) {
                    *pkid = next_pkid(*pkid);
                }
                self.encode(&mut out, &topic, *pkid, *next_seq, false)?;
                inflight.insert(
                    *pkid,
                    InFlight {
                        seq: *next_seq,
                        first_sent: Instant::now(),
                    },
                );
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                *next_seq += 1;
            }
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
                last_sent = Instant::now();
            }
            if inflight.is_empty() && *next_seq > n {
                return Ok(());
            }
            // Wait for acks; ping when the server has been quiet for a while so that
            // its keepalive does not expire while it holds our PUBACKs (a stalled store).
            // With pacing, wake up when the next reading is due.
            let until_ping = Duration::from_secs(20).saturating_sub(last_sent.elapsed());
            let until_due = if inflight.len() < self.config.window && *next_seq <= n {
                self.due(go_at, *next_seq)
                    .saturating_duration_since(Instant::now())
            } else {
                Duration::MAX
            };
            let packet = match tokio::time::timeout(
                until_ping.min(until_due),
                read_packet(stream, &mut inbuf),
            )
            .await
            {
                Ok(p) => p?,
                Err(_) => {
                    if last_sent.elapsed() >= Duration::from_secs(20) {
                        Packet::PingReq
                            .write(&mut out, usize::MAX)
                            .map_err(|_| Lost::Io)?;
                    }
                    continue;
                }
            };
            self.handle(packet, inflight, latencies);
            // drain whatever else is already buffered without waiting
            loop {
                match Packet::read(&mut inbuf, usize::MAX) {
                    Ok(p) => self.handle(p, inflight, latencies),
                    Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                    Err(_) => return Err(Lost::Io),
                }
            }
        }
    }

    fn handle(
        &self,
        packet: Packet,
        inflight: &mut BTreeMap<u16, InFlight>,
        latencies: &mut Vec<u32>,
    ) {
        if let Packet::PubAck(ack) = packet {
            let oldest = inflight.values().map(|f| f.seq).min();
            match inflight.remove(&ack.pkid) {
                Some(f) => {
                    if Some(f.seq) != oldest {
                        self.counters
                            .out_of_order_acks
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    let us = u32::try_from(f.first_sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                    latencies.push(us);
                    self.counters.acked.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.counters
                        .unexpected_acks
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// When reading `seq` may first be sent (see [`SwarmConfig::interval`]).
    fn due(&self, go_at: Instant, seq: u64) -> Instant {
        match self.config.interval {
            None => go_at,
            Some(every) => {
                let k = u32::try_from(seq.saturating_sub(1)).unwrap_or(u32::MAX);
                go_at + every.saturating_mul(k)
            }
        }
    }

    fn encode(
        &self,
        out: &mut BytesMut,
        topic: &str,
        pkid: u16,
        seq: u64,
        dup: bool,
    ) -> Result<(), Lost> {
        let mut publish = Publish::new(
            topic,
            QoS::AtLeastOnce,
            (self.config.payload)(&self.serial, seq),
        );
        publish.pkid = pkid;
        publish.dup = dup;
        Packet::Publish(publish)
            .write(out, usize::MAX)
            .map(|_| ())
            .map_err(|_| Lost::Io)
    }
}

/// Reads one packet (cancel-safe: partial bytes stay in `buf`).
async fn read_packet(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Packet, Lost> {
    loop {
        match Packet::read(buf, usize::MAX) {
            Ok(p) => return Ok(p),
            Err(mqttbytes::Error::InsufficientBytes(missing)) => {
                buf.reserve(missing.max(4096));
                if stream.read_buf(buf).await? == 0 {
                    return Err(Lost::Io);
                }
            }
            Err(_) => return Err(Lost::Io),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_valid_json_with_its_seq() {
        let bytes = concentrator_reading("OC-1", 7, 1_700_000_000_000);
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["ts"], 1_700_000_007_000i64);
        assert_eq!(v["serial"], "OC-1");
    }

    #[test]
    fn packet_ids_skip_zero() {
        assert_eq!(next_pkid(u16::MAX), 1);
        assert_eq!(next_pkid(1), 2);
    }
}
