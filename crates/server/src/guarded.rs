//! A [`Channel`] wrapped in circuit breakers: one per operation of one
//! channel account. Calls the breaker refuses never reach the channel and
//! fail with [`ChannelError::CircuitOpen`]; every call that does is reported
//! to its breaker. Callback verification makes no outbound call and passes
//! straight through, as does the operator's `probe` (an account test must
//! reach the channel whatever the breaker thinks).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use paymux_channels::bill::BillFile;
use paymux_channels::{
    Callback, CallbackReply, Channel, ChannelError, ChannelRefund, ChannelTrade, Diagnosis,
    Notification, Prepared, PrepayRequest, RefundNotification, RefundRequest,
};
use paymux_core::Clock;

use crate::breaker::{Breaker, Outcome, Refused};
use crate::config::BreakerConfig;

/// The outbound operations of the [`Channel`] trait, each with its own breaker
/// (a channel whose queries time out may still take prepays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Prepay,
    Query,
    Close,
    Refund,
    QueryRefund,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Prepay,
        Operation::Query,
        Operation::Close,
        Operation::Refund,
        Operation::QueryRefund,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Prepay => "prepay",
            Operation::Query => "query",
            Operation::Close => "close",
            Operation::Refund => "refund",
            Operation::QueryRefund => "query_refund",
        }
    }
}

/// Every breaker of this node, by channel account and operation. Breaker
/// state is per node: each node learns a channel's health from its own calls.
pub struct Breakers {
    cfg: BreakerConfig,
    clock: Arc<dyn Clock>,
    map: RwLock<HashMap<(String, Operation), Arc<Breaker>>>,
}

impl Breakers {
    pub fn new(cfg: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        Breakers {
            cfg,
            clock,
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// The breaker of one account's operation, made on first use.
    pub fn get(&self, account_id: &str, op: Operation) -> Arc<Breaker> {
        let key = (account_id.to_string(), op);
        if let Some(b) = self.map.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return b.clone();
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                Breaker::new(self.cfg.clone(), account_id, op.as_str(), self.clock.now())
            })
            .clone()
    }

    /// Whether a call of `op` for the account would be refused now, without
    /// making one: lets callers refuse work before writing anything.
    pub fn check(&self, account_id: &str, op: Operation) -> Result<(), Refused> {
        if !self.cfg.enabled {
            return Ok(());
        }
        self.get(account_id, op).check(self.clock.now())
    }
}

/// The decorator itself: every call is timed and counted
/// ([`crate::observe::channel_call`]), and goes through its breaker when
/// breakers are enabled.
pub struct GuardedChannel {
    inner: Arc<dyn Channel>,
    channel: &'static str,
    account_id: String,
    breakers: Arc<Breakers>,
    pacer: Option<Arc<crate::rate_limit::Pacer>>,
    clock: Arc<dyn Clock>,
}

impl GuardedChannel {
    pub fn new(
        inner: Arc<dyn Channel>,
        channel: &'static str,
        account_id: &str,
        breakers: Arc<Breakers>,
        pacer: Option<Arc<crate::rate_limit::Pacer>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        GuardedChannel {
            inner,
            channel,
            account_id: account_id.to_string(),
            breakers,
            pacer,
            clock,
        }
    }

