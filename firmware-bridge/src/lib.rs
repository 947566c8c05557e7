//! The firmware bridge (Modbus TCP/RTU polling with tokio-modbus, register maps, durable outbox, MQTT publish) will live here; see the firmware-bridge issue. Nothing here claims to work yet.
