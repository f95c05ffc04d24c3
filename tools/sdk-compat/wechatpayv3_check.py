#!/usr/bin/env python3
"""Drives the third-party `wechatpayv3` SDK (PyPI) against a running paymux-sim.

Usage: wechatpayv3_check.py SIM_BASE_URL      e.g. http://127.0.0.1:9000

SIM_BASE_URL is the simulator's root. The control endpoints are used at
`SIM_BASE_URL/sim/wechat/...`; the SDK is pointed at SIM_BASE_URL itself, where
the simulator also serves WeChat's `/v3/...` API.

Prints one line per check ("PASS name" / "FAIL name: why") and a closing
"N passed, N failed" line; exits 1 if any check failed. Starts no simulator.
"""

import http.server
import json
import queue
import secrets
import string
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import wechatpayv3
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3 import core as wxcore

RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(bool(ok))
    line = ("PASS " if ok else "FAIL ") + name
    if detail:
        line += (": " if not ok else " — ") + str(detail)
    print(line, flush=True)
    return ok


def finish():
    passed = sum(RESULTS)
    failed = len(RESULTS) - passed
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


def run(name, fn):
    """Runs one check; an exception is a failure, not a crash."""
    global CURRENT
    CURRENT = name
    try:
        ok, detail = fn()
    except Exception as e:  # noqa: BLE001 - any SDK error fails this check only
        ok, detail = False, f"{type(e).__name__}: {e}"
        traceback.print_exc(file=sys.stderr)
    return check(name, ok, detail)


def http_json(method, url, payload=None, timeout=30):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


# ---------------------------------------------------------------------------
# Pointing the SDK at the simulator.
#
# wechatpayv3 has no base-URL option: Core.__init__ hard-codes
# `self._gate_way = 'https://api.mch.weixin.qq.com'` and, in certificate mode,
# downloads the platform certificates from it before returning. The least
# invasive override is to replace that one attribute on the class with a
# property that always answers the simulator's URL (the constructor's
# assignment is ignored). Nothing else in the SDK is touched.
# ---------------------------------------------------------------------------
def point_sdk_at(base):
    wxcore.Core._gate_way = property(lambda self: base, lambda self, value: None)


# Counts every response-signature verification the SDK performs, so the check
# can prove the SDK really verified (and accepted) each answer.
VERIFICATIONS = []  # (check name, accepted, headers, body)
CURRENT = None


def record_verifications():
    original = wxcore.Core._verify_signature

    def wrapped(self, headers, body):
        ok = original(self, headers, body)
        VERIFICATIONS.append((CURRENT, ok, dict(headers), body))
        return ok

    wxcore.Core._verify_signature = wrapped
    return original


