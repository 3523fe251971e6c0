#!/usr/bin/env bash
# Generates a tree of 100 images over a 2 x 5 matrix: 1,000 variants.
# Image i (i > 0) builds on image (i - 1) / 3, so chains are up to 5 deep.
# Usage: bench/gen-plan-tree.sh DIR
set -euo pipefail
dir=${1:?usage: gen-plan-tree.sh DIR}
rm -rf "$dir"
mkdir -p "$dir"
cat > "$dir/kiln.toml" <<'TOML'
[[sources]]
uris = ["http://mirror.invalid/debian"]
suites = ["bookworm", "bookworm-updates"]
components = ["main"]

[defaults]
packages = ["ca-certificates"]
outputs = ["tar.zst"]
labels = { vendor = "bench" }

[dimensions.suite.bookworm]
[dimensions.suite.trixie]
packages = ["systemd-resolved"]

[dimensions.platform.qemu]
[dimensions.platform.aws]
packages = ["cloud-init"]
[dimensions.platform.azure]
packages = ["cloud-init", "walinuxagent"]
[dimensions.platform.gcp]
packages = ["cloud-init"]
when = { trixie = { packages = ["google-guest-agent"] } }
[dimensions.platform.metal]
kernel = true

[mandatory]
cleanup = { apt = true }
TOML
for i in $(seq 0 99); do
  img="$dir/images/group$((i % 10))/img$i"
  mkdir -p "$img/rootfs/etc/img$i"
  if [ "$i" -eq 0 ]; then from='debian:{suite}'; else from="img$(( (i - 1) / 3 ))"; fi
  cat > "$img/image.toml" <<TOML
description = "image $i for {suite} on {platform}"
from = "$from"
packages = ["pkg$i"]
run = ["setup.sh"]
env = { IMAGE_INDEX = "$i" }
TOML
  printf '#!/bin/sh\necho image %s > /etc/img%s/id\n' "$i" "$i" > "$img/setup.sh"
  chmod 755 "$img/setup.sh"
  for f in a b c; do head -c 4096 /dev/zero | tr '\0' "$f" > "$img/rootfs/etc/img$i/$f.conf"; done
done
