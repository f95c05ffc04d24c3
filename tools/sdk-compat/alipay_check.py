"""Drives paymux-sim's Alipay gateway with Alipay's official Python SDK
(`alipay-sdk-python`): its own request signing, its own answer verification,
and its own signature check on the async notify.

Usage: alipay_check.py ROOT_URL   (the simulator's root, e.g. http://127.0.0.1:9000)

One workaround, outside the protocol: the SDK's HTTP helper cannot reach a
gateway on a non-default port (it connects to port 80/443 whatever the URL
says, then appends the port to the URL as an int and raises TypeError). The
check replaces that one helper with a copy that honours the port. Signing,
parameters and verification are the SDK's, unchanged.
"""

import http.server
import json
import sys
import threading
import time
import urllib.parse
import urllib.request

import rsa
from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.domain.AlipayTradeAppPayModel import AlipayTradeAppPayModel
from alipay.aop.api.domain.AlipayTradeCloseModel import AlipayTradeCloseModel
from alipay.aop.api.domain.AlipayTradeCreateModel import AlipayTradeCreateModel
from alipay.aop.api.domain.AlipayTradePayModel import AlipayTradePayModel
from alipay.aop.api.domain.AlipayTradePrecreateModel import AlipayTradePrecreateModel
from alipay.aop.api.domain.AlipayTradeQueryModel import AlipayTradeQueryModel
from alipay.aop.api.domain.AlipayTradeWapPayModel import AlipayTradeWapPayModel
from alipay.aop.api.request.AlipayTradeAppPayRequest import AlipayTradeAppPayRequest
from alipay.aop.api.request.AlipayTradeCloseRequest import AlipayTradeCloseRequest
from alipay.aop.api.request.AlipayTradeCreateRequest import AlipayTradeCreateRequest
from alipay.aop.api.request.AlipayTradePayRequest import AlipayTradePayRequest
from alipay.aop.api.request.AlipayTradePrecreateRequest import AlipayTradePrecreateRequest
from alipay.aop.api.request.AlipayTradeQueryRequest import AlipayTradeQueryRequest
from alipay.aop.api.request.AlipayTradeWapPayRequest import AlipayTradeWapPayRequest
from alipay.aop.api.util import SignatureUtils, WebUtils


def _connection_honouring_port(url, query_string, timeout):
    import http.client as httplib

    parts = urllib.parse.urlparse(url)
    cls = httplib.HTTPSConnection if parts.scheme == "https" else httplib.HTTPConnection
    connection = cls(host=parts.hostname, port=parts.port, timeout=timeout)
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{query_string}", connection


WebUtils.get_http_connection = _connection_honouring_port

failures = []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(name)


def pem_body(pem):
    return "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))


