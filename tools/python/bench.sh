#!/usr/bin/env bash
# Python ASAs through graspd (this package) side by side, in one run on one
# veth pair between two namespaces, with the bench's bare tokio loop and,
# when GRASPY names a checkout of graspy, with graspy as shipped doing the
# same: synchronizations a second with 1 and 4 threads, then negotiation
# round trips (an immediate accept). The peer is grasp-bench's engine in
# namespace B; graspd runs in A. Root only; creates namespaces gq<pid>a/b
# and deletes them, stops what it started, on exit.
#
#   sudo tools/python/bench.sh [SECONDS]              (default 10 per figure)
#   sudo GRASPY=/path/to/graspy tools/python/bench.sh 10
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (network namespaces)"; exit 1; }
cargo build --release -q -p grasp-tools --bin grasp-bench --bin graspd
bin=target/release/grasp-bench
venv=target/pyvenv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "cbor2>=5.4" "setuptools>=64" wheel
"$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps ./tools/python
py="$PWD/$venv/bin/python"
a=gq$$a; b=gq$$b
dir=$(mktemp -d)
pids=()
. tools/bench/pair.sh
trap pair_cleanup EXIT
veth_pair "$a" "$b"
total=$((12 * secs + 60))
ip netns exec "$b" "$bin" serve --mode bare --port 7301 --seconds $total > "$dir/bare.log" 2>&1 & pids+=($!)
ip netns exec "$b" "$bin" serve --mode grasp --port 7300 --seconds $total > "$dir/peer.log" 2>&1 & pids+=($!)
ip netns exec "$b" "$bin" serve --mode grasp --port 7302 --negotiate 0 --seconds $total > "$dir/neg.log" 2>&1 & pids+=($!)
sleep 1
bench="tools/python/bench/sync_bench.py --peer fd00:1::2"

echo "== the bare tokio loop (namespace A) =="
for c in 1 4; do
  ip netns exec "$a" "$bin" client --mode bare --peer fd00:1::2 --port 7301 --seconds "$secs" --concurrency "$c"
done

echo "== Python ASAs through graspd (graspd in namespace A) =="
cat > "$dir/a.toml" <<TOML
security = "none"
interfaces = ["ab0"]
[api]
socket = "$dir/api.sock"
[control]
socket = "$dir/control.sock"
TOML
ip netns exec "$a" target/release/graspd --config "$dir/a.toml" > "$dir/graspd.log" 2>&1 &
dpid=$!; pids+=($dpid)
for _ in $(seq 50); do [ -S "$dir/api.sock" ] && break; sleep 0.1; done
for t in 1 4; do
  GRASP_API_SOCKET="$dir/api.sock" "$py" $bench --port 7300 --seconds "$secs" --threads $t --label "graspd-asa sync"
done
GRASP_API_SOCKET="$dir/api.sock" "$py" $bench --port 7302 --seconds "$secs" --threads 1 --negotiate --label "graspd-asa negotiation"
kill "$dpid"; wait "$dpid" 2>/dev/null || true

if [ -n "${GRASPY:-}" ]; then
  echo "== graspy as shipped ($GRASPY, its own engine in namespace A) =="
  gv=target/graspyvenv
  [ -x "$gv/bin/python" ] || python3 -m venv "$gv"
  "$gv/bin/pip" install -q --disable-pip-version-check cbor2 netifaces
  gpy="$PWD/$gv/bin/python"
  for t in 1 4; do
    (cd "$dir" && PYTHONPATH="$GRASPY" timeout $((secs + 60)) ip netns exec "$a" "$gpy" "$OLDPWD/tools/python/bench/sync_bench.py" \
        --peer fd00:1::2 --port 7300 --seconds "$secs" --threads $t --label "graspy as shipped sync" < /dev/null 2>&1 | grep -E "^graspy|nothing" || true)
  done
else
  echo "== graspy as shipped: skipped (set GRASPY to a graspy checkout to include it) =="
fi
