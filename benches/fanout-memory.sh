#!/usr/bin/env bash
# User-space memory of a fan-out to clients that do not read: 10,000 held polls whose clients
# advertise a 4 KiB window, one 64 KiB message (tests/bounds.rs::ten_thousand_unread_answers_hold_one_body
# prints the server's RSS before and after the publish). Two binaries, A B A B:
#
#   benches/fanout-memory.sh OLD_TIDINGS NEW_TIDINGS
#
# On loopback the kernel takes a whole 64 KiB answer into each socket's send buffer (it sizes
# it from the loopback MSS), so both binaries' user-space RSS stays flat and the 640 MiB sit in
# the kernel. Over the internet a send buffer starts near 16-46 KiB and the rest of each answer
# stays in the server. To see that here, the script caps the send buffers with
# `sysctl net.ipv4.tcp_wmem="4096 16384 16384"` for the run (root only; the old value is
# restored on exit, whatever happens), then runs each binary with and without the cap.
# Loopback only; bounded (each round is one test of about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 OLD_TIDINGS NEW_TIDINGS" >&2; exit 2; }
OLD=$(realpath "$1"); NEW=$(realpath "$2")
[ "$(id -u)" = 0 ] || { echo "fanout-memory.sh: needs root (sysctl net.ipv4.tcp_wmem)" >&2; exit 1; }
SAVED=$(sysctl -n net.ipv4.tcp_wmem)
trap 'sysctl -qw net.ipv4.tcp_wmem="$SAVED"' EXIT
cargo test -q --test bounds --no-run 2>/dev/null

round() { # NAME BINARY
  local line
  line=$(TIDINGS_BIN=$2 cargo test -q --test bounds ten_thousand -- --nocapture 2>&1 | grep "unread answers" || true)
  echo "$1: ${line:-no figure (see cargo test --test bounds ten_thousand)}"
}
for cap in "uncapped" "capped"; do
  if [ $cap = capped ]; then sysctl -qw net.ipv4.tcp_wmem="4096 16384 16384"; else sysctl -qw net.ipv4.tcp_wmem="$SAVED"; fi
  echo "== send buffers $cap ($(sysctl -n net.ipv4.tcp_wmem))"
  for r in 1 2; do round "A old" "$OLD"; round "B new" "$NEW"; done
done
