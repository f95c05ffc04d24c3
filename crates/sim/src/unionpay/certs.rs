//! The simulator's own certificate hierarchy, shaped like UnionPay's: a root,
//! an intermediate (CFCA's role), and UnionPay's signing certificate whose
//! subject CN names 中国银联股份有限公司 in its third `@` field. It also
//! issues merchants' signing certificates, and the bad certificates the
//! fault options send (outside the chain, expired, not UnionPay's).

use paymux_channels::keys::{PrivateKey, PublicKey};
use paymux_channels::unionpay::certs::UNIONPAY_CN_NAME;

use super::SimError;

fn internal(e: impl std::fmt::Display) -> SimError {
    SimError::Internal(e.to_string())
}

fn dn(org: &str, common_name: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CountryName, "CN");
    dn.push(rcgen::DnType::OrganizationName, org);
    dn.push(rcgen::DnType::CommonName, common_name);
    dn
}

fn random_serial() -> Result<rcgen::SerialNumber, SimError> {
    // Eight bytes, so the decimal certId stays short like UnionPay's.
    let mut serial = [0u8; 8];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| internal("random serial"))?;
    // Positive and without a leading zero byte: one DER spelling only.
    serial[0] = (serial[0] & 0x7F) | 0x10;
    Ok(rcgen::SerialNumber::from_slice(&serial))
}

fn params(
    org: &str,
    common_name: &str,
    ca: bool,
    valid: (i32, i32),
) -> Result<rcgen::CertificateParams, SimError> {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = dn(org, common_name);
    p.not_before = rcgen::date_time_ymd(valid.0, 1, 1);
    p.not_after = rcgen::date_time_ymd(valid.1, 12, 31);
    p.serial_number = Some(random_serial()?);
    if ca {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    Ok(p)
}

/// An RSA public key the issuer does not hold the private half of.
struct RsaKey(Vec<u8>);

impl rcgen::PublicKeyData for RsaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

/// A certificate authority the simulator holds the key of.
pub(crate) struct Ca {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    pub pem: String,
}

impl Ca {
    fn root(org: &str, cn: &str) -> Result<Ca, SimError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(internal)?;
        let params = params(org, cn, true, (2024, 2049))?;
        let pem = params.self_signed(&key).map_err(internal)?.pem();
        Ok(Ca { key, params, pem })
    }

    fn intermediate(&self, org: &str, cn: &str) -> Result<Ca, SimError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(internal)?;
        let params = params(org, cn, true, (2024, 2049))?;
        let issuer = rcgen::Issuer::new(self.params.clone(), &self.key);
        let pem = params.signed_by(&key, &issuer).map_err(internal)?.pem();
        Ok(Ca { key, params, pem })
    }

    /// Issues a leaf certificate for `public_key` (a key held elsewhere).
    fn issue(
        &self,
        org: &str,
        common_name: &str,
        public_key: &PublicKey,
        valid: (i32, i32),
    ) -> Result<String, SimError> {
        let spki = RsaKey(public_key.pkcs1_der()?);
        let issuer = rcgen::Issuer::new(self.params.clone(), &self.key);
        Ok(params(org, common_name, false, valid)?
            .signed_by(&spki, &issuer)
            .map_err(internal)?
            .pem())
    }
}

/// UnionPay's side: the trust anchors merchants configure and the signing identity.
pub(crate) struct Authority {
    pub root: Ca,
    pub middle: Ca,
    pub sign_key: PrivateKey,
    pub sign_public: PublicKey,
    /// UnionPay's signing certificate as it goes into `signPubKeyCert`.
    pub sign_cert: String,
}

/// `041@Z<year>@<owner>@<serial>`: the CN layout of UnionPay's signing certificates.
fn unionpay_cn(owner: &str) -> String {
    format!("041@Z2026@{owner}@00000001")
}

impl Authority {
    pub fn new() -> Result<Self, SimError> {
        let root = Ca::root("paymux UnionPay simulator", "paymux simulator Root CA")?;
        let middle = root.intermediate("paymux UnionPay simulator", "paymux simulator OCA1")?;
        let sign_key = PrivateKey::from_pem(&PrivateKey::generate_pkcs8_pem()?)?;
        let sign_public = sign_key.public_key()?;
        let sign_cert = middle.issue(
            "paymux UnionPay simulator",
            &unionpay_cn(UNIONPAY_CN_NAME),
            &sign_public,
            (2024, 2049),
        )?;
        Ok(Authority {
            root,
            middle,
            sign_key,
            sign_public,
            sign_cert,
        })
    }

    /// A merchant's signing certificate for its public key (what CFCA issues
    /// with UnionPay's PFX files).
    pub fn issue_merchant(&self, mer_id: &str, public_key: &PublicKey) -> Result<String, SimError> {
        self.middle.issue(
            "paymux UnionPay simulator merchants",
            &format!("041@Z2026@{mer_id}:SIGN@00000001"),
            public_key,
            (2024, 2049),
        )
    }

    /// The bad certificates for UnionPay's own signing key, for fault
    /// injection: each would verify the signature if its checks were skipped.
    pub fn bad_certs(&self) -> Result<BadCerts, SimError> {
        // Same names as the real chain, other keys: only the signatures tell.
        let impostor_root = Ca::root("paymux UnionPay simulator", "paymux simulator Root CA")?;
        let impostor_middle =
            impostor_root.intermediate("paymux UnionPay simulator", "paymux simulator OCA1")?;
        Ok(BadCerts {
            untrusted_chain: impostor_middle.issue(
                "paymux UnionPay simulator",
                &unionpay_cn(UNIONPAY_CN_NAME),
                &self.sign_public,
                (2024, 2049),
            )?,
            expired: self.middle.issue(
                "paymux UnionPay simulator",
                &unionpay_cn(UNIONPAY_CN_NAME),
                &self.sign_public,
                (2020, 2021),
            )?,
            not_unionpay: self.middle.issue(
                "paymux UnionPay simulator",
                &unionpay_cn("某某支付有限公司"),
                &self.sign_public,
                (2024, 2049),
            )?,
        })
    }
}

pub(crate) struct BadCerts {
    pub untrusted_chain: String,
    pub expired: String,
    pub not_unionpay: String,
}

/// PEM with CRLF line ends, the way UnionPay's gateway sends `signPubKeyCert`.
pub(crate) fn crlf(pem: &str) -> String {
    pem.replace("\r\n", "\n").replace('\n', "\r\n")
}
