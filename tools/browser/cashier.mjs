// Opens a checkout's cashier page in Debian's Chromium as payers in four
// places would (inside WeChat, inside Alipay, a phone browser, a desktop),
// records what each is offered, then pays on the desktop by QR code at the
// sandbox's WeChat Pay simulator and follows the page back to the
// merchant's return_url. Prints one JSON object; the Rust test that starts
// paymux (crates/server/tests/cashier.rs) checks it.
//
// Environment: CASHIER_URL and WECHAT_CASHIER_URL (two checkouts),
// PAYMUX_URL (the sandbox, for its simulator),
// SHOTS (a directory for screenshots), CHROMIUM (the browser binary).

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const cashierUrl = process.env.CASHIER_URL;
const paymuxUrl = process.env.PAYMUX_URL;
const shots = process.env.SHOTS;
mkdirSync(shots, { recursive: true });

const agents = {
  wechat: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN",
  alipay: "Mozilla/5.0 (Linux; U; Android 13; zh-CN; V2227A Build/TP1A.220624.014) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/69.0.3497.100 Mobile Safari/537.36 AlipayClient/10.5.86.8000 Language/zh-Hans",
  mobile: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
  desktop: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
};
const phone = { width: 390, height: 844 };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const result = { offers: {}, envs: {} };
try {
  for (const [env, userAgent] of Object.entries(agents)) {
    const context = await browser.newContext({
      userAgent,
      viewport: env === "desktop" ? { width: 1280, height: 800 } : phone,
      locale: "zh-CN",
    });
    const page = await context.newPage();
    await page.goto(cashierUrl);
    await page.waitForFunction(() => document.body.dataset.env);
    result.envs[env] = await page.evaluate(() => document.body.dataset.env);
    result.offers[env] = await page.$$eval("button.offer", (bs) =>
      bs.map((b) => `${b.dataset.channel}:${b.dataset.method}`));
    await page.screenshot({ path: `${shots}/cashier-${env}.png`, fullPage: true });

    if (env === "desktop") {
      await page.click('button.offer[data-channel="wechat"][data-method="native"]');
      await page.waitForSelector("#qr svg");
      result.paymentId = await page.$eval("#qr", (q) => q.dataset.paymentId);
      await page.screenshot({ path: `${shots}/cashier-desktop-qr.png`, fullPage: true });
      // The payer scans the code and pays, at the simulator.
      const paid = await fetch(`${paymuxUrl}/sim/wechat/pay`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ out_trade_no: result.paymentId }),
      });
      result.simPay = paid.status;
      await page.waitForURL((u) => u.searchParams.has("paymux_signature"), { timeout: 20000 });
      result.returnedTo = page.url();
      await page.screenshot({ path: `${shots}/cashier-returned.png`, fullPage: true });
    }
    await context.close();
  }

  // Inside WeChat: the page goes through WeChat's web authorisation (the
  // simulator's) for the payer's openid, then pays by JSAPI. WeChat's
  // bridge is played by a stand-in that records what the page hands it.
  const context = await browser.newContext({ userAgent: agents.wechat, viewport: phone, locale: "zh-CN" });
  await context.addInitScript(() => {
    window.WeixinJSBridge = {
      invoke(name, params, done) {
        window.__wechatPay = { name, params };
        setTimeout(() => done({ err_msg: "get_brand_wcpay_request:ok" }), 10);
      },
    };
  });
  const page = await context.newPage();
  await page.goto(process.env.WECHAT_CASHIER_URL);
  await page.waitForSelector('button.offer[data-method="jsapi"]');
  result.wechatLandedOn = new URL(page.url()).pathname;
  await page.click('button.offer[data-method="jsapi"]');
  await page.waitForFunction(() => window.__wechatPay);
  result.wechatBridge = await page.evaluate(() => window.__wechatPay);
  result.wechatPaymentId = await page.evaluate(() => document.body.dataset.paymentId);
  const paid = await fetch(`${paymuxUrl}/sim/wechat/pay`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ out_trade_no: result.wechatPaymentId }),
  });
  result.wechatSimPay = paid.status;
  await page.waitForURL((u) => u.searchParams.has("paymux_signature"), { timeout: 20000 });
  result.wechatReturnedTo = page.url();
  await context.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
