//! Secrets at rest: AES-256-GCM under an operator's master key.
//!
//! A sealed value is a self-describing string,
//! `enc:v1:<key id>:<base64(nonce || ciphertext || tag)>`, so sealed and
//! plaintext values can sit side by side (a sandbox without a master key, a
//! database written before one was set) and a value names the key it needs
//! (rotation re-seals row by row and can be resumed after a crash).
//!
//! Every value is sealed with an associated-data context naming its row and
//! field: a ciphertext copied onto another row or field does not open.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::{Result, StoreError};

/// Prefix of every sealed value, with its format version.
pub const SEALED_PREFIX: &str = "enc:v1:";
/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// A 256-bit master key. Its id is derived from the key, so a sealed value
/// says which key opens it without saying anything useful about the key.
pub struct MasterKey {
    id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != MASTER_KEY_LEN {
            return Err(StoreError::Secret(format!(
                "a master key is {MASTER_KEY_LEN} bytes, this one has {}",
                bytes.len()
            )));
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"paymux master key id\0");
        ctx.update(bytes);
        let id = hex::encode(&ctx.finish().as_ref()[..4]);
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| StoreError::Secret("unusable master key".into()))?;
        Ok(MasterKey {
            id,
            key: LessSafeKey::new(unbound),
        })
    }

    /// Parses a key written as 64 hex digits or as base64 of 32 bytes
    /// (surrounding whitespace, such as a file's final newline, is ignored).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bytes = if text.len() == 2 * MASTER_KEY_LEN
            && text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            hex::decode(text).map_err(|_| StoreError::Secret("master key: bad hex".into()))?
        } else {
            B64.decode(text).map_err(|_| {
                StoreError::Secret("master key must be 64 hex digits or base64 of 32 bytes".into())
            })?
        };
        Self::from_bytes(&bytes)
    }

    /// A fresh random key, written as base64 (what `paymux keys generate` prints).
    pub fn generate_base64() -> Result<String> {
        let mut bytes = [0u8; MASTER_KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| StoreError::Secret("no entropy for a master key".into()))?;
        Ok(B64.encode(bytes))
    }

    /// The key's short public id, as it appears in sealed values.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn seal(&self, context: &str, plaintext: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| StoreError::Secret("no entropy for a nonce".into()))?;
        let mut buf = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| StoreError::Secret(format!("sealing {context} failed")))?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(format!("{SEALED_PREFIX}{}:{}", self.id, B64.encode(out)))
    }

    fn open(&self, context: &str, payload: &str) -> Result<String> {
        let bad = || StoreError::Secret(format!("{context} does not decrypt (tampered or moved)"));
        let mut data = B64.decode(payload).map_err(|_| bad())?;
        if data.len() < NONCE_LEN {
            return Err(bad());
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&data[..NONCE_LEN]);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data[NONCE_LEN..],
            )
            .map_err(|_| bad())?;
        String::from_utf8(plain.to_vec()).map_err(|_| bad())
    }
}

/// The master keys one process knows: the one new values are sealed with
/// (none in a sandbox without a master key), and older ones still accepted
/// for opening while a rotation is under way.
#[derive(Debug, Default)]
pub struct Keyring {
    current: Option<MasterKey>,
    older: Vec<MasterKey>,
}

impl Keyring {
    /// No master key: values are stored as given and sealed values cannot be opened.
    pub fn plaintext() -> Self {
        Keyring::default()
    }

    pub fn new(current: MasterKey) -> Self {
        Keyring {
            current: Some(current),
            older: Vec::new(),
        }
    }

    /// Also accepts values sealed with `key` (the key being rotated away from).
    pub fn also_open_with(mut self, key: MasterKey) -> Self {
        self.older.push(key);
        self
    }

    /// Whether new values are sealed.
    pub fn seals(&self) -> bool {
        self.current.is_some()
    }

    /// The id of the key new values are sealed with.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(MasterKey::id)
    }

    /// Seals `plaintext` for the field named by `context`. Without a master
    /// key the value is returned as it is.
    pub fn seal(&self, context: &str, plaintext: &str) -> Result<String> {
        match &self.current {
            Some(key) => key.seal(context, plaintext),
            None => Ok(plaintext.to_string()),
        }
    }

    /// Opens a stored value: sealed values with the key they name, anything
    /// else is plaintext written before sealing was on and comes back as it is.
    pub fn open(&self, context: &str, stored: &str) -> Result<String> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_string());
        };
        let (id, payload) = rest
            .split_once(':')
            .ok_or_else(|| StoreError::Secret(format!("{context}: malformed sealed value")))?;
        let key = self
            .current
            .iter()
            .chain(&self.older)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                StoreError::Secret(format!(
                    "{context} is sealed with master key {id}, which was not given \
                     (set PAYMUX_MASTER_KEY or --master-key-file)"
                ))
            })?;
        key.open(context, payload)
    }

    /// Whether `stored` is already sealed with the current key (nothing to re-seal).
    pub fn is_current(&self, stored: &str) -> bool {
        match (&self.current, stored.strip_prefix(SEALED_PREFIX)) {
            (Some(key), Some(rest)) => rest.split_once(':').is_some_and(|(id, _)| id == key.id),
            _ => false,
        }
    }
}

/// Whether a stored value is sealed (of any key).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn seals_and_opens_with_context() {
        let ring = Keyring::new(key(1));
        let sealed = ring.seal("app:a:secret", "sk_live").unwrap();
        assert!(sealed.starts_with("enc:v1:"));
        assert!(!sealed.contains("sk_live"));
        assert_eq!(ring.open("app:a:secret", &sealed).unwrap(), "sk_live");
        // Same plaintext, fresh nonce: a different ciphertext.
        assert_ne!(ring.seal("app:a:secret", "sk_live").unwrap(), sealed);
        // Moved to another row: refused.
        assert!(ring.open("app:b:secret", &sealed).is_err());
    }

    #[test]
    fn plaintext_passes_through_and_unknown_keys_are_named() {
        let ring = Keyring::new(key(1));
        assert_eq!(ring.open("c", "plain").unwrap(), "plain");
        let other = Keyring::new(key(2)).seal("c", "x").unwrap();
        let err = ring.open("c", &other).unwrap_err().to_string();
        assert!(err.contains(key(2).id()), "{err}");
        assert!(Keyring::plaintext().open("c", &other).is_err());
        assert_eq!(Keyring::plaintext().seal("c", "x").unwrap(), "x");
        let both = Keyring::new(key(1)).also_open_with(key(2));
        assert_eq!(both.open("c", &other).unwrap(), "x");
        assert!(!both.is_current(&other));
    }

    #[test]
    fn tampering_is_detected() {
        let ring = Keyring::new(key(1));
        let sealed = ring.seal("c", "secret value").unwrap();
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(ring.open("c", &tampered).is_err());
    }

    #[test]
    fn parses_hex_and_base64() {
        let hex_key = "11".repeat(32);
        let b64 = B64.encode([0x11u8; 32]);
        assert_eq!(
            MasterKey::parse(&hex_key).unwrap().id(),
            MasterKey::parse(&format!("{b64}\n")).unwrap().id()
        );
        assert!(MasterKey::parse("short").is_err());
        assert!(MasterKey::parse(&B64.encode([1u8; 16])).is_err());
        let generated = MasterKey::generate_base64().unwrap();
        assert!(MasterKey::parse(&generated).is_ok());
    }
}
