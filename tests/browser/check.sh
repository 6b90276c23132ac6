#!/usr/bin/env bash
# The hub in a real headless browser (Debian's chromium, installed if missing):
#  1. the chat demo page: two tabs on one channel, a message sent from one appears in both,
#     in order; then one tab across a restart of the server (seqs start over: the page's
#     cursor carries its epoch, so it shows every message once, in order);
#  1b. the same page with EventSource (?transport=sse): two tabs, a message, a restart: the
#     tabs resume from their cursor, no message twice, none skipped;
#  2. a WebSocket tab: the browser's own WebSocket on /ws subscribes, receives a message
#     published over HTTP, publishes one over the socket and receives it too;
#  3. access control from a page on another origin: with --publish-token-file,
#     --subscribe-key-file and --allow-origin, a page served from an allowed origin publishes
#     with a bearer token through fetch(), reads and holds polls with a signed token (CORS);
#     a page from another origin is refused by the browser itself and publishes nothing;
#  4. the dashboard (/dashboard): snapshots arrive once a second over its EventSource, and a
#     few publishes show up in its last snapshot and its charts.
#
#   tests/browser/check.sh
#
# Not part of `cargo test`: it needs chromium (~100 MB) and takes a few seconds of browser
# start-up, which CI machines may not have; it is the documented check of the page, run by
# hand after changing app/src/page.html or the access control. Loopback only; stops by itself
# (90 s at most).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
say() { echo "check.sh: $*" >&2; }
. benches/lib.sh

CHROMIUM=$(command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { need chromium && CHROMIUM=$(command -v chromium); } ||
  { say "chromium is not installable here"; exit 1; }

cargo build --release -q -p tidings --bin tidings
BIN=$ROOT/target/release/tidings
DIR=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"' EXIT

# The open hub, for the chat page.
"$BIN" --listen 127.0.0.1:0 2>"$DIR/open.log" &
PIDS+=($!)
ADDR=$(wait_listening "$DIR/open.log" "$!") || { say "tidings did not start"; cat "$DIR/open.log" >&2; exit 1; }

# Two static pages on two other origins (ports): one allowed, one not.
mkdir "$DIR/www"
echo '<!doctype html><title>another origin</title><p>a page on another origin' >"$DIR/www/index.html"
serve() { # serve LOG: a static server on an ephemeral port; prints its port
  python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$DIR/www" >"$1" 2>&1 &
  PIDS+=($!)
  local port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$1" | head -n 1)
    [ -n "$port" ] && { echo "$port"; return 0; }
    sleep 0.1
  done
  return 1
}
OK_PORT=$(serve "$DIR/www-ok.log") || { say "http.server did not start"; exit 1; }
NO_PORT=$(serve "$DIR/www-no.log") || { say "http.server did not start"; exit 1; }

# The guarded hub: a publish token, a subscribe key, one allowed origin.
head -c 24 /dev/urandom | base64 | tr '+/' '-_' >"$DIR/publish.token"
head -c 32 /dev/urandom >"$DIR/subscribe.key"
"$BIN" --listen 127.0.0.1:0 --publish-token-file "$DIR/publish.token" \
  --subscribe-key-file "$DIR/subscribe.key" --allow-origin "http://127.0.0.1:$OK_PORT" 2>"$DIR/guarded.log" &
PIDS+=($!)
GUARDED=$(wait_listening "$DIR/guarded.log" "$!") ||
  { say "guarded tidings did not start"; cat "$DIR/guarded.log" >&2; exit 1; }
CHANNEL=crossorigin$$
SUB_TOKEN=$("$BIN" token "$CHANNEL" --ttl 120 --subscribe-key-file "$DIR/subscribe.key")

TIDINGS_BIN=$BIN timeout 90 python3 tests/browser/check_page.py "http://$ADDR" "$CHROMIUM" \
  "http://$GUARDED" "$(cat "$DIR/publish.token")" "$CHANNEL" "$SUB_TOKEN" \
  "http://127.0.0.1:$OK_PORT/" "http://127.0.0.1:$NO_PORT/"
