#!/usr/bin/env bash
# Fuzzes Kith's decoders with AFL++ (cargo-afl, stable toolchain); docs/security.md "Fuzzing"
# records what a run found. The targets are in tests/fuzz (a workspace of its own).
#
#   scripts/fuzz.sh build                 install cargo-afl if missing; build the targets
#   scripts/fuzz.sh seeds                 write seed inputs to $RUNS/seeds/<target>
#   scripts/fuzz.sh run "S1 S2.." [T...]  fuzz each target (default: all) until it has used S1
#                                         CPU seconds, then each up to S2, ...; $PARALLEL at a
#                                         time, at nice 19 ("target seconds" lines appended to
#                                         $RUNS/queue meanwhile are run too)
#   scripts/fuzz.sh report                CPU time, executions, corpus size, crashes, hangs
#   scripts/fuzz.sh cmin [T...]           minimise each queue into tests/fuzz/corpus/<target>
#   scripts/fuzz.sh replay                the corpus replay test (no fuzz engine needed)
#
# Environment: RUNS (default /tmp/kith-fuzz-runs), PARALLEL (default 2), FEATURES (default
# "node": also the invite and stored-record targets, which build libp2p instrumented),
# CARGO_TARGET_DIR (default $HOME/.cache/kith-fuzz-target).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
RUNS=${RUNS:-/tmp/kith-fuzz-runs}
PARALLEL=${PARALLEL:-2}
FEATURES=${FEATURES-node}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kith-fuzz-target}
bin="$CARGO_TARGET_DIR/release/kith-fuzz"
# AFL++ on a shared machine: no CPU pinning, no core_pattern or governor demands, no UI.
export AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_NO_UI=1 AFL_QUIET=1

targets() {
  if [ $# -gt 0 ]; then printf '%s\n' "$@"; else "$bin" list; fi
}

# A process and all its descendants.
tree() {
  local p
  echo "$1"
  for p in $(pgrep -P "$1" || true); do tree "$p"; done
}

# CPU seconds used by a process and all its descendants, reaped ones included
# (utime + stime + cutime + cstime, fields 14-17 of /proc/<pid>/stat).
cpu_seconds() {
  local total=0 p
  for p in $(tree "$1"); do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 + $14 + $15 }')))
  done
  echo $((total / $(getconf CLK_TCK)))
}

build() {
  command -v cargo-afl >/dev/null || cargo install --locked cargo-afl
  (cd tests/fuzz && cargo afl build --release --locked ${FEATURES:+--features "$FEATURES"})
}

seeds() {
  rm -rf "$RUNS/seeds"
  "$CARGO_TARGET_DIR/release/kith-fuzz-seeds" "$RUNS/seeds"
}

