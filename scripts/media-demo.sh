#!/usr/bin/env bash
# A 100 MiB video to an offline user, on one machine, with real processes: one store peer,
# alice and bob. Bob is stopped; alice sends a playable WebM with `kith send --file` and her
# node uploads it to the store peer; bob comes back, his node fetches and verifies every
# chunk, `kith media get` saves it and its sha256sum must equal the original's; then headless
# Chromium plays it from bob's `GET /v1/media/{hash}`, and curl shows a Range request
# answered 206. Prints how many chunks the store peer served and each process's peak RSS.
#
# Alice waits until the message is deposited (✓) and the video is available on the store
# peers, then stops too, so bob gets both from the store peers alone. KITH_DEMO_STORES=3 runs
# three store peers instead of one (each message and video on all three, W = 2).
#
# Needs: ffmpeg and chromium (installed with apt-get when missing), Node.js 20, curl, jq.
# KITH_DEMO_VIDEO=<file.webm> uses an existing video instead of making one (≥ 100 MiB).
# Everything listens on 127.0.0.1; data lives in a temporary directory removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MIB=$((1024 * 1024))
WANT_BYTES=$((100 * MIB))

need_apt() { # need_apt <command> <package>: install the package when the command is missing
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "== installing $2 (apt-get)"
  apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }
}
need_apt ffmpeg ffmpeg
need_apt chromium chromium
need_apt jq jq
command -v node >/dev/null || { echo "Node.js 20 is needed (apt-get install -y nodejs)" >&2; exit 1; }

