#!/usr/bin/env bash
# `cargo deny check` (advisories, bans, licences, sources; deny.toml) without network access
# to the advisory database: CI reaches crates.io but not the database's git host, so the
# advisories come from the snapshot committed in supply-chain/advisory-db (refreshed with
# scripts/refresh-advisories.sh).
#
# cargo-deny reads a database from <db-path>/advisory-db-<hash of its URL>, a git checkout
# whose HEAD commit time is its age; this script lays the snapshot out that way in a
# temporary directory, dated with the snapshot's commit date (so `maximum-db-staleness` in
# deny.toml measures the snapshot's real age), and runs cargo-deny with --offline.
set -euo pipefail
cd "$(dirname "$0")/.."

# The version .ci/run installs; any later one that reads deny.toml works too.
if ! command -v cargo-deny >/dev/null; then
  cargo install --locked cargo-deny@0.20.2
fi

snapshot=supply-chain/advisory-db
date=$(sed -n 's/^date //p' "$snapshot/SNAPSHOT")
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# The directory name cargo-deny derives from the URL in deny.toml's db-urls (it logs it).
db="$root/advisory-db-3157b0e258782691"
mkdir -p "$db"
cp -r "$snapshot/crates" "$db/"
git -C "$db" init -q
git -C "$db" add crates
GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date" \
  git -C "$db" -c user.name=snapshot -c user.email=snapshot@localhost \
  commit -q -m "RustSec advisory database snapshot $(sed -n 's/^commit //p' "$snapshot/SNAPSHOT")"
touch -d "$date" "$db/.git/HEAD"

age_days=$(( ($(date +%s) - $(date -d "$date" +%s)) / 86400 ))
echo "advisory database snapshot of $date ($age_days days old)"
if [ "$age_days" -gt 90 ]; then
  echo "warning: the advisory snapshot is over 90 days old; refresh it (scripts/refresh-advisories.sh)" >&2
fi

export KITH_ADVISORY_DBS="$root"
echo "== cargo deny: the workspace"
# --offline needs every crate in Cargo.lock on disk, those of other platforms too (cargo
# metadata reads them all), which a build on this machine never downloads.
cargo fetch --locked >/dev/null
cargo deny --offline --locked check "$@"
# The fuzz targets are a workspace of their own (tests/fuzz); --offline needs their crates.
echo "== cargo deny: the fuzz workspace (tests/fuzz)"
cargo fetch --locked --manifest-path tests/fuzz/Cargo.toml >/dev/null
cargo deny --offline --locked --manifest-path tests/fuzz/Cargo.toml check "$@"
