// Alipay mini-program checkout page: my.getAuthCode → your backend (which calls paymux) →
// my.tradePay with the tradeNO paymux returned in pay_params.
//
// BACKEND is the merchant's own server (an https domain on the mini-program's
// server domain whitelist); it keeps the paymux app secret. Never call paymux
// from the mini-program itself.
const BACKEND = 'https://mall.example.com';

// my.request as a promise that rejects on transport errors and non-2xx answers.
function request(options) {
  return new Promise((resolve, reject) => {
    my.request({
      ...options,
      url: BACKEND + options.url,
      headers: { 'content-type': 'application/json' },
      dataType: 'json',
      success: (res) => (res.status >= 200 && res.status < 300 ? resolve(res.data) : reject(res)),
      fail: reject,
    });
  });
}

Page({
  data: { orderNo: 'A-1002', amountText: '19.99', state: 'idle', message: '' },

  onPay() {
    if (this.data.state === 'paying' || this.data.state === 'confirming') return; // one cashier at a time
    this.setData({ state: 'paying', message: '' });
    new Promise((resolve, reject) => my.getAuthCode({ scopes: 'auth_base', success: resolve, fail: reject }))
      // The backend trades the auth code for the payer's id (alipay.system.oauth.token)
      // and creates the payment: POST /v1/payments {channel: "alipay", method: "mini_program",
      // payer: {buyer_id: "2088…"} or {openid: "…"}, ...}. It answers {payment_id, pay_params}.
      .then(({ authCode }) => request({ url: '/api/alipay/pay', method: 'POST', data: { auth_code: authCode, order_no: this.data.orderNo } }))
      .then(({ payment_id, pay_params }) => this.tradePay(payment_id, pay_params.tradeNO))
      .catch((err) => {
        console.error('checkout failed', err);
        this.setData({ state: 'failed', message: '下单失败，请重试' });
      });
  },

  tradePay(paymentId, tradeNO) {
    // pay_params from paymux for an Alipay mini_program payment: {tradeNO} (alipay.trade.create's trade_no).
    my.tradePay({
      tradeNO,
      // The cashier reports how it closed in resultCode; the order is paid when paymux
      // says so (payment.succeeded notification, or the payment's status).
      success: ({ resultCode }) => {
        if (resultCode === '9000' || resultCode === '8000' || resultCode === '6004') {
          this.confirm(paymentId, 10); // paid, or maybe paid: ask the backend
        } else if (resultCode === '6001') {
          // The payer closed the cashier. The trade stays open until it expires; tapping
          // "pay" again repeats the same create, and paymux answers the same payment
          // for the same merchant_order_no and body.
          this.setData({ state: 'idle', message: '已取消支付' });
        } else {
          this.setData({ state: 'failed', message: '支付失败（' + resultCode + '）' });
        }
      },
      fail: (err) => this.setData({ state: 'failed', message: '无法打开收银台：' + (err.errorMessage || err.error || '') }),
    });
  },

  // Ask the backend (which asks paymux: GET /v1/payments/{id}) until the payment is final.
  confirm(paymentId, triesLeft) {
    this.setData({ state: 'confirming', message: '正在确认支付结果…' });
    const again = () => setTimeout(() => this.confirm(paymentId, triesLeft - 1), 1000);
    request({ url: '/api/payments/' + paymentId, method: 'GET' })
      .then(({ status }) => {
        if (status === 'succeeded') return this.setData({ state: 'paid', message: '支付成功' });
        if (status === 'failed' || status === 'closed') return this.setData({ state: 'failed', message: '支付未完成' });
        if (triesLeft > 0) return again();
        this.setData({ state: 'idle', message: '支付结果确认中，请稍后在订单中查看' });
      })
      .catch(() => (triesLeft > 0 ? again() : this.setData({ state: 'idle', message: '网络异常，请稍后在订单中查看' })));
  },
});
