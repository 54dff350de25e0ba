#!/usr/bin/env bash
# Checks the layout rules of ARCHITECTURE.md that a compiler does not:
#  - kith-bootstrap never links the desktop node or its UI/HTTP-client crates;
#  - kith-protocol stays pure (no runtime, no storage, no swarm);
#  - no import circle between the modules of any crate (scripts/module-cycles.py);
#  - no source file over 600 lines outside tests.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0

echo "-- cargo tree -p kith-bootstrap -e normal: no kith-node, axum, image, qrcode, reqwest"
if cargo tree -p kith-bootstrap -e normal --prefix none | grep -E '^(kith-node|axum|image|qrcode|reqwest) '; then
  echo "kith-bootstrap depends on a crate it must not" >&2
  fail=1
fi

echo "-- cargo tree -p kith-protocol -e normal: no tokio, sled, libp2p-swarm"
if cargo tree -p kith-protocol -e normal --prefix none | grep -E '^(tokio|sled|libp2p-swarm) '; then
  echo "kith-protocol is no longer pure" >&2
  fail=1
fi

echo "-- import circles"
python3 scripts/module-cycles.py || fail=1

echo "-- source files over 600 lines (tests excepted)"
long=$(git ls-files '*.rs' \
  | grep -Ev '/tests/|^tests/tests/|(^|/)tests?\.rs$|_tests\.rs$' \
  | xargs wc -l | awk '$2 != "total" && $1 > 600 { print }')
if [ -n "$long" ]; then
  echo "$long"
  echo "files over 600 lines" >&2
  fail=1
fi

exit "$fail"
