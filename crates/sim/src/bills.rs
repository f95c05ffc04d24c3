//! The bills a simulator has made, kept ready for download by token.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Bills a simulator keeps ready for download at once; older ones are gone.
const KEPT: usize = 8;

/// Bills made and not yet replaced, the newest last.
#[derive(Default)]
pub(crate) struct KeptBills(Mutex<VecDeque<KeptBill>>);

struct KeptBill {
    token: String,
    /// The merchant (mchid, app id) the bill is for.
    owner: String,
    bytes: Vec<u8>,
}

impl KeptBills {
    pub(crate) fn keep(&self, token: &str, owner: &str, bytes: Vec<u8>) {
        let mut bills = crate::lock(&self.0);
        bills.push_back(KeptBill {
            token: token.to_string(),
            owner: owner.to_string(),
            bytes,
        });
        while bills.len() > KEPT {
            bills.pop_front();
        }
    }

    /// The bill made under `token`, for `owner` when the download names one.
    pub(crate) fn get(&self, token: &str, owner: Option<&str>) -> Option<Vec<u8>> {
        crate::lock(&self.0)
            .iter()
            .find(|b| b.token == token && owner.is_none_or(|o| o == b.owner))
            .map(|b| b.bytes.clone())
    }
}
