#!/usr/bin/env bash
# Runs every fuzz target for a bounded time each (PAYMUX_FUZZ_SECONDS,
# default 20), seeded from the committed corpus in fuzz/corpus/<target>.
# New inputs go to a scratch directory, so the committed corpus changes only
# when someone copies interesting inputs into it. Any crash fails the run.
#
#   bash fuzz/run.sh                      # every target, 20 s each
#   PAYMUX_FUZZ_SECONDS=600 bash fuzz/run.sh certificates
#
# cargo-fuzz drives libFuzzer with -Z sanitizer flags; on a stable toolchain
# RUSTC_BOOTSTRAP=1 lets rustc accept them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
seconds=${PAYMUX_FUZZ_SECONDS:-20}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(merchant_requests wechat_callbacks alipay_forms unionpay_forms certificates bills)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

echo "== building ${#targets[@]} fuzz targets"
for t in "${targets[@]}"; do cargo fuzz build "$t"; done
scratch=$(mktemp -d "${TMPDIR:-/tmp}/paymux-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
passed=0; failed=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  if cargo fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$scratch/$t.log" 2>&1; then
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$scratch/$t.log" | grep -oE '[0-9]+$' || echo '?')
    echo "PASS $t ($runs inputs in ${seconds}s)"
    passed=$((passed + 1))
  else
    echo "FAIL $t"
    tail -n 40 "$scratch/$t.log"
    failed=$((failed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
