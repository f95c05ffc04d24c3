//! UnionPay's certificates, both ways.
//!
//! - The merchant's signing identity: the RSA key and its certificate, from a
//!   PKCS#12 file (`.pfx` with a password, what UnionPay / CFCA issue) or from
//!   PEM. `certId` is the certificate's serial number in decimal.
//! - UnionPay's signing certificate, which ACP 5.1.0 sends inside every
//!   answer and callback (`signPubKeyCert`): before its key is used it must
//!   chain to the configured intermediate and root, be valid at "now", and
//!   belong to UnionPay (the official SDKs' `verifyCertificate`).

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use chrono::{DateTime, Utc};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::keys::{pem_blocks, pem_encode, PrivateKey, PublicKey};
use crate::ChannelError;

/// The organisation UnionPay's signing certificates name: the third
/// `@`-separated field of their subject CN
/// (`041@8310000000083040@中国银联股份有限公司@00016495`).
pub const UNIONPAY_CN_NAME: &str = "中国银联股份有限公司";

/// What the same field holds in UnionPay's *test* environment certificates
/// (`041@Z2017-11-1@00040000:SIGN@00000001`). The official SDKs accept it
/// only with `ifValidateCNName=false`, which is for the test environment.
pub const TEST_ENV_CN_NAME: &str = "00040000:SIGN";

/// The merchant's key and the certificate UnionPay knows it by.
pub struct SigningIdentity {
    pub key: PrivateKey,
    /// Decimal serial number of the signing certificate (`certId`).
    pub cert_id: String,
    /// The signing certificate (PEM).
    pub cert_pem: String,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("cert_id", &self.cert_id)
            .finish_non_exhaustive()
    }
}

impl SigningIdentity {
    /// From a PKCS#12 file. The file's MAC is checked first, so a wrong
    /// password is reported as such; the certificate used is the one whose
    /// public key matches the private key (UnionPay's files also carry the
    /// CA certificates).
    ///
    /// Supported: the PBE-SHA1-3DES and PBE-SHA1-RC2-40 schemes of the files
    /// UnionPay and CFCA issue. A file written by a recent OpenSSL with its
    /// defaults (PBES2 / AES) is refused with a message saying how to convert it.
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<Self, ChannelError> {
        // The reader asserts on some malformed inputs; a bad file must be an
        // error, never a crash.
        let parsed = std::panic::catch_unwind(|| p12::PFX::parse(der))
            .map_err(|_| ChannelError::Config("unreadable PKCS#12 file".into()))?
            .map_err(|e| ChannelError::Config(format!("unreadable PKCS#12 file: {e}")))?;
        // Files from recent OpenSSL versions MAC with SHA-256 and encrypt
        // with PBES2; this reader knows SHA-1 MACs only. Say so plainly.
        if let Some(mac) = &parsed.mac_data {
            if mac.mac.digest_algorithm != p12::AlgorithmIdentifier::Sha1 {
                return Err(ChannelError::Config(
                    "PKCS#12 file: unsupported MAC/encryption (not the PBE-SHA1-3DES of UnionPay's files); \
                     re-export it with `openssl pkcs12 -legacy`, or give the key and certificate as PEM"
                        .into(),
                ));
            }
        }
        let pfx = std::panic::AssertUnwindSafe(&parsed);
        if !std::panic::catch_unwind(|| pfx.verify_mac(password)).unwrap_or(false) {
            return Err(ChannelError::Config(
                "PKCS#12 file: wrong password, or an encryption scheme other than \
                 PBE-SHA1-3DES (re-export it with `openssl pkcs12 -legacy`, or give the key and certificate as PEM)"
                    .into(),
            ));
        }
        let (keys, certs) =
            std::panic::catch_unwind(|| (pfx.key_bags(password), pfx.cert_x509_bags(password)))
                .map_err(|_| ChannelError::Config("unreadable PKCS#12 contents".into()))?;
        let keys = keys.map_err(|e| ChannelError::Config(format!("PKCS#12 key: {e}")))?;
        let certs =
            certs.map_err(|e| ChannelError::Config(format!("PKCS#12 certificates: {e}")))?;
        let key_der = keys.first().ok_or_else(|| {
            ChannelError::Config(
                "PKCS#12 file has no private key this reader can decrypt (only PBE-SHA1-3DES / RC2)"
                    .into(),
            )
        })?;
        let key = PrivateKey::from_pkcs8_der(key_der)?;
        let public = key.public_key()?.pkcs1_der()?;
        for cert_der in &certs {
            let (_, cert) = X509Certificate::from_der(cert_der)
                .map_err(|e| ChannelError::Config(format!("PKCS#12 certificate: {e}")))?;
            if cert.public_key().subject_public_key.data.as_ref() == public.as_slice() {
                return Ok(SigningIdentity {
                    cert_id: cert_id(&cert),
                    cert_pem: pem_encode("CERTIFICATE", cert_der),
                    key,
                });
            }
        }
        Err(ChannelError::Config(
            "PKCS#12 file has no certificate for its private key".into(),
        ))
    }

