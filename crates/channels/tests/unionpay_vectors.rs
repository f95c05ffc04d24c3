//! UnionPay ACP 5.1.0 signing, `certId`, PKCS#12 loading, certificate trust
//! checks and callback verification against real vectors: the official test
//! PFX and notifies from yansongda/pay, the official SDK demo's sample, and
//! the official SDK's test and production roots (each file in
//! `tests/vectors/` names its source). The vectors' certificates have all
//! expired, so every check runs at an injected "now".

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use paymux_channels::unionpay::certs::{cert_id_of_pem, SigningIdentity, TrustAnchors};
use paymux_channels::unionpay::sign::{self, Params};
use paymux_channels::unionpay::{Unionpay, UnionpayConfig};
use paymux_channels::{Callback, Channel, ChannelError, TradeState};
use serde_json::Value;

fn vector(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn params(v: &Value) -> Params {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect::<BTreeMap<_, _>>()
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

fn sign_vector() -> Value {
    vector("unionpay_acp510_sign_yansongda.json")
}

fn notify_vector() -> Value {
    vector("unionpay_acp510_notify_verify.json")
}

fn test_anchors(validate_cn_name: bool) -> TrustAnchors {
    let ta = &notify_vector()["trust_anchors_test_env"];
    TrustAnchors::new(
        ta["acp_test_root_pem"].as_str().unwrap(),
        ta["acp_test_middle_pem"].as_str().unwrap(),
        validate_cn_name,
    )
    .unwrap()
}

fn pfx_identity() -> SigningIdentity {
    let km = &sign_vector()["key_material"];
    let der = B64.decode(km["pfx_b64"].as_str().unwrap()).unwrap();
    SigningIdentity::from_pkcs12(&der, km["pfx_password"].as_str().unwrap()).unwrap()
}

#[test]
fn the_official_test_pfx_loads_with_its_cert_id() {
    let v = sign_vector();
    let identity = pfx_identity();
    // The file also holds the CA certificates; the signing one is picked by key.
    assert_eq!(
        identity.cert_id,
        v["key_material"]["certId"].as_str().unwrap()
    );
    assert_eq!(identity.cert_id, "69903319369");
    assert_eq!(cert_id_of_pem(&identity.cert_pem).unwrap(), "69903319369");
    // The same key and certificate as PEM give the same identity.
    let pem = SigningIdentity::from_pem(
        v["key_material"]["private_key_pkcs8_pem (extracted)"]
            .as_str()
            .unwrap(),
        v["key_material"]["sign_cert_pem (extracted)"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(pem.cert_id, identity.cert_id);
}

#[test]
fn a_pfx_with_the_wrong_password_or_garbage_is_refused() {
    let km = &sign_vector()["key_material"];
    let der = B64.decode(km["pfx_b64"].as_str().unwrap()).unwrap();
    let err = SigningIdentity::from_pkcs12(&der, "111111").unwrap_err();
    assert!(err.to_string().contains("wrong password"), "{err}");
    assert!(SigningIdentity::from_pkcs12(b"not a pfx", "000000").is_err());
    assert!(SigningIdentity::from_pkcs12(&der[..der.len() / 2], "000000").is_err());
}

#[test]
fn a_key_with_someone_elses_certificate_is_refused() {
    let v = sign_vector();
    let other = paymux_channels::keys::PrivateKey::generate_pkcs8_pem().unwrap();
    let err = SigningIdentity::from_pem(
        &other,
        v["key_material"]["sign_cert_pem (extracted)"]
            .as_str()
            .unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not for this private key"),
        "{err}"
    );
}

#[test]
fn request_signature_matches_yansongda_bit_for_bit() {
    let v = sign_vector();
    let p = params(&v["input"]["params"]);
    assert_eq!(
        sign::string_data(&p),
        v["expected"]["stringData"].as_str().unwrap()
    );
    assert_eq!(
        sign::digest_hex(&p),
        v["expected"]["sha256_hex"].as_str().unwrap()
    );
    let identity = pfx_identity();
    let sig = sign::sign(&identity.key, &p).unwrap();
    assert_eq!(sig, v["expected"]["signature"].as_str().unwrap());
    // An empty `signature` field, as upstream passes it, is not signed.
    let mut with_empty = p.clone();
    with_empty.insert("signature".into(), String::new());
    assert_eq!(sign::sign(&identity.key, &with_empty).unwrap(), sig);
}

#[test]
fn notifies_and_answers_verify_through_the_test_chain() {
    let v = notify_vector();
    let cases = v["cases"].as_array().unwrap();
    // Each case at a moment inside its certificate's validity.
    let whens = [at(2022, 9, 8), at(2022, 9, 11), at(2018, 7, 26)];
    for (case, now) in cases.iter().zip(whens) {
        let p = params(&case["params"]);
        assert_eq!(
            sign::string_data(&p),
            case["expected_stringData"].as_str().unwrap(),
            "{}",
            case["name"]
        );
        // The demo sample's certificate is a test-environment one
        // (`00040000:SIGN`): accepted only with validate_cn_name off.
        let test_env_cert = case["name"].as_str().unwrap().contains("test env");
        let anchors = test_anchors(!test_env_cert);
        let key = anchors
            .verify_sign_cert(&p["signPubKeyCert"], now)
            .unwrap_or_else(|e| panic!("{}: {e}", case["name"]));
        sign::verify(&key, &p).unwrap();
        if test_env_cert {
            let err = test_anchors(true)
                .verify_sign_cert(&p["signPubKeyCert"], now)
                .unwrap_err();
            assert!(err.to_string().contains("not UnionPay's"), "{err}");
        }
        // One changed field and the signature no longer verifies.
        let mut tampered = p.clone();
        tampered.insert("txnAmt".into(), "100000".into());
        assert!(matches!(
            sign::verify(&key, &tampered),
            Err(ChannelError::InvalidSignature(_))
        ));
    }
}

#[test]
fn an_expired_or_not_yet_valid_certificate_is_refused() {
    let v = notify_vector();
    let cert = v["cases"][0]["params"]["signPubKeyCert"].as_str().unwrap();
    let anchors = test_anchors(true);
    for now in [at(2025, 8, 1), at(2020, 7, 1)] {
        let err = anchors.verify_sign_cert(cert, now).unwrap_err();
        assert!(err.to_string().contains("not valid now"), "{now}: {err}");
    }
}

#[test]
fn a_certificate_outside_the_configured_chain_is_refused() {
    let roots = vector("unionpay_test_and_prod_roots.json");
    let certs = &roots["certs"];
    // The production anchors do not vouch for a test-environment certificate.
    let prod = TrustAnchors::new(
        certs["acp_prod_root"]["pem"].as_str().unwrap(),
        certs["acp_prod_middle"]["pem"].as_str().unwrap(),
        true,
    )
    .unwrap();
    let v = notify_vector();
    let cert = v["cases"][0]["params"]["signPubKeyCert"].as_str().unwrap();
    let err = prod.verify_sign_cert(cert, at(2022, 9, 8)).unwrap_err();
    assert!(err.to_string().contains("does not chain"), "{err}");
    // The test pair from the roots file is the same pair as the notify file's.
    let test = TrustAnchors::new(
        certs["acp_test_root"]["pem"].as_str().unwrap(),
        certs["acp_test_middle"]["pem"].as_str().unwrap(),
        true,
    )
    .unwrap();
    test.verify_sign_cert(cert, at(2022, 9, 8)).unwrap();
    // Anchors that do not chain are a configuration error.
    assert!(TrustAnchors::new(
        certs["acp_prod_root"]["pem"].as_str().unwrap(),
        certs["acp_test_middle"]["pem"].as_str().unwrap(),
        true,
    )
    .is_err());
}

#[test]
fn the_merchants_own_certificate_is_not_unionpays() {
    // It chains to the same test CA and is valid in 2022, but it is the
    // merchant's, not UnionPay's: its key must never verify a callback.
    let v = sign_vector();
    let cert = v["key_material"]["sign_cert_pem (extracted)"]
        .as_str()
        .unwrap();
    let err = test_anchors(true)
        .verify_sign_cert(cert, at(2022, 9, 8))
        .unwrap_err();
    assert!(err.to_string().contains("not UnionPay's"), "{err}");
}

fn channel(mer_id: &str) -> Unionpay {
    let s = sign_vector();
    let ta = &notify_vector()["trust_anchors_test_env"];
    Unionpay::new(
        UnionpayConfig {
            base_url: "https://gateway.test.95516.com".into(),
            mer_id: mer_id.into(),
            sign_pfx: Some(s["key_material"]["pfx_b64"].as_str().unwrap().into()),
            sign_pfx_password: Some("000000".into()),
            private_key_pem: None,
            sign_cert_pem: None,
            root_cert_pem: ta["acp_test_root_pem"].as_str().unwrap().into(),
            middle_cert_pem: ta["acp_test_middle_pem"].as_str().unwrap().into(),
            front_url: None,
            validate_cn_name: true,
        },
        reqwest::Client::new(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_real_back_notify_parses_as_a_paid_trade() {
    let v = notify_vector();
    let case = &v["cases"][0];
    let body = sign::encode_form(&params(&case["params"]));
    // Percent-encoded on the wire: base64 '+' arrives as %2B.
    assert!(body.contains("%2B"));
    let headers = http::HeaderMap::new();
    let cb = || Callback {
        headers: &headers,
        body: body.as_bytes(),
    };
    let ch = channel("777290058167151");
    assert_eq!(ch.cert_id(), "69903319369");
    let n = ch.parse_callback(cb(), at(2022, 9, 8)).await.unwrap();
    assert_eq!(n.trade.out_trade_no, "yansongda20220908132206");
    assert_eq!(n.trade.state, TradeState::Paid);
    assert_eq!(n.trade.amount.unwrap().minor, 1);
    assert_eq!(
        n.trade.transaction_id.as_deref(),
        Some("782209081322060674028")
    );
    assert_eq!(n.event_id, "782209081322060674028");

    // Expired by now: refused.
    assert!(matches!(
        ch.parse_callback(cb(), at(2026, 1, 1)).await,
        Err(ChannelError::InvalidSignature(_))
    ));
    // Another merchant's notify: refused after verifying.
    let err = channel("777290058167152")
        .parse_callback(cb(), at(2022, 9, 8))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("merId"), "{err}");
    // A tampered amount: refused.
    let mut p = params(&case["params"]);
    p.insert("txnAmt".into(), "2".into());
    let tampered = sign::encode_form(&p);
    assert!(matches!(
        ch.parse_callback(
            Callback {
                headers: &headers,
                body: tampered.as_bytes()
            },
            at(2022, 9, 8)
        )
        .await,
        Err(ChannelError::InvalidSignature(_))
    ));
}

#[test]
fn the_callback_answer_is_http_200() {
    let ch = channel("777290058167151");
    let ok = ch.callback_reply(true);
    assert_eq!((ok.status, ok.body.as_slice()), (200, b"ok".as_slice()));
    assert_ne!(ch.callback_reply(false).status, 200);
}

#[test]
fn openssl_legacy_pfx_loads_and_a_pbes2_pfx_is_refused_plainly() {
    let v = vector("pkcs12_openssl3.json");
    let password = v["password"].as_str().unwrap();
    let legacy = B64.decode(v["legacy_pfx_b64"].as_str().unwrap()).unwrap();
    let identity = SigningIdentity::from_pkcs12(&legacy, password).unwrap();
    assert_eq!(identity.cert_id, v["expected_cert_id"].as_str().unwrap());
    let modern = B64.decode(v["modern_pfx_b64"].as_str().unwrap()).unwrap();
    let err = SigningIdentity::from_pkcs12(&modern, password).unwrap_err();
    assert!(err.to_string().contains("-legacy"), "{err}");
}

/// Serves one raw HTTP answer on a local port, the way UnionPay's gateway
/// answers (`k=v&…`, values unencoded); returns the base URL.
fn one_answer(body: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the headers and the form body the client sends.
        loop {
            let n = conn.read(&mut buf).unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain;charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(body.as_bytes()).unwrap();
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_real_query_answer_reads_as_paid() {
    // yansongda's recorded queryTrans.do answer (origRespCode 00), served as
    // the gateway sends it, read by the client at a time its certificate was valid.
    let v = notify_vector();
    let answer = params(&v["cases"][1]["params"]);
    let base = one_answer(sign::encode_answer(&answer));
    let mut ch = channel("777290058167151");
    let clock = std::sync::Arc::new(paymux_core::ManualClock::new(at(2022, 9, 11)));
    let mut config = ch.config().clone();
    config.base_url = base;
    ch = Unionpay::new(config, reqwest::Client::new())
        .unwrap()
        .with_clock(clock);
    let trade = ch.query("pay20220911041647").await.unwrap();
    assert_eq!(trade.state, TradeState::Paid);
    assert_eq!(trade.amount.unwrap().minor, 1);
    assert_eq!(
        trade.transaction_id.as_deref(),
        Some("512209110416475616528")
    );
    assert_eq!(trade.merchant_account.as_deref(), Some("777290058167151"));
}
