<?php
// paymux merchant API example: create, query, pay (sandbox), notification, refund.
// PHP 8 CLI, no extensions beyond the defaults. Config: PAYMUX_URL, PAYMUX_APP_ID, PAYMUX_APP_SECRET.
$BASE = rtrim(getenv('PAYMUX_URL'), '/');
$APP_ID = getenv('PAYMUX_APP_ID');
$SECRET = getenv('PAYMUX_APP_SECRET');
const WINDOW = 300; // seconds; the same window paymux allows for requests
$DEADLINE = microtime(true) + 60;
if (!$BASE || !$APP_ID || !$SECRET) fail('set PAYMUX_URL, PAYMUX_APP_ID and PAYMUX_APP_SECRET');

function fail(string $msg): never { fwrite(STDERR, "FAIL $msg\n"); exit(1); }

// base64(HMAC-SHA256(secret, part1 "\n" ... partN "\n")), over bytes.
function mac(string ...$parts): string {
    global $SECRET;
    return base64_encode(hash_hmac('sha256', implode('', array_map(fn($p) => "$p\n", $parts)), $SECRET, true));
}

// Responses and notifications are signed over "TIMESTAMP\nNONCE\nBODY\n". $h: lower-case header => value.
function signed_ok(array $h, string $body): bool {
    [$ts, $nonce, $sig] = [$h['paymux-timestamp'] ?? '', $h['paymux-nonce'] ?? '', $h['paymux-signature'] ?? ''];
    if (!ctype_digit($ts) || $nonce === '' || $sig === '' || abs(time() - (int)$ts) > WINDOW) return false;
    return hash_equals(mac($ts, $nonce, $body), $sig);
}

function http(string $method, string $url, array $headers, string $body): array {
    $ctx = stream_context_create(['http' => ['method' => $method, 'header' => $headers, 'content' => $body,
        'ignore_errors' => true, 'timeout' => 15]]);
    $raw = @file_get_contents($url, false, $ctx);
    if ($raw === false) fail("$method $url: no answer");
    $status = (int)explode(' ', $http_response_header[0])[1];
    $h = [];
    foreach (array_slice($http_response_header, 1) as $line) {
        [$k, $v] = array_map('trim', explode(':', $line, 2)) + [1 => ''];
        $h[strtolower($k)] = $v;
    }
    return [$status, $h, $raw];
}

function api(string $method, string $path, ?array $payload = null, int $expect = 200): array {
    global $BASE, $APP_ID;
    $body = $payload === null ? '' : json_encode($payload, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    [$ts, $nonce] = [(string)time(), bin2hex(random_bytes(16))];
    [$status, $h, $raw] = http($method, $BASE . $path, ["Paymux-App-Id: $APP_ID", "Paymux-Timestamp: $ts",
        "Paymux-Nonce: $nonce", 'Paymux-Signature: ' . mac($method, $path, $ts, $nonce, $body),
        'Content-Type: application/json'], $body);
    if (!signed_ok($h, $raw)) fail("$method $path: HTTP $status, answer not signed with this app's secret: $raw");
    if ($status !== $expect) fail("$method $path: HTTP $status $raw");
    return json_decode($raw, true);
}

// The notify_url: a loopback socket; paymux's connection waits in its backlog until we accept it.
$server = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr) or fail("listen: $errstr");
$notify_url = 'http://' . stream_socket_get_name($server, false) . '/paymux/notify';
$seen = [];

function wait_event(string $type, string $id): array {
    global $server, $APP_ID, $DEADLINE, $seen;
    while (($left = $DEADLINE - microtime(true)) > 0) {
        if (!($conn = @stream_socket_accept($server, $left))) break;
        stream_set_timeout($conn, 10);
        $h = [];
        while (($line = fgets($conn)) !== false && trim($line) !== '') {
            [$k, $v] = array_map('trim', explode(':', $line, 2)) + [1 => ''];
            $h[strtolower($k)] = $v;
        }
        $raw = (int)($h['content-length'] ?? 0) > 0 ? stream_get_contents($conn, (int)$h['content-length']) : '';
        $ok = ($h['paymux-app-id'] ?? '') === $APP_ID && signed_ok($h, $raw);
        // Any 2xx acknowledges; anything else is retried.
        fwrite($conn, ($ok ? "HTTP/1.1 200 OK" : "HTTP/1.1 401 Unauthorized") . "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        fclose($conn);
        if (!$ok) { fwrite(STDERR, "rejected a notification with a bad signature\n"); continue; }
        $ev = json_decode($raw, true);
        if (isset($seen[$ev['id']])) continue; // delivery is at least once: drop duplicates by event id
        $seen[$ev['id']] = true;
        if ($ev['type'] === $type && $ev['data']['id'] === $id) { echo "verified notification $type $id\n"; return $ev; }
    }
    fail("no $type notification for $id in time");
}

$order_no = 'php-' . time() . '-' . bin2hex(random_bytes(4));
$p = api('POST', '/v1/payments', ['merchant_order_no' => $order_no, 'amount' => 1999, 'channel' => 'wechat',
    'method' => 'native', 'description' => '2 杯咖啡 (PHP example)', 'notify_url' => $notify_url], 201);
$pid = $p['id'];
echo "created payment $pid {$p['status']} code_url={$p['pay_params']['code_url']}\n";
foreach (["/v1/payments/$pid", "/v1/payments?merchant_order_no=$order_no"] as $path)
    if (api('GET', $path)['id'] !== $pid) fail("GET $path answered another payment");

// Sandbox only: play the payer at the WeChat Pay simulator (not a merchant API call, not signed).
[$status, , $raw] = http('POST', "$BASE/sim/wechat/pay", ['Content-Type: application/json'], json_encode(['out_trade_no' => $pid]));
if ($status !== 200) fail("simulator pay: HTTP $status $raw");

wait_event('payment.succeeded', $pid);
if (($s = api('GET', "/v1/payments/$pid")['status']) !== 'succeeded') fail("payment is $s");
$r = api('POST', '/v1/refunds', ['payment_id' => $pid, 'merchant_refund_no' => "$order_no-r1",
    'amount' => 500, 'reason' => 'one cup returned'], 201);
echo "created refund {$r['id']} {$r['status']}\n";
wait_event('refund.succeeded', $r['id']);
if (($s = api('GET', "/v1/refunds/{$r['id']}")['status']) !== 'succeeded') fail("refund is $s");
echo "refund {$r['id']} succeeded; payment refunded_amount=" . api('GET', "/v1/payments/$pid")['refunded_amount'] . "\n";
