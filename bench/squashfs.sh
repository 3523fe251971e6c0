#!/usr/bin/env bash
# Benchmark: kiln's squashfs writer against `mksquashfs -comp zstd` on a
# bookworm minbase root, with hyperfine (alternating, RUNS runs each).
#
# 1. cold: one layer (the root), no block cache, vs mksquashfs of the root.
# 2. child: a second layer folder (a few MB changed and added over the
#    root), kiln with the block cache warmed by the parent's image, vs
#    mksquashfs of the merged tree (made once with `cp -a`, untimed).
#
# Usage (as root): bench/squashfs.sh [RUNS]   (default 3)
# Needs: mmdebstrap, squashfs-tools, hyperfine (apt-get install them).
# The root is built once (host apt sources) and kept in bench/work/squashfs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
work=$PWD/bench/work/squashfs
mkdir -p "$work"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p kiln-formats --example squashfs
kiln=$CARGO_TARGET_DIR/release/examples/squashfs

root=$work/root
if [ ! -e "$work/root.done" ]; then
  rm -rf "$root"
  mmdebstrap --variant=minbase --mode=root --quiet bookworm "$root"
  touch "$work/root.done"
fi

# The child layer: a few MB changed (binaries rewritten) and added.
child=$work/child
merged=$work/merged
if [ ! -e "$work/child.done" ]; then
  rm -rf "$child" "$merged"
  mkdir -p "$child/usr/bin" "$child/opt/new" "$child/etc"
  cp -a "$root/usr/bin/bash" "$child/usr/bin/bash"
  printf 'changed' >> "$child/usr/bin/bash"
  cp -a "$root/etc/passwd" "$child/etc/passwd"
  echo 'app:x:1000:1000::/opt/new:/bin/sh' >> "$child/etc/passwd"
  head -c 3000000 /dev/urandom > "$child/opt/new/blob"
  for i in $(seq 1 200); do seq 1 "$((i * 100))" > "$child/opt/new/file-$i"; done
  cp -a "$root" "$merged"
  cp -a "$child/." "$merged/"
  touch "$work/child.done"
fi
du -sh "$root" "$child"

out=$work/out
mkdir -p "$out"
hyperfine --runs "$runs" --export-json "$work/cold.json" \
  --prepare "rm -f $out/mk.sqfs $out/kiln.sqfs; sync" \
  -n mksquashfs "mksquashfs $root $out/mk.sqfs -comp zstd -noappend -quiet -no-progress" \
  -n kiln "$kiln $root $out/kiln.sqfs"
ls -l "$out/mk.sqfs" "$out/kiln.sqfs"

# Warm the cache with the parent's image, then time the child's.
rm -rf "$work/cache"
"$kiln" "$root" "$out/parent.sqfs" --cache "$work/cache"
hyperfine --runs "$runs" --export-json "$work/child.json" \
  --prepare "rm -f $out/mk-child.sqfs $out/kiln-child.sqfs; sync" \
  -n mksquashfs-child "mksquashfs $merged $out/mk-child.sqfs -comp zstd -noappend -quiet -no-progress" \
  -n kiln-child-warm "$kiln $root $child $out/kiln-child.sqfs --cache $work/cache"
ls -l "$out/mk-child.sqfs" "$out/kiln-child.sqfs"
