//! The conformance suite: every case runs as one test per backend, SQLite
//! always and PostgreSQL when it answers (see `conformance!`).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use paymux_core::{
    new_id, ChannelKind, Currency, Money, PayMethod, PaymentId, PaymentStatus, RefundStatus,
};
use paymux_store::testing::{self, TestDb};
use paymux_store::*;
use serde_json::json;

/// A timestamp with a non-zero microsecond part, to catch precision loss.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_767_225_600_123_457).unwrap()
}

fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

async fn merchant(store: &dyn Store) -> Merchant {
    let m = Merchant {
        id: new_id("mch"),
        name: "Tea House 茶馆".into(),
        created_at: t0(),
    };
    let app = App::new(new_id("app"), m.id.clone(), "s3cret".into(), t0());
    store.insert_merchant(&m, &app).await.unwrap();
    m
}

async fn account(
    store: &dyn Store,
    m: &Merchant,
    created_at: DateTime<Utc>,
    enabled: bool,
) -> ChannelAccount {
    let a = ChannelAccount {
        id: new_id("acct"),
        merchant_id: m.id.clone(),
        channel: ChannelKind::Wechat,
        config: json!({"appid": "wx123", "mchid": "1900000001", "nested": {"k": [1, 2.5, null]}}),
        sandbox: true,
        enabled,
        created_at,
    };
    store.insert_channel_account(&a).await.unwrap();
    a
}

/// A payment with every optional field set.
fn payment(m: &Merchant, a: &ChannelAccount, order_no: &str) -> Payment {
    Payment {
        id: PaymentId::generate(),
        merchant_id: m.id.clone(),
        merchant_order_no: order_no.into(),
        amount: Money::new(12_345, Currency::CNY).unwrap(),
        channel: ChannelKind::Wechat,
        method: PayMethod::Jsapi,
        status: PaymentStatus::Created,
        description: "两杯奶茶".into(),
        notify_url: "https://merchant.example/notify".into(),
        payer: json!({"openid": "o-abc", "client_ip": "10.0.0.1"}),
        metadata: json!({"table": 7, "tags": ["a", "b"]}),
        request_hash: "hash-1".into(),
        channel_account_id: a.id.clone(),
        app_id: None,
        checkout_id: None,
        group_id: None,
        pay_params: Some(json!({"prepay_id": "wx201410272009395522657a690389285100"})),
        channel_trade_no: Some("4200000001".into()),
        paid_at: Some(t0() + Duration::microseconds(1)),
        refunded: 0,
        expires_at: t0() + Duration::minutes(30),
        created_at: t0(),
        updated_at: t0() + Duration::microseconds(3),
    }
}

/// A payment in `created` with no optional fields, inserted.
async fn fresh_payment(store: &dyn Store, m: &Merchant, a: &ChannelAccount) -> Payment {
    let p = Payment {
        pay_params: None,
        channel_trade_no: None,
        paid_at: None,
        ..payment(m, a, &new_id("order"))
    };
    assert_eq!(store.insert_payment(&p).await.unwrap(), Inserted::New);
    p
}

fn event_for(p: &Payment, created_at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        id: new_id("evt"),
        merchant_id: p.merchant_id.clone(),
        payment_id: p.id.clone(),
        refund_id: None,
        event_type: "payment.succeeded".into(),
        payload: json!({"id": p.id.as_str(), "amount": p.amount.minor}),
        notify_url: p.notify_url.clone(),
        created_at,
        app_id: Some("app_signing".into()),
    }
}

/// Merchant, account and a `created` payment: the usual starting point.
async fn setup(store: &dyn Store) -> (Merchant, ChannelAccount, Payment) {
    let m = merchant(store).await;
    let a = account(store, &m, t0(), true).await;
    let p = fresh_payment(store, &m, &a).await;
    (m, a, p)
}

/// Puts one event in the outbox (by moving a new payment to `pending`).
async fn outbox_event(
    store: &dyn Store,
    m: &Merchant,
    a: &ChannelAccount,
    at: DateTime<Utc>,
) -> NewEvent {
    let p = fresh_payment(store, m, a).await;
    let e = event_for(&p, at);
    let t = store
        .transition(
            &p.id,
            PaymentStatus::Created,
            PaymentStatus::Pending,
            &TransitionPatch::default(),
            Some(&e),
            at,
        )
        .await
        .unwrap();
    assert!(matches!(t, Transition::Applied(_)));
    e
}

/// One conformance case as a test per backend, so that a failure names its
/// backend (`NAME::sqlite`, `NAME::postgres`). Without PostgreSQL the
/// second says SKIPPED and passes, unless `PAYMUX_REQUIRE_SERVICES=1`.
macro_rules! conformance {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let owned = testing::sqlite().await;
                {
                    let $db: &TestDb = &owned;
                    $body
                }
                owned.cleanup().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(owned) = testing::postgres().await else {
                    return;
                };
                {
                    let $db: &TestDb = &owned;
                    $body
                }
                owned.cleanup().await;
            }
        }
    };
}

