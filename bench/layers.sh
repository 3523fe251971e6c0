#!/usr/bin/env bash
# Benchmark: storage of a base and 10 children in the layer store, against
# 11 full roots; and the time of a fully cached rebuild.
#
# Usage (as root): bench/layers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p kiln
kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
work=$PWD/bench/work/layers
rm -rf "$work"
mkdir -p "$work/tree/base/rootfs/etc"
printf '[output]\ndir = "out"\n' > "$work/tree/kiln.toml"
printf 'from = "debian:bookworm"\npackages = ["openssh-server", "busybox"]\n' > "$work/tree/base/image.toml"
echo "base" > "$work/tree/base/rootfs/etc/motd"
i=0
for pkg in less tree bc jq nano file zstd pv lsof psmisc; do
  i=$((i + 1))
  mkdir -p "$work/tree/child$i"
  printf 'from = "base"\npackages = ["%s"]\nfiles = [{ path = "/etc/child%s", content = "%s" }]\nrun = [{ inline = "echo child%s > /etc/child-marker" }]\n' \
    "$pkg" "$i" "$i" "$i" > "$work/tree/child$i/image.toml"
done
start=$(date +%s.%N)
"$kiln" build "$work/tree" --cache-dir "$work/cache" --parallel 2 >/dev/null
end=$(date +%s.%N)
echo "cold build of 11 variants: $(echo "$end - $start" | bc) s"
"$kiln" store du "$work/tree" --cache-dir "$work/cache"
start=$(date +%s.%N)
"$kiln" build "$work/tree" --cache-dir "$work/cache" >/dev/null
end=$(date +%s.%N)
echo "fully cached rebuild: $(echo "$end - $start" | bc) s"
echo "store on disk (du -s --block-size=1): $(du -s --block-size=1 "$work/cache/store/layers" | cut -f1) bytes"
