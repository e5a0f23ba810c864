#!/usr/bin/env bash
# dns.sh — the DNS tunnel through a real Unbound, at 0, 1 and 5 % query loss.
#
#   sudo bash bench/dns.sh [PATH_TO_CAB]       (make bench-dns builds cab and runs this)
#
# Three network namespaces: the client (198.51.100.2), the resolver
# (Unbound on 198.51.100.1, talking to the server from 203.0.113.1) and the
# server (cab's name server for t.tun.test on 203.0.113.2:53). The client
# has no route to the server: everything crosses Unbound, with 0x20 case
# randomisation on and QNAME minimisation at its default. Query loss is an
# nftables rule in the server's namespace dropping that share of the
# queries Unbound sends it. Overlay: TAPs with 192.0.2.1 (server) and .2.
#
# Per loss rate: TCP goodput up (client → server) and down (iperf3 -R),
# ping RTT (idle tunnel, 20 pings 0.2 s apart), and frame loss (200 pings
# 0.02 s apart). Printed: one Markdown table on stdout; progress on stderr.
#
# Environment:
#   DURATION=10         seconds per iperf3 run
#   LOSSES="0 1 5"      query loss percentages
#   DIRECT=1            add a row with the client asking cab's server
#                       straight, no resolver (a ceiling)
set -euo pipefail

