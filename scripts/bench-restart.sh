#!/usr/bin/env bash
# Benchmark: guarded nodus transitions against raw docker-compose, in one run, alternating.
#
#   scripts/bench-restart.sh [RUNS]          (default 5 runs of each; medians)
#   NODUS_BIN=target/debug/nodus scripts/bench-restart.sh 5   (skip the release build)
#   BENCH_KEEP=DIR: keep the raw per-run figures (results.tsv, timings.jsonl) there
#   BENCH_VARIANTS="db app" (default both)   db: postgres (60 tables) + redis; app: plus one app
#                                            service that depends on postgres being healthy
#
# Pairs, each run alternating raw / nodus on two projects of the same stack (own volumes):
#   down+up  `nodus down && nodus up`  vs  `docker-compose down && docker-compose up -d` + wait
#   restart  `nodus restart`           vs  `docker-compose restart` + wait
#   up-noop  `nodus up` (all running)  vs  `docker-compose up -d` (all running)
# "wait" = until postgres answers `SELECT 1` (psql in the container over TCP, polled), which is
# what nodus' readiness guarantees at the least (nodus also counts every table before and after,
# CHECKPOINTs and snapshots postgres and redis on down, and compares with its ledger).
# Prints medians, the nodus/raw ratio and a breakdown of nodus' time per phase (from `--json`:
# report.timings). Cleans up only its own projects' resources.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-5}
TABLES=60
PG_IMAGE=${NODUS_BENCH_PG_IMAGE:-nodus/postgres-standin:15}
REDIS_IMAGE=${NODUS_BENCH_REDIS_IMAGE:-nodus/redis-standin:7}
VARIANTS=${BENCH_VARIANTS:-db app}
COMPOSE=${COMPOSE:-docker-compose}

log() { echo "bench-restart: $*" >&2; }

if [ -n "${NODUS_BIN:-}" ]; then
  NODUS=$NODUS_BIN
else
  cargo build --release --locked >&2
  NODUS="$ROOT/target/release/nodus"
fi
for img in "$PG_IMAGE" "$REDIS_IMAGE"; do
  if ! docker image inspect "$img" >/dev/null 2>&1; then
    log "building stand-in images (scripts/build-images.sh)"
    scripts/build-images.sh >&2
  fi
done
command -v python3 >/dev/null || { log "python3 is needed for the statistics"; exit 1; }

