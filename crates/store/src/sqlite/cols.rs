//! How SQLite rows decode and statements run: timestamps are unix
//! microseconds, JSON is text, booleans are 0/1; every statement is prepared
//! once per connection and cached.

use chrono::{DateTime, Utc};
use rusqlite::types::FromSql;
use rusqlite::{Connection, Params, Row};

use crate::row::Cols;
use crate::{Result, StoreError};

pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn json_text(v: &serde_json::Value) -> String {
    v.to_string()
}

fn get<T: FromSql>(row: &Row<'_>, col: &str) -> Result<T> {
    row.get(col)
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

impl Cols for Row<'_> {
    fn text(&self, col: &str) -> Result<String> {
        get(self, col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        get(self, col)
    }
    fn int(&self, col: &str) -> Result<i64> {
        get(self, col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        get(self, col)
    }
    fn int32(&self, col: &str) -> Result<i32> {
        get(self, col)
    }
    fn flag(&self, col: &str) -> Result<bool> {
        match get::<i64>(self, col)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(StoreError::Corrupt(format!(
                "column {col}: {v} is not a boolean"
            ))),
        }
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>> {
        get(self, col)
    }
    fn ts(&self, col: &str) -> Result<DateTime<Utc>> {
        from_micros(col, get(self, col)?)
    }
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        get::<Option<i64>>(self, col)?
            .map(|v| from_micros(col, v))
            .transpose()
    }
    fn json(&self, col: &str) -> Result<serde_json::Value> {
        from_json(col, &get::<String>(self, col)?)
    }
    fn opt_json(&self, col: &str) -> Result<Option<serde_json::Value>> {
        get::<Option<String>>(self, col)?
            .map(|v| from_json(col, &v))
            .transpose()
    }
}

pub(super) fn from_micros(col: &str, v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| StoreError::Corrupt(format!("column {col}: timestamp {v} out of range")))
}

fn from_json(col: &str, v: &str) -> Result<serde_json::Value> {
    serde_json::from_str(v).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

/// Runs a statement; how many rows it changed.
pub(super) fn exec(conn: &Connection, sql: &str, params: impl Params) -> Result<u64> {
    Ok(conn.prepare_cached(sql)?.execute(params)? as u64)
}

/// Like [`exec`], with a unique-key violation reported as a duplicate `what`.
pub(super) fn exec_unique(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    what: &str,
) -> Result<u64> {
    conn.prepare_cached(sql)?
        .execute(params)
        .map(|n| n as u64)
        .map_err(|e| StoreError::unique_sqlite(e, what))
}

/// The first row a statement returns, decoded, if any.
pub(super) fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl FnOnce(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    match rows.next()? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// Every row a statement returns, decoded.
pub(super) fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}
