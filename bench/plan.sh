#!/usr/bin/env bash
# Benchmark: `kiln plan` over a generated tree of 1,000 variants.
# Usage: bench/plan.sh   (from the repository root; needs hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p kiln
work=bench/work
bench/gen-plan-tree.sh "$work/plan-tree"
n=$(./target/release/kiln plan "$work/plan-tree" --json | grep -c '"name"')
echo "variants: $n"
hyperfine --warmup 3 --runs 30 -N \
  "./target/release/kiln plan $work/plan-tree --json" \
  "./target/release/kiln plan $work/plan-tree"