conformance!(merchants_and_apps, |db| {
    let s = db.store.as_ref();
    s.ping().await.unwrap();
    let m = Merchant {
        id: "mch_1".into(),
        name: "One".into(),
        created_at: t0(),
    };
    let app = App::new("app_1".into(), m.id.clone(), "k".into(), t0());
    s.insert_merchant(&m, &app).await.unwrap();
    assert_eq!(
        s.merchant("mch_1").await.unwrap(),
        Some(m.clone()),
        "{}",
        db.backend
    );
    assert_eq!(s.app("app_1").await.unwrap(), Some(app.clone()));
    assert_eq!(s.merchant_apps("mch_1").await.unwrap(), vec![app.clone()]);
    assert!(s.merchant_apps("mch_nope").await.unwrap().is_empty());
    assert_eq!(s.merchant("mch_nope").await.unwrap(), None);
    assert_eq!(s.app("app_nope").await.unwrap(), None);

    // Same merchant again: rejected as a duplicate.
    let app2 = App {
        app_id: "app_2".into(),
        ..app.clone()
    };
    assert!(matches!(
        s.insert_merchant(&m, &app2).await,
        Err(StoreError::Duplicate(_))
    ));
    // A new merchant whose app collides: neither row is written.
    let m2 = Merchant {
        id: "mch_2".into(),
        name: "Two".into(),
        created_at: t0() + secs(1),
    };
    let clash = App {
        merchant_id: m2.id.clone(),
        ..app.clone()
    };
    assert!(matches!(
        s.insert_merchant(&m2, &clash).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(s.merchant("mch_2").await.unwrap(), None, "{}", db.backend);

    let app3 = App {
        app_id: "app_3".into(),
        merchant_id: m2.id.clone(),
        ..app.clone()
    };
    s.insert_merchant(&m2, &app3).await.unwrap();
    assert_eq!(s.list_merchants().await.unwrap(), vec![m, m2]);

    // More apps per merchant, and secret rotation with a grace period.
    let app4 = App::new("app_4".into(), "mch_1".into(), "k4".into(), t0() + secs(5));
    s.insert_app(&app4).await.unwrap();
    assert!(matches!(
        s.insert_app(&app4).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        s.merchant_apps("mch_1").await.unwrap(),
        vec![app.clone(), app4.clone()]
    );
    let rotated = App {
        secret: "k4-new".into(),
        previous_secret: Some("k4".into()),
        previous_secret_expires_at: Some(t0() + secs(60)),
        ..app4.clone()
    };
    s.update_app_secrets(&rotated).await.unwrap();
    assert_eq!(s.app("app_4").await.unwrap(), Some(rotated.clone()));
    let valid: Vec<&str> = rotated.valid_secrets(t0() + secs(59)).collect();
    assert_eq!(valid, vec!["k4-new", "k4"]);
    let valid: Vec<&str> = rotated.valid_secrets(t0() + secs(60)).collect();
    assert_eq!(valid, vec!["k4-new"]);
    let ghost = App::new("app_nope".into(), "mch_1".into(), "x".into(), t0());
    assert!(matches!(
        s.update_app_secrets(&ghost).await,
        Err(StoreError::NotFound(_))
    ));
});

conformance!(
    every_app_and_account_change_moves_the_directory_version,
    |db| {
        let s = db.store.as_ref();
        let mut last = s.directory_version().await.unwrap();
        let mut moved = |now: i64, what: &str| {
            assert!(
                now > last,
                "{}: {what} did not move the version",
                db.backend
            );
            last = now;
        };
        let m = merchant(s).await;
        moved(s.directory_version().await.unwrap(), "a new merchant's app");
        let a = account(s, &m, t0(), true).await;
        moved(s.directory_version().await.unwrap(), "a new account");
        s.set_channel_account_enabled(&a.id, false).await.unwrap();
        moved(s.directory_version().await.unwrap(), "disabling");
        s.update_channel_account_config(&a.id, &json!({"k": 1}))
            .await
            .unwrap();
        moved(s.directory_version().await.unwrap(), "a new config");
        let app = s.merchant_apps(&m.id).await.unwrap().remove(0);
        s.update_app_client_cert(&app.app_id, Some("ab"))
            .await
            .unwrap();
        moved(s.directory_version().await.unwrap(), "a client certificate");
        let mut rotated = app.clone();
        rotated.secret = "n3w".into();
        s.update_app_secrets(&rotated).await.unwrap();
        moved(s.directory_version().await.unwrap(), "a rotated secret");
        // Payments are not part of it.
        s.insert_payment(&payment(&m, &a, "DIR-1")).await.unwrap();
        assert_eq!(s.directory_version().await.unwrap(), last, "{}", db.backend);
    }
);

conformance!(channel_accounts_are_listed_disabled_and_updated, |db| {
    let s = db.store.as_ref();
    let m = merchant(s).await;
    let other = merchant(s).await;
    let a1 = account(s, &m, t0(), true).await;
    let a2 = account(s, &m, t0() + secs(10), true).await;
    let b1 = account(s, &other, t0() + secs(5), true).await;
    assert_eq!(
        s.list_channel_accounts(Some(&m.id)).await.unwrap(),
        vec![a1.clone(), a2.clone()],
        "{}",
        db.backend
    );
    assert_eq!(
        s.list_channel_accounts(None).await.unwrap(),
        vec![a1.clone(), b1.clone(), a2.clone()]
    );
    // Disabling the newest falls back to the older one; disabled is never picked.
    s.set_channel_account_enabled(&a2.id, false).await.unwrap();
    assert_eq!(
        s.channel_account_for(&m.id, ChannelKind::Wechat)
            .await
            .unwrap()
            .map(|a| a.id),
        Some(a1.id.clone())
    );
    s.set_channel_account_enabled(&a1.id, false).await.unwrap();
    assert_eq!(
        s.channel_account_for(&m.id, ChannelKind::Wechat)
            .await
            .unwrap(),
        None
    );
    assert!(!s.channel_account(&a1.id).await.unwrap().unwrap().enabled);
    assert!(matches!(
        s.set_channel_account_enabled("acct_nope", false).await,
        Err(StoreError::NotFound(_))
    ));
    let config = json!({"appid": "wx999", "mchid": "1900000002"});
    s.update_channel_account_config(&b1.id, &config)
        .await
        .unwrap();
    assert_eq!(
        s.channel_account(&b1.id).await.unwrap().unwrap().config,
        config
    );
    assert!(matches!(
        s.update_channel_account_config("acct_nope", &config).await,
        Err(StoreError::NotFound(_))
    ));
});

fn test_secret_fields(_: ChannelKind) -> &'static [&'static str] {
    &["private_key_pem", "apiv3_key"]
}

fn master_key(byte: u8) -> MasterKey {
    MasterKey::from_bytes(&[byte; 32]).unwrap()
}

fn sealed(raw: &Arc<dyn Store>, keys: Keyring) -> SealedStore {
    SealedStore::new(raw.clone(), Arc::new(keys), test_secret_fields)
}

/// Every file of a SQLite database (main file, WAL, shared memory), or a
/// `pg_dump` of a PostgreSQL one, as bytes.
fn raw_database_bytes(db: &TestDb) -> Vec<u8> {
    if db.backend == "sqlite" {
        let path = db.url.strip_prefix("sqlite://").unwrap();
        let dir = std::path::Path::new(path).parent().unwrap();
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            all.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        assert!(!all.is_empty());
        all
    } else {
        let out = std::process::Command::new("pg_dump")
            .arg("--dbname")
            .arg(&db.url)
            .output()
            .expect("pg_dump is installed");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

conformance!(secrets_are_sealed_at_rest_and_survive_key_rotation, |db| {
    let app_secret = format!("sk_{}", new_id("clear"));
    let old_app_secret = format!("sk_{}", new_id("older"));
    let private_key = format!("-----BEGIN PRIVATE KEY-----{}", new_id("pem"));
    let apiv3_key = new_id("v3key");
    let plaintext_before = format!("sk_{}", new_id("before"));

    // A row written before any master key was set (sandbox, or an old database).
    let m0 = Merchant {
        id: new_id("mch"),
        name: "Early".into(),
        created_at: t0(),
    };
    let early = App::new(new_id("app"), m0.id.clone(), plaintext_before.clone(), t0());
    sealed(&db.store, Keyring::plaintext())
        .insert_merchant(&m0, &early)
        .await
        .unwrap();

    let s = sealed(&db.store, Keyring::new(master_key(1)));
    let m = Merchant {
        id: new_id("mch"),
        name: "Sealed".into(),
        created_at: t0(),
    };
    let app = App {
        previous_secret: Some(old_app_secret.clone()),
        previous_secret_expires_at: Some(t0() + secs(60)),
        ..App::new(new_id("app"), m.id.clone(), app_secret.clone(), t0())
    };
    s.insert_merchant(&m, &app).await.unwrap();
    let account = ChannelAccount {
        id: new_id("acct"),
        merchant_id: m.id.clone(),
        channel: ChannelKind::Wechat,
        config: json!({"mchid": "1900000001", "private_key_pem": private_key, "apiv3_key": apiv3_key}),
        sandbox: false,
        enabled: true,
        created_at: t0(),
    };
    s.insert_channel_account(&account).await.unwrap();

    // Through the sealed store: plaintext, exactly as written.
    assert_eq!(s.app(&app.app_id).await.unwrap(), Some(app.clone()));
    assert_eq!(s.app(&early.app_id).await.unwrap(), Some(early.clone()));
    assert_eq!(
        s.channel_account(&account.id).await.unwrap(),
        Some(account.clone())
    );
    assert_eq!(
        s.channel_account_for(&m.id, ChannelKind::Wechat)
            .await
            .unwrap(),
        Some(account.clone())
    );
    assert_eq!(
        s.list_channel_accounts(None).await.unwrap(),
        vec![account.clone()]
    );
    // Underneath: sealed, non-secret fields readable.
    let raw = db
        .store
        .channel_account(&account.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.config["mchid"], "1900000001");
    assert!(raw.config["apiv3_key"]
        .as_str()
        .unwrap()
        .starts_with("enc:v1:"));
    assert!(db
        .store
        .app(&app.app_id)
        .await
        .unwrap()
        .unwrap()
        .secret
        .starts_with("enc:v1:"));
    // Without the key, or with another one, nothing opens.
    for wrong in [Keyring::plaintext(), Keyring::new(master_key(9))] {
        assert!(matches!(
            sealed(&db.store, wrong).app(&app.app_id).await,
            Err(StoreError::Secret(_))
        ));
    }

    // Rotation: everything (including the early plaintext row) ends up under key 2.
    let rotating = sealed(
        &db.store,
        Keyring::new(master_key(2)).also_open_with(master_key(1)),
    );
    let counts = rotating.reseal_all().await.unwrap();
    assert_eq!(
        (counts.apps, counts.channel_accounts),
        (2, 1),
        "{}",
        db.backend
    );
    // Repeating it is a no-op (a crashed rotation is simply run again).
    assert_eq!(rotating.reseal_all().await.unwrap().apps, 0);
    let s2 = sealed(&db.store, Keyring::new(master_key(2)));
    assert_eq!(s2.app(&app.app_id).await.unwrap(), Some(app.clone()));
    assert_eq!(s2.app(&early.app_id).await.unwrap(), Some(early.clone()));
    assert_eq!(
        s2.channel_account(&account.id).await.unwrap(),
        Some(account.clone())
    );
    assert!(sealed(&db.store, Keyring::new(master_key(1)))
        .app(&app.app_id)
        .await
        .is_err());

    // The database itself holds none of the secrets in clear.
    let bytes = raw_database_bytes(db);
    assert!(
        contains(&bytes, &app.app_id),
        "{}: dump has the rows",
        db.backend
    );
    for secret in [
        &app_secret,
        &old_app_secret,
        &private_key,
        &apiv3_key,
        &plaintext_before,
    ] {
        assert!(
            !contains(&bytes, secret),
            "{}: {secret} in clear",
            db.backend
        );
    }
});

conformance!(channel_account_for_returns_newest_enabled, |db| {
    let s = db.store.as_ref();
    let m = merchant(s).await;
    assert_eq!(
        s.channel_account_for(&m.id, ChannelKind::Wechat)
            .await
            .unwrap(),
        None
    );
    let _old = account(s, &m, t0(), true).await;
    let newer = account(s, &m, t0() + secs(10), true).await;
    let _newest_disabled = account(s, &m, t0() + secs(20), false).await;
    let other = merchant(s).await;
    let _other_newest = account(s, &other, t0() + secs(30), true).await;

    let got = s
        .channel_account_for(&m.id, ChannelKind::Wechat)
        .await
        .unwrap();
    assert_eq!(got, Some(newer.clone()), "{}", db.backend);
    assert_eq!(
        s.channel_account(&newer.id).await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(s.channel_account("acct_nope").await.unwrap(), None);
    assert!(matches!(
        s.insert_channel_account(&newer).await,
        Err(StoreError::Duplicate(_))
    ));
});

conformance!(payments_round_trip_every_field, |db| {
    let s = db.store.as_ref();
    let m = merchant(s).await;
    let a = account(s, &m, t0(), true).await;
    let full = payment(&m, &a, "order-full");
    let bare = Payment {
        pay_params: None,
        channel_trade_no: None,
        paid_at: None,
        metadata: json!({}),
        ..payment(&m, &a, "order-bare")
    };
    for p in [&full, &bare] {
        assert_eq!(s.insert_payment(p).await.unwrap(), Inserted::New);
        assert_eq!(
            s.payment(&p.id).await.unwrap().as_ref(),
            Some(p),
            "{}",
            db.backend
        );
        let by_no = s
            .payment_by_order_no(&m.id, &p.merchant_order_no)
            .await
            .unwrap();
        assert_eq!(by_no.as_ref(), Some(p));
    }
    assert_eq!(s.payment(&PaymentId::generate()).await.unwrap(), None);
    assert_eq!(s.payment_by_order_no(&m.id, "nope").await.unwrap(), None);

    // The URL reopens the same database (and migrating it again is a no-op).
    let reopened = paymux_store::open(&db.url).await.unwrap();
    assert_eq!(reopened.backend(), db.backend);
    assert_eq!(
        reopened.payment(&full.id).await.unwrap(),
        Some(full.clone())
    );
});

conformance!(a_non_positive_amount_is_refused_by_the_schema, |db| {
    let s = db.store.as_ref();
    let m = merchant(s).await;
    let a = account(s, &m, t0(), true).await;
    let mut p = payment(&m, &a, "zero");
    p.amount.minor = 0;
    assert!(s.insert_payment(&p).await.is_err(), "{}", db.backend);
});

conformance!(duplicate_order_no_returns_the_existing_payment, |db| {
    let s = db.store.as_ref();
    let m = merchant(s).await;
    let a = account(s, &m, t0(), true).await;
    let first = payment(&m, &a, "order-1");
    assert_eq!(s.insert_payment(&first).await.unwrap(), Inserted::New);
    let again = Payment {
        id: PaymentId::generate(),
        request_hash: "other".into(),
        ..first.clone()
    };
    assert_eq!(
        s.insert_payment(&again).await.unwrap(),
        Inserted::Existing(first.clone()),
        "{}",
        db.backend
    );
    assert_eq!(s.payment(&again.id).await.unwrap(), None);

    // Order numbers are per merchant.
    let m2 = merchant(s).await;
    let theirs = Payment {
        id: PaymentId::generate(),
        merchant_id: m2.id.clone(),
        ..first.clone()
    };
    assert_eq!(s.insert_payment(&theirs).await.unwrap(), Inserted::New);
});

conformance!(concurrent_identical_inserts_create_one_payment, |db| {
    let s = db.store.as_ref();
    let m = merchant(s).await;
    let a = account(s, &m, t0(), true).await;
    let template = payment(&m, &a, "order-race");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&db.store);
            let p = Payment {
                id: PaymentId::generate(),
                ..template.clone()
            };
            tokio::spawn(async move { (p.id.clone(), store.insert_payment(&p).await.unwrap()) })
        })
        .collect();
    let mut winners = Vec::new();
    let mut existing = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (id, Inserted::New) => winners.push(id),
            (_, Inserted::Existing(p)) => existing.push(p),
        }
    }
    assert_eq!(winners.len(), 1, "{}", db.backend);
    assert_eq!(existing.len(), 49);
    assert!(existing.iter().all(|p| p.id == winners[0]));
});

