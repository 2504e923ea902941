#!/usr/bin/env bash
# The whole test suite, from a fresh machine with a Rust toolchain: installs
# the system tools the tests use when they are missing, then runs every
# test of the workspace. CI runs exactly this (.ci/run).
#
# - prlimit (util-linux, in every Debian install): the full-disk test sets
#   a running node's file-size limit with it.
# - etcd (Debian's etcd-server): the coordinator tests start a real one on
#   loopback ports. A service the package may start is stopped: the tests
#   run their own.
# - redis-py (PyPI's `redis`) and ioredis (npm): the client suites
#   (node/tests/clients.rs) run every everyday command through them with
#   their defaults, and the failover tests drive their Sentinel clients.
#   ioredis goes to node/tests/clients/node_modules.
# SQLite (for the benches) is built from source by rusqlite's `bundled`
# feature; the end-to-end tests build and start hotblock's own binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v prlimit >/dev/null || missing+=(util-linux)
command -v etcd >/dev/null || missing+=(etcd-server)
if ((${#missing[@]})); then
    echo "installing ${missing[*]} (needed by the tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    # Debian starts an etcd service on the default ports; the tests run
    # their own on free ones and need none.
    if command -v systemctl >/dev/null; then systemctl stop etcd 2>/dev/null || true; fi
fi
if ! python3 -c "import redis" 2>/dev/null; then
    echo "installing redis-py (needed by the client and failover tests)"
    if ! command -v python3 >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip
    fi
    python3 -m pip install --quiet redis \
        || python3 -m pip install --quiet --break-system-packages redis
fi
if [ ! -d node/tests/clients/node_modules/ioredis ]; then
    echo "installing ioredis (needed by the client and failover tests)"
    if ! command -v npm >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
    fi
    npm install --prefix node/tests/clients --no-audit --no-fund --silent
fi
exec cargo test --workspace "$@"
