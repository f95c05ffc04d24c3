//! `paymux demo`: one WeChat mini-program payment, one Alipay QR payment and
//! one UnionPay PC gateway payment end to end in a sandbox, every step printed. It uses only the public contract: the signed merchant
//! API, the simulator's control endpoint, and a signed notification.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use paymux_server::client::{MerchantClient, NotifyReceiver};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the demo's SQLite database here instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub async fn run(args: DemoArgs) -> Result<(), String> {
    let temporary = args.data_dir.is_none();
    let dir = args
        .data_dir
        .unwrap_or_else(|| crate::temp_data_dir("demo"));
    let (store, server) =
        crate::start_sandbox(&dir.join("paymux.db").display().to_string()).await?;
    let base = server.base_url();
    step(
        1,
        &format!(
            "sandbox paymux listening on {base} (SQLite at {})",
            dir.display()
        ),
    );

    let (merchant, app) =
        paymux_server::merchants::create_merchant(&*store, &paymux_core::SystemClock, "Demo Mall")
            .await
            .map_err(|e| e.to_string())?;
    step(
        2,
        &format!("merchant {} created, app_id {}", merchant.id, app.app_id),
    );

    let mut receiver = NotifyReceiver::start(&app.secret)
        .await
        .map_err(|e| e.to_string())?;
    step(
        3,
        &format!("merchant notify_url listening at {}", receiver.url),
    );

    let client = MerchantClient::new(&base, &app.app_id, &app.secret);
    let order_no = format!("DEMO-{}", chrono::Utc::now().timestamp_millis());
    let created = client
        .post(
            "/v1/payments",
            &json!({
                "merchant_order_no": order_no,
                "amount": 1999,
                "channel": "wechat",
                "method": "mini_program",
                "description": "Demo Mall - 1 coffee",
                "notify_url": receiver.url,
                "payer": {"openid": "oDemoPayerOpenId000000000000"}
            }),
        )
        .await
        .map_err(|e| e.to_string())?;
    if created.status != 201 {
        return Err(format!(
            "create failed: HTTP {} {}",
            created.status, created.body
        ));
    }
    let id = created.body["id"].as_str().unwrap_or_default().to_string();
    step(
        4,
        &format!(
            "POST /v1/payments -> 201, payment {id} is {} (response signature ok: {})",
            created.body["status"], created.signature_ok
        ),
    );
    println!(
        "   pay_params for wx.requestPayment:\n{}",
        indent(&created.body["pay_params"])
    );

    let paid = crate::sim_pay(&reqwest::Client::new(), &base, "wechat", &id).await?;
    step(
        5,
        &format!(
            "simulated payer paid in WeChat; signed, encrypted callback sent to paymux: {paid}"
        ),
    );

    let fetched = client
        .get(&format!("/v1/payments/{id}"))
        .await
        .map_err(|e| e.to_string())?;
    step(
        6,
        &format!("GET /v1/payments/{id} -> status {}", fetched.body["status"]),
    );

    let event = receiver
        .next(Duration::from_secs(10))
        .await
        .ok_or("no merchant notification within 10 s")?;
    step(
        7,
        &format!(
            "merchant notified: {} for {} (signature ok: {})",
            event.body["type"], event.body["data"]["id"], event.signature_ok
        ),
    );
    let wechat_ok = fetched.body["status"] == "succeeded" && event.signature_ok;

    let alipay = alipay_payment(&client, &mut receiver, &base).await;
    let unionpay = match &alipay {
        Ok(_) => unionpay_payment(&client, &mut receiver, &base).await,
        Err(_) => Ok(false),
    };
    server.stop();
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let alipay_ok = alipay?;
    let unionpay_ok = unionpay?;
    if !wechat_ok || !alipay_ok || !unionpay_ok {
        return Err("a demo payment did not complete".into());
    }
    println!(
        "\nDone: all three payments went created -> pending -> succeeded, merchant notified once each."
    );
    Ok(())
}

