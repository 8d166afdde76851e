#!/usr/bin/env bash
# Synchronizations per second over a veth pair between two network
# namespaces: the GRASP engine on the plain ACP side by side with a bare tokio
# loop doing the same socket work and with the engine under QUADS and over
# the TLS backend (certificates from a throwaway grasp-ca CA), plus
# negotiation rates, first-answer discovery latency, idle RSS and memory per
# open session. Root only. Creates namespaces gb<pid>a / gb<pid>b with the
# vectors' addresses and deletes them on exit. Traffic stays inside them.
#
#   sudo tools/bench/veth.sh [SECONDS] [CONCURRENCY...]
#   e.g. tools/bench/veth.sh 10 1 4     (default)
#        tools/bench/veth.sh 60 1       (the 60 s flatness run)
#   WORKERS=2 tools/bench/veth.sh       (tokio multi-thread runtime, 2 workers,
#                                        both sides; default 0 = current-thread)
#   SESSIONS=20000 tools/bench/veth.sh  (sessions held for the memory figure)
#   PIN=1 tools/bench/veth.sh          (server on CPU 1, client on CPU 0: on a
#                                        2-core VM the two otherwise share a
#                                        core in some runs and not in others)
#   BASELINE=/path/to/old/grasp-bench tools/bench/veth.sh
#                                       (each engine row also run with an older
#                                        build, right after, for before/after)
#   ROUNDS=7 tools/bench/veth.sh 5 1 4  (synchronization only: bare, engine and
#                                        baseline interleaved, ROUNDS times per
#                                        concurrency, then the medians of each
#                                        rate and CPU and of the per-round
#                                        ratios; on a noisy VM single runs
#                                        spread by tens of percent)
#   RATE=5000 ROUNDS=7 tools/bench/veth.sh 5 1
#                                       (the same at a fixed offered load, all
#                                        with today's client: the servers' CPU
#                                        per request compared at equal load;
#                                        free-running, a slower server is also
#                                        charged more idle wake-ups per request)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}; shift || true
concs=("${@:-1 4}")
workers=${WORKERS:-0}
pin_a=(); pin_b=()
if [ "${PIN:-0}" = 1 ]; then pin_a=(taskset -c 0); pin_b=(taskset -c 1); fi
[ "$(id -u)" = 0 ] || { echo "veth.sh: needs root (network namespaces)"; exit 1; }
command -v ip >/dev/null || { echo "veth.sh: needs iproute2"; exit 1; }

cargo build --release -q -p grasp-tools --bin grasp-bench --bin grasp-ca
bin=target/release/grasp-bench
a=gb$$a; b=gb$$b
cadir=$(mktemp -d)
target/release/grasp-ca init --domain bench.lab --dir "$cadir" >/dev/null
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; rm -rf "$cadir"; }
trap cleanup EXIT
. tools/bench/pair.sh
veth_pair "$a" "$b"

tw() { ip netns exec "$a" ss -tan state time-wait 2>/dev/null | tail -n +2 | wc -l; }

run() { # mode conc port extra... (extra goes to both sides)
  local mode=$1 conc=$2 port=$3; shift 3
  ip netns exec "$b" "${pin_b[@]}" "$bin" serve --mode "$mode" --port "$port" --seconds $((secs + 3)) --workers "$workers" "$@" > /tmp/gb$$.srv 2>&1 &
  local spid=$!
  sleep 1
  ip netns exec "$a" "${pin_a[@]}" "$bin" client --mode "$mode" --peer fd00:1::2 --port "$port" \
      --seconds "$secs" --concurrency "$conc" --workers "$workers" "$@"
  wait "$spid"
  cat /tmp/gb$$.srv
  echo "  requester TIME_WAIT sockets: $(tw)"
}

runneg() { # steps conc port
  local steps=$1 conc=$2 port=$3
  ip netns exec "$b" "${pin_b[@]}" "$bin" serve --mode grasp --port "$port" --seconds $((secs + 3)) \
      --workers "$workers" --negotiate "$steps" > /tmp/gb$$.srv 2>&1 &
  local spid=$!
  sleep 1
  echo -n "negotiation, server counter-offers $steps time(s): "
  ip netns exec "$a" "${pin_a[@]}" "$bin" client --mode grasp --peer fd00:1::2 --port "$port" \
      --seconds "$secs" --concurrency "$conc" --workers "$workers" --negotiate
  wait "$spid"
  cat /tmp/gb$$.srv
}

port=7100
new_bin=$bin

