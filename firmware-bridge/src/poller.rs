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

use chrono::SecondsFormat;
use fleetpulse_domain::AlarmCode;
use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Device, Parity, RtuConfig, Transport};
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

/// One device's schedule and what was last announced about it.
struct Cycle {
    index: usize,
    dev: Device,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    limits: TelemetryLimits,
    reach: Reach,
    alarms: Option<BTreeSet<AlarmCode>>,
    failures: u32,
    /// When the next poll is due.
    next: Instant,
}

impl Cycle {
    fn new(
        index: usize,
        dev: Device,
        events: mpsc::Sender<Event>,
        metrics: Arc<Metrics>,
        start_offset: Duration,
    ) -> Self {
        Cycle {
            index,
            dev,
            events,
            metrics,
            limits: TelemetryLimits::default(),
            reach: Reach::Unknown,
            alarms: None,
            failures: 0,
            next: Instant::now() + start_offset,
        }
    }

    /// Records one poll: publishes the reading or the unreachable status, counts it, and
    /// schedules the next poll (the interval, or the backoff after a failure). Returns
    /// false once the publisher is gone.
    async fn record(&mut self, outcome: Result<Decoded, PollError>, latency: Duration) -> bool {
        let scheduled = self.next;
        let (index, dev) = (self.index, &self.dev);
        let outcome = outcome.and_then(|d| reading(dev, d, &self.limits));
        match outcome {
            Ok((fields, now_active)) => {
                self.metrics.poll_ok(index, latency);
                self.metrics.devices[index].up.store(1, Ordering::Relaxed);
                report_alarm_changes(dev, self.alarms.as_ref(), &now_active, &self.metrics);
                self.alarms = Some(now_active);
                if self
                    .events
                    .send(Event::Reading {
                        device: index,
                        fields,
                    })
                    .await
                    .is_err()
                {
                    return false;
                }
                if self.reach != Reach::Online {
                    if matches!(self.reach, Reach::Unreachable(_)) {
                        info!(serial = %dev.serial, "device answers again");
                    }
                    self.reach = Reach::Online;
                    let _ = self
                        .events
                        .send(Event::Status {
                            device: index,
                            payload: status(dev, "online", None),
                        })
                        .await;
                }
                self.failures = 0;
                // keep the cadence; a poll that overran its slot starts the next one now
                self.next = (scheduled + dev.interval).max(Instant::now());
            }
            Err(error) => {
                let kind = error.kind();
                self.metrics.poll_failed(index, kind, latency);
                self.metrics.devices[index].up.store(0, Ordering::Relaxed);
                let reason = error.to_string();
                self.failures = self.failures.saturating_add(1);
                let backoff = dev
                    .interval
                    .saturating_mul(1 << (self.failures - 1).min(16))
                    .min(dev.retry_max);
                if self.reach != Reach::Unreachable(reason.clone()) {
                    warn!(serial = %dev.serial, kind = kind.as_str(), %reason, retry_in_ms = backoff.as_millis() as u64, "device unreachable");
                    self.reach = Reach::Unreachable(reason.clone());
                    let _ = self
                        .events
                        .send(Event::Status {
                            device: index,
                            payload: status(dev, "unreachable", Some((kind, &reason))),
                        })
                        .await;
                } else {
                    debug!(serial = %dev.serial, %reason, "poll failed again");
                }
                self.next = Instant::now() + backoff;
            }
        }
        true
    }
}

/// Polls one Modbus TCP device until `stop`. `start_offset` spreads the first polls of
/// many devices over an interval.
pub async fn run_tcp(
    index: usize,
    dev: Device,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    start_offset: Duration,
    stop: CancellationToken,
) {
    let mut cycle = Cycle::new(index, dev, events, metrics, start_offset);
    let mut ctx: Option<Context> = None;
    loop {
        tokio::select! {
            _ = sleep_until(cycle.next) => {}
            _ = stop.cancelled() => break,
        }
        let started = Instant::now();
        let outcome = match &mut ctx {
            Some(c) => read_all(c, &cycle.dev).await,
            None => match connect_tcp(&cycle.dev).await {
                Ok(c) => read_all(ctx.insert(c), &cycle.dev).await,
                Err(e) => Err(e),
            },
        };
        if outcome
            .as_ref()
            .is_err_and(|e| e.kind() == FailureKind::Transport)
        {
            ctx = None;
        }
        if !cycle.record(outcome, started.elapsed()).await {
            break;
        }
    }
    if let Some(mut ctx) = ctx {
        use tokio_modbus::client::Client;
        let _ = timeout(Duration::from_millis(200), ctx.disconnect()).await;
    }
}