/// The same journey through Alipay: a QR-code (precreate) payment.
async fn alipay_payment(
    client: &MerchantClient,
    receiver: &mut NotifyReceiver,
    base: &str,
) -> Result<bool, String> {
    let order_no = format!("DEMO-ALI-{}", chrono::Utc::now().timestamp_millis());
    let created = client
        .post(
            "/v1/payments",
            &json!({
                "merchant_order_no": order_no,
                "amount": 2550,
                "channel": "alipay",
                "method": "native",
                "description": "Demo Mall - 1 cake",
                "notify_url": receiver.url,
            }),
        )
        .await
        .map_err(|e| e.to_string())?;
    if created.status != 201 {
        return Err(format!(
            "alipay create failed: HTTP {} {}",
            created.status, created.body
        ));
    }
    let id = created.body["id"].as_str().unwrap_or_default().to_string();
    step(
        8,
        &format!(
            "POST /v1/payments (alipay, native) -> 201, payment {id} is {}",
            created.body["status"]
        ),
    );
    println!(
        "   pay_params (render qr_code as a QR code):\n{}",
        indent(&created.body["pay_params"])
    );
    let paid = crate::sim_pay(&reqwest::Client::new(), base, "alipay", &id).await?;
    step(
        9,
        &format!(
            "simulated payer scanned and paid in Alipay; signed form notify sent to paymux: {paid}"
        ),
    );
    let fetched = client
        .get(&format!("/v1/payments/{id}"))
        .await
        .map_err(|e| e.to_string())?;
    step(
        10,
        &format!("GET /v1/payments/{id} -> status {}", fetched.body["status"]),
    );
    let event = receiver
        .next(Duration::from_secs(10))
        .await
        .ok_or("no merchant notification for the Alipay payment within 10 s")?;
    step(
        11,
        &format!(
            "merchant notified: {} for {} (signature ok: {})",
            event.body["type"], event.body["data"]["id"], event.signature_ok
        ),
    );
    Ok(fetched.body["status"] == "succeeded" && event.signature_ok)
}

/// The same journey through UnionPay: a PC gateway payment, whose signed
/// form the payer's browser posts to UnionPay's front transaction URL.
async fn unionpay_payment(
    client: &MerchantClient,
    receiver: &mut NotifyReceiver,
    base: &str,
) -> Result<bool, String> {
    let order_no = format!("DEMO-UP-{}", chrono::Utc::now().timestamp_millis());
    let created = client
        .post(
            "/v1/payments",
            &json!({
                "merchant_order_no": order_no,
                "amount": 4200,
                "channel": "unionpay",
                "method": "pc",
                "description": "Demo Mall - 1 teapot",
                "notify_url": receiver.url,
            }),
        )
        .await
        .map_err(|e| e.to_string())?;
    if created.status != 201 {
        return Err(format!(
            "unionpay create failed: HTTP {} {}",
            created.status, created.body
        ));
    }
    let id = created.body["id"].as_str().unwrap_or_default().to_string();
    step(
        12,
        &format!(
            "POST /v1/payments (unionpay, pc) -> 201, payment {id} is {}",
            created.body["status"]
        ),
    );
    let params = &created.body["pay_params"];
    println!(
        "   pay_params: POST these signed fields to {} (or serve the html form):\n{}",
        params["action"],
        indent(&params["fields"])
    );
    // What the payer's browser does with the auto-submitting form.
    let fields = params["fields"]
        .as_object()
        .ok_or("unionpay pay_params without fields")?;
    let form: paymux_channels::unionpay::sign::Params = fields
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let page = reqwest::Client::new()
        .post(params["action"].as_str().unwrap_or_default())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(paymux_channels::unionpay::sign::encode_form(&form))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    step(
        13,
        &format!(
            "browser posted the form to the UnionPay simulator's frontTransReq.do -> HTTP {} (payment page)",
            page.status()
        ),
    );
    let paid = crate::sim_pay(&reqwest::Client::new(), base, "unionpay", &id).await?;
    step(
        14,
        &format!(
            "simulated payer paid on the UnionPay page; signed back notification sent to paymux: {paid}"
        ),
    );
    let fetched = client
        .get(&format!("/v1/payments/{id}"))
        .await
        .map_err(|e| e.to_string())?;
    step(
        15,
        &format!("GET /v1/payments/{id} -> status {}", fetched.body["status"]),
    );
    let event = receiver
        .next(Duration::from_secs(10))
        .await
        .ok_or("no merchant notification for the UnionPay payment within 10 s")?;
    step(
        16,
        &format!(
            "merchant notified: {} for {} (signature ok: {})",
            event.body["type"], event.body["data"]["id"], event.signature_ok
        ),
    );
    Ok(fetched.body["status"] == "succeeded" && event.signature_ok)
}

fn step(n: u32, text: &str) {
    println!("[{n}] {text}");
}

fn indent(v: &Value) -> String {
    serde_json::to_string_pretty(v)
        .unwrap_or_default()
        .lines()
        .map(|l| format!("     {l}\n"))
        .collect()
}
