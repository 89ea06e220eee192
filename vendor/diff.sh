#!/usr/bin/env bash
# Writes vendor/CRATE.patch for each vendored Pingora crate: our changes against the same
# release as published on crates.io (downloaded into a temporary directory), so that they can
# be read as one diff, sent upstream, or applied to the next release:
#
#   vendor/diff.sh                                   # after changing vendor/CRATE/src
#   cd NEW-RELEASE-SOURCE && patch -p1 < vendor/pingora-core.patch
#
# Only src/ is compared: Cargo.toml differs by the [[example]]/[[bench]] entries removed
# (their files are not vendored).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for crate in pingora-core pingora-pool pingora-proxy; do
  version=$(awk -F'"' '/^version = / { print $2; exit }' "$crate/Cargo.toml")
  curl -fsSL "https://static.crates.io/crates/$crate/$crate-$version.crate" | tar -xz -C "$tmp"
  # diff exits 1 when the trees differ, which is the point here.
  (cd "$tmp" && ln -s "$OLDPWD/$crate" "vendored-$crate" &&
    diff -ruN "$crate-$version/src" "vendored-$crate/src" | sed -E "s#^(---|\+\+\+) ([^/]+)/src#\1 a/src#; s#^(\+\+\+) a/#\1 b/#; s#^((---|\+\+\+) [^\t]+)\t.*#\1#") \
    > "$crate.patch" || true
  echo "$crate.patch: $(grep -c '^@@' "$crate.patch") hunks against $crate $version"
done
