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

# Cleanup between runs (deleting the previous 200 MB root) is untimed and
# followed by `sync` in `timed`: it belongs to neither tool's time.
. bench/lib.sh

mm() { mmdebstrap --variant=minbase --mode=root --quiet bookworm "$work/mm-root"; }
kiln_build() { "$kiln" build "$work/tree" --cache-dir "$work/cache" "$@"; }
# Cold: nothing cached. Warm: indexes and .debs cached, but no layer (the
# layer store would make the build a no-op: that case is timed last).
prep_mm() { rm -rf "$work/mm-root"; }
prep_cold() { rm -rf "$work/cache" "$work/tree/out" "$work/tree/kiln.lock"; }
prep_warm() { rm -rf "$work/tree/out" "$work/cache/store"; }

# One round: kiln cold, kiln warm, kiln warm --offline, mmdebstrap; rounds
# repeat, so every measurement of a round sees the same machine state.
declare -a kc kw kwo mc
for i in $(seq "$runs"); do
  prep_cold; kc+=("$(timed kiln_build)")
  prep_warm; kw+=("$(timed kiln_build)")
  prep_warm; kwo+=("$(timed kiln_build --offline)")
  prep_mm; mc+=("$(timed mm)")
done
k_c=$(median "${kc[@]}"); k_w=$(median "${kw[@]}"); k_wo=$(median "${kwo[@]}"); m=$(median "${mc[@]}")
echo "rounds: $runs (kiln cold, warm, warm --offline, mmdebstrap); seconds, median"
echo "mmdebstrap: $m   (all: ${mc[*]})"
echo "kiln cold: $k_c  ratio $(echo "scale=2; $k_c / $m" | bc)   (all: ${kc[*]})"
echo "kiln warm: $k_w  ratio $(echo "scale=2; $k_w / $m" | bc)   (all: ${kw[*]})"
echo "kiln warm --offline: $k_wo  ratio $(echo "scale=2; $k_wo / $m" | bc)   (all: ${kwo[*]})"
cached=$(timed "$kiln" build "$work/tree" --cache-dir "$work/cache")
echo "fully cached rebuild (layer in the store): $cached s"
