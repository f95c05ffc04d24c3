//! `paymux bench --bill-rows N`: how fast and in how much memory paymux
//! reads a channel bill. A synthetic WeChat Pay trade bill of N rows (one
//! in ten a refund) is written gzip-compressed, as the simulator writes
//! bills, then read twice: the reader alone, and the reader keeping every
//! paid trade's id and fee as a reconciliation does (to find what the bill
//! lacks, and to post the fees once the bill is whole).

use std::collections::HashMap;
use std::io::BufWriter;
use std::time::Instant;

use paymux_channels::bill::{temp_path, BillFile, BillFormat, BillRecord};
use paymux_sim::wechat::bill::{write_bill, BillLine};
use serde::Serialize;

use super::load::rss_mib;

#[derive(Debug, Serialize)]
struct BillReport {
    rows: usize,
    gzip_mib: f64,
    write_seconds: f64,
    read_rows_per_second: f64,
    peak_rss_mib_reading: Option<f64>,
    match_rows_per_second: f64,
    peak_rss_mib_matching: Option<f64>,
}

fn line(i: usize) -> BillLine {
    let refund = (i % 10 == 9).then(|| {
        (
            format!("5030000000{i:019}"),
            format!("ref_01J{i:019}AAAA"),
            50,
        )
    });
    BillLine {
        time: format!(
            "2026-12-01 {:02}:{:02}:{:02}",
            i / 3600 % 24,
            i / 60 % 60,
            i % 60
        ),
        appid: "wxd678efh567hg6787".into(),
        transaction_id: format!("4200000000{i:018}"),
        out_trade_no: format!("pay_01J{i:019}AAAA"),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        trade_type: "NATIVE",
        description: "flash sale".into(),
        amount: if refund.is_some() {
            0
        } else {
            100 + (i % 1000) as i64
        },
        refund,
    }
}

fn measure(rows: usize) -> Result<BillReport, String> {
    let path = temp_path("bench-bill");
    let started = Instant::now();
    {
        let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        let mut gz =
            flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
        write_bill(&mut gz, "1900000001", (0..rows).map(line)).map_err(|e| e.to_string())?;
        gz.finish().map_err(|e| e.to_string())?;
    }
    let write_seconds = started.elapsed().as_secs_f64();
    let gzip_mib = std::fs::metadata(&path).map_err(|e| e.to_string())?.len() as f64 / 1048576.0;
    let bill = BillFile::new(path, BillFormat::WechatTradeGzip);

    let started = Instant::now();
    let mut read = 0usize;
    for record in bill.records().map_err(|e| e.to_string())? {
        record.map_err(|e| e.to_string())?;
        read += 1;
    }
    let read_seconds = started.elapsed().as_secs_f64();
    let (_, peak_reading) = rss_mib();

    let started = Instant::now();
    let mut fees = HashMap::new();
    for record in bill.records().map_err(|e| e.to_string())? {
        if let BillRecord::Payment {
            out_trade_no,
            fee_milli,
            ..
        } = record.map_err(|e| e.to_string())?
        {
            fees.insert(out_trade_no, (fee_milli + 500) / 1000);
        }
    }
    let match_seconds = started.elapsed().as_secs_f64();
    let (_, peak_matching) = rss_mib();
    if read != rows {
        return Err(format!("wrote {rows} rows, read {read}"));
    }
    Ok(BillReport {
        rows,
        gzip_mib,
        write_seconds,
        read_rows_per_second: rows as f64 / read_seconds,
        peak_rss_mib_reading: peak_reading,
        match_rows_per_second: rows as f64 / match_seconds,
        peak_rss_mib_matching: peak_matching,
    })
}

pub async fn run(rows: usize, json: bool) -> Result<(), String> {
    let report = tokio::task::spawn_blocking(move || measure(rows))
        .await
        .map_err(|e| e.to_string())??;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let mib = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0} MiB"));
    println!(
        "WeChat Pay trade bill, {} rows ({:.1} MiB gzip, written in {:.1} s)",
        report.rows, report.gzip_mib, report.write_seconds
    );
    println!(
        "| read | {:.0} rows/s | peak RSS {} |",
        report.read_rows_per_second,
        mib(report.peak_rss_mib_reading)
    );
    println!(
        "| read + the matching's ids and fees | {:.0} rows/s | peak RSS {} |",
        report.match_rows_per_second,
        mib(report.peak_rss_mib_matching)
    );
    Ok(())
}
