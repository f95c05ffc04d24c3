//! The audit trail: rows appended by database triggers in the transaction
//! of every change to merchants, apps, channel accounts, payments and
//! refunds (migration 0015), then chained by the sealer into a hash chain.
//!
//! Each sealed row has a position (`chain_pos`, 1, 2, …, in the order it was
//! sealed), the hash of the row before it and its own hash:
//! `SHA-256(prev_hash \n chain_pos \n seq \n at \n kind \n id \n action \n detail)`
//! in hex, the first row's `prev_hash` being [`GENESIS`]. [`verify`] walks
//! the chain and recomputes every hash, so a sealed row edited, deleted or
//! moved breaks it at that row. Rows not sealed yet (the last moments'
//! changes) are counted, not chained.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Result, Store};

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Order of writing (not of committing).
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// `merchant`, `app`, `channel_account`, `payment` or `refund`.
    pub subject_kind: String,
    pub subject_id: String,
    /// `created`, `updated` or `status`.
    pub action: String,
    /// JSON text, as the trigger wrote it.
    pub detail: String,
    pub chain_pos: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// The hash of `e` at position `pos` after `prev`.
pub fn entry_hash(prev: &str, pos: i64, e: &AuditEntry) -> String {
    let text = format!(
        "{prev}\n{pos}\n{}\n{}\n{}\n{}\n{}\n{}",
        e.seq,
        e.at.timestamp_micros(),
        e.subject_kind,
        e.subject_id,
        e.action,
        e.detail
    );
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditCheck {
    /// Rows chained and checked.
    pub sealed: i64,
    /// Rows written but not chained yet.
    pub unsealed: i64,
    /// Where the chain breaks, if it does.
    pub broken: Option<AuditBreak>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditBreak {
    /// The position where the chain stops holding.
    pub chain_pos: i64,
    pub reason: String,
}

impl AuditCheck {
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Rows read per page while verifying.
const PAGE: u32 = 1000;

/// Walks the whole chain and recomputes every hash.
pub async fn verify(store: &dyn Store) -> Result<AuditCheck> {
    let unsealed = store.audit_unsealed().await?;
    let mut prev = GENESIS.to_string();
    let mut pos = 0i64;
    loop {
        let page = store.audit_chain(pos, PAGE).await?;
        for e in &page {
            let here = pos + 1;
            let broken = |reason: String| AuditCheck {
                sealed: pos,
                unsealed,
                broken: Some(AuditBreak {
                    chain_pos: here,
                    reason,
                }),
            };
            if e.chain_pos != Some(here) {
                return Ok(broken(format!(
                    "position {here} is missing (the next is {:?}, seq {})",
                    e.chain_pos, e.seq
                )));
            }
            if e.prev_hash.as_deref() != Some(prev.as_str()) {
                return Ok(broken(format!(
                    "seq {} does not follow the row before it",
                    e.seq
                )));
            }
            let want = entry_hash(&prev, here, e);
            if e.hash.as_deref() != Some(want.as_str()) {
                return Ok(broken(format!(
                    "seq {} ({} {} {}) is not as it was sealed",
                    e.seq, e.subject_kind, e.subject_id, e.action
                )));
            }
            prev = want;
            pos = here;
        }
        if page.len() < PAGE as usize {
            return Ok(AuditCheck {
                sealed: pos,
                unsealed,
                broken: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            seq: 7,
            at: DateTime::from_timestamp_micros(1_767_225_600_123_457).unwrap(),
            subject_kind: "payment".into(),
            subject_id: "pay_1".into(),
            action: "status".into(),
            detail: r#"{"from":"pending","to":"succeeded"}"#.into(),
            chain_pos: None,
            prev_hash: None,
            hash: None,
        }
    }

    #[test]
    fn the_hash_covers_every_field_and_the_chain() {
        let e = entry();
        let h = entry_hash(GENESIS, 1, &e);
        assert_eq!(h.len(), 64);
        assert_eq!(h, entry_hash(GENESIS, 1, &e));
        assert_ne!(h, entry_hash(GENESIS, 2, &e));
        assert_ne!(h, entry_hash(&h, 1, &e));
        let mut other = e.clone();
        other.detail = r#"{"from":"pending","to":"closed"}"#.into();
        assert_ne!(h, entry_hash(GENESIS, 1, &other));
        let mut other = e.clone();
        other.at += chrono::Duration::microseconds(1);
        assert_ne!(h, entry_hash(GENESIS, 1, &other));
    }
}
