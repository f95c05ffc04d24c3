//! What the live-mode tests share: the simulator on its own port, a
//! merchant's WeChat Pay keys registered there, and an operator driving the
//! `paymux` binary against one database.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use axum::Router;
use paymux_channels::keys::PrivateKey;
use paymux_sim::alipay::AlipaySim;
use paymux_sim::wechat::{router, WechatSim};
use paymux_store::testing::TestDb;
use serde_json::{json, Value};

/// The simulator on a random port, like `paymux-sim` (WeChat at
/// `/sim/wechat`, Alipay at `/sim/alipay`).
pub async fn start_simulator() -> String {
    let sim = WechatSim::new();
    let app = Router::new()
        .nest("/sim/wechat", router(sim.clone()))
        .nest("/sim/alipay", paymux_sim::alipay::router(AlipaySim::new()))
        .nest(
            "/sim/unionpay",
            paymux_sim::unionpay::router(paymux_sim::unionpay::UnionpaySim::new()),
        )
        .merge(router(sim));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WeChat Pay merchant number no other test uses (19 + eight digits).
pub fn new_mchid() -> String {
    let suffix = &paymux_core::new_id("m")[3..11];
    let digits: String = suffix.bytes().map(|b| char::from(b'0' + b % 10)).collect();
    format!("19{digits}")
}

/// A merchant's own WeChat Pay credentials, registered at the simulator the
/// way the merchant portal would know them.
pub struct WechatKeys {
    pub mchid: String,
    pub serial_no: String,
    pub private_key_pem: String,
    pub apiv3_key: String,
}

pub async fn register_wechat_merchant(sim: &str, mchid: &str) -> WechatKeys {
    let private_key_pem = PrivateKey::generate_pkcs8_pem().unwrap();
    let public_key_pem = PrivateKey::from_pem(&private_key_pem)
        .unwrap()
        .public_key()
        .unwrap()
        .to_pem();
    let keys = WechatKeys {
        mchid: mchid.to_string(),
        serial_no: format!(
            "5157F09EFDC096DE15EBE81A47057A72{}",
            &mchid[mchid.len() - 8..]
        ),
        private_key_pem,
        apiv3_key: format!("{:0<32}", format!("v3{mchid}")),
    };
    let r = reqwest::Client::new()
        .post(format!("{sim}/sim/wechat/merchants"))
        .json(&json!({
            "mchid": keys.mchid,
            "serial_no": keys.serial_no,
            "public_key_pem": public_key_pem,
            "apiv3_key": keys.apiv3_key,
        }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "register: {}", r.status());
    keys
}

/// An Alipay app registered at the simulator, and what its console shows.
pub struct AlipayApp {
    pub app_id: String,
    pub seller_id: String,
    pub private_key_pem: String,
    pub alipay_public_key_pem: String,
    pub gateway_url: String,
}

pub async fn register_alipay_app(sim: &str, app_id: &str) -> AlipayApp {
    let private_key_pem = PrivateKey::generate_pkcs8_pem().unwrap();
    let app_public_key = PrivateKey::from_pem(&private_key_pem)
        .unwrap()
        .public_key()
        .unwrap()
        .to_pem();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{sim}/sim/alipay/merchants"))
        .json(&json!({ "app_id": app_id, "app_public_key": app_public_key }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "register: {}", r.status());
    let registered: Value = r.json().await.unwrap();
    let platform: Value = http
        .get(format!("{sim}/sim/alipay/platform"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    AlipayApp {
        app_id: app_id.to_string(),
        seller_id: registered["seller_id"].as_str().unwrap().to_string(),
        private_key_pem,
        alipay_public_key_pem: platform["alipay_public_key"].as_str().unwrap().to_string(),
        gateway_url: format!("{sim}/sim/alipay/gateway.do"),
    }
}

pub struct Operator {
    pub dir: PathBuf,
    pub db_url: String,
    pub master_key_file: PathBuf,
}

impl Operator {
    /// A fresh operator directory with its own master key, on `db`.
    pub fn new(db: &TestDb) -> Operator {
        let dir = std::env::temp_dir().join(format!("paymux-golive-{}", paymux_core::new_id("t")));
        std::fs::create_dir_all(&dir).unwrap();
        let master_key_file = dir.join("master.key");
        std::fs::write(
            &master_key_file,
            paymux_store::MasterKey::generate_base64().unwrap(),
        )
        .unwrap();
        Operator {
            dir,
            db_url: db.url.clone(),
            master_key_file,
        }
    }

    pub fn paymux(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_paymux"))
            .args(args)
            .args(["--database-url", &self.db_url])
            .arg("--master-key-file")
            .arg(&self.master_key_file)
            .env_remove("PAYMUX_MASTER_KEY")
            .env("PAYMUX_LOG", "warn")
            .output()
            .expect("paymux runs")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.paymux(args);
        assert!(
            out.status.success(),
            "paymux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn add_wechat(&self, merchant_id: &str, keys: &WechatKeys, base_url: &str) -> String {
        let key_file = self.file(
            &format!("{}-{}.pem", keys.mchid, keys.serial_no),
            &keys.private_key_pem,
        );
        let apiv3_file = self.file(&format!("{}-apiv3", keys.mchid), &keys.apiv3_key);
        let out = self.ok(&[
            "channel",
            "add",
            "wechat",
            "--merchant",
            merchant_id,
            "--appid",
            "wxd678efh567hg6787",
            "--mchid",
            &keys.mchid,
            "--serial-no",
            &keys.serial_no,
            "--private-key-file",
            key_file.to_str().unwrap(),
            "--apiv3-key-file",
            apiv3_file.to_str().unwrap(),
            "--base-url",
            base_url,
            "--json",
        ]);
        let view: Value = serde_json::from_str(&out).unwrap();
        view["id"].as_str().unwrap().to_string()
    }

    /// `channel add alipay` in public-key mode; returns the account id.
    pub fn add_alipay(&self, merchant_id: &str, app: &AlipayApp, private_key_pem: &str) -> String {
        let key_file = self.file(
            &format!("{}-{}.pem", app.app_id, paymux_core::new_id("k")),
            private_key_pem,
        );
        let alipay_key_file = self.file("alipay_public_key.pem", &app.alipay_public_key_pem);
        let out = self.ok(&[
            "channel",
            "add",
            "alipay",
            "--merchant",
            merchant_id,
            "--app-id",
            &app.app_id,
            "--private-key-file",
            key_file.to_str().unwrap(),
            "--alipay-public-key-file",
            alipay_key_file.to_str().unwrap(),
            "--seller-id",
            &app.seller_id,
            "--base-url",
            &app.gateway_url,
            "--json",
        ]);
        let view: Value = serde_json::from_str(&out).unwrap();
        view["id"].as_str().unwrap().to_string()
    }

    pub fn create_merchant(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["merchant", "create", "--name", name, "--json"])).unwrap()
    }

    /// `channel test`; Ok(()) or Err(stderr).
    pub fn channel_test(&self, account: &str) -> Result<(), String> {
        let out = self.paymux(&["channel", "test", account]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `paymux serve` (not sandbox); returns the process and its base URL.
    pub fn serve(&self, config: &Path) -> (Child, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_paymux"))
            .args(["serve", "--database-url", &self.db_url, "--config"])
            .arg(config)
            .arg("--master-key-file")
            .arg(&self.master_key_file)
            .env("PAYMUX_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("paymux starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut base = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(url) = line.strip_prefix("paymux listening on ") {
                base = Some(url.trim().to_string());
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        (child, base.expect("paymux serve printed its address"))
    }
}
