#!/usr/bin/env bash
# Runs every merchant example (Node.js, Python, Java, Go, PHP) against a fresh
# sandbox paymux on a free loopback port, one PASS/FAIL line each.
#
#   bash examples/run.sh            # uses target/debug/paymux (under $CARGO_TARGET_DIR if set)
#   PAYMUX_BIN=/path/to/paymux bash examples/run.sh
#   bash examples/run.sh python go  # only some
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${PAYMUX_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/paymux}
examples=("$@")
[ ${#examples[@]} -gt 0 ] || examples=(node python java go php)
per_example_timeout=${PAYMUX_EXAMPLE_TIMEOUT:-90}

summary() { echo "examples: $1 passed, $2 failed"; }
if [ ! -x "$bin" ]; then
  echo "no paymux binary at $bin (build it, or set PAYMUX_BIN)" >&2
  summary 0 "${#examples[@]}"
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/paymux-examples.XXXXXX")
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server gets none of the caller's PAYMUX_* settings (a database URL, a
# public URL, …) except the log filter: a fresh SQLite sandbox, always.
server_env=(env)
for var in $(compgen -e | grep '^PAYMUX_' | grep -v '^PAYMUX_LOG$'); do server_env+=(-u "$var"); done

# Port 0: the kernel picks a free port and paymux prints the address it got.
"${server_env[@]}" "$bin" serve --sandbox --listen 127.0.0.1:0 --data-dir "$work/data" \
  >"$work/server.out" 2>"$work/server.log" &
server_pid=$!

url=
for _ in $(seq 1 300); do
  url=$(sed -n 's/^paymux listening on \(http:[^ ]*\).*/\1/p' "$work/server.out")
  [ -n "$url" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
app_id=$(sed -n 's/.*"app_id":"\([^"]*\)".*/\1/p' "$work/server.out" | head -n1)
app_secret=$(sed -n 's/.*"app_secret":"\([^"]*\)".*/\1/p' "$work/server.out" | head -n1)
if [ -z "$url" ] || [ -z "$app_id" ] || [ -z "$app_secret" ]; then
  echo "paymux did not start, or printed no sandbox credentials:" >&2
  cat "$work/server.out" >&2
  tail -n 40 "$work/server.log" >&2
  summary 0 "${#examples[@]}"
  exit 1
fi
echo "paymux sandbox at $url (app $app_id)"

# Go and PHP are not on every machine: install them from the distribution if we can.
need_pkg() {
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $2 with apt-get"
    { timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq "$2"; } >"$work/apt-$2.log" 2>&1 \
      || tail -n 5 "$work/apt-$2.log" >&2
  fi
}
for ex in "${examples[@]}"; do
  case $ex in go) need_pkg go golang ;; php) need_pkg php php-cli ;; esac
done

export here work
declare -A commands=(
  [node]='node "$here/node/example.mjs"'
  [python]='python3 "$here/python/example.py"'
  [java]='javac -encoding UTF-8 -d "$work/java" "$here/java/Example.java" && java -cp "$work/java" Example'
  [go]='GOTOOLCHAIN=local GOPROXY=off GOFLAGS= go run "$here/go/main.go"'
  [php]='php "$here/php/example.php"'
)

passed=0 failed=0
for ex in "${examples[@]}"; do
  start=$(date +%s.%N)
  PAYMUX_URL=$url PAYMUX_APP_ID=$app_id PAYMUX_APP_SECRET=$app_secret \
    timeout "$per_example_timeout" bash -c "${commands[$ex]:-echo no example named $ex; exit 2}" \
    >"$work/$ex.out" 2>&1
  rc=$?
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  if [ $rc -eq 0 ] && grep -q '^verified notification payment.succeeded ' "$work/$ex.out" \
     && grep -q '^verified notification refund.succeeded ' "$work/$ex.out"; then
    passed=$((passed + 1)); echo "PASS $ex (${secs}s)"
  else
    failed=$((failed + 1)); echo "FAIL $ex (exit $rc, ${secs}s)"
  fi
  sed 's/^/    /' "$work/$ex.out"
done

if [ $failed -gt 0 ] && ! kill -0 "$server_pid" 2>/dev/null; then
  echo "paymux exited during the run; its log ends:" >&2
  tail -n 40 "$work/server.log" >&2
fi
summary "$passed" "$failed"
[ $failed -eq 0 ]
