//! Apps and channel accounts kept in memory, for the paths every request,
//! callback and notification takes.
//!
//! Each lookup first reads the store's directory version (one row by key),
//! which every change to an app or account moves in the same transaction;
//! when it moved, everything kept is dropped. So a change made on any node,
//! or by the CLI, is seen by the next lookup, and an unchanged directory
//! costs that one small read instead of reading, decoding and unsealing
//! the row.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use paymux_store::{App, ChannelAccount, Store, StoreError};

/// Entries kept at most; past it, everything is dropped and refilled.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct Directory {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// The directory version the entries were read at.
    version: Option<i64>,
    apps: HashMap<String, App>,
    accounts: HashMap<String, ChannelAccount>,
}

impl Directory {
    pub async fn app(&self, store: &dyn Store, app_id: &str) -> Result<Option<App>, StoreError> {
        let version = self.current(store).await?;
        if let Some(app) = self.lock().apps.get(app_id) {
            return Ok(Some(app.clone()));
        }
        let app = store.app(app_id).await?;
        if let Some(app) = &app {
            self.keep(version, |k| {
                k.apps.insert(app.app_id.clone(), app.clone());
            });
        }
        Ok(app)
    }

    pub async fn channel_account(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Option<ChannelAccount>, StoreError> {
        let version = self.current(store).await?;
        if let Some(account) = self.lock().accounts.get(id) {
            return Ok(Some(account.clone()));
        }
        let account = store.channel_account(id).await?;
        if let Some(account) = &account {
            self.keep(version, |k| {
                k.accounts.insert(account.id.clone(), account.clone());
            });
        }
        Ok(account)
    }

    /// The store's version now; drops what was kept if it moved.
    async fn current(&self, store: &dyn Store) -> Result<i64, StoreError> {
        let version = store.directory_version().await?;
        let mut kept = self.lock();
        if kept.version != Some(version) {
            kept.apps.clear();
            kept.accounts.clear();
            kept.version = Some(version);
        }
        Ok(version)
    }

    /// Keeps a row read at `version`, unless a later lookup has seen the
    /// directory move since (the row may be older than what it saw).
    fn keep(&self, version: i64, insert: impl FnOnce(&mut Kept)) {
        let mut kept = self.lock();
        if kept.version != Some(version) {
            return;
        }
        if kept.apps.len() + kept.accounts.len() >= MAX_ENTRIES {
            kept.apps.clear();
            kept.accounts.clear();
        }
        insert(&mut kept);
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paymux_store::{testing, Merchant};

    #[tokio::test]
    async fn keeps_rows_until_any_app_or_account_changes() {
        let db = testing::sqlite().await;
        let store = db.store.as_ref();
        let now = chrono::Utc::now();
        let merchant = Merchant {
            id: paymux_core::new_id("mch"),
            name: "m".into(),
            created_at: now,
        };
        let app = App::new(
            paymux_core::new_id("app"),
            merchant.id.clone(),
            "one".into(),
            now,
        );
        store.insert_merchant(&merchant, &app).await.unwrap();

        let directory = Directory::default();
        let first = directory.app(store, &app.app_id).await.unwrap().unwrap();
        assert_eq!(first.secret, "one");
        assert_eq!(directory.lock().apps.len(), 1, "kept");
        assert!(directory.app(store, "app_unknown").await.unwrap().is_none());

        // Another process rotates the secret: the next lookup sees it.
        let mut rotated = app.clone();
        rotated.secret = "two".into();
        store.update_app_secrets(&rotated).await.unwrap();
        let next = directory.app(store, &app.app_id).await.unwrap().unwrap();
        assert_eq!(next.secret, "two");

        // A change to any account drops the apps kept too.
        let account = paymux_store::ChannelAccount {
            id: paymux_core::new_id("acct"),
            merchant_id: merchant.id.clone(),
            channel: paymux_core::ChannelKind::Wechat,
            config: serde_json::json!({}),
            sandbox: true,
            enabled: true,
            created_at: now,
        };
        store.insert_channel_account(&account).await.unwrap();
        assert!(directory
            .channel_account(store, &account.id)
            .await
            .unwrap()
            .is_some());
        assert!(directory.lock().apps.is_empty());
        assert_eq!(directory.lock().accounts.len(), 1);
        store
            .set_channel_account_enabled(&account.id, false)
            .await
            .unwrap();
        let disabled = directory
            .channel_account(store, &account.id)
            .await
            .unwrap()
            .unwrap();
        assert!(!disabled.enabled);
        db.cleanup().await;
    }
}
