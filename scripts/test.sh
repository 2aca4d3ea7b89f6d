#!/usr/bin/env bash
# The whole test suite: static gates (fmt, lint, type check) and every test
# under tests/, on the running kernel. Ends with one plain line
# "N passed, N failed, N skipped" (a gate counts as one test).
# Extra arguments are passed to `deno test` (e.g. a file or --filter).
set -uo pipefail
cd "$(dirname "$0")/.."
DENO=${DENO:-scripts/deno/node_modules/.bin/deno}
passed=0 failed=0 skipped=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

gate() {
  local name=$1
  shift
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "gate $name ... ok"
  else
    failed=$((failed + 1))
    echo "gate $name ... FAILED"
    tail -30 "$log"
  fi
}

if [ $# -eq 0 ]; then
  gate fmt "$DENO" fmt --check
  gate lint "$DENO" lint
  gate check "$DENO" check .
fi

NO_COLOR=1 "$DENO" test -A --no-check "$@" 2>&1 | tee "$log"
summary=$(sed -E 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -1)
if [ -z "$summary" ]; then
  echo "deno test printed no summary (crashed?)"
  failed=$((failed + 1))
else
  p=$(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$summary")
  f=$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$summary")
  i=$(grep -oE '[0-9]+ ignored' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
  passed=$((passed + p))
  failed=$((failed + f))
  skipped=$((skipped + i))
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
