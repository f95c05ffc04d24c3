// Drives paymux-sim's Alipay gateway with Alipay's official Node SDK
// (`alipay-sdk`), unchanged: its own request signing, its own answer
// verification, its own certificate serials (certificate mode), its own AES
// content encryption and its own notify check.
//
// Usage: node alipay_node_check.mjs ROOT_URL   (the simulator's root)

import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { AlipaySdk } from 'alipay-sdk';

const root = process.argv[2].replace(/\/$/, '');
const sim = `${root}/sim/alipay`;
let failures = 0;

function check(name, ok, detail) {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${!ok && detail !== undefined ? ': ' + JSON.stringify(detail) : ''}`);
  if (!ok) failures += 1;
}

async function postJson(url, body) {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return [r.status, await r.json().catch(() => ({}))];
}

async function newApp({ certMode = false, encryptKey } = {}) {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const appId = `2021${Date.now().toString().slice(-9)}${Math.floor(Math.random() * 1000)}`;
  const [status, registered] = await postJson(`${sim}/merchants`, {
    app_id: appId,
    app_public_key: publicKey.export({ type: 'spki', format: 'pem' }),
    cert_mode: certMode,
    encrypt_key: encryptKey,
  });
  check(`register app${certMode ? ' (certificate mode)' : ''}`, status === 201, registered);
  const platform = await (await fetch(`${sim}/platform`)).json();
  const config = {
    appId,
    privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }),
    keyType: 'PKCS8',
    gateway: `${sim}/gateway.do`,
    encryptKey,
  };
  if (certMode) {
    config.appCertContent = registered.app_cert;
    config.alipayPublicCertContent = platform.alipay_cert;
    config.alipayRootCertContent = platform.alipay_root_cert;
  } else {
    config.alipayPublicKey = platform.alipay_public_key;
  }
  return new AlipaySdk(config);
}

const notifies = [];
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => { notifies.push(body); res.end('success'); });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const notifyUrl = `http://127.0.0.1:${server.address().port}/notify`;

try {
  // Public-key mode: precreate, pay, notify, query, close.
  let sdk = await newApp();
  const no = `node_qr_${Date.now()}`;
  let r = await sdk.exec('alipay.trade.precreate', {
    notify_url: notifyUrl,
    bizContent: { out_trade_no: no, total_amount: '19.99', subject: 'paymux Node SDK 检查 & co' },
  }, { validateSign: true });
  check('precreate answers a qr_code (answer signature verified by the SDK)', r.code === '10000' && r.qrCode?.startsWith('https://'), r);
  r = await sdk.exec('alipay.trade.query', { bizContent: { out_trade_no: no } }, { validateSign: true });
  check('query: WAIT_BUYER_PAY', r.tradeStatus === 'WAIT_BUYER_PAY', r);
  const [payStatus, paid] = await postJson(`${sim}/pay`, { out_trade_no: no });
  check('payer pays', payStatus === 200, paid);
  check('notify delivered', notifies.length === 1, notifies);
  if (notifies.length) {
    const params = Object.fromEntries(new URLSearchParams(notifies[0]));
    check('notify signature verifies with the SDK', sdk.checkNotifySign(params) === true);
    const tampered = { ...params, total_amount: '0.01' };
    check('a tampered notify fails the SDK check', sdk.checkNotifySign(tampered) === false);
  }
  r = await sdk.exec('alipay.trade.query', { bizContent: { out_trade_no: no } }, { validateSign: true });
  check('query: TRADE_SUCCESS', r.tradeStatus === 'TRADE_SUCCESS' && r.totalAmount === '19.99', r);
  r = await sdk.exec('alipay.trade.close', { bizContent: { out_trade_no: no } }, { validateSign: true });
  check('a paid trade cannot be closed', r.subCode === 'ACQ.TRADE_STATUS_ERROR', r);

  // WAP page URL and app order string.
  const url = sdk.pageExecute('alipay.trade.wap.pay', 'GET', {
    bizContent: { out_trade_no: `node_wap_${Date.now()}`, total_amount: '1.00', subject: 'wap', product_code: 'QUICK_WAP_WAY' },
  });
  const page = await (await fetch(url)).text();
  check('wap URL opens the cashier', page.includes('cashier'), page.slice(0, 200));
  const orderString = sdk.sdkExecute('alipay.trade.app.pay', {
    bizContent: { out_trade_no: `node_app_${Date.now()}`, total_amount: '2.00', subject: 'app', product_code: 'QUICK_MSECURITY_PAY' },
  });
  const answer = await (await fetch(`${sim}/gateway.do`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: orderString,
  })).text();
  check('app order string accepted', answer.includes('"code":"10000"'), answer);

  // Certificate mode: the SDK computes app_cert_sn / alipay_root_cert_sn
  // from the simulator's certificates and verifies with the Alipay cert.
  sdk = await newApp({ certMode: true });
  r = await sdk.exec('alipay.trade.create', {
    bizContent: { out_trade_no: `node_cert_${Date.now()}`, total_amount: '0.01', subject: 'cert', buyer_id: '2088102534368455' },
  }, { validateSign: true });
  check('certificate mode: create (SNs accepted, answer verified)', r.code === '10000' && !!r.tradeNo, r);

  // AES content encryption: request encrypted by the SDK, answer decrypted by it.
  sdk = await newApp({ encryptKey: 'aa4BtZ4tspm2wnXLb1ThQA==' });
  r = await sdk.exec('alipay.trade.precreate', {
    needEncrypt: true,
    bizContent: { out_trade_no: `node_aes_${Date.now()}`, total_amount: '3.00', subject: 'aes' },
  });
  check('AES: precreate encrypted both ways', r.code === '10000' && !!r.qrCode, r);
} catch (e) {
  check('no exception', false, String(e && e.stack || e));
} finally {
  server.close();
}
console.log(failures ? `FAILED: ${failures} failure(s)` : 'OK: 0 failure(s)');
process.exit(failures ? 1 : 0);
