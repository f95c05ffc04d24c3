//! WeChat's web authorisation (网页授权, `snsapi_base`): how a page opened
//! inside WeChat learns the payer's openid for the official account, which
//! a JSAPI payment needs. The page sends the payer to
//! `open.weixin.qq.com/connect/oauth2/authorize`; WeChat sends them back to
//! `redirect_uri` with a one-time `code`, which
//! `api.weixin.qq.com/sns/oauth2/access_token` exchanges (with the official
//! account's AppSecret) for the openid. The `snsapi_base` scope asks the
//! payer nothing.

use serde::Deserialize;

use crate::ChannelError;

pub const AUTHORIZE_URL: &str = "https://open.weixin.qq.com/connect/oauth2/authorize";
pub const API_URL: &str = "https://api.weixin.qq.com";

/// The web-authorisation part of a WeChat Pay account's config: the
/// account's `appid` (an official account's), its AppSecret
/// (`oauth_app_secret`, sealed like the other keys) and, for a sandbox,
/// where WeChat's two endpoints are.
#[derive(Clone, Deserialize)]
pub struct WebAuthConfig {
    pub appid: String,
    #[serde(default)]
    pub oauth_app_secret: Option<String>,
    #[serde(default = "authorize_url")]
    pub oauth_authorize_url: String,
    #[serde(default = "api_url")]
    pub oauth_api_url: String,
}

fn authorize_url() -> String {
    AUTHORIZE_URL.to_string()
}

fn api_url() -> String {
    API_URL.to_string()
}

impl std::fmt::Debug for WebAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebAuthConfig")
            .field("appid", &self.appid)
            .field("oauth_authorize_url", &self.oauth_authorize_url)
            .finish_non_exhaustive()
    }
}

/// What `sns/oauth2/access_token` answers: the openid (and tokens paymux
/// does not keep), or WeChat's `errcode` / `errmsg`.
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    openid: Option<String>,
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
}

impl WebAuthConfig {
    /// The account's web-authorisation settings, if it has an AppSecret.
    pub fn from_account(config: &serde_json::Value) -> Option<WebAuthConfig> {
        let c: WebAuthConfig = serde_json::from_value(config.clone()).ok()?;
        c.oauth_app_secret
            .as_deref()
            .is_some_and(|s| !s.is_empty())
            .then_some(c)
    }

    /// Where to send the payer: WeChat asks nothing (`snsapi_base`) and
    /// comes back to `redirect_uri?code=…&state=…`. The parameters are in
    /// the order WeChat's documentation gives, which it insists on.
    pub fn authorize(&self, redirect_uri: &str, state: &str) -> String {
        let q = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        format!(
            "{}?appid={}&redirect_uri={}&response_type=code&scope=snsapi_base&state={}#wechat_redirect",
            self.oauth_authorize_url,
            q(&self.appid),
            q(redirect_uri),
            q(state)
        )
    }

    /// Exchanges the one-time `code` for the payer's openid.
    pub async fn openid(&self, http: &reqwest::Client, code: &str) -> Result<String, ChannelError> {
        let secret = self.oauth_app_secret.as_deref().unwrap_or_default();
        // reqwest here is built without its `query` helper: encode by hand.
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("appid", &self.appid)
            .append_pair("secret", secret)
            .append_pair("code", code)
            .append_pair("grant_type", "authorization_code")
            .finish();
        let url = format!(
            "{}/sns/oauth2/access_token?{query}",
            self.oauth_api_url.trim_end_matches('/')
        );
        let resp = http
            .get(url)
            .send()
            .await
            .map_err(|e| ChannelError::Transport(format!("sns/oauth2/access_token: {e}")))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ChannelError::Transport(format!("sns/oauth2/access_token: {e}")))?;
        if !status.is_success() {
            return Err(ChannelError::Transport(format!(
                "sns/oauth2/access_token answered HTTP {status}"
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| ChannelError::Protocol(format!("sns/oauth2/access_token: {e}")))?;
        match (answer.openid, answer.errcode) {
            (Some(openid), None | Some(0)) if !openid.is_empty() => Ok(openid),
            (_, code) => Err(ChannelError::Rejected {
                code: code.unwrap_or(-1).to_string(),
                message: answer.errmsg.unwrap_or_else(|| "no openid".into()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorize_url_is_wechats() {
        let c = WebAuthConfig::from_account(&serde_json::json!({
            "appid": "wx2421b1c4370ec43b", "oauth_app_secret": "s", "mchid": "1900000109"
        }))
        .unwrap();
        assert_eq!(
            c.authorize("https://pay.example.com/cashier/chk_1/wechat?t=ab", "xyz"),
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx2421b1c4370ec43b\
             &redirect_uri=https%3A%2F%2Fpay.example.com%2Fcashier%2Fchk_1%2Fwechat%3Ft%3Dab\
             &response_type=code&scope=snsapi_base&state=xyz#wechat_redirect"
        );
        assert!(WebAuthConfig::from_account(&serde_json::json!({"appid": "wx1"})).is_none());
        assert!(format!("{c:?}").find("oauth_app_secret").is_none());
    }
}
