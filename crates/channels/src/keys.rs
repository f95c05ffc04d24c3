//! RSA key material as payment channels hand it out: PEM private keys
//! (PKCS#8 or PKCS#1), PEM public keys (SPKI) and X.509 certificates.
//! Signing is SHA256withRSA (RSASSA-PKCS1-v1_5 with SHA-256), the scheme
//! WeChat Pay v3 uses in both directions; everything runs on aws-lc-rs.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair, ParsedPublicKey, RsaKeyPair};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use crate::ChannelError;

/// A merchant's (or a simulated platform's) RSA signing key.
pub struct PrivateKey(RsaKeyPair);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, not even in debug logs.
        f.write_str("PrivateKey(RSA, redacted)")
    }
}

impl PrivateKey {
    /// Parses the first private key in `pem`: `BEGIN PRIVATE KEY` (PKCS#8, what
    /// WeChat's certificate tool writes to apiclient_key.pem) or
    /// `BEGIN RSA PRIVATE KEY` (PKCS#1, what older openssl versions write).
    pub fn from_pem(pem: &str) -> Result<Self, ChannelError> {
        for block in pem_blocks(pem)? {
            let parsed = match block.label.as_str() {
                "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&block.contents),
                "RSA PRIVATE KEY" => RsaKeyPair::from_der(&block.contents),
                _ => continue,
            };
            return parsed
                .map(PrivateKey)
                .map_err(|e| ChannelError::Config(format!("unusable RSA private key: {e}")));
        }
        Err(ChannelError::Config(
            "no PRIVATE KEY or RSA PRIVATE KEY block in PEM".into(),
        ))
    }

    /// From PKCS#8 DER (what a PKCS#12 key bag holds once decrypted).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, ChannelError> {
        RsaKeyPair::from_pkcs8(der)
            .map(PrivateKey)
            .map_err(|e| ChannelError::Config(format!("unusable RSA private key: {e}")))
    }

    /// A fresh RSA-2048 key, as PKCS#8 PEM (for sandboxes, simulators and tests).
    pub fn generate_pkcs8_pem() -> Result<String, ChannelError> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| ChannelError::Config("RSA key generation failed".into()))?;
        let der = pair
            .as_der()
            .map_err(|_| ChannelError::Config("RSA key encoding failed".into()))?;
        Ok(pem_encode("PRIVATE KEY", der.as_ref()))
    }

    /// SHA256withRSA over `message`, base64 (standard alphabet, padded).
    /// PKCS#1 v1.5 is deterministic, so equal inputs give equal signatures.
    pub fn sign_sha256(&self, message: &[u8]) -> Result<String, ChannelError> {
        let mut sig = vec![0u8; self.0.public_modulus_len()];
        self.0
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut sig,
            )
            .map_err(|_| ChannelError::Config("RSA signing failed".into()))?;
        Ok(B64.encode(sig))
    }

    /// The matching public key.
    pub fn public_key(&self) -> Result<PublicKey, ChannelError> {
        let der = self
            .0
            .public_key()
            .as_der()
            .map_err(|_| ChannelError::Config("RSA public key encoding failed".into()))?;
        PublicKey::from_der(der.as_ref())
    }
}

/// An RSA public key that verifies SHA256withRSA signatures.
#[derive(Clone)]
pub struct PublicKey {
    parsed: ParsedPublicKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(RSA)")
    }
}

impl PublicKey {
    /// From DER: SubjectPublicKeyInfo or a bare PKCS#1 RSAPublicKey.
    pub fn from_der(der: &[u8]) -> Result<Self, ChannelError> {
        let parsed = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
            .map_err(|e| ChannelError::Config(format!("unusable RSA public key: {e}")))?;
        Ok(PublicKey { parsed })
    }

    /// From PEM `BEGIN PUBLIC KEY` (SPKI, the format of WeChat Pay public keys)
    /// or `BEGIN RSA PUBLIC KEY` (PKCS#1).
    pub fn from_pem(pem: &str) -> Result<Self, ChannelError> {
        for block in pem_blocks(pem)? {
            if block.label == "PUBLIC KEY" || block.label == "RSA PUBLIC KEY" {
                return Self::from_der(&block.contents);
            }
        }
        Err(ChannelError::Config("no PUBLIC KEY block in PEM".into()))
    }

    /// From either a public key PEM or a certificate PEM, whichever `pem` holds.
    pub fn from_key_or_certificate_pem(pem: &str) -> Result<Self, ChannelError> {
        if pem.contains("-----BEGIN CERTIFICATE-----") {
            return Ok(Certificate::from_pem(pem)?.public_key);
        }
        Self::from_pem(pem)
    }