    /// From a PEM private key and the PEM signing certificate.
    pub fn from_pem(private_key_pem: &str, cert_pem: &str) -> Result<Self, ChannelError> {
        let key = PrivateKey::from_pem(private_key_pem)?;
        let der = first_cert_der(cert_pem)?;
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|e| ChannelError::Config(format!("signing certificate: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref()
            != key.public_key()?.pkcs1_der()?.as_slice()
        {
            return Err(ChannelError::Config(
                "the signing certificate is not for this private key".into(),
            ));
        }
        Ok(SigningIdentity {
            cert_id: cert_id(&cert),
            cert_pem: pem_encode("CERTIFICATE", &der),
            key,
        })
    }
}

/// ACP's `certId`: the certificate's serial number in decimal.
pub fn cert_id(cert: &X509Certificate<'_>) -> String {
    cert.tbs_certificate.serial.to_string()
}

/// `certId` of a PEM certificate.
pub fn cert_id_of_pem(cert_pem: &str) -> Result<String, ChannelError> {
    let der = first_cert_der(cert_pem)?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| ChannelError::Config(format!("certificate: {e}")))?;
    Ok(cert_id(&cert))
}

fn first_cert_der(pem: &str) -> Result<Vec<u8>, ChannelError> {
    pem_blocks(pem)?
        .into_iter()
        .find(|b| b.label == "CERTIFICATE")
        .map(|b| b.contents)
        .ok_or_else(|| ChannelError::Config("no CERTIFICATE block in PEM".into()))
}

/// Why UnionPay's certificate was refused. Each is its own message so an
/// operator can tell an attack from a stale trust store.
fn refused(why: impl Into<String>) -> ChannelError {
    ChannelError::InvalidSignature(format!("signPubKeyCert refused: {}", why.into()))
}

/// The configured UnionPay root and intermediate (`acp_prod_root.cer`,
/// `acp_prod_middle.cer`, or the test environment's pair).
#[derive(Clone)]
pub struct TrustAnchors {
    root_der: Vec<u8>,
    middle_der: Vec<u8>,
    /// ACP's `ifValidateCNName`: true everywhere but UnionPay's test environment.
    validate_cn_name: bool,
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchors")
            .field("validate_cn_name", &self.validate_cn_name)
            .finish_non_exhaustive()
    }
}

impl TrustAnchors {
    /// Checks that the intermediate is signed by the root (both must be CA
    /// certificates); validity is checked at each verification.
    pub fn new(
        root_pem: &str,
        middle_pem: &str,
        validate_cn_name: bool,
    ) -> Result<Self, ChannelError> {
        let root_der = first_cert_der(root_pem)
            .map_err(|e| ChannelError::Config(format!("root certificate: {e}")))?;
        let middle_der = first_cert_der(middle_pem)
            .map_err(|e| ChannelError::Config(format!("intermediate certificate: {e}")))?;
        let anchors = TrustAnchors {
            root_der,
            middle_der,
            validate_cn_name,
        };
        let root = parse(&anchors.root_der, "root certificate")?;
        let middle = parse(&anchors.middle_der, "intermediate certificate")?;
        require_ca(&root, "root certificate")?;
        require_ca(&middle, "intermediate certificate")?;
        issued_by(&middle, &root).map_err(|e| {
            ChannelError::Config(format!(
                "the intermediate certificate does not chain to the root: {e}"
            ))
        })?;
        issued_by(&root, &root).map_err(|e| {
            ChannelError::Config(format!("the root certificate is not self-signed: {e}"))
        })?;
        Ok(anchors)
    }

