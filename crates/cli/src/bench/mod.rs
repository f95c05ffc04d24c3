//! `paymux bench`: the benchmark of record. It starts a sandbox paymux
//! in-process (simulators mounted), drives it over loopback HTTP with real
//! signatures from concurrent clients, and measures beside each figure the
//! floor nobody can go below on this machine: RSA-2048 signatures, and the
//! same transaction straight through the database driver.
//!
//! Scenarios:
//! - `create`: signed `POST /v1/payments`, per channel (the simulator
//!   answers the channel call in-process);
//! - `callback`: payment callbacks built and signed by the simulator before
//!   the clock starts, as the channel would send them, each sent once;
//! - `refund`: signed `POST /v1/refunds` against paid payments;
//! - `mix`: a flash sale: creates, callbacks and queries in a given ratio.
//!
//! `--bill-rows N` measures reading a channel bill instead (see [`bill`]).

mod bill;
mod floors;
mod load;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use paymux_core::ChannelKind;
use paymux_server::client::{MerchantClient, NotifyReceiver};
use paymux_sim::callback::HeldCallback;
use serde::Serialize;
use serde_json::json;

use self::load::{measure, rss_mib, Stats};

/// Clients that prepare a measurement (creating the payments a callback
/// measurement needs); their time is not measured.
const SETUP_CLIENTS: usize = 64;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// PostgreSQL URL to benchmark; by default a fresh SQLite database in a temporary directory.
    #[arg(long, env = "PAYMUX_DATABASE_URL")]
    database_url: Option<String>,
    /// Directory for the SQLite database (default: a new temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        default_value = "create,callback",
        value_delimiter = ','
    )]
    scenario: Vec<Scenario>,
    /// Channels for `create` and `callback`, comma-separated.
    #[arg(long, default_value = "wechat", value_delimiter = ',')]
    channel: Vec<ChannelKind>,
    /// Client concurrencies to measure, comma-separated.
    #[arg(long, default_value = "1,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Operations per measurement (at most).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Stop each measurement after this many seconds, even if requests are left.
    #[arg(long)]
    duration: Option<f64>,
    /// The `mix` ratio of creates, callbacks and queries.
    #[arg(long, default_value = "2:2:6")]
    mix: String,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure only reading a WeChat Pay bill of this many rows (no server).
    #[arg(long)]
    bill_rows: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Scenario {
    Create,
    Callback,
    Refund,
    Mix,
}

/// One line of the results.
#[derive(Debug, Serialize)]
struct Row {
    backend: &'static str,
    scenario: String,
    channel: Option<ChannelKind>,
    clients: usize,
    ops: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// What bounds this figure from below, measured in the same run.
    floor: Option<Floor>,
}

#[derive(Debug, Clone, Serialize)]
struct Floor {
    name: String,
    per_second: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    backend: &'static str,
    cores: usize,
    rsa2048_signs_per_second: f64,
    rsa2048_verifies_per_second: f64,
    rows: Vec<Row>,
    /// Commits and the writes grouped into them (SQLite).
    write_batches: Option<paymux_store::WriteBatches>,
    rss_mib: Option<f64>,
    peak_rss_mib: Option<f64>,
}

