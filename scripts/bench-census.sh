#!/usr/bin/env bash
# Benchmark: `nodus census` (exact row counts) of 5 databases × 60 tables, against the raw
# equivalent in the same run: one `docker exec ... psql` per database running the same counts.
#
#   scripts/bench-census.sh [RUNS]        (default 10 runs each; target: well under a second)
#   NODUS_BIN=target/debug/nodus scripts/bench-census.sh 3   (skip the release build)
#
# Uses hyperfine when installed (tries `apt-get install -y hyperfine` as root), else a bash timing
# loop. Builds nodus (release) and the stand-in image; cleans up only its own project's resources.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-10}
DBS=5
TABLES=60
IMAGE=${NODUS_BENCH_PG_IMAGE:-nodus/postgres-standin:15}
PROJECT="nodus-bench-census-$$"

log() { echo "bench-census: $*" >&2; }

if [ -n "${NODUS_BIN:-}" ]; then
  NODUS=$NODUS_BIN # an existing build (e.g. to try the script quickly)
else
  cargo build --release --locked >&2
  NODUS="$ROOT/target/release/nodus"
fi
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "building stand-in images (scripts/build-images.sh)"
  scripts/build-images.sh >&2
fi
if ! command -v hyperfine >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing hyperfine"
  apt-get install -y -qq hyperfine >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq hyperfine >/dev/null 2>&1) || log "hyperfine not installable; using a bash timing loop"
fi

WORK=$(mktemp -d)
STACK="$WORK/stack.yaml"
cat >"$STACK" <<YAML
services:
  db:
    image: $IMAGE
    environment:
      POSTGRES_PASSWORD: bench-pw
      POSTGRES_DB: app
YAML
n() { "$NODUS" -q -f "$STACK" -p "$PROJECT" "$@"; }
cleanup() {
  n down --volumes --yes --no-snapshot >/dev/null 2>&1 || true
  for id in $(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"); do docker rm -f -v "$id" >/dev/null; done
  for v in $(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"); do docker volume rm -f "$v" >/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

log "starting postgres ($IMAGE)"
n up >&2
CTR=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=db" | head -n1)
[ -n "$CTR" ] || { log "no running db container"; exit 1; }
psql_in() { docker exec -i "$CTR" psql -X -q -U postgres -v ON_ERROR_STOP=1 "$@"; }

log "creating $DBS databases × $TABLES tables with rows"
for d in $(seq 1 "$DBS"); do
  psql_in -d postgres -c "CREATE DATABASE bench_$d" >/dev/null
  psql_in -d "bench_$d" -c "DO \$\$ BEGIN FOR i IN 1..$TABLES LOOP
      EXECUTE format('CREATE TABLE t%s (id int primary key, v text)', i);
      EXECUTE format('INSERT INTO t%s SELECT g, md5(g::text) FROM generate_series(1, %s) g', i, i * 100);
    END LOOP; END \$\$;" >/dev/null
done
psql_in -d postgres -c "CHECKPOINT" >/dev/null

# The raw equivalent: list the tables and count each, per database, with psql in the container.
COUNT_SQL="$WORK/count.sql"
{
  echo "SELECT string_agg(format('SELECT %L, count(*) FROM %I.%I', n.nspname || '.' || c.relname, n.nspname, c.relname), ' UNION ALL ')"
  echo "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
  echo "WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname !~ '^pg_toast' \\gexec"
} >"$COUNT_SQL"
docker cp "$COUNT_SQL" "$CTR:/tmp/nodus-bench-count.sql" >/dev/null
RAW="for d in app postgres $(for d in $(seq 1 "$DBS"); do printf 'bench_%s ' "$d"; done); do psql -X -q -At -U postgres -d \$d -f /tmp/nodus-bench-count.sql >/dev/null || exit 1; done"
NODUS_CMD="$NODUS -q -f $STACK -p $PROJECT census"
RAW_CMD="docker exec $CTR sh -c '$RAW'"

# Sanity: both work, and nodus counts what was created.
eval "$RAW_CMD"
TOTAL=$($NODUS -q -f "$STACK" -p "$PROJECT" census --json | python3 -c 'import json,sys; t=json.load(sys.stdin)["totals"]; print(t["databases"], t["tables"], t["rows"])')
log "nodus census sees: databases tables rows = $TOTAL"

if command -v hyperfine >/dev/null 2>&1; then
  hyperfine --style basic --warmup 2 --runs "$RUNS" --export-markdown "$WORK/result.md" \
    -n "nodus census" "$NODUS_CMD" \
    -n "docker exec psql (raw)" "$RAW_CMD" >&2
  echo
  cat "$WORK/result.md"
else
  time_it() { # name, command → "name|mean|min|max" in ms
    local name=$1 cmd=$2 total=0 min= max=0 t0 t1 ms
    eval "$cmd" >/dev/null 2>&1 # warmup
    for _ in $(seq 1 "$RUNS"); do
      t0=$(date +%s%N); eval "$cmd" >/dev/null; t1=$(date +%s%N)
      ms=$(( (t1 - t0) / 1000000 )); total=$((total + ms))
      [ -z "$min" ] || [ "$ms" -lt "$min" ] && min=$ms
      [ "$ms" -gt "$max" ] && max=$ms
    done
    echo "$name|$((total / RUNS))|$min|$max"
  }
  echo
  echo "| command | mean [ms] | min [ms] | max [ms] |"
  echo "|:---|---:|---:|---:|"
  for row in "$(time_it "nodus census" "$NODUS_CMD")" "$(time_it "docker exec psql (raw)" "$RAW_CMD")"; do
    IFS='|' read -r name mean min max <<<"$row"
    echo "| $name | $mean | $min | $max |"
  done
fi
echo
echo "($DBS databases × $TABLES tables, $RUNS runs each; census: databases tables rows = $TOTAL)"