    /// Checks a `signPubKeyCert` the way the official SDKs do, then returns
    /// its public key: (1) it chains leaf → intermediate → root, each
    /// signature verified; (2) all three are valid at `now`; (3) the subject
    /// CN's third `@` field is UnionPay's name. Only then may its key verify
    /// anything.
    pub fn verify_sign_cert(
        &self,
        cert_pem: &str,
        now: DateTime<Utc>,
    ) -> Result<PublicKey, ChannelError> {
        let der = first_cert_der(cert_pem).map_err(|e| refused(e.to_string()))?;
        let (_, leaf) =
            X509Certificate::from_der(&der).map_err(|e| refused(format!("unparsable: {e}")))?;
        let middle = parse(&self.middle_der, "intermediate certificate")?;
        let root = parse(&self.root_der, "root certificate")?;
        issued_by(&leaf, &middle).map_err(|e| {
            refused(format!(
                "does not chain to the configured UnionPay certificates: {e}"
            ))
        })?;
        issued_by(&middle, &root)
            .map_err(|e| refused(format!("intermediate does not chain to the root: {e}")))?;
        for (cert, what) in [
            (&leaf, "the certificate"),
            (&middle, "the intermediate"),
            (&root, "the root"),
        ] {
            let validity = cert.validity();
            let t = now.timestamp();
            if t < validity.not_before.timestamp() || t > validity.not_after.timestamp() {
                return Err(refused(format!(
                    "{what} is not valid now (valid {} to {})",
                    validity.not_before, validity.not_after
                )));
            }
        }
        let cn = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(directory_string)
            .ok_or_else(|| refused("no readable subject CN"))?;
        let owner = cn.split('@').nth(2).unwrap_or("");
        let accepted =
            owner == UNIONPAY_CN_NAME || (!self.validate_cn_name && owner == TEST_ENV_CN_NAME);
        if !accepted {
            return Err(refused(format!("not UnionPay's certificate (CN {cn:?})")));
        }
        PublicKey::from_der(leaf.public_key().raw).map_err(|e| refused(e.to_string()))
    }
}

/// A name attribute's text. CFCA writes UnionPay's CNs as UTF8String and
/// the older ones as T61String (TeletexString) holding plain ASCII; BMPString
/// is UTF-16BE.
fn directory_string(attr: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    if let Ok(s) = attr.as_str() {
        return Some(s.to_string());
    }
    let value = attr.attr_value();
    match value.tag() {
        Tag::TeletexString => std::str::from_utf8(value.data).ok().map(str::to_string),
        Tag::BmpString => {
            if value.data.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = value
                .data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

fn parse<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, ChannelError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| ChannelError::Config(format!("{what}: {e}")))
}

fn require_ca(cert: &X509Certificate<'_>, what: &str) -> Result<(), ChannelError> {
    match cert.basic_constraints() {
        Ok(Some(bc)) if !bc.value.ca => Err(ChannelError::Config(format!(
            "{what} is not a CA certificate"
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(ChannelError::Config(format!("{what}: {e}"))),
    }
}

/// Whether `cert` names `issuer` as its issuer and carries its signature.
/// UnionPay's chains are signed with SHA1withRSA (test and production CFCA
/// roots alike), so SHA-1 is accepted here, for certificate signatures only;
/// newer chains use SHA-256.
fn issued_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Result<(), String> {
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(format!(
            "issued by {}, not by {}",
            cert.issuer(),
            issuer.subject()
        ));
    }
    let alg: &'static dyn VerificationAlgorithm =
        match cert.signature_algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.113549.1.1.5" => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "1.2.840.113549.1.1.11" => &signature::RSA_PKCS1_2048_8192_SHA256,
            "1.2.840.113549.1.1.12" => &signature::RSA_PKCS1_2048_8192_SHA384,
            "1.2.840.113549.1.1.13" => &signature::RSA_PKCS1_2048_8192_SHA512,
            other => {
                return Err(format!(
                    "unsupported certificate signature algorithm {other}"
                ))
            }
        };
    UnparsedPublicKey::new(alg, issuer.public_key().subject_public_key.data.as_ref())
        .verify(
            cert.tbs_certificate.as_ref(),
            cert.signature_value.data.as_ref(),
        )
        .map_err(|_| "the issuer's signature does not verify".to_string())
}
