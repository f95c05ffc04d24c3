//! The hosted cashier: the page behind a checkout's `cashier_url`, over real
//! HTTP on every backend, and in a real browser (Debian's Chromium driven by
//! playwright-core, `tools/browser/cashier.mjs`) as payers inside WeChat,
//! inside Alipay, on a phone and on a desktop would open it.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use common::{spawn_app, TestApp};
use paymux_server::signing;
use serde_json::{json, Value};

const DESKTOP: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const IN_WECHAT: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN";

/// A checkout whose return_url is paymux's own `/healthz` (answers anything:
/// the test reads the URL, not the page); its JSON.
async fn checkout(app: &TestApp, order_no: &str) -> Value {
    let r = app
        .client
        .post(
            "/v1/checkouts",
            &json!({
                "merchant_order_no": order_no,
                "amount": 1_888,
                "description": "一杯咖啡 <b>&</b>",
                "notify_url": app.receiver.url,
                "return_url": format!("{}/healthz?from=cashier#top", app.server.base_url()),
            }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

fn cashier_url(k: &Value) -> String {
    k["cashier_url"].as_str().unwrap().to_string()
}

/// The checkout's path and token, from its cashier URL.
fn parts(k: &Value) -> (String, String) {
    let url = url::Url::parse(&cashier_url(k)).unwrap();
    let token = url
        .query_pairs()
        .find(|(k, _)| k == "t")
        .map(|(_, v)| v.to_string())
        .unwrap();
    (url.path().to_string(), token)
}

/// Checks a signed return URL as a merchant would: the parameters, then
/// the signature over them with the app's secret. The query's pairs.
fn verified_return(app: &TestApp, url: &str) -> Vec<(String, String)> {
    let url = url::Url::parse(url).unwrap();
    assert_eq!(url.path(), "/healthz");
    assert_eq!(url.fragment(), Some("top"));
    let query = url.query().unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} in {url}"))
    };
    let signed = query
        .split_once("&paymux_timestamp=")
        .map(|(head, _)| head.strip_prefix("from=cashier&").unwrap())
        .unwrap();
    assert!(
        signing::verify_response(
            &app.client.secret,
            &get("paymux_timestamp"),
            &get("paymux_nonce"),
            signed.as_bytes(),
            &get("paymux_signature"),
        ),
        "signature of {url}"
    );
    pairs
}

on_every_backend!(
    the_cashier_offers_what_fits_and_returns_the_payer_signed,
    |db| {
        let app = spawn_app(&db, |_| {}).await;
        let k = checkout(&app, "CASHIER-1").await;
        let (path, token) = parts(&k);
        let base = app.server.base_url();
        assert_eq!(path, format!("/cashier/{}", k["id"].as_str().unwrap()));

        let page = app
            .http
            .get(cashier_url(&k))
            .header("user-agent", DESKTOP)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("script-src 'nonce-") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        assert_eq!(page.headers()["cache-control"], "no-store");
        let html = page.text().await.unwrap();
        // The merchant's text cannot break out of the page's data.
        assert!(
            !html.contains("<b>&</b>") && html.contains("\\u003cb\\u003e\\u0026"),
            "{html}"
        );
        assert!(html.contains(r#""env":"desktop""#), "{html}");
        assert!(html.contains(r#"{"channel":"wechat","method":"native"}"#));

        // A wrong token is a missing checkout.
        let wrong = app
            .http
            .get(format!("{base}{path}?t=0000"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 404);

        let pay = |ua: &'static str, body: Value| {
            let req = app
                .http
                .post(format!("{base}{path}/pay?t={token}"))
                .header("user-agent", ua)
                .json(&body);
            async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        // Never Alipay inside WeChat, even asked for by hand.
        let (status, refused) = pay(IN_WECHAT, json!({"channel": "alipay", "method": "wap"})).await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["error"]["code"], "METHOD_NOT_OFFERED");
        let (status, refused) = pay(DESKTOP, json!({"channel": "wechat", "method": "h5"})).await;
        assert_eq!(
            (status, refused["error"]["code"].clone()),
            (400, json!("METHOD_NOT_OFFERED"))
        );

        // Inside WeChat the page first goes through WeChat's web authorisation…
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = no_redirects
            .get(cashier_url(&k))
            .header("user-agent", IN_WECHAT)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        let to = r.headers()["location"].to_str().unwrap();
        assert!(
            to.starts_with(&format!(
                "{base}/sim/wechat/connect/oauth2/authorize?appid=wx"
            )) && to.contains("&scope=snsapi_base&state=")
                && to.ends_with("#wechat_redirect"),
            "{to}"
        );
        // …and a JSAPI payment needs the openid paymux learnt there, not one
        // the page makes up.
        let (status, refused) = pay(
        IN_WECHAT,
        json!({"channel": "wechat", "method": "jsapi", "openid": "o-made-up", "openid_proof": "00"}),
    )
    .await;
        assert_eq!(status, 422, "{refused}");
        assert_eq!(refused["error"]["code"], "WECHAT_OAUTH_UNAVAILABLE");
        let forged = app
            .http
            .get(format!(
                "{base}{path}/wechat?t={token}&code=abc&state=wrong"
            ))
            .header("user-agent", IN_WECHAT)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 400);

        let (status, step) = pay(DESKTOP, json!({"channel": "alipay", "method": "native"})).await;
        assert_eq!(status, 200, "{step}");
        assert_eq!(step["action"], "qr");
        assert!(step["qr_svg"].as_str().unwrap().contains("<svg"), "{step}");
        let payment_id = step["payment_id"].as_str().unwrap().to_string();
        let status_of = || {
            let req = app.http.get(format!("{base}{path}/status?t={token}"));
            async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
        };
        assert_eq!(
            status_of().await,
            json!({"status": "open", "return_url": null})
        );

        let (code, paid) = app
            .pay_at("alipay", &json!({"out_trade_no": payment_id}))
            .await;
        assert_eq!(code, 200, "{paid}");
        let mut seen = Value::Null;
        for _ in 0..100 {
            seen = status_of().await;
            if seen["status"] == "paid" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(seen["status"], "paid", "{seen}");
        let pairs = verified_return(&app, seen["return_url"].as_str().unwrap());
        let value = |name: &str| pairs.iter().find(|(k, _)| k == name).unwrap().1.clone();
        assert_eq!(value("paymux_checkout_id"), k["id"].as_str().unwrap());
        assert_eq!(value("paymux_merchant_order_no"), "CASHIER-1");
        assert_eq!(value("paymux_payment_id"), payment_id);
        assert_eq!(value("paymux_status"), "paid");
        assert_eq!(value("from"), "cashier");
        app.server.stop();
    }
);

/// Where the browser tests' tools are, if they are installed: Node.js,
/// playwright-core (`npm ci --prefix tools/browser`) and Chromium.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tools/browser/cashier.mjs");
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let ready = root
        .join("tools/browser/node_modules/playwright-core")
        .is_dir()
        && chromium.is_file()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok();
    ready.then_some((script, chromium))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_each_payer_is_offered_their_own_way_and_a_qr_payment_returns() {
    let Some((script, chromium)) = browser_tools() else {
        assert!(
            std::env::var("PAYMUX_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "the browser tests need Chromium, Node.js and `npm ci --prefix tools/browser`"
        );
        // Past the harness's capture, like the PostgreSQL skips.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED browser test: install chromium and run `npm ci --prefix tools/browser` \
              (set PAYMUX_REQUIRE_SERVICES=1 to require it)\n",
        );
        return;
    };
    let db = paymux_store::testing::sqlite().await;
    let app = spawn_app(&db, |_| {}).await;
    let k = checkout(&app, "CASHIER-BROWSER").await;
    let in_wechat = checkout(&app, "CASHIER-WECHAT").await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser");
    let mut node = std::process::Command::new("node");
    node.arg(&script)
        .env("CASHIER_URL", cashier_url(&k))
        .env("WECHAT_CASHIER_URL", cashier_url(&in_wechat))
        .env("PAYMUX_URL", app.server.base_url())
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium);
    // The server keeps running on this runtime's threads meanwhile.
    let out = tokio::task::spawn_blocking(move || node.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        result["envs"],
        json!({"wechat": "wechat", "alipay": "alipay", "mobile": "mobile", "desktop": "desktop"})
    );
    assert_eq!(
        result["offers"],
        json!({
            "wechat": ["wechat:jsapi"],
            "alipay": ["alipay:wap"],
            "mobile": ["wechat:h5", "alipay:wap", "unionpay:wap"],
            "desktop": ["wechat:native", "alipay:native", "unionpay:native", "unionpay:pc"],
        })
    );
    assert_eq!(result["simPay"], 200, "{result}");
    let pairs = verified_return(&app, result["returnedTo"].as_str().unwrap());
    assert!(pairs.contains(&(
        "paymux_payment_id".to_string(),
        result["paymentId"].as_str().unwrap().to_string()
    )));
    let r = app
        .client
        .get(&format!("/v1/checkouts/{}", k["id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(r.body["status"], "paid");
    assert_eq!(r.body["paid_payment_id"], result["paymentId"]);
    // Inside WeChat: through web authorisation back to the page, then a
    // JSAPI payment handed to WeChat's bridge, for the openid WeChat gave.
    assert_eq!(
        result["wechatLandedOn"],
        format!("/cashier/{}/wechat", in_wechat["id"].as_str().unwrap())
    );
    assert_eq!(result["wechatBridge"]["name"], "getBrandWCPayRequest");
    let bridge = &result["wechatBridge"]["params"];
    for field in [
        "appId",
        "timeStamp",
        "nonceStr",
        "package",
        "signType",
        "paySign",
    ] {
        assert!(bridge[field].is_string(), "{field}: {bridge}");
    }
    assert_eq!(result["wechatSimPay"], 200, "{result}");
    verified_return(&app, result["wechatReturnedTo"].as_str().unwrap());
    let r = app
        .client
        .get(&format!(
            "/v1/payments/{}",
            result["wechatPaymentId"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(r.body["method"], "jsapi");
    assert_eq!(r.body["status"], "succeeded");
    assert!(
        r.body["payer"]["openid"]
            .as_str()
            .unwrap()
            .starts_with("o-sim-"),
        "{}",
        r.body
    );
    for shot in [
        "wechat",
        "alipay",
        "mobile",
        "desktop",
        "desktop-qr",
        "returned",
    ] {
        assert!(
            shots.join(format!("cashier-{shot}.png")).is_file(),
            "{shot}"
        );
    }
    app.server.stop();
    db.assert_ledger_ok().await;
    db.cleanup().await;
}

const IN_ALIPAY: &str = "Mozilla/5.0 (Linux; U; Android 13; zh-CN; V2227A Build/TP1A.220624.014) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/69.0.3497.100 Mobile Safari/537.36 AlipayClient/10.5.86.8000 Language/zh-Hans";
const IN_CLOUDPAY: &str = "Mozilla/5.0 (Linux; Android 12; M2102J2SC Build/SKQ1.211006.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/95.0.4638.74 Mobile Safari/537.36 (com.unionpay.chsp) (cordova 4.5.4) (UnionPay/1.0 CloudPay) (clientVersion 321)";

on_every_backend!(
    an_aggregated_qr_code_pays_through_the_app_that_scans_it,
    |db| {
        let mut app = spawn_app(&db, |_| {}).await;
        let base = app.server.base_url();
        let r = app
            .client
            .post(
                "/v1/qr-codes",
                &json!({"name": "1 号收银台", "description": "茶馆消费", "amount": 2_500,
                    "notify_url": app.receiver.url}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        let qr = r.body.clone();
        let url = qr["url"].as_str().unwrap().to_string();
        assert_eq!(url, format!("{base}/q/{}", qr["id"].as_str().unwrap()));
        assert!(qr["qr_svg"].as_str().unwrap().contains("<svg"));
        let r = app
            .client
            .get(&format!("/v1/qr-codes/{}", qr["id"].as_str().unwrap()))
            .await
            .unwrap();
        assert_eq!((r.status, r.body["amount"].clone()), (200, json!(2_500)));

        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        // Each scan is a checkout of its own, on to its cashier page.
        let scan = |ua: &'static str| {
            let req = no_redirects.get(&url).header("user-agent", ua);
            async move {
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), 303);
                r.headers()["location"].to_str().unwrap().to_string()
            }
        };
        let first = scan(IN_ALIPAY).await;
        let second = scan(IN_CLOUDPAY).await;
        assert_ne!(first, second);
        for (cashier, ua, offered) in [
            (
                &first,
                IN_ALIPAY,
                r#"[{"channel":"alipay","method":"wap"}]"#,
            ),
            (
                &second,
                IN_CLOUDPAY,
                r#"[{"channel":"unionpay","method":"wap"}]"#,
            ),
        ] {
            assert!(
                cashier.starts_with(&format!("{base}/cashier/chk_")),
                "{cashier}"
            );
            let html = app
                .http
                .get(cashier)
                .header("user-agent", ua)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(html.contains(&format!(r#""offers":{offered}"#)), "{html}");
        }
        // Paid in Alipay: the merchant hears of it at the code's notify_url.
        let cashier = url::Url::parse(&first).unwrap();
        let token = cashier.query_pairs().next().unwrap().1.to_string();
        let step: Value = app
            .http
            .post(format!("{base}{}/pay?t={token}", cashier.path()))
            .header("user-agent", IN_ALIPAY)
            .json(&json!({"channel": "alipay", "method": "wap"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(step["action"], "redirect", "{step}");
        // The payer's app follows the signed link to Alipay, which then
        // knows the order…
        let opened = app
            .http
            .get(step["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert!(opened.status().is_success(), "{}", opened.status());
        // …and pays it.
        let (code, _) = app
            .pay_at("alipay", &json!({"out_trade_no": step["payment_id"]}))
            .await;
        assert_eq!(code, 200);
        let e = app
            .receiver
            .next(std::time::Duration::from_secs(10))
            .await
            .expect("an event");
        assert!(e.signature_ok);
        assert_eq!(e.body["type"], "payment.succeeded");
        assert_eq!(e.body["data"]["amount"], 2_500);
        assert_eq!(e.body["data"]["metadata"]["qr_code_id"], qr["id"]);

        // A code without an amount asks the payer for it.
        let r = app
            .client
            .post(
                "/v1/qr-codes",
                &json!({"name": "门口", "description": "<随意>", "notify_url": app.receiver.url}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        let open_url = r.body["url"].as_str().unwrap().to_string();
        let form = app.http.get(&open_url).send().await.unwrap();
        assert_eq!(form.status(), 200);
        let html = form.text().await.unwrap();
        assert!(
            html.contains("&lt;随意&gt;") && !html.contains("<随意>"),
            "{html}"
        );
        let bad = no_redirects
            .post(&open_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("amount=1.234")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 200, "the form again, saying why");
        let entered = no_redirects
            .post(&open_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("amount=12.34")
            .send()
            .await
            .unwrap();
        assert_eq!(entered.status(), 303);
        let to = entered.headers()["location"].to_str().unwrap();
        let id = url::Url::parse(to)
            .unwrap()
            .path()
            .trim_start_matches("/cashier/")
            .to_string();
        let k = app
            .client
            .get(&format!("/v1/checkouts/{id}"))
            .await
            .unwrap();
        assert_eq!((k.status, k.body["amount"].clone()), (200, json!(1_234)));

        // Codes are the merchant's own.
        let (_, other) = paymux_server::merchants::create_merchant(
            &*db.store,
            &paymux_core::SystemClock,
            "Other",
        )
        .await
        .unwrap();
        let stranger =
            paymux_server::client::MerchantClient::new(&base, &other.app_id, &other.secret);
        let r = stranger
            .get(&format!("/v1/qr-codes/{}", qr["id"].as_str().unwrap()))
            .await
            .unwrap();
        assert_eq!(r.status, 404);
        app.server.stop();
    }
);