case "$NODUS" in
  */debug/*) log "WARNING: $NODUS is a debug build; figures for the README come from a release build" ;;
esac
LOAD_BEFORE=$(uptime)
log "load before: $LOAD_BEFORE"

WORK=$(mktemp -d)
PROJECTS=()
cleanup() {
  for p in "${PROJECTS[@]}"; do
    for id in $(docker ps -aq --filter "label=com.docker.compose.project=$p"); do docker rm -f -v "$id" >/dev/null 2>&1 || true; done
    for v in $(docker volume ls -q --filter "label=com.docker.compose.project=$p"); do docker volume rm -f "$v" >/dev/null 2>&1 || true; done
    for n in $(docker network ls -q --filter "label=com.docker.compose.project=$p"); do docker network rm "$n" >/dev/null 2>&1 || true; done
  done
  if [ -n "${BENCH_KEEP:-}" ]; then cp "$RESULTS" "$TIMINGS" "$BENCH_KEEP"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }

# The stack of a variant.
stack_file() {
  # One directory per variant: its own .nodus state dir (ledger, snapshots).
  local variant=$1 f="$WORK/$1/stack.yaml"
  mkdir -p "$WORK/$1"
  cat >"$f" <<YAML
services:
  db:
    image: $PG_IMAGE
    environment:
      POSTGRES_PASSWORD: bench-pw
      POSTGRES_DB: app
    volumes: [pgdata:/var/lib/postgresql/data]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U postgres -d app -h 127.0.0.1"]
      interval: 2s
      timeout: 5s
      retries: 30
      start_period: 600s # initdb on a busy machine can take minutes
  cache:
    image: $REDIS_IMAGE
    volumes: [redisdata:/data]
YAML
  if [ "$variant" = app ]; then
    cat >>"$f" <<YAML
  app:
    image: $REDIS_IMAGE
    entrypoint: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    # The image declares VOLUME /data: a tmpfs there, or every down+up would leave an
    # anonymous volume behind (compose and nodus keep those on down without -v).
    tmpfs: [/data]
    depends_on:
      db: { condition: service_healthy }
      cache: { condition: service_started }
YAML
  fi
  if [ "$variant" = app ]; then
    # The app runs the redis image (for its shell); it is not a redis.
    printf 'x-nodus:\n  services:\n    app:\n      stateful: false\n' >>"$f"
  fi
  cat >>"$f" <<YAML
volumes:
  pgdata:
  redisdata:
YAML
  echo "$f"
}

db_container() { docker ps -q --filter "label=com.docker.compose.project=$1" --filter "label=com.docker.compose.service=db" | head -n1; }

# Until postgres in project $1 answers a query (over TCP: not the init-time socket-only server).
wait_pg() {
  local ctr
  while :; do
    ctr=$(db_container "$1")
    if [ -n "$ctr" ] && docker exec "$ctr" psql -X -q -h 127.0.0.1 -U postgres -d app -tAc 'SELECT 1' >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.05
  done
}

seed() { # project
  local ctr
  wait_pg "$1"
  ctr=$(db_container "$1")
  docker exec -i "$ctr" psql -X -q -h 127.0.0.1 -U postgres -d app -v ON_ERROR_STOP=1 -c "DO \$\$ BEGIN FOR i IN 1..$TABLES LOOP
      EXECUTE format('CREATE TABLE IF NOT EXISTS t%s (id int primary key, v text)', i);
      EXECUTE format('INSERT INTO t%s SELECT g, md5(g::text) FROM generate_series(1, %s) g ON CONFLICT DO NOTHING', i, i * 50);
    END LOOP; END \$\$;" >/dev/null
  local rctr
  rctr=$(docker ps -q --filter "label=com.docker.compose.project=$1" --filter "label=com.docker.compose.service=cache" | head -n1)
  docker exec "$rctr" redis-cli MSET k1 v1 k2 v2 k3 v3 >/dev/null
}

RESULTS="$WORK/results.tsv" # variant pair side seconds
TIMINGS="$WORK/timings.jsonl" # variant pair {phase: s}
: >"$RESULTS"
: >"$TIMINGS"

# Runs nodus commands with --json; records their time and phase breakdown. Only the nodus
# commands are timed: their JSON is read afterwards (a python3 start costs ~0.1 s).
nodus_timed() { # variant pair project stack args...
  local variant=$1 pair=$2 project=$3 stack=$4
  shift 4
  local t0 t1 n=0 cmdline
  t0=$(now)
  for cmdline in "$@"; do
    n=$((n + 1))
    # shellcheck disable=SC2086
    "$NODUS" -q --json -f "$stack" -p "$project" $cmdline >"$WORK/out.$n.json" 2>"$WORK/err" || {
      log "nodus $cmdline failed:"
      cat "$WORK/err" >&2
      exit 1
    }
  done
  t1=$(now)
  echo -e "$variant\t$pair\tnodus\t$(python3 -c "print($t1-$t0)")" >>"$RESULTS"
  for i in $(seq 1 "$n"); do
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"variant":sys.argv[2],"pair":sys.argv[3],"t":d.get("report",{}).get("timings",{})}))' "$WORK/out.$i.json" "$variant" "$pair" >>"$TIMINGS"
  done
}

raw_timed() { # variant pair project stack shell-snippet
  local variant=$1 pair=$2 project=$3 stack=$4 snippet=$5 t0 t1
  t0=$(now)
  (
    export COMPOSE_PROJECT_NAME=$project
    eval "$snippet"
  ) >/dev/null 2>&1 || { log "raw $pair failed"; exit 1; }
  t1=$(now)
  echo -e "$variant\t$pair\traw\t$(python3 -c "print($t1-$t0)")" >>"$RESULTS"
}

for variant in $VARIANTS; do
  stack=$(stack_file "$variant")
  NP="nodus-bench-rs-$variant-$$"
  RP="nodus-bench-rsraw-$variant-$$"
  PROJECTS+=("$NP" "$RP")
  log "[$variant] setting up ($TABLES tables, redis keys) for nodus ($NP) and raw compose ($RP)"
  "$NODUS" -q -f "$stack" -p "$NP" up --timeout 900s >&2
  seed "$NP"
  "$COMPOSE" -f "$stack" -p "$RP" up -d >/dev/null 2>&1
  seed "$RP"
  # One clean cycle each, so the ledger has a baseline and caches are warm.
  "$NODUS" -q -f "$stack" -p "$NP" restart >&2
  "$COMPOSE" -f "$stack" -p "$RP" restart >/dev/null 2>&1
  wait_pg "$RP"

  for i in $(seq 1 "$RUNS"); do
    log "[$variant] run $i/$RUNS"
    raw_timed "$variant" down+up "$RP" "$stack" "$COMPOSE -f $stack down && $COMPOSE -f $stack up -d && wait_pg $RP"
    nodus_timed "$variant" down+up "$NP" "$stack" down up
    raw_timed "$variant" restart "$RP" "$stack" "$COMPOSE -f $stack restart && wait_pg $RP"
    nodus_timed "$variant" restart "$NP" "$stack" restart
    raw_timed "$variant" up-noop "$RP" "$stack" "$COMPOSE -f $stack up -d"
    nodus_timed "$variant" up-noop "$NP" "$stack" up
  done
done

echo "load before: $LOAD_BEFORE"
echo "load after:  $(uptime)"
echo "nodus: $NODUS ($("$NODUS" --version 2>/dev/null || echo '?'))"
python3 - "$RESULTS" "$TIMINGS" "$RUNS" <<'PY'
import json, statistics, sys
from collections import defaultdict
res, tim, runs = sys.argv[1], sys.argv[2], sys.argv[3]
t = defaultdict(list)
for line in open(res):
    v, pair, side, s = line.rstrip("\n").split("\t")
    t[(v, pair, side)].append(float(s))
# A pair's phases: several nodus commands per run (down, up) are summed per run.
ph = defaultdict(lambda: defaultdict(list))
seen = defaultdict(int)
cur = {}
for line in open(tim):
    d = json.loads(line)
    key = (d["variant"], d["pair"])
    seen[key] += 1
    cur.setdefault(key, defaultdict(float))
    for k, s in d["t"].items():
        cur[key][k] += s
    per_run = 2 if d["pair"] == "down+up" else 1
    if seen[key] % per_run == 0:
        for k, s in cur[key].items():
            ph[key][k].append(s)
        cur[key] = defaultdict(float)
order = ["stop", "snapshot", "remove", "networks", "create", "start", "ready", "census", "settle"]
print(f"medians of {runs} alternating runs (seconds)")
print(f"{'variant':8} {'transition':10} {'raw':>7} {'nodus':>7} {'ratio':>6}   nodus breakdown")
for (v, pair, side) in sorted({(a, b, "raw") for (a, b, _) in t}):
    raw = statistics.median(t[(v, pair, "raw")])
    nod = statistics.median(t[(v, pair, "nodus")])
    phases = ph.get((v, pair), {})
    parts = [f"{k} {statistics.median(phases[k]):.2f}" for k in order if k in phases]
    print(f"{v:8} {pair:10} {raw:7.2f} {nod:7.2f} {nod / raw:6.2f}   {', '.join(parts)}")
PY
