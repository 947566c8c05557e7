//! The bridge's figures: polls and failures by kind, poll latency per device and as a
//! histogram, outbox depth and publishing counters, rendered as Prometheus text.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleetpulse_simulator::LinkStats;

/// Why a poll failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No answer in time, connection refused or lost, a malformed frame.
    Transport,
    /// The device answered with a Modbus exception code.
    Exception,
    /// The device answered, but the values make no sense (wrong length, NaN, outside the
    /// telemetry contract).
    Decode,
}

impl FailureKind {
    pub const ALL: [FailureKind; 3] = [
        FailureKind::Transport,
        FailureKind::Exception,
        FailureKind::Decode,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transport => "transport",
            FailureKind::Exception => "exception",
            FailureKind::Decode => "decode",
        }
    }

    const fn index(self) -> usize {
        match self {
            FailureKind::Transport => 0,
            FailureKind::Exception => 1,
            FailureKind::Decode => 2,
        }
    }
}

/// Upper bounds (seconds) of the poll latency histogram.
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
    0.2, 0.3, 0.5, 1.0, 2.5, 5.0,
];

/// One device's counters.
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    pub polls_ok: AtomicU64,
    failures: [AtomicU64; 3],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    last_latency_us: AtomicU64,
    /// 1 while the device answers, 0 while it is unreachable.
    pub up: AtomicU64,
    /// Polls not stored because the device's outbox was full.
    pub outbox_full: AtomicU64,
    /// Readings held in the outbox now.
    pub outbox_depth: AtomicU64,
}

impl DeviceMetrics {
    pub fn failures(&self, kind: FailureKind) -> u64 {
        self.failures[kind.index()].load(Ordering::Relaxed)
    }
}

/// Everything, shared by the pollers, the publisher and the HTTP endpoint.
#[derive(Debug)]
pub struct Metrics {
    serials: Vec<String>,
    pub devices: Vec<DeviceMetrics>,
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    pub outbox_write_errors: AtomicU64,
    pub alarms_raised: AtomicU64,
    pub alarms_cleared: AtomicU64,
    /// The MQTT links' counters (copied by the publisher).
    links: Mutex<Vec<LinkStats>>,
}

impl Metrics {
    pub fn new(serials: Vec<String>) -> Self {
        let n = serials.len();
        Metrics {
            devices: (0..n).map(|_| DeviceMetrics::default()).collect(),
            serials,
            buckets: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            outbox_write_errors: AtomicU64::new(0),
            alarms_raised: AtomicU64::new(0),
            alarms_cleared: AtomicU64::new(0),
            links: Mutex::new(vec![LinkStats::default(); n]),
        }
    }