/// What the bench drives: the sandbox paymux and a merchant on it.
struct Bench {
    args: BenchArgs,
    url: String,
    store: Arc<dyn paymux_store::Store>,
    base: String,
    client: MerchantClient,
    notify_url: String,
    http: reqwest::Client,
    run_id: i64,
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    if let Some(rows) = args.bill_rows {
        return bill::run(rows, args.json).await;
    }
    let url = match (&args.database_url, &args.data_dir) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => dir.join("paymux.db").display().to_string(),
        (None, None) => crate::temp_data_dir("bench")
            .join("paymux.db")
            .display()
            .to_string(),
    };
    let ratio = parse_mix(&args.mix)?;
    // The bench measures how fast paymux goes, not where its limits are.
    let (store, server) = crate::start_sandbox_with(&url, |c| {
        c.rate_limit.app_rps = 0.0;
        c.rate_limit.outbound.channels.clear();
    })
    .await?;
    let base = server.base_url();
    let (_, app) =
        paymux_server::merchants::create_merchant(&*store, &paymux_core::SystemClock, "bench")
            .await
            .map_err(|e| e.to_string())?;
    let mut receiver = NotifyReceiver::start(&app.secret)
        .await
        .map_err(|e| e.to_string())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (sign, verify) = tokio::task::spawn_blocking(floors::rsa_rates)
        .await
        .map_err(|e| e.to_string())??;
    let bench = Bench {
        client: MerchantClient::new(&base, &app.app_id, &app.secret),
        notify_url: receiver.url.clone(),
        http: reqwest::Client::new(),
        run_id: chrono::Utc::now().timestamp_millis(),
        url,
        store,
        base,
        args,
    };
    if !bench.args.json {
        println!(
            "backend: {}, cores: {cores}, RSA-2048 per core: {sign:.0} signs/s, {verify:.0} verifies/s",
            bench.store.backend()
        );
    }
    let crypto = Crypto {
        cores: cores as f64,
        sign,
        verify,
    };
    let mut rows = Vec::new();
    for &channel in &bench.args.channel {
        // Warm up: creates the sandbox channel account, fetches certificates.
        let warm = bench
            .create(channel, &format!("warm-{}", channel.as_str()))
            .await?;
        crate::sim_pay(&bench.http, &bench.base, channel.as_str(), &warm).await?;
    }
    for &c in &bench.args.concurrency {
        for &scenario in &bench.args.scenario {
            match scenario {
                Scenario::Create => {
                    for &channel in &bench.args.channel {
                        let stats = bench.creates(channel, c).await?.0;
                        let floor = crypto.create_ceiling(channel);
                        rows.push(bench.row("create", Some(channel), c, &stats, floor));
                    }
                }
                Scenario::Callback => {
                    for &channel in &bench.args.channel {
                        let (stats, ids) = bench.callbacks(channel, c).await?;
                        let floor = bench.database_floor(&ids, c).await?;
                        rows.push(bench.row("callback", Some(channel), c, &stats, Some(floor)));
                    }
                }
                Scenario::Refund => {
                    let stats = bench.refunds(c).await?;
                    rows.push(bench.row("refund", Some(ChannelKind::Wechat), c, &stats, None));
                }
                Scenario::Mix => {
                    let stats = bench.mix(c, ratio).await?;
                    let name = format!("mix {}", bench.args.mix);
                    rows.push(bench.row(&name, Some(ChannelKind::Wechat), c, &stats, None));
                }
            }
            receiver.drain();
        }
    }
    let (rss, peak) = rss_mib();
    let report = Report {
        backend: bench.store.backend(),
        cores,
        rsa2048_signs_per_second: sign,
        rsa2048_verifies_per_second: verify,
        write_batches: bench.store.write_batches(),
        rows,
        rss_mib: rss,
        peak_rss_mib: peak,
    };
    server.stop();
    print(&report, bench.args.json)
}

struct Crypto {
    cores: f64,
    sign: f64,
    verify: f64,
}

impl Crypto {
    /// Creates per second if all cores did nothing but a create's RSA work:
    /// WeChat signs the prepay request, the simulator verifies it and signs
    /// its answer, paymux verifies that and signs the payer's paySign;
    /// Alipay (QR) and UnionPay (QR) the same without the paySign.
    fn create_ceiling(&self, channel: ChannelKind) -> Option<Floor> {
        let (signs, verifies) = match channel {
            ChannelKind::Wechat => (3.0, 2.0),
            ChannelKind::Alipay | ChannelKind::Unionpay => (2.0, 2.0),
        };
        let per_create = signs / self.sign + verifies / self.verify;
        Some(Floor {
            name: format!("RSA ceiling ({signs} signs + {verifies} verifies)"),
            per_second: self.cores / per_create,
        })
    }
}

impl Bench {
    fn row(
        &self,
        scenario: &str,
        channel: Option<ChannelKind>,
        clients: usize,
        s: &Stats,
        floor: Option<Floor>,
    ) -> Row {
        Row {
            backend: self.store.backend(),
            scenario: scenario.to_string(),
            channel,
            clients,
            ops: s.ops,
            per_second: s.per_second(),
            p50_ms: s.quantile_ms(0.50),
            p99_ms: s.quantile_ms(0.99),
            floor,
        }
    }

