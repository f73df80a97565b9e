#!/usr/bin/env bash
# Makes a fresh machine ready for nodus' tests and demo: a running Docker engine and the Debian
# packages the stand-in images are built from (postgresql-15, redis, busybox-static) plus
# docker-compose (used by tests to check compatibility). Idempotent; prints what it does on stderr.
set -euo pipefail

log() { echo "ensure-env: $*" >&2; }

need=()
have() { dpkg -s "$1" >/dev/null 2>&1; }
command -v docker >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
have postgresql-15 || need+=(postgresql-15)
have postgresql-client-15 || need+=(postgresql-client-15)
have redis-server || need+=(redis-server)
have redis-tools || need+=(redis-tools)
have busybox-static || need+=(busybox-static)
# ssh:// engine tests run an sshd on a loopback port and reach it with the system ssh.
have openssh-server || need+=(openssh-server)
# JUnit reports are validated against tests/fixtures/junit.xsd with xmllint.
have libxml2-utils || need+=(libxml2-utils)
have openssh-client || need+=(openssh-client)

if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

if ! docker info >/dev/null 2>&1; then
  log "Docker engine not reachable; starting dockerd in the background"
  (nohup dockerd >/var/log/nodus-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/nodus-dockerd.log"; exit 1; }
fi
log "Docker engine $(docker version -f '{{.Server.Version}}' 2>/dev/null) is up"
