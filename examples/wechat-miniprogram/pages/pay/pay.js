// WeChat mini-program checkout page: wx.login → your backend (which calls paymux) →
// wx.requestPayment with the pay_params paymux returned.
//
// BACKEND is the merchant's own server (an https domain listed under the
// mini-program's "request legal domains"); it keeps the paymux app secret.
// Never call paymux from the mini-program itself.
const BACKEND = 'https://mall.example.com';

// wx.request as a promise that rejects on transport errors and non-2xx answers.
function request(options) {
  return new Promise((resolve, reject) => {
    wx.request({
      ...options,
      url: BACKEND + options.url,
      success: (res) => (res.statusCode >= 200 && res.statusCode < 300 ? resolve(res.data) : reject(res)),
      fail: reject,
    });
  });
}

Page({
  data: { orderNo: 'A-1001', amountText: '19.99', state: 'idle', message: '' },

  onPay() {
    if (this.data.state === 'paying' || this.data.state === 'confirming') return; // one payment sheet at a time
    this.setData({ state: 'paying', message: '' });
    new Promise((resolve, reject) => wx.login({ success: resolve, fail: reject }))
      // The backend trades the code for the payer's openid (jscode2session) and creates
      // the payment: POST /v1/payments {channel: "wechat", method: "mini_program",
      // payer: {openid}, ...}. It answers {payment_id, pay_params}.
      .then(({ code }) => request({ url: '/api/wechat/pay', method: 'POST', data: { code, order_no: this.data.orderNo } }))
      .then(({ payment_id, pay_params }) => this.requestPayment(payment_id, pay_params))
      .catch((err) => {
        console.error('checkout failed', err);
        this.setData({ state: 'failed', message: '下单失败，请重试' });
      });
  },

  requestPayment(paymentId, p) {
    // pay_params from paymux: {appId, timeStamp, nonceStr, package: "prepay_id=…", signType: "RSA", paySign}.
    // The mini-program's own appid is implied, so appId is not passed on.
    wx.requestPayment({
      timeStamp: p.timeStamp,
      nonceStr: p.nonceStr,
      package: p.package,
      signType: p.signType,
      paySign: p.paySign,
      // "requestPayment:ok" only means the sheet closed after paying: the order is paid
      // when paymux says so (payment.succeeded notification, or the payment's status).
      success: () => this.confirm(paymentId, 10),
      fail: (res) => {
        if (res.errMsg && res.errMsg.indexOf('cancel') >= 0) {
          // The payer closed the sheet. The payment stays open until it expires; tapping
          // "pay" again repeats the same create, and paymux answers the same payment
          // for the same merchant_order_no and body.
          this.setData({ state: 'idle', message: '已取消支付' });
        } else {
          this.setData({ state: 'failed', message: '支付失败：' + (res.errMsg || '') });
        }
      },
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
