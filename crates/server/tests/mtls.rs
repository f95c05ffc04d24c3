//! paymux serving HTTPS itself with client certificates: an app bound to a
//! certificate pays over mutual TLS, a connection without a certificate is
//! refused when certificates are required, and another client's
//! certificate does not open a bound app.

#[macro_use]
mod common;

use std::path::Path;

use common::spawn_app;
use paymux_server::client::MerchantClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use serde_json::json;

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "paymux test CA");
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate and its key, both PEM.
    fn leaf(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn https_client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()]);
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn order(order_no: &str, notify_url: &str) -> serde_json::Value {
    json!({
        "merchant_order_no": order_no,
        "amount": 100,
        "channel": "wechat",
        "method": "native",
        "description": "Tea",
        "notify_url": notify_url,
    })
}

on_every_backend!(
    an_app_bound_to_a_client_certificate_pays_over_mutual_tls,
    |db| {
        let pki = Pki::new();
        let dir =
            std::env::temp_dir().join(format!("paymux-mtls-{}", paymux_core::id::new_id("t")));
        std::fs::create_dir_all(&dir).unwrap();
        let (server_cert, server_key) = pki.leaf("paymux", ExtendedKeyUsagePurpose::ServerAuth);
        // The chain the server presents, ending in its CA (which the sandbox's
        // own channel calls then trust).
        let cert_file = write(&dir, "server.pem", &format!("{server_cert}{}", pki.ca_pem));
        let key_file = write(&dir, "server.key", &server_key);
        let ca_file = write(&dir, "ca.pem", &pki.ca_pem);
        let (mall_cert, mall_key) = pki.leaf("mall", ExtendedKeyUsagePurpose::ClientAuth);
        let (other_cert, other_key) = pki.leaf("other", ExtendedKeyUsagePurpose::ClientAuth);

        let app = spawn_app(&db, |c| {
            c.tls_cert_file = Some(cert_file.clone());
            c.tls_key_file = Some(key_file.clone());
            c.client_ca_file = Some(ca_file.clone());
        })
        .await;
        let base = app.server.base_url();
        assert!(base.starts_with("https://"), "{base}");
        paymux_server::merchants::bind_app_client_cert(
            &*db.store,
            &app.client.app_id,
            Some(&mall_cert),
        )
        .await
        .unwrap();

        // With its own certificate the app pays.
        let mall = MerchantClient::new(&base, &app.client.app_id, &app.client.secret)
            .with_http(https_client(&pki.ca_pem, Some((&mall_cert, &mall_key))));
        let r = mall
            .post("/v1/payments", &order("ORDER-MTLS", &app.receiver.url))
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        assert!(r.signature_ok);
        let id = r.body["id"].as_str().unwrap();
        let got = mall.get(&format!("/v1/payments/{id}")).await.unwrap();
        assert_eq!(got.body["status"], "pending");

        // Another valid client certificate, or none: the bound app is refused.
        for http in [
            https_client(&pki.ca_pem, Some((&other_cert, &other_key))),
            https_client(&pki.ca_pem, None),
        ] {
            let stranger =
                MerchantClient::new(&base, &app.client.app_id, &app.client.secret).with_http(http);
            let r = stranger
                .post("/v1/payments", &order("ORDER-MTLS-2", &app.receiver.url))
                .await
                .unwrap();
            assert_eq!(
                (r.status, r.error_code()),
                (401, Some("CLIENT_CERT_REQUIRED")),
                "{}",
                r.body
            );
        }
        app.server.stop();

        // With client certificates required, a connection without one is refused.
        let strict = spawn_app(&db, |c| {
            c.tls_cert_file = Some(cert_file.clone());
            c.tls_key_file = Some(key_file.clone());
            c.client_ca_file = Some(ca_file.clone());
            c.client_cert_required = true;
        })
        .await;
        let base = strict.server.base_url();
        let refused = https_client(&pki.ca_pem, None)
            .get(format!("{base}/healthz"))
            .send()
            .await;
        assert!(
            refused.is_err(),
            "the handshake fails without a client certificate"
        );
        let ok = https_client(&pki.ca_pem, Some((&mall_cert, &mall_key)))
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        strict.server.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }
);
