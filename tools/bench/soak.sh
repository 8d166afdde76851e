#!/usr/bin/env bash
# Soak: graspd running Briggs under constant mixed load for MINUTES (default
# 10) between two network namespaces; its RSS is printed every minute and the
# run fails when RSS at the last minute is more than 2 MiB above minute 2
# (issue 11 §1), or when more than 1% of the operations fail. Also prints how
# much graspd logged at RUST_LOG=info. Root only. Creates namespaces
# gs<pid>a / gs<pid>b (veth, fd00:1::/64) and deletes them on exit.
#
#   sudo tools/bench/soak.sh [MINUTES] [RATE]     (default 10 500)
#   GRASPD=path/to/graspd tools/bench/soak.sh     (another build, e.g. older)
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes=${1:-10}; rate=${2:-500}
[ "$(id -u)" = 0 ] || { echo "soak.sh: needs root (network namespaces)"; exit 1; }
command -v ip >/dev/null || { echo "soak.sh: needs iproute2"; exit 1; }

cargo build --release -q -p grasp-tools --bin grasp-bench --bin graspd
graspd=${GRASPD:-target/release/graspd}
a=gs$$a; b=gs$$b
dir=$(mktemp -d)
dpid=
cleanup() {
  [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null || true
  ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
. tools/bench/pair.sh
veth_pair "$a" "$b"
cat > "$dir/graspd.toml" <<CONF
security = "none"
interfaces = ["ba0"]
asas = ["briggs"]
[control]
socket = "$dir/graspd.sock"
CONF
RUST_LOG=info ip netns exec "$b" "$graspd" --config "$dir/graspd.toml" 2> "$dir/graspd.log" > /dev/null &
dpid=$!   # ip netns exec execs graspd: this is graspd's own PID
for _ in $(seq 50); do [ -S "$dir/graspd.sock" ] && break; sleep 0.1; done
[ -S "$dir/graspd.sock" ] || { cat "$dir/graspd.log"; exit 1; }
sleep 1
status=0
ip netns exec "$a" target/release/grasp-bench soak --iface ab0 --pid "$dpid" \
    --minutes "$minutes" --rate "$rate" || status=$?
echo "graspd logged $(wc -c < "$dir/graspd.log") bytes at info ($(wc -l < "$dir/graspd.log") lines)"
exit $status
