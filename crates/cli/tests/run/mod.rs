//! Running the `paymux` binary as an operator would, and paying through a
//! sandbox as a mall would.

#![allow(dead_code)] // each test binary uses its own part

use std::process::Command;

use paymux_server::client::MerchantClient;
use serde_json::json;

/// Runs `paymux ARGS --database-url DB_URL`: whether it succeeded, its stdout and its stderr.
pub fn paymux(db_url: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paymux"));
    cmd.args(args)
        .args(["--database-url", db_url])
        .env_remove("PAYMUX_MASTER_KEY")
        .env_remove("PAYMUX_MASTER_KEY_FILE");
    output(cmd)
}

/// Runs a prepared `paymux` command (with `PAYMUX_LOG=warn`): whether it
/// succeeded, its stdout and its stderr.
pub fn output(mut cmd: Command) -> (bool, String, String) {
    let out = cmd.env("PAYMUX_LOG", "warn").output().expect("paymux runs");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A Native payment of `amount` fen created through the API and paid at the
/// sandbox's simulator of `channel`; its id.
pub async fn paid_native(
    client: &MerchantClient,
    base: &str,
    channel: &str,
    order_no: &str,
    amount: i64,
) -> String {
    let created = client
        .post(
            "/v1/payments",
            &json!({"merchant_order_no": order_no, "amount": amount, "channel": channel,
                    "method": "native", "description": "tea",
                    "notify_url": "https://mall.invalid/notify"}),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    let paid = reqwest::Client::new()
        .post(format!("{base}/sim/{channel}/pay"))
        .json(&json!({"out_trade_no": id}))
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success());
    id
}
