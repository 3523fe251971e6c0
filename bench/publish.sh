#!/usr/bin/env bash
# Benchmark of `kiln publish` against `skopeo copy`, to a docker-registry
# (distribution 2.8) on loopback that the script starts and stops.
#
# The tree (bench/work/publish/tree, built once): `base`, bookworm minbase
# as an OCI image, and `vm` on it with a kernel, as a qcow2 disk (~300 MB).
# Each round starts from an empty registry and, alternating which goes
# first:
#   1. first push of the OCI image: `kiln publish --only base` vs
#      `skopeo copy oci:LAYOUT docker://…` of the same layout;
#   2. first push of the qcow2: `kiln publish --only vm` vs `skopeo copy`
#      of an OCI layout holding the same file as its one layer (the same
#      bytes, which skopeo can only send as an image);
#   3. unchanged re-push of both: `kiln publish` (nothing changed) vs
#      `skopeo copy` again (it HEADs every blob).
# Medians over N rounds (default 5).
#
# Usage (as root, with docker-registry and skopeo): bench/publish.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-5}
cargo build --release -q -p kiln
kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
work=$PWD/bench/work/publish
tree=$work/tree
mkdir -p "$tree/base" "$tree/vm"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$tree/kiln.toml" <<EOF
[output]
dir = "out"
[defaults.publish]
registry = "127.0.0.1:$port/bench"
EOF
printf 'from = "debian:bookworm"\noutputs = ["oci"]\n' > "$tree/base/image.toml"
printf 'from = "base"\nkernel = true\n"outputs!" = [{ format = "qcow2", firmware = "bios", size = "2G" }]\n' > "$tree/vm/image.toml"
"$kiln" build "$tree" --cache-dir "$work/cache" --progress plain >/dev/null 2>&1
layout=$(ls -d "$tree"/out/base/base-r*.oci | tail -1)
qcow2=$(ls "$tree"/out/vm/vm-r*.qcow2 | tail -1)
echo "OCI image: $(du -sh "$layout" | cut -f1); qcow2: $(du -h "$qcow2" | cut -f1)"

# An OCI layout whose one layer is the qcow2, for skopeo.
disk_layout=$work/disk-layout
rm -rf "$disk_layout"
mkdir -p "$disk_layout/blobs/sha256"
sha=$(sha256sum "$qcow2" | cut -d' ' -f1)
size=$(stat -c %s "$qcow2")
cp "$qcow2" "$disk_layout/blobs/sha256/$sha"
config='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:'$sha'"]}}'
csha=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
printf '%s' "$config" > "$disk_layout/blobs/sha256/$csha"
manifest='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'$csha'","size":'${#config}'},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:'$sha'","size":'$size'}]}'
msha=$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)
printf '%s' "$manifest" > "$disk_layout/blobs/sha256/$msha"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' "$msha" "${#manifest}" > "$disk_layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$disk_layout/oci-layout"

pid=
start_registry() {
  rm -rf "$work/registry"
  mkdir -p "$work/registry"
  cat > "$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
  docker-registry serve "$work/registry/config.yml" >/dev/null 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do sleep 0.1; done
}
stop_registry() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; pid=; }
trap stop_registry EXIT

publish() {
  local now=$1
  shift
  KILN_NOW=$now "$kiln" publish "$tree" --cache-dir "$work/cache" --plain-http --progress plain --only "$@"
}
copy() { skopeo copy -q --dest-tls-verify=false "oci:$1" "docker://127.0.0.1:$port/skopeo/$2:latest"; }
copy_both() { copy "$layout" base && copy "$disk_layout" vm; }

k_img=() s_img=() k_disk=() s_disk=() k_again=() s_again=()
for i in $(seq "$rounds"); do
  start_registry
  if [ $((i % 2)) = 1 ]; then
    k_img+=("$(timed publish 2026-12-07T10:00:00Z base)")
    s_img+=("$(timed copy "$layout" base)")
    k_disk+=("$(timed publish 2026-12-07T10:00:00Z vm)")
    s_disk+=("$(timed copy "$disk_layout" vm)")
  else
    s_img+=("$(timed copy "$layout" base)")
    k_img+=("$(timed publish 2026-12-07T10:00:00Z base)")
    s_disk+=("$(timed copy "$disk_layout" vm)")
    k_disk+=("$(timed publish 2026-12-07T10:00:00Z vm)")
  fi
  if [ $((i % 2)) = 1 ]; then
    k_again+=("$(timed publish 2026-12-07T11:00:00Z base vm)")
    s_again+=("$(timed copy_both)")
  else
    s_again+=("$(timed copy_both)")
    k_again+=("$(timed publish 2026-12-07T11:00:00Z base vm)")
  fi
  stop_registry
done
report() {
  local k s
  k=$(median "${!2}"); s=$(median "${!3}")
  printf '%-34s kiln %6.2fs   skopeo %6.2fs   ratio %s\n' "$1" "$k" "$s" "$(ratio "$k" "$s")"
}
echo "medians of $rounds rounds:"
report "first push, OCI image" 'k_img[@]' 's_img[@]'
report "first push, 300 MB qcow2" 'k_disk[@]' 's_disk[@]'
report "unchanged re-push, both" 'k_again[@]' 's_again[@]'
