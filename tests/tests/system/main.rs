//! System tests: the real `fleetpulse` binary on free ports, real MQTT clients
//! (`mosquitto_pub`, rumqttc, firmware-like publishers), a real Mosquitto broker for
//! external mode, and assertions through the HTTP API (the exactly-once checks over
//! 100 000 readings read the SQLite file once the process has stopped).

mod backtest;
mod bridge;
mod browser;
mod cli;
mod contract;
mod crash;
mod delivery;
mod demo;
mod dispatch;
mod e2e;
mod fd001;
mod history;
mod hostile;
mod nothing_stops;
mod outage;
mod predict;
mod refused;
mod reliability;
mod restart;
mod security;
mod sink;
mod streams;
