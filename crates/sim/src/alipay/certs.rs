//! Public-key-certificate mode: the simulator's own root CA, the Alipay
//! public-key certificate it issues itself, and app certificates it issues
//! for registered app keys (what Alipay's console does from a CSR).

use paymux_channels::alipay::sign;
use paymux_channels::keys::{PrivateKey, PublicKey};

use super::SimError;

pub(crate) struct Authority {
    root_key: rcgen::KeyPair,
    root_params: rcgen::CertificateParams,
    pub root_pem: String,
    pub root_sn: String,
}

fn dn(common_name: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CountryName, "CN");
    dn.push(rcgen::DnType::OrganizationName, "paymux simulator");
    dn.push(
        rcgen::DnType::OrganizationalUnitName,
        "Certification Authority",
    );
    dn.push(rcgen::DnType::CommonName, common_name);
    dn
}

fn leaf_params(common_name: &str) -> Result<rcgen::CertificateParams, SimError> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = dn(common_name);
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn random_serial() -> Result<rcgen::SerialNumber, SimError> {
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| SimError::Internal("random serial".into()))?;
    // Positive and without a leading zero byte: one DER spelling only.
    serial[0] = (serial[0] & 0x7F) | 0x10;
    Ok(rcgen::SerialNumber::from_slice(&serial))
}

fn internal(e: impl std::fmt::Display) -> SimError {
    SimError::Internal(e.to_string())
}

impl Authority {
    pub fn new() -> Result<Self, SimError> {
        let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(internal)?;
        let mut root_params = leaf_params("paymux Alipay simulator Root CA")?;
        root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = root_params.self_signed(&root_key).map_err(internal)?;
        let root_pem = root.pem();
        let root_sn = sign::root_cert_sn(&root_pem)?;
        Ok(Authority {
            root_key,
            root_params,
            root_pem,
            root_sn,
        })
    }

    /// Issues a public-key certificate for `public_key_pem` (SPKI PEM).
    pub fn issue(&self, common_name: &str, public_key_pem: &str) -> Result<String, SimError> {
        let key = PublicKey::from_pem(public_key_pem)
            .map_err(|e| SimError::Invalid(format!("public key: {e}")))?;
        let spki = RsaKey(key.pkcs1_der()?);
        let issuer = rcgen::Issuer::new(self.root_params.clone(), &self.root_key);
        let cert = leaf_params(common_name)?
            .signed_by(&spki, &issuer)
            .map_err(internal)?;
        Ok(cert.pem())
    }
}

/// An RSA public key the simulator does not hold the private half of.
struct RsaKey(Vec<u8>);

impl rcgen::PublicKeyData for RsaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

/// A fresh Alipay signing key and its certificate from `authority`.
pub(crate) fn alipay_identity(
    authority: &Authority,
) -> Result<(PrivateKey, String, String), SimError> {
    let pem = PrivateKey::generate_pkcs8_pem()?;
    let key = PrivateKey::from_pem(&pem)?;
    let public_pem = key.public_key()?.to_pem();
    let cert = authority.issue("paymux Alipay simulator (Alipay public key)", &public_pem)?;
    Ok((key, public_pem, cert))
}