class NotifyServer:
    """A stdlib HTTP server standing in for the merchant's notify_url."""

    def __init__(self):
        received = self.received = queue.Queue()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                received.put((self.path, self.headers, body))
                reply = b'{"code":"SUCCESS","message":"OK"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/wxpay/notify"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def take(self, timeout=15):
        return self.received.get(timeout=timeout)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def new_out_trade_no(tag):
    return f"SDK{tag}{int(time.time())}{secrets.token_hex(4)}"[:32]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    base = sys.argv[1].rstrip("/")
    control = base + "/sim/wechat"
    print(f"wechatpayv3 {wechatpayv3.__version__} against {base}", flush=True)

    # --- merchant identity -------------------------------------------------
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )
    serial_no = secrets.token_hex(20).upper()
    alphabet = string.ascii_letters + string.digits
    apiv3_key = "".join(secrets.choice(alphabet) for _ in range(32))
    mchid = str(1900000000 + secrets.randbelow(99999999))
    appid = "wx" + secrets.token_hex(8)

    status, body = http_json(
        "POST",
        control + "/merchants",
        {
            "mchid": mchid,
            "serial_no": serial_no,
            "public_key_pem": public_pem,
            "apiv3_key": apiv3_key,
        },
    )
    if not check("register merchant", status in (200, 201), f"HTTP {status} {body}"):
        return finish()
    status, platform = http_json("GET", control + "/platform")
    if not check("read platform info", status == 200 and platform.get("serial_no"), f"HTTP {status}"):
        return finish()

    notify = NotifyServer()
    point_sdk_at(base)
    record_verifications()

    # --- client in certificate mode (downloads /v3/certificates itself) -----
    wxpay = None

    def make_client():
        nonlocal wxpay
        wxpay = WeChatPay(
            wechatpay_type=WeChatPayType.NATIVE,
            mchid=mchid,
            private_key=private_pem,
            cert_serial_no=serial_no,
            appid=appid,
            apiv3_key=apiv3_key,
            notify_url=notify.url,
            timeout=(5, 30),
        )
        certs = wxpay._core._certificates
        serials = [format(c.serial_number, "X") for c in certs]
        ok = len(certs) == 1 and int(platform["serial_no"], 16) == certs[0].serial_number
        return ok, f"platform certificate {serials} downloaded and decrypted"

    if not run("SDK init (certificate mode, GET /v3/certificates)", make_client):
        notify.close()
        return finish()

    def expect(code, message, want_code, want_fields=()):
        data = json.loads(message) if isinstance(message, str) and message else {}
        missing = [f for f in want_fields if not data.get(f)]
        ok = code == want_code and not missing
        return ok, data, (f"HTTP {code} {message!r}" if not ok else "")

    orders = {}

    def prepay(kind, pay_type, field, extra, description=None):
        def go():
            no = new_out_trade_no(kind)
            code, message = wxpay.pay(
                description=description or f"paymux sdk-compat {kind}",
                out_trade_no=no,
                amount={"total": 101, "currency": "CNY"},
                pay_type=pay_type,
                attach="sdk-compat",
                **extra,
            )
            ok, data, why = expect(code, message, 200, (field,))
            orders[kind] = no
            return ok, why or f"{field}={data[field][:48]}"

        return go

    run(
        "JSAPI/mini-program prepay",
        # Non-ASCII description: the SDK signs json.dumps() output, whose
        # \uXXXX escapes the simulator must verify byte-for-byte.
        prepay(
            "JSAPI",
            WeChatPayType.MINIPROG,
            "prepay_id",
            {"payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}},
            description="腾讯充值中心-QQ会员充值",
        ),
    )
    run("Native prepay", prepay("NATIVE", WeChatPayType.NATIVE, "code_url", {}))
    run(
        "H5 prepay",
        prepay(
            "H5",
            WeChatPayType.H5,
            "h5_url",
            {"scene_info": {"payer_client_ip": "127.0.0.1", "h5_info": {"type": "Wap"}}},
        ),
    )
    run("App prepay", prepay("APP", WeChatPayType.APP, "prepay_id", {}))

    def query_state(no, want_state):
        code, message = wxpay.query(out_trade_no=no)
        ok, data, why = expect(code, message, 200, ("trade_state",))
        ok = ok and data.get("trade_state") == want_state and data.get("out_trade_no") == no
        return ok, why or f"trade_state={data.get('trade_state')}"

    run("query by out_trade_no (NOTPAY)", lambda: query_state(orders.get("NATIVE", "missing"), "NOTPAY"))

    def query_unknown():
        # Error answers are not signature-checked by the SDK (2xx only), but
        # their status and WeChat error code reach the caller.
        code, message = wxpay.query(out_trade_no=new_out_trade_no("NONE"))
        data = json.loads(message) if isinstance(message, str) and message else {}
        return code == 404 and data.get("code") == "ORDER_NOT_EXIST", f"HTTP {code} {data.get('code')}"

    run("query unknown order (404 ORDER_NOT_EXIST)", query_unknown)

    def close_order():
        code, message = wxpay.close(out_trade_no=orders.get("APP", "missing"))
        return code == 204, f"HTTP {code}" + ("" if code == 204 else f" {message!r}")

    run("close (204, signed empty body)", close_order)
    run("query after close (CLOSED)", lambda: query_state(orders.get("APP", "missing"), "CLOSED"))

    # --- payment callback ---------------------------------------------------
    def pay_and_callback():
        no = orders.get("JSAPI", "missing")
        status, outcome = http_json("POST", control + "/pay", {"out_trade_no": no, "mchid": mchid})
        if status != 200:
            return False, f"/sim/wechat/pay HTTP {status} {outcome}"
        attempts = outcome.get("callbacks", [])
        if not attempts or attempts[0].get("status") != 200:
            return False, f"callback not delivered: {attempts}"
        _, headers, raw = notify.take()
        result = wxpay.callback(headers, raw)
        if not result:
            return False, "wxpay.callback() returned None (signature or decryption failed)"
        res = result.get("resource", {})
        ok = (
            result.get("event_type") == "TRANSACTION.SUCCESS"
            and res.get("out_trade_no") == no
            and res.get("trade_state") == "SUCCESS"
            and res.get("transaction_id") == outcome.get("transaction_id")
            and res.get("mchid") == mchid
            and res.get("appid") == appid
            and res.get("amount", {}).get("total") == 101
        )
        return ok, f"event {result.get('event_type')}, transaction {res.get('transaction_id')}, trade_state {res.get('trade_state')}"

    run("pay → callback verified+decrypted by wxpay.callback()", pay_and_callback)
    run("query after pay (SUCCESS)", lambda: query_state(orders.get("JSAPI", "missing"), "SUCCESS"))

    def faulty_callback(fault):
        def go():
            no = orders.get("JSAPI", "missing")
            status, outcome = http_json(
                "POST", control + "/pay", {"out_trade_no": no, "mchid": mchid, "fault": fault}
            )
            if status != 200:
                return False, f"/sim/wechat/pay HTTP {status} {outcome}"
            _, headers, raw = notify.take()
            result = wxpay.callback(headers, raw)
            return result is None, "rejected by the SDK" if result is None else f"accepted: {result}"

        return go

    run("callback with bad signature rejected", faulty_callback("bad_signature"))
    run("callback with tampered ciphertext rejected", faulty_callback("tampered_ciphertext"))

    # --- the SDK's own response verification ----------------------------------
    def all_verified():
        # Every SDK call above except the certificate download (fetched with
        # skip_verify=True; the SDK trusts it because it decrypts with the
        # APIv3 key) went through _verify_signature: 8 API answers (4 prepays,
        # 3 queries, 1 close) and 3 callbacks. Only the bad-signature callback
        # may be refused (the tampered one is correctly signed and fails at
        # decryption instead).
        seen = [(name, ok) for name, ok, _, _ in VERIFICATIONS]
        refused = [name for name, ok in seen if not ok]
        want_refused = ["callback with bad signature rejected"]
        ok = len(seen) == 11 and refused == want_refused
        detail = f"{len(seen) - len(refused)} of {len(seen)} signed answers/callbacks accepted"
        if not ok:
            detail += f"; refused: {refused}"
        return ok, detail

    run("SDK response-signature verification ran on every answer", all_verified)

    def verifier_is_real():
        # Re-run the SDK's verifier on a recorded answer with one byte changed:
        # it must refuse, or the acceptances above prove nothing.
        ok_answers = [v for v in VERIFICATIONS if v[1] and v[3]]
        if not ok_answers:
            return False, "no recorded answer"
        _, _, headers, body = ok_answers[0]
        tampered = body[:-1] + ("}" if body[-1] != "}" else " ")
        rejected = not wxcore.Core._verify_signature(wxpay._core, headers, tampered)
        return rejected, "tampered answer rejected"

    run("SDK verifier rejects a tampered answer", verifier_is_real)

    def query_by_transaction_id():
        no = orders.get("JSAPI", "missing")
        code, message = wxpay.query(out_trade_no=no)
        tid = json.loads(message).get("transaction_id") if code == 200 else None
        if not tid:
            return False, f"no transaction_id for the paid order: HTTP {code} {message!r}"
        code, message = wxpay.query(transaction_id=tid)
        found = json.loads(message) if code == 200 else {}
        ok = found.get("out_trade_no") == no and found.get("trade_state") == "SUCCESS"
        return ok, f"HTTP {code}, out_trade_no {found.get('out_trade_no')}"

    run("query by transaction_id (GET /v3/pay/transactions/id/...)", query_by_transaction_id)

    notify.close()
    return finish()


if __name__ == "__main__":
    sys.exit(main())
