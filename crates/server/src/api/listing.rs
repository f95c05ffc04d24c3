//! Listing a merchant's payments and refunds: filters, newest first, and
//! cursor pages (`limit`, `starting_after`). The cursor is an id and ids
//! are ULIDs, so a page never shifts or repeats while new objects arrive:
//! they are newer than every cursor already handed out.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use paymux_core::PaymentId;
use serde_json::{json, Value};

use super::ApiError;

/// Objects per page when `limit` is not given, and at most.
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// The checked paging and time bounds every listing shares. `fetch` is one
/// more than the page, to learn whether there is another.
pub struct Bounds {
    pub limit: u32,
    pub fetch: u32,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
}

impl Bounds {
    /// From the `limit`, `created_from` and `created_to` query parameters.
    pub fn parse(
        limit: Option<u32>,
        created_from: Option<&str>,
        created_to: Option<&str>,
    ) -> Result<Bounds, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!("limit: must be 1-{MAX_LIMIT}")));
        }
        Ok(Bounds {
            limit,
            fetch: limit + 1,
            created_from: time("created_from", created_from)?,
            created_to: time("created_to", created_to)?,
        })
    }
}

fn time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::invalid(format!(
                        "{name}: must be an RFC 3339 time like 2026-12-01T08:00:00+08:00"
                    ))
                })
        })
        .transpose()
}

/// A filter value that must be one of `all` (`status=closed`); the error
/// lists them, so the list cannot drift from the type.
pub fn one_of<T: Copy>(
    name: &str,
    value: Option<&str>,
    all: &[T],
    label: fn(&T) -> &'static str,
) -> Result<Option<T>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    all.iter()
        .copied()
        .find(|t| label(t) == v)
        .map(Some)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(label).collect();
            ApiError::invalid(format!("{name}: must be one of: {}", names.join(", ")))
        })
}

/// A filter value parsed as the type it names, for types without a short list.
pub fn parsed<T: FromStr>(
    name: &str,
    value: Option<&str>,
    what: &str,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::invalid(format!("{name}: must be {what}")))
        })
        .transpose()
}

/// A payment id given as a filter or cursor.
pub fn payment_id(name: &str, value: Option<&str>) -> Result<Option<PaymentId>, ApiError> {
    value
        .map(|v| {
            PaymentId::parse(v)
                .map_err(|_| ApiError::invalid(format!("{name}: must be a payment id")))
        })
        .transpose()
}

/// `{"object": "list", "data": [...], "has_more": …}` from one more row than
/// the page holds.
pub fn page<T>(mut rows: Vec<T>, limit: u32, view: impl Fn(&T) -> Value) -> Value {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    json!({
        "object": "list",
        "data": rows.iter().map(view).collect::<Vec<_>>(),
        "has_more": has_more,
    })
}