# Fuzzes one target until it has used $2 CPU seconds, then stops AFL++ cleanly. A target run
# before resumes from its queue; a target with a committed corpus also starts from that.
fuzz_one() {
  local t=$1 budget=$2
  local out="$RUNS/$t" input="$RUNS/input-$t"
  mkdir -p "$out" "$input"
  cp -n "$RUNS/seeds/$t"/* "$input/" 2>/dev/null || true
  cp -n "$root/tests/fuzz/corpus/$t"/* "$input/" 2>/dev/null || true
  local spent=0
  [ -f "$out/cpu_seconds" ] && spent=$(cat "$out/cpu_seconds")
  [ "$spent" -lt "$budget" ] || return 0
  local from="$input"
  [ -d "$out/default/queue" ] && from=-
  echo "$(date -u +%T) $t: start (${spent}s spent, budget ${budget}s)"
  nice -n 19 cargo afl fuzz -i "$from" -o "$out" -t 2000 -- "$bin" "$t" >>"$out/afl.log" 2>&1 &
  local pid=$! used=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    used=$(cpu_seconds "$pid")
    echo $((spent + used)) >"$out/cpu_seconds"
    # Without a UI AFL++ logs a line per test case: keep the log's tail only.
    [ "$(stat -c %s "$out/afl.log")" -lt 8000000 ] || : >"$out/afl.log"
    [ $((spent + used)) -ge "$budget" ] && break
  done
  # Stop afl-fuzz itself (cargo-afl's child): it ends its target and writes its final stats.
  local afl
  for afl in $(pgrep -P "$pid" || true); do kill -INT "$afl" 2>/dev/null || true; done
  wait "$pid" || true
  echo "$(date -u +%T) $t: stop ($(cat "$out/cpu_seconds")s)"
}

# Fuzzes the entries of $RUNS/queue ("target [cpu-seconds]" lines, first line first),
# $PARALLEL at a time; entries appended while this runs are fuzzed too. BUDGETS is one or more
# CPU-second totals: "300 600 900" queues every target up to 300 s, then each up to 600 s and
# so on, so every target gets a share even if the run is cut short.
run() {
  local budgets=$1
  shift
  mkdir -p "$RUNS"
  [ -d "$RUNS/seeds" ] || seeds
  local b t
  for b in $budgets; do
    for t in $(targets "$@"); do echo "$t $b"; done >>"$RUNS/queue"
  done
  local running=0 entry
  while [ -s "$RUNS/queue" ] || [ "$running" -gt 0 ]; do
    if [ "$running" -ge "$PARALLEL" ] || [ ! -s "$RUNS/queue" ]; then
      wait -n || true
      running=$((running - 1))
      continue
    fi
    entry=$(head -n 1 "$RUNS/queue")
    sed -i '1d' "$RUNS/queue"
    # shellcheck disable=SC2086 # "target budget"
    set -- $entry
    fuzz_one "$1" "${2:-${budgets##* }}" &
    running=$((running + 1))
  done
  report
}

report() {
  printf '%-12s %8s %12s %8s %8s %6s\n' target cpu_min execs corpus crashes hangs
  for d in "$RUNS"/*/default; do
    [ -f "$d/fuzzer_stats" ] || continue
    local t
    t=$(basename "$(dirname "$d")")
    local stat
    stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$d/fuzzer_stats"; }
    printf '%-12s %8s %12s %8s %8s %6s\n' "$t" \
      "$(awk '{ printf "%.1f", $1 / 60 }' "$RUNS/$t/cpu_seconds")" \
      "$(stat execs_done)" "$(stat corpus_count)" "$(stat saved_crashes)" "$(stat saved_hangs)"
  done
}

# Where cargo-afl keeps the AFL++ it built for this toolchain.
afl_bin() {
  ls -d "$HOME"/.local/share/afl.rs/rustc-"$(rustc -V | cut -d' ' -f2)"-*/afl.rs-*/afl/bin | tail -n 1
}

cmin() {
  for t in $(targets "$@"); do
    local queue="$RUNS/$t/default/queue" dest="tests/fuzz/corpus/$t"
    [ -d "$queue" ] || continue
    rm -rf "$dest.new"
    # The shell afl-cmin: AFL++ 4.40c's Python one found no tuples with this target.
    "$(afl_bin)/afl-cmin.bash" -i "$queue" -o "$dest.new" -t 5000 -- "$bin" "$t" >/dev/null
    # Named regression inputs (hang-*, crash-*: what once hung or crashed) are kept.
    mkdir -p "$dest.keep"
    find "$dest" -maxdepth 1 \( -name 'hang-*' -o -name 'crash-*' \) -exec mv {} "$dest.keep/" \; 2>/dev/null || true
    rm -rf "$dest"
    mv "$dest.keep" "$dest"
    # Names by content, so re-running cmin on the same corpus changes nothing in git.
    for f in "$dest.new"/*; do
      cp "$f" "$dest/$(sha256sum "$f" | cut -c1-16)"
    done
    rm -rf "$dest.new"
    echo "$t: $(ls "$dest" | wc -l) inputs"
  done
}

case "${1:-}" in
  build) build ;;
  seeds) seeds ;;
  run) shift; run "$@" ;;
  report) report ;;
  cmin) shift; cmin "$@" ;;
  replay) cargo test -p kith-tests --test fuzz_corpora --locked ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
