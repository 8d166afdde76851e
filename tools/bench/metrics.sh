#!/usr/bin/env bash
# What a Prometheus scrape costs graspd (issue 15): synchronizations a
# second answered by a graspd (its [[serve]] objective) to the bench's
# requester on a veth pair, with /metrics off, and on while being scraped
# SCRAPES times a second (a Prometheus server scrapes every 15 s by
# default; 10/s is 150 times that). Rounds alternate off and on; medians
# are printed side by side. Root only. Creates namespaces gm<pid>a/b with
# the vectors' addresses and deletes them, stops what it started, on exit.
#
#   sudo tools/bench/metrics.sh [SECONDS] [ROUNDS] [SCRAPES]   (default 5 5 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}; rounds=${2:-5}; scrapes=${3:-10}
[ "$(id -u)" = 0 ] || { echo "metrics.sh: needs root (network namespaces)"; exit 1; }
command -v python3 >/dev/null || { echo "metrics.sh: needs python3 (the scraper)"; exit 1; }
cargo build --release -q -p grasp-tools --bin grasp-bench --bin graspd
bin=target/release/grasp-bench
a=gm$$a; b=gm$$b
dir=$(mktemp -d)
pids=()
. tools/bench/pair.sh
trap pair_cleanup EXIT
veth_pair "$a" "$b"

# graspd in B answers EX.bench on port 7300; with metrics on [::1]:9464.
conf() { # METRICS(0/1)
  cat <<TOML
security = "none"
interfaces = ["ba0"]
port = 7300
[[serve]]
name = "EX.bench"
value = '{"a": 1}'
TOML
  [ "$1" = 1 ] && printf '[metrics]\nlisten = "[::1]:9464"\n'
  true
}
scraper() { # the scrape loop, in B, until killed
  exec ip netns exec "$b" python3 -c '
import sys, time, urllib.request
gap = 1.0 / float(sys.argv[1]); n = 0; t = time.monotonic()
while True:
    body = urllib.request.urlopen("http://[::1]:9464/metrics", timeout=5).read()
    n += 1
    if n == 1 and b"grasp_messages_received_total" not in body:
        sys.exit("the scrape has no message counters")
    t += gap
    time.sleep(max(0.0, t - time.monotonic()))
' "$scrapes"
}
rate() { sed -n 's/.* = \([0-9]*\)\/s;.*/\1/p'; }
off=(); on=()
for r in $(seq "$rounds"); do
  for m in 0 1; do
    conf "$m" > "$dir/b.toml"
    ip netns exec "$b" target/release/graspd --config "$dir/b.toml" > "$dir/graspd.log" 2>&1 &
    gp=$!; pids+=($gp)
    for _ in $(seq 50); do
      ip netns exec "$b" ss -ltn 2>/dev/null | grep -q ':7300 ' && { [ "$m" = 0 ] || ip netns exec "$b" ss -ltn | grep -q ':9464 '; } && break
      sleep 0.1
    done
    sp=
    if [ "$m" = 1 ]; then scraper & sp=$!; pids+=($sp); fi
    x=$(ip netns exec "$a" "$bin" client --mode grasp --iface ab0 --peer fd00:1::2 --port 7300 --seconds "$secs" | rate)
    [ -n "$sp" ] && { kill "$sp" 2>/dev/null; wait "$sp" 2>/dev/null || true; }
    kill "$gp"; wait "$gp" 2>/dev/null || true
    if [ "$m" = 0 ]; then off+=("$x"); else on+=("$x"); fi
    echo "round $r metrics $([ "$m" = 1 ] && echo "on, scraped ${scrapes}/s" || echo off): $x syncs/s"
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${off[@]}"); mn=$(median "${on[@]}")
echo "median: metrics off $mo/s, on and scraped ${scrapes}/s $mn/s = $(awk -v a="$mn" -v b="$mo" 'BEGIN {printf "%.1f%%", 100 * a / b}') of off"
