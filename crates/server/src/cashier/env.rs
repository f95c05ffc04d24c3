//! Where the payer is, from the request's User-Agent and client hints, and
//! which ways to pay fit there. Inside WeChat only WeChat Pay works (WeChat
//! blocks Alipay's pages), inside Alipay only Alipay, inside UnionPay's app
//! only UnionPay; a mobile browser gets the channels' mobile web flows, a
//! desktop their QR codes.

use axum::http::HeaderMap;
use paymux_core::{ChannelKind, PayMethod};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayerEnv {
    /// WeChat's in-app browser (`MicroMessenger` in the User-Agent).
    Wechat,
    /// Alipay's in-app browser (`AlipayClient`).
    Alipay,
    /// UnionPay's app, 云闪付 (`UnionPay/` in the User-Agent).
    Unionpay,
    /// Any other phone or tablet browser.
    Mobile,
    Desktop,
}

impl PayerEnv {
    pub fn detect(headers: &HeaderMap) -> PayerEnv {
        let ua = headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // The in-app browsers first: their User-Agents say "Mobile" too.
        if ua.contains("MicroMessenger") {
            return PayerEnv::Wechat;
        }
        if ua.contains("AlipayClient") {
            return PayerEnv::Alipay;
        }
        if ua.contains("UnionPay/") {
            return PayerEnv::Unionpay;
        }
        // Either says so: Chromium's hint on phones (whose User-Agent may be
        // reduced), or the User-Agent (Safari sends no hints; a browser told
        // to pose as a phone keeps its own device's hint).
        let hinted_mobile = headers
            .get("sec-ch-ua-mobile")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "?1");
        let ua_mobile = ["Mobile", "Android", "iPhone", "iPad", "HarmonyOS"]
            .iter()
            .any(|m| ua.contains(m));
        if hinted_mobile || ua_mobile {
            PayerEnv::Mobile
        } else {
            PayerEnv::Desktop
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PayerEnv::Wechat => "wechat",
            PayerEnv::Alipay => "alipay",
            PayerEnv::Unionpay => "unionpay",
            PayerEnv::Mobile => "mobile",
            PayerEnv::Desktop => "desktop",
        }
    }

    /// The ways to pay offered here, in the order shown, of the channels
    /// the merchant has enabled.
    pub fn offers(self, enabled: &[ChannelKind]) -> Vec<(ChannelKind, PayMethod)> {
        use ChannelKind::*;
        use PayMethod::*;
        let all: &[(ChannelKind, PayMethod)] = match self {
            PayerEnv::Wechat => &[(Wechat, Jsapi)],
            PayerEnv::Alipay => &[(Alipay, Wap)],
            PayerEnv::Unionpay => &[(Unionpay, Wap)],
            PayerEnv::Mobile => &[(Wechat, H5), (Alipay, Wap), (Unionpay, Wap)],
            PayerEnv::Desktop => &[
                (Wechat, Native),
                (Alipay, Native),
                (Unionpay, Native),
                (Unionpay, Pc),
            ],
        };
        all.iter()
            .copied()
            .filter(|(channel, _)| enabled.contains(channel))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChannelKind::*;
    use PayMethod::*;

    const WECHAT_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN";
    const ALIPAY_ANDROID: &str = "Mozilla/5.0 (Linux; U; Android 13; zh-CN; V2227A Build/TP1A.220624.014) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/69.0.3497.100 UWS/3.22.2.59 Mobile Safari/537.36 AlipayChannelId/5136 AlipayDefined(nt:WIFI,ws:360|0|3.0) AliApp(AP/10.5.86.8000) AlipayClient/10.5.86.8000 Language/zh-Hans";
    const CLOUDPAY_ANDROID: &str = "Mozilla/5.0 (Linux; Android 12; M2102J2SC Build/SKQ1.211006.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/95.0.4638.74 Mobile Safari/537.36 (com.unionpay.chsp) (cordova 4.5.4) (updebug 0) (version 1021) (UnionPay/1.0 CloudPay) (clientVersion 321) (language zh_CN) (languageFamily zh_CN)";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
    const CHROME_DESKTOP: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

    fn env(ua: &str, mobile_hint: Option<&str>) -> PayerEnv {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::USER_AGENT, ua.parse().unwrap());
        if let Some(m) = mobile_hint {
            h.insert("sec-ch-ua-mobile", m.parse().unwrap());
        }
        PayerEnv::detect(&h)
    }

    #[test]
    fn the_payers_app_or_device_is_recognised() {
        assert_eq!(env(WECHAT_IOS, None), PayerEnv::Wechat);
        assert_eq!(env(ALIPAY_ANDROID, None), PayerEnv::Alipay);
        assert_eq!(env(CLOUDPAY_ANDROID, None), PayerEnv::Unionpay);
        assert_eq!(env(SAFARI_IPHONE, None), PayerEnv::Mobile);
        assert_eq!(env(CHROME_DESKTOP, None), PayerEnv::Desktop);
        // A phone by its client hint or by its User-Agent; an in-app
        // browser above both.
        assert_eq!(env(CHROME_DESKTOP, Some("?1")), PayerEnv::Mobile);
        assert_eq!(env(SAFARI_IPHONE, Some("?0")), PayerEnv::Mobile);
        assert_eq!(env(CHROME_DESKTOP, Some("?0")), PayerEnv::Desktop);
        assert_eq!(env(WECHAT_IOS, Some("?0")), PayerEnv::Wechat);
        assert_eq!(PayerEnv::detect(&HeaderMap::new()), PayerEnv::Desktop);
    }

    #[test]
    fn never_alipay_inside_wechat_nor_wechat_inside_alipay() {
        let all = ChannelKind::ALL;
        assert_eq!(PayerEnv::Wechat.offers(&all), vec![(Wechat, Jsapi)]);
        assert_eq!(PayerEnv::Alipay.offers(&all), vec![(Alipay, Wap)]);
        assert_eq!(PayerEnv::Unionpay.offers(&all), vec![(Unionpay, Wap)]);
        assert_eq!(
            PayerEnv::Mobile.offers(&all),
            vec![(Wechat, H5), (Alipay, Wap), (Unionpay, Wap)]
        );
        assert_eq!(
            PayerEnv::Desktop.offers(&all),
            vec![
                (Wechat, Native),
                (Alipay, Native),
                (Unionpay, Native),
                (Unionpay, Pc)
            ]
        );
        // Only what the merchant enabled.
        assert_eq!(PayerEnv::Wechat.offers(&[Alipay]), vec![]);
        assert_eq!(PayerEnv::Mobile.offers(&[Alipay]), vec![(Alipay, Wap)]);
        // Every offer is a method its channel has.
        for env in [
            PayerEnv::Wechat,
            PayerEnv::Alipay,
            PayerEnv::Unionpay,
            PayerEnv::Mobile,
            PayerEnv::Desktop,
        ] {
            for (channel, method) in env.offers(&all) {
                assert!(channel.accepts(method), "{channel} {method}");
            }
        }
    }
}
