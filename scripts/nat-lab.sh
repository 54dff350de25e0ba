#!/usr/bin/env bash
# The NAT lab: real NATs in network namespaces, on one machine (needs root and iptables).
#
#   inet (198.18.0.0/24, a bridge): two bootstrap/store/relay peers on 198.18.0.1:4001/4002,
#     named boot.kith.test in every host's /etc/netns/<ns>/hosts
#   nat-a (198.18.0.2, MASQUERADE)              -> alice 10.0.1.2
#   nat-b (198.18.0.3, MASQUERADE)              -> bob   10.0.2.2
#   nat-c (198.18.0.4, MASQUERADE --random-fully: symmetric) -> carol 10.0.3.2
# Each NAT drops connections opened from outside (as a home router does) and keeps the
# source port when it can (plain MASQUERADE), so hole punching alice <-> bob can work; carol's
# NAT picks a random port per destination, so hole punching to her must fail and her
# messages go through the relay. Nothing outside the namespaces is ever contacted; the
# namespaces and /etc/netns entries are removed on exit.
#
#   scripts/nat-lab.sh [BIN_DIR]            build (unless BIN_DIR is given: it holds kith and
#                                           kith-bootstrap), set up, run the scenarios, tear down;
#                                           exits 1 if any expectation fails
#   scripts/nat-lab.sh BIN_DIR bench ROUNDS alice <-> bob hole punching ROUNDS times, each with
#                                           fresh NAT mappings (both nodes restarted on new
#                                           ports), beside alice -> carol through the relay;
#                                           prints one `round` line each and a `summary` line
#                                           (what `kith-bench nat` reads)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "nat-lab: needs root (network namespaces, iptables)" >&2; exit 2; fi
command -v iptables >/dev/null || { echo "nat-lab: needs iptables (apt-get install -y iptables)" >&2; exit 2; }
BIN=${1:-}
MODE=${2:-scenarios}
ROUNDS=${3:-10}
if [ -z "$BIN" ]; then
  cargo build -q --bin kith --bin kith-bootstrap
  BIN="${CARGO_TARGET_DIR:-target}/debug"
fi
K="$BIN/kith"; S="$BIN/kith-bootstrap"
P=kl  # namespace prefix
DIR=$(mktemp -d)
PIDS=()
NS=(inet nat-a nat-b nat-c alice bob carol)

teardown() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  for n in "${NS[@]}"; do ip netns del "$P-$n" 2>/dev/null || true; rm -rf "/etc/netns/$P-$n"; done
  if [ -n "${KEEP:-}" ]; then echo "nat-lab: logs kept in $DIR"; else rm -rf "$DIR"; fi
}
trap teardown EXIT

in_ns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

wait_for() { # wait_for <seconds> <command...>
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then echo "nat-lab: timed out waiting for: $*" >&2; return 1; fi
    sleep 0.2
  done
}

# ---- the network ----------------------------------------------------------------------
# A run that was killed leaves its namespaces: start from none.
for n in "${NS[@]}"; do ip netns del "$P-$n" 2>/dev/null || true; done
for n in "${NS[@]}"; do ip netns add "$P-$n"; in_ns "$n" ip link set lo up; done
in_ns inet ip link add br0 type bridge
in_ns inet ip addr add 198.18.0.1/24 dev br0
in_ns inet ip link set br0 up

# nat_host <letter> <host> <wan ip> <lan subnet number> <masquerade options...>
nat_host() {
  local x=$1 host=$2 wan=$3 lan=$4; shift 4
  local nat="nat-$x"
  ip link add "$P-w$x" type veth peer name "$P-w$x-br"
  ip link set "$P-w$x" netns "$P-$nat"; ip link set "$P-w$x-br" netns "$P-inet"
  in_ns inet ip link set "$P-w$x-br" master br0 up
  in_ns "$nat" ip addr add "$wan/24" dev "$P-w$x"; in_ns "$nat" ip link set "$P-w$x" up
  ip link add "$P-l$x" type veth peer name "$P-h$x"
  ip link set "$P-l$x" netns "$P-$nat"; ip link set "$P-h$x" netns "$P-$host"
  in_ns "$nat" ip addr add "10.0.$lan.1/24" dev "$P-l$x"; in_ns "$nat" ip link set "$P-l$x" up
  in_ns "$host" ip addr add "10.0.$lan.2/24" dev "$P-h$x"; in_ns "$host" ip link set "$P-h$x" up
  in_ns "$host" ip route add default via "10.0.$lan.1"
  in_ns "$nat" sysctl -qw net.ipv4.ip_forward=1
  in_ns "$nat" iptables -t nat -A POSTROUTING -o "$P-w$x" -j MASQUERADE "$@"
  # A home router: nothing opened from outside gets in; replies (and punched holes) do. What
  # matches no mapping is dropped silently, not refused (a refusal would end the other
  # side's hole-punching attempt before ours reached its NAT).
  in_ns "$nat" iptables -A FORWARD -i "$P-w$x" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  in_ns "$nat" iptables -A FORWARD -i "$P-w$x" -j DROP
  in_ns "$nat" iptables -A INPUT -i "$P-w$x" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  in_ns "$nat" iptables -A INPUT -i "$P-w$x" -j DROP
  mkdir -p "/etc/netns/$P-$host"
  printf '127.0.0.1 localhost\n198.18.0.1 boot.kith.test\n' >"/etc/netns/$P-$host/hosts"
}
nat_host a alice 198.18.0.2 1
nat_host b bob 198.18.0.3 2
nat_host c carol 198.18.0.4 3 --random-fully

