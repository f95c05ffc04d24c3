// paymux merchant API example: create, query, pay (sandbox), notification, refund.
// Standard library only. Config: PAYMUX_URL, PAYMUX_APP_ID, PAYMUX_APP_SECRET.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

var (
	base   = strings.TrimRight(os.Getenv("PAYMUX_URL"), "/")
	appID  = os.Getenv("PAYMUX_APP_ID")
	secret = os.Getenv("PAYMUX_APP_SECRET")
	client = &http.Client{Timeout: 15 * time.Second}
	events = make(chan map[string]any, 16)
)

const window = 300 * time.Second // the same window paymux allows for requests

func fail(format string, a ...any) { fmt.Fprintf(os.Stderr, "FAIL "+format+"\n", a...); os.Exit(1) }

// mac is base64(HMAC-SHA256(secret, part1 "\n" ... partN "\n")).
func mac(parts ...[]byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte("\n"))
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// signedOK checks paymux's signature on a response or notification: "TIMESTAMP\nNONCE\nBODY\n".
func signedOK(h http.Header, body []byte) bool {
	ts, nonce, sig := h.Get("Paymux-Timestamp"), h.Get("Paymux-Nonce"), h.Get("Paymux-Signature")
	t, err := strconv.ParseInt(ts, 10, 64)
	age := time.Since(time.Unix(t, 0))
	if err != nil || nonce == "" || sig == "" || age > window || age < -window {
		return false
	}
	return hmac.Equal([]byte(mac([]byte(ts), []byte(nonce), body)), []byte(sig))
}

func api(method, path string, payload any, expect int) map[string]any {
	var body []byte
	if payload != nil {
		body, _ = json.Marshal(payload)
	}
	nb := make([]byte, 16)
	rand.Read(nb)
	ts, nonce := strconv.FormatInt(time.Now().Unix(), 10), hex.EncodeToString(nb)
	req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
	for k, v := range map[string]string{"Paymux-App-Id": appID, "Paymux-Timestamp": ts, "Paymux-Nonce": nonce,
		"Paymux-Signature": mac([]byte(method), []byte(path), []byte(ts), []byte(nonce), body),
		"Content-Type":     "application/json"} {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		fail("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if !signedOK(resp.Header, raw) {
		fail("%s %s: HTTP %d, answer not signed with this app's secret: %s", method, path, resp.StatusCode, raw)
	}
	if resp.StatusCode != expect {
		fail("%s %s: HTTP %d %s", method, path, resp.StatusCode, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		fail("%s %s: %v", method, path, err)
	}
	return out
}

// notify is the notify_url: it checks every notification before acknowledging it.
func notify(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	if r.Header.Get("Paymux-App-Id") != appID || !signedOK(r.Header, raw) {
		fmt.Fprintln(os.Stderr, "rejected a notification with a bad signature")
		w.WriteHeader(401) // anything but 2xx is retried
		return
	}
	var ev map[string]any
	if json.Unmarshal(raw, &ev) == nil {
		events <- ev
	}
	w.WriteHeader(200)
}

// waitEvent takes notifications until the one wanted; delivery is at least once, so duplicates
// (the same event id) are dropped.
func waitEvent(kind, id string, seen map[any]bool) {
	for ev := range events {
		data, _ := ev["data"].(map[string]any)
		if !seen[ev["id"]] && ev["type"] == kind && data["id"] == id {
			seen[ev["id"]] = true
			fmt.Printf("verified notification %s %s\n", kind, id)
			return
		}
		seen[ev["id"]] = true
	}
}

func main() {
	if base == "" || appID == "" || secret == "" {
		fail("set PAYMUX_URL, PAYMUX_APP_ID and PAYMUX_APP_SECRET")
	}
	time.AfterFunc(60*time.Second, func() { fail("overall timeout (60 s)") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	go http.Serve(ln, http.HandlerFunc(notify))
	notifyURL := fmt.Sprintf("http://%s/paymux/notify", ln.Addr())
	orderNo := fmt.Sprintf("go-%d-%d", time.Now().Unix(), time.Now().UnixNano()%100000)
	p := api("POST", "/v1/payments", map[string]any{"merchant_order_no": orderNo, "amount": 1999, "channel": "wechat",
		"method": "native", "description": "2 杯咖啡 (Go example)", "notify_url": notifyURL}, 201)
	pid := p["id"].(string)
	fmt.Printf("created payment %s %s code_url=%v\n", pid, p["status"], p["pay_params"].(map[string]any)["code_url"])
	for _, path := range []string{"/v1/payments/" + pid, "/v1/payments?merchant_order_no=" + orderNo} {
		if api("GET", path, nil, 200)["id"] != pid {
			fail("GET %s answered another payment", path)
		}
	}
	// Sandbox only: play the payer at the WeChat Pay simulator (not a merchant API call, not signed).
	sim, err := client.Post(base+"/sim/wechat/pay", "application/json", strings.NewReader(`{"out_trade_no":"`+pid+`"}`))
	if err != nil {
		fail("simulator pay: %v", err)
	}
	simAnswer, _ := io.ReadAll(sim.Body)
	sim.Body.Close()
	if sim.StatusCode != 200 {
		fail("simulator pay: HTTP %d %s", sim.StatusCode, simAnswer)
	}
	seen := map[any]bool{}
	waitEvent("payment.succeeded", pid, seen)
	if s := api("GET", "/v1/payments/"+pid, nil, 200)["status"]; s != "succeeded" {
		fail("payment is %v", s)
	}
	r := api("POST", "/v1/refunds", map[string]any{"payment_id": pid, "merchant_refund_no": orderNo + "-r1",
		"amount": 500, "reason": "one cup returned"}, 201)
	rid := r["id"].(string)
	fmt.Printf("created refund %s %s\n", rid, r["status"])
	waitEvent("refund.succeeded", rid, seen)
	if s := api("GET", "/v1/refunds/"+rid, nil, 200)["status"]; s != "succeeded" {
		fail("refund is %v", s)
	}
	fmt.Printf("refund %s succeeded; payment refunded_amount=%v\n", rid, api("GET", "/v1/payments/"+pid, nil, 200)["refunded_amount"])
}
