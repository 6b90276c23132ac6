# Shell helpers shared by the scripts under benches/ and tests/browser/. Source it; it does
# nothing on its own.

# need CMD [PACKAGE...]: succeeds if CMD is on PATH; otherwise installs the Debian PACKAGEs
# (default: CMD) with apt-get, when running as root on a machine that has it (each step at
# most 5 minutes), and checks again. The caller decides whether a missing tool is fatal.
need() {
  local cmd=$1
  shift
  local pkgs=("${@:-$cmd}")
  command -v "$cmd" >/dev/null && return 0
  { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; } || return 1
  echo "installing ${pkgs[*]} (Debian package)…" >&2
  { timeout 300 apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq "${pkgs[@]}"; } >/dev/null 2>&1
  command -v "$cmd" >/dev/null
}

# wait_listening LOG PID [TENTHS]: prints the address of tidings' "listening on http://ADDR"
# line in LOG once it is there. Fails if PID exits first or after TENTHS tenths of a second
# (default 100).
wait_listening() {
  local log=$1 pid=$2 tries=${3:-100} addr
  for _ in $(seq "$tries"); do
    addr=$(sed -n 's|.*listening on http://\([0-9.:]*\).*|\1|p' "$log" | head -n 1)
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