conformance!(transition_refuses_an_edge_the_machine_does_not_have, |db| {
    let s = db.store.as_ref();
    let (_, _, p) = setup(s).await;
    let e = event_for(&p, t0());
    // created → succeeded skips pending: refused, nothing written.
    let err = s
        .transition(
            &p.id,
            PaymentStatus::Created,
            PaymentStatus::Succeeded,
            &TransitionPatch::default(),
            Some(&e),
            t0(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(_)),
        "{}: {err}",
        db.backend
    );
    let now = s.payment(&p.id).await.unwrap().unwrap();
    assert_eq!(now.status, PaymentStatus::Created);
    assert!(s.events_for_payment(&p.id).await.unwrap().is_empty());
});

conformance!(the_database_refuses_refunding_more_than_was_paid, |db| {
    let s = db.store.as_ref();
    let (_, _, p) = setup(s).await;
    let over = "UPDATE payments SET refunded_minor = amount_minor + 1 WHERE id = ";
    let exact = "UPDATE payments SET refunded_minor = amount_minor WHERE id = ";
    let sql = |q: &str| format!("{q}'{}'", p.id.as_str());
    let (refused, allowed) = match db.backend {
        "sqlite" => {
            let path = db.url.strip_prefix("sqlite://").unwrap();
            let c = rusqlite::Connection::open(path).unwrap();
            (
                c.execute_batch(&sql(over)).is_err(),
                c.execute_batch(&sql(exact)).is_ok(),
            )
        }
        _ => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            (
                sqlx::raw_sql(&sql(over)).execute(&mut c).await.is_err(),
                sqlx::raw_sql(&sql(exact)).execute(&mut c).await.is_ok(),
            )
        }
    };
    assert!(refused, "{}: refunded beyond the amount", db.backend);
    assert!(allowed, "{}: refunded exactly the amount", db.backend);
});

