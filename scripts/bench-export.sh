#!/usr/bin/env bash
# Figures for `nodus snapshot export` / `import` beside their raw equivalent in the same run.
#
#   1. starts a one-service stack (nodus/postgres-standin:15), fills PGDATA with BENCH_ROWS rows of
#      half-random text, `down` takes a snapshot;
#   2. measures (medians of BENCH_RUNS, alternating):
#        raw export:    docker cp CONTAINER:PGDATA - | zstd -3 -T0 > raw.tar.zst   (container stopped)
#        nodus export:  nodus snapshot export ID -o x.tar.zst   (from the store: chunks read,
#                       checked, a tar + zstd + sha256 written, fsynced)
#        nodus export --age-recipient (when age-keygen is installed: encryption's cost)
#        raw import:    zstd -dc raw.tar.zst > /dev/null (what reading the file costs at least)
#        nodus import:  nodus snapshot import x.tar.zst (two passes: check, then write to the store)
#   3. prints seconds, MB/s of tar, file sizes. No goal is asserted (the issue sets none).
#
# Usage: scripts/bench-export.sh
# Env:   NODUS=path/to/nodus (default: target/release/nodus, built when missing)
#        BENCH_ROWS=2000000   BENCH_RUNS=3
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROWS=${BENCH_ROWS:-2000000}
RUNS=${BENCH_RUNS:-3}
IMAGE=nodus/postgres-standin:15
PGDATA=/var/lib/postgresql/data

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: error: %s\n' "$*" >&2
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s <= 0) s = 1e-9; printf "%.1f", b / 1048576 / s }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

command -v docker >/dev/null || die "docker CLI missing"
command -v jq >/dev/null || die "jq missing"
command -v zstd >/dev/null || die "zstd missing"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"
scripts/build-images.sh postgres

NODUS=${NODUS:-$ROOT/target/release/nodus}
if [ ! -x "$NODUS" ]; then
	log "building nodus (release)"
	cargo build --release --locked >&2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nodus-bench.XXXXXX")
PROJECT="nb-exportbench-$$"
STACK="$WORK/compose.yaml"
cat >"$STACK" <<EOS
services:
  db:
    image: $IMAGE
    environment:
      POSTGRES_PASSWORD: bench-pw
      POSTGRES_DB: bench
EOS
n() { "$NODUS" -f "$STACK" -p "$PROJECT" --state-dir "$WORK/state" "$@"; }
cleanup() {
	n down --volumes --yes --no-snapshot >/dev/null 2>&1 || true
	local f="label=com.docker.compose.project=$PROJECT" id
	for id in $(docker ps -aq --filter "$f"); do docker rm -f -v "$id" >/dev/null 2>&1 || true; done
	for id in $(docker volume ls -q --filter "$f"); do docker volume rm -f "$id" >/dev/null 2>&1 || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

log "starting the stack ($PROJECT)"
n up >&2
C=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=db" | head -n1)
[ -n "$C" ] || die "no db container"
log "filling PGDATA with $ROWS rows"
docker exec "$C" psql -U postgres -d bench -v ON_ERROR_STOP=1 -qc "
  CREATE TABLE filler AS
  SELECT g AS id, md5(g::text) || ' ' || (ARRAY['alpha','bravo','charlie','delta'])[1 + g % 4]
           || ' ' || lpad((g % 100003)::text, 6, '0') AS payload
  FROM generate_series(1, $ROWS) g;
  CHECKPOINT;" >&2
log "stopping the stack (snapshot)"
n stop db >&2
ID=$(n snapshot list --json | jq -r 'if type == "array" then . else .snapshots end | last | .id')
RAW=$(n --json snapshot show "$ID" | jq -r .archive.raw_bytes)
log "snapshot $ID: $(mbps "$RAW" 1) MiB of tar"

KEYS=()
if command -v age-keygen >/dev/null; then
	age-keygen -o "$WORK/key.txt" 2>/dev/null
	KEYS=(--age-recipient "$(age-keygen -y "$WORK/key.txt")")
fi

raw_e=() nodus_e=() age_e=() raw_i=() nodus_i=()
for i in $(seq 1 "$RUNS"); do
	rm -f "$WORK"/*.zst "$WORK"/*.sha256 "$WORK"/*.age
	t0=$(now)
	docker cp "$C:$PGDATA" - | zstd -q -3 -T0 >"$WORK/raw.tar.zst"
	raw_e+=("$(since "$t0")")
	t0=$(now)
	n snapshot export "$ID" -o "$WORK/x.tar.zst" >/dev/null
	nodus_e+=("$(since "$t0")")
	if [ ${#KEYS[@]} -gt 0 ]; then
		t0=$(now)
		n snapshot export "$ID" -o "$WORK/x.tar.zst" "${KEYS[@]}" >/dev/null
		age_e+=("$(since "$t0")")
	fi
	t0=$(now)
	zstd -q -dc "$WORK/raw.tar.zst" >/dev/null
	raw_i+=("$(since "$t0")")
	n snapshot delete "$ID" --yes >&2
	t0=$(now)
	n snapshot import "$WORK/x.tar.zst" >/dev/null
	nodus_i+=("$(since "$t0")")
	log "run $i: raw export ${raw_e[-1]}s, nodus export ${nodus_e[-1]}s, raw read ${raw_i[-1]}s, nodus import ${nodus_i[-1]}s"
done
re=$(median "${raw_e[@]}") ne=$(median "${nodus_e[@]}") ri=$(median "${raw_i[@]}") ni=$(median "${nodus_i[@]}")
echo "tar: $(mbps "$RAW" 1) MiB; raw.tar.zst $(stat -c %s "$WORK/raw.tar.zst") bytes, export $(stat -c %s "$WORK/x.tar.zst") bytes"
echo "export: raw docker cp | zstd ${re}s ($(mbps "$RAW" "$re") MB/s), nodus ${ne}s ($(mbps "$RAW" "$ne") MB/s)"
if [ ${#age_e[@]} -gt 0 ]; then
	ae=$(median "${age_e[@]}")
	echo "export --age-recipient: ${ae}s ($(mbps "$RAW" "$ae") MB/s)"
fi
echo "import: raw zstd -dc ${ri}s ($(mbps "$RAW" "$ri") MB/s), nodus ${ni}s ($(mbps "$RAW" "$ni") MB/s)"