    fn observe(&self, device: usize, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let d = &self.devices[device];
        d.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        d.latency_count.fetch_add(1, Ordering::Relaxed);
        d.last_latency_us.store(us, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A poll that produced a reading.
    pub fn poll_ok(&self, device: usize, latency: Duration) {
        self.devices[device]
            .polls_ok
            .fetch_add(1, Ordering::Relaxed);
        self.observe(device, latency);
    }

    /// A poll that failed.
    pub fn poll_failed(&self, device: usize, kind: FailureKind, latency: Duration) {
        self.devices[device].failures[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.observe(device, latency);
    }

    pub fn set_links(&self, stats: Vec<LinkStats>) {
        *self.links.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }

    /// Polls (ok and failed) so far.
    pub fn polls_total(&self) -> u64 {
        self.devices
            .iter()
            .map(|d| {
                d.polls_ok.load(Ordering::Relaxed)
                    + FailureKind::ALL.iter().map(|k| d.failures(*k)).sum::<u64>()
            })
            .sum()
    }

    /// Readings in the outbox now.
    pub fn outbox_depth(&self) -> u64 {
        self.devices
            .iter()
            .map(|d| d.outbox_depth.load(Ordering::Relaxed))
            .sum()
    }

    /// The smallest histogram bound at or below which `q` of all polls finished.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        None
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(256 + self.devices.len() * 600);
        let _ = writeln!(
            out,
            "# HELP bridge_polls_total Modbus polls by device and result (ok, transport, exception, decode).\n# TYPE bridge_polls_total counter"
        );
        for (s, d) in self.serials.iter().zip(&self.devices) {
            let _ = writeln!(
                out,
                "bridge_polls_total{{serial=\"{s}\",result=\"ok\"}} {}",
                d.polls_ok.load(Ordering::Relaxed)
            );
            for k in FailureKind::ALL {
                let _ = writeln!(
                    out,
                    "bridge_polls_total{{serial=\"{s}\",result=\"{}\"}} {}",
                    k.as_str(),
                    d.failures(k)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP bridge_device_up 1 while the device answers polls, 0 while it is unreachable.\n# TYPE bridge_device_up gauge"
        );
        for (s, d) in self.serials.iter().zip(&self.devices) {
            let _ = writeln!(
                out,
                "bridge_device_up{{serial=\"{s}\"}} {}",
                d.up.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bridge_device_poll_seconds Poll latency per device (sum and count; last).\n# TYPE bridge_device_poll_seconds summary"
        );
        for (s, d) in self.serials.iter().zip(&self.devices) {
            let _ = writeln!(
                out,
                "bridge_device_poll_seconds_sum{{serial=\"{s}\"}} {}\nbridge_device_poll_seconds_count{{serial=\"{s}\"}} {}",
                d.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
                d.latency_count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE bridge_device_last_poll_seconds gauge");
        for (s, d) in self.serials.iter().zip(&self.devices) {
            let _ = writeln!(
                out,
                "bridge_device_last_poll_seconds{{serial=\"{s}\"}} {}",
                d.last_latency_us.load(Ordering::Relaxed) as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "# HELP bridge_poll_seconds Poll latency of every device (all reads of one poll).\n# TYPE bridge_poll_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(
                        out,
                        "bridge_poll_seconds_bucket{{le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "bridge_poll_seconds_bucket{{le=\"+Inf\"}} {cumulative}\nbridge_poll_seconds_count {cumulative}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "bridge_poll_seconds_sum {}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP bridge_outbox_readings Readings on disk awaiting their PUBACK.\n# TYPE bridge_outbox_readings gauge\nbridge_outbox_readings {}",
            self.outbox_depth()
        );
        let full: u64 = self
            .devices
            .iter()
            .map(|d| d.outbox_full.load(Ordering::Relaxed))
            .sum();
        let _ = writeln!(
            out,
            "# HELP bridge_outbox_full_total Polls not stored because the device's outbox was full.\n# TYPE bridge_outbox_full_total counter\nbridge_outbox_full_total {full}"
        );
        let _ = writeln!(
            out,
            "# TYPE bridge_outbox_write_errors_total counter\nbridge_outbox_write_errors_total {}",
            self.outbox_write_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP bridge_alarm_transitions_total Alarm bits that rose (raised) or fell (cleared).\n# TYPE bridge_alarm_transitions_total counter\nbridge_alarm_transitions_total{{change=\"raised\"}} {}\nbridge_alarm_transitions_total{{change=\"cleared\"}} {}",
            self.alarms_raised.load(Ordering::Relaxed),
            self.alarms_cleared.load(Ordering::Relaxed)
        );
        let mut links = LinkStats::default();
        let mut connected = 0;
        for l in self.links.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            links += *l;
            connected += u64::from(l.connects > 0);
        }
        let _ = writeln!(
            out,
            "# HELP bridge_mqtt_readings_total Readings handed to MQTT: published (first send), resent (DUP after a reconnect), acked (PUBACK).\n# TYPE bridge_mqtt_readings_total counter\nbridge_mqtt_readings_total{{event=\"published\"}} {}\nbridge_mqtt_readings_total{{event=\"resent\"}} {}\nbridge_mqtt_readings_total{{event=\"acked\"}} {}",
            links.published, links.resent, links.acked
        );
        let _ = writeln!(
            out,
            "# TYPE bridge_mqtt_connects_total counter\nbridge_mqtt_connects_total {}\n# TYPE bridge_mqtt_connect_failures_total counter\nbridge_mqtt_connect_failures_total {}\n# TYPE bridge_mqtt_links_ever_connected gauge\nbridge_mqtt_links_ever_connected {connected}",
            links.connects, links.connect_failures
        );
        out
    }
}
