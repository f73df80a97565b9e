#!/usr/bin/env bash
# Benchmark: `nodus watch` latency, median over N writes (default 10):
#   (a) write → restart begins (the engine's `kill` event of the container), goal ≤ debounce + 100 ms;
#   (b) write → file readable in the container for `sync`, goal ≤ debounce + 150 ms.
# Against the raw docker equivalent in the same run: `docker restart` (command → kill event) and
# `docker cp` (command → file readable), which is what watch adds its debounce to.
#
#   scripts/bench-watch.sh [N]                      (debounce 500ms)
#   NODUS_BIN=target/debug/nodus DEBOUNCE_MS=200 scripts/bench-watch.sh 5
#
# Times: host nanoseconds and engine event TimeNano for (a); /proc/uptime (shared by host and
# containers, 10 ms resolution) for (b). Cleans up only its own project's resources.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-10}
DEBOUNCE_MS=${DEBOUNCE_MS:-500}
IMAGE=${NODUS_BENCH_IMAGE:-nodus/redis-standin:7}
PROJECT="nodus-bench-watch-$$"

log() { echo "bench-watch: $*" >&2; }

if [ -n "${NODUS_BIN:-}" ]; then
  NODUS=$NODUS_BIN
else
  cargo build --release --locked >&2
  NODUS="$ROOT/target/release/nodus"
fi
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  scripts/build-images.sh >&2
fi

WORK=$(mktemp -d)
mkdir -p "$WORK/conf" "$WORK/static"
LOOP='["sh", "-c", "trap '"'"'exit 0'"'"' TERM INT; while true; do sleep 1; done"]'
cat >"$WORK/stack.yaml" <<YAML
services:
  app:
    image: $IMAGE
    entrypoint: $LOOP
  web:
    image: $IMAGE
    entrypoint: $LOOP
x-nodus:
  settle: 0s
  services:
    app: { kind: other, stateful: false }
    web: { kind: other, stateful: false }
  watch:
    - paths: [conf]
      services: [app]
      action: restart
    - paths: [static]
      services: [web]
      action: sync
      target: /srv/static
YAML

WATCH_PID=""
EVENTS_PID=""
cleanup() {
  [ -n "$WATCH_PID" ] && kill -INT "$WATCH_PID" 2>/dev/null && wait "$WATCH_PID" 2>/dev/null || true
  [ -n "$EVENTS_PID" ] && kill "$EVENTS_PID" 2>/dev/null || true
  for id in $(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"); do docker rm -f -v "$id" >/dev/null; done
  for n in $(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT"); do docker network rm "$n" >/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

now_ns() { date +%s%N; }
uptime_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

cd "$WORK"
"$NODUS" -f stack.yaml -p "$PROJECT" watch --json --verify-every off --debounce "${DEBOUNCE_MS}ms" >"$WORK/events.ndjson" 2>"$WORK/watch.err" &
WATCH_PID=$!
for _ in $(seq 1 600); do grep -q '"event":"watching"' "$WORK/events.ndjson" 2>/dev/null && break; sleep 0.1; done
grep -q '"event":"watching"' "$WORK/events.ndjson" || { cat "$WORK/watch.err" >&2; exit 1; }
APP="$PROJECT-app-1"
WEB="$PROJECT-web-1"

docker events --filter "container=$APP" --filter event=kill --format '{{.TimeNano}}' >"$WORK/kills" &
EVENTS_PID=$!
sleep 1

changes() { grep -c '"event":"change"' "$WORK/events.ndjson" || true; }
kills() { wc -l <"$WORK/kills"; }
wait_kills() { # $1 = count to reach
  for _ in $(seq 1 6000); do [ "$(kills)" -ge "$1" ] && return 0; sleep 0.005; done
  log "no kill event"; exit 1
}

log "(a) write → restart begins, debounce ${DEBOUNCE_MS} ms, $N writes"
A=()
for i in $(seq 1 "$N"); do
  before=$(kills); done_before=$(changes)
  t0=$(now_ns)
  echo "$i" >"$WORK/conf/app.conf"
  wait_kills $((before + 1))
  t1=$(sed -n "$((before + 1))p" "$WORK/kills")
  A+=($(((t1 - t0) / 1000000)))
  # The restart finishes before the next write.
  for _ in $(seq 1 3000); do [ "$(changes)" -gt "$done_before" ] && break; sleep 0.02; done
done
log "(a) raw: docker restart → kill event"
RA=()
for i in $(seq 1 "$N"); do
  before=$(kills)
  t0=$(now_ns)
  docker restart -t 10 "$APP" >/dev/null &
  restart=$!
  wait_kills $((before + 1))
  t1=$(sed -n "$((before + 1))p" "$WORK/kills")
  RA+=($(((t1 - t0) / 1000000)))
  wait "$restart"
done

log "(b) write → file readable in the container (sync), $N writes"
B=()
for i in $(seq 1 "$N"); do
  docker exec "$WEB" sh -c "while [ ! -e /srv/static/f$i ]; do usleep 2000; done; cat /proc/uptime" >"$WORK/seen" &
  probe=$!
  sleep 0.5 # the probe runs before the write
  t0=$(uptime_ms)
  echo "$i" >"$WORK/static/f$i"
  wait "$probe"
  t1=$(awk '{printf "%d\n", $1 * 1000}' "$WORK/seen")
  B+=($((t1 - t0)))
done
log "(b) raw: docker cp → file readable"
RB=()
echo x >"$WORK/raw.txt"
for i in $(seq 1 "$N"); do
  docker exec "$WEB" sh -c "while [ ! -e /tmp/raw$i ]; do usleep 2000; done; cat /proc/uptime" >"$WORK/seen" &
  probe=$!
  sleep 0.5
  t0=$(uptime_ms)
  docker cp "$WORK/raw.txt" "$WEB:/tmp/raw$i"
  wait "$probe"
  t1=$(awk '{printf "%d\n", $1 * 1000}' "$WORK/seen")
  RB+=($((t1 - t0)))
done

ma=$(printf '%s\n' "${A[@]}" | median)
mra=$(printf '%s\n' "${RA[@]}" | median)
mb=$(printf '%s\n' "${B[@]}" | median)
mrb=$(printf '%s\n' "${RB[@]}" | median)
echo "debounce: ${DEBOUNCE_MS} ms, $N writes each, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
echo "(a) write → restart begins:        median ${ma} ms (goal ≤ $((DEBOUNCE_MS + 100)) ms; all: ${A[*]})"
echo "    raw docker restart → kill:     median ${mra} ms (all: ${RA[*]})"
echo "(b) write → readable (sync):       median ${mb} ms (goal ≤ $((DEBOUNCE_MS + 150)) ms; all: ${B[*]})"
echo "    raw docker cp → readable:      median ${mrb} ms (all: ${RB[*]})"
