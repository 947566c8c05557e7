// The pages in a real headless Chromium (Debian's `chromium`, driven by playwright-core),
// against a running `fleetpulse demo`. Run by the system test
// `pages_work_in_a_real_browser` (tests/tests/system/browser.rs), which starts the demo
// and passes:
//   FLEETPULSE_URL   the demo's HTTP address, e.g. http://127.0.0.1:8080
//   FLEETPULSE_MQTT  its built-in device endpoint, host:port
//   SCREENSHOTS      where to save one PNG per page
//   CHROMIUM         the browser binary (default /usr/bin/chromium)
// Each step prints one line; the first failure ends the run with exit code 1.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";

const base = process.env.FLEETPULSE_URL;
const mqtt = process.env.FLEETPULSE_MQTT;
const shots = process.env.SCREENSHOTS || "screenshots";
if (!base || !mqtt) {
  console.error("FLEETPULSE_URL and FLEETPULSE_MQTT are required");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

function fail(message) {
  throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // the test runs as root in CI, where Chromium's sandbox cannot start
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 960 } });
const page = await context.newPage();
const problems = [];
page.on("console", (m) => {
  if (m.type() === "error") problems.push(`console error on ${page.url()}: ${m.text()}`);
});
page.on("pageerror", (e) => problems.push(`script error on ${page.url()}: ${e.message}`));
page.on("response", (r) => {
  if (r.status() >= 500) problems.push(`${r.status()} for ${r.url()}`);
});

function clean(step) {
  if (problems.length) fail(`${step}: ${problems.join("; ")}`);
}

async function visit(path, name, selectors) {
  const started = Date.now();
  const r = await page.goto(base + path, { waitUntil: "load" });
  if (!r || r.status() !== 200) fail(`${path}: HTTP ${r && r.status()}`);
  for (const s of selectors) {
    await page.waitForSelector(s, { timeout: 30_000 }).catch(() => fail(`${path}: no ${s}`));
  }
  await page.screenshot({ path: `${shots}/${name}.png` });
  clean(path);
  console.log(`ok ${name}: ${path} (${Date.now() - started} ms, ${selectors.length} elements)`);
}

async function json(path) {
  const r = await fetch(base + path);
  if (!r.ok) fail(`${path}: HTTP ${r.status}`);
  return r.json();
}

try {
  // 1. every page loads with its key elements and no console error
  await visit("/", "fleet", ["main[data-page=fleet]", "#fleet-tiles .tile", "#table-devices", "figure.chart svg"]);
  const devices = await json("/api/v1/devices?limit=50");
  // the device with the most to show: one with an open order if any
  const orders = await json("/api/v1/orders?limit=20");
  const serial = (orders.items[0] && orders.items[0].serial) || devices.items[0].serial;
  await visit(`/devices/${serial}`, "device", ["main[data-page=device]", "figure.chart svg", "#table-orders"]);
  await visit("/planner", "planner", ["main[data-page=planner]", ".calendar", "#table-due", "#table-models"]);
  await visit("/quality", "quality", ["main[data-page=quality]", "figure#weibull svg", "#table-mtbf", "figure#pareto svg", "figure#trend svg"]);
  await visit("/operations", "operations", ["main[data-page=operations]", "#table-dead_letters, #table-reasons, .tiles"]);

  // 2. a quality filter changes the plot: fleet → one fit per model
  const fitsBefore = await page.goto(base + "/quality").then(() => page.locator("figure#weibull svg .fit").count());
  await page.selectOption("select[name=group_by]", "model");
  await Promise.all([page.waitForURL(/group_by=model/), page.click("form.filters button[type=submit]")]);
  await page.waitForSelector("figure#weibull svg");
  const fitsAfter = await page.locator("figure#weibull svg .fit").count();
  const legend = await page.locator("figure#weibull").innerText();
  if (!(fitsAfter > fitsBefore)) fail(`grouping by model: ${fitsBefore} fitted lines before, ${fitsAfter} after`);
  if (!/model=/.test(legend)) fail(`the legend names no model: ${legend.slice(0, 200)}`);
  await page.screenshot({ path: `${shots}/quality-by-model.png` });
  clean("quality filter");
  console.log(`ok quality filter: ${fitsBefore} → ${fitsAfter} fitted lines`);

  // 3. a critical alarm published over MQTT appears on the dispatch page without a reload
  await visit("/dispatch", "dispatch", ["main[data-page=dispatch]", "#table-queue, #queue-live .empty"]);
  await page.waitForSelector(".live-state.on", { timeout: 30_000 }).catch(() => fail("the order stream did not connect"));
  const marker = await page.evaluate(() => (window.__fpMarker = Math.random()));
  const health = await json("/health");
  const newSerial = `BRW-${Date.now() % 1_000_000}`;
  const reading = { seq: 1, ts: health.clock.now, model: "OC-5A", alarms: ["E101"], filter_life_pct: 80, runtime_hours: 10 };
  const [host, port] = [mqtt.slice(0, mqtt.lastIndexOf(":")), mqtt.slice(mqtt.lastIndexOf(":") + 1)];
  execFileSync("mosquitto_pub", ["-h", host, "-p", port, "-i", newSerial, "-q", "1", "-t", `fleetpulse/v1/devices/${newSerial}/telemetry`, "-m", JSON.stringify(reading)]);
  await page.waitForSelector(`ol.changes li:has-text("${newSerial}")`, { timeout: 60_000 }).catch(() => fail(`no live change for ${newSerial}`));
  await page.waitForSelector(`#queue-live a:has-text("${newSerial}")`, { timeout: 30_000 }).catch(() => fail(`the queue did not show ${newSerial}`));
  if ((await page.evaluate(() => window.__fpMarker)) !== marker) fail("the page reloaded");
  await page.screenshot({ path: `${shots}/dispatch-live.png` });
  clean("live alarm");
  console.log(`ok live: the order of ${newSerial} appeared without a reload`);

  // 4. the order is acknowledged and completed from the page
  const row = page.locator("#queue-live tr", { has: page.locator(`a:has-text("${newSerial}")`) });
  await Promise.all([page.waitForURL(/\/dispatch\/orders\/\d+$/), row.locator('a[href^="/dispatch/orders/"]').first().click()]);
  const steps = [
    ["Acknowledge", async () => {}, "acknowledged"],
    ["Assign", async () => page.fill("input[name=engineer]", "eng-browser"), "assigned"],
    ["Start work", async () => {}, "in progress"],
    ["Complete", async () => { await page.check("input[name=failure_confirmed]"); await page.fill("input[name=fault_code]", "E101"); await page.fill("input[name=labour_minutes]", "95"); }, "completed"],
  ];
  for (const [button, fill, status] of steps) {
    await fill();
    await Promise.all([page.waitForURL(/done=/), page.click(`button:has-text("${button}")`)]);
    const notice = await page.locator(".notice").innerText();
    if (!notice.includes(status)) fail(`${button}: the page says ${JSON.stringify(notice)}`);
    clean(button);
    console.log(`ok ${button}: ${notice}`);
  }
  await page.screenshot({ path: `${shots}/order-completed.png`, fullPage: true });
  const id = page.url().match(/orders\/(\d+)/)[1];
  const stored = await json(`/api/v1/orders/${id}`);
  if (stored.status !== "completed" || !stored.outcome || !stored.outcome.failure_confirmed) fail(`order ${id} in the API: ${JSON.stringify(stored).slice(0, 300)}`);
  console.log(`ok the API has order ${id} completed with its outcome`);
} catch (e) {
  await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
  console.error(`FAILED: ${e.message}`);
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log("all browser checks passed");