echo "== building release binaries"
cargo build -q --release --bin kith --bin kith-bootstrap
BIN="${CARGO_TARGET_DIR:-target}/release"
K="$BIN/kith"; S="$BIN/kith-bootstrap"
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  if ((${#PIDS[@]})); then kill "${PIDS[@]}" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
STORES=${KITH_DEMO_STORES:-1}

wait_for() { # wait_for <seconds> <command...>: retry a check until it passes
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then echo "timed out waiting for: $*" >&2; return 1; fi
    sleep 0.2
  done
}

declare -A PEAK # peak RSS (VmHWM, KiB) per process name, kept across restarts
sample_peak() { # sample_peak <name> <pid>: remember the process's VmHWM if it is the largest
  local kib
  kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$2/status" 2>/dev/null || true)
  if [[ -n "$kib" ]] && ((kib > ${PEAK[$1]:-0})); then PEAK[$1]=$kib; fi
}

# ---- the video ---------------------------------------------------------------------------
VIDEO="$DIR/video.webm"
if [[ -n "${KITH_DEMO_VIDEO:-}" ]]; then
  cp "$KITH_DEMO_VIDEO" "$VIDEO"
else
  # VP8 at a constant 20 Mbit/s; the noise keeps the encoder from undershooting the rate.
  secs=45
  while :; do
    echo "== making a ${secs} s 1280x720 VP8 WebM with ffmpeg (about a minute or two)"
    ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc=size=1280x720:rate=30" -t "$secs" \
      -vf "noise=alls=40:allf=t" -c:v libvpx -deadline realtime -cpu-used 8 -threads 2 \
      -b:v 20M -minrate 20M -maxrate 20M -bufsize 20M -auto-alt-ref 0 -an "$VIDEO"
    size=$(stat -c %s "$VIDEO")
    ((size >= WANT_BYTES)) && break
    secs=$((secs * WANT_BYTES / size + 3))
  done
fi
SIZE=$(stat -c %s "$VIDEO")
((SIZE >= WANT_BYTES)) || { echo "the video has $SIZE bytes, fewer than 100 MiB" >&2; exit 1; }
SHA_IN=$(sha256sum "$VIDEO" | cut -d' ' -f1)
echo "video: $SIZE bytes ($((SIZE / MIB)) MiB), sha256 $SHA_IN"

# ---- the store peers, alice and bob ------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
STORE_PIDS=(); METRICS=(); BOOT=()
for i in $(seq 1 "$STORES"); do
  m=$(free_port)
  "$S" run --data-dir "$DIR/store$i" --listen /ip4/127.0.0.1/tcp/0 --store --metrics "127.0.0.1:$m" \
    >"$DIR/store$i.addr" 2>"$DIR/store$i.log" &
  PIDS+=($!); STORE_PIDS+=($!); METRICS+=("$m")
  wait_for 20 test -s "$DIR/store$i.addr"
  BOOT+=("$(head -1 "$DIR/store$i.addr")")
  echo "store peer $i: ${BOOT[-1]}"
done
export KITH_BOOTSTRAP="$(IFS=,; echo "${BOOT[*]}")"
sample_stores() { local p; for p in "${STORE_PIDS[@]}"; do sample_peak store "$p"; done; }
store_metric() { # store_metric <name>: the sum over the store peers
  local m total=0 v
  for m in "${METRICS[@]}"; do
    v=$(curl -sf "http://127.0.0.1:$m/metrics" | awk -v n="kith_$1" '$1 == n {print $2}')
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

start_node() { # start_node <name>: `kith run` on a free API port; sets <NAME>_PID and <NAME>_API
  : >"$DIR/$1.out"
  "$K" --data-dir "$DIR/$1" --api 127.0.0.1:0 run --listen /ip4/127.0.0.1/tcp/0 \
    >"$DIR/$1.out" 2>>"$DIR/$1.log" &
  local pid=$!
  PIDS+=("$pid")
  wait_for 20 grep -q '^kith: api ' "$DIR/$1.out"
  local api
  api=$(grep -m1 '^kith: api ' "$DIR/$1.out" | sed 's|^kith: api http://||')
  wait_for 20 "$K" --data-dir "$DIR/$1" --api "$api" invite
  eval "${1^^}_PID=$pid; ${1^^}_API=$api"
}
stop_node() { # stop_node <name>: remember its peak RSS, stop it (SIGTERM) and wait
  local pid_var="${1^^}_PID"
  sample_peak "$1" "${!pid_var}"
  kill "${!pid_var}"; wait "${!pid_var}" 2>/dev/null || true
}
k() { # k <name> <args...>: the CLI against that node
  local api_var="${1^^}_API" name=$1; shift
  "$K" --data-dir "$DIR/$name" --api "${!api_var}" "$@"
}
api() { # api <name> <path> [curl args...]: the node's REST API with its token
  local api_var="${1^^}_API" name=$1 path=$2; shift 2
  curl -sf -H "Authorization: Bearer $("$K" --data-dir "$DIR/$name" token)" "$@" "http://${!api_var}$path"
}
media_state() { # media_state <name> <peer>: the state of the newest media in the conversation
  api "$1" "/v1/conversations/$2?count=20" | jq -r '[.messages[] | select(.media)][0].media.state // "none"'
}

start_node alice
start_node bob
ALICE=$(grep -o 'user [^ ]*' "$DIR/alice.out" | head -1 | cut -d' ' -f2)
BOB=$(grep -o 'user [^ ]*' "$DIR/bob.out" | head -1 | cut -d' ' -f2)
k alice contacts add "$(k bob invite)" --name bob
k bob contacts add "$(k alice invite)" --name alice

echo "== bob stops"
stop_node bob

echo "== alice sends the video while bob is offline"
t0=$SECONDS
SENT=$(k alice send "$BOB" --file "$VIDEO" --caption "a 100 MiB video, sent while you were away")
echo "kith send: $SENT"
HASH=$(awk '{print $3}' <<<"$SENT")
[[ ${#HASH} == 64 ]] || { echo "no media hash in: $SENT" >&2; exit 1; }
until [[ $(media_state alice "$BOB") == available ]]; do
  sample_peak alice "$ALICE_PID"; sample_stores
  ((SECONDS - t0 < 600)) || { echo "alice's media never became available" >&2; exit 1; }
  sleep 0.5
done
echo "alice: media $HASH is available (the store peers hold it) after $((SECONDS - t0)) s"
echo "store peers hold $(store_metric blob_bytes) bytes of ciphertext (received $(store_metric blob_chunks_in_total) chunks)"
wait_for 120 sh -c "'$K' --data-dir '$DIR/alice' --api '$ALICE_API' history '$BOB' | grep -q '✓'"
k alice history "$BOB"
echo "== alice stops too: bob can only get the message and the video from the store peers"
stop_node alice

echo "== bob comes back"
t0=$SECONDS
start_node bob
until [[ $(media_state bob "$ALICE") == complete ]]; do
  sample_peak bob "$BOB_PID"; sample_stores
  ((SECONDS - t0 < 600)) || { echo "bob's media never completed (state $(media_state bob "$ALICE"))" >&2; exit 1; }
  sleep 0.5
done
echo "bob: media $HASH is complete after $((SECONDS - t0)) s"
CHUNKS=$(((SIZE + 65535) / 65536))
echo "the store peers served $(store_metric blob_chunks_out_total) of its $CHUNKS chunks to bob"
api bob "/v1/conversations/$ALICE?count=1" | jq -c '.messages[0] | {text, media}'

echo "== bob saves it with kith media get"
k bob media get "$HASH" -o "$DIR/out.webm"
SHA_OUT=$(sha256sum "$DIR/out.webm" | cut -d' ' -f1)
echo "sha256 sent:     $SHA_IN"
echo "sha256 received: $SHA_OUT"
[[ "$SHA_IN" == "$SHA_OUT" ]] || { echo "the received file differs from the original" >&2; exit 1; }

echo "== a Range request (what a <video> element sends)"
api bob "/v1/media/$HASH" -D "$DIR/range.headers" -o "$DIR/range.bin" -H 'Range: bytes=0-1023'
grep -iE '^(HTTP/|content-range|content-length|content-type|accept-ranges)' "$DIR/range.headers" | tr -d '\r'
grep -q '^HTTP/1.1 206' "$DIR/range.headers" || { echo "expected 206 Partial Content" >&2; exit 1; }
cmp -s "$DIR/range.bin" <(head -c 1024 "$VIDEO") || { echo "the range holds other bytes" >&2; exit 1; }
echo "range: the first 1024 bytes match"

echo "== headless Chromium plays it from bob's GET /v1/media/$HASH"
PW_DIR="$ROOT/tests/browser"
if [[ ! -d "$PW_DIR/node_modules/playwright-core" ]]; then
  PW_DIR="$DIR/pw"
  echo "(installing playwright-core into a temporary directory)"
  npm install --silent --prefix "$PW_DIR" playwright-core@1.65.1 >/dev/null
fi
KITH_PLAYWRIGHT_DIR="$PW_DIR" KITH_ORIGIN="http://$BOB_API" KITH_HASH="$HASH" \
  KITH_TOKEN="$("$K" --data-dir "$DIR/bob" token)" KITH_PROFILE="$DIR/chromium-profile" \
  node scripts/media-play.mjs &
PLAY_PID=$!
while kill -0 "$PLAY_PID" 2>/dev/null; do sample_peak bob "$BOB_PID"; sleep 0.2; done
wait "$PLAY_PID"

sample_peak bob "$BOB_PID"; sample_stores
echo "== peak RSS (VmHWM) during the run (store: the largest of the store peers)"
for name in alice bob store; do
  awk -v n="$name" -v k="${PEAK[$name]:-0}" 'BEGIN { printf "%-6s %6.1f MiB\n", n, k / 1024 }'
done
echo "media demo: OK ($((SIZE / MIB)) MiB video, sha256 equal, played in Chromium)"
