//! `paymux ledger check`, `paymux ledger balances` and `paymux audit`
//! against the database of a running gateway: payments and refunds made
//! through the API are in the books and the trail, the checks pass, and a
//! posting or a trail row edited by hand fails them.

use paymux_core::SystemClock;
use paymux_server::client::MerchantClient;
use paymux_server::ServerConfig;
use paymux_store::testing;
use serde_json::{json, Value};

mod run;
use run::{paid_native, paymux};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_books_are_checked_and_shown_from_the_command_line() {
    for db in testing::backends().await {
        eprintln!("-- on {}", db.backend);
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            sandbox: true,
            ..Default::default()
        };
        let server = paymux_server::start(config, db.store.clone())
            .await
            .unwrap();
        let (merchant, app) =
            paymux_server::merchants::create_merchant(&*db.store, &SystemClock, "Mall")
                .await
                .unwrap();
        let client = MerchantClient::new(&server.base_url(), &app.app_id, &app.secret);
        let mut ids = Vec::new();
        for (no, amount) in [("L-1", 1_000), ("L-2", 2_500)] {
            ids.push(paid_native(&client, &server.base_url(), "alipay", no, amount).await);
        }
        // Alipay refunds settle in the call.
        let refund = client
            .post(
                "/v1/refunds",
                &json!({"payment_id": ids[1], "merchant_refund_no": "LR-1", "amount": 400}),
            )
            .await
            .unwrap();
        assert_eq!(refund.status, 201, "{}", refund.body);
        assert_eq!(refund.body["status"], "succeeded");

        let (ok, out, err) = paymux(&db.url, &["ledger", "check", "--json"]);
        assert!(ok, "{out}{err}");
        let check: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(check["ok"], true, "{check}");
        assert_eq!(
            (&check["transactions"], &check["postings"]),
            (&json!(3), &json!(6))
        );
        let (ok, out, _) = paymux(&db.url, &["ledger", "check"]);
        assert!(
            ok && out.contains("agrees with payments and refunds"),
            "{out}"
        );

        let (ok, out, err) = paymux(
            &db.url,
            &["ledger", "balances", "--merchant", &merchant.id, "--json"],
        );
        assert!(ok, "{err}");
        let books: Value = serde_json::from_str(&out).unwrap();
        let row = &books["data"][0];
        assert_eq!(books["data"].as_array().unwrap().len(), 1, "{books}");
        assert_eq!(
            (
                &row["channel"],
                &row["captured"],
                &row["refunded"],
                &row["receivable"]
            ),
            (&json!("alipay"), &json!(3_500), &json!(400), &json!(3_100)),
            "{books}"
        );
        // The API shows the same books.
        let api = client.get("/v1/balances").await.unwrap();
        assert_eq!(api.body["data"], books["data"]);

        // Someone edits a refund's posting by hand: the check fails, names it,
        // and exits non-zero.
        let changed = db
            .tamper(
                "UPDATE ledger_postings SET debit_minor = 40
                 WHERE account = 'merchant_refunds'",
            )
            .await;
        assert_eq!(changed, 1);
        let (ok, out, err) = paymux(&db.url, &["ledger", "check", "--json"]);
        assert!(!ok, "{out}");
        let check: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(check["ok"], false);
        assert_eq!(check["issues"][0]["kind"], "unbalanced", "{check}");
        assert!(err.contains("the first: unbalanced refund:ref_"), "{err}");
        let (ok, out, _) = paymux(&db.url, &["ledger", "check"]);
        assert!(!ok && out.contains("refund_mismatch"), "{out}");
        // The trail: the sealer chains it within a second; verified and shown.
        let mut check = Value::Null;
        for _ in 0..50 {
            let (ok, out, err) = paymux(&db.url, &["audit", "verify", "--json"]);
            assert!(ok, "{out}{err}");
            check = serde_json::from_str(&out).unwrap();
            if check["unsealed"] == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            (&check["ok"], &check["unsealed"]),
            (&json!(true), &json!(0)),
            "{check}"
        );
        let (ok, out, _) = paymux(&db.url, &["audit", "show", &ids[1]]);
        assert!(
            ok && out.contains("created") && out.contains("succeeded"),
            "{out}"
        );
        let (from, to) = (
            (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339(),
            (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
        );
        let (ok, out, err) = paymux(&db.url, &["audit", "export", "--from", &from, "--to", &to]);
        assert!(ok, "{err}");
        let rows: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            rows.len() as i64,
            check["sealed"].as_i64().unwrap(),
            "{out}"
        );
        assert!(rows
            .windows(2)
            .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));
        db.tamper("UPDATE audit_log SET detail = '{}' WHERE chain_pos = 2")
            .await;
        let (ok, _, err) = paymux(&db.url, &["audit", "verify"]);
        assert!(!ok && err.contains("breaks at position 2"), "{err}");
        server.stop();
        db.cleanup().await;
    }
}
