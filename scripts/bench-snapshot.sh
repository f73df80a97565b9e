#!/usr/bin/env bash
# Benchmarks nodus snapshots and restores against raw `docker cp` on the same stopped container.
#
#   1. starts a one-service stack (nodus/postgres-standin:15) and fills PGDATA to ~1 GiB with
#      half-random text (md5 + words, so it compresses realistically, not absurdly);
#   2. stops it cleanly (no snapshot) and measures, on the same stopped container:
#        raw snapshot:    docker cp CONTAINER:PGDATA - > /dev/null
#        nodus snapshot:  nodus snapshot create db   (the same code path `down` uses; the figure is
#                         the archive transfer time recorded in the manifest, plus the wall time)
#        raw restore:     docker cp - CONTAINER:/var/lib/postgresql < data.tar
#        nodus restore:   nodus snapshot restore ID --yes --no-safety  (verification before, the
#                         volume emptied, the archive uploaded; the figure is the upload phase,
#                         plus the end-to-end wall time including verification, start and census)
#   3. snapshot store series (issue 16): BENCH_SERIES times (default 30): start, update a
#      contiguous 1 % of the rows (a different range each time), stop, `nodus snapshot create`;
#      records each snapshot's throughput and what it added, and the store's size at the end;
#   4. prints MB/s, the ratios and the compression ratio; exits 1 when a goal is missed:
#        (d) first snapshot: stored size <= 0.5 x raw;
#        (a) snapshot of the unchanged volume (runs 2..): throughput >= 0.9 x raw docker cp;
#        (b) snapshot after 1 % of rows updated: throughput >= 0.8 x raw docker cp;
#        (c) store size after the series <= 2 x the first snapshot's stored size;
#        (e) restore upload >= 0.9 x raw archive upload.
#      (The first run of step 2 is the store's first snapshot; BENCH_RUNS must be >= 2 for (a).)
#   5. beside it, DDEV's approach: `pg_basebackup -Ft -X fetch -c fast | zstd -3` of the running
#      server (time and size; BENCH_DDEV=0 skips it).
#
# Usage: scripts/bench-snapshot.sh
# Env:   NODUS=path/to/nodus (default: target/release/nodus, built when missing)
#        BENCH_ROWS=5000000 (rows of filler: ~1 GiB of PGDATA with its WAL)   BENCH_RUNS=3 (runs of each, alternating; medians)
#        BENCH_SERIES=30 (snapshots after 1 % updates; 0 skips (b) and (c))
#        NODUS_KEEP_BENCH=1 keeps the stack and temp dir for inspection.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROWS=${BENCH_ROWS:-5000000}
RUNS=${BENCH_RUNS:-3}
IMAGE=nodus/postgres-standin:15
PGDATA=/var/lib/postgresql/data

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: error: %s\n' "$*" >&2
	exit 1
}
now() { date +%s.%N; }
# mbps BYTES SECONDS
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s <= 0) s = 1e-9; printf "%.1f", b / 1048576 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b <= 0) b = 1e-9; printf "%.3f", a / b }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { print b - a }'; }
# median VALUES...
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Busy CPU time of the whole machine between cpu_mark and busy_cores SECONDS, in cores.
cpu_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
cpu_mark() { CPU_MARK=$(cpu_ticks); }
busy_cores() { awk -v a="$CPU_MARK" -v b="$(cpu_ticks)" -v s="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (s <= 0) s = 1e-9; printf "%.2f", (b - a) / hz / s }'; }

SERIES=${BENCH_SERIES:-30}
[ "$RUNS" -ge 2 ] || die "BENCH_RUNS must be >= 2 (run 1 is the store's first snapshot)"
command -v docker >/dev/null || die "docker CLI missing"
command -v jq >/dev/null || die "jq missing"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"
scripts/build-images.sh postgres

NODUS=${NODUS:-$ROOT/target/release/nodus}
if [ ! -x "$NODUS" ]; then
	log "building nodus (release)"
	cargo build --release --locked >&2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nodus-bench.XXXXXX")
PROJECT="nb-snapbench-$$"
STACK="$WORK/compose.yaml"
cat >"$STACK" <<EOF
services:
  db:
    image: $IMAGE
    environment:
      POSTGRES_PASSWORD: bench-pw
      POSTGRES_DB: bench
EOF
n() { "$NODUS" -f "$STACK" -p "$PROJECT" --state-dir "$WORK/state" "$@"; }

cleanup() {
	if [ -n "${NODUS_KEEP_BENCH:-}" ]; then
		log "kept: project $PROJECT, dir $WORK"
		return
	fi
	n down --volumes --yes --no-snapshot >/dev/null 2>&1 || true
	local f="label=com.docker.compose.project=$PROJECT" id
	for id in $(docker ps -aq --filter "$f"); do docker rm -f -v "$id" >/dev/null 2>&1 || true; done
	for id in $(docker volume ls -q --filter "$f"); do docker volume rm -f "$id" >/dev/null 2>&1 || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

container() {
	docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
		--filter "label=com.docker.compose.service=db" --filter "label=io.nodus.managed=true" | head -n1
}

log "starting the stack ($PROJECT)"
n up >&2
C=$(container)
[ -n "$C" ] || die "no db container"

log "filling PGDATA with $ROWS rows (this takes a minute)"
docker exec "$C" psql -U postgres -d bench -v ON_ERROR_STOP=1 -qc "
  CREATE TABLE filler AS
  SELECT g AS id,
         md5(g::text) || ' ' || (ARRAY['alpha','bravo','charlie','delta','echo','foxtrot'])[1 + g % 6]
           || ' ' || (ARRAY['north','south','east','west'])[1 + (g / 7) % 4]
           || ' ' || lpad((g % 100003)::text, 6, '0') AS payload
  FROM generate_series(1, $ROWS) g;
  CHECKPOINT;" >&2
PG_BYTES=$(docker exec "$C" du -sb "$PGDATA" | cut -f1)
log "PGDATA holds $(mbps "$PG_BYTES" 1) MiB"

log "stopping db cleanly (no snapshot)"
n stop --no-snapshot db >&2

# --- snapshot ---------------------------------------------------------------------------------
# Raw and nodus runs alternate, so a neighbour's load on a shared machine hits both alike; the
# figures are medians. Busy cores (from /proc/stat, whole machine) show how much CPU is left for
# compression while the engine produces the archive: `docker cp` itself keeps most of a small
# machine busy (dockerd, its tar process and the docker CLI).
log "warm-up read (page cache)"
docker cp "$C:$PGDATA" - >/dev/null
raw_snap=() nodus_snap=() snap_wall=() raw_snap_cores=() nodus_snap_cores=() snap_ids=()
for i in $(seq 1 "$RUNS"); do
	cpu_mark
	t0=$(now)
	docker cp "$C:$PGDATA" - >/dev/null
	t=$(since "$t0")
	raw_snap+=("$t") raw_snap_cores+=("$(busy_cores "$t")")
	log "raw docker cp → /dev/null: ${t}s (${raw_snap_cores[-1]} cores busy)"

	cpu_mark
	t0=$(now)
	n snapshot create db >&2
	wall=$(since "$t0")
	cores=$(busy_cores "$wall")
	m=$(n snapshot list --json | jq -c 'map(select(.service == "db")) | sort_by(.created_at) | last')
	id=$(jq -r .id <<<"$m")
	ms=$(n --json snapshot show "$id" | jq -r .duration_ms)
	t=$(awk -v ms="$ms" 'BEGIN { print ms / 1000 }')
	nodus_snap+=("$t") snap_wall+=("$wall") nodus_snap_cores+=("$cores") snap_ids+=("$id")
	log "nodus snapshot $id: transfer ${t}s, command ${wall}s (${cores} cores busy)"
	# `snapshot create` starts the service again; the next raw run wants it stopped.
	n stop --no-snapshot db >&2
done
best_raw_snap=$(median "${raw_snap[@]}")
# Run 1 is the store's first snapshot (d); runs 2.. snapshot an unchanged volume (a).
first_snap=${nodus_snap[0]}
best_nodus_snap=$(median "${nodus_snap[@]:1}")
best_snap_wall=$(median "${snap_wall[@]:1}")
SNAP_ID=${snap_ids[-1]}
FIRST=$(n --json snapshot show "${snap_ids[0]}")
RAW_BYTES=$(jq -r .archive.raw_bytes <<<"$FIRST")
ZST_BYTES=$(jq -r '.store.added_bytes // .archive.compressed_bytes' <<<"$FIRST")
ZST_LEVEL=$(jq -r '.archive.level' <<<"$FIRST")
UNCHANGED_ADDED=$(n --json snapshot show "$SNAP_ID" | jq -r '.store.added_bytes // .archive.compressed_bytes')
# Unchanged large files are taken from the previous snapshot without being read (cas/reuse.rs).
UNCHANGED_REUSED=$(n --json snapshot show "$SNAP_ID" | jq -r '.store.reused_bytes // 0')

# --- store series: 1 % of the rows updated before each snapshot (b, c) ------------------------
series_mbps=() series_added=()
for k in $(seq 1 "$SERIES"); do
	n start db >&2
	lo=$(((k - 1) * ROWS / 100 % ROWS))
	docker exec "$C" psql -U postgres -d bench -v ON_ERROR_STOP=1 -qc \
		"UPDATE filler SET payload = md5(payload) || substr(payload, 33) WHERE id > $lo AND id <= $lo + $ROWS / 100" >&2
	n stop --no-snapshot db >&2
	n snapshot create db >&2
	m=$(n snapshot list --json | jq -c 'map(select(.service == "db")) | sort_by(.created_at) | last')
	sm=$(n --json snapshot show "$(jq -r .id <<<"$m")")
	t=$(jq -r '.duration_ms / 1000' <<<"$sm")
	series_mbps+=("$(mbps "$(jq -r .archive.raw_bytes <<<"$sm")" "$t")")
	series_added+=("$(jq -r '.store.added_bytes // .archive.compressed_bytes' <<<"$sm")")
	log "series $k/$SERIES: ${series_mbps[-1]} MiB/s, added $(mbps "${series_added[-1]}" 1) MiB, $(mbps "$(jq -r ".store.reused_bytes // 0" <<<"$sm")" 1) MiB taken unread"
done
STORE_BYTES=$(n --json snapshot stats | jq -r '.[0].store_bytes')

# --- restore ----------------------------------------------------------------------------------
docker cp "$C:$PGDATA" - >"$WORK/data.tar"
raw_rest=() nodus_rest=() rest_wall=()
for i in $(seq 1 "$RUNS"); do
	t0=$(now)
	docker cp - "$C:$(dirname "$PGDATA")" <"$WORK/data.tar"
	t=$(since "$t0")
	raw_rest+=("$t")
	log "raw docker cp tar → container: ${t}s"

	t0=$(now)
	out=$(n --json snapshot restore "$SNAP_ID" --yes --no-safety)
	wall=$(since "$t0")
	r=$(jq -cs 'map(select(type == "object" and has("restored"))) | last | .restored[0]' <<<"$out")
	[ "$r" != "null" ] || die "no restore report in: $out"
	[ "$(jq -r .census <<<"$r")" != "mismatch" ] || die "census mismatch after restore: $r"
	ms=$(jq -r .upload_ms <<<"$r")
	t=$(awk -v ms="$ms" 'BEGIN { print ms / 1000 }')
	nodus_rest+=("$t") rest_wall+=("$wall")
	log "nodus restore: upload ${t}s (emptying $(jq -r .empty_ms <<<"$r") ms), command ${wall}s"
	n stop --no-snapshot db >&2
done
rm -f "$WORK/data.tar"

# --- DDEV's approach beside it: pg_basebackup of the running server piped through zstd -----------
DDEV_LINE="skipped (BENCH_DDEV=0 or no zstd)"
if [ "${BENCH_DDEV:-1}" != 0 ] && command -v zstd >/dev/null; then
	n start db >&2
	ddev=()
	for i in $(seq 1 "$RUNS"); do
		t0=$(now)
		docker exec "$C" pg_basebackup -U postgres -D - -Ft -X fetch -c fast | zstd -q -T0 -3 >"$WORK/base.tar.zst"
		ddev+=("$(since "$t0")")
		log "pg_basebackup | zstd: ${ddev[-1]}s, $(stat -c %s "$WORK/base.tar.zst") bytes"
	done
	DDEV_SIZE=$(stat -c %s "$WORK/base.tar.zst")
	rm -f "$WORK/base.tar.zst"
	DDEV_T=$(median "${ddev[@]}")
	DDEV_LINE="${DDEV_T}s, $(mbps "$DDEV_SIZE" 1) MiB at zstd -3 ($(mbps "$RAW_BYTES" "$DDEV_T") MiB/s of the data dir; a full copy every time, no dedup)"
	n stop --no-snapshot db >&2
fi
best_raw_rest=$(median "${raw_rest[@]}")
best_nodus_rest=$(median "${nodus_rest[@]}")
best_rest_wall=$(median "${rest_wall[@]}")

# --- report -----------------------------------------------------------------------------------
raw_snap_mbps=$(mbps "$RAW_BYTES" "$best_raw_snap")
nodus_snap_mbps=$(mbps "$RAW_BYTES" "$best_nodus_snap")
first_snap_mbps=$(mbps "$RAW_BYTES" "$first_snap")
raw_rest_mbps=$(mbps "$RAW_BYTES" "$best_raw_rest")
nodus_rest_mbps=$(mbps "$RAW_BYTES" "$best_nodus_rest")
snap_ratio=$(ratio "$nodus_snap_mbps" "$raw_snap_mbps")
rest_ratio=$(ratio "$nodus_rest_mbps" "$raw_rest_mbps")
size_ratio=$(ratio "$ZST_BYTES" "$RAW_BYTES")

verdict() { if ge "$1" "$2"; then echo ok; else echo MISSED; fi; }
v_snap=$(verdict "$snap_ratio" 0.9)
v_rest=$(verdict "$rest_ratio" 0.9)
v_size=$(if ge 0.5 "$size_ratio"; then echo ok; else echo MISSED; fi)
v_series=ok v_store=ok series_line="skipped (BENCH_SERIES=0)" store_line="skipped"
if [ "$SERIES" -gt 0 ]; then
	series_ratio=$(ratio "$(median "${series_mbps[@]}")" "$raw_snap_mbps")
	v_series=$(verdict "$series_ratio" 0.8)
	store_ratio=$(ratio "$STORE_BYTES" "$ZST_BYTES")
	v_store=$(if ge 2 "$store_ratio"; then echo ok; else echo MISSED; fi)
	series_line="$(median "${series_mbps[@]}") MiB/s median, adds $(mbps "$(median "${series_added[@]}")" 1) MiB median; ratio $series_ratio (goal >= 0.8: $v_series)"
	store_line="$(mbps "$STORE_BYTES" 1) MiB after $SERIES more snapshots = $store_ratio x the first (goal <= 2: $v_store)"
fi

cat <<EOF
nodus snapshot benchmark ($(nproc) cores, $(docker version -f '{{.Server.Version}}') engine)
medians of $RUNS alternating runs
  data (tar):            $(mbps "$RAW_BYTES" 1) MiB
  (d) first snapshot:    stored $(mbps "$ZST_BYTES" 1) MiB at zstd level $ZST_LEVEL (ratio $size_ratio, goal <= 0.5: $v_size), $first_snap_mbps MiB/s
  snapshot  raw docker cp:  $raw_snap_mbps MiB/s (${best_raw_snap}s; $(median "${raw_snap_cores[@]}") of $(nproc) cores busy)
  (a) unchanged volume:     $nodus_snap_mbps MiB/s (${best_nodus_snap}s transfer, ${best_snap_wall}s command; $(median "${nodus_snap_cores[@]:1}") cores busy), added $(mbps "$UNCHANGED_ADDED" 1) MiB, $(mbps "$UNCHANGED_REUSED" 1) MiB of unchanged files taken unread
            ratio:          $snap_ratio (goal >= 0.9: $v_snap)
  (b) 1 % rows updated:     $series_line
  (c) store size:           $store_line
  restore   raw docker cp:  $raw_rest_mbps MiB/s (${best_raw_rest}s)
            nodus:          $nodus_rest_mbps MiB/s (${best_nodus_rest}s upload, ${best_rest_wall}s command incl. verify, start, census)
  (e)       ratio:          $rest_ratio (goal >= 0.9: $v_rest)
  DDEV-style pg_basebackup -Ft -X fetch -c fast | zstd -3 (server running): $DDEV_LINE
EOF
[ "$v_snap$v_rest$v_size$v_series$v_store" = okokokokok ]