conformance!(transition_is_a_compare_and_set_with_its_event, |db| {
    let s = db.store.as_ref();
    let (_, _, p) = setup(s).await;
    let now = t0() + secs(5);
    let patch = TransitionPatch {
        pay_params: Some(json!({"prepay_id": "wx1"})),
        ..Default::default()
    };
    let e1 = event_for(&p, now);
    let t = s
        .transition(
            &p.id,
            PaymentStatus::Created,
            PaymentStatus::Pending,
            &patch,
            Some(&e1),
            now,
        )
        .await
        .unwrap();
    let Transition::Applied(after) = t else {
        panic!("{}: expected Applied, got {t:?}", db.backend)
    };
    let expected = Payment {
        status: PaymentStatus::Pending,
        pay_params: patch.pay_params.clone(),
        updated_at: now,
        ..p.clone()
    };
    assert_eq!(after, expected);
    assert_eq!(s.payment(&p.id).await.unwrap(), Some(expected.clone()));

    let events = s.events_for_payment(&p.id).await.unwrap();
    assert_eq!(events.len(), 1);
    let ev = &events[0];
    assert_eq!(
        (&ev.id, &ev.payload, ev.created_at, &ev.app_id),
        (&e1.id, &e1.payload, e1.created_at, &e1.app_id)
    );
    assert_eq!(
        (ev.attempts, ev.next_attempt_at, ev.delivered_at, ev.dead),
        (0, now, None, false)
    );
    assert_eq!(s.event(&e1.id).await.unwrap().as_ref(), Some(ev));

    // The status moved on: the same transition now changes nothing.
    let later = now + secs(1);
    let stale = event_for(&p, later);
    let t = s
        .transition(
            &p.id,
            PaymentStatus::Created,
            PaymentStatus::Closed,
            &patch,
            Some(&stale),
            later,
        )
        .await
        .unwrap();
    assert_eq!(t, Transition::Unchanged(expected.clone()));
    assert_eq!(s.event(&stale.id).await.unwrap(), None);

    // An empty patch keeps earlier values; a set one overwrites.
    let paid = TransitionPatch {
        pay_params: None,
        channel_trade_no: Some("4200000002".into()),
        paid_at: Some(later),
        group_event: None,
    };
    let t = s
        .transition(
            &p.id,
            PaymentStatus::Pending,
            PaymentStatus::Succeeded,
            &paid,
            None,
            later,
        )
        .await
        .unwrap();
    let Transition::Applied(after) = t else {
        panic!("expected Applied")
    };
    assert_eq!(after.pay_params, patch.pay_params);
    assert_eq!(after.channel_trade_no.as_deref(), Some("4200000002"));
    assert_eq!(
        (after.paid_at, after.status, after.updated_at),
        (Some(later), PaymentStatus::Succeeded, later)
    );
    // No event was asked for, none was written.
    assert_eq!(s.events_for_payment(&p.id).await.unwrap().len(), 1);

    let missing = s
        .transition(
            &PaymentId::generate(),
            PaymentStatus::Created,
            PaymentStatus::Pending,
            &patch,
            None,
            now,
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
});

conformance!(a_failed_event_insert_rolls_the_transition_back, |db| {
    let s = db.store.as_ref();
    let (m, a, p) = setup(s).await;
    let taken = outbox_event(s, &m, &a, t0()).await;
    // Reusing an event id makes the event insert fail inside the transaction.
    let clash = NewEvent {
        id: taken.id.clone(),
        ..event_for(&p, t0())
    };
    let res = s
        .transition(
            &p.id,
            PaymentStatus::Created,
            PaymentStatus::Pending,
            &TransitionPatch::default(),
            Some(&clash),
            t0(),
        )
        .await;
    assert!(res.is_err(), "{}", db.backend);
    assert_eq!(s.payment(&p.id).await.unwrap(), Some(p.clone()));
    assert!(s.events_for_payment(&p.id).await.unwrap().is_empty());
});

conformance!(concurrent_identical_transitions_apply_once, |db| {
    let (_, _, p) = setup(db.store.as_ref()).await;
    let p = to_pending(db.store.as_ref(), &p).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&db.store);
            let p = p.clone();
            tokio::spawn(async move {
                let now = t0() + secs(1);
                let e = event_for(&p, now);
                let patch = TransitionPatch {
                    channel_trade_no: Some("42".into()),
                    ..Default::default()
                };
                store
                    .transition(
                        &p.id,
                        PaymentStatus::Pending,
                        PaymentStatus::Succeeded,
                        &patch,
                        Some(&e),
                        now,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        match t.await.unwrap() {
            Transition::Applied(_) => applied += 1,
            Transition::Unchanged(cur) => assert_eq!(cur.status, PaymentStatus::Succeeded),
        }
    }
    assert_eq!(applied, 1, "{}", db.backend);
    assert_eq!(
        db.store.events_for_payment(&p.id).await.unwrap().len(),
        1,
        "{}",
        db.backend
    );
});

conformance!(nonces_are_single_use_until_they_expire, |db| {
    let s = db.store.as_ref();
    let now = t0();
    let exp = now + secs(300);
    assert!(
        s.use_nonce("app_a", "n1", now, exp).await.unwrap(),
        "{}",
        db.backend
    );
    assert!(!s
        .use_nonce("app_a", "n1", now + secs(1), exp + secs(1))
        .await
        .unwrap());
    assert!(
        s.use_nonce("app_b", "n1", now, exp).await.unwrap(),
        "nonces are per app"
    );
    assert!(s
        .use_nonce("app_a", "n2", now, now + secs(10))
        .await
        .unwrap());
    // Just before expiry it is still taken; at expiry it is free again.
    assert!(!s
        .use_nonce(
            "app_a",
            "n1",
            exp - Duration::microseconds(1),
            exp + secs(300)
        )
        .await
        .unwrap());
    assert!(s
        .use_nonce("app_a", "n1", exp, exp + secs(300))
        .await
        .unwrap());
    assert!(!s
        .use_nonce("app_a", "n1", exp + secs(1), exp + secs(400))
        .await
        .unwrap());

    // At `exp`: n2 (expired at now+10s) and app_b's n1 (expired at exp) go.
    assert_eq!(s.purge_nonces(exp).await.unwrap(), 2);
    assert_eq!(s.purge_nonces(exp).await.unwrap(), 0);
    assert!(!s
        .use_nonce("app_a", "n1", exp + secs(2), exp + secs(400))
        .await
        .unwrap());
    assert!(s
        .use_nonce("app_a", "n2", exp + secs(2), exp + secs(400))
        .await
        .unwrap());
});

conformance!(outbox_claims_lease_retry_deliver_and_bury, |db| {
    let s = db.store.as_ref();
    let m = merchant(s).await;
    let a = account(s, &m, t0(), true).await;
    let e1 = outbox_event(s, &m, &a, t0()).await;
    let e2 = outbox_event(s, &m, &a, t0() + secs(1)).await;
    let e3 = outbox_event(s, &m, &a, t0() + secs(2)).await;
    let lease = secs(30);
    let ids = |evs: &[OutboxEvent]| evs.iter().map(|e| e.id.clone()).collect::<Vec<_>>();

    // Not due yet.
    assert!(s
        .claim_due_events(t0() - secs(1), lease, 10)
        .await
        .unwrap()
        .is_empty());
    // Oldest first, up to the limit.
    let now = t0() + secs(5);
    let got = s.claim_due_events(now, lease, 2).await.unwrap();
    assert_eq!(
        ids(&got),
        vec![e1.id.clone(), e2.id.clone()],
        "{}",
        db.backend
    );
    assert_eq!(got[0].payload, e1.payload);
    // Leased events are not handed out again while the lease runs.
    assert_eq!(
        ids(&s.claim_due_events(now, lease, 10).await.unwrap()),
        vec![e3.id.clone()]
    );
    assert!(s
        .claim_due_events(now + secs(29), lease, 10)
        .await
        .unwrap()
        .is_empty());

    // e1 delivered, e2 failed (retry in a minute), e3 left to its lease.
    s.mark_event_delivered(&e1.id, 1, now + secs(1))
        .await
        .unwrap();
    s.mark_event_failed(&e2.id, 1, now + secs(60), "HTTP 500")
        .await
        .unwrap();
    let d = s.event(&e1.id).await.unwrap().unwrap();
    assert_eq!((d.delivered_at, d.attempts), (Some(now + secs(1)), 1));
    let f = s.event(&e2.id).await.unwrap().unwrap();
    assert_eq!(
        (f.attempts, f.next_attempt_at, f.last_error.as_deref()),
        (1, now + secs(60), Some("HTTP 500"))
    );

    // e3's lease ran out: claimable again (now for two minutes); e2 not due; e1 never again.
    let after_lease = now + lease;
    assert_eq!(
        ids(&s
            .claim_due_events(after_lease, secs(120), 10)
            .await
            .unwrap()),
        vec![e3.id.clone()]
    );
    let retry_at = now + secs(60);
    assert_eq!(
        ids(&s.claim_due_events(retry_at, lease, 10).await.unwrap()),
        vec![e2.id.clone()]
    );

    // e2 gives up for good: never claimed again.
    s.mark_event_dead(&e2.id, 8, "gave up").await.unwrap();
    let dead = s.event(&e2.id).await.unwrap().unwrap();
    assert_eq!(
        (dead.dead, dead.attempts, dead.last_error.as_deref()),
        (true, 8, Some("gave up"))
    );
    let far = t0() + Duration::days(30);
    assert_eq!(
        ids(&s.claim_due_events(far, lease, 10).await.unwrap()),
        vec![e3.id.clone()]
    );
    s.mark_event_delivered(&e3.id, 2, far).await.unwrap();
    assert!(s
        .claim_due_events(far + Duration::days(1), lease, 10)
        .await
        .unwrap()
        .is_empty());

    assert!(matches!(
        s.mark_event_delivered("evt_nope", 1, now).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.mark_event_failed("evt_nope", 1, now, "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.mark_event_dead("evt_nope", 1, "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.event("evt_nope").await.unwrap(), None);
});

conformance!(undelivered_events_are_listed_and_dead_ones_retried, |db| {
    let s = db.store.as_ref();
    let m = merchant(s).await;
    let other = merchant(s).await;
    let a = account(s, &m, t0(), true).await;
    let b = account(s, &other, t0(), true).await;
    let delivered = outbox_event(s, &m, &a, t0()).await;
    let dead = outbox_event(s, &m, &a, t0() + secs(1)).await;
    let retrying = outbox_event(s, &m, &a, t0() + secs(2)).await;
    let others = outbox_event(s, &other, &b, t0() + secs(3)).await;
    let lease = secs(30);
    s.claim_due_events(t0() + secs(5), lease, 10).await.unwrap();
    s.mark_event_delivered(&delivered.id, 1, t0() + secs(6))
        .await
        .unwrap();
    s.mark_event_dead(&dead.id, 8, "HTTP 500").await.unwrap();
    s.mark_event_failed(&retrying.id, 1, t0() + secs(60), "timeout")
        .await
        .unwrap();
    let ids = |evs: Vec<OutboxEvent>| evs.into_iter().map(|e| e.id).collect::<Vec<_>>();

    // Oldest first; the merchant's only; the limit holds; delivered never listed.
    assert_eq!(
        ids(s.undelivered_events(Some(&m.id), false, 10).await.unwrap()),
        vec![dead.id.clone(), retrying.id.clone()],
        "{}",
        db.backend
    );
    assert_eq!(
        ids(s.undelivered_events(Some(&m.id), true, 10).await.unwrap()),
        vec![dead.id.clone()]
    );
    assert_eq!(
        ids(s.undelivered_events(None, false, 10).await.unwrap()),
        vec![dead.id.clone(), retrying.id.clone(), others.id.clone()]
    );
    assert_eq!(
        ids(s.undelivered_events(None, false, 1).await.unwrap()),
        vec![dead.id.clone()]
    );

    // A retried dead event is due at once with a fresh schedule, and
    // claimable like any other.
    let now = t0() + secs(100);
    let again = s.retry_event(&dead.id, now).await.unwrap();
    assert_eq!(
        (again.dead, again.attempts, again.next_attempt_at),
        (false, 0, now)
    );
    assert!(s
        .undelivered_events(Some(&m.id), true, 10)
        .await
        .unwrap()
        .is_empty());
    let claimed = ids(s.claim_due_events(now, lease, 10).await.unwrap());
    assert!(claimed.contains(&dead.id), "{claimed:?}");

    // Retrying an event a worker holds keeps the lease: not handed out twice.
    s.retry_event(&dead.id, now).await.unwrap();
    assert!(!ids(s.claim_due_events(now, lease, 10).await.unwrap()).contains(&dead.id));

    // An acknowledged event is never sent again; an unknown one is not found.
    assert!(matches!(
        s.retry_event(&delivered.id, now).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.retry_event("evt_nope", now).await,
        Err(StoreError::NotFound(_))
    ));
    let d = s.event(&delivered.id).await.unwrap().unwrap();
    assert_eq!((d.attempts, d.dead), (1, false));
});

conformance!(concurrent_claimers_never_share_an_event, |db| {
    let s = db.store.as_ref();
    let m = merchant(s).await;
    let a = account(s, &m, t0(), true).await;
    let mut all = HashSet::new();
    for i in 0..40 {
        all.insert(
            outbox_event(s, &m, &a, t0() + Duration::milliseconds(i))
                .await
                .id,
        );
    }
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&db.store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim_due_events(t0() + secs(10), secs(60), 3)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|e| e.id));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for w in workers {
        claimed.extend(w.await.unwrap());
    }
    let unique: HashSet<_> = claimed.iter().cloned().collect();
    assert_eq!(
        claimed.len(),
        unique.len(),
        "{}: an event was claimed twice",
        db.backend
    );
    assert_eq!(unique, all);
});

conformance!(idempotency_records_keep_the_first_answer, |db| {
    let s = db.store.as_ref();
    let r = IdempotencyRecord {
        merchant_id: "mch_1".into(),
        key: "key-1".into(),
        request_hash: "h1".into(),
        status: 201,
        body: b"{\"id\":\"pay_1\"}\x00\xff".to_vec(),
        created_at: t0(),
    };
    assert_eq!(s.idempotency_record("mch_1", "key-1").await.unwrap(), None);
    assert!(
        s.save_idempotency_record(&r).await.unwrap(),
        "{}",
        db.backend
    );
    let second = IdempotencyRecord {
        status: 500,
        body: b"other".to_vec(),
        ..r.clone()
    };
    assert!(!s.save_idempotency_record(&second).await.unwrap());
    assert_eq!(
        s.idempotency_record("mch_1", "key-1").await.unwrap(),
        Some(r.clone())
    );
    // Keys are per merchant.
    let other = IdempotencyRecord {
        merchant_id: "mch_2".into(),
        ..r.clone()
    };
    assert!(s.save_idempotency_record(&other).await.unwrap());
    assert_eq!(
        s.idempotency_record("mch_2", "key-1").await.unwrap(),
        Some(other)
    );
});

conformance!(idempotency_reservations_complete_release_and_purge, |db| {
    let s = db.store.as_ref();
    let reserved = IdempotencyRecord {
        merchant_id: "mch_1".into(),
        key: "key-r".into(),
        request_hash: "h1".into(),
        status: IdempotencyRecord::IN_PROGRESS,
        body: Vec::new(),
        created_at: t0(),
    };
    assert!(s.save_idempotency_record(&reserved).await.unwrap());
    assert!(
        !s.save_idempotency_record(&reserved).await.unwrap(),
        "{}: reserved once",
        db.backend
    );
    // Releasing someone else's reservation (another time) does nothing.
    assert!(!s
        .release_idempotency_key("mch_1", "key-r", t0() + secs(1))
        .await
        .unwrap());
    let answered = IdempotencyRecord {
        status: 201,
        body: b"{}".to_vec(),
        ..reserved.clone()
    };
    assert!(s.complete_idempotency_record(&answered).await.unwrap());
    assert!(
        !s.complete_idempotency_record(&answered).await.unwrap(),
        "completed once"
    );
    assert!(
        !s.release_idempotency_key("mch_1", "key-r", t0())
            .await
            .unwrap(),
        "an answer is never released"
    );
    assert_eq!(
        s.idempotency_record("mch_1", "key-r").await.unwrap(),
        Some(answered)
    );

    let crashed = IdempotencyRecord {
        key: "key-c".into(),
        ..reserved.clone()
    };
    assert!(s.save_idempotency_record(&crashed).await.unwrap());
    assert!(s
        .release_idempotency_key("mch_1", "key-c", t0())
        .await
        .unwrap());
    assert_eq!(s.idempotency_record("mch_1", "key-c").await.unwrap(), None);

    assert_eq!(s.purge_idempotency_records(t0()).await.unwrap(), 0);
    assert_eq!(
        s.purge_idempotency_records(t0() + secs(1)).await.unwrap(),
        1
    );
    assert_eq!(s.idempotency_record("mch_1", "key-r").await.unwrap(), None);
});

/// The ids of the payments a claim returned.
fn due_ids(due: &[DuePayment]) -> Vec<PaymentId> {
    due.iter().map(|d| d.payment.id.clone()).collect()
}

conformance!(open_payments_are_claimed_for_polling_when_due, |db| {
    let s = db.store.as_ref();
    let (m, a, p) = setup(s).await;
    let lease = secs(60);
    // Created at t0, first check 60 s after creation: not due at t0 + 10 s.
    let due = s
        .claim_due_payments(t0() + secs(10), t0() - secs(50), lease, 10)
        .await
        .unwrap();
    assert!(due.is_empty(), "{}: {due:?}", db.backend);
    let due = s
        .claim_due_payments(t0() + secs(60), t0(), lease, 10)
        .await
        .unwrap();
    assert_eq!(due_ids(&due), vec![p.id.clone()], "{}", db.backend);
    assert_eq!(due[0].poll_attempts, 0);
    assert_eq!(due[0].payment, p);
    // Leased: nobody else takes it until the lease runs out.
    let due = s
        .claim_due_payments(t0() + secs(61), t0() + secs(1), lease, 10)
        .await
        .unwrap();
    assert!(
        due.is_empty(),
        "{}: leased payment claimed again",
        db.backend
    );
    let due = s
        .claim_due_payments(t0() + secs(121), t0() + secs(61), lease, 10)
        .await
        .unwrap();
    assert_eq!(
        due_ids(&due),
        vec![p.id.clone()],
        "{}: lease ran out",
        db.backend
    );

    // A recorded check releases the lease; the next is due at its time only.
    s.schedule_payment_poll(&p.id, 1, t0() + secs(300))
        .await
        .unwrap();
    let due = s
        .claim_due_payments(t0() + secs(299), t0() + secs(239), lease, 10)
        .await
        .unwrap();
    assert!(due.is_empty(), "{}: {due:?}", db.backend);
    let due = s
        .claim_due_payments(t0() + secs(300), t0() + secs(240), lease, 10)
        .await
        .unwrap();
    assert_eq!(due_ids(&due), vec![p.id.clone()]);
    assert_eq!(due[0].poll_attempts, 1, "{}", db.backend);

    // A final payment is never checked again.
    let t = s
        .transition(
            &p.id,
            PaymentStatus::Created,
            PaymentStatus::Closed,
            &TransitionPatch::default(),
            None,
            t0() + secs(301),
        )
        .await
        .unwrap();
    assert!(matches!(t, Transition::Applied(_)));
    s.schedule_payment_poll(&p.id, 2, t0() + secs(400))
        .await
        .unwrap();
    let due = s
        .claim_due_payments(t0() + secs(10_000), t0() + secs(9_940), lease, 10)
        .await
        .unwrap();
    assert!(due.is_empty(), "{}: closed payment claimed", db.backend);

    // An expired payment is due even before its first check would be.
    let q = Payment {
        status: PaymentStatus::Pending,
        expires_at: t0() + secs(30),
        ..payment(&m, &a, &new_id("order"))
    };
    assert_eq!(s.insert_payment(&q).await.unwrap(), Inserted::New);
    let due = s
        .claim_due_payments(t0() + secs(29), t0() - secs(31), lease, 10)
        .await
        .unwrap();
    assert!(due.is_empty(), "{}: {due:?}", db.backend);
    let due = s
        .claim_due_payments(t0() + secs(30), t0() - secs(30), lease, 10)
        .await
        .unwrap();
    assert_eq!(due_ids(&due), vec![q.id.clone()], "{}", db.backend);

    let missing = s
        .schedule_payment_poll(&PaymentId::generate(), 1, t0())
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{}: {missing:?}",
        db.backend
    );
});

conformance!(concurrent_poll_claimers_never_share_a_payment, |db| {
    let s = db.store.as_ref();
    let m = merchant(s).await;
    let a = account(s, &m, t0(), true).await;
    let mut all = HashSet::new();
    for _ in 0..40 {
        all.insert(fresh_payment(s, &m, &a).await.id);
    }
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&db.store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim_due_payments(t0() + secs(120), t0() + secs(60), secs(60), 3)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(due_ids(&got));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for w in workers {
        claimed.extend(w.await.unwrap());
    }
    let unique: HashSet<_> = claimed.iter().cloned().collect();
    assert_eq!(
        claimed.len(),
        unique.len(),
        "{}: a payment was claimed twice",
        db.backend
    );
    assert_eq!(unique, all);
});

// --- refunds --------------------------------------------------------------------

/// A `succeeded` payment of 12 345 fen.
/// Moves a `created` payment to `pending`, as an accepted prepay does.
async fn to_pending(store: &dyn Store, p: &Payment) -> Payment {
    let t = store
        .transition(
            &p.id,
            PaymentStatus::Created,
            PaymentStatus::Pending,
            &TransitionPatch::default(),
            None,
            t0(),
        )
        .await
        .unwrap();
    let Transition::Applied(p) = t else {
        panic!("{t:?}")
    };
    p
}

async fn paid_payment(store: &dyn Store) -> (Merchant, Payment) {
    let (m, _, p) = setup(store).await;
    let p = to_pending(store, &p).await;
    let t = store
        .transition(
            &p.id,
            PaymentStatus::Pending,
            PaymentStatus::Succeeded,
            &TransitionPatch::default(),
            None,
            t0(),
        )
        .await
        .unwrap();
    let Transition::Applied(p) = t else {
        panic!("{t:?}")
    };
    (m, p)
}

fn refund_of(p: &Payment, no: &str, amount: i64) -> Refund {
    Refund {
        id: new_id("ref"),
        merchant_id: p.merchant_id.clone(),
        payment_id: p.id.clone(),
        merchant_refund_no: no.into(),
        amount: Money::new(amount, Currency::CNY).unwrap(),
        status: RefundStatus::Processing,
        reason: Some("退货".into()),
        notify_url: "https://merchant.example/refunds".into(),
        request_hash: format!("hash-{no}"),
        channel_refund_no: None,
        failure_reason: None,
        refunded_at: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

conformance!(refunds_are_reserved_within_what_was_paid, |db| {
    let s = db.store.as_ref();
    let (m, p) = paid_payment(s).await;
    let first = refund_of(&p, "R-1", 10_000);
    assert_eq!(s.insert_refund(&first).await.unwrap(), RefundInserted::New);
    assert_eq!(s.refund(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(
        s.refund_by_no(&m.id, "R-1").await.unwrap(),
        Some(first.clone()),
        "{}",
        db.backend
    );
    // The same number again finds the first, whatever the new request says.
    assert_eq!(
        s.insert_refund(&refund_of(&p, "R-1", 5)).await.unwrap(),
        RefundInserted::Existing(first.clone())
    );
    // 2 345 left.
    assert_eq!(
        s.insert_refund(&refund_of(&p, "R-2", 2_346)).await.unwrap(),
        RefundInserted::Exceeds { available: 2_345 }
    );
    let second = refund_of(&p, "R-2", 2_345);
    assert_eq!(s.insert_refund(&second).await.unwrap(), RefundInserted::New);
    assert_eq!(
        s.insert_refund(&refund_of(&p, "R-3", 1)).await.unwrap(),
        RefundInserted::Exceeds { available: 0 }
    );
    // A failed refund gives its amount back.
    let failed = s
        .transition_refund(
            &second.id,
            RefundStatus::Processing,
            RefundStatus::Failed,
            &RefundPatch {
                failure_reason: Some("NOT_ENOUGH".into()),
                ..Default::default()
            },
            None,
            t0() + secs(1),
        )
        .await
        .unwrap();
    assert!(matches!(failed, RefundTransition::Applied(ref r) if r.status == RefundStatus::Failed));
    assert_eq!(
        s.insert_refund(&refund_of(&p, "R-3", 2_345)).await.unwrap(),
        RefundInserted::New
    );
    let all = s.refunds_for_payment(&p.id).await.unwrap();
    assert_eq!(all.len(), 3);

    // Only a succeeded payment can be refunded.
    let (_, _, open) = setup(s).await;
    assert_eq!(
        s.insert_refund(&refund_of(&open, "R-OPEN", 1))
            .await
            .unwrap(),
        RefundInserted::NotRefundable(PaymentStatus::Created)
    );
    let mut ghost = refund_of(&p, "R-GHOST", 1);
    ghost.payment_id = PaymentId::generate();
    assert!(matches!(
        s.insert_refund(&ghost).await,
        Err(StoreError::NotFound(_))
    ));
});

conformance!(concurrent_partial_refunds_never_exceed_the_payment, |db| {
    let (_, p) = paid_payment(db.store.as_ref()).await;
    // 20 × 1 000 against 12 345: exactly 12 fit.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&db.store);
            let r = refund_of(&p, &format!("C-{i}"), 1_000);
            tokio::spawn(async move { store.insert_refund(&r).await.unwrap() })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap() {
            RefundInserted::New => new += 1,
            RefundInserted::Exceeds { available } => assert!(available < 1_000),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(new, 12, "{}", db.backend);
    let held: i64 = db
        .store
        .refunds_for_payment(&p.id)
        .await
        .unwrap()
        .iter()
        .map(|r| r.amount.minor)
        .sum();
    assert_eq!(held, 12_000);
});

conformance!(
    refund_transitions_are_compare_and_set_with_their_event,
    |db| {
        let s = db.store.as_ref();
        let (_, p) = paid_payment(s).await;
        let r = refund_of(&p, "T-1", 100);
        s.insert_refund(&r).await.unwrap();
        let at = t0() + secs(7);
        let event = NewEvent {
            refund_id: Some(r.id.clone()),
            event_type: "refund.succeeded".into(),
            ..event_for(&p, at)
        };
        let patch = RefundPatch {
            channel_refund_no: Some("50000000382019052709732678859".into()),
            refunded_at: Some(at),
            ..Default::default()
        };
        let done = s
            .transition_refund(
                &r.id,
                RefundStatus::Processing,
                RefundStatus::Succeeded,
                &patch,
                Some(&event),
                at,
            )
            .await
            .unwrap();
        let RefundTransition::Applied(after) = done else {
            panic!("{done:?}")
        };
        assert_eq!(after.status, RefundStatus::Succeeded);
        assert_eq!(after.refunded_at, Some(at));
        assert_eq!(after.channel_refund_no, patch.channel_refund_no);
        assert_eq!(after.updated_at, at);
        let stored = s.event(&event.id).await.unwrap().unwrap();
        assert_eq!(
            stored.refund_id.as_deref(),
            Some(r.id.as_str()),
            "{}",
            db.backend
        );
        // The second report loses the compare-and-set and writes nothing.
        let again = s
            .transition_refund(
                &r.id,
                RefundStatus::Processing,
                RefundStatus::Failed,
                &RefundPatch::default(),
                Some(&NewEvent {
                    id: new_id("evt"),
                    ..event.clone()
                }),
                at,
            )
            .await
            .unwrap();
        assert_eq!(again, RefundTransition::Unchanged(after));
        assert_eq!(s.events_for_payment(&p.id).await.unwrap().len(), 1);
        assert!(matches!(
            s.transition_refund(
                "ref_nope",
                RefundStatus::Processing,
                RefundStatus::Failed,
                &RefundPatch::default(),
                None,
                at
            )
            .await,
            Err(StoreError::NotFound(_))
        ));
    }
);

conformance!(processing_refunds_are_claimed_for_polling_when_due, |db| {
    let s = db.store.as_ref();
    let (_, p) = paid_payment(s).await;
    let r = refund_of(&p, "P-1", 100);
    s.insert_refund(&r).await.unwrap();
    let lease = secs(30);
    // Not before the first delay.
    assert!(s
        .claim_due_refunds(t0() + secs(10), t0() - secs(1), lease, 10)
        .await
        .unwrap()
        .is_empty());
    let now = t0() + secs(60);
    let due = s.claim_due_refunds(now, t0(), lease, 10).await.unwrap();
    assert_eq!(due.len(), 1, "{}", db.backend);
    assert_eq!(
        (due[0].refund.id.clone(), due[0].poll_attempts),
        (r.id.clone(), 0)
    );
    // Leased: not handed out again.
    assert!(s
        .claim_due_refunds(now, t0(), lease, 10)
        .await
        .unwrap()
        .is_empty());
    s.schedule_refund_poll(&r.id, 1, now + secs(120))
        .await
        .unwrap();
    assert!(s
        .claim_due_refunds(now + secs(119), t0(), lease, 10)
        .await
        .unwrap()
        .is_empty());
    let due = s
        .claim_due_refunds(now + secs(120), t0(), lease, 10)
        .await
        .unwrap();
    assert_eq!(due[0].poll_attempts, 1);
    // Final refunds are never claimed.
    s.transition_refund(
        &r.id,
        RefundStatus::Processing,
        RefundStatus::Succeeded,
        &RefundPatch::default(),
        None,
        now,
    )
    .await
    .unwrap();
    assert!(s
        .claim_due_refunds(now + secs(10_000), t0(), lease, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.schedule_refund_poll("ref_nope", 1, now).await,
        Err(StoreError::NotFound(_))
    ));
});

// --- ledger ----------------------------------------------------------------------

async fn settle_refund(store: &dyn Store, r: &Refund, to: RefundStatus) -> Refund {
    let t = store
        .transition_refund(
            &r.id,
            RefundStatus::Processing,
            to,
            &RefundPatch {
                refunded_at: (to == RefundStatus::Succeeded).then(|| t0() + secs(2)),
                ..Default::default()
            },
            None,
            t0() + secs(2),
        )
        .await
        .unwrap();
    let RefundTransition::Applied(r) = t else {
        panic!("{t:?}")
    };
    r
}

fn balance_of(balances: &[AccountBalance], account: LedgerAccount) -> (i64, i64) {
    balances
        .iter()
        .filter(|b| b.account == account)
        .fold((0, 0), |(d, c), b| (d + b.debit, c + b.credit))
}

conformance!(money_that_moves_is_posted_once_and_balances, |db| {
    let s = db.store.as_ref();
    let (m, p) = paid_payment(s).await;
    // The capture, posted with the transition that made it.
    assert_eq!(
        s.payment_postings(&p.id).await.unwrap(),
        ledger::capture(&p, t0()),
        "{}",
        db.backend
    );
    // An open payment and a closed one post nothing.
    let (_, _, open) = setup(s).await;
    assert!(s.payment_postings(&open.id).await.unwrap().is_empty());

    let kept = refund_of(&p, "R-1", 2_000);
    let refused = refund_of(&p, "R-2", 3_000);
    for r in [&kept, &refused] {
        assert_eq!(s.insert_refund(r).await.unwrap(), RefundInserted::New);
    }
    // A processing refund has moved no money yet.
    assert_eq!(s.payment_postings(&p.id).await.unwrap().len(), 2);
    let kept = settle_refund(s, &kept, RefundStatus::Succeeded).await;
    settle_refund(s, &refused, RefundStatus::Failed).await;
    let postings = s.payment_postings(&p.id).await.unwrap();
    let mut expected = ledger::capture(&p, t0());
    expected.extend(ledger::refund(&kept, &p.channel_account_id, t0() + secs(2)));
    assert_eq!(postings, expected, "{}", db.backend);

    let balances = s.balances(&m.id).await.unwrap();
    assert!(balances
        .iter()
        .all(|b| b.channel_account_id == p.channel_account_id
            && b.channel == ChannelKind::Wechat
            && b.currency == "CNY"));
    assert_eq!(
        balance_of(&balances, LedgerAccount::ChannelReceivable),
        (12_345, 2_000)
    );
    assert_eq!(
        balance_of(&balances, LedgerAccount::MerchantRevenue),
        (0, 12_345)
    );
    assert_eq!(
        balance_of(&balances, LedgerAccount::MerchantRefunds),
        (2_000, 0)
    );
    // Another merchant's books are empty.
    let other = merchant(s).await;
    assert!(s.balances(&other.id).await.unwrap().is_empty());

    let check = s.ledger_check(10).await.unwrap();
    assert!(check.ok(), "{:?}", check.issues);
    assert_eq!((check.transactions, check.postings), (2, 4));
});

conformance!(a_tampered_ledger_fails_its_check, |db| {
    let s = db.store.as_ref();
    let (_, p) = paid_payment(s).await;
    let r = refund_of(&p, "R-1", 45);
    s.insert_refund(&r).await.unwrap();
    let r = settle_refund(s, &r, RefundStatus::Succeeded).await;
    assert!(s.ledger_check(10).await.unwrap().ok());

    // One posting's amount edited: its transaction no longer balances and
    // the capture no longer matches the payment.
    let changed = db
        .tamper(&format!(
            "UPDATE ledger_postings SET credit_minor = credit_minor + 1
             WHERE txn_id = 'capture:{}' AND account = 'merchant_revenue'",
            p.id
        ))
        .await;
    assert_eq!(changed, 1);
    let check = s.ledger_check(10).await.unwrap();
    let kinds: Vec<_> = check.issues.iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [
            LedgerIssueKind::Unbalanced,
            LedgerIssueKind::CaptureMismatch,
            LedgerIssueKind::ReceivableMismatch
        ],
        "{:?}",
        check.issues
    );
    assert_eq!(check.issues[0].subject, format!("capture:{}", p.id));
    assert_eq!(
        (check.issues[0].expected, check.issues[0].actual),
        (12_345, 12_346)
    );
    assert_eq!(
        check.issues[0].to_string(),
        format!(
            "unbalanced capture:{}: expected 12345, ledger has 12346",
            p.id
        )
    );

    // A refund's postings deleted outright: the refund is unposted, and
    // with the capture restored everything else agrees again.
    db.tamper(&format!(
        "UPDATE ledger_postings SET credit_minor = credit_minor - 1
         WHERE txn_id = 'capture:{}' AND account = 'merchant_revenue'",
        p.id
    ))
    .await;
    assert_eq!(
        db.tamper(&format!(
            "DELETE FROM ledger_postings WHERE refund_id = '{}'",
            r.id
        ))
        .await,
        2
    );
    let check = s.ledger_check(10).await.unwrap();
    assert_eq!(
        check.issues,
        [LedgerIssue {
            kind: LedgerIssueKind::RefundMismatch,
            subject: r.id.clone(),
            expected: 45,
            actual: 0,
        }]
    );
});

conformance!(opening_entries_post_what_moved_before_the_ledger, |db| {
    let s = db.store.as_ref();
    let (_, p) = paid_payment(s).await;
    let r = refund_of(&p, "R-1", 345);
    s.insert_refund(&r).await.unwrap();
    settle_refund(s, &r, RefundStatus::Succeeded).await;
    let posted = s.payment_postings(&p.id).await.unwrap();
    // A database from before the ledger: the money moved, nothing posted.
    db.tamper("DELETE FROM ledger_postings").await;
    assert!(!s.ledger_check(10).await.unwrap().ok());
    // The migration's opening entries, as an upgrade runs them.
    let migration = match db.backend {
        "sqlite" => include_str!("../migrations/sqlite/0013_ledger.sql"),
        _ => include_str!("../migrations/postgres/0013_ledger.sql"),
    };
    let (_, opening) = migration.split_once("-- Opening entries").unwrap();
    assert_eq!(db.tamper(&format!("--{opening}")).await, 4);
    assert_eq!(s.payment_postings(&p.id).await.unwrap(), posted);
    assert!(s.ledger_check(10).await.unwrap().ok());
});

// --- reconciliation ----------------------------------------------------------------

fn run_of(a: &ChannelAccount, trigger: &str, started_at: DateTime<Utc>) -> ReconciliationRun {
    ReconciliationRun {
        id: new_id("rec"),
        merchant_id: a.merchant_id.clone(),
        channel_account_id: a.id.clone(),
        channel: a.channel,
        bill_date: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        trigger: trigger.into(),
        status: RunStatus::Running,
        matched: 0,
        discrepancy_count: 0,
        discrepancies: json!([]),
        error: None,
        started_at,
        finished_at: None,
    }
}

conformance!(
    reconciliation_runs_are_kept_and_daily_ones_claimed_once,
    |db| {
        let s = db.store.as_ref();
        let m = merchant(s).await;
        let a = account(s, &m, t0(), true).await;
        let manual = run_of(&a, "manual", t0());
        s.insert_reconciliation(&manual).await.unwrap();
        s.insert_reconciliation(&run_of(&a, "manual", t0()))
            .await
            .unwrap();
        let done = ReconciliationRun {
            status: RunStatus::Succeeded,
            matched: 41,
            discrepancy_count: 1,
            discrepancies: json!([{"kind": "missing_here", "payment_id": "pay_1", "theirs": 100}]),
            finished_at: Some(t0() + secs(3)),
            ..manual.clone()
        };
        s.finish_reconciliation(&done).await.unwrap();
        assert_eq!(
            s.reconciliation(&manual.id).await.unwrap(),
            Some(done.clone()),
            "{}",
            db.backend
        );
        assert_eq!(s.reconciliation("rec_nope").await.unwrap(), None);
        // A run ends once.
        assert!(matches!(
            s.finish_reconciliation(&done).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            s.finish_reconciliation(&run_of(&a, "manual", t0())).await,
            Err(StoreError::NotFound(_))
        ));

        // One daily run per account and day, whoever asks.
        let first = run_of(&a, "daily", t0());
        let later = t0() + secs(3_600);
        assert_eq!(
            s.claim_daily_reconciliation(&first, later).await.unwrap(),
            Some(first.id.clone())
        );
        let second = run_of(&a, "daily", t0() + secs(60));
        assert_eq!(
            s.claim_daily_reconciliation(&second, later).await.unwrap(),
            None
        );
        // A failed one is claimed again once it failed long enough ago.
        let failed = ReconciliationRun {
            status: RunStatus::Failed,
            error: Some("bill not ready".into()),
            finished_at: Some(t0() + secs(120)),
            ..first.clone()
        };
        s.finish_reconciliation(&failed).await.unwrap();
        assert_eq!(
            s.claim_daily_reconciliation(&second, t0() + secs(100))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            s.claim_daily_reconciliation(&second, t0() + secs(121))
                .await
                .unwrap(),
            Some(first.id.clone())
        );
        let day = s.reconciliations(&a.id, first.bill_date).await.unwrap();
        assert_eq!(day.len(), 3, "two manual runs and one daily");
        assert_eq!(day.iter().filter(|r| r.trigger == "daily").count(), 1);
        assert!(s
            .reconciliations(&a.id, first.bill_date.succ_opt().unwrap())
            .await
            .unwrap()
            .is_empty());
        let again = s.reconciliation(&first.id).await.unwrap().unwrap();
        assert_eq!(
            (again.status, again.error, again.finished_at),
            (RunStatus::Running, None, None)
        );
        assert_eq!(again.started_at, second.started_at);
    }
);

conformance!(what_an_account_settled_in_a_day_is_paged_by_id, |db| {
    let s = db.store.as_ref();
    let (m, a, _) = setup(s).await;
    let mut paid = Vec::new();
    for at in [secs(1), secs(2), secs(100)] {
        let p = to_pending(s, &fresh_payment(s, &m, &a).await).await;
        let patch = TransitionPatch {
            paid_at: Some(t0() + at),
            ..Default::default()
        };
        let t = s
            .transition(
                &p.id,
                PaymentStatus::Pending,
                PaymentStatus::Succeeded,
                &patch,
                None,
                t0() + at,
            )
            .await
            .unwrap();
        let Transition::Applied(p) = t else {
            panic!("{t:?}")
        };
        paid.push(p);
    }
    let r = refund_of(&paid[0], "R-1", 45);
    s.insert_refund(&r).await.unwrap();
    let r = settle_refund(s, &r, RefundStatus::Succeeded).await;
    let q = |after: Option<String>, limit: u32| SettledQuery {
        channel_account_id: a.id.clone(),
        from: t0(),
        to: t0() + secs(10),
        after,
        limit,
    };
    let mut ids: Vec<_> = paid[..2]
        .iter()
        .map(|p| p.id.as_str().to_string())
        .collect();
    ids.sort();
    let page = s.settled_payments(&q(None, 1)).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id.as_str(), ids[0]);
    let rest = s
        .settled_payments(&q(Some(ids[0].clone()), 10))
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [ids[1].as_str()]
    );
    assert_eq!(
        s.settled_refunds(&q(None, 10))
            .await
            .unwrap()
            .iter()
            .map(|x| &x.id)
            .collect::<Vec<_>>(),
        [&r.id]
    );
    assert!(s
        .settled_refunds(&q(Some(r.id.clone()), 10))
        .await
        .unwrap()
        .is_empty());
    let other = SettledQuery {
        channel_account_id: "acct_other".into(),
        ..q(None, 10)
    };
    assert!(s.settled_payments(&other).await.unwrap().is_empty());
});

conformance!(
    a_channel_fee_is_posted_once_and_lowers_the_receivable,
    |db| {
        let s = db.store.as_ref();
        let (m, p) = paid_payment(s).await;
        let at = t0() + secs(5);
        assert_eq!(
            s.post_fee(&p.id, 74, at).await.unwrap(),
            ledger::FeePosted::New
        );
        assert_eq!(
            s.post_fee(&p.id, 74, at).await.unwrap(),
            ledger::FeePosted::Already
        );
        assert_eq!(
            s.post_fee(&p.id, 75, at).await.unwrap(),
            ledger::FeePosted::Differs { posted: 74 }
        );
        let mut expected = ledger::capture(&p, t0());
        expected.extend(ledger::fee(&p, 74, at));
        assert_eq!(
            s.payment_postings(&p.id).await.unwrap(),
            expected,
            "{}",
            db.backend
        );
        let books = ledger::summarise(&s.balances(&m.id).await.unwrap());
        assert_eq!(
            (books[0].captured, books[0].fees, books[0].receivable),
            (12_345, 74, 12_345 - 74)
        );
        let check = s.ledger_check(10).await.unwrap();
        assert!(check.ok(), "{:?}", check.issues);

        // Only a succeeded payment has a fee, and never more than it.
        let (_, _, open) = setup(s).await;
        for (id, fee) in [(&open.id, 1), (&p.id, 0), (&p.id, 12_346)] {
            assert!(
                matches!(s.post_fee(id, fee, at).await, Err(StoreError::Invalid(_))),
                "{fee}"
            );
        }
        assert!(matches!(
            s.post_fee(&PaymentId::generate(), 1, at).await,
            Err(StoreError::NotFound(_))
        ));
        // Posted to the wrong account by hand, it shows.
        db.tamper(&format!(
            "UPDATE ledger_postings SET account = 'merchant_refunds'
         WHERE txn_id = 'fee:{}' AND account = 'channel_fees'",
            p.id
        ))
        .await;
        assert!(!s.ledger_check(10).await.unwrap().ok());
    }
);

// --- audit trail -------------------------------------------------------------------

conformance!(
    every_change_leaves_a_sealed_trail_that_shows_tampering,
    |db| {
        let s = db.store.as_ref();
        let (m, p) = paid_payment(s).await;
        let r = refund_of(&p, "R-1", 45);
        s.insert_refund(&r).await.unwrap();
        settle_refund(s, &r, RefundStatus::Succeeded).await;
        let trail: Vec<_> = s
            .audit_of(p.id.as_str())
            .await
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.action,
                    serde_json::from_str::<serde_json::Value>(&e.detail).unwrap(),
                )
            })
            .collect();
        assert_eq!(trail.len(), 3, "{trail:?}");
        assert_eq!(trail[0].0, "created");
        assert_eq!(trail[0].1["amount"], 12_345);
        assert_eq!(
            (trail[1].1["from"].as_str(), trail[1].1["to"].as_str()),
            (Some("created"), Some("pending"))
        );
        assert_eq!(trail[2].1["to"], "succeeded");
        assert_eq!(s.audit_of(&r.id).await.unwrap().len(), 2);
        // Secrets never reach the trail.
        let apps = s.merchant_apps(&m.id).await.unwrap();
        let app_trail = s.audit_of(&apps[0].app_id).await.unwrap();
        assert!(app_trail.iter().all(|e| !e.detail.contains("s3cret")));

        // A merchant event made, then delivered.
        let a = account(s, &m, t0(), true).await;
        let e = outbox_event(s, &m, &a, t0()).await;
        s.mark_event_delivered(&e.id, 1, t0() + secs(1))
            .await
            .unwrap();
        let actions: Vec<_> = s
            .audit_of(&e.id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["created", "delivered"], "{}", db.backend);

        let written = s.audit_unsealed().await.unwrap();
        assert!(written >= 7, "{written}");
        assert_eq!(audit::verify(s).await.unwrap().unsealed, written);
        // Sealed in pages: the chain carries on across them.
        let first = s.seal_audit(3).await.unwrap();
        assert_eq!(first, 3);
        let rest = s.seal_audit(1000).await.unwrap();
        assert_eq!(first + rest, written as u64);
        assert_eq!(s.seal_audit(1000).await.unwrap(), 0);
        let check = audit::verify(s).await.unwrap();
        assert!(check.ok(), "{:?}", check.broken);
        assert_eq!((check.sealed, check.unsealed), (written, 0));

        // A sealed row edited by hand breaks the chain there.
        let target = &s.audit_of(p.id.as_str()).await.unwrap()[2];
        let pos = target.chain_pos.unwrap();
        db.tamper(&format!(
            "UPDATE audit_log SET detail = replace(detail, 'succeeded', 'closed') WHERE seq = {}",
            target.seq
        ))
        .await;
        let check = audit::verify(s).await.unwrap();
        assert_eq!(
            check.broken.as_ref().map(|b| b.chain_pos),
            Some(pos),
            "{check:?}"
        );
        assert_eq!(check.sealed, pos - 1);
        // Put back, the chain holds again; a row deleted breaks it again.
        db.tamper(&format!(
            "UPDATE audit_log SET detail = replace(detail, 'closed', 'succeeded') WHERE seq = {}",
            target.seq
        ))
        .await;
        assert!(audit::verify(s).await.unwrap().ok());
        // Two sealed rows swapped: the chain breaks where the first moved.
        let (first, second) = (pos - 2, pos - 1);
        let swap = format!(
            "UPDATE audit_log SET chain_pos = -1 WHERE chain_pos = {first};
             UPDATE audit_log SET chain_pos = {first} WHERE chain_pos = {second};
             UPDATE audit_log SET chain_pos = {second} WHERE chain_pos = -1;"
        );
        db.tamper(&swap).await;
        let check = audit::verify(s).await.unwrap();
        assert_eq!(check.broken.map(|b| b.chain_pos), Some(first));
        db.tamper(&swap).await;
        assert!(audit::verify(s).await.unwrap().ok());
        // A row slipped in at the end, claiming the next position: its hash
        // cannot be made without knowing how, so it shows.
        let head = s.audit_head().await.unwrap().unwrap();
        let forged = head.chain_pos.unwrap() + 1;
        db.tamper(&format!(
            "INSERT INTO audit_log (at, subject_kind, subject_id, action, detail, chain_pos,
                prev_hash, hash)
             SELECT at, subject_kind, subject_id, action, detail, {forged}, hash, hash
             FROM audit_log WHERE chain_pos = {}",
            forged - 1
        ))
        .await;
        let check = audit::verify(s).await.unwrap();
        assert_eq!(check.broken.map(|b| b.chain_pos), Some(forged));
        // A row deleted breaks it where it was.
        db.tamper(&format!(
            "DELETE FROM audit_log WHERE chain_pos = {}",
            pos - 1
        ))
        .await;
        let check = audit::verify(s).await.unwrap();
        assert_eq!(check.broken.map(|b| b.chain_pos), Some(pos - 1));
    }
);

