//! A run as a CSV report for a finance team: one line per difference listed.

use paymux_store::ReconciliationRun;
use serde_json::Value;

const HEADER: &str = "run_id,channel,bill_date,kind,payment_id,refund_id,channel_trade_no,\
ours_status,ours_amount,theirs_status,theirs_amount,currency,resolution";

/// One CSV field, quoted when it must be (RFC 4180). A leading `=`, `+`,
/// `-` or `@` is prefixed with `'` so a spreadsheet never runs it as a formula.
fn field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn csv(run: &ReconciliationRun) -> String {
    let mut out = String::from(HEADER);
    out.push_str("\r\n");
    let empty = Vec::new();
    for d in run.discrepancies.as_array().unwrap_or(&empty) {
        let (ours, theirs) = (&d["ours"], &d["theirs"]);
        let currency = [text(ours, "currency"), text(theirs, "currency")]
            .into_iter()
            .find(|c| !c.is_empty())
            .unwrap_or_default();
        let fields = [
            run.id.clone(),
            run.channel.as_str().to_string(),
            run.bill_date.to_string(),
            text(d, "kind"),
            text(d, "payment_id"),
            text(d, "refund_id"),
            text(d, "channel_trade_no"),
            text(ours, "status"),
            text(ours, "amount"),
            text(theirs, "status"),
            text(theirs, "amount"),
            currency,
            text(d, "resolution"),
        ];
        let line: Vec<String> = fields.iter().map(|f| field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, Utc};
    use paymux_core::ChannelKind;
    use paymux_store::RunStatus;
    use serde_json::json;

    #[test]
    fn differences_become_lines() {
        let run = ReconciliationRun {
            id: "rec_1".into(),
            merchant_id: "mch_1".into(),
            channel_account_id: "acct_1".into(),
            channel: ChannelKind::Wechat,
            bill_date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            trigger: "manual".into(),
            status: RunStatus::Succeeded,
            matched: 3,
            discrepancy_count: 2,
            discrepancies: json!([
                {"kind": "amount_mismatch", "payment_id": "pay_1",
                 "ours": {"status": "succeeded", "amount": 100, "currency": "CNY"},
                 "theirs": {"status": "paid", "amount": 1, "currency": "CNY"}},
                {"kind": "missing_here", "payment_id": "=cmd", "resolution": "settled, \"ok\""}
            ]),
            error: None,
            started_at: Utc::now(),
            finished_at: None,
        };
        let csv = csv(&run);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            "rec_1,wechat,2026-12-01,amount_mismatch,pay_1,,,succeeded,100,paid,1,CNY,"
        );
        assert_eq!(
            lines[2],
            "rec_1,wechat,2026-12-01,missing_here,'=cmd,,,,,,,,\"settled, \"\"ok\"\"\""
        );
        assert_eq!(lines[3], "");
    }
}
