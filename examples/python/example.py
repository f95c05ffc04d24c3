# paymux merchant API example: create, query, pay (sandbox), notification, refund.
# Standard library only. Config: PAYMUX_URL, PAYMUX_APP_ID, PAYMUX_APP_SECRET.
import base64, hashlib, hmac, http.server, json, os, queue, secrets, sys, threading, time
import signal, urllib.error, urllib.request

BASE, APP_ID, SECRET = (os.environ.get(v, "") for v in ("PAYMUX_URL", "PAYMUX_APP_ID", "PAYMUX_APP_SECRET"))
BASE = BASE.rstrip("/")
if not (BASE and APP_ID and SECRET):
    sys.exit("FAIL set PAYMUX_URL, PAYMUX_APP_ID and PAYMUX_APP_SECRET")
WINDOW = 300  # seconds; the same window paymux allows for requests
DEADLINE = time.monotonic() + 60
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL overall timeout (60 s)", file=sys.stderr), os._exit(1)))
signal.alarm(65)  # a hard stop even if a call hangs
# No proxy, whatever the environment says: every URL here is local.
http_open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


def mac(*parts: bytes) -> str:
    msg = b"".join(p + b"\n" for p in parts)
    return base64.b64encode(hmac.new(SECRET.encode(), msg, hashlib.sha256).digest()).decode()


def signed_ok(headers, body: bytes) -> bool:
    # paymux signs answers and notifications over "TIMESTAMP\nNONCE\nBODY\n".
    ts, nonce, sig = (headers.get(h, "") for h in ("Paymux-Timestamp", "Paymux-Nonce", "Paymux-Signature"))
    if not (ts.isdecimal() and nonce and sig) or abs(time.time() - int(ts)) > WINDOW:
        return False
    return hmac.compare_digest(mac(ts.encode(), nonce.encode(), body), sig)


def api(method: str, path: str, payload=None, expect=200):
    body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
    ts, nonce = str(int(time.time())), secrets.token_hex(16)
    headers = {"Paymux-App-Id": APP_ID, "Paymux-Timestamp": ts, "Paymux-Nonce": nonce,
               "Paymux-Signature": mac(method.encode(), path.encode(), ts.encode(), nonce.encode(), body),
               "Content-Type": "application/json"}
    req = urllib.request.Request(BASE + path, data=body if method != "GET" else None, method=method, headers=headers)
    try:
        resp = http_open(req, timeout=15)
    except urllib.error.HTTPError as e:
        resp = e
    status, raw = resp.status, resp.read()
    if not signed_ok(resp.headers, raw):
        sys.exit(f"FAIL {method} {path}: HTTP {status}, answer not signed with this app's secret: {raw.decode()}")
    if status != expect:
        sys.exit(f"FAIL {method} {path}: HTTP {status} {raw.decode()}")
    return json.loads(raw)


events, seen = queue.Queue(), set()


class Notify(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ok = self.headers.get("Paymux-App-Id") == APP_ID and signed_ok(self.headers, raw)
        self.send_response(200 if ok else 401)  # any 2xx acknowledges; anything else is retried
        self.end_headers()
        if ok:
            events.put(json.loads(raw))
        else:
            print("rejected a notification with a bad signature", file=sys.stderr)

    def log_message(self, *args):
        pass


def wait_event(kind: str, obj_id: str) -> None:
    while True:
        try:
            ev = events.get(timeout=max(0.1, DEADLINE - time.monotonic()))
        except queue.Empty:
            sys.exit(f"FAIL no {kind} notification for {obj_id} in time")
        new = ev["id"] not in seen  # delivery is at least once: drop duplicates by event id
        seen.add(ev["id"])
        if new and ev["type"] == kind and ev["data"]["id"] == obj_id:
            return print(f"verified notification {kind} {obj_id}")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Notify)
threading.Thread(target=server.serve_forever, daemon=True).start()
notify_url = f"http://127.0.0.1:{server.server_address[1]}/paymux/notify"

order_no = f"py-{int(time.time())}-{secrets.token_hex(4)}"
payment = api("POST", "/v1/payments", {
    "merchant_order_no": order_no, "amount": 1999, "channel": "wechat", "method": "native",
    "description": "2 杯咖啡 (Python example)", "notify_url": notify_url}, 201)
pid = payment["id"]
print(f"created payment {pid} {payment['status']} code_url={payment['pay_params']['code_url']}")
for path in (f"/v1/payments/{pid}", f"/v1/payments?merchant_order_no={order_no}"):
    if api("GET", path)["id"] != pid:
        sys.exit(f"FAIL GET {path} answered another payment")

# Sandbox only: play the payer at the WeChat Pay simulator (not a merchant API call, not signed).
sim = urllib.request.Request(f"{BASE}/sim/wechat/pay", data=json.dumps({"out_trade_no": pid}).encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
http_open(sim, timeout=15).read()

wait_event("payment.succeeded", pid)
paid = api("GET", f"/v1/payments/{pid}")
if paid["status"] != "succeeded":
    sys.exit(f"FAIL payment is {paid['status']}")

refund = api("POST", "/v1/refunds", {"payment_id": pid, "merchant_refund_no": f"{order_no}-r1",
                                     "amount": 500, "reason": "one cup returned"}, 201)
print(f"created refund {refund['id']} {refund['status']}")
wait_event("refund.succeeded", refund["id"])
final = api("GET", f"/v1/refunds/{refund['id']}")
if final["status"] != "succeeded":
    sys.exit(f"FAIL refund is {final['status']}")
print(f"refund {final['id']} succeeded; payment refunded_amount={api('GET', f'/v1/payments/{pid}')['refunded_amount']}")
