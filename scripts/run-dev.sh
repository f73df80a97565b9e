#!/usr/bin/env bash
# The main job: build nodus and bring up templates/stacks/dev.yaml (postgres + redis), guarded, then show
# status and census. Uses the real images when present or pullable; otherwise builds registry-free
# stand-ins and says so. Leaves the stack running: `target/release/nodus -f templates/stacks/dev.yaml down`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-env.sh
cargo build --release --locked >&2
NODUS=target/release/nodus

image_available() {
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  timeout 60 docker pull -q "$1" >/dev/null 2>&1
}
if ! image_available postgres:15-alpine || ! image_available redis:7-alpine; then
  echo "run-dev: postgres:15-alpine / redis:7-alpine are neither present nor pullable here;" >&2
  echo "run-dev: building local stand-in images (scripts/build-images.sh) and using them instead." >&2
  scripts/build-images.sh
  export NODUS_POSTGRES_IMAGE=nodus/postgres-standin:15
  export NODUS_REDIS_IMAGE=nodus/redis-standin:7
fi
$NODUS -f templates/stacks/dev.yaml up
$NODUS -f templates/stacks/dev.yaml status
$NODUS -f templates/stacks/dev.yaml census
$NODUS -f templates/stacks/dev.yaml verify
echo "run-dev: the dev stack is up. Stop it with: $NODUS -f templates/stacks/dev.yaml down" >&2