    /// Waits for the call's turn at the account's pace; a turn too far off
    /// refuses the call like an open breaker does (nothing sent, retry
    /// after the wait), never counting against the channel.
    async fn pace(&self, op: Operation) -> Result<(), ChannelError> {
        let Some(pacer) = &self.pacer else {
            return Ok(());
        };
        match pacer.pace(
            self.channel,
            &self.account_id,
            op,
            std::time::Instant::now(),
        ) {
            Ok(wait) if wait.is_zero() => Ok(()),
            Ok(wait) => {
                metrics::counter!("paymux_channel_paced_total",
                    "channel" => self.channel, "operation" => op.as_str())
                .increment(1);
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Err(wait) => {
                metrics::counter!("paymux_rate_limited_total", "scope" => "channel").increment(1);
                Err(ChannelError::CircuitOpen { retry_after: wait })
            }
        }
    }

    async fn guard<T>(
        &self,
        op: Operation,
        call: impl Future<Output = Result<T, ChannelError>>,
    ) -> Result<T, ChannelError> {
        let started = std::time::Instant::now();
        if let Err(e) = self.pace(op).await {
            let result = Err(e);
            self.observe(op, &result, started);
            return result;
        }
        if !self.breakers.enabled() {
            let result = call.await;
            self.observe(op, &result, started);
            return result;
        }
        let breaker = self.breakers.get(&self.account_id, op);
        let now = self.clock.now();
        let permit = match breaker.acquire(now) {
            Ok(permit) => permit,
            Err(r) => {
                let result = Err(refused(r, now));
                self.observe(op, &result, started);
                return result;
            }
        };
        let result = call.await;
        let outcome = match &result {
            Err(ChannelError::RateLimited { retry_after }) => Outcome::RateLimited(*retry_after),
            Err(e) if e.is_channel_failure() => Outcome::Failure,
            _ => Outcome::Success,
        };
        permit.record(outcome, self.clock.now());
        self.observe(op, &result, started);
        result
    }

    fn observe<T>(
        &self,
        op: Operation,
        result: &Result<T, ChannelError>,
        started: std::time::Instant,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(ChannelError::Rejected { .. }) => "rejected",
            Err(ChannelError::NotFound) => "not_found",
            Err(ChannelError::RateLimited { .. }) => "rate_limited",
            Err(ChannelError::CircuitOpen { .. }) => "suspended",
            Err(_) => "failed",
        };
        crate::observe::channel_call(self.channel, op.as_str(), outcome, started.elapsed());
    }
}

fn refused(r: Refused, now: DateTime<Utc>) -> ChannelError {
    ChannelError::CircuitOpen {
        retry_after: r.retry_after(now),
    }
}

#[async_trait]
impl Channel for GuardedChannel {
    async fn prepay(&self, req: &PrepayRequest) -> Result<Prepared, ChannelError> {
        self.guard(Operation::Prepay, self.inner.prepay(req)).await
    }

    async fn query(&self, out_trade_no: &str) -> Result<ChannelTrade, ChannelError> {
        self.guard(Operation::Query, self.inner.query(out_trade_no))
            .await
    }

    async fn close(&self, out_trade_no: &str) -> Result<(), ChannelError> {
        self.guard(Operation::Close, self.inner.close(out_trade_no))
            .await
    }

    async fn parse_callback(
        &self,
        callback: Callback<'_>,
        now: DateTime<Utc>,
    ) -> Result<Notification, ChannelError> {
        self.inner.parse_callback(callback, now).await
    }

    fn callback_reply(&self, ok: bool) -> CallbackReply {
        self.inner.callback_reply(ok)
    }

    async fn refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        self.guard(Operation::Refund, self.inner.refund(req)).await
    }

    async fn query_refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        self.guard(Operation::QueryRefund, self.inner.query_refund(req))
            .await
    }

    async fn parse_refund_callback(
        &self,
        callback: Callback<'_>,
        now: DateTime<Utc>,
    ) -> Result<RefundNotification, ChannelError> {
        self.inner.parse_refund_callback(callback, now).await
    }

    async fn probe(&self) -> Result<(), ChannelError> {
        self.inner.probe().await
    }

    fn reads_bills(&self) -> bool {
        self.inner.reads_bills()
    }

    // A daily download, not traffic: it neither waits for nor trips the
    // breakers that protect payments.
    async fn bill(&self, date: NaiveDate) -> Result<BillFile, ChannelError> {
        self.inner.bill(date).await
    }

    fn diagnose(&self, err: &ChannelError) -> Diagnosis {
        self.inner.diagnose(err)
    }
}