median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR+1)/2]; else printf "%.4g\n", (v[NR/2]+v[NR/2+1])/2}'; }
rate_of() { sed -n 's/.*= \([0-9]*\)\/s;.*/\1/p' "$1" | head -1; }
cpu_of() { sed -n 's/.* = \([0-9.]*\) ms per 1000.*/\1/p' "$1" | head -1; }
one() { # label conc port [bin]: appends "label rate cpu" to $log
  local label=$1 conc=$2 port=$3 out=/tmp/gb$$.one
  ip netns exec "$b" "${pin_b[@]}" "${4:-$bin}" serve --mode "${label%%-*}" --port "$port" --seconds $((secs + 3)) --workers "$workers" > /tmp/gb$$.srv 2>&1 &
  local spid=$!
  sleep 1
  # At a fixed RATE every server gets today's client (the baseline's has no
  # --rate): the same load, so only the servers' CPU per request differs.
  local client=${4:-$bin} paced=()
  if [ -n "${RATE:-}" ]; then client=$new_bin; paced=(--rate "$RATE"); fi
  ip netns exec "$a" "${pin_a[@]}" "$client" client --mode "${label%%-*}" --peer fd00:1::2 --port "$port" \
      --seconds "$secs" --concurrency "$conc" --workers "$workers" "${paced[@]}" > "$out"
  wait "$spid"
  echo "$label $(rate_of "$out") $(cpu_of /tmp/gb$$.srv)" | tee -a "$log"
  rm -f "$out"
}
if [ -n "${ROUNDS:-}" ]; then
  log=$(mktemp)
  for c in ${concs[@]}; do
    echo "== $c requester(s): bare, grasp${BASELINE:+, baseline} interleaved, $ROUNDS rounds of ${secs} s${RATE:+ at $RATE requests/s} =="
    : > "$log"
    for r in $(seq "$ROUNDS"); do
      one bare "$c" $((port++))
      one grasp "$c" $((port++))
      if [ -n "${BASELINE:-}" ]; then one grasp-base "$c" $((port++)) "$BASELINE"; fi
      port=$((port + 1))
    done
    for l in bare grasp grasp-base; do
      grep -q "^$l " "$log" || continue
      echo "median $l: $(awk -v l=$l '$1 == l {print $2}' "$log" | median)/s, server cpu $(awk -v l=$l '$1 == l {print $3}' "$log" | median) ms per 1000"
    done
    # Per-round ratios against that round's bare run.
    awk '$1 == "bare" {br=$2; bc=$3} $1 != "bare" {print $1, $2/br, $3/bc}' "$log" > "$log.r"
    for l in grasp grasp-base; do
      grep -q "^$l " "$log.r" || continue
      echo "median per-round $l/bare: rate $(awk -v l=$l '$1 == l {print $2}' "$log.r" | median), server cpu $(awk -v l=$l '$1 == l {print $3}' "$log.r" | median)"
    done
    rm -f "$log.r"
  done
  rm -f "$log" /tmp/gb$$.srv
  exit 0
fi
# Runs "$@" with today's build and then, with BASELINE, with the older one
# on the next port (run and runneg take the port as their third argument).
both() {
  local f=$1 x=$2 c=$3 p=$4; shift 4
  "$f" "$x" "$c" "$p" "$@"
  if [ -n "${BASELINE:-}" ]; then
    echo "-- the same, baseline build ($BASELINE) --"
    bin=$BASELINE; "$f" "$x" "$c" $((p + 1)) "$@"; bin=$new_bin
  fi
}
for c in ${concs[@]}; do
  echo "== $c requester(s), ${secs} s each =="
  run bare "$c" $((port++))
  both run grasp "$c" $port; port=$((port + 2))
  echo "-- the same under QUADS (AES-256-GCM) --"
  both run grasp "$c" $port --quads; port=$((port + 2))
  echo "-- the same over TLS (mutual TLS 1.3, one connection per peer) --"
  ( export GRASP_BENCH_TLS_CA="$cadir"; both run grasp "$c" $port ); port=$((port + 3))
  both runneg 0 "$c" $port; port=$((port + 2))
  both runneg 1 "$c" $port; port=$((port + 2))
done
echo "== discovery, return on first answer =="
ip netns exec "$b" "${pin_b[@]}" "$bin" serve --mode grasp --port $((port)) --seconds 8 > /tmp/gb$$.srv 2>&1 &
spid=$!
sleep 1
ip netns exec "$a" "${pin_a[@]}" "$bin" client --mode grasp --peer fd00:1::2 --port $((port)) --seconds 1 --discoveries 1000
wait "$spid"; cat /tmp/gb$$.srv
echo "== memory per open negotiation session, ${SESSIONS:-10000} sessions held =="
ip netns exec "$b" "$bin" hold-serve --port $((port + 1)) --seconds 10 > /tmp/gb$$.srv 2>&1 &
spid=$!
sleep 2
ip netns exec "$a" "$bin" hold-client --peer fd00:1::2 --port $((port + 1)) --sessions "${SESSIONS:-10000}"
wait "$spid"; cat /tmp/gb$$.srv
rm -f /tmp/gb$$.srv