/// Polls the devices of one RTU serial line until `stop`, one request at a time (the
/// bus is half-duplex): always the device whose poll is due first. A transport failure
/// closes the port (discarding whatever a late answer left in it); the next poll opens
/// it again.
pub async fn run_rtu_bus(
    line: RtuConfig,
    devices: Vec<(usize, Device)>,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let n = devices.len().max(1) as u32;
    let mut cycles: Vec<Cycle> = devices
        .into_iter()
        .enumerate()
        .map(|(k, (index, dev))| {
            let offset = dev.interval.mul_f64(f64::from(k as u32) / f64::from(n));
            Cycle::new(index, dev, events.clone(), metrics.clone(), offset)
        })
        .collect();
    let mut ctx: Option<Context> = None;
    loop {
        let Some(due) = cycles
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.next)
            .map(|(i, _)| i)
        else {
            return;
        };
        tokio::select! {
            _ = sleep_until(cycles[due].next) => {}
            _ = stop.cancelled() => break,
        }
        let cycle = &mut cycles[due];
        let started = Instant::now();
        let outcome = match &mut ctx {
            Some(c) => {
                c.set_slave(Slave(cycle.dev.unit));
                read_all(c, &cycle.dev).await
            }
            None => match open_rtu(&line, cycle.dev.unit) {
                Ok(c) => read_all(ctx.insert(c), &cycle.dev).await,
                Err(e) => Err(e),
            },
        };
        if outcome
            .as_ref()
            .is_err_and(|e| e.kind() == FailureKind::Transport)
        {
            ctx = None;
        }
        if !cycle.record(outcome, started.elapsed()).await {
            break;
        }
    }
}

fn open_rtu(line: &RtuConfig, unit: u8) -> Result<Context, PollError> {
    use tokio_serial::SerialPortBuilderExt;
    let parity = match line.parity {
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::None => tokio_serial::Parity::None,
    };
    let data_bits = if line.data_bits == 7 {
        tokio_serial::DataBits::Seven
    } else {
        tokio_serial::DataBits::Eight
    };
    let stop_bits = if line.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    let port = tokio_serial::new(&line.port, line.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .open_native_async()
        .map_err(|e| PollError::Connect {
            addr: line.port.clone(),
            error: e.to_string(),
        })?;
    Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(unit)))
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
        json!(dev.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true)),
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
    if let Some(Err(rejection)) = parse_telemetry(&dev.serial, &payload, dev.clock.now(), limits)
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

async fn connect_tcp(dev: &Device) -> Result<Context, PollError> {
    let Transport::Tcp(host_port) = &dev.transport else {
        unreachable!("a TCP poller only gets TCP devices");
    };
    let connect = async {
        let addr = tokio::net::lookup_host(host_port)
            .await
            .map_err(|_| PollError::Resolve(host_port.clone()))?
            .next()
            .ok_or_else(|| PollError::Resolve(host_port.clone()))?;
        tokio_modbus::client::tcp::connect_slave(addr, Slave(dev.unit))
            .await
            .map_err(|e| PollError::Connect {
                addr: host_port.clone(),
                error: e.to_string(),
            })
    };
    timeout(dev.timeout, connect)
        .await
        .map_err(|_| PollError::Connect {
            addr: host_port.clone(),
            error: format!("no connection within {} ms", dev.timeout.as_millis()),
        })?
}

/// One poll: every read block of the map, each under the request timeout.
async fn read_all(ctx: &mut Context, dev: &Device) -> Result<Decoded, PollError> {
    let mut data = Vec::with_capacity(dev.map.reads.len());
    for block in &dev.map.reads {
        data.push(read_block(ctx, block, dev.timeout).await?);
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
        Ok(Err(e)) => Err(transport_error(e)),
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

/// EINPROGRESS, the errno a non-blocking connect leaves behind.
#[cfg(target_os = "linux")]
const EINPROGRESS: i32 = 115;
#[cfg(not(target_os = "linux"))]
const EINPROGRESS: i32 = 36;

fn transport_error(e: tokio_modbus::Error) -> PollError {
    match e {
        tokio_modbus::Error::Transport(io) if is_end_of_stream(&io) => {
            PollError::Transport("connection closed by peer".into())
        }
        e => PollError::Transport(e.to_string()),
    }
}

/// Whether a transport error means the peer closed the connection. tokio-modbus 0.17
/// (`service/tcp.rs`) answers an end of stream with `io::Error::last_os_error()`, i.e.
/// whatever errno the thread last set (typically EINPROGRESS from a connect, or 0), which
/// printed as "Operation now in progress (os error 115)". None of those can be the
/// failure of a read itself, so they are taken as the end of the stream.
fn is_end_of_stream(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe | ErrorKind::WouldBlock
    ) || matches!(e.raw_os_error(), Some(0 | EINPROGRESS))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A Modbus TCP peer that takes the connection, reads the request and closes.
    #[tokio::test]
    async fn a_peer_that_closes_is_named_as_such() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 12];
            let _ = s.read_exact(&mut buf).await;
            drop(s);
        });
        let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(1))
            .await
            .expect("connect");
        let block = ReadBlock {
            function: Function::Holding,
            address: 0,
            count: 2,
        };
        let e = read_block(&mut ctx, &block, Duration::from_secs(5))
            .await
            .expect_err("the peer closed");
        peer.await.expect("peer");
        assert_eq!(e.kind(), FailureKind::Transport);
        assert_eq!(e.to_string(), "connection closed by peer");
    }
}