    fn duration(&self) -> Option<Duration> {
        self.args.duration.map(Duration::from_secs_f64)
    }

    fn order_no(&self, what: &str, clients: usize, i: usize) -> String {
        format!("b{}-{what}-c{clients}-{i}", self.run_id)
    }

    async fn create(&self, channel: ChannelKind, order_no: &str) -> Result<String, String> {
        create(&self.client, &self.notify_url, channel, order_no).await
    }

    /// Measured creates; the ids created.
    async fn creates(
        &self,
        channel: ChannelKind,
        clients: usize,
    ) -> Result<(Stats, Vec<String>), String> {
        self.create_many(
            channel,
            clients,
            "create",
            self.args.requests,
            self.duration(),
        )
        .await
    }

    async fn create_many(
        &self,
        channel: ChannelKind,
        clients: usize,
        what: &str,
        n: usize,
        duration: Option<Duration>,
    ) -> Result<(Stats, Vec<String>), String> {
        let ids = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let (client, url, sink) = (self.client.clone(), self.notify_url.clone(), ids.clone());
        let prefix = self.order_no(&format!("{what}-{}", channel.as_str()), clients, 0);
        let label = format!("{what} {} ×{clients}", channel.as_str());
        let stats = measure(&label, clients, n, duration, move |i| {
            let (client, url, sink, order) = (
                client.clone(),
                url.clone(),
                sink.clone(),
                format!("{prefix}-{i}"),
            );
            async move {
                let id = create(&client, &url, channel, &order).await?;
                sink.lock().map_err(|_| "poisoned")?.push(id);
                Ok(())
            }
        })
        .await?;
        let ids = std::mem::take(&mut *ids.lock().map_err(|_| "poisoned")?);
        Ok((stats, ids))
    }

    /// Creates `n` payments and has the simulator build (not send) their
    /// success callbacks; none of it is measured.
    async fn held_callbacks(
        &self,
        channel: ChannelKind,
        clients: usize,
        n: usize,
        purpose: &str,
    ) -> Result<(Vec<String>, Vec<HeldCallback>), String> {
        let what = format!("{purpose}-setup{clients}");
        let (_, ids) = self
            .create_many(channel, SETUP_CLIENTS, &what, n, None)
            .await?;
        let ids = Arc::new(ids);
        let held = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let (http, base, ids2, sink) = (
            self.http.clone(),
            self.base.clone(),
            ids.clone(),
            held.clone(),
        );
        let label = format!("sign callbacks {}", channel.as_str());
        measure(&label, SETUP_CLIENTS, ids.len(), None, move |i| {
            let (http, base, id, sink) =
                (http.clone(), base.clone(), ids2[i].clone(), sink.clone());
            async move {
                let callback = hold_callback(&http, &base, channel, &id).await?;
                sink.lock().map_err(|_| "poisoned")?.push(callback);
                Ok(())
            }
        })
        .await?;
        let held = std::mem::take(&mut *held.lock().map_err(|_| "poisoned")?);
        let ids = Arc::try_unwrap(ids).unwrap_or_else(|ids| (*ids).clone());
        Ok((ids, held))
    }

    /// Measured callbacks; the ids of the payments they paid.
    async fn callbacks(
        &self,
        channel: ChannelKind,
        clients: usize,
    ) -> Result<(Stats, Vec<String>), String> {
        let (ids, held) = self
            .held_callbacks(channel, clients, self.args.requests, "callback")
            .await?;
        let held = Arc::new(held);
        let http = self.http.clone();
        let label = format!("callback {} ×{clients}", channel.as_str());
        let stats = measure(&label, clients, held.len(), self.duration(), move |i| {
            let (http, held) = (http.clone(), held.clone());
            async move { send_callback(&http, channel, &held[i]).await }
        })
        .await?;
        Ok((stats, ids))
    }