# ---- the operators' peers ----------------------------------------------------------------
start_boot() { # start_boot <name> <port> [peer]
  local extra=()
  [ -n "${3:-}" ] && extra=(--peer "$3")
  rm -f "$DIR/$1.addr"
  # `ip netns exec` execs the binary: $! is the peer itself (kill -9 reaches it).
  ip netns exec "$P-inet" "$S" run --data-dir "$DIR/$1" --store --relay \
    --listen "/ip4/198.18.0.1/tcp/$2" --listen "/ip4/198.18.0.1/udp/$2/quic-v1" \
    "${extra[@]}" >"$DIR/$1.addr" 2>>"$DIR/$1.log" &
  PIDS+=($!); eval "${1^^}_PID=$!"
  wait_for 20 test -s "$DIR/$1.addr"
}
start_boot boot1 4001
start_boot boot2 4002 "$(head -1 "$DIR/boot1.addr")"
BOOT1_ID=$("$S" id --data-dir "$DIR/boot1")
BOOT2_ID=$("$S" id --data-dir "$DIR/boot2")
# By name: the hosts' /etc/netns hosts file resolves it.
B1="/dns4/boot.kith.test/udp/4001/quic-v1/p2p/$BOOT1_ID,/dns4/boot.kith.test/tcp/4001/p2p/$BOOT1_ID"
B2="/dns4/boot.kith.test/udp/4002/quic-v1/p2p/$BOOT2_ID,/dns4/boot.kith.test/tcp/4002/p2p/$BOOT2_ID"
export KITH_BOOTSTRAP="$B1,$B2"

# ---- the users ---------------------------------------------------------------------------
start_node() { # start_node <name>: starts it and waits for its (new) relay slot
  local slots
  slots=$(grep -c 'reserving a slot' "$DIR/$1.log" 2>/dev/null || true)
  # libp2p-dcutr logs each hole punching attempt at debug: the bench counts them.
  RUST_LOG="${RUST_LOG:-info},libp2p_dcutr=debug" \
    ip netns exec "$P-$1" "$K" --data-dir "$DIR/$1" --api 127.0.0.1:7878 run --no-upnp \
    >"$DIR/$1.out" 2>>"$DIR/$1.log" &
  PIDS+=($!); eval "${1^^}_PID=$!"
  wait_for 30 in_ns "$1" "$K" --data-dir "$DIR/$1" --api 127.0.0.1:7878 invite
  wait_for 30 sh -c "[ \$(grep -c 'reserving a slot' '$DIR/$1.log') -gt ${slots:-0} ]"
}
stop_node() { local pid="${1^^}_PID"; kill "${!pid}"; wait "${!pid}" 2>/dev/null || true; }
kc() { local n=$1; shift; in_ns "$n" "$K" --data-dir "$DIR/$n" --api 127.0.0.1:7878 "$@"; }
api() { # api <name> <path>: GET with the node's token
  local n=$1 token; token=$(kc "$n" token)
  in_ns "$n" curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:7878$2"
}
route_of() { api "$1" "/v1/presence/$2" | sed -n 's/.*"route":"\([a-z]*\)".*/\1/p'; }
user_of() { grep -o 'user [^ ]*' "$DIR/$1.out" | head -1 | cut -d' ' -f2; }

for n in alice bob carol; do start_node "$n"; done
ALICE=$(user_of alice); BOB=$(user_of bob); CAROL=$(user_of carol)
introduce() {
  kc "$1" contacts add "$(kc "$2" invite)" --name "$2" >/dev/null
  kc "$2" contacts add "$(kc "$1" invite)" --name "$1" >/dev/null
}
introduce alice bob
introduce alice carol

