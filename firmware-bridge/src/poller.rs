//! One task per device: connect, read the register map's blocks, decode, hand the
//! reading to the publisher; on a failure mark the device unreachable and retry with
//! backoff. tokio-modbus owns no loop, timeout or reconnect: all three live here.
//!
//! A device's faults cost only its own task: a timeout, an exception code or garbage
//! never delays another device's poll.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use fleetpulse_domain::AlarmCode;
use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::{ExceptionCode, Slave};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Device;
use crate::metrics::{FailureKind, Metrics};
use crate::registers::{BlockData, DecodeError, Decoded, Function, ReadBlock};

/// What a poller tells the publisher.
#[derive(Debug)]
pub enum Event {
    /// A reading (v1 payload without `seq`; the publisher assigns it).
    Reading {
        device: usize,
        fields: Map<String, Value>,
    },
    /// The device's status payload changed.
    Status { device: usize, payload: Value },
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connect to {addr} failed: {error}")]
    Connect { addr: String, error: String },
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("{0}")]
    Transport(String),
    #[error("exception {code:#04x} ({name}) reading {count} {function} from {address}")]
    Exception {
        code: u8,
        name: String,
        function: Function,
        address: u16,
        count: u16,
    },
    #[error("garbage: {0}")]
    Decode(String),
}

impl PollError {
    pub fn kind(&self) -> FailureKind {
        match self {
            PollError::Exception { .. } => FailureKind::Exception,
            PollError::Decode(_) => FailureKind::Decode,
            _ => FailureKind::Transport,
        }
    }
}

impl From<DecodeError> for PollError {
    fn from(e: DecodeError) -> Self {
        PollError::Decode(e.to_string())
    }
}

/// Where a device stands, as last announced.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reach {
    Unknown,
    Online,
    Unreachable(String),
}

