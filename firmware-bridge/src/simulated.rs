//! Simulated Modbus devices: the simulator's fleet (same physics, wear, failures and
//! alarms as the MQTT devices) served as Modbus TCP servers (tokio-modbus), one listener
//! per device, each value placed in its registers by the model's register map.
//!
//! Every device answers for its own unit id only (others get exception 0x0B, as a
//! gateway would), and reads outside its mapped registers get exception 0x02. A device's
//! [`Behaviour`] can be changed while it runs: stop answering, answer every request with
//! an exception code, or answer slowly. That is how the tests produce faulty devices.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::Utc;
use fleetpulse_domain::{AlarmCode, Catalog, Serial};
use fleetpulse_simulator::{Fleet, FleetClock, FleetConfig};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::{Device, Transport};
use crate::registers::{BlockData, Function, RegisterMap};

/// How a simulated device answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    #[default]
    Normal,
    /// Reads every request, answers none (a device that hangs).
    Silent,
    /// Answers every request with this exception code.
    Exception(u8),
    /// Answers after this delay.
    Slow(Duration),
    /// Answers with every register 0xFFFF and every bit set (a corrupted memory map: NaN
    /// floats, out-of-range integers).
    Garbage,
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct ModbusFleetConfig {
    pub devices: usize,
    pub seed: u64,
    /// Simulated seconds per wall second (device physics only).
    pub speed: f64,
    /// How often the register values are refreshed.
    pub tick: Duration,
    /// Device `i` is `{prefix}-{i + 1:06}`.
    pub serial_prefix: String,
    /// Address the listeners bind (port 0 each).
    pub listen: IpAddr,
    /// Unit id every device answers for.
    pub unit: u8,
    /// The clock of the process: on a simulated one, each refresh advances the devices
    /// by its time since the last one and the bridge stamps their readings with it.
    pub clock: fleetpulse_domain::Clock,
}

impl Default for ModbusFleetConfig {
    fn default() -> Self {
        ModbusFleetConfig {
            devices: 10,
            seed: 42,
            speed: 3600.0,
            tick: Duration::from_secs(1),
            serial_prefix: "MB".into(),
            listen: IpAddr::from([127, 0, 0, 1]),
            unit: 1,
            clock: fleetpulse_domain::Clock::Wall,
        }
    }
}

/// The simulated fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimulatedError {
    #[error("fleet: {0}")]
    Fleet(String),
    #[error("no register map for model {0}")]
    NoMap(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: IpAddr, source: io::Error },
}

/// One device's registers and behaviour.
#[derive(Debug)]
struct DeviceState {
    map: Arc<RegisterMap>,
    unit: u8,
    image: RwLock<Vec<BlockData>>,
    behaviour: Mutex<Behaviour>,
}

/// One simulated device as the bridge sees it.
#[derive(Clone, Debug)]
pub struct SimulatedDevice {
    pub serial: Serial,
    pub model: String,
    pub fw: String,
    pub addr: SocketAddr,
    pub unit: u8,
    state: Arc<DeviceState>,
}

impl SimulatedDevice {
    pub fn set_behaviour(&self, b: Behaviour) {
        *self
            .state
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = b;
    }
}

/// A running simulated fleet; stops when the token given to [`ModbusFleet::start`] is
/// cancelled or the fleet is dropped.
pub struct ModbusFleet {
    devices: Vec<SimulatedDevice>,
    tasks: JoinSet<()>,
    clock: fleetpulse_domain::Clock,
}

