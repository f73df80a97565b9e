#!/usr/bin/env bash
# Benchmark: engine connection set-up. `nodus status` over the unix socket vs over ssh:// to an
# sshd on loopback, beside the docker CLI doing the same (`docker ps`) over the same two paths, in
# one run (hyperfine, alternating is hyperfine's default per command; medians reported).
#
#   scripts/bench-engine.sh [RUNS]                 (default 10)
#   NODUS_BIN=target/debug/nodus scripts/bench-engine.sh 5
#
# Starts its own sshd (openssh-server) on a free loopback port with a throwaway key, and a
# one-service stack of its own project; cleans up only those.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-10}
IMAGE=${NODUS_BENCH_PG_IMAGE:-nodus/postgres-standin:15}
PROJECT="nodus-bench-engine-$$"
log() { echo "bench-engine: $*" >&2; }

scripts/ensure-env.sh
command -v hyperfine >/dev/null 2>&1 || { apt-get install -y -qq hyperfine >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq hyperfine) >/dev/null 2>&1; }
if [ -n "${NODUS_BIN:-}" ]; then NODUS=$NODUS_BIN; else cargo build --release --locked >&2; NODUS="$ROOT/target/release/nodus"; fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || scripts/build-images.sh >&2

WORK=$(mktemp -d)
SSHD_PID=
cleanup() {
  [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
  "$NODUS" -f "$WORK/stack.yaml" -p "$PROJECT" down --no-snapshot >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/ssh/bin" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/id"
cp "$WORK/ssh/id.pub" "$WORK/ssh/authorized_keys"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/ssh/sshd_config" <<CFG
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/ssh/host_key
PidFile $WORK/ssh/sshd.pid
AuthorizedKeysFile $WORK/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
CFG
cat >"$WORK/ssh/ssh_config" <<CFG
Host *
  IdentityFile $WORK/ssh/id
  IdentitiesOnly yes
  UserKnownHostsFile $WORK/ssh/known_hosts
  StrictHostKeyChecking accept-new
  LogLevel ERROR
CFG
printf '#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' "$WORK/ssh/ssh_config" >"$WORK/ssh/bin/ssh"
chmod 755 "$WORK/ssh/bin/ssh"
/usr/sbin/sshd -D -e -f "$WORK/ssh/sshd_config" 2>"$WORK/sshd.log" &
SSHD_PID=$!
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
export PATH="$WORK/ssh/bin:$PATH"
SSH_HOST="ssh://root@127.0.0.1:$PORT"

cat >"$WORK/stack.yaml" <<YAML
services:
  db:
    image: $IMAGE
    environment:
      POSTGRES_PASSWORD: bench
YAML
"$NODUS" -q -f "$WORK/stack.yaml" -p "$PROJECT" up >&2

N="$NODUS -q -f $WORK/stack.yaml -p $PROJECT status"
hyperfine -N --style basic --runs "$RUNS" --warmup 1 --export-json "$WORK/h.json" \
  -n "nodus status (unix)" "env -u DOCKER_HOST $N" \
  -n "nodus status (ssh)" "env DOCKER_HOST=$SSH_HOST $N" \
  -n "docker ps (unix)" "env -u DOCKER_HOST docker ps" \
  -n "docker ps (ssh)" "env DOCKER_HOST=$SSH_HOST docker ps" >&2
python3 - "$WORK/h.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
med = {k: v["median"] * 1000 for k, v in r.items()}
for k, v in med.items():
    print(f"{k:24s} median {v:7.1f} ms")
print(f"ssh cost, nodus:  +{med['nodus status (ssh)'] - med['nodus status (unix)']:.1f} ms")
print(f"ssh cost, docker: +{med['docker ps (ssh)'] - med['docker ps (unix)']:.1f} ms")
print(f"nodus status over ssh / docker ps over ssh: {med['nodus status (ssh)'] / med['docker ps (ssh)']:.2f}x")
PY
