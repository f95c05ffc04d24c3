// paymux merchant API example: create, query, pay (sandbox), notification, refund.
// Node.js 18+, no packages. Config: PAYMUX_URL, PAYMUX_APP_ID, PAYMUX_APP_SECRET.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const BASE = (process.env.PAYMUX_URL || "").replace(/\/$/, "");
const APP_ID = process.env.PAYMUX_APP_ID, SECRET = process.env.PAYMUX_APP_SECRET;
const WINDOW = 300; // seconds; the same window paymux allows for requests
const fail = (msg) => { console.error(`FAIL ${msg}`); process.exit(1); };
if (!BASE || !APP_ID || !SECRET) fail("set PAYMUX_URL, PAYMUX_APP_ID and PAYMUX_APP_SECRET");
setTimeout(() => fail("overall timeout (60 s)"), 60_000).unref();

// base64(HMAC-SHA256(secret, part1 "\n" part2 "\n" ... partN "\n")), over bytes.
const mac = (...parts) => {
  const h = createHmac("sha256", SECRET);
  for (const p of parts) { h.update(p); h.update("\n"); }
  return h.digest("base64");
};
// Responses and notifications: base64(HMAC(secret, "TIMESTAMP\nNONCE\nBODY\n")).
const signedOk = (get, body) => {
  const [ts, nonce, sig] = ["paymux-timestamp", "paymux-nonce", "paymux-signature"].map((h) => get(h) || "");
  if (!/^\d+$/.test(ts) || !nonce || !sig || Math.abs(Date.now() / 1000 - Number(ts)) > WINDOW) return false;
  const want = Buffer.from(mac(ts, nonce, body)), got = Buffer.from(sig);
  return want.length === got.length && timingSafeEqual(want, got);
};

async function api(method, path, payload, expect = [200]) {
  const body = payload === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(payload), "utf8");
  const ts = String(Math.floor(Date.now() / 1000)), nonce = randomBytes(16).toString("hex");
  const res = await fetch(BASE + path, {
    method, body: method === "GET" ? undefined : body, signal: AbortSignal.timeout(15_000),
    headers: { "Paymux-App-Id": APP_ID, "Paymux-Timestamp": ts, "Paymux-Nonce": nonce,
      "Paymux-Signature": mac(method, path, ts, nonce, body), "Content-Type": "application/json" },
  });
  const raw = Buffer.from(await res.arrayBuffer());
  if (!signedOk((h) => res.headers.get(h), raw)) fail(`${method} ${path}: HTTP ${res.status}, answer not signed with this app's secret: ${raw}`);
  if (!expect.includes(res.status)) fail(`${method} ${path}: HTTP ${res.status} ${raw}`);
  return JSON.parse(raw);
}

// The notify_url: a local listener that checks every notification before acknowledging it.
const seen = new Set(), events = [];
const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c)).on("end", () => {
    const raw = Buffer.concat(chunks);
    const ok = req.headers["paymux-app-id"] === APP_ID && signedOk((h) => req.headers[h], raw);
    res.writeHead(ok ? 200 : 401).end(); // any 2xx acknowledges; anything else is retried
    if (!ok) return console.error("rejected a notification with a bad signature");
    const ev = JSON.parse(raw);
    if (seen.has(ev.id)) return; // delivery is at least once: drop duplicates by event id
    seen.add(ev.id);
    events.push(ev);
  });
});
async function waitEvent(type, id) {
  for (;;) {
    const i = events.findIndex((e) => e.type === type && e.data.id === id);
    if (i >= 0) { console.log(`verified notification ${type} ${id}`); return events.splice(i, 1)[0]; }
    await new Promise((r) => setTimeout(r, 50));
  }
}

await new Promise((r) => server.listen(0, "127.0.0.1", r));
const notifyUrl = `http://127.0.0.1:${server.address().port}/paymux/notify`;

const orderNo = `node-${Math.floor(Date.now() / 1000)}-${randomBytes(4).toString("hex")}`;
const payment = await api("POST", "/v1/payments", {
  merchant_order_no: orderNo, amount: 1999, channel: "wechat", method: "native",
  description: "2 杯咖啡 (Node.js example)", notify_url: notifyUrl }, [201]);
const pid = payment.id;
console.log(`created payment ${pid} ${payment.status} code_url=${payment.pay_params.code_url}`);
for (const path of [`/v1/payments/${pid}`, `/v1/payments?merchant_order_no=${orderNo}`])
  if ((await api("GET", path)).id !== pid) fail(`GET ${path} answered another payment`);

// Sandbox only: play the payer at the WeChat Pay simulator (not a merchant API call, not signed).
const sim = await fetch(`${BASE}/sim/wechat/pay`, { method: "POST", headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ out_trade_no: pid }), signal: AbortSignal.timeout(15_000) });
if (!sim.ok) fail(`simulator pay: HTTP ${sim.status} ${await sim.text()}`);

await waitEvent("payment.succeeded", pid);
const paid = await api("GET", `/v1/payments/${pid}`);
if (paid.status !== "succeeded") fail(`payment is ${paid.status}`);

const refund = await api("POST", "/v1/refunds", { payment_id: pid, merchant_refund_no: `${orderNo}-r1`,
  amount: 500, reason: "one cup returned" }, [201]);
console.log(`created refund ${refund.id} ${refund.status}`);
await waitEvent("refund.succeeded", refund.id);
const done = await api("GET", `/v1/refunds/${refund.id}`);
if (done.status !== "succeeded") fail(`refund is ${done.status}`);
const after = await api("GET", `/v1/payments/${pid}`);
console.log(`refund ${done.id} succeeded; payment refunded_amount=${after.refunded_amount}`);
server.close();
process.exit(0);
