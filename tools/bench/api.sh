#!/usr/bin/env bash
# graspd's ASA socket between two network namespaces, side by side with the
# in-process engine (issue 12's speed targets): synchronizations a second
# with 1 and 4 requesters, in process and as clients of graspd (the Rust
# client, through graspd to the same peer); cached-discovery round trips;
# then 1,000 connected clients with an objective each: graspd's RSS and
# another client's rate without and with them; and the floor under every
# figure, a bare Unix-socket echo between two processes. Everything runs
# twice: unpinned, and with graspd and the requesters pinned to one CPU
# (the peer on the other), where no cross-CPU wake-up sits in the round
# trip (on a VM that wake-up alone costs ~50 us). Root only. Creates
# namespaces ga<pid>a / ga<pid>b with the vectors' addresses and deletes
# them, and stops the processes it started, on exit.
#
#   sudo tools/bench/api.sh [SECONDS]     (default 10 per rate)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
[ "$(id -u)" = 0 ] || { echo "api.sh: needs root (network namespaces)"; exit 1; }
command -v ip >/dev/null || { echo "api.sh: needs iproute2"; exit 1; }

cargo build --release -q -p grasp-tools --bin grasp-bench --bin graspd
bin=target/release/grasp-bench
a=ga$$a; b=ga$$b
dir=$(mktemp -d)
pids=()
. tools/bench/pair.sh
trap pair_cleanup EXIT
veth_pair "$a" "$b"

pass() { # PIN (a taskset prefix or nothing)
local pin="$1"
# The peer: an engine answering EX.bench, for the whole script.
ip netns exec "$b" taskset -c 1 "$bin" serve --mode grasp --port 7200 --seconds $((8 * secs + 120)) > "$dir/peer.log" 2>&1 &
pids+=($!)
sleep 1
client() { "$@" --mode grasp --peer fd00:1::2 --port 7200; }

echo "== in process: the requesters' own engine in namespace A =="
for c in 1 4; do
  client ip netns exec "$a" $pin "$bin" client --iface ab0 --seconds "$secs" --concurrency "$c"
done
client ip netns exec "$a" $pin "$bin" client --iface ab0 --seconds 1 --discoveries 10000 --cached

echo "== through graspd: graspd in namespace A, the requesters its ASA clients =="
cat > "$dir/a.toml" <<TOML
security = "none"
interfaces = ["ab0"]
[api]
socket = "$dir/api.sock"
connections = 1100
[control]
socket = "$dir/control.sock"
TOML
ip netns exec "$a" $pin target/release/graspd --config "$dir/a.toml" > "$dir/graspd.log" 2>&1 &
dpid=$! # graspd itself: ip netns exec and taskset exec it
pids+=($dpid)
for _ in $(seq 50); do [ -S "$dir/api.sock" ] && break; sleep 0.1; done
[ -S "$dir/api.sock" ] || { cat "$dir/graspd.log"; exit 1; }
for c in 1 4; do
  client $pin "$bin" client --api "$dir/api.sock" --seconds "$secs" --concurrency "$c"
done
client $pin "$bin" client --api "$dir/api.sock" --seconds 1 --discoveries 10000 --cached

echo "== 1,000 ASA clients on graspd =="
$pin "$bin" api-crowd --api "$dir/api.sock" --pid "$dpid" --clients 1000 --peer fd00:1::2 --port 7200 --seconds "$secs"
echo "== the floor: a bare Unix-socket echo =="
$pin "$bin" unix-echo --socket "$dir/echo.sock" --serve &
epid=$!
sleep 0.5
$pin "$bin" unix-echo --socket "$dir/echo.sock" --count 10000
wait "$epid"
kill "$dpid"; wait "$dpid" 2>/dev/null || true
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
pids=()
rm -f "$dir"/*.sock
}
echo "######## unpinned ########"
pass ""
echo "######## graspd and the requesters on CPU 0, the peer on CPU 1 ########"
pass "taskset -c 0"
