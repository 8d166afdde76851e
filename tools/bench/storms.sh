#!/usr/bin/env bash
# Legitimate traffic under storms from one on-link source, before and after:
# runs the namespace storm test (tools/tests/netns_storms.rs: discovery,
# flood, served-discovery and connection storms; discovery, synchronization,
# negotiation and flooding directly and through a relay) with the relay
# under attack running graspd built at REV, then this checkout's graspd, printing the success
# rates and the relay's counters of each. Release builds, so the storms run
# at full speed. Root only; the test creates and deletes its namespaces.
#
#   sudo tools/bench/storms.sh [REV] [SECONDS]   (default eff0bf1, the commit
#                                                 before issue 11's hardening; 6 s)
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:-eff0bf1}; secs=${2:-6}
[ "$(id -u)" = 0 ] || { echo "storms.sh: needs root (network namespaces)"; exit 1; }
old=$(mktemp -d)
cleanup() { git worktree remove --force "$old/src" 2>/dev/null || true; rm -rf "$old"; }
trap cleanup EXIT
git worktree add -q --detach "$old/src" "$rev"
# Its own target directory: sharing this checkout's would leave cargo
# believing the old crates are this checkout's (their fingerprints name the
# old tree's files).
echo "storms: building graspd at $rev"
(cd "$old/src" && cargo build --release -q -p grasp-tools --bin graspd --target-dir "$old/target")
cp "$old/target/release/graspd" "$old/graspd"
cargo build --release -q -p grasp-tools --bin graspd
run() { # label graspd
  echo "== $1 =="
  GRASP_STORM_GRASPD=$2 GRASP_STORM_REPORT_ONLY=1 GRASP_STORM_SECS=$secs \
    cargo test --release -q -p grasp-tools --test netns_storms -- --nocapture 2>&1 \
    | grep -E '^(no storm|[A-Za-z]+ storm|  R:)' || true
}
run "graspd at $rev" "$old/graspd"
run "graspd at $(git rev-parse --short HEAD)" "$PWD/target/release/graspd"