cab=${1:-./cab}
[[ $cab == */* ]] || cab=./$cab
[[ -x $cab ]] || { echo "dns.sh: no cab binary at $cab (make bench-dns builds it)" >&2; exit 1; }
cab=$(cd "$(dirname "$cab")" && pwd)/$(basename "$cab")
[[ $(id -u) == 0 ]] || { echo "dns.sh: needs root (network namespaces)" >&2; exit 1; }
for tool in iperf3 ping python3 ip nft unbound; do
	command -v "$tool" >/dev/null || { echo "dns.sh: $tool missing (apt-get install iperf3 iputils-ping python3 iproute2 nftables unbound)" >&2; exit 1; }
done

DURATION=${DURATION:-10}
LOSSES=${LOSSES:-0 1 5}
DIRECT=${DIRECT:-0}
tag=cd$$
nsC=$tag-c nsR=$tag-r nsS=$tag-s
work=$(mktemp -d /tmp/cab-bench-dns.XXXXXX)
pids=()
log() { echo "dns.sh: $*" >&2; }

stop_all() {
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do
		for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	pids=()
	for ns in "$nsC" "$nsR" "$nsS"; do ip netns del "$ns" 2>/dev/null || true; done
}
cleanup() { local rc=$?; set +e; stop_all; rm -rf "$work"; exit "$rc"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

bg() {
	local ns=$1; shift
	ip netns exec "$ns" "$@" >>"$work/log" 2>&1 &
	pids+=($!)
}

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

wait_dev() {
	for _ in $(seq 150); do ip -n "$1" link show dev "$2" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}

# setup RESOLVER: namespaces, links, unbound, both cabs; RESOLVER is the
# address the client sends its queries to.
setup() {
	local resolver=$1
	stop_all
	for ns in "$nsC" "$nsR" "$nsS"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
	ip link add "${tag}cr" netns "$nsC" type veth peer name "${tag}rc" netns "$nsR"
	ip link add "${tag}rs" netns "$nsR" type veth peer name "${tag}sr" netns "$nsS"
	ip -n "$nsC" addr add 198.51.100.2/24 dev "${tag}cr"
	ip -n "$nsR" addr add 198.51.100.1/24 dev "${tag}rc"
	ip -n "$nsR" addr add 203.0.113.1/24 dev "${tag}rs"
	ip -n "$nsS" addr add 203.0.113.2/24 dev "${tag}sr"
	for l in "$nsC ${tag}cr" "$nsR ${tag}rc" "$nsR ${tag}rs" "$nsS ${tag}sr"; do
		set -- $l; ip -n "$1" link set "$2" up
	done
	ip netns exec "$nsR" sysctl -qw net.ipv4.ip_forward=0
	cat >"$work/unbound.conf" <<-CONF
	server:
		interface: 198.51.100.1
		port: 53
		access-control: 198.51.100.0/24 allow
		outgoing-interface: 203.0.113.1
		do-ip6: no
		module-config: "iterator"
		use-caps-for-id: yes
		local-zone: "test." nodefault
		username: ""
		chroot: ""
		directory: "$work"
		pidfile: "$work/unbound.pid"
		logfile: ""
		use-syslog: no
		do-daemonize: no
		num-threads: 1
	remote-control:
		control-enable: no
	stub-zone:
		name: "t.tun.test."
		stub-addr: 203.0.113.2@53
	CONF
	bg "$nsR" unbound -d -c "$work/unbound.conf"
	"$cab" genkey -o "$work/psk"
	chmod 600 "$work/psk"
	bg "$nsS" "$cab" server -s tap:cab0 --psk "$work/psk" --transport dns --dns-zone t.tun.test \
		--dns-listen 203.0.113.2:53 --name "$nsS" --state-dir "$work/s"
	# The direct row: the client's namespace gets a route to the server,
	# and asks it instead of Unbound.
	if [[ $resolver == 203.0.113.2 ]]; then
		ip netns exec "$nsR" sysctl -qw net.ipv4.ip_forward=1
		ip -n "$nsC" route add 203.0.113.0/24 via 198.51.100.1
		ip -n "$nsS" route add 198.51.100.0/24 via 203.0.113.1
	fi
	bg "$nsC" "$cab" client -s tap:cab0 --psk "$work/psk" --transport dns://t.tun.test --resolver "$resolver" \
		--name "$nsC" --state-dir "$work/c"
	wait_dev "$nsS" cab0 && wait_dev "$nsC" cab0 || { log "no TAP"; cat "$work/log" >&2; return 1; }
	for p in "$nsS 192.0.2.1" "$nsC 192.0.2.2"; do
		set -- $p; ip -n "$1" addr add "$2/24" dev cab0; ip -n "$1" link set cab0 up
	done
	for _ in $(seq 40); do
		ip netns exec "$nsC" ping -c 1 -W 1 192.0.2.1 >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	log "no ping across the tunnel"; cat "$work/log" >&2; return 1
}

loss() {
	ip netns exec "$nsS" nft delete table inet cabbench 2>/dev/null || true
	(($1 == 0)) && return 0
	ip netns exec "$nsS" nft add table inet cabbench
	ip netns exec "$nsS" nft add chain inet cabbench in '{ type filter hook input priority 0 ; }'
	ip netns exec "$nsS" nft add rule inet cabbench in udp dport 53 numgen random mod 100 '<' "$1" drop
}

# row NAME: the figures at the current loss rate.
row() {
	local up down rtt floss
	ip netns exec "$nsS" iperf3 -s -D -B 192.0.2.1 --pidfile "$work/iperf.pid" >/dev/null
	sleep 0.3
	up=$(ip netns exec "$nsC" iperf3 -c 192.0.2.1 -t "$DURATION" -J | json 'd["end"]["sum_received"]["bits_per_second"]/1e6' || echo nan)
	down=$(ip netns exec "$nsC" iperf3 -c 192.0.2.1 -t "$DURATION" -R -J | json 'd["end"]["sum_received"]["bits_per_second"]/1e6' || echo nan)
	kill "$(cat "$work/iperf.pid")" 2>/dev/null || true
	sleep 3 # let the tunnel go idle
	rtt=$(ip netns exec "$nsC" ping -q -c 20 -i 0.2 192.0.2.1 | sed -n 's|.*= \([0-9.]*\)/\([0-9.]*\)/\([0-9.]*\)/.*|\2 (\1–\3)|p')
	floss=$(ip netns exec "$nsC" ping -q -c 200 -i 0.02 -W 2 192.0.2.1 | sed -n 's|.* \([0-9.]*\)% packet loss.*|\1|p')
	printf '| %s | %.2f | %.2f | %s | %s %% |\n' "$1" "$up" "$down" "$rtt" "$floss"
}

echo "| path, query loss | TCP up (Mbit/s) | TCP down (Mbit/s) | ping RTT avg (min–max) ms | frame loss (200 pings) |"
echo "|---|---|---|---|---|"
if [[ $DIRECT == 1 ]]; then
	log "direct (no resolver)"
	setup 203.0.113.2 && row "direct to cab, 0 %"
fi
log "through unbound"
setup 198.51.100.1
for l in $LOSSES; do
	log "query loss $l %"
	loss "$l"
	row "unbound, $l %"
done
