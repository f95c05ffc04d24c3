//! Going live, as an operator does it: a WeChat Pay endpoint that is not
//! paymux's sandbox (the simulator, started on its own with its own keys), a
//! merchant and a live account created with the `paymux` binary, `paymux
//! serve` outside sandbox with a master key, a full payment, `channel test`
//! passing and naming the problem when a serial or key is wrong, and master
//! key rotation; the same for an Alipay app (public-key mode) and a UnionPay
//! merchant (its PKCS#12 signing key). On every store backend available.

mod live;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use live::*;
use paymux_channels::keys::PrivateKey;
use paymux_server::client::{MerchantClient, NotifyReceiver};
use paymux_store::testing::{self, TestDb};
use serde_json::{json, Value};

fn raw_database_bytes(db: &TestDb) -> Vec<u8> {
    if db.backend == "sqlite" {
        let path = db.url.strip_prefix("sqlite://").unwrap();
        let dir = Path::new(path).parent().unwrap();
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            all.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        all
    } else {
        let out = Command::new("pg_dump")
            .arg("--dbname")
            .arg(&db.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The base64 body of a PEM, which is what would show up in a leaked file.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .take(3)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_sandbox_to_a_live_wechat_account() {
    let sim = start_simulator().await;
    let sim_wechat = format!("{sim}/sim/wechat");
    for db in testing::backends().await {
        eprintln!("-- going live on {}", db.backend);
        let op = Operator::new(&db);
        let dir = op.dir.clone();

        let mchid = new_mchid();
        let keys = register_wechat_merchant(&sim, &mchid).await;
        let merchant = op.create_merchant("Live Mall");
        let merchant_id = merchant["merchant_id"].as_str().unwrap();
        let account = op.add_wechat(merchant_id, &keys, &sim_wechat);

        // The keys and the endpoint work.
        op.channel_test(&account).unwrap();
        let shown = op.ok(&["channel", "show", &account]);
        assert!(
            shown.contains(&mchid) && shown.contains("encrypted"),
            "{shown}"
        );
        assert!(
            !shown.contains(&keys.apiv3_key) && !shown.contains(&pem_body(&keys.private_key_pem))
        );
        assert!(op.ok(&["channel", "list"]).contains(&account));

        // Wrong serial, wrong key, wrong APIv3 key, wrong host: each named.
        let other = op.create_merchant("Test Bench");
        let other_id = other["merchant_id"].as_str().unwrap();
        let wrong_serial = WechatKeys {
            serial_no: "0123456789ABCDEF0123456789ABCDEF01234567".into(),
            ..clone_keys(&keys)
        };
        let wrong_key = WechatKeys {
            private_key_pem: PrivateKey::generate_pkcs8_pem().unwrap(),
            ..clone_keys(&keys)
        };
        let wrong_apiv3 = WechatKeys {
            apiv3_key: "0".repeat(32),
            ..clone_keys(&keys)
        };
        for (bad, base, code) in [
            (&wrong_serial, sim_wechat.as_str(), "WRONG_SERIAL"),
            (&wrong_key, sim_wechat.as_str(), "WRONG_KEY"),
            (&wrong_apiv3, sim_wechat.as_str(), "WRONG_APIV3_KEY"),
            (&keys, "http://127.0.0.1:9", "UNREACHABLE"),
        ] {
            let acct = op.add_wechat(other_id, bad, base);
            let err = op.channel_test(&acct).expect_err(code);
            eprintln!("{code}: {err}");
            assert!(err.contains(code), "{code}: {err}");
            assert!(!err.contains(&keys.apiv3_key), "{err}");
        }

        // Serve for real (not sandbox) and take a payment through the account.
        let config = op.file(
            "paymux.toml",
            "listen = \"127.0.0.1:0\"\nallow_insecure_public_url = true\nallow_http_notify_url = true\nallow_private_notify_url = true\n[notifier]\npoll_interval_ms = 100\n",
        );
        let (mut server, base) = op.serve(&config);
        let secret = merchant["app_secret"].as_str().unwrap();
        let client = MerchantClient::new(&base, merchant["app_id"].as_str().unwrap(), secret);
        let mut receiver = NotifyReceiver::start(secret).await.unwrap();
        let created = client
            .post(
                "/v1/payments",
                &json!({
                    "merchant_order_no": "LIVE-1", "amount": 2500, "channel": "wechat",
                    "method": "native", "description": "live coffee", "notify_url": receiver.url,
                }),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        let id = created.body["id"].as_str().unwrap().to_string();
        assert!(
            created.body["pay_params"]["code_url"].is_string(),
            "{}",
            created.body
        );
        let paid = reqwest::Client::new()
            .post(format!("{sim}/sim/wechat/pay"))
            .json(&json!({"out_trade_no": id}))
            .send()
            .await
            .unwrap();
        assert!(paid.status().is_success(), "sim pay: {}", paid.status());
        let event = receiver
            .next(Duration::from_secs(15))
            .await
            .expect("merchant notified");
        assert!(event.signature_ok);
        assert_eq!(event.body["data"]["id"], id.as_str());
        assert_eq!(event.body["data"]["status"], "succeeded");
        let got = client.get(&format!("/v1/payments/{id}")).await.unwrap();
        assert_eq!(got.body["status"], "succeeded");

        // A second app for the same merchant, then its secret rotated with a
        // grace period: old and new secrets both verify; without grace only the new.
        let app2: Value =
            serde_json::from_str(&op.ok(&["app", "create", "--merchant", merchant_id, "--json"]))
                .unwrap();
        let app2_id = app2["app_id"].as_str().unwrap();
        let old_secret = app2["app_secret"].as_str().unwrap();
        let rotated: Value = serde_json::from_str(&op.ok(&[
            "app",
            "rotate-secret",
            app2_id,
            "--grace-seconds",
            "600",
            "--json",
        ]))
        .unwrap();
        let new_secret = rotated["app_secret"].as_str().unwrap();
        assert_ne!(new_secret, old_secret);
        for s in [old_secret, new_secret] {
            let r = MerchantClient::new(&base, app2_id, s)
                .get(&format!("/v1/payments/{id}"))
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(
                r.signature_ok,
                "answer signed with the secret the request used"
            );
        }
        let again: Value = serde_json::from_str(&op.ok(&[
            "app",
            "rotate-secret",
            app2_id,
            "--grace-seconds",
            "0",
            "--json",
        ]))
        .unwrap();
        let newest = again["app_secret"].as_str().unwrap();
        for (s, status) in [(new_secret, 401), (old_secret, 401), (newest, 200)] {
            let r = MerchantClient::new(&base, app2_id, s)
                .get(&format!("/v1/payments/{id}"))
                .await
                .unwrap();
            assert_eq!(r.status, status, "{}", r.body);
        }
        server.kill().unwrap();
        server.wait().unwrap();

        // Rotate the master key: everything still works under the new one only.
        let new_key = op.file(
            "master-2.key",
            &paymux_store::MasterKey::generate_base64().unwrap(),
        );
        let out = op.ok(&[
            "keys",
            "rotate",
            "--new-master-key-file",
            new_key.to_str().unwrap(),
        ]);
        assert!(out.contains("re-encrypted"), "{out}");
        let rotated = Operator {
            master_key_file: new_key,
            ..op
        };
        rotated.channel_test(&account).unwrap();
        let (mut server, base) = rotated.serve(&config);
        let client = MerchantClient::new(&base, merchant["app_id"].as_str().unwrap(), secret);
        let again = client.get(&format!("/v1/payments/{id}")).await.unwrap();
        assert_eq!(again.status, 200, "{}", again.body);
        server.kill().unwrap();
        server.wait().unwrap();
        let err = Operator {
            master_key_file: dir.join("master.key"),
            ..rotated
        }
        .channel_test(&account)
        .expect_err("the old master key no longer opens anything");
        assert!(err.contains("master key"), "{err}");

        // A leaked database file leaks no secret.
        let bytes = raw_database_bytes(&db);
        assert!(
            contains(&bytes, &mchid),
            "{}: the dump has the rows",
            db.backend
        );
        for s in [
            secret,
            old_secret,
            new_secret,
            newest,
            keys.apiv3_key.as_str(),
            &pem_body(&keys.private_key_pem),
            &pem_body(&wrong_key.private_key_pem),
        ] {
            assert!(!contains(&bytes, s), "{}: a secret in clear", db.backend);
        }
        std::fs::remove_dir_all(&dir).unwrap();
        db.cleanup().await;
    }
}

/// The same for an Alipay app (public-key mode): added with the CLI, tested,
/// a wrong app private key named, a full `native` payment, no secret in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_alipay_account() {
    let sim = start_simulator().await;
    for db in testing::backends().await {
        eprintln!("-- alipay live on {}", db.backend);
        let op = Operator::new(&db);
        let digits: String = paymux_core::new_id("a")
            .bytes()
            .map(|b| char::from(b'0' + b % 10))
            .take(12)
            .collect();
        let app = register_alipay_app(&sim, &format!("2021{digits}")).await;
        let merchant = op.create_merchant("Live Tea");
        let merchant_id = merchant["merchant_id"].as_str().unwrap();
        let account = op.add_alipay(merchant_id, &app, &app.private_key_pem);

        op.channel_test(&account).unwrap();
        let shown = op.ok(&["channel", "show", &account]);
        assert!(
            shown.contains(&app.app_id) && shown.contains("encrypted"),
            "{shown}"
        );
        assert!(!shown.contains(&pem_body(&app.private_key_pem)), "{shown}");
        assert!(op.ok(&["channel", "list"]).contains(&app.app_id));

        // A wrong app private key: Alipay refuses the signature, and the test says so.
        let other = op.create_merchant("Alipay Bench");
        let wrong_key = PrivateKey::generate_pkcs8_pem().unwrap();
        let bad = op.add_alipay(other["merchant_id"].as_str().unwrap(), &app, &wrong_key);
        let err = op.channel_test(&bad).expect_err("wrong key");
        eprintln!("wrong alipay key: {err}");
        assert!(
            err.contains("REJECTED") && err.contains("invalid-signature"),
            "{err}"
        );

        let config = op.file(
            "paymux.toml",
            "listen = \"127.0.0.1:0\"\nallow_insecure_public_url = true\nallow_http_notify_url = true\nallow_private_notify_url = true\n[notifier]\npoll_interval_ms = 100\n",
        );
        let (mut server, base) = op.serve(&config);
        let secret = merchant["app_secret"].as_str().unwrap();
        let client = MerchantClient::new(&base, merchant["app_id"].as_str().unwrap(), secret);
        let mut receiver = NotifyReceiver::start(secret).await.unwrap();
        let created = client
            .post(
                "/v1/payments",
                &json!({
                    "merchant_order_no": "ALI-LIVE-1", "amount": 1800, "channel": "alipay",
                    "method": "native", "description": "live tea", "notify_url": receiver.url,
                }),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        let id = created.body["id"].as_str().unwrap().to_string();
        assert!(
            created.body["pay_params"]["qr_code"].is_string(),
            "{}",
            created.body
        );
        let paid = reqwest::Client::new()
            .post(format!("{sim}/sim/alipay/pay"))
            .json(&json!({"out_trade_no": id}))
            .send()
            .await
            .unwrap();
        assert!(paid.status().is_success(), "sim pay: {}", paid.status());
        let event = receiver
            .next(Duration::from_secs(15))
            .await
            .expect("merchant notified");
        assert!(event.signature_ok);
        assert_eq!(event.body["data"]["id"], id.as_str());
        assert_eq!(event.body["data"]["status"], "succeeded");
        let got = client.get(&format!("/v1/payments/{id}")).await.unwrap();
        assert_eq!(got.body["status"], "succeeded");
        server.kill().unwrap();
        server.wait().unwrap();

        let bytes = raw_database_bytes(&db);
        assert!(
            contains(&bytes, &app.app_id),
            "{}: the dump has the rows",
            db.backend
        );
        for s in [
            secret,
            &pem_body(&app.private_key_pem),
            &pem_body(&wrong_key),
        ] {
            assert!(!contains(&bytes, s), "{}: a secret in clear", db.backend);
        }
        std::fs::remove_dir_all(&op.dir).unwrap();
        db.cleanup().await;
    }
}

/// The official UnionPay test PFX (password 000000) and its certificate,
/// from the channel's test vectors.
fn unionpay_test_pfx() -> (Vec<u8>, String) {
    use base64::Engine;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../channels/tests/vectors/unionpay_acp510_sign_yansongda.json"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let km = &v["key_material"];
    let pfx = base64::engine::general_purpose::STANDARD
        .decode(km["pfx_b64"].as_str().unwrap())
        .unwrap();
    (
        pfx,
        km["sign_cert_pem (extracted)"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// A UnionPay merchant: added with the CLI from its PFX file, tested, a wrong
/// PFX password refused, a full `native` payment, no secret in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_unionpay_account() {
    let sim = start_simulator().await;
    let http = reqwest::Client::new();
    let (pfx, sign_cert) = unionpay_test_pfx();
    let platform: Value = http
        .get(format!("{sim}/sim/unionpay/platform"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for db in testing::backends().await {
        eprintln!("-- unionpay live on {}", db.backend);
        let op = Operator::new(&db);
        let digits: String = paymux_core::new_id("u")
            .bytes()
            .map(|b| char::from(b'0' + b % 10))
            .take(12)
            .collect();
        let mer_id = format!("777{digits}");
        let r = http
            .post(format!("{sim}/sim/unionpay/merchants"))
            .json(&json!({"mer_id": mer_id, "sign_cert": sign_cert}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let pfx_file = op.dir.join("acp_sign.pfx");
        std::fs::write(&pfx_file, &pfx).unwrap();
        let root = op.file("acp_root.cer", platform["root_cert"].as_str().unwrap());
        let middle = op.file("acp_middle.cer", platform["middle_cert"].as_str().unwrap());
        let add = |merchant_id: &str, password: &str| {
            let password_file = op.file("pfx.password", password);
            op.paymux(&[
                "channel",
                "add",
                "unionpay",
                "--merchant",
                merchant_id,
                "--mer-id",
                &mer_id,
                "--pfx-file",
                pfx_file.to_str().unwrap(),
                "--pfx-password-file",
                password_file.to_str().unwrap(),
                "--root-cert-file",
                root.to_str().unwrap(),
                "--middle-cert-file",
                middle.to_str().unwrap(),
                "--base-url",
                &format!("{sim}/sim/unionpay"),
                "--json",
            ])
        };
        let merchant = op.create_merchant("Live Porcelain");
        let merchant_id = merchant["merchant_id"].as_str().unwrap();
        // A wrong password: refused before anything is stored.
        let out = add(merchant_id, "123456\n");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("wrong password"), "{err}");

        let out = add(merchant_id, "000000\n");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let view: Value = serde_json::from_slice(&out.stdout).unwrap();
        let account = view["id"].as_str().unwrap().to_string();
        op.channel_test(&account).unwrap();
        let shown = op.ok(&["channel", "show", &account]);
        assert!(
            shown.contains(&mer_id) && shown.contains("encrypted"),
            "{shown}"
        );
        assert!(op.ok(&["channel", "list"]).contains(&mer_id));

        let config = op.file(
            "paymux.toml",
            "listen = \"127.0.0.1:0\"\nallow_insecure_public_url = true\nallow_http_notify_url = true\nallow_private_notify_url = true\n[notifier]\npoll_interval_ms = 100\n",
        );
        let (mut server, base) = op.serve(&config);
        let secret = merchant["app_secret"].as_str().unwrap();
        let client = MerchantClient::new(&base, merchant["app_id"].as_str().unwrap(), secret);
        let mut receiver = NotifyReceiver::start(secret).await.unwrap();
        let created = client
            .post(
                "/v1/payments",
                &json!({
                    "merchant_order_no": "UP-LIVE-1", "amount": 2600, "channel": "unionpay",
                    "method": "native", "description": "live teapot", "notify_url": receiver.url,
                }),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
        let id = created.body["id"].as_str().unwrap().to_string();
        let paid = http
            .post(format!("{sim}/sim/unionpay/pay"))
            .json(&json!({"out_trade_no": id}))
            .send()
            .await
            .unwrap();
        assert!(paid.status().is_success(), "sim pay: {}", paid.status());
        let event = receiver
            .next(Duration::from_secs(15))
            .await
            .expect("merchant notified");
        assert!(event.signature_ok);
        assert_eq!(event.body["data"]["id"], id.as_str());
        assert_eq!(event.body["data"]["status"], "succeeded");
        server.kill().unwrap();
        server.wait().unwrap();

        let bytes = raw_database_bytes(&db);
        assert!(
            contains(&bytes, &mer_id),
            "{}: the dump has the rows",
            db.backend
        );
        let pfx_b64 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(&pfx)
        };
        assert!(
            !contains(&bytes, &pfx_b64[..64]),
            "{}: the PFX in clear",
            db.backend
        );
        std::fs::remove_dir_all(&op.dir).unwrap();
        db.cleanup().await;
    }
}

fn clone_keys(k: &WechatKeys) -> WechatKeys {
    WechatKeys {
        mchid: k.mchid.clone(),
        serial_no: k.serial_no.clone(),
        private_key_pem: k.private_key_pem.clone(),
        apiv3_key: k.apiv3_key.clone(),
    }
}

/// Outside sandbox, `paymux serve` refuses to start without a master key or
/// with an http public URL, and says why.
#[test]
fn serve_refuses_unsafe_production_settings() {
    let dir = std::env::temp_dir().join(format!("paymux-refuse-{}", paymux_core::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("master.key");
    std::fs::write(
        &key_file,
        paymux_store::MasterKey::generate_base64().unwrap(),
    )
    .unwrap();
    let run = |extra: &[&str], with_key: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_paymux"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .args(extra)
            .env_remove("PAYMUX_MASTER_KEY")
            .env_remove("PAYMUX_PUBLIC_URL")
            .env("PAYMUX_LOG", "error");
        if with_key {
            cmd.arg("--master-key-file").arg(&key_file);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["--public-url", "https://pay.example.com"], false).contains("no master key"));
    assert!(run(&["--public-url", "http://pay.example.com"], true).contains("must be https"));
    assert!(run(&[], true).contains("public_url is required"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `paymux config check` prints the effective configuration (file, then
/// environment) with secrets masked, and fails on what `serve` would refuse.
#[test]
fn config_check_masks_secrets_and_reports_problems() {
    let dir = std::env::temp_dir().join(format!("paymux-config-{}", paymux_core::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("paymux.toml");
    std::fs::write(
        &config,
        "public_url = \"https://pay.example.com\"\nadmin_token = \"file-token-SECRET\"\n[notifier]\ntimeout_secs = 4\n",
    )
    .unwrap();
    let check = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_paymux"));
        cmd.args(["config", "check", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&dir)
            .env_remove("PAYMUX_MASTER_KEY")
            .env_remove("PAYMUX_PUBLIC_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let key = paymux_store::MasterKey::generate_base64().unwrap();
    let out = check(&[
        ("PAYMUX_MASTER_KEY", &key),
        ("PAYMUX_ADMIN_TOKEN", "env-token-SECRET"),
        ("PAYMUX_NOTIFIER_SCHEDULE_SECS", "5,10"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("SECRET") && !stdout.contains(&key),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"timeout_secs\": 4") && stdout.contains("configuration ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("5,\n") || stdout.contains("[\n      5"),
        "{stdout}"
    );
    let out = check(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no master key"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `log_format = "json"` (here from the environment) makes every log line a JSON object.
#[test]
fn json_logs() {
    let dir = std::env::temp_dir().join(format!("paymux-jsonlog-{}", paymux_core::new_id("t")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_paymux"))
        .args([
            "serve",
            "--sandbox",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .env("PAYMUX_LOG_FORMAT", "json")
        .env("PAYMUX_LOG", "info")
        .env_remove("PAYMUX_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = 0;
    for line in stderr.lines().take(3) {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        seen += 1;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seen, 3);
    let _ = std::fs::remove_dir_all(&dir);
}
