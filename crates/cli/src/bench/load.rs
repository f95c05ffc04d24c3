//! Running operations from concurrent clients and summing up what happened.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Throughput and latencies of one measurement.
pub struct Stats {
    pub ops: usize,
    pub elapsed: Duration,
    /// Sorted.
    pub latencies: Vec<Duration>,
}

impl Stats {
    pub fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The `p`-quantile latency in milliseconds.
    pub fn quantile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1].as_secs_f64() * 1000.0
    }
}

/// Runs `op(0..n)` from `clients` concurrent tasks, stopping early when
/// `duration` (if any) has passed; the first failure stops the run.
pub async fn measure<F, Fut>(
    label: &str,
    clients: usize,
    n: usize,
    duration: Option<Duration>,
    op: F,
) -> Result<Stats, String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>28} [{bar:30}] {pos}/{len} {per_sec}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients.max(1) {
        let (op, next, bar) = (op.clone(), next.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n / clients.max(1) + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok::<_, String>(latencies);
                }
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed());
                bar.inc(1);
            }
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    let mut failure = None;
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(l) => latencies.extend(l),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(format!("{label}: {e}"));
    }
    latencies.sort_unstable();
    Ok(Stats {
        ops: latencies.len(),
        elapsed,
        latencies,
    })
}

/// Resident memory of this process now and at its peak, in MiB (Linux).
pub fn rss_mib() -> (Option<f64>, Option<f64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