delivered() { kc "$1" history "$2" | grep -q "$3.*✓✓"; }
route_is() { [ "$(route_of "$1" "$2")" = "$3" ]; }
FAILED=0
expect() { # expect <what> <command...>: prints ok/FAILED
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; FAILED=1; fi
}
now_ms() { date +%s%3N; }

if [ "$MODE" = bench ]; then
  direct=0; ms_total=0; relayed_ms_total=0; attempts_total=0
  # One hole punching attempt: the side that sends DCUtR's CONNECT dials "as listener" (the
  # other answers "as dialer"), once per attempt, up to 3 per upgrade. Only alice <-> bob's
  # count (alice's attempts towards carol, behind her symmetric NAT, fail by design).
  attempts_logged() {
    cat "$DIR/alice.log" "$DIR/bob.log" 2>/dev/null \
      | grep -E "Attempting to hole-punch as listener target=($ALICE|$BOB)" -c || true
  }
  for r in $(seq 1 "$ROUNDS"); do
    # Fresh NAT mappings: both restart on new ports (port 0) and take new relay slots.
    stop_node alice; stop_node bob
    start_node alice; start_node bob
    a0=$(attempts_logged)
    t0=$(now_ms)
    kc alice send "$BOB" "round $r" >/dev/null
    if wait_for 30 route_is alice "$BOB" direct; then
      t=$(( $(now_ms) - t0 )); direct=$((direct + 1)); ms_total=$((ms_total + t)); got="direct after ${t} ms"
    else
      got="not direct ($(route_of alice "$BOB"))"
    fi
    attempts=$(( $(attempts_logged) - a0 )); attempts_total=$((attempts_total + attempts))
    got="$got, $attempts hole punching attempt(s)"
    t1=$(now_ms)
    kc alice send "$CAROL" "round $r" >/dev/null
    wait_for 60 delivered alice "$CAROL" "round $r"
    rt=$(( $(now_ms) - t1 )); relayed_ms_total=$((relayed_ms_total + rt))
    echo "round $r: alice <-> bob $got; alice -> carol delivered (relayed) in ${rt} ms"
  done
  echo "summary: rounds=$ROUNDS direct=$direct attempts=$attempts_total mean_ms_to_direct=$(( direct > 0 ? ms_total / direct : 0 )) mean_ms_relayed_delivered=$(( relayed_ms_total / ROUNDS ))"
  exit 0
fi

echo "== alice <-> bob (both behind port-preserving NATs)"
t0=$(now_ms)
kc alice send "$BOB" "hello bob, through NAT" >/dev/null
expect "alice -> bob delivered" wait_for 60 delivered alice "$BOB" "hello bob"
expect "alice <-> bob direct by hole punching ($(( $(now_ms) - t0 )) ms after the first send)" \
  wait_for 30 route_is alice "$BOB" direct
kc bob send "$ALICE" "hello alice" >/dev/null
expect "bob -> alice delivered" wait_for 60 delivered bob "$ALICE" "hello alice"

echo "== alice <-> carol (carol behind a symmetric NAT)"
kc alice send "$CAROL" "hello carol" >/dev/null
expect "alice -> carol delivered" wait_for 60 delivered alice "$CAROL" "hello carol"
kc carol send "$ALICE" "hello alice, from carol" >/dev/null
expect "carol -> alice delivered" wait_for 60 delivered carol "$ALICE" "hello alice, from carol"
expect "alice <-> carol relayed, never claimed direct" route_is alice "$CAROL" relayed

echo "== a relay is killed in the middle of alice's messages to carol"
for i in $(seq 1 10); do
  kc alice send "$CAROL" "burst $i" >/dev/null
  if [ "$i" = 5 ]; then kill -9 "$BOOT1_PID"; wait "$BOOT1_PID" 2>/dev/null || true; fi
done
all_delivered() { [ "$(kc alice history "$CAROL" | grep -c 'burst .*✓✓')" = 10 ]; }
expect "all 10 delivered while relay 1 is down" wait_for 90 all_delivered
once() { [ "$(kc carol history "$ALICE" | grep -c 'burst')" = 10 ]; }
expect "carol has each exactly once" once
start_boot boot1 4001 "$(head -1 "$DIR/boot2.addr")"
kc alice send "$CAROL" "after the relay came back" >/dev/null
expect "delivered after relay 1 is back" wait_for 60 delivered alice "$CAROL" "after the relay came back"
expect "alice <-> carol still relayed" wait_for 30 route_is alice "$CAROL" relayed
exit "$FAILED"
