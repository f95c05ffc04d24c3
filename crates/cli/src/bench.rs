//! `paymux bench`: payments created per second and callbacks processed per
//! second, at several client concurrencies, against an in-process sandbox (the
//! WeChat simulator signs, encrypts and sends real callbacks). Every request
//! goes over loopback HTTP with real signatures, so the numbers include the
//! whole path a merchant and WeChat would exercise.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use paymux_server::client::{MerchantClient, NotifyReceiver};
use serde_json::json;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// PostgreSQL URL to benchmark; by default a fresh SQLite database in a temporary directory.
    #[arg(long, env = "PAYMUX_DATABASE_URL")]
    database_url: Option<String>,
    /// Directory for the SQLite database (default: a new temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Client concurrencies to measure, comma-separated.
    #[arg(long, default_value = "1,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Operations per measurement.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    let url = match (&args.database_url, &args.data_dir) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => dir.join("paymux.db").display().to_string(),
        (None, None) => crate::temp_data_dir("bench")
            .join("paymux.db")
            .display()
            .to_string(),
    };
    let (store, server) = crate::start_sandbox(&url).await?;
    let base = server.base_url();
    let (_, app) =
        paymux_server::merchants::create_merchant(&*store, &paymux_core::SystemClock, "bench")
            .await
            .map_err(|e| e.to_string())?;
    let receiver = NotifyReceiver::start(&app.secret)
        .await
        .map_err(|e| e.to_string())?;
    let client = MerchantClient::new(&base, &app.app_id, &app.secret);
    let http = reqwest::Client::new();

    // Warm up: creates the sandbox channel account and downloads platform certificates.
    let warm = create(&client, &receiver.url, "warmup").await?;
    pay(&http, &base, &warm).await?;

    println!(
        "backend: {}, requests per measurement: {}, cores: {}",
        store.backend(),
        args.requests,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("| backend | operation | clients | ops | ops/s | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let run_id = chrono::Utc::now().timestamp_millis();
    for &c in &args.concurrency {
        let prefix = format!("b{run_id}-c{c}");
        let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.requests)));
        let (client2, url2, ids2, prefix2) = (
            client.clone(),
            receiver.url.clone(),
            ids.clone(),
            prefix.clone(),
        );
        let stats = measure(c, args.requests, move |i| {
            let (client, url, ids, order) = (
                client2.clone(),
                url2.clone(),
                ids2.clone(),
                format!("{prefix2}-{i}"),
            );
            async move {
                let id = create(&client, &url, &order).await?;
                ids.lock().map_err(|_| "lock")?.push(id);
                Ok(())
            }
        })
        .await?;
        report(store.backend(), "create payment", c, &stats);

        let ids: Vec<String> = std::mem::take(&mut *ids.lock().map_err(|_| "lock")?);
        let ids = Arc::new(ids);
        let (http2, base2) = (http.clone(), base.clone());
        let stats = measure(c, ids.len(), move |i| {
            let (http, base, id) = (http2.clone(), base2.clone(), ids[i].clone());
            async move { pay(&http, &base, &id).await }
        })
        .await?;
        report(store.backend(), "callback (sim pays)", c, &stats);
    }
    server.stop();
    Ok(())
}

struct Stats {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// Runs `op(0..n)` from `clients` concurrent tasks; returns throughput and latencies.
async fn measure<F, Fut>(clients: usize, n: usize, op: F) -> Result<Stats, String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, String>(lat);
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for t in tasks {
        latencies.extend(t.await.map_err(|e| e.to_string())??);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(Stats {
        ops: latencies.len(),
        elapsed,
        latencies,
    })
}

fn report(backend: &str, op: &str, clients: usize, s: &Stats) {
    let pct = |p: f64| {
        let i =
            ((s.latencies.len() as f64 * p).ceil() as usize).clamp(1, s.latencies.len().max(1)) - 1;
        s.latencies
            .get(i)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "| {backend} | {op} | {clients} | {} | {:.0} | {:.2} | {:.2} |",
        s.ops,
        s.ops as f64 / s.elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
}

async fn create(
    client: &MerchantClient,
    notify_url: &str,
    order_no: &str,
) -> Result<String, String> {
    let r = client
        .post(
            "/v1/payments",
            &json!({
                "merchant_order_no": order_no,
                "amount": 100,
                "channel": "wechat",
                "method": "mini_program",
                "description": "bench",
                "notify_url": notify_url,
                "payer": {"openid": "oBenchPayer"}
            }),
        )
        .await
        .map_err(|e| e.to_string())?;
    if r.status != 201 {
        return Err(format!("create: HTTP {} {}", r.status, r.body));
    }
    Ok(r.body["id"].as_str().unwrap_or_default().to_string())
}

async fn pay(http: &reqwest::Client, base: &str, id: &str) -> Result<(), String> {
    crate::sim_pay(http, base, "wechat", id).await.map(drop)
}
