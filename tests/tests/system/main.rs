//! System tests: the real `fleetpulse` binary on free ports, real MQTT clients
//! (`mosquitto_pub`, rumqttc, firmware-like publishers), a real Mosquitto broker for
//! external mode, and assertions through the HTTP API only.

mod cli;
mod demo;
mod dispatch;
mod e2e;
mod restart;
mod security;
mod sink;
