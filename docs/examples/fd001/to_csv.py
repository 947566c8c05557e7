#!/usr/bin/env python3
"""NASA C-MAPSS FD001 -> fleetpulse import CSVs (stdlib only).

    python3 docs/examples/fd001/to_csv.py SRC OUT [--cycle-hours H] [--start T]
                                          [--test-offset-days D] [--test-failures]

Training unit u becomes device FD001-%03d, commissioned at START (default
2024-01-01T00:00:00Z) + (u-1) days; cycle c becomes a reading at commissioned + c x H hours
(default H = 1: one cycle an hour) with runtime_hours = c x H, setting_1..3 and
s_1..s_21; its last cycle becomes a failure of component `engine`, mode
`hpc_degradation`. Test units become FD001-T%03d, commissioned D days after START (default
152) + (u-1) days, telemetry only: engines still in service at their last row. With
--test-failures, each test unit also gets its failure where RUL_FD001 puts it (last cycle +
RUL cycles), for backtests; the engine reports nothing in between. H = 24 (one cycle a
day) suits the predictors, whose features and warning horizons are in days
(docs/examples/fd001/README.md, "Backtest"). Writes devices.csv, telemetry.csv and
failures.csv in OUT.
"""
import argparse, csv, datetime as dt, gzip, os

p = argparse.ArgumentParser()
p.add_argument("src")
p.add_argument("out")
p.add_argument("--cycle-hours", type=float, default=1.0)
p.add_argument("--start", default="2024-01-01T00:00:00Z")
p.add_argument("--test-offset-days", type=int, default=152)
p.add_argument("--test-failures", action="store_true")
a = p.parse_args()
start = dt.datetime.fromisoformat(a.start.replace("Z", "+00:00"))
os.makedirs(a.out, exist_ok=True)
fields = ["setting_1", "setting_2", "setting_3"] + [f"s_{i}" for i in range(1, 22)]
iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
hours = lambda c: int(c * a.cycle_hours) if float(c * a.cycle_hours).is_integer() else c * a.cycle_hours
at = lambda comm, c: iso(comm + dt.timedelta(hours=c * a.cycle_hours))
rul = []
if a.test_failures:
    with gzip.open(f"{a.src}/RUL_FD001.txt.gz", "rt") as fh:
        rul = [int(line) for line in fh if line.strip()]
with open(f"{a.out}/devices.csv", "w", newline="") as d, open(f"{a.out}/telemetry.csv", "w", newline="") as t, \
        open(f"{a.out}/failures.csv", "w", newline="") as f:
    d, t, f = csv.writer(d, lineterminator="\n"), csv.writer(t, lineterminator="\n"), csv.writer(f, lineterminator="\n")
    d.writerow(["serial", "model", "commissioned_at"])
    t.writerow(["serial", "at", "runtime_hours"] + fields)
    f.writerow(["serial", "at", "runtime_hours", "component", "failure_mode"])
    for name, fmt, first in [("train", "FD001-%03d", start),
                             ("test", "FD001-T%03d", start + dt.timedelta(days=a.test_offset_days))]:
        last = {}
        with gzip.open(f"{a.src}/{name}_FD001.txt.gz", "rt") as fh:
            for line in fh:
                v = line.split()
                if not v:
                    continue
                u, c = int(v[0]), int(v[1])
                serial, comm = fmt % u, first + dt.timedelta(days=u - 1)
                if u not in last:
                    d.writerow([serial, "CMAPSS-FD001", iso(comm)])
                t.writerow([serial, at(comm, c), hours(c)] + v[2:26])
                last[u] = (serial, comm, c)
        for u, (serial, comm, c) in sorted(last.items()):
            if name == "train":
                f.writerow([serial, at(comm, c), hours(c), "engine", "hpc_degradation"])
            elif rul:
                end = c + rul[u - 1]
                f.writerow([serial, at(comm, end), hours(end), "engine", "hpc_degradation"])
