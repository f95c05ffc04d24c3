#!/usr/bin/env bash
# Builds paymux-sim, starts it on a free loopback port, installs the
# third-party `wechatpayv3` SDK and Alipay's official `alipay-sdk-python`
# into a venv under target/, Alipay's official Node SDK `alipay-sdk` into
# target/sdk-compat-node (when node and npm are there), and runs
# wechatpayv3_check.py, alipay_check.py and alipay_node_check.mjs against
# the simulator. The simulator is always stopped.
#
# Exit: 0 all checks passed (or SKIP: the package index is unreachable),
#       non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$TARGET_DIR/sdk-compat-venv"
PYTHON="${PYTHON:-python3}"
START=$(date +%s)

echo "== building paymux-sim"
cargo build -p paymux-sim
SIM_BIN="$TARGET_DIR/debug/paymux-sim"

echo "== python venv at $VENV"
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP_LOG="$(mktemp)"
SIM_LOG="$(mktemp)"
SIM_PID=""
cleanup() {
    if [[ -n "$SIM_PID" ]] && kill -0 "$SIM_PID" 2>/dev/null; then
        kill "$SIM_PID" 2>/dev/null || true
        wait "$SIM_PID" 2>/dev/null || true
    fi
    rm -f "$PIP_LOG" "$SIM_LOG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# An already-installed SDK needs no network: pip only checks it is there.
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check \
    --retries 1 --timeout 20 "wechatpayv3==${WECHATPAYV3_VERSION:-2.0.4}" \
    "alipay-sdk-python==${ALIPAY_SDK_VERSION:-3.7.1411}" >"$PIP_LOG" 2>&1; then
    cat "$PIP_LOG" >&2
    if grep -Eqi 'NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Name or service not known|Network is unreachable|ConnectTimeoutError|Connection refused|ProxyError|Could not fetch URL' "$PIP_LOG"; then
        echo "SKIP: pip cannot reach the package index; SDK compatibility not checked"
        exit 0
    fi
    echo "FAIL: pip install of the SDKs failed" >&2
    exit 1
fi
"$VENV/bin/python" -m pip show wechatpayv3 alipay-sdk-python 2>/dev/null | grep -E '^(Name|Version):' || true

echo "== starting paymux-sim"
# Port 0: the OS picks a free port, the simulator logs the one it got.
NO_COLOR=1 RUST_LOG=info "$SIM_BIN" --listen 127.0.0.1:0 >"$SIM_LOG" 2>&1 &
SIM_PID=$!
BASE=""
for _ in $(seq 1 100); do
    BASE="$(grep -Eo 'http://127\.0\.0\.1:[0-9]+/sim/wechat' "$SIM_LOG" | head -n1 | sed 's#/sim/wechat$##' || true)"
    [[ -n "$BASE" ]] && break
    if ! kill -0 "$SIM_PID" 2>/dev/null; then
        cat "$SIM_LOG" >&2
        echo "FAIL: paymux-sim exited before listening" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$BASE" ]]; then
    cat "$SIM_LOG" >&2
    echo "FAIL: paymux-sim did not report its address within 10s" >&2
    exit 1
fi
echo "paymux-sim at $BASE (pid $SIM_PID)"

echo "== wechatpayv3 checks"
status=0
"$VENV/bin/python" "$ROOT/tools/sdk-compat/wechatpayv3_check.py" "$BASE" || status=$?
if [[ $status -ne 0 ]]; then
    echo "FAIL: wechatpayv3 compatibility check failed (exit $status)" >&2
fi

echo "== alipay-sdk-python checks"
alipay_status=0
"$VENV/bin/python" "$ROOT/tools/sdk-compat/alipay_check.py" "$BASE" || alipay_status=$?
if [[ $alipay_status -ne 0 ]]; then
    echo "FAIL: alipay-sdk-python compatibility check failed (exit $alipay_status)" >&2
    status=$alipay_status
fi
echo "== alipay-sdk (Node) checks"
NODE_DIR="$TARGET_DIR/sdk-compat-node"
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    mkdir -p "$NODE_DIR"
    [[ -f "$NODE_DIR/package.json" ]] || echo '{"name":"paymux-sdk-compat","private":true}' >"$NODE_DIR/package.json"
    NPM_LOG="$(mktemp)"
    if (cd "$NODE_DIR" && npm install --no-audit --no-fund --prefer-offline \
        "alipay-sdk@${ALIPAY_NODE_SDK_VERSION:-4.14.0}") >"$NPM_LOG" 2>&1; then
        # ESM resolves packages next to the script, so it runs from there.
        cp "$ROOT/tools/sdk-compat/alipay_node_check.mjs" "$NODE_DIR/"
        node_status=0
        node "$NODE_DIR/alipay_node_check.mjs" "$BASE" || node_status=$?
        if [[ $node_status -ne 0 ]]; then
            echo "FAIL: alipay-sdk (Node) compatibility check failed (exit $node_status)" >&2
            status=$node_status
        fi
    elif grep -Eqi 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|network' "$NPM_LOG"; then
        cat "$NPM_LOG" >&2
        echo "SKIP: npm cannot reach the registry; alipay-sdk (Node) compatibility not checked"
    else
        cat "$NPM_LOG" >&2
        echo "FAIL: npm install alipay-sdk failed" >&2
        status=1
    fi
    rm -f "$NPM_LOG"
else
    echo "SKIP: node/npm not installed; alipay-sdk (Node) compatibility not checked"
fi
if [[ $status -ne 0 ]]; then
    echo "-- simulator log" >&2
    cat "$SIM_LOG" >&2
fi
echo "== done in $(($(date +%s) - START))s"
exit "$status"
