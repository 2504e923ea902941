#!/usr/bin/env bash
# The whole test suite, from a fresh machine with a Rust toolchain: installs
# the system tools the tests use when they are missing, then runs every
# test of the workspace. CI runs exactly this (.ci/run).
#
# - prlimit (util-linux, in every Debian install): the full-disk test sets
#   a running node's file-size limit with it.
# SQLite (for the benches) is built from source by rusqlite's `bundled`
# feature; the end-to-end tests build and start hotblock's own binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v prlimit >/dev/null; then
    apt-get update -qq && apt-get install -y -qq util-linux
fi
exec cargo test --workspace "$@"