    /// The bare PKCS#1 RSAPublicKey inside the SubjectPublicKeyInfo (what a
    /// certificate builder embeds for a key it does not hold the private half of).
    pub fn pkcs1_der(&self) -> Result<Vec<u8>, ChannelError> {
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(self.parsed.as_ref())
            .map_err(|e| ChannelError::Config(format!("public key: {e}")))?;
        Ok(spki.subject_public_key.data.to_vec())
    }

    /// SubjectPublicKeyInfo as PEM.
    pub fn to_pem(&self) -> String {
        pem_encode("PUBLIC KEY", self.parsed.as_ref())
    }

    /// Verifies a base64 SHA256withRSA signature over `message`.
    pub fn verify_sha256(&self, message: &[u8], signature_b64: &str) -> Result<(), ChannelError> {
        let sig = B64
            .decode(signature_b64.trim())
            .map_err(|_| ChannelError::InvalidSignature("signature is not base64".into()))?;
        self.parsed
            .verify_sig(message, &sig)
            .map_err(|_| ChannelError::InvalidSignature("signature does not verify".into()))
    }
}

/// What paymux needs from an X.509 certificate.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The serial number as uppercase hex without leading zeros: WeChat's
    /// `serial_no` / `Wechatpay-Serial` format (the SDKs print the serial as a
    /// big integer in base 16).
    pub serial_no: String,
    pub public_key: PublicKey,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl Certificate {
    /// Parses the first `BEGIN CERTIFICATE` block of `pem`.
    pub fn from_pem(pem: &str) -> Result<Self, ChannelError> {
        for block in pem_blocks(pem)? {
            if block.label == "CERTIFICATE" {
                return Self::from_der(&block.contents);
            }
        }
        Err(ChannelError::Config("no CERTIFICATE block in PEM".into()))
    }

    pub fn from_der(der: &[u8]) -> Result<Self, ChannelError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| ChannelError::Config(format!("unparsable certificate: {e}")))?;
        let public_key = PublicKey::from_der(cert.public_key().raw)?;
        let validity = cert.validity();
        let ts = |t: i64| {
            DateTime::<Utc>::from_timestamp(t, 0)
                .ok_or_else(|| ChannelError::Config("certificate validity out of range".into()))
        };
        Ok(Certificate {
            serial_no: serial_hex(cert.raw_serial()),
            public_key,
            not_before: ts(validity.not_before.timestamp())?,
            not_after: ts(validity.not_after.timestamp())?,
        })
    }

    /// Whether `now` lies inside the certificate's validity period.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// A DER integer's bytes as big-integer uppercase hex ("0A1B" → "A1B").
pub fn serial_hex(raw: &[u8]) -> String {
    let hex = hex::encode_upper(raw);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Wraps DER bytes into PEM with 64-column lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub(crate) fn pem_blocks(pem: &str) -> Result<Vec<Pem>, ChannelError> {
    // Keys pasted into JSON configs often arrive with literal "\n" sequences
    // or CRLF line ends; normalise both before reading the blocks.
    let text = pem.replace("\\n", "\n").replace('\r', "");
    let mut blocks = Vec::new();
    for block in Pem::iter_from_buffer(text.as_bytes()) {
        match block {
            Ok(b) => blocks.push(b),
            Err(e) => return Err(ChannelError::Config(format!("invalid PEM: {e}"))),
        }
    }
    if blocks.is_empty() {
        return Err(ChannelError::Config("no PEM block found".into()));
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips() {
        let pem = PrivateKey::generate_pkcs8_pem().unwrap();
        let key = PrivateKey::from_pem(&pem).unwrap();
        let public = PublicKey::from_pem(&key.public_key().unwrap().to_pem()).unwrap();
        let sig = key.sign_sha256(b"hello").unwrap();
        public.verify_sha256(b"hello", &sig).unwrap();
        assert!(public.verify_sha256(b"hellO", &sig).is_err());
        assert!(public.verify_sha256(b"hello", "%%%").is_err());
    }

    #[test]
    fn serial_hex_drops_leading_zeros() {
        assert_eq!(serial_hex(&[0x00, 0xD7, 0xCE]), "D7CE");
        assert_eq!(serial_hex(&[0x0A, 0x1B]), "A1B");
        assert_eq!(serial_hex(&[0x00]), "0");
    }

    #[test]
    fn rejects_garbage() {
        assert!(PrivateKey::from_pem("nope").is_err());
        assert!(PublicKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
        assert!(Certificate::from_pem("").is_err());
    }
}
