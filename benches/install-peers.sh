#!/usr/bin/env bash
# Installs the peers `cargo bench --bench throughput` compares against when
# they are present: task-spooler (tsp), nq and pueue. Not needed by CI.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends nq task-spooler
cargo install pueue --locked
