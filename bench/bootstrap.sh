#!/usr/bin/env bash
# Benchmark: a bookworm minbase root into a directory, kiln against
# mmdebstrap with the same (host) sources, alternating run by run, median of
# RUNS each, cold (empty package cache) and warm (cache filled; kiln also
# --offline).
#
# Usage (as root): bench/bootstrap.sh [RUNS]   (default 3)
# Needs: mmdebstrap (apt-get install mmdebstrap).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release -q -p kiln
kiln=$PWD/target/release/kiln
work=$PWD/bench/work/bootstrap
rm -rf "$work"
mkdir -p "$work/tree/img"
printf '[output]\ndir = "out"\n' > "$work/tree/kiln.toml"
printf 'from = "debian:bookworm"\nvariant = "minbase"\n' > "$work/tree/img/image.toml"

# Seconds taken by a command (its output discarded; a failure stops the run).
timed() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

mm() { rm -rf "$work/mm-root"; mmdebstrap --variant=minbase --mode=root --quiet bookworm "$work/mm-root"; }
kiln_cold() { rm -rf "$work/cache" "$work/tree/out" "$work/tree/kiln.lock"; "$kiln" build "$work/tree" --cache-dir "$work/cache"; }
# Warm: indexes and .debs cached, but no layer (the layer store would make
# the build a no-op: that case is the "fully cached rebuild" below).
kiln_warm() { rm -rf "$work/tree/out" "$work/cache/store"; "$kiln" build "$work/tree" --cache-dir "$work/cache" "$@"; }

declare -a kc mc kw kwo mw
for i in $(seq "$runs"); do
  kc+=("$(timed kiln_cold)")
  mc+=("$(timed mm)")
done
for i in $(seq "$runs"); do
  kw+=("$(timed kiln_warm)")
  kwo+=("$(timed kiln_warm --offline)")
  mw+=("$(timed mm)")
done
k_c=$(median "${kc[@]}"); m_c=$(median "${mc[@]}")
k_w=$(median "${kw[@]}"); k_wo=$(median "${kwo[@]}"); m_w=$(median "${mw[@]}")
echo "runs: $runs (alternating); seconds, median"
echo "cold: kiln $k_c  mmdebstrap $m_c  ratio $(echo "scale=2; $k_c / $m_c" | bc)   (all: kiln ${kc[*]} / mmdebstrap ${mc[*]})"
echo "warm: kiln $k_w  kiln --offline $k_wo  mmdebstrap $m_w  ratio $(echo "scale=2; $k_w / $m_w" | bc) / $(echo "scale=2; $k_wo / $m_w" | bc)"
echo "      (all: kiln ${kw[*]} / offline ${kwo[*]} / mmdebstrap ${mw[*]})"
cached=$(timed "$kiln" build "$work/tree" --cache-dir "$work/cache")
echo "fully cached rebuild (layer in the store): $cached s"
