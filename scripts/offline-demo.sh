#!/usr/bin/env bash
# Offline delivery on one machine: three store peers, alice and bob. Bob is stopped, alice
# sends, one store peer is killed, bob comes back, reads; alice sees the blue ticks.
# Everything listens on 127.0.0.1; data lives in a temporary directory removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --bin kith --bin kith-bootstrap
BIN="${CARGO_TARGET_DIR:-target}/debug"
K="$BIN/kith"; S="$BIN/kith-bootstrap"
DIR=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

wait_for() { # wait_for <seconds> <command...>: retry a check until it passes
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then echo "timed out waiting for: $*" >&2; return 1; fi
    sleep 0.2
  done
}

# Three store peers; each prints its address on its first stdout line.
for i in 1 2 3; do
  "$S" run --data-dir "$DIR/store$i" --listen /ip4/127.0.0.1/tcp/0 --store >"$DIR/store$i.addr" 2>"$DIR/store$i.log" &
  PIDS+=($!); eval "STORE${i}_PID=$!"
done
for i in 1 2 3; do wait_for 20 test -s "$DIR/store$i.addr"; done
export KITH_BOOTSTRAP="$(head -1 "$DIR/store1.addr"),$(head -1 "$DIR/store2.addr"),$(head -1 "$DIR/store3.addr")"

start_node() { # start_node <name> <port>
  "$K" --data-dir "$DIR/$1" --api "127.0.0.1:$2" run --listen /ip4/127.0.0.1/tcp/0 >"$DIR/$1.out" 2>>"$DIR/$1.log" &
  PIDS+=($!); eval "${1^^}_PID=$!"
  wait_for 20 "$K" --data-dir "$DIR/$1" --api "127.0.0.1:$2" invite
}
start_node alice 7901
start_node bob 7902
A=(--data-dir "$DIR/alice" --api 127.0.0.1:7901)
B=(--data-dir "$DIR/bob" --api 127.0.0.1:7902)
ALICE=$(grep -o 'user [^ ]*' "$DIR/alice.out" | head -1 | cut -d' ' -f2)
BOB=$(grep -o 'user [^ ]*' "$DIR/bob.out" | head -1 | cut -d' ' -f2)
"$K" "${A[@]}" contacts add "$("$K" "${B[@]}" invite)" --name bob
"$K" "${B[@]}" contacts add "$("$K" "${A[@]}" invite)" --name alice

echo "== bob stops"
kill "$BOB_PID"; wait "$BOB_PID" 2>/dev/null || true
echo "== alice sends while bob is offline"
"$K" "${A[@]}" send "$BOB" "hello bob, you were offline"
wait_for 30 sh -c "'$K' --data-dir '$DIR/alice' --api 127.0.0.1:7901 history '$BOB' | grep -q '✓'"
"$K" "${A[@]}" history "$BOB"
echo "== store peer 1 is killed"
kill -9 "$STORE1_PID"
echo "== bob comes back and reads"
start_node bob 7902
wait_for 30 sh -c "'$K' --data-dir '$DIR/bob' --api 127.0.0.1:7902 history '$ALICE' | grep -q 'hello bob'"
"$K" "${B[@]}" history "$ALICE"
"$K" "${B[@]}" read "$ALICE"
wait_for 30 sh -c "'$K' --data-dir '$DIR/alice' --api 127.0.0.1:7901 history '$BOB' | grep -q 'read'"
echo "== alice's view"
"$K" "${A[@]}" history "$BOB"
echo "offline demo: OK"
