#!/usr/bin/env bash
# hub-ceiling.sh — how many packets a cab server handles a second, and at
# what CPU: the reading side (clients send small frames to the server's
# MAC) or the flooding side (one client's broadcasts, copied to the others).
#
#   sudo MODE=unicast|flood bash bench/hub-ceiling.sh [PATH_TO_CAB]
#
# The same namespaces as hub.sh (a server, CLIENTS clients on one bridge,
# PSK, overlay 192.0.2.0/24). SENDERS clients' hosts write 64-byte frames of
# a local experimental EtherType into their TAPs, RATE a second each (0: as
# fast as one core can): to the server's MAC (unicast) or to broadcast
# (flood, with the flood limits off). With STOP=1 the other clients' cabs
# are stopped (SIGSTOP) once up, so that only the server's sending counts:
# the kernel drops what reaches their full sockets. Printed: the server's
# frames received and copies sent a second, its CPU, the first sender's
# cab's CPU, and the server socket's drops over SECS seconds. PERF=1 runs
# perf record on the server meanwhile (perf.data in the current directory).
#
# Environment: MODE=unicast, CLIENTS=2, SENDERS=1, RATE=0, SECS=10, STOP,
# PERF, SERVER_FLAGS, CLIENT_FLAGS.
set -euo pipefail

