#!/usr/bin/env bash
# The chat demo page in a real headless browser (Debian's chromium, installed if missing):
# two tabs on one channel, a message sent from one appears in both, in order.
#
#   tests/browser/check.sh
#
# Not part of `cargo test`: it needs chromium (~100 MB) and takes a few seconds of browser
# start-up, which CI machines may not have; it is the documented check of the page, run by
# hand after changing app/src/page.html. Loopback only; stops by itself (60 s at most).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
say() { echo "check.sh: $*" >&2; }
. benches/lib.sh

CHROMIUM=$(command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { need chromium && CHROMIUM=$(command -v chromium); } ||
  { say "chromium is not installable here"; exit 1; }

cargo build --release -q -p tidings --bin tidings
LOG=$(mktemp)
"$ROOT/target/release/tidings" --listen 127.0.0.1:0 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
ADDR=$(wait_listening "$LOG" "$PID") || { say "tidings did not start"; cat "$LOG" >&2; exit 1; }

timeout 60 python3 tests/browser/check_page.py "http://$ADDR" "$CHROMIUM"