    /// Measured refunds of paid payments.
    async fn refunds(&self, clients: usize) -> Result<Stats, String> {
        let channel = ChannelKind::Wechat;
        let (ids, held) = self
            .held_callbacks(channel, clients, self.args.requests, "refund")
            .await?;
        let (http, held) = (self.http.clone(), Arc::new(held));
        measure(
            "pay for refunds",
            SETUP_CLIENTS,
            held.len(),
            None,
            move |i| {
                let (http, held) = (http.clone(), held.clone());
                async move { send_callback(&http, channel, &held[i]).await }
            },
        )
        .await?;
        let (client, ids) = (self.client.clone(), Arc::new(ids));
        let prefix = self.order_no("refund", clients, 0);
        measure(
            &format!("refund ×{clients}"),
            clients,
            ids.len(),
            self.duration(),
            move |i| {
                let (client, id, no) = (client.clone(), ids[i].clone(), format!("{prefix}-{i}"));
                async move {
                    let r = client
                        .post(
                            "/v1/refunds",
                            &json!({"payment_id": id, "merchant_refund_no": no, "amount": 100}),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    if !(200..300).contains(&r.status) {
                        return Err(format!("refund: HTTP {} {}", r.status, r.body));
                    }
                    Ok(())
                }
            },
        )
        .await
    }

    /// A flash sale: every `creates + callbacks + queries` operations are
    /// that many new payments, callbacks of payments created before, and
    /// status queries of those.
    async fn mix(&self, clients: usize, ratio: (usize, usize, usize)) -> Result<Stats, String> {
        let (creates, callbacks, queries) = ratio;
        let cycle = creates + callbacks + queries;
        let n = self.args.requests;
        let paid = n * callbacks / cycle + 1;
        let (ids, held) = self
            .held_callbacks(ChannelKind::Wechat, clients, paid, "mix")
            .await?;
        let (ids, held) = (Arc::new(ids), Arc::new(held));
        let (client, http, url) = (
            self.client.clone(),
            self.http.clone(),
            self.notify_url.clone(),
        );
        let prefix = self.order_no("mix", clients, 0);
        let label = format!("mix {} ×{clients}", self.args.mix);
        measure(&label, clients, n, self.duration(), move |i| {
            let (client, http, url, ids, held) = (
                client.clone(),
                http.clone(),
                url.clone(),
                ids.clone(),
                held.clone(),
            );
            let (round, slot) = (i / cycle, i % cycle);
            let order = format!("{prefix}-{i}");
            async move {
                if slot < creates {
                    create(&client, &url, ChannelKind::Wechat, &order)
                        .await
                        .map(drop)
                } else if slot < creates + callbacks {
                    let k = (round * callbacks + slot - creates) % held.len();
                    send_callback(&http, ChannelKind::Wechat, &held[k]).await
                } else {
                    let id = &ids[(i * 7919) % ids.len()];
                    let r = client
                        .get(&format!("/v1/payments/{id}"))
                        .await
                        .map_err(|e| e.to_string())?;
                    if r.status != 200 {
                        return Err(format!("query: HTTP {} {}", r.status, r.body));
                    }
                    Ok(())
                }
            }
        })
        .await
    }

    /// The callback's transaction straight through the driver, on the
    /// payments the measurement just paid, at the same concurrency.
    async fn database_floor(&self, ids: &[String], clients: usize) -> Result<Floor, String> {
        self.drain_notifications().await;
        let ids = ids.to_vec();
        if self.store.backend() == "postgres" {
            let per_second = floors::postgres_rate(&self.url, Arc::new(ids), clients).await?;
            return Ok(Floor {
                name: format!("the same transaction through sqlx, {clients} clients"),
                per_second,
            });
        }
        let path = PathBuf::from(self.url.strip_prefix("sqlite://").unwrap_or(&self.url));
        let per_second =
            tokio::task::spawn_blocking(move || floors::sqlite_rate(&path, &ids, clients))
                .await
                .map_err(|e| e.to_string())??;
        Ok(Floor {
            name: format!("the same transaction through rusqlite, {clients} per commit"),
            per_second,
        })
    }

    /// Waits (a bounded while) for the notifier to deliver what the last
    /// measurement produced, so that it does not compete with the floor.
    async fn drain_notifications(&self) {
        for _ in 0..600 {
            match self.store.backlog().await {
                Ok(b) if b.undelivered_events > 0 => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                _ => return,
            }
        }
    }
}

fn parse_mix(mix: &str) -> Result<(usize, usize, usize), String> {
    let parts: Vec<usize> = mix
        .split(':')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--mix {mix}: {e}"))?;
    match parts[..] {
        [c, k, q] if k > 0 && c + k + q > 0 => Ok((c, k, q)),
        _ => Err(format!(
            "--mix {mix}: give creates:callbacks:queries, with at least one callback"
        )),
    }
}

async fn create(
    client: &MerchantClient,
    notify_url: &str,
    channel: ChannelKind,
    order_no: &str,
) -> Result<String, String> {
    let (method, payer) = match channel {
        ChannelKind::Wechat => ("mini_program", json!({"openid": "oBenchPayer"})),
        ChannelKind::Alipay => ("native", json!({})),
        ChannelKind::Unionpay => ("native", json!({})),
    };
    let r = client
        .post(
            "/v1/payments",
            &json!({
                "merchant_order_no": order_no,
                "amount": 100,
                "channel": channel.as_str(),
                "method": method,
                "description": "bench",
                "notify_url": notify_url,
                "payer": payer,
            }),
        )
        .await
        .map_err(|e| e.to_string())?;
    if r.status != 201 {
        return Err(format!("create: HTTP {} {}", r.status, r.body));
    }
    Ok(r.body["id"].as_str().unwrap_or_default().to_string())
}

/// Has the simulator mark the payment paid and build its callback, unsent.
async fn hold_callback(
    http: &reqwest::Client,
    base: &str,
    channel: ChannelKind,
    id: &str,
) -> Result<HeldCallback, String> {
    let r = http
        .post(format!("{base}/sim/{}/pay", channel.as_str()))
        .json(&json!({"out_trade_no": id, "hold": true}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let mut outcome: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    let held: Vec<HeldCallback> =
        serde_json::from_value(outcome["held"].take()).map_err(|e| format!("held: {e}"))?;
    match (status.is_success(), held.into_iter().next()) {
        (true, Some(callback)) => Ok(callback),
        _ => Err(format!(
            "sim pay {} {id}: HTTP {status} {outcome}",
            channel.as_str()
        )),
    }
}

/// Sends a held callback as the channel would, and checks that paymux
/// acknowledged it the way the channel expects.
async fn send_callback(
    http: &reqwest::Client,
    channel: ChannelKind,
    callback: &HeldCallback,
) -> Result<(), String> {
    let mut req = http.post(&callback.url).body(callback.body.clone());
    for (k, v) in &callback.headers {
        req = req.header(k, v);
    }
    let r = req.send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.text().await.map_err(|e| e.to_string())?;
    let acknowledged = status.is_success()
        && match channel {
            ChannelKind::Alipay => body == "success",
            ChannelKind::Wechat | ChannelKind::Unionpay => true,
        };
    if !acknowledged {
        return Err(format!("callback not acknowledged: HTTP {status} {body}"));
    }
    Ok(())
}

fn print(report: &Report, json: bool) -> Result<(), String> {
    if report.rows.is_empty() {
        return Err("nothing measured: give --scenario".into());
    }
    if report.rows.iter().any(|r| r.ops == 0) {
        return Err("a measurement ran no operation".into());
    }
    if json {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    println!("| scenario | channel | clients | ops | ops/s | p50 ms | p99 ms | floor | floor ops/s | ratio |");
    println!("|---|---|---:|---:|---:|---:|---:|---|---:|---:|");
    for r in &report.rows {
        let (name, rate, ratio) = match &r.floor {
            Some(f) => (
                f.name.as_str(),
                format!("{:.0}", f.per_second),
                format!("{:.2}", r.per_second / f.per_second),
            ),
            None => ("", String::new(), String::new()),
        };
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {name} | {rate} | {ratio} |",
            r.scenario,
            r.channel.map_or("", |c| c.as_str()),
            r.clients,
            r.ops,
            r.per_second,
            r.p50_ms,
            r.p99_ms,
        );
    }
    if let Some(b) = report.write_batches {
        println!(
            "SQLite commits: {} for {} writes ({:.1} writes per commit)",
            b.commits,
            b.writes,
            b.writes as f64 / b.commits.max(1) as f64
        );
    }
    let mib = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0} MiB"));
    println!(
        "RSS (paymux and the load generator together): {} now, {} at peak",
        mib(report.rss_mib),
        mib(report.peak_rss_mib)
    );
    Ok(())
}
