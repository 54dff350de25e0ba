#!/usr/bin/env bash
# Refreshes supply-chain/advisory-db: the RustSec advisories for the crates in our lock files,
# which `cargo deny check` (scripts/deny.sh) reads offline — CI reaches crates.io but not the
# advisory database's git host.
#
#   scripts/refresh-advisories.sh GIT_DIR_OR_CLONE_OF_RUSTSEC_ADVISORY_DB
#
# Copies crates/<name>/ of that clone's HEAD for every package named in Cargo.lock and
# tests/fuzz/Cargo.lock, and records its commit and date in supply-chain/advisory-db/SNAPSHOT.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: $0 GIT_DIR_OR_CLONE_OF_RUSTSEC_ADVISORY_DB}
git_src=(git -C "$src")
"${git_src[@]}" rev-parse --verify -q HEAD:crates >/dev/null || {
  echo "$src has no crates/ at HEAD: not a clone of the RustSec advisory database" >&2
  exit 1
}
out=supply-chain/advisory-db
rm -rf "$out/crates"
mkdir -p "$out/crates"
names=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.lock tests/fuzz/Cargo.lock | sort -u)
copied=0
for name in $names; do
  if "${git_src[@]}" rev-parse --verify -q "HEAD:crates/$name" >/dev/null; then
    "${git_src[@]}" archive HEAD "crates/$name" | tar -x -C "$out"
    copied=$((copied + 1))
  fi
done
{
  echo "commit $("${git_src[@]}" rev-parse HEAD)"
  echo "date $("${git_src[@]}" show -s --format=%cI HEAD)"
} >"$out/SNAPSHOT"
echo "$copied crates with advisories, $(find "$out/crates" -name '*.md' | wc -l) advisories; $(cat "$out/SNAPSHOT" | tr '\n' ' ')"
