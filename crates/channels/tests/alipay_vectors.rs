//! Alipay signing, verification and certificate serials against real vectors
//! from Alipay's official SDKs and widely used open-source SDKs (each file in
//! `tests/vectors/` names its source).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use paymux_channels::alipay::sign::{self, Params};
use paymux_channels::alipay::{Alipay, AlipayConfig};
use paymux_channels::keys::{pem_encode, PrivateKey, PublicKey};
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

fn spki(b64: &str) -> PublicKey {
    PublicKey::from_der(&B64.decode(b64).unwrap()).unwrap()
}

#[test]
fn rsa2_request_signatures_match_the_java_sdk() {
    let v = vector("alipay_rsa_rsa2_sign_java_sdk.json");
    let der = B64
        .decode(
            v["key_material"]["app_private_key_pkcs8_der_b64"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let key = PrivateKey::from_pem(&pem_encode("PRIVATE KEY", &der)).unwrap();
    let mut checked = 0;
    for case in v["cases"].as_array().unwrap() {
        let p = params(&case["params"]);
        assert_eq!(
            sign::sign_content(&p, &["sign"]),
            case["expected_content"].as_str().unwrap()
        );
        // paymux signs RSA2 only; the SHA1 case checks the content rule alone.
        if case["hash"] == "SHA256" {
            assert_eq!(
                sign::sign_request(&key, &p).unwrap(),
                case["expected_sign"].as_str().unwrap()
            );
            let mut signed = p.clone();
            signed.insert(
                "sign".into(),
                case["expected_sign"].as_str().unwrap().into(),
            );
            sign::verify_request(&key.public_key().unwrap(), &signed).unwrap();
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
}

#[test]
fn certificate_mode_request_signature_and_serials() {
    let v = vector("alipay_rsa2_sign_cert_mode_yansongda.json");
    let km = &v["key_material"];
    let der = B64
        .decode(km["app_private_key_pkcs1_der_b64"].as_str().unwrap())
        .unwrap();
    let key = PrivateKey::from_pem(&pem_encode("RSA PRIVATE KEY", &der)).unwrap();
    let expected = &v["expected"];
    assert_eq!(
        sign::cert_sn(km["app_public_cert_pem"].as_str().unwrap()).unwrap(),
        expected["app_cert_sn_from_app_public_cert"]
            .as_str()
            .unwrap()
    );
    assert_eq!(
        sign::root_cert_sn(km["alipay_root_cert_pem_bundle"].as_str().unwrap()).unwrap(),
        expected["alipay_root_cert_sn_from_bundle"]
            .as_str()
            .unwrap()
    );
    assert_eq!(
        sign::cert_sn(km["alipay_public_cert_pem"].as_str().unwrap()).unwrap(),
        expected["alipay_cert_sn_from_alipay_public_cert"]
            .as_str()
            .unwrap()
    );
    let p = params(&v["input"]["params"]);
    assert_eq!(
        sign::sign_content(&p, &["sign"]),
        expected["content"].as_str().unwrap()
    );
    assert_eq!(
        sign::sign_request(&key, &p).unwrap(),
        expected["sign"].as_str().unwrap()
    );
}

#[test]
fn certificate_serials_match_the_node_sdk() {
    let v = vector("alipay_cert_sn.json");
    let mut roots = 0;
    for case in v["cases"].as_array().unwrap() {
        let pem = case["cert_pem"].as_str().unwrap();
        if let Some(sn) = case["expected_sn"].as_str() {
            assert_eq!(sign::cert_sn(pem).unwrap(), sn, "{}", case["file"]);
        }
        if let Some(root) = case["expected_root_sn"].as_str() {
            // The bundle mixes SM2, RSA and ECDSA roots; only RSA ones count.
            assert_eq!(sign::root_cert_sn(pem).unwrap(), root);
            roots += 1;
        }
    }
    assert_eq!(roots, 1);
}

#[test]
fn trade_notifies_verify_without_sign_and_sign_type() {
    let v = vector("alipay_notify_verify_nodejs.json");
    let case = &v["cases"][0];
    let key = spki(case["alipay_public_key_spki_der_b64"].as_str().unwrap());
    let p = params(&case["params"]);
    assert_eq!(
        sign::sign_content(&p, &["sign", "sign_type"]),
        case["expected_content"].as_str().unwrap()
    );
    sign::verify_notify(&key, &p).unwrap();
    // Through the wire encoding and back: the same parameters verify.
    let decoded = sign::parse_form(sign::encode_form(&p).as_bytes()).unwrap();
    sign::verify_notify(&key, &decoded).unwrap();
    // Keeping sign_type in the content does not verify.
    let sig = &p["sign"];
    assert!(key
        .verify_sha256(sign::sign_content(&p, &["sign"]).as_bytes(), sig)
        .is_err());
    // Any changed value fails.
    let mut tampered = p.clone();
    tampered.insert("total_amount".into(), "100.00".into());
    assert!(matches!(
        sign::verify_notify(&key, &tampered),
        Err(ChannelError::InvalidSignature(_))
    ));
    // RSA (SHA1) is refused outright.
    let mut rsa1 = p.clone();
    rsa1.insert("sign_type".into(), "RSA".into());
    assert!(sign::verify_notify(&key, &rsa1).is_err());

    // The service-market message is signed with sign_type kept (V2): it
    // verifies only that way, so the trade-notify rule must refuse it.
    let market = &v["cases"][1];
    let key = PublicKey::from_pem(market["alipay_public_key_pem"].as_str().unwrap()).unwrap();
    let p = params(&market["params"]);
    assert_eq!(
        sign::sign_content(&p, &["sign"]),
        market["expected_content"].as_str().unwrap()
    );
    sign::verify_request(&key, &p).unwrap();
    assert!(sign::verify_notify(&key, &p).is_err());
}

fn sandbox_channel(seller_id: Option<&str>) -> Alipay {
    let cert = vector("alipay_rsa2_sign_cert_mode_yansongda.json");
    let km = &cert["key_material"];
    let der = B64
        .decode(km["app_private_key_pkcs1_der_b64"].as_str().unwrap())
        .unwrap();
    let config = AlipayConfig {
        gateway_url: "https://openapi-sandbox.dl.alipaydev.com/gateway.do".into(),
        app_id: "9021000122682882".into(),
        private_key_pem: pem_encode("RSA PRIVATE KEY", &der),
        alipay_public_key_pem: None,
        app_cert_pem: Some(km["app_public_cert_pem"].as_str().unwrap().into()),
        alipay_cert_pem: Some(km["alipay_public_cert_pem"].as_str().unwrap().into()),
        alipay_root_cert_pem: Some(km["alipay_root_cert_pem_bundle"].as_str().unwrap().into()),
        seller_id: seller_id.map(str::to_string),
        encrypt_key: None,
        barcode_timeout_secs: None,
        barcode_poll_ms: None,
    };
    Alipay::new(config, reqwest::Client::new()).unwrap()
}

#[tokio::test]
async fn sandbox_notify_parses_through_the_channel_in_certificate_mode() {
    let v = vector("alipay_notify_verify_yansongda_sandbox.json");
    let case = &v["cases"][0];
    let p = params(&case["params_decoded"]);
    assert_eq!(
        sign::sign_content(&p, &["sign", "sign_type"]),
        case["expected_content"].as_str().unwrap()
    );
    // On the wire the '+' of the subject travels as %2B.
    let body = sign::encode_form(&p);
    assert!(body.contains("yansongda%2B"));
    let headers = http::HeaderMap::new();
    let ch = sandbox_channel(Some("2088721003899159"));
    let n = ch
        .parse_callback(
            Callback {
                headers: &headers,
                body: body.as_bytes(),
            },
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(n.event_id, "2023122101222162644199160501632046");
    assert_eq!(n.trade.out_trade_no, "1703147160");
    assert_eq!(n.trade.state, TradeState::Paid);
    assert_eq!(n.trade.amount.unwrap().minor, 1);
    assert_eq!(
        n.trade.transaction_id.as_deref(),
        Some("2023122122001499160501589436")
    );
    assert_eq!(
        sign::to_alipay_time(n.trade.paid_at.unwrap()),
        "2023-12-21 16:26:43"
    );

    // Another seller's notify, correctly signed, is refused.
    let other = sandbox_channel(Some("2088000000000000"));
    let r = other
        .parse_callback(
            Callback {
                headers: &headers,
                body: body.as_bytes(),
            },
            chrono::Utc::now(),
        )
        .await;
    assert!(r.is_err());

    // A raw '+' means a space: the subject changes and the signature fails.
    let raw_plus = body.replace("yansongda%2B", "yansongda+");
    let r = ch
        .parse_callback(
            Callback {
                headers: &headers,
                body: raw_plus.as_bytes(),
            },
            chrono::Utc::now(),
        )
        .await;
    assert!(matches!(r, Err(ChannelError::InvalidSignature(_))));

    // The return_url (GET query) follows the same rule.
    let ret = &v["cases"][1];
    let query = ret["raw_url"].as_str().unwrap().split_once('?').unwrap().1;
    let p = sign::parse_form(query.as_bytes()).unwrap();
    assert_eq!(p, params(&ret["params_decoded"]));
    let key = PublicKey::from_key_or_certificate_pem(
        v["key_material"]["alipay_public_cert_pem"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    sign::verify_notify(&key, &p).unwrap();
}

#[test]
fn responses_verify_over_the_raw_node() {
    let v = vector("alipay_sync_response_verify.json");
    let cases = v["cases"].as_array().unwrap();

    let node = &cases[0];
    let raw = node["raw_response"].as_str().unwrap();
    let key = PublicKey::from_pem(node["alipay_public_key_pem"].as_str().unwrap()).unwrap();
    let split = sign::split_response(raw, "alipay.open.file.upload").unwrap();
    assert_eq!(
        split.node,
        node["expected_signed_content"].as_str().unwrap()
    );
    key.verify_sha256(split.node.as_bytes(), split.sign.as_deref().unwrap())
        .unwrap();
    // Re-serialised (reordered) JSON does not verify.
    let reparsed: Value = serde_json::from_str(split.node).unwrap();
    let mut keys: Vec<_> = reparsed.as_object().unwrap().iter().collect();
    keys.reverse();
    let reordered = format!(
        "{{{}}}",
        keys.iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(key
        .verify_sha256(reordered.as_bytes(), split.sign.as_deref().unwrap())
        .is_err());

    let gopay = &cases[1];
    let key = spki(gopay["alipay_public_key_spki_der_b64"].as_str().unwrap());
    let content = gopay["expected_signed_content"].as_str().unwrap();
    let sig = gopay["sign"].as_str().unwrap();
    // Wrap it like the gateway does and take it apart again.
    let body = format!("{{\"alipay_trade_query_response\":{content},\"sign\":\"{sig}\"}}");
    let split = sign::split_response(&body, "alipay.trade.query").unwrap();
    assert_eq!(split.node, content);
    key.verify_sha256(split.node.as_bytes(), sig).unwrap();

    let transfer = &cases[2];
    let sandbox = vector("alipay_notify_verify_yansongda_sandbox.json");
    let key = PublicKey::from_key_or_certificate_pem(
        sandbox["key_material"]["alipay_public_cert_pem"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    key.verify_sha256(
        transfer["expected_signed_content"]
            .as_str()
            .unwrap()
            .as_bytes(),
        transfer["sign"].as_str().unwrap(),
    )
    .unwrap();
}

#[test]
fn aes_content_encryption_matches_the_java_sdk() {
    let v = vector("alipay_aes_java_sdk.json");
    let key = v["key_b64"].as_str().unwrap();
    for case in v["cases"].as_array().unwrap() {
        let plain = case["plaintext"].as_str().unwrap();
        let cipher = case["ciphertext_b64"].as_str().unwrap();
        assert_eq!(sign::aes_encrypt(key, plain).unwrap(), cipher);
        assert_eq!(sign::aes_decrypt(key, cipher).unwrap(), plain);
    }
    // Round trip with multi-byte text and a block-aligned length.
    for text in ["{\"subject\":\"支付宝 & more\"}", "0123456789abcdef", ""] {
        let c = sign::aes_encrypt(key, text).unwrap();
        assert_eq!(sign::aes_decrypt(key, &c).unwrap(), text);
    }
    // Another key does not decrypt (bad padding or bad UTF-8), nor does garbage.
    let other = "AAAAAAAAAAAAAAAAAAAAAA==";
    let c = sign::aes_encrypt(key, "{\"out_trade_no\":\"x\"}").unwrap();
    assert!(sign::aes_decrypt(other, &c)
        .map(|p| p != "{\"out_trade_no\":\"x\"}")
        .unwrap_or(true));
    assert!(matches!(
        sign::aes_decrypt(key, "%%%"),
        Err(ChannelError::Decrypt)
    ));
    assert!(matches!(
        sign::aes_encrypt("c2hvcnQ=", "x"),
        Err(ChannelError::Config(_))
    ));
}
