#!/usr/bin/env bash
# Benchmark of `kiln serve` on loopback:
# 1. 1,000 signed webhook deliveries (10 % bad signatures, 10 % redeliveries)
#    at concurrency 50 (crates/kiln-serve/examples/webhook_load.rs): counts
#    and acceptance latency; then the same burst with a SIGKILL of the
#    server after 400 acknowledgements, and a check with sqlite3 that every
#    acknowledged delivery has its job after the restart.
# 2. `git push` (through examples/serve/post-receive) to the job's
#    `running` state, and to `succeeded` for a child-only change, against
#    `kiln build` of the same change from a warm cache on the command line,
#    alternating, N rounds (default 5), medians.
#
# Usage (as root, with sqlite3, curl, openssl): bench/serve.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-5}
cargo build --release -q -p kiln
cargo build --release -q -p kiln-serve --example webhook_load
target=${CARGO_TARGET_DIR:-$PWD/target}/release
kiln=$target/kiln
load=$target/examples/webhook_load
work=$PWD/bench/work/serve
rm -rf "$work"
mkdir -p "$work"
openssl rand -hex 32 > "$work/secret"
git init -q --bare "$work/images.git"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/serve.toml" <<EOF
listen = "127.0.0.1:$port"
data_dir = "data"
[[repos]]
name = "images"
url = "file://$work/images.git"
secret_file = "secret"
EOF
pid=
start_server() {
  "$kiln" serve --config "$work/serve.toml" 2>>"$work/server.log" &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return
    sleep 0.1
  done
  echo "kiln serve did not start" >&2; exit 1
}
stop_server() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
trap 'kill -9 "$pid" 2>/dev/null || true' EXIT

echo "== 1,000 webhook deliveries, concurrency 50"
start_server
"$load" "http://127.0.0.1:$port" "$work/secret" 1000 50 | sed '/^acked:/,$d'
echo "jobs in the database: $(sqlite3 "$work/data/kiln.db" 'SELECT count(*) FROM jobs')"

echo "== the same burst, SIGKILL after 400 acknowledgements"
"$load" "http://127.0.0.1:$port" "$work/secret" 1000 50 400 "$pid" > "$work/burst.txt" || true
wait "$pid" 2>/dev/null || true
sed '/^acked:/,$d' "$work/burst.txt"
start_server
sed '1,/^acked:/d' "$work/burst.txt" > "$work/acked.txt"
lost=0
while read -r delivery job; do
  got=$(sqlite3 "$work/data/kiln.db" "SELECT job FROM deliveries WHERE id = '$delivery'")
  [ "$got" = "$job" ] || lost=$((lost + 1))
done < "$work/acked.txt"
echo "acknowledged: $(wc -l < "$work/acked.txt"), lost after the restart: $lost"

echo "== git push to running and to succeeded, child-only change"
install -m 755 examples/serve/post-receive "$work/images.git/hooks/post-receive"
git -C "$work/images.git" config kiln.url "http://127.0.0.1:$port"
git -C "$work/images.git" config kiln.secretFile "$work/secret"
tree=$work/tree
mkdir -p "$tree/base" "$tree/app"
printf '[output]\ndir = "out"\n' > "$tree/kiln.toml"
printf 'from = "debian:bookworm"\nvariant = "minbase"\n' > "$tree/base/image.toml"
app() { printf 'from = "base"\nfiles = [{ path = "/etc/app.conf", content = "%s" }]\noutputs = ["squashfs"]\n' "$1" > "$tree/app/image.toml"; }
app v0
g() { git -C "$tree" -c user.name=bench -c user.email=bench@example.org "$@"; }
g init -q -b main && g add -A && g commit -qm init
# Waits for the newest job to reach state $1; prints the seconds since $2.
wait_state() {
  local job state
  while :; do
    job=$(curl -s "http://127.0.0.1:$port/api/jobs?repo=images" | python3 -c 'import json, sys; j = json.load(sys.stdin)["jobs"][0]; print(j["id"], j["state"])')
    state=${job#* }
    case $state in
    "$1") echo "$(date +%s.%N) - $2" | bc; return ;;
    failed | cancelled | timed-out) echo "job $job" >&2; exit 1 ;;
    esac
    sleep 0.01
  done
}
g push -q "$work/images.git" main 2>/dev/null
wait_state succeeded "$(date +%s.%N)" >/dev/null
"$kiln" build "$tree" --cache-dir "$work/cli-cache" >/dev/null 2>&1
running=() service=() cli=()
for i in $(seq 1 "$rounds"); do
  app "cli-$i"
  cli+=("$(timed "$kiln" build "$tree" --cache-dir "$work/cli-cache")")
  app "v$i"
  g commit -qam "app v$i"
  t0=$(date +%s.%N)
  g push -q "$work/images.git" main 2>/dev/null
  running+=("$(wait_state running "$t0")")
  service+=("$(wait_state succeeded "$t0")")
done
r=$(median "${running[@]}") s=$(median "${service[@]}") c=$(median "${cli[@]}")
echo "push to running: median $r s (${running[*]})"
echo "push to succeeded: median $s s (${service[*]})"
echo "kiln build of the same change (warm cache): median $c s (${cli[*]})"
echo "overhead of the service: $(echo "$s - $c" | bc) s; ratio $(ratio "$s" "$c")"
stop_server