fn checkout_of(m: &Merchant, order_no: &str) -> Checkout {
    Checkout {
        id: new_id("chk"),
        merchant_id: m.id.clone(),
        app_id: "app_checkout".into(),
        merchant_order_no: order_no.into(),
        amount: Money::new(12_345, Currency::CNY).unwrap(),
        description: "两杯奶茶".into(),
        notify_url: "https://merchant.example/notify".into(),
        return_url: Some("https://merchant.example/done".into()),
        metadata: json!({"cart": [1, 2]}),
        request_hash: "hash-checkout".into(),
        cashier_token: "token".into(),
        winner_payment_id: None,
        won_at: None,
        attempts_closed_at: None,
        expires_at: t0() + Duration::minutes(30),
        created_at: t0(),
        updated_at: t0(),
    }
}

conformance!(checkouts_round_trip_and_keep_their_order_number, |db| {
    let store = db.store.as_ref();
    let m = merchant(store).await;
    let k = checkout_of(&m, "order-1");
    assert_eq!(
        store.insert_checkout(&k).await.unwrap(),
        CheckoutInserted::New
    );
    assert_eq!(store.checkout(&k.id).await.unwrap(), Some(k.clone()));
    assert_eq!(
        store.checkout_by_order_no(&m.id, "order-1").await.unwrap(),
        Some(k.clone())
    );
    let again = Checkout {
        id: new_id("chk"),
        ..k.clone()
    };
    assert_eq!(
        store.insert_checkout(&again).await.unwrap(),
        CheckoutInserted::Existing(k.clone())
    );
    assert_eq!(store.checkout("chk_missing").await.unwrap(), None);
});

