//! `paymux reconcile` against a running sandbox: the day's WeChat Pay bill
//! is reconciled through the node's admin API, printed as JSON, and written
//! as a CSV report.

use std::process::Command;

use paymux_core::SystemClock;
use paymux_server::client::MerchantClient;
use paymux_server::config::SecretString;
use paymux_server::reconcile::china_date;
use paymux_server::ServerConfig;
use paymux_store::testing;
use serde_json::{json, Value};

mod run;

const TOKEN: &str = "reconcile-cli-token";

fn reconcile(base: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paymux"));
    cmd.arg("reconcile")
        .args(args)
        .args(["--url", base])
        .env("PAYMUX_ADMIN_TOKEN", TOKEN);
    run::output(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_is_reconciled_from_the_command_line() {
    let db = testing::sqlite().await;
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sandbox: true,
        ..Default::default()
    };
    config.admin_token = Some(SecretString::new(TOKEN));
    let server = paymux_server::start(config, db.store.clone())
        .await
        .unwrap();
    let base = server.base_url();
    let (_, app) = paymux_server::merchants::create_merchant(&*db.store, &SystemClock, "Mall")
        .await
        .unwrap();
    let client = MerchantClient::new(&base, &app.app_id, &app.secret);
    let mut ids = Vec::new();
    for no in ["C-1", "C-2"] {
        ids.push(run::paid_native(&client, &base, "wechat", no, 880).await);
    }
    // The bill will lack the second payment.
    let set = reqwest::Client::new()
        .post(format!("{base}/sim/wechat/bills/faults"))
        .json(&json!({"drop": [ids[1]]}))
        .send()
        .await
        .unwrap();
    assert!(set.status().is_success());

    let date = china_date(chrono::Utc::now()).to_string();
    let csv = std::env::temp_dir().join(format!("paymux-report-{}.csv", paymux_core::new_id("t")));
    let (ok, out, err) = reconcile(
        &base,
        &[
            "--channel",
            "wechat",
            "--date",
            &date,
            "--json",
            "--csv",
            csv.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    let run: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (&run["status"], &run["matched"]),
        (&json!("succeeded"), &json!(1)),
        "{run}"
    );
    assert_eq!(run["discrepancies"][0]["kind"], "missing_at_channel");
    assert_eq!(run["discrepancies"][0]["payment_id"], ids[1].as_str());
    let report = std::fs::read_to_string(&csv).unwrap();
    let _ = std::fs::remove_file(&csv);
    assert_eq!(report.lines().count(), 2, "{report}");
    assert!(
        report.contains(&format!("missing_at_channel,{}", ids[1])),
        "{report}"
    );

    // The same in text, and the day agrees now the fault is spent.
    let (ok, out, _) = reconcile(&base, &["--channel", "wechat", "--date", &date]);
    assert!(
        ok && out.contains("2 matched, 0 discrepancies (succeeded)"),
        "{out}"
    );
    // A wrong token and a bad date are refused with the node's reason.
    let (ok, _, err) = reconcile(&base, &["--channel", "wechat", "--date", "yesterday"]);
    assert!(!ok && err.contains("date must be YYYY-MM-DD"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_paymux"))
        .args([
            "reconcile",
            "--channel",
            "wechat",
            "--date",
            &date,
            "--url",
            &base,
        ])
        .env("PAYMUX_ADMIN_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    server.stop();
    db.cleanup().await;
}