impl ModbusFleet {
    /// Builds the fleet, binds one listener per device and starts serving.
    pub async fn start(
        cfg: ModbusFleetConfig,
        catalog: &Catalog,
        maps: &BTreeMap<String, Arc<RegisterMap>>,
        stop: CancellationToken,
    ) -> Result<Self, SimulatedError> {
        let mut fleet = Fleet::new(
            &FleetConfig {
                devices: cfg.devices,
                seed: cfg.seed,
                serial_prefix: cfg.serial_prefix.clone(),
                untidy: None,
            },
            catalog,
        )
        .map_err(|e| SimulatedError::Fleet(e.to_string()))?;
        let mut devices = Vec::with_capacity(cfg.devices);
        let mut tasks = JoinSet::new();
        for info in fleet.devices().collect::<Vec<_>>() {
            let map = maps
                .get(&info.model)
                .cloned()
                .ok_or_else(|| SimulatedError::NoMap(info.model.clone()))?;
            let image = map
                .encode(&BTreeMap::new(), &BTreeSet::new())
                .unwrap_or_default();
            let state = Arc::new(DeviceState {
                map,
                unit: cfg.unit,
                image: RwLock::new(image),
                behaviour: Mutex::new(Behaviour::Normal),
            });
            let listener = TcpListener::bind((cfg.listen, 0)).await.map_err(|source| {
                SimulatedError::Listen {
                    addr: cfg.listen,
                    source,
                }
            })?;
            let addr = listener
                .local_addr()
                .map_err(|source| SimulatedError::Listen {
                    addr: cfg.listen,
                    source,
                })?;
            tasks.spawn(serve(listener, state.clone(), stop.clone()));
            devices.push(SimulatedDevice {
                serial: info.serial,
                model: info.model,
                fw: info.firmware,
                addr,
                unit: cfg.unit,
                state,
            });
        }
        let states: Vec<Arc<DeviceState>> = devices.iter().map(|d| d.state.clone()).collect();
        let clock = cfg.clock;
        let tick = cfg.tick.max(Duration::from_millis(10));
        let mut steps = FleetClock::new(clock, cfg.speed.max(0.0) * tick.as_secs_f64() / 3600.0);
        refresh(&mut fleet, &states, 0.0, steps.last);
        tasks.spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = interval.tick() => {
                        let (hours, now) = steps.tick();
                        refresh(&mut fleet, &states, hours, now);
                    }
                }
            }
        });
        Ok(ModbusFleet {
            devices,
            tasks,
            clock,
        })
    }

    pub fn devices(&self) -> &[SimulatedDevice] {
        &self.devices
    }

    /// `[[device]]` entries of a bridge configuration polling this fleet.
    pub fn bridge_devices_toml(&self, interval_ms: u64) -> String {
        let mut out = String::new();
        for d in &self.devices {
            out += &format!(
                "[[device]]\nserial = \"{}\"\nmodel = \"{}\"\nfw = \"{}\"\ntcp = \"{}\"\nunit = {}\ninterval_ms = {interval_ms}\n\n",
                d.serial, d.model, d.fw, d.addr, d.unit
            );
        }
        out
    }

    /// The bridge's view of these devices (for a bridge in the same process).
    pub fn bridge_devices(&self, interval: Duration, timeout: Duration) -> Vec<Device> {
        self.devices
            .iter()
            .map(|d| Device {
                serial: d.serial.clone(),
                model: d.model.clone(),
                fw: Some(d.fw.clone()),
                password: None,
                transport: Transport::Tcp(d.addr.to_string()),
                unit: d.unit,
                interval,
                timeout,
                retry_max: Duration::from_secs(30).max(interval),
                map: d.state.map.clone(),
                clock: self.clock,
            })
            .collect()
    }

    /// Waits until the fleet stops.
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Advances the fleet and writes every device's new reading into its registers.
fn refresh(
    fleet: &mut Fleet,
    states: &[Arc<DeviceState>],
    sim_dt_hours: f64,
    now: chrono::DateTime<Utc>,
) {
    for m in fleet.step(sim_dt_hours, now) {
        let Some(state) = states.get(m.device) else {
            continue;
        };
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&m.payload) else {
            continue;
        };
        let mut values = BTreeMap::new();
        let mut alarms = BTreeSet::new();
        for (k, v) in &fields {
            match (k.as_str(), v) {
                ("seq", _) => {}
                ("alarms", Value::Array(codes)) => {
                    alarms.extend(
                        codes
                            .iter()
                            .filter_map(Value::as_str)
                            .filter_map(|c| AlarmCode::parse(c).ok()),
                    );
                }
                (_, Value::Number(n)) => {
                    if let Some(f) = n.as_f64() {
                        values.insert(k.clone(), f);
                    }
                }
                _ => {}
            }
        }
        match state.map.encode(&values, &alarms) {
            Ok(image) => {
                *state.image.write().unwrap_or_else(PoisonError::into_inner) = image;
            }
            Err(e) => debug!(serial = %m.serial, error = %e, "value does not fit its register"),
        }
    }
}