conformance!(
    one_attempt_wins_a_checkout_and_the_rest_are_duplicates,
    |db| {
        let store = db.store.as_ref();
        let m = merchant(store).await;
        let a = account(store, &m, t0(), true).await;
        let k = checkout_of(&m, "order-race");
        store.insert_checkout(&k).await.unwrap();
        let mut attempts = Vec::new();
        for n in 0..5 {
            let p = Payment {
                checkout_id: Some(k.id.clone()),
                pay_params: None,
                channel_trade_no: None,
                paid_at: None,
                ..payment(&m, &a, &format!("{}.{n}", k.id))
            };
            store.insert_payment(&p).await.unwrap();
            attempts.push(to_pending(store, &p).await);
        }
        assert_eq!(store.checkout_attempts(&k.id).await.unwrap().len(), 5);
        // Every attempt is paid at once: exactly one wins.
        let tasks: Vec<_> = attempts
            .iter()
            .map(|p| {
                let store = Arc::clone(&db.store);
                let p = p.clone();
                tokio::spawn(async move {
                    store
                        .transition(
                            &p.id,
                            PaymentStatus::Pending,
                            PaymentStatus::Succeeded,
                            &TransitionPatch::default(),
                            Some(&event_for(&p, t0() + secs(1))),
                            t0() + secs(1),
                        )
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Transition::Applied(_)));
        }
        let won = store.checkout(&k.id).await.unwrap().unwrap();
        let winner = won.winner_payment_id.clone().expect("a winner");
        assert_eq!(won.won_at, Some(t0() + secs(1)));
        let dups = store.open_duplicates(100).await.unwrap();
        let dup_ids: HashSet<_> = dups.iter().map(|d| d.payment_id.clone()).collect();
        let others: HashSet<_> = attempts
            .iter()
            .map(|p| p.id.clone())
            .filter(|id| *id != winner)
            .collect();
        assert_eq!(dup_ids, others, "{}", db.backend);
        assert!(dups.iter().all(|d| d.checkout_id == k.id));
        assert_eq!(
            store.checkout_duplicate(&winner).await.unwrap(),
            None,
            "the winner is no duplicate"
        );
        assert_eq!(
            store.checkouts_to_close(10).await.unwrap(),
            vec![won.clone()]
        );
        store
            .mark_checkout_attempts_closed(&k.id, t0() + secs(2))
            .await
            .unwrap();
        assert!(store.checkouts_to_close(10).await.unwrap().is_empty());

        // A duplicate is resolved once, with its event.
        let dup = &dups[0];
        let p = store.payment(&dup.payment_id).await.unwrap().unwrap();
        let r = refund_of(&p, "duplicate-1", p.amount.minor);
        assert_eq!(store.insert_refund(&r).await.unwrap(), RefundInserted::New);
        let e = NewEvent {
            event_type: "payment.duplicate_refunded".into(),
            refund_id: Some(r.id.clone()),
            ..event_for(&p, t0() + secs(3))
        };
        assert!(store
            .resolve_duplicate(&p.id, Some(&r.id), &e, t0() + secs(3))
            .await
            .unwrap());
        assert!(!store
            .resolve_duplicate(&p.id, Some(&r.id), &e, t0() + secs(4))
            .await
            .unwrap());
        let resolved = store.checkout_duplicate(&p.id).await.unwrap().unwrap();
        assert_eq!(resolved.refund_id.as_deref(), Some(r.id.as_str()));
        assert_eq!(resolved.resolved_at, Some(t0() + secs(3)));
        assert_eq!(store.open_duplicates(100).await.unwrap().len(), 3);
        let events = store.events_for_payment(&p.id).await.unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| e.event_type == "payment.duplicate_refunded")
                .count(),
            1
        );
    }
);