def post_json(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class NotifyHandler(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        NotifyHandler.received.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"success")

    def log_message(self, *args):
        pass


def main():
    root = sys.argv[1].rstrip("/")
    sim = root + "/sim/alipay"

    public, private = rsa.newkeys(2048)
    app_id = "2021" + str(int(time.time() * 1000))[-12:]
    status, registered = post_json(
        sim + "/merchants",
        {"app_id": app_id, "app_public_key": public.save_pkcs1().decode()},
    )
    check("register app", status == 201, registered)
    with urllib.request.urlopen(sim + "/platform", timeout=10) as r:
        platform = json.loads(r.read())

    config = AlipayClientConfig()
    config.server_url = sim + "/gateway.do"
    config.app_id = app_id
    config.app_private_key = pem_body(private.save_pkcs1().decode())
    config.alipay_public_key = pem_body(platform["alipay_public_key"])
    client = DefaultAlipayClient(alipay_client_config=config)

    server = http.server.HTTPServer(("127.0.0.1", 0), NotifyHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    notify_url = f"http://127.0.0.1:{server.server_port}/notify"

    def execute(request):
        return json.loads(client.execute(request))

    def query(no):
        m = AlipayTradeQueryModel()
        m.out_trade_no = no
        return execute(AlipayTradeQueryRequest(biz_model=m))

    # QR code (precreate), then the payer pays and the notify verifies.
    no = f"sdk_qr_{app_id}"
    m = AlipayTradePrecreateModel()
    m.out_trade_no = no
    m.total_amount = "19.99"
    m.subject = "paymux SDK 检查 & co"
    req = AlipayTradePrecreateRequest(biz_model=m)
    req.notify_url = notify_url
    r = execute(req)
    check("precreate answers a qr_code (answer signature verified by the SDK)",
          r.get("code") == "10000" and r.get("qr_code", "").startswith("https://"), r)
    r = query(no)
    check("query: WAIT_BUYER_PAY", r.get("trade_status") == "WAIT_BUYER_PAY", r)
    status, paid = post_json(sim + "/pay", {"out_trade_no": no})
    check("payer pays", status == 200, paid)
    check("notify delivered", len(NotifyHandler.received) == 1, NotifyHandler.received)
    if NotifyHandler.received:
        params = dict(urllib.parse.parse_qsl(NotifyHandler.received[0].decode(), keep_blank_values=True))
        sign = params.pop("sign")
        params.pop("sign_type")
        content = SignatureUtils.get_sign_content(params).encode()
        ok = SignatureUtils.verify_with_rsa(config.alipay_public_key, content, sign)
        check("notify signature verifies with the SDK", ok)
        check("notify fields", params.get("trade_status") == "TRADE_SUCCESS"
              and params.get("total_amount") == "19.99" and params.get("app_id") == app_id, params)
    r = query(no)
    check("query: TRADE_SUCCESS", r.get("trade_status") == "TRADE_SUCCESS"
          and r.get("total_amount") == "19.99", r)
    m = AlipayTradeCloseModel()
    m.out_trade_no = no
    r = execute(AlipayTradeCloseRequest(biz_model=m))
    check("a paid trade cannot be closed", r.get("sub_code") == "ACQ.TRADE_STATUS_ERROR", r)

    # Mini-program create, then close.
    no = f"sdk_mini_{app_id}"
    m = AlipayTradeCreateModel()
    m.out_trade_no = no
    m.total_amount = "0.01"
    m.subject = "mini"
    m.buyer_id = "2088102534368455"
    m.product_code = "JSAPI_PAY"
    r = execute(AlipayTradeCreateRequest(biz_model=m))
    check("create answers a trade_no", r.get("code") == "10000" and r.get("trade_no"), r)
    m = AlipayTradeCloseModel()
    m.out_trade_no = no
    r = execute(AlipayTradeCloseRequest(biz_model=m))
    check("close", r.get("code") == "10000", r)
    check("query: TRADE_CLOSED", query(no).get("trade_status") == "TRADE_CLOSED")

    # Barcode.
    m = AlipayTradePayModel()
    m.out_trade_no = f"sdk_bar_{app_id}"
    m.total_amount = "5.00"
    m.subject = "bar"
    m.scene = "bar_code"
    m.auth_code = "286212345678901234"
    r = execute(AlipayTradePayRequest(biz_model=m))
    check("barcode pay charges at once", r.get("code") == "10000" and r.get("trade_no"), r)

    # WAP: the SDK's GET URL opens the simulator's cashier.
    m = AlipayTradeWapPayModel()
    m.out_trade_no = f"sdk_wap_{app_id}"
    m.total_amount = "1.00"
    m.subject = "wap"
    m.product_code = "QUICK_WAP_WAY"
    url = client.page_execute(AlipayTradeWapPayRequest(biz_model=m), http_method="GET")
    with urllib.request.urlopen(url, timeout=10) as r:
        page = r.read().decode()
    check("wap URL opens the cashier", "cashier" in page and m.out_trade_no in page, page[:300])

    # App: the SDK's order string, submitted to the gateway as the app SDK does.
    m = AlipayTradeAppPayModel()
    m.out_trade_no = f"sdk_app_{app_id}"
    m.total_amount = "2.00"
    m.subject = "app"
    m.product_code = "QUICK_MSECURITY_PAY"
    order_string = client.sdk_execute(AlipayTradeAppPayRequest(biz_model=m))
    req = urllib.request.Request(
        config.server_url, data=order_string.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as r:
        answer = r.read().decode()
    check("app order string accepted", '"code":"10000"' in answer, answer)

    server.shutdown()
    print(f"{'FAILED' if failures else 'OK'}: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
