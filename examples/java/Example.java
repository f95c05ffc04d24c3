// paymux merchant API example: create, query, pay (sandbox), notification, refund.
// JDK 17, no libraries. Config: PAYMUX_URL, PAYMUX_APP_ID, PAYMUX_APP_SECRET.
import com.sun.net.httpserver.HttpServer;
import java.net.*;
import java.net.http.*;
import java.nio.charset.StandardCharsets;
import java.security.*;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class Example {
    static final String BASE = Objects.requireNonNullElse(System.getenv("PAYMUX_URL"), "").replaceAll("/$", ""), APP_ID = System.getenv("PAYMUX_APP_ID"),
        SECRET = System.getenv("PAYMUX_APP_SECRET");
    static final long WINDOW = 300; // seconds; the same window paymux allows for requests
    static final HttpClient HTTP = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
    static final BlockingQueue<String> EVENTS = new LinkedBlockingQueue<>();
    static final Set<String> SEEN = new HashSet<>();
    static final long DEADLINE = System.nanoTime() + 60_000_000_000L;

    static void fail(String msg) { System.err.println("FAIL " + msg); System.exit(1); }

    // base64(HMAC-SHA256(secret, part1 "\n" ... partN "\n")), over bytes.
    static String mac(byte[]... parts) throws GeneralSecurityException {
        Mac m = Mac.getInstance("HmacSHA256");
        m.init(new SecretKeySpec(SECRET.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
        for (byte[] p : parts) { m.update(p); m.update((byte) '\n'); }
        return Base64.getEncoder().encodeToString(m.doFinal());
    }
    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }

    // Responses and notifications are signed over "TIMESTAMP\nNONCE\nBODY\n".
    static boolean signedOk(String ts, String nonce, String sig, byte[] body) throws GeneralSecurityException {
        if (ts == null || !ts.matches("\\d{1,12}") || nonce == null || sig == null) return false;
        if (Math.abs(System.currentTimeMillis() / 1000 - Long.parseLong(ts)) > WINDOW) return false;
        return MessageDigest.isEqual(b(mac(b(ts), b(nonce), body)), b(sig));
    }

    static String api(String method, String path, String json, int expect) throws Exception {
        byte[] body = json == null ? new byte[0] : b(json);
        String ts = Long.toString(System.currentTimeMillis() / 1000), nonce = UUID.randomUUID().toString().replace("-", "");
        HttpRequest req = HttpRequest.newBuilder(URI.create(BASE + path)).timeout(Duration.ofSeconds(15))
            .method(method, method.equals("GET") ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofByteArray(body))
            .header("Paymux-App-Id", APP_ID).header("Paymux-Timestamp", ts).header("Paymux-Nonce", nonce)
            .header("Paymux-Signature", mac(b(method), b(path), b(ts), b(nonce), body))
            .header("Content-Type", "application/json").build();
        HttpResponse<byte[]> res = HTTP.send(req, HttpResponse.BodyHandlers.ofByteArray());
        HttpHeaders h = res.headers();
        String text = new String(res.body(), StandardCharsets.UTF_8);
        if (!signedOk(h.firstValue("Paymux-Timestamp").orElse(null), h.firstValue("Paymux-Nonce").orElse(null),
                h.firstValue("Paymux-Signature").orElse(null), res.body()))
            fail(method + " " + path + ": HTTP " + res.statusCode() + ", answer not signed with this app's secret: " + text);
        if (res.statusCode() != expect) fail(method + " " + path + ": HTTP " + res.statusCode() + " " + text);
        return text;
    }

    // Index just past the JSON value that starts at i.
    static int skip(String s, int i) {
        boolean str = false;
        for (int depth = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (str) {
                if (c == '\\') i++;
                else if (c == '"') { str = false; if (depth == 0) return i + 1; }
            }
            else if (c == '"') str = true;
            else if (c == '{' || c == '[') depth++;
            else if (c == '}' || c == ']') { if (--depth <= 0) return depth == 0 ? i + 1 : i; }
            else if (c == ',' && depth == 0) return i;
        }
        return i;
    }

    // The raw JSON of an object's member (the JDK has no JSON parser); strings come back unquoted.
    static String field(String s, String key) {
        for (int i = s.indexOf('{') + 1; i > 0 && i < s.length(); ) {
            while (" \t\r\n,".indexOf(s.charAt(i)) >= 0) i++;
            if (s.charAt(i) == '}') break;
            int keyEnd = skip(s, i), v = s.indexOf(':', keyEnd) + 1;
            while (Character.isWhitespace(s.charAt(v))) v++;
            int end = skip(s, v);
            if (s.substring(i + 1, keyEnd - 1).equals(key))
                return s.charAt(v) == '"' ? s.substring(v + 1, end - 1) : s.substring(v, end).trim();
            i = end;
        }
        return null;
    }

    static void waitEvent(String type, String id) throws Exception {
        for (;;) {
            String ev = EVENTS.poll(Math.max(1, DEADLINE - System.nanoTime()), TimeUnit.NANOSECONDS);
            if (ev == null) fail("no " + type + " notification for " + id + " in time");
            if (!SEEN.add(field(ev, "id"))) continue; // delivery is at least once: drop duplicates by event id
            if (type.equals(field(ev, "type")) && id.equals(field(field(ev, "data"), "id"))) {
                System.out.println("verified notification " + type + " " + id);
                return;
            }
        }
    }

    public static void main(String[] args) {
        if (BASE.isEmpty() || APP_ID == null || SECRET == null) fail("set PAYMUX_URL, PAYMUX_APP_ID and PAYMUX_APP_SECRET");
        try { run(); } catch (Exception e) { fail(e.toString()); } // the listener's thread would keep the JVM alive
        System.exit(0);
    }

    static void run() throws Exception {
        Executors.newSingleThreadScheduledExecutor(r -> { Thread t = new Thread(r); t.setDaemon(true); return t; })
            .schedule(() -> fail("overall timeout (60 s)"), 65, TimeUnit.SECONDS);
        // The notify_url: a local listener that checks every notification before acknowledging it.
        HttpServer server = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 0);
        server.createContext("/paymux/notify", ex -> {
            byte[] raw = ex.getRequestBody().readAllBytes();
            var h = ex.getRequestHeaders();
            boolean ok;
            try { ok = APP_ID.equals(h.getFirst("Paymux-App-Id"))
                    && signedOk(h.getFirst("Paymux-Timestamp"), h.getFirst("Paymux-Nonce"), h.getFirst("Paymux-Signature"), raw);
            } catch (GeneralSecurityException e) { ok = false; }
            ex.sendResponseHeaders(ok ? 200 : 401, -1); // any 2xx acknowledges; anything else is retried
            ex.close();
            if (ok) EVENTS.add(new String(raw, StandardCharsets.UTF_8));
            else System.err.println("rejected a notification with a bad signature");
        });
        server.start();
        String notifyUrl = "http://127.0.0.1:" + server.getAddress().getPort() + "/paymux/notify";
        String orderNo = "java-" + System.currentTimeMillis() / 1000 + "-" + (int) (Math.random() * 1e6);
        String p = api("POST", "/v1/payments", "{\"merchant_order_no\":\"" + orderNo + "\",\"amount\":1999,\"channel\":\"wechat\","
            + "\"method\":\"native\",\"description\":\"2 \u676f\u5496\u5561 (Java example)\",\"notify_url\":\"" + notifyUrl + "\"}", 201);
        String pid = field(p, "id");
        System.out.println("created payment " + pid + " " + field(p, "status") + " code_url=" + field(field(p, "pay_params"), "code_url"));
        for (String path : List.of("/v1/payments/" + pid, "/v1/payments?merchant_order_no=" + orderNo))
            if (!pid.equals(field(api("GET", path, null, 200), "id"))) fail("GET " + path + " answered another payment");
        // Sandbox only: play the payer at the WeChat Pay simulator (not a merchant API call, not signed).
        HttpResponse<String> sim = HTTP.send(HttpRequest.newBuilder(URI.create(BASE + "/sim/wechat/pay")).timeout(Duration.ofSeconds(15))
            .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString("{\"out_trade_no\":\"" + pid + "\"}")).build(),
            HttpResponse.BodyHandlers.ofString());
        if (sim.statusCode() != 200) fail("simulator pay: HTTP " + sim.statusCode() + " " + sim.body());
        waitEvent("payment.succeeded", pid);
        String s = field(api("GET", "/v1/payments/" + pid, null, 200), "status");
        if (!"succeeded".equals(s)) fail("payment is " + s);
        String r = api("POST", "/v1/refunds", "{\"payment_id\":\"" + pid + "\",\"merchant_refund_no\":\"" + orderNo + "-r1\","
            + "\"amount\":500,\"reason\":\"one cup returned\"}", 201);
        String rid = field(r, "id");
        System.out.println("created refund " + rid + " " + field(r, "status"));
        waitEvent("refund.succeeded", rid);
        s = field(api("GET", "/v1/refunds/" + rid, null, 200), "status");
        if (!"succeeded".equals(s)) fail("refund is " + s);
        System.out.println("refund " + rid + " succeeded; payment refunded_amount=" + field(api("GET", "/v1/payments/" + pid, null, 200), "refunded_amount"));
        server.stop(0);
    }
}
