#!/usr/bin/env bash
# Fails when a dev-dependency turns on a feature of a crate the product also
# uses. Such a crate is built twice, once per feature set: `cargo test
# --release` right after `cargo run --release -- demo` then rebuilds it and
# everything above it (a feature of syn, say, rebuilds every proc-macro; one
# of url the AWS SDKs) instead of reusing the first command's build.
#
#   scripts/check-dev-features.sh
#
# It compiles nothing: it compares the features cargo resolves for each
# package with and without the dev-dependencies (`cargo tree`, host target,
# default features, as both README commands build). The fix is to name the
# feature in [dependencies] too, or to pick a dev-dependency that does not
# ask for it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# One "package|features" line per package and feature set (a crate built for
# both the target and the host can have two).
features() {
  cargo tree --locked -e "$1" -f '{p}|{f}' --prefix none | sed 's/ (\*)$//' | sort -u
}

product=$(features normal,build)
with_dev=$(features normal,build,dev)

# Packages of the product whose feature sets differ once the dev-dependencies
# are in (dev-only packages are not compared: they are built once, for tests).
differ=$(
  comm -13 <(echo "$product") <(echo "$with_dev") |
    awk -F'|' 'NR == FNR { shared[$1]; next } $1 in shared' <(echo "$product" | cut -d'|' -f1) -
)
if [[ -n "$differ" ]]; then
  echo "check-dev-features: the dev-dependencies change the features of crates the product builds:" >&2
  while IFS='|' read -r package dev_features; do
    echo "  $package: [$(grep -F "$package|" <<<"$product" | cut -d'|' -f2 | paste -sd';')] without, [$dev_features] with them" >&2
  done <<<"$differ"
  exit 1
fi
echo "check-dev-features: the dev-dependencies leave the product's $(wc -l <<<"$product") crate builds as they are"
