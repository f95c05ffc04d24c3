//! What every simulator does when it plays the channel's side of a callback:
//! post it and record what the merchant side answered.

use serde::{Deserialize, Serialize};

/// What the merchant side answered to one callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallbackAttempt {
    /// HTTP status, absent when the callback could not be delivered.
    pub status: Option<u16>,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Callbacks a `/pay` call sends when it does not say.
pub(crate) fn one() -> u32 {
    1
}

/// Sends a prepared callback request and records the answer.
pub(crate) async fn deliver(req: reqwest::RequestBuilder) -> CallbackAttempt {
    match req.send().await {
        Ok(resp) => CallbackAttempt {
            status: Some(resp.status().as_u16()),
            body: resp.text().await.unwrap_or_default(),
            error: None,
        },
        Err(e) => CallbackAttempt {
            status: None,
            body: String::new(),
            error: Some(e.to_string()),
        },
    }
}

/// A callback built and signed but not sent (`"hold": true` in `/pay`): a
/// load generator sends it itself, as the channel would, timing only
/// paymux's side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldCallback {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What a prepared callback request would send.
pub(crate) fn hold(req: reqwest::RequestBuilder) -> Result<HeldCallback, String> {
    let req = req.build().map_err(|e| e.to_string())?;
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            Ok((
                k.to_string(),
                v.to_str().map_err(|e| e.to_string())?.to_string(),
            ))
        })
        .collect::<Result<_, String>>()?;
    let body = req
        .body()
        .and_then(reqwest::Body::as_bytes)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    Ok(HeldCallback {
        url: req.url().to_string(),
        headers,
        body,
    })
}
