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
mk() { echo "mksquashfs $1 $2 -comp zstd -noappend -quiet -no-progress"; }

# hyperfine runs one command's runs back to back; to alternate, each
# round is its own hyperfine call with one run of each command, and the
# medians are taken over the rounds.
bench() {
  local name=$1; shift
  rm -f "$work/$name".*.json
  for i in $(seq 1 "$runs"); do
    hyperfine --runs 1 --style none --export-json "$work/$name.$i.json" "$@" >/dev/null
  done
  python3 - "$work/$name" "$runs" <<'PY'
import json, statistics, sys
base, runs = sys.argv[1], int(sys.argv[2])
times = {}
for i in range(1, runs + 1):
    for r in json.load(open(f"{base}.{i}.json"))["results"]:
        times.setdefault(r["command"], []).append(r["times"][0])
meds = {c: statistics.median(t) for c, t in times.items()}
for c, t in times.items():
    print(f"{statistics.median(t):8.2f} s median  (runs: {', '.join(f'{x:.2f}' for x in t)})  {c}")
(a, b) = list(meds.values())[:2]
print(f"ratio second/first: {b / a:.3f}")
PY
}

# Both tools read the same files: have them in the page cache before the
# first round, so neither pays for the disk.
find "$root" "$child" "$merged" -type f -print0 | xargs -0 cat >/dev/null

echo "== cold: one layer, no cache"
bench cold "$(mk "$root" "$out/mk.sqfs")" "$kiln $root $out/kiln.sqfs"
ls -l "$out/mk.sqfs" "$out/kiln.sqfs"

echo "== child layer changed: kiln with the parent's blocks cached"
rm -rf "$work/cache"
"$kiln" "$root" "$out/parent.sqfs" --cache "$work/cache"
bench child "$(mk "$merged" "$out/mk-child.sqfs")" \
  "$kiln $root $child $out/kiln-child.sqfs --cache $work/cache"
ls -l "$out/mk-child.sqfs" "$out/kiln-child.sqfs"