conformance!(qr_codes_round_trip_with_and_without_an_amount, |db| {
    let store = db.store.as_ref();
    let m = merchant(store).await;
    for amount in [Some(1_000), None] {
        let qr = QrCode {
            id: new_id("qr"),
            merchant_id: m.id.clone(),
            app_id: "app_qr".into(),
            name: "收银台 1 号".into(),
            description: "茶馆消费".into(),
            amount,
            currency: Currency::CNY,
            notify_url: "https://merchant.example/notify".into(),
            created_at: t0(),
        };
        store.insert_qr_code(&qr).await.unwrap();
        assert_eq!(store.qr_code(&qr.id).await.unwrap(), Some(qr.clone()));
        assert!(store.insert_qr_code(&qr).await.is_err(), "ids are unique");
    }
    assert_eq!(store.qr_code("qr_missing").await.unwrap(), None);
});

fn group_of(m: &Merchant, no: &str, size: i32) -> GroupBuy {
    GroupBuy {
        id: new_id("grp"),
        merchant_id: m.id.clone(),
        app_id: "app_group".into(),
        merchant_group_no: no.into(),
        size,
        amount: Some(12_345),
        currency: Currency::CNY,
        notify_url: "https://merchant.example/groups".into(),
        request_hash: "hash-group".into(),
        status: GroupStatus::Open,
        seats_taken: 0,
        paid_count: 0,
        expires_at: t0() + Duration::minutes(30),
        succeeded_at: None,
        failed_at: None,
        settled_at: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

fn member_of(m: &Merchant, a: &ChannelAccount, g: &GroupBuy) -> Payment {
    Payment {
        group_id: Some(g.id.clone()),
        pay_params: None,
        channel_trade_no: None,
        paid_at: None,
        ..payment(m, a, &new_id("member"))
    }
}

async fn settle_member(
    store: &dyn Store,
    p: &Payment,
    to: PaymentStatus,
    group_event: Option<NewEvent>,
) {
    let p = to_pending(store, p).await;
    let patch = TransitionPatch {
        group_event,
        ..Default::default()
    };
    let t = store
        .transition(
            &p.id,
            PaymentStatus::Pending,
            to,
            &patch,
            None,
            t0() + secs(5),
        )
        .await
        .unwrap();
    assert!(matches!(t, Transition::Applied(_)), "{t:?}");
}

conformance!(a_group_never_seats_more_than_its_size, |db| {
    let store = db.store.as_ref();
    let m = merchant(store).await;
    let a = account(store, &m, t0(), true).await;
    let g = group_of(&m, "G-RACE", 4);
    assert_eq!(store.insert_group(&g).await.unwrap(), GroupInserted::New);
    assert_eq!(
        store
            .insert_group(&GroupBuy {
                id: new_id("grp"),
                ..g.clone()
            })
            .await
            .unwrap(),
        GroupInserted::Existing(g.clone())
    );
    // Three times as many buyers as seats, all at once.
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let store = Arc::clone(&db.store);
            let p = member_of(&m, &a, &g);
            tokio::spawn(async move { store.join_group(&p, t0() + secs(1)).await.unwrap() })
        })
        .collect();
    let mut joined = 0;
    for t in tasks {
        match t.await.unwrap() {
            Joined::New => joined += 1,
            Joined::Full => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(joined, 4, "{}", db.backend);
    let members = store.group_members(&g.id).await.unwrap();
    assert_eq!(members.len(), 4);
    assert_eq!(store.group(&g.id).await.unwrap().unwrap().seats_taken, 4);

    // One closes: its seat is free again, and taken by the next buyer.
    settle_member(store, &members[0], PaymentStatus::Closed, None).await;
    assert_eq!(store.group(&g.id).await.unwrap().unwrap().seats_taken, 3);
    let late = member_of(&m, &a, &g);
    assert_eq!(
        store.join_group(&late, t0() + secs(2)).await.unwrap(),
        Joined::New
    );
    assert_eq!(
        store.join_group(&late, t0() + secs(2)).await.unwrap(),
        Joined::Existing(store.payment(&late.id).await.unwrap().unwrap())
    );
    assert_eq!(
        store
            .join_group(&member_of(&m, &a, &g), t0() + secs(2))
            .await
            .unwrap(),
        Joined::Full
    );

    // The members pay; the last one completes the group, with its event.
    let payers: Vec<_> = store
        .group_members(&g.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.status == PaymentStatus::Created)
        .collect();
    assert_eq!(payers.len(), 4);
    for (n, p) in payers.iter().enumerate() {
        let e = NewEvent {
            event_type: "group.succeeded".into(),
            ..event_for(p, t0() + secs(5))
        };
        settle_member(store, p, PaymentStatus::Succeeded, Some(e)).await;
        let now = store.group(&g.id).await.unwrap().unwrap();
        assert_eq!(now.paid_count, n as i32 + 1);
        let done = n == 3;
        assert_eq!(now.status == GroupStatus::Succeeded, done, "{now:?}");
        let events = store.events_for_payment(&p.id).await.unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| e.event_type == "group.succeeded")
                .count(),
            usize::from(done)
        );
    }
    assert!(matches!(
        store
            .join_group(&member_of(&m, &a, &g), t0() + secs(6))
            .await
            .unwrap(),
        Joined::Closed(GroupStatus::Succeeded)
    ));
    assert!(store
        .expired_groups(t0() + Duration::hours(1), 10)
        .await
        .unwrap()
        .is_empty());
});