/// Polls `dev` until `stop`. `start_offset` spreads the first polls of many devices over
/// an interval.
pub async fn run(
    index: usize,
    dev: Device,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    start_offset: Duration,
    stop: CancellationToken,
) {
    let limits = TelemetryLimits::default();
    let mut ctx: Option<Context> = None;
    let mut reach = Reach::Unknown;
    let mut alarms: Option<BTreeSet<AlarmCode>> = None;
    let mut failures: u32 = 0;
    let mut next = Instant::now() + start_offset;
    loop {
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = stop.cancelled() => break,
        }
        let scheduled = next;
        let started = Instant::now();
        let outcome = match poll_once(&dev, &mut ctx).await {
            Ok(decoded) => reading(&dev, decoded, &limits),
            Err(e) => Err(e),
        };
        let latency = started.elapsed();
        match outcome {
            Ok((fields, now_active)) => {
                metrics.poll_ok(index, latency);
                metrics.devices[index].up.store(1, Ordering::Relaxed);
                report_alarm_changes(&dev, alarms.as_ref(), &now_active, &metrics);
                alarms = Some(now_active);
                if events
                    .send(Event::Reading {
                        device: index,
                        fields,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
                if reach != Reach::Online {
                    if matches!(reach, Reach::Unreachable(_)) {
                        info!(serial = %dev.serial, "device answers again");
                    }
                    reach = Reach::Online;
                    let _ = events
                        .send(Event::Status {
                            device: index,
                            payload: status(&dev, "online", None),
                        })
                        .await;
                }
                failures = 0;
                // keep the cadence; a poll that overran its slot starts the next one now
                next = (scheduled + dev.interval).max(Instant::now());
            }
            Err(error) => {
                let kind = error.kind();
                metrics.poll_failed(index, kind, latency);
                metrics.devices[index].up.store(0, Ordering::Relaxed);
                if kind == FailureKind::Transport {
                    ctx = None;
                }
                let reason = error.to_string();
                failures = failures.saturating_add(1);
                let backoff = dev
                    .interval
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(dev.retry_max);
                if reach != Reach::Unreachable(reason.clone()) {
                    warn!(serial = %dev.serial, kind = kind.as_str(), %reason, retry_in_ms = backoff.as_millis() as u64, "device unreachable");
                    reach = Reach::Unreachable(reason.clone());
                    let _ = events
                        .send(Event::Status {
                            device: index,
                            payload: status(&dev, "unreachable", Some((kind, &reason))),
                        })
                        .await;
                } else {
                    debug!(serial = %dev.serial, %reason, "poll failed again");
                }
                next = Instant::now() + backoff;
            }
        }
    }
    if let Some(mut ctx) = ctx {
        use tokio_modbus::client::Client;
        let _ = timeout(Duration::from_millis(200), ctx.disconnect()).await;
    }
}

fn status(dev: &Device, state: &str, failure: Option<(FailureKind, &str)>) -> Value {
    let mut v = json!({ "state": state, "model": dev.model, "via": "modbus" });
    if let Some(fw) = &dev.fw {
        v["fw"] = json!(fw);
    }
    if let Some((kind, reason)) = failure {
        v["kind"] = json!(kind.as_str());
        v["reason"] = json!(reason);
    }
    v
}

fn report_alarm_changes(
    dev: &Device,
    before: Option<&BTreeSet<AlarmCode>>,
    now: &BTreeSet<AlarmCode>,
    metrics: &Metrics,
) {
    let empty = BTreeSet::new();
    let before = before.unwrap_or(&empty);
    for code in now.difference(before) {
        metrics.alarms_raised.fetch_add(1, Ordering::Relaxed);
        info!(serial = %dev.serial, code = code.as_str(), "alarm raised");
    }
    for code in before.difference(now) {
        metrics.alarms_cleared.fetch_add(1, Ordering::Relaxed);
        info!(serial = %dev.serial, code = code.as_str(), "alarm cleared");
    }
}

/// The v1 payload of a decoded poll, checked against the telemetry contract (a value
/// fleetpulse would reject is garbage from the device, reported as a decode failure).
fn reading(
    dev: &Device,
    decoded: Decoded,
    limits: &TelemetryLimits,
) -> Result<(Map<String, Value>, BTreeSet<AlarmCode>), PollError> {
    let mut m = Map::new();
    m.insert(
        "ts".into(),
        json!(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
    );
    m.insert("model".into(), json!(dev.model));
    if let Some(fw) = &dev.fw {
        m.insert("fw".into(), json!(fw));
    }
    for (name, value) in &decoded.values {
        m.insert(name.clone(), json!(value));
    }
    if !dev.map.alarms.is_empty() {
        let codes: Vec<&str> = decoded.alarms.iter().map(AlarmCode::as_str).collect();
        m.insert("alarms".into(), json!(codes));
    }
    let mut probe = m.clone();
    probe.insert("seq".into(), json!(0));
    let payload = serde_json::to_vec(&Value::Object(probe)).unwrap_or_default();
    if let Some(Err(rejection)) = parse_telemetry(&dev.serial, &payload, Utc::now(), limits)
        .into_iter()
        .next()
    {
        return Err(PollError::Decode(format!(
            "{}: {}",
            rejection.reason.as_str(),
            rejection.detail
        )));
    }
    Ok((m, decoded.alarms))
}

async fn connect(dev: &Device) -> Result<Context, PollError> {
    let connect = async {
        let addr = tokio::net::lookup_host(&dev.tcp)
            .await
            .map_err(|_| PollError::Resolve(dev.tcp.clone()))?
            .next()
            .ok_or_else(|| PollError::Resolve(dev.tcp.clone()))?;
        tokio_modbus::client::tcp::connect_slave(addr, Slave(dev.unit))
            .await
            .map_err(|e| PollError::Connect {
                addr: dev.tcp.clone(),
                error: e.to_string(),
            })
    };
    timeout(dev.timeout, connect)
        .await
        .map_err(|_| PollError::Connect {
            addr: dev.tcp.clone(),
            error: format!("no connection within {} ms", dev.timeout.as_millis()),
        })?
}

/// One poll: every read block of the map, each under the request timeout.
async fn poll_once(dev: &Device, ctx: &mut Option<Context>) -> Result<Decoded, PollError> {
    if ctx.is_none() {
        *ctx = Some(connect(dev).await?);
    }
    let Some(c) = ctx.as_mut() else {
        unreachable!("connected just above");
    };
    let mut data = Vec::with_capacity(dev.map.reads.len());
    for block in &dev.map.reads {
        data.push(read_block(c, block, dev.timeout).await?);
    }
    Ok(dev.map.decode(&data)?)
}

/// One read request: the outer error is the transport, the inner one the device's
/// exception code.
async fn read_block(
    ctx: &mut Context,
    block: &ReadBlock,
    limit: Duration,
) -> Result<BlockData, PollError> {
    let (a, n) = (block.address, block.count);
    let answer = match block.function {
        Function::Holding => timeout(limit, ctx.read_holding_registers(a, n))
            .await
            .map(|r| r.map(|r| r.map(BlockData::Words))),
        Function::Input => timeout(limit, ctx.read_input_registers(a, n))
            .await
            .map(|r| r.map(|r| r.map(BlockData::Words))),
        Function::Coil => timeout(limit, ctx.read_coils(a, n))
            .await
            .map(|r| r.map(|r| r.map(BlockData::Bits))),
        Function::Discrete => timeout(limit, ctx.read_discrete_inputs(a, n))
            .await
            .map(|r| r.map(|r| r.map(BlockData::Bits))),
    };
    match answer {
        Err(_) => Err(PollError::Timeout(limit.as_millis())),
        Ok(Err(e)) => Err(PollError::Transport(e.to_string())),
        Ok(Ok(Err(code))) => Err(PollError::Exception {
            code: u8::from(code),
            name: exception_name(code),
            function: block.function,
            address: a,
            count: n,
        }),
        Ok(Ok(Ok(data))) => Ok(data),
    }
}

fn exception_name(code: ExceptionCode) -> String {
    match code {
        ExceptionCode::IllegalFunction => "illegal function".into(),
        ExceptionCode::IllegalDataAddress => "illegal data address".into(),
        ExceptionCode::IllegalDataValue => "illegal data value".into(),
        ExceptionCode::ServerDeviceFailure => "server device failure".into(),
        ExceptionCode::Acknowledge => "acknowledge".into(),
        ExceptionCode::ServerDeviceBusy => "server device busy".into(),
        ExceptionCode::MemoryParityError => "memory parity error".into(),
        ExceptionCode::GatewayPathUnavailable => "gateway path unavailable".into(),
        ExceptionCode::GatewayTargetDevice => "gateway target device failed to respond".into(),
        ExceptionCode::Custom(c) => format!("code {c}"),
    }
}
