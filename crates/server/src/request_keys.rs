//! Request signatures with a merchant's own key pair (Ed25519 or
//! RSA-SHA256 over the same message as the HMAC scheme): the merchant keeps
//! the private key, paymux holds only the public one, so nothing stored at
//! paymux can sign a request in the merchant's name.

use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use paymux_store::{RequestKey, RequestKeyAlg};

/// Parses a public key as the algorithm needs it, or says why it cannot be used.
pub fn parse(alg: RequestKeyAlg, pem: &str) -> Result<ParsedPublicKey, String> {
    let der = spki_der(pem)?;
    let algorithm: &'static dyn signature::VerificationAlgorithm = match alg {
        RequestKeyAlg::Ed25519 => &signature::ED25519,
        RequestKeyAlg::RsaSha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
    };
    ParsedPublicKey::new(algorithm, &der)
        .map_err(|e| format!("not a usable {} public key: {e}", alg.as_str()))
}

/// Whether `signature_b64` is the key's signature of `message`.
pub fn verify(key: &RequestKey, message: &[u8], signature_b64: &str) -> bool {
    let Ok(parsed) = parse(key.alg, &key.public_key_pem) else {
        return false;
    };
    let Ok(sig) = B64.decode(signature_b64.trim()) else {
        return false;
    };
    parsed.verify_sig(message, &sig).is_ok()
}

/// The DER inside a `BEGIN PUBLIC KEY` PEM block.
fn spki_der(pem: &str) -> Result<Vec<u8>, String> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let start = pem
        .find(BEGIN)
        .ok_or("expected a PEM block BEGIN PUBLIC KEY (SubjectPublicKeyInfo)")?
        + BEGIN.len();
    let end = pem[start..]
        .find(END)
        .ok_or("the PEM block has no END line")?
        + start;
    let body: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    B64.decode(body)
        .map_err(|_| "the PEM block is not base64".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

    fn pem(der: &[u8]) -> String {
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(der)
        )
    }

    #[test]
    fn an_ed25519_signature_verifies_and_a_forged_one_does_not() {
        let pair = Ed25519KeyPair::generate().unwrap();
        let spki = pair.public_key().as_der().unwrap();
        let key = RequestKey {
            alg: RequestKeyAlg::Ed25519,
            public_key_pem: pem(spki.as_ref()),
        };
        let msg = b"POST\n/v1/payments\n1700000000\nnonce-1234\n{}\n";
        let sig = B64.encode(pair.sign(msg).as_ref());
        assert!(verify(&key, msg, &sig));
        assert!(!verify(
            &key,
            b"POST\n/v1/payments\n1700000000\nnonce-1234\n{ }\n",
            &sig
        ));
        assert!(!verify(&key, msg, "AAAA"));
        // The key of one algorithm is refused for the other.
        assert!(parse(RequestKeyAlg::RsaSha256, &key.public_key_pem).is_err());
        assert!(parse(RequestKeyAlg::Ed25519, "not a pem").is_err());
    }
}
