#!/usr/bin/env bash
# Benchmark: kiln's ext4 writer against `mkfs.ext4 -d` on a bookworm
# minbase root, with hyperfine (alternating rounds, RUNS rounds, medians).
#
# kiln's side is the `ext4` example (the writer alone, as `kiln build`
# runs it: auto size, synced). mkfs.ext4 makes an image of the same size
# from the same root, twice:
#   mkfs        mkfs.ext4 -q -F -d ROOT -E root_owner=0:0 IMG SIZE
#               (the plain command; below 512 MiB it picks 1 KiB blocks)
#   mkfs -b 4096  the same with 4 KiB blocks, kiln's geometry
# Every run writes a new file: the previous images are removed, untimed,
# before each round. The sizes of the images (apparent and allocated) and
# their block counts follow.
#
# Usage (as root): bench/ext4.sh [RUNS]   (default 5)
#   ROOT=DIR bench/ext4.sh  to use an existing root instead of building one
#   into bench/work/ext4/root.
# Needs: mmdebstrap, e2fsprogs, hyperfine, python3 (apt-get install them).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-5}
[ "$runs" -ge 3 ] || { echo "RUNS must be at least 3" >&2; exit 2; }
work=$PWD/bench/work/ext4
mkdir -p "$work"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p kiln-formats --example ext4
kiln=$CARGO_TARGET_DIR/release/examples/ext4

root=${ROOT:-$work/root}
minbase_root "$root"
du -sh "$root"
out=$work/out
mkdir -p "$out"

# The size kiln picks; mkfs.ext4 gets the same.
"$kiln" "$root" "$out/kiln.ext4"
size=$(stat -c %s "$out/kiln.ext4")
echo "image size: $size bytes ($((size >> 20)) MiB)"
# mke2fs reads a bare number as KiB, or as blocks with -b: say KiB.
kib=$((size >> 10))k

# Both read the same files: have them in the page cache first.
find "$root" -type f -print0 | xargs -0 cat >/dev/null

# hyperfine runs one command's runs back to back; to alternate, each
# round is its own hyperfine call with one run of each command, and the
# medians are taken over the rounds.
# Each command's own prepare removes its previous image (untimed).
clean() { echo "rm -f $out/$1; sync"; }
rm -f "$work"/round.*.json
for i in $(seq 1 "$runs"); do
  hyperfine --runs 1 --style none --export-json "$work/round.$i.json" \
    --prepare "$(clean kiln.ext4)" --prepare "$(clean mk.ext4)" --prepare "$(clean mk4k.ext4)" \
    -n kiln "$kiln $root $out/kiln.ext4" \
    -n mkfs "mkfs.ext4 -q -F -d $root -E root_owner=0:0 $out/mk.ext4 $kib" \
    -n "mkfs -b 4096" "mkfs.ext4 -q -F -b 4096 -d $root -E root_owner=0:0 $out/mk4k.ext4 $kib" \
    >/dev/null
done
python3 - "$work/round" "$runs" <<'PY'
import json, statistics, sys
base, runs = sys.argv[1], int(sys.argv[2])
times = {}
for i in range(1, runs + 1):
    for r in json.load(open(f"{base}.{i}.json"))["results"]:
        times.setdefault(r["command"], []).append(r["times"][0])
meds = {c: statistics.median(t) for c, t in times.items()}
for c, t in times.items():
    print(f"{meds[c]:8.3f} s median  (runs: {', '.join(f'{x:.3f}' for x in t)})  {c}")
k = meds["kiln"]
for c in ("mkfs", "mkfs -b 4096"):
    print(f"kiln / {c}: {k / meds[c]:.3f}")
PY

for f in kiln.ext4 mk.ext4 mk4k.ext4; do
  blocks=$(dumpe2fs -h "$out/$f" 2>/dev/null | awk -F: '/^Block count/ {c=$2} /^Free blocks/ {f=$2} /^Block size/ {b=$2} END {printf "%d used of %d blocks of %d bytes", c-f, c, b}')
  echo "$f: $(stat -c %s "$out/$f") bytes, $(du -k "$out/$f" | cut -f1) KiB allocated, $blocks"
done
e2fsck -fn "$out/kiln.ext4" >/dev/null 2>&1 && echo "kiln.ext4: e2fsck -fn clean"