conformance!(a_group_that_expires_short_fails_and_is_settled, |db| {
    let store = db.store.as_ref();
    let m = merchant(store).await;
    let a = account(store, &m, t0(), true).await;
    let g = group_of(&m, "G-SHORT", 3);
    store.insert_group(&g).await.unwrap();
    let paid = member_of(&m, &a, &g);
    let open = member_of(&m, &a, &g);
    for p in [&paid, &open] {
        assert_eq!(
            store.join_group(p, t0() + secs(1)).await.unwrap(),
            Joined::New
        );
    }
    settle_member(store, &paid, PaymentStatus::Succeeded, None).await;
    let after = t0() + Duration::minutes(31);
    assert!(matches!(
        store
            .join_group(&member_of(&m, &a, &g), after)
            .await
            .unwrap(),
        Joined::Closed(GroupStatus::Open)
    ));
    let expired = store.expired_groups(after, 10).await.unwrap();
    assert_eq!(
        expired.iter().map(|g| g.id.clone()).collect::<Vec<_>>(),
        vec![g.id.clone()]
    );
    let e = NewEvent {
        event_type: "group.failed".into(),
        ..event_for(&paid, after)
    };
    assert!(store.fail_group(&g.id, Some(&e), after).await.unwrap());
    assert!(
        !store.fail_group(&g.id, Some(&e), after).await.unwrap(),
        "once"
    );
    let failed = store.group(&g.id).await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.failed_at),
        (GroupStatus::Failed, Some(after))
    );
    assert_eq!(store.groups_to_settle(10).await.unwrap().len(), 1);
    store.mark_group_settled(&g.id, after).await.unwrap();
    assert!(store.groups_to_settle(10).await.unwrap().is_empty());
    // The open member pays after all: the group is to settle again.
    settle_member(store, &open, PaymentStatus::Succeeded, None).await;
    let again = store.group(&g.id).await.unwrap().unwrap();
    assert_eq!(
        (again.status, again.settled_at, again.paid_count),
        (GroupStatus::Failed, None, 2)
    );
    assert_eq!(store.groups_to_settle(10).await.unwrap().len(), 1);
});
