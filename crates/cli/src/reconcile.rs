//! `paymux reconcile`: asks a running paymux (its admin API) to reconcile a
//! channel's bill of one day, and prints the runs. A running node, because
//! settling what the bill shows paid goes through its channel clients and
//! its locks, exactly as a callback would.

use clap::Args;
use serde_json::{json, Value};

#[derive(Args)]
pub struct ReconcileArgs {
    /// wechat or alipay (the channels whose bills paymux reads).
    #[arg(long)]
    channel: String,
    /// One channel account; without it every enabled account of the channel.
    #[arg(long)]
    account: Option<String>,
    /// The China-time day of the bill, YYYY-MM-DD.
    #[arg(long)]
    date: String,
    /// Print each run as one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Also write the runs' CSV report to this file.
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
    /// The paymux node to ask.
    #[arg(long, env = "PAYMUX_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Its operator token (`admin_token`).
    #[arg(long, env = "PAYMUX_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

pub async fn run(args: ReconcileArgs) -> Result<(), String> {
    let http = reqwest::Client::new();
    let base = args.url.trim_end_matches('/');
    let mut body = json!({"channel": args.channel, "date": args.date});
    if let Some(account) = &args.account {
        body["account_id"] = json!(account);
    }
    let answer = http
        .post(format!("{base}/admin/reconciliations"))
        .bearer_auth(&args.admin_token)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("asking {base}: {e}"))?;
    let status = answer.status();
    let answer: Value = answer
        .json()
        .await
        .map_err(|e| format!("reading the answer of {base}: {e}"))?;
    if !status.is_success() {
        let message = answer["error"]["message"].as_str().unwrap_or("no message");
        return Err(format!("{base} answered {status}: {message}"));
    }
    let runs = answer["data"].as_array().cloned().unwrap_or_default();
    for run in &runs {
        if args.json {
            println!("{run}");
        } else {
            print_run(run);
        }
    }
    if let Some(path) = &args.csv {
        let mut all = String::new();
        for run in &runs {
            let id = run["run_id"].as_str().unwrap_or_default();
            let csv = http
                .get(format!("{base}/admin/reconciliations/{id}/report.csv"))
                .bearer_auth(&args.admin_token)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| format!("fetching the report of {id}: {e}"))?
                .text()
                .await
                .map_err(|e| format!("reading the report of {id}: {e}"))?;
            // One header for the whole file.
            let skip = if all.is_empty() { 0 } else { 1 };
            for line in csv.split_inclusive("\r\n").skip(skip) {
                all.push_str(line);
            }
        }
        std::fs::write(path, all).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| r["status"] == "failed")
        .filter_map(|r| r["error"].as_str())
        .collect();
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} run(s) failed; the first: {first}",
            failed.len()
        )),
    }
}

fn print_run(run: &Value) {
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    println!(
        "{} {} {} {}: {} matched, {} discrepancies ({})",
        s(&run["run_id"]),
        s(&run["channel"]),
        s(&run["channel_account_id"]),
        s(&run["date"]),
        run["matched"],
        run["discrepancy_count"],
        s(&run["status"]),
    );
    if let Some(e) = run["error"].as_str() {
        println!("  error: {e}");
    }
    for d in run["discrepancies"].as_array().into_iter().flatten() {
        let id = d["refund_id"]
            .as_str()
            .or(d["payment_id"].as_str())
            .unwrap_or("");
        let amount = |side: &Value| match side {
            Value::Null => "-".to_string(),
            v => format!("{} {}", s(&v["status"]), v["amount"]),
        };
        print!(
            "  {:<18} {id}  ours: {}  theirs: {}",
            s(&d["kind"]),
            amount(&d["ours"]),
            amount(&d["theirs"])
        );
        match d["resolution"].as_str() {
            Some(r) => println!("  → {r}"),
            None => println!(),
        }
    }
}
