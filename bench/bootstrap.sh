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
kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
work=$PWD/bench/work/bootstrap
rm -rf "$work"
mkdir -p "$work/tree/img"
printf '[output]\ndir = "out"\n' > "$work/tree/kiln.toml"
printf 'from = "debian:bookworm"\nvariant = "minbase"\n' > "$work/tree/img/image.toml"

# Between runs the previous results are moved aside, untimed, and only
# deleted after the last round: on an ext4 without a journal (this
# machine's), creating files within minutes of deleting 10,000 others
# makes the kernel scan the freed inodes on every allocation
# (`recently_deleted` in ext4's inode allocator: 10 s of system time in a
# 4 s build, as `perf record -a` shows). Deleting between runs measured
# that, for both tools, not the tools.
. bench/lib.sh

grave=$work/grave
mkdir -p "$grave"
aside() { for p in "$@"; do [ -e "$p" ] && mv "$p" "$grave/$(date +%s%N)-$(basename "$p")"; done; true; }
mm() { mmdebstrap --variant=minbase --mode=root --quiet bookworm "$work/mm-root"; }
kiln_build() { "$kiln" build "$work/tree" --cache-dir "$work/cache" "$@"; }
# Cold: nothing cached. Warm: indexes and .debs cached, but no layer (the
# layer store would make the build a no-op: that case is timed last).
prep_mm() { aside "$work/mm-root"; }
prep_cold() { aside "$work/cache" "$work/tree/out"; rm -f "$work/tree/kiln.lock"; }
prep_warm() { aside "$work/tree/out" "$work/cache/store"; }

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
rm -rf "$grave"