/// The tokio-modbus service of one device.
#[derive(Clone)]
struct DeviceService(Arc<DeviceState>);

type Answer = Result<Option<Response>, ExceptionCode>;

impl tokio_modbus::server::Service for DeviceService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let behaviour = *self
            .0
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let answer = if req.slave != self.0.unit {
            Err(ExceptionCode::GatewayTargetDevice)
        } else {
            self.0.answer(&req.request)
        };
        Box::pin(async move {
            match behaviour {
                Behaviour::Normal => answer.map(Some),
                Behaviour::Silent => Ok(None),
                Behaviour::Exception(code) => Err(ExceptionCode::new(code)),
                Behaviour::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    answer.map(Some)
                }
                Behaviour::Garbage => answer.map(|r| Some(garbage(r))),
            }
        })
    }
}

fn garbage(r: Response) -> Response {
    match r {
        Response::ReadHoldingRegisters(w) => Response::ReadHoldingRegisters(vec![0xFFFF; w.len()]),
        Response::ReadInputRegisters(w) => Response::ReadInputRegisters(vec![0xFFFF; w.len()]),
        Response::ReadCoils(b) => Response::ReadCoils(vec![true; b.len()]),
        Response::ReadDiscreteInputs(b) => Response::ReadDiscreteInputs(vec![true; b.len()]),
        other => other,
    }
}

impl DeviceState {
    /// Reads registers or bits from the image; anything outside the map is an illegal
    /// data address, any other function an illegal function.
    fn answer(&self, req: &Request<'_>) -> Result<Response, ExceptionCode> {
        let (function, address, count) = match req {
            Request::ReadHoldingRegisters(a, n) => (Function::Holding, *a, *n),
            Request::ReadInputRegisters(a, n) => (Function::Input, *a, *n),
            Request::ReadCoils(a, n) => (Function::Coil, *a, *n),
            Request::ReadDiscreteInputs(a, n) => (Function::Discrete, *a, *n),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        if count == 0 || count > function.max_per_read() {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let image = self.image.read().unwrap_or_else(PoisonError::into_inner);
        let (start, end) = (u32::from(address), u32::from(address) + u32::from(count));
        for (block, data) in self.map.reads.iter().zip(image.iter()) {
            let (b_start, b_end) = (
                u32::from(block.address),
                u32::from(block.address) + u32::from(block.count),
            );
            if block.function != function || start < b_start || end > b_end {
                continue;
            }
            let range = (start - b_start) as usize..(end - b_start) as usize;
            return Ok(match (function, data) {
                (Function::Holding, BlockData::Words(w)) => {
                    Response::ReadHoldingRegisters(w[range].to_vec())
                }
                (Function::Input, BlockData::Words(w)) => {
                    Response::ReadInputRegisters(w[range].to_vec())
                }
                (Function::Coil, BlockData::Bits(b)) => Response::ReadCoils(b[range].to_vec()),
                (Function::Discrete, BlockData::Bits(b)) => {
                    Response::ReadDiscreteInputs(b[range].to_vec())
                }
                _ => return Err(ExceptionCode::ServerDeviceFailure),
            });
        }
        Err(ExceptionCode::IllegalDataAddress)
    }
}

async fn serve(listener: TcpListener, state: Arc<DeviceState>, stop: CancellationToken) {
    let service = DeviceService(state);
    let on_connected = move |stream, addr| {
        let service = service.clone();
        async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(service.clone()))) }
    };
    let on_error = |e: io::Error| debug!(error = %e, "simulated Modbus connection ended");
    if let Err(e) = Server::new(listener)
        .serve_until(&on_connected, on_error, stop.cancelled_owned())
        .await
    {
        warn!(error = %e, "simulated Modbus device stopped serving");
    }
}
