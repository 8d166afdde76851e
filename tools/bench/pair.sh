# Sourced by the bench scripts: two network namespaces joined by a veth pair
# with the vectors' addresses (A ab0 fe80::1:1 fd00:1::1, B ba0 fe80::1:2
# fd00:1::2), no DAD, no autoconfigured addresses. The caller deletes them
# (ip netns del) in its EXIT trap, or traps pair_cleanup.

# Stops the processes in $pids, deletes namespaces $a and $b and the
# directory $dir: a script's EXIT trap (`trap pair_cleanup EXIT`).
pair_cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true
  rm -rf "$dir"
}
veth_pair() { # a b
  local a=$1 b=$2 x
  ip netns add "$a"; ip netns add "$b"
  ip -n "$a" link set lo up; ip -n "$b" link set lo up
  ip -n "$a" link add ab0 type veth peer name ba0 netns "$b"
  for x in "$a ab0 fe80::1:1 fd00:1::1" "$b ba0 fe80::1:2 fd00:1::2"; do
    set -- $x
    ip -n "$1" link set "$2" addrgenmode none
    ip -n "$1" link set "$2" up
    ip -n "$1" addr add "$3/64" dev "$2" nodad
    ip -n "$1" addr add "$4/64" dev "$2" nodad
  done
}
