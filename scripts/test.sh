#!/usr/bin/env bash
# The test command: unit tests (fake engine) and end-to-end tests (real engine, real PostgreSQL in
# locally built stand-in images). Works on a fresh machine: installs/starts what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-env.sh
scripts/build-images.sh
# e2e tests start real databases; 3 at a time fits 2 cores.
cargo test --locked --all-targets -- --test-threads="${NODUS_TEST_THREADS:-3}"
