#!/usr/bin/env bash
# Benchmark of `build:` services, each against the raw equivalent in the same run:
#  1. a no-change `nodus up` on a stack with a built service (context hashed, image label
#     compared, nothing rebuilt or recreated) vs `docker-compose up -d` on the generated file
#     (under its own project name, so neither recreates the other's containers);
#  2. a context of 20 000 small files: `nodus build --dry-run` (walk + .dockerignore + hash) vs
#     `tar -c . | wc -c` over the same directory.
# Runs alternate; medians of RUNS (default 5) and the ratio are printed.
#
#   scripts/bench-build.sh [RUNS]
#   NODUS_BIN=target/debug/nodus scripts/bench-build.sh   (skip the release build)
#
# Cleans up only its own projects' containers, volumes, networks and images.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-5}
IMAGE=${NODUS_BENCH_PG_IMAGE:-nodus/postgres-standin:15}
P="nodus-bench-build-$$"
PC="nodus-bench-buildc-$$"
FILES=${NODUS_BENCH_FILES:-20000}

log() { echo "bench-build: $*" >&2; }
if [ -n "${NODUS_BIN:-}" ]; then
  NODUS=$NODUS_BIN
else
  cargo build --release --locked >&2
  NODUS="$ROOT/target/release/nodus"
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || scripts/build-images.sh >&2
command -v docker-compose >/dev/null || { log "docker-compose not found"; exit 1; }

WORK=$(mktemp -d)
mkdir -p "$WORK/app" "$WORK/big/ctx"
cat >"$WORK/app/Dockerfile" <<DF
FROM $IMAGE
COPY hello.txt /hello.txt
ENTRYPOINT []
CMD ["sh", "-c", "trap 'exit 0' TERM INT; while sleep 1; do :; done"]
DF
echo hello >"$WORK/app/hello.txt"
cat >"$WORK/stack.yaml" <<YAML
services:
  db:
    image: $IMAGE
    environment:
      POSTGRES_PASSWORD: bench-pw
  app:
    build: ./app
    depends_on: [db]
YAML
n() { "$NODUS" -q -f "$WORK/stack.yaml" -p "$P" "$@"; }
dc() { docker-compose -p "$PC" -f "$WORK/.nodus/compose.yaml" "$@"; }
cleanup() {
  dc down -v >/dev/null 2>&1 || true
  n down --volumes --yes --no-snapshot >/dev/null 2>&1 || true
  for proj in "$P" "$PC"; do
    for id in $(docker ps -aq --filter "label=com.docker.compose.project=$proj"); do docker rm -f -v "$id" >/dev/null; done
    for v in $(docker volume ls -q --filter "label=com.docker.compose.project=$proj"); do docker volume rm -f "$v" >/dev/null; done
  done
  for id in $(docker image ls -q --filter "label=io.nodus.project=$P"); do docker rmi -f "$id" >/dev/null 2>&1 || true; done
  docker rmi -f "${PC}_app" "${PC}-app" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { local s; s=$(now); "$@" >/dev/null 2>&1 || { log "failed: $*"; exit 1; }; echo "$(now) - $s" | bc -l; }
median() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }

log "first up (builds the image), then docker-compose's first up (builds its own)"
n up --no-doctor >&2
dc up -d >&2

log "no-change up: $RUNS alternating runs each"
A=(); B=()
for _ in $(seq "$RUNS"); do
  A+=("$(secs n up --no-doctor)")
  B+=("$(secs dc up -d)")
done
MA=$(printf '%s\n' "${A[@]}" | median); MB=$(printf '%s\n' "${B[@]}" | median)
echo "no-change up with a built service: nodus ${MA}s  docker-compose up -d ${MB}s  ratio nodus/compose $(echo "$MA / $MB" | bc -l | xargs printf '%.2f')"

log "creating $FILES small files"
(cd "$WORK/big/ctx" && for d in $(seq 0 99); do mkdir -p "d$d"; for f in $(seq 0 $((FILES / 100 - 1))); do echo "file $d/$f" >"d$d/f$f.txt"; done; done)
printf 'FROM %s\nCOPY . /ctx\n' "$IMAGE" >"$WORK/big/ctx/Dockerfile"
cat >"$WORK/big/stack.yaml" <<YAML
services:
  big:
    build: ./ctx
YAML
nb() { "$NODUS" -q -f "$WORK/big/stack.yaml" -p "$P" "$@"; }
tarwc() { (cd "$WORK/big/ctx" && tar -c . | wc -c); }
nb build --dry-run >/dev/null; tarwc >/dev/null  # warm the page cache
A=(); B=()
for _ in $(seq "$RUNS"); do
  A+=("$(secs nb build --dry-run)")
  B+=("$(secs tarwc)")
done
MA=$(printf '%s\n' "${A[@]}" | median); MB=$(printf '%s\n' "${B[@]}" | median)
echo "$FILES-file context: nodus build --dry-run (hash) ${MA}s  tar -c . | wc -c ${MB}s  ratio $(echo "$MA / $MB" | bc -l | xargs printf '%.2f')"
