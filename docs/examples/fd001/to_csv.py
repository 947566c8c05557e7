#!/usr/bin/env python3
"""NASA C-MAPSS FD001 -> fleetpulse import CSVs (stdlib only).

    python3 docs/examples/fd001/to_csv.py ../shared/data/cmapss /tmp/fd001

Training unit u becomes device FD001-%03d, commissioned at 2024-01-01T00:00Z + (u-1) days;
cycle c becomes a reading at commissioned + c hours with runtime_hours = c (one cycle =
one runtime hour), setting_1..3 and s_1..s_21; its last cycle becomes a failure of
component `engine`, mode `hpc_degradation`, at runtime_hours = c. Test units become
FD001-T%03d, commissioned from 2024-06-01, telemetry only (engines still in service).
Writes devices.csv, telemetry.csv and failures.csv in OUT.
"""
import csv, datetime as dt, gzip, os, sys

src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
fields = ["setting_1", "setting_2", "setting_3"] + [f"s_{i}" for i in range(1, 22)]
iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
with open(f"{out}/devices.csv", "w", newline="") as d, open(f"{out}/telemetry.csv", "w", newline="") as t, \
        open(f"{out}/failures.csv", "w", newline="") as f:
    d, t, f = csv.writer(d, lineterminator="\n"), csv.writer(t, lineterminator="\n"), csv.writer(f, lineterminator="\n")
    d.writerow(["serial", "model", "commissioned_at"])
    t.writerow(["serial", "at", "runtime_hours"] + fields)
    f.writerow(["serial", "at", "runtime_hours", "component", "failure_mode"])
    for name, fmt, start, failed in [("train", "FD001-%03d", dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), True),
                                     ("test", "FD001-T%03d", dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc), False)]:
        last = {}
        with gzip.open(f"{src}/{name}_FD001.txt.gz", "rt") as fh:
            for line in fh:
                v = line.split()
                if not v:
                    continue
                u, c = int(v[0]), int(v[1])
                serial, comm = fmt % u, start + dt.timedelta(days=u - 1)
                if u not in last:
                    d.writerow([serial, "CMAPSS-FD001", iso(comm)])
                t.writerow([serial, iso(comm + dt.timedelta(hours=c)), c] + v[2:26])
                last[u] = (serial, comm, c)
        for serial, comm, c in (last.values() if failed else []):
            f.writerow([serial, iso(comm + dt.timedelta(hours=c)), c, "engine", "hpc_degradation"])
