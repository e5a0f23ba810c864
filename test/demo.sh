#!/usr/bin/env bash
# demo.sh — two sites in network namespaces joined by a cab cable.
#
#   sudo bash test/demo.sh [PATH_TO_CAB]     (default ./cab; make demo builds it)
#
# Site A (server) and site B (client) are network namespaces joined by a veth
# underlay, 198.51.100.1 and 198.51.100.2. cab carries Ethernet frames between
# their TAP devices, 192.0.2.1 and 192.0.2.2, sealed with a pre-shared key.
# Everything the script creates is removed when it exits.
set -euo pipefail

cab=${1:-./cab}
if [[ $cab != */* ]]; then cab=./$cab; fi
if [[ ! -x $cab ]]; then
	echo "demo: no cab binary at $cab (run make demo, or give its path)" >&2
	exit 1
fi
cab=$(cd "$(dirname "$cab")" && pwd)/$(basename "$cab")
if [[ $(id -u) != 0 ]]; then
	echo "demo: needs root (network namespaces, TAP devices)" >&2
	exit 1
fi
# Besides cab and bash, the demo needs ip and ping (make demo installs them).
for c in ip ping; do
	if ! command -v "$c" >/dev/null 2>&1; then
		echo "demo: $c is missing: apt-get install iproute2 iputils-ping (make demo does that)" >&2
		exit 1
	fi
done

nsA=cab-demo-$$-a
nsB=cab-demo-$$-b
work=$(mktemp -d /tmp/cab-demo.XXXXXX)
pids=()
made=()

cleanup() {
	local rc=$?
	set +e
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	for ns in "${made[@]}"; do
		ip netns del "$ns"
	done
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n=== %s\n' "$*"; }

# wait_tap NS PID: wait (at most 10 s) for cab to create cab0 in NS.
wait_tap() {
	for _ in $(seq 100); do
		if ip -n "$1" link show dev cab0 >/dev/null 2>&1; then
			return 0
		fi
		if ! kill -0 "$2" 2>/dev/null; then
			echo "demo: cab in $1 exited:" >&2
			cat "$work/$1.log" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "demo: no cab0 in $1 after 10 s" >&2
	return 1
}

step "two sites: network namespaces $nsA and $nsB"
for ns in "$nsA" "$nsB"; do
	ip netns add "$ns"
	made+=("$ns")
	ip -n "$ns" link set lo up
done

step "underlay: veth $nsA 198.51.100.1/24 <-> $nsB 198.51.100.2/24"
ip link add ul-a netns "$nsA" type veth peer name ul-b netns "$nsB"
ip -n "$nsA" addr add 198.51.100.1/24 dev ul-a
ip -n "$nsB" addr add 198.51.100.2/24 dev ul-b
ip -n "$nsA" link set ul-a up
ip -n "$nsB" link set ul-b up

step "pre-shared key: cab genkey -o site.psk"
"$cab" genkey -o "$work/site.psk"
ls -l "$work/site.psk"

step "site A: cab server -p 6666 -s tap:cab0 --psk site.psk"
ip netns exec "$nsA" "$cab" server -p 6666 -s tap:cab0 --psk "$work/site.psk" \
	--state-dir "$work/state-a" --name "$nsA" 2>"$work/$nsA.log" &
pids+=($!)
wait_tap "$nsA" "${pids[-1]}"

step "site B: cab client -s tap:cab0 --psk site.psk 198.51.100.1:6666"
ip netns exec "$nsB" "$cab" client -s tap:cab0 --psk "$work/site.psk" \
	--state-dir "$work/state-b" --name "$nsB" 198.51.100.1:6666 2>"$work/$nsB.log" &
pids+=($!)
wait_tap "$nsB" "${pids[-1]}"

step "overlay: 192.0.2.1/24 on A's cab0, 192.0.2.2/24 on B's cab0"
ip -n "$nsA" addr add 192.0.2.1/24 dev cab0
ip -n "$nsB" addr add 192.0.2.2/24 dev cab0
ip -n "$nsA" addr show dev cab0
ip -n "$nsB" addr show dev cab0

step "ping across the cable: B -> 192.0.2.1"
ok=0
for _ in $(seq 20); do # the handshake may still be under way
	if ip netns exec "$nsB" ping -n -c 1 -W 1 192.0.2.1 >/dev/null 2>&1; then
		ok=1
		break
	fi
done
if ! ip netns exec "$nsB" ping -n -c 5 -i 0.2 -W 1 192.0.2.1 || [[ $ok != 1 ]]; then
	step "FAILED: no ping across the cable; the logs:"
	cat "$work/$nsA.log" "$work/$nsB.log"
	exit 1
fi

step "the logs: peer up"
grep -H 'peer up' "$work/$nsA.log" "$work/$nsB.log" | sed "s|$work/||"

step "the peers: cab status on site A"
"$cab" status --name "$nsA"

step "done: tearing down"
