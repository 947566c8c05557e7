//! Web pages served by the binary (no CDN, no build step) and Grafana dashboard JSON will live here. Nothing here claims to work yet.
