"""Latency from POST /api/v1/orders to its order.created event on the SSE stream."""
import http.client, json, sys, threading, time, statistics
host, port, token, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
H = {"Authorization": f"Bearer {token}"}
seen = {}
def reader():
    c = http.client.HTTPConnection(host, port)
    c.request("GET", "/api/v1/orders/stream", headers=H)
    r = c.getresponse()
    ev = None
    while True:
        line = r.readline()
        if not line:
            return
        line = line.decode().rstrip("\n")
        if line.startswith("data:"):
            d = json.loads(line[5:])
            seen[d["event"]["order_id"]] = time.perf_counter()
threading.Thread(target=reader, daemon=True).start()
time.sleep(0.5)
t_run = time.time()
lat = []
for i in range(n):
    c = http.client.HTTPConnection(host, port)
    body = json.dumps({"serial": f"OC5-B{i:05d}", "cause": f"sse_probe_{int(t_run)}_{i}", "kind": "repair", "title": "probe"})
    t0 = time.perf_counter()
    c.request("POST", "/api/v1/orders", body=body, headers={**H, "Content-Type": "application/json"})
    oid = json.loads(c.getresponse().read())["id"]
    while oid not in seen:
        time.sleep(0.001)
        if time.perf_counter() - t0 > 10:
            raise SystemExit(f"order {oid} never arrived")
    lat.append((seen[oid] - t0) * 1000)
lat.sort()
print(f"n={n} p50={statistics.median(lat):.1f}ms p99={lat[int(len(lat)*0.99)-1]:.1f}ms max={lat[-1]:.1f}ms")
