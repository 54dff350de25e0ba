#!/usr/bin/env bash
# A backlog larger than one frame reaches an offline user, complete and once (issue #11).
# Three store peers (`kith-bootstrap run --store`), alice and bob (`kith run`), as a user runs
# them. Bob stops; alice sends him 40 texts of 40 KB (1.6 MB, more than one 1 MiB frame) and
# waits until every one shows ✓; bob comes back; the script checks that bob holds each text
# exactly once and that alice sees ✓✓ for all 40. Everything listens on 127.0.0.1 (ports
# chosen by the system); data lives in a temporary directory removed at the end.
# KITH_BACKLOG_N and KITH_BACKLOG_BYTES change the count and size; KITH_BIN_DIR=<dir> uses
# the kith and kith-bootstrap binaries there instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${KITH_BACKLOG_N:-40}"
SIZE="${KITH_BACKLOG_BYTES:-40000}"
if [ -n "${KITH_BIN_DIR:-}" ]; then
  BIN="$KITH_BIN_DIR"
else
  cargo build -q --release --bin kith --bin kith-bootstrap
  BIN="${CARGO_TARGET_DIR:-target}/release"
fi
K="$BIN/kith"; S="$BIN/kith-bootstrap"
DIR=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

wait_for() { # wait_for <seconds> <what> <command...>: retry a check until it passes
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then echo "timed out waiting for: $what" >&2; return 1; fi
    sleep 0.2
  done
}

for i in 1 2 3; do
  "$S" run --data-dir "$DIR/store$i" --listen /ip4/127.0.0.1/tcp/0 --store >"$DIR/store$i.addr" 2>"$DIR/store$i.log" &
  PIDS+=($!)
done
for i in 1 2 3; do wait_for 20 "store peer $i" test -s "$DIR/store$i.addr"; done
export KITH_BOOTSTRAP="$(head -1 "$DIR/store1.addr"),$(head -1 "$DIR/store2.addr"),$(head -1 "$DIR/store3.addr")"

start_node() { # start_node <name>: starts `kith run` on a free port; sets <NAME>_PID and <NAME>_API
  : >"$DIR/$1.out"
  "$K" --data-dir "$DIR/$1" --api 127.0.0.1:0 run --listen /ip4/127.0.0.1/tcp/0 >"$DIR/$1.out" 2>>"$DIR/$1.log" &
  PIDS+=($!); eval "${1^^}_PID=$!"
  wait_for 20 "$1's API" grep -q 'kith: api http://' "$DIR/$1.out"
  eval "${1^^}_API=$(grep -o 'kith: api http://[^ ]*' "$DIR/$1.out" | head -1 | sed 's|kith: api http://||')"
}
start_node alice
start_node bob
A=(--data-dir "$DIR/alice" --api "$ALICE_API")
ALICE=$(grep -o 'user [^ ]*' "$DIR/alice.out" | head -1 | cut -d' ' -f2)
BOB=$(grep -o 'user [^ ]*' "$DIR/bob.out" | head -1 | cut -d' ' -f2)
"$K" "${A[@]}" contacts add "$("$K" --data-dir "$DIR/bob" --api "$BOB_API" invite)" --name bob >/dev/null
"$K" --data-dir "$DIR/bob" --api "$BOB_API" contacts add "$("$K" "${A[@]}" invite)" --name alice >/dev/null

# statuses <api> <token> <peer>: one line per message of the conversation: "<status> <text prefix>"
statuses() {
  curl -sf -H "Authorization: Bearer $2" "http://$1/v1/conversations/$3?count=200" |
    python3 -c 'import json,sys; [print(m["status"], m["text"][:12]) for m in json.load(sys.stdin)["messages"]]'
}
TA=$("$K" --data-dir "$DIR/alice" token); TB=$("$K" --data-dir "$DIR/bob" token)

echo "== bob stops"
kill "$BOB_PID"; wait "$BOB_PID" 2>/dev/null || true
echo "== alice sends $N texts of $SIZE bytes while bob is offline"
PAD=$(head -c "$SIZE" /dev/zero | tr '\0' 'x')
for i in $(seq -w 1 "$N"); do
  curl -sf -H "Authorization: Bearer $TA" -H 'content-type: application/json' "http://$ALICE_API/v1/messages" \
    -d "{\"to\":\"$BOB\",\"text\":\"backlog-$i ${PAD:0:$((SIZE - 12))}\"}" >/dev/null
done
all_sent() { [ "$(statuses "$ALICE_API" "$TA" "$BOB" | grep -c '^sent ')" -eq "$N" ]; }
wait_for 60 "all $N messages sent (✓)" all_sent
echo "alice: $N × ✓"
echo "== bob comes back"
start_node bob
bob_has_all() { [ "$(statuses "$BOB_API" "$TB" "$ALICE" | grep -c 'backlog-')" -ge "$N" ]; }
wait_for 120 "bob holds $N messages" bob_has_all
got=$(statuses "$BOB_API" "$TB" "$ALICE" | grep -o 'backlog-[0-9]*' | sort)
distinct=$(echo "$got" | uniq | wc -l); total=$(echo "$got" | wc -l)
echo "bob: $total messages, $distinct distinct"
[ "$total" -eq "$N" ] && [ "$distinct" -eq "$N" ] || { echo "FAIL: expected $N once each"; exit 1; }
all_delivered() { [ "$(statuses "$ALICE_API" "$TA" "$BOB" | grep -c '^delivered ')" -eq "$N" ]; }
wait_for 60 "✓✓ for all $N on alice's side" all_delivered
echo "alice: $N × ✓✓"
echo "backlog demo: OK"
