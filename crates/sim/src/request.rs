//! What the simulators read from a request besides its body.

use axum::http::{HeaderMap, Uri};

/// `scheme://host/mount` of a request to `…/mount{endpoint}`: where the
/// simulator answering it is reached, wherever it is mounted.
pub(crate) fn base_url(uri: &Uri, headers: &HeaderMap, endpoint: &str) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!(
        "{}://{host}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.path().trim_end_matches(endpoint)
    )
}

/// One query parameter, decoded.
pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