cab=${1:-./cab}
[[ $cab == */* ]] || cab=./$cab
[[ -x $cab ]] || { echo "hub-ceiling: no cab binary at $cab" >&2; exit 1; }
cab=$(cd "$(dirname "$cab")" && pwd)/$(basename "$cab")
[[ $(id -u) == 0 ]] || { echo "hub-ceiling: needs root (network namespaces, TAP devices)" >&2; exit 1; }

MODE=${MODE:-unicast}
CLIENTS=${CLIENTS:-2}
SENDERS=${SENDERS:-1}
RATE=${RATE:-0}
SECS=${SECS:-10}
SERVER_FLAGS=${SERVER_FLAGS:-}
CLIENT_FLAGS=${CLIENT_FLAGS:-}
case $MODE in
unicast) ;;
flood) SERVER_FLAGS="--flood-rate 0 --flood-budget 0 $SERVER_FLAGS" CLIENT_FLAGS="--flood-rate 0 $CLIENT_FLAGS" ;;
*) echo "hub-ceiling: MODE is unicast or flood" >&2; exit 1 ;;
esac
((SENDERS >= 1 && SENDERS <= CLIENTS && CLIENTS <= 200)) || { echo "hub-ceiling: want 1 <= SENDERS <= CLIENTS <= 200" >&2; exit 1; }

tag=cc$$
ul=$tag-ul
work=$(mktemp -d /tmp/cab-ceiling.XXXXXX)
pids=()
made=()
cleanup() {
	local rc=$? pid ns
	set +e
	for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null; done
	for pid in "${pids[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	for ns in "${made[@]}"; do ip netns del "$ns"; done
	rm -f /run/cab/"$tag"-*.sock
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ns_of() { echo "$tag-$1"; }

ip netns add "$ul"; made+=("$ul")
ip -n "$ul" link add br0 type bridge
ip -n "$ul" link set br0 up
for i in $(seq 0 "$CLIENTS"); do
	if ((i == 0)); then name=s; else name=c$i; fi
	ns=$(ns_of $name)
	ip netns add "$ns"; made+=("$ns")
	ip -n "$ns" link set lo up
	ip -n "$ul" link add "$tag$i" type veth peer name eth0 netns "$ns"
	ip -n "$ul" link set "$tag$i" master br0 up
	ip -n "$ns" addr add "198.51.100.$((i + 1))/24" dev eth0
	ip -n "$ns" link set eth0 up
done
"$cab" genkey >"$work/psk"
chmod 600 "$work/psk"
# shellcheck disable=SC2086
ip netns exec "$(ns_of s)" "$cab" server --psk "$work/psk" -s tap:cab0 --name "$(ns_of s)" --state-dir "$work/s" $SERVER_FLAGS >"$work/s.log" 2>&1 &
srv=$!; pids+=($!)
cpids=()
for i in $(seq "$CLIENTS"); do
	# shellcheck disable=SC2086
	ip netns exec "$(ns_of c$i)" "$cab" client --psk "$work/psk" -s tap:cab0 --name "$(ns_of c$i)" --state-dir "$work/c$i" $CLIENT_FLAGS 198.51.100.1 >"$work/c$i.log" 2>&1 &
	pids+=($!); cpids+=($!)
done
for i in $(seq 0 "$CLIENTS"); do
	if ((i == 0)); then name=s; else name=c$i; fi
	ns=$(ns_of $name)
	for _ in $(seq 150); do ip -n "$ns" link show cab0 >/dev/null 2>&1 && break; sleep 0.1; done
	ip -n "$ns" addr add "192.0.2.$((i + 1))/24" dev cab0
	ip -n "$ns" link set cab0 up
done
for i in $(seq "$CLIENTS"); do
	for _ in $(seq 30); do ip netns exec "$(ns_of c$i)" ping -q -c 1 -W 1 192.0.2.1 >/dev/null 2>&1 && break; done
done
if [[ -n ${STOP:-} ]]; then
	for pid in "${cpids[@]:SENDERS}"; do kill -STOP "$pid"; done
fi
if [[ $MODE == unicast ]]; then
	dst=$(ip netns exec "$(ns_of s)" cat /sys/class/net/cab0/address)
else
	dst=ff:ff:ff:ff:ff:ff
fi

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
counts() {
	ip netns exec "$(ns_of s)" "$cab" status --json --name "$(ns_of s)" |
		python3 -c 'import json, sys; st = json.load(sys.stdin); print(sum(p["rx_frames"] for p in st["peers"]), sum(p["tx_frames"] for p in st["peers"]))'
}
rcvbuf() { ip netns exec "$(ns_of s)" awk '/^Udp:/ {n++; if (n==1) for (i=1;i<=NF;i++) h[$i]=i; else print $h["RcvbufErrors"]}' /proc/net/snmp; }

fps=()
for k in $(seq "$SENDERS"); do
	ip netns exec "$(ns_of c$k)" python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("cab0", 0))
frame = bytes.fromhex(sys.argv[3].replace(":", "")) + s.getsockname()[4] + b"\x88\xb5" + bytes(46)
start = time.time()
end, rate, sent = start + float(sys.argv[1]), int(sys.argv[2]), 0
while time.time() < end:
    for _ in range(100):
        try:
            s.send(frame)
        except OSError:
            pass
    sent += 100
    if rate > 0:
        ahead = sent / rate - (time.time() - start)
        if ahead > 0:
            time.sleep(ahead)
' $((SECS + 3)) "$RATE" "$dst" &
	fps+=($!)
done
sleep 2
read -r rx0 tx0 < <(counts); c0=$(cpu "$srv"); f0=$(cpu "${cpids[0]}"); d0=$(rcvbuf); t0=$(date +%s.%N)
if [[ -n ${PERF:-} ]]; then
	perf record -g -o perf.data -p "$srv" -- sleep "$SECS" >/dev/null 2>&1
else
	sleep "$SECS"
fi
read -r rx1 tx1 < <(counts); c1=$(cpu "$srv"); f1=$(cpu "${cpids[0]}"); d1=$(rcvbuf); t1=$(date +%s.%N)
for pid in "${fps[@]}"; do wait "$pid" || true; done
hz=$(getconf CLK_TCK)
python3 -c "
d = $t1 - $t0
print('%s, %d clients, %d sending %s frames/s each: the server received %.0f frames/s and sent %.0f copies/s at %.0f %% of a core; the first sender\'s cab %.0f %%; server socket drops %d' % (
    '$MODE', $CLIENTS, $SENDERS, '${RATE/#0/as many}', ($rx1 - $rx0) / d, ($tx1 - $tx0) / d, ($c1 - $c0) / $hz / d * 100, ($f1 - $f0) / $hz / d * 100, $d1 - $d0))"
