#!/usr/bin/env bash
# Benchmark: archive outputs of a bookworm minbase root, kiln's writers
# against the commands a user would otherwise run, alternating run by run,
# median of RUNS each:
#
#   cpio.gz   (cd ROOT && find . | cpio -o -H newc | gzip) > OUT
#   tar.zst   tar -I zstd -C ROOT -cf OUT .
#   tar.xz    tar -I 'xz -T0' -C ROOT -cf OUT .
#
# kiln's side is `cargo run --release -p kiln-formats --example write --
# FORMAT OUT ROOT` (the writer alone, as `kiln build` runs it).
#
# Usage (as root): bench/archives.sh [RUNS]   (default 5)
# Needs: mmdebstrap, cpio, zstd, xz-utils, bc.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-5}
cargo build --release -q -p kiln-formats --example write
write=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/write
work=$PWD/bench/work/archives
mkdir -p "$work"
root=$work/root
minbase_root "$root"
export SOURCE_DATE_EPOCH=1700000000

cpio_gz() { (cd "$root" && find . | cpio -o -H newc --quiet | gzip) > "$work/ref.cpio.gz"; }
tar_zst() { tar -I zstd -C "$root" -cf "$work/ref.tar.zst" .; }
tar_xz() { tar -I 'xz -T0' -C "$root" -cf "$work/ref.tar.xz" .; }
kiln() { "$write" "$1" "$work/kiln.$1" "$root"; }

declare -a rc kc rz kz rx kx
for i in $(seq "$runs"); do
  rc+=("$(timed cpio_gz)"); kc+=("$(timed kiln cpio.gz)")
  rz+=("$(timed tar_zst)"); kz+=("$(timed kiln tar.zst)")
  if [ "$i" -le 3 ]; then rx+=("$(timed tar_xz)"); kx+=("$(timed kiln tar.xz)"); fi
done
size() { stat -c %s "$1"; }
report() { # name, reference median, kiln median, reference file, kiln file, all times
  echo "$1: reference $2 s, kiln $3 s, time ratio $(ratio "$3" "$2"); size $(size "$5") vs $(size "$4") bytes, ratio $(ratio "$(size "$5")" "$(size "$4")")"
}
echo "rounds: $runs (tar.xz: 3); seconds, median"
report "cpio.gz" "$(median "${rc[@]}")" "$(median "${kc[@]}")" "$work/ref.cpio.gz" "$work/kiln.cpio.gz"
report "tar.zst" "$(median "${rz[@]}")" "$(median "${kz[@]}")" "$work/ref.tar.zst" "$work/kiln.tar.zst"
report "tar.xz" "$(median "${rx[@]}")" "$(median "${kx[@]}")" "$work/ref.tar.xz" "$work/kiln.tar.xz"
