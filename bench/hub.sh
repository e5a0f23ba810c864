#!/usr/bin/env bash
# hub.sh — one cab server with many clients, quiet and with one client
# flooding broadcasts: what the hub costs and what the others see.
#
#   sudo bash bench/hub.sh [PATH_TO_CAB]       (make soak builds cab and runs this)
#
# One server namespace and CLIENTS client namespaces on one underlay (a
# Linux bridge in a namespace of its own; server 198.51.100.1, client i
# 198.51.100.(i+1)), PSK mode, one UDP port; overlay 192.0.2.1 (server) and
# 192.0.2.(i+1). Two phases of SECONDS_PER seconds each: quiet, then with
# client 1's host flooding broadcasts (FLOOD). In both, every other client
# pings the server and the next client, 5 pings a second. Measured: the
# server's CPU (and how long its threads waited for one: the machine's
# load), its largest RSS, the datagrams its socket dropped (RcvbufErrors),
# those the hosts' kernels discarded on the way out, the others' ping loss
# and average, peers that went down, the drops cab counted, and after the
# flood how soon the server stops hearing the flooder and how its pings
# fare. Printed: a Markdown table on stdout; progress on stderr.
#
# Environment:
#   CLIENTS=50          clients
#   SECONDS_PER=20      seconds per phase
#   FLOOD=raw           raw: the flooding host writes broadcast frames (of a
#                       local experimental EtherType, which nobody answers)
#                       to its TAP through an AF_PACKET socket, RATE a
#                       second (0: as fast as one core can);
#                       ping: it runs ping -b -i 0 and every host answers
#                       broadcast pings, so each answer sends the next ping
#   RATE=30000          frames a second of the raw flood
#   SERVER_FLAGS="..."  extra flags for the server
#   CLIENT_FLAGS="..."  extra flags for the clients
set -euo pipefail

cab=${1:-./cab}
[[ $cab == */* ]] || cab=./$cab
[[ -x $cab ]] || { echo "hub: no cab binary at $cab (make soak builds it)" >&2; exit 1; }
cab=$(cd "$(dirname "$cab")" && pwd)/$(basename "$cab")
[[ $(id -u) == 0 ]] || { echo "hub: needs root (network namespaces, TAP devices)" >&2; exit 1; }
for tool in ping python3 ip; do
	command -v "$tool" >/dev/null || { echo "hub: $tool missing" >&2; exit 1; }
done

CLIENTS=${CLIENTS:-50}
PHASE=${SECONDS_PER:-20}
FLOOD=${FLOOD:-raw}
case $FLOOD in
raw) FLOOD_CMD=(python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("cab0", 0))
mac = s.getsockname()[4]
frame = b"\xff" * 6 + mac + b"\x88\xb5" + bytes(46)
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
' "$PHASE" "${RATE:-30000}") ;;
ping) FLOOD_CMD=(timeout -s INT "$PHASE" ping -q -b -i 0 192.0.2.255) ;;
*) echo "hub: FLOOD is raw or ping" >&2; exit 1 ;;
esac
SERVER_FLAGS=${SERVER_FLAGS:-}
CLIENT_FLAGS=${CLIENT_FLAGS:-}
((CLIENTS >= 3 && CLIENTS <= 200)) || { echo "hub: CLIENTS must be 3..200" >&2; exit 1; }

tag=ch$$
ul=$tag-ul
work=$(mktemp -d /tmp/cab-hub.XXXXXX)
pids=()
made=()
log() { echo "hub: $*" >&2; }

cleanup() {
	local rc=$? pid ns
	set +e
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
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

ns_of() { echo "$tag-$1"; } # s, c1, c2 …

# bg NAME NS CMD...: CMD in NS in the background, output in $work/NAME.log.
bg() {
	local name=$1 ns=$2; shift 2
	ip netns exec "$ns" "$@" >"$work/$name.log" 2>&1 &
	pids+=($!)
	eval "pid_${name//-/_}=$!"
}

# cpu PID: user+system seconds so far.
cpu() { python3 -c "import os,sys; f=open('/proc/$1/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))"; }
# waiting PID: seconds its threads have spent runnable, waiting for a CPU.
waiting() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{w += $2} END {printf "%.1f", w / 1e9}'; }
rss() { awk '/^VmRSS/ {print int($2/1024)}' "/proc/$1/status"; }
rcvbuf() { ip netns exec "$(ns_of s)" awk '/^Udp:/ {n++; if (n==1) for (i=1;i<=NF;i++) h[$i]=i; else print $h["RcvbufErrors"]}' /proc/net/snmp; }
# tapstats: the frames client 1's host sent into its TAP that its cab read,
# and those the TAP dropped for want of reading.
tapstats() { ip netns exec "$(ns_of c1)" cat /sys/class/net/cab0/statistics/tx_packets /sys/class/net/cab0/statistics/tx_dropped | tr '\n' ' '; echo; }
# discards: the datagrams the hosts' kernels discarded on the way out
# (IpOutDiscards, all namespaces but the underlay's): ICMP replies that
# found the replying socket's buffer full, when a host answers a storm.
discards() {
	local n=0 ns
	for ns in "${made[@]:1}"; do
		n=$((n + $(ip netns exec "$ns" awk '/^Ip:/ {k++; if (k==1) for (i=1;i<=NF;i++) h[$i]=i; else print $h["OutDiscards"]}' /proc/net/snmp)))
	done
	echo "$n"
}
status() { ip netns exec "$1" "$cab" status --json --name "$1"; }

log "underlay and $((CLIENTS + 1)) namespaces"
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
	if [[ $FLOOD == ping ]]; then ip netns exec "$ns" sysctl -qw net.ipv4.icmp_echo_ignore_broadcasts=0; fi
done

"$cab" genkey >"$work/psk"
chmod 600 "$work/psk"
# shellcheck disable=SC2086
bg s "$(ns_of s)" "$cab" server --psk "$work/psk" -s tap:cab0 --name "$(ns_of s)" --state-dir "$work/state-s" $SERVER_FLAGS
for i in $(seq "$CLIENTS"); do
	# shellcheck disable=SC2086
	bg "c$i" "$(ns_of c$i)" "$cab" client --psk "$work/psk" -s tap:cab0 --keepalive 2s --name "$(ns_of c$i)" --state-dir "$work/state-c$i" $CLIENT_FLAGS 198.51.100.1
done

# addr NAME ADDR: wait (15 s at most) for cab0 in NAME's namespace, then
# give it ADDR.
addr() {
	local ns
	ns=$(ns_of "$1")
	for _ in $(seq 150); do
		if ip -n "$ns" link show dev cab0 >/dev/null 2>&1; then
			ip -n "$ns" addr add "$2/24" dev cab0
			ip -n "$ns" link set cab0 up
			return 0
		fi
		sleep 0.1
	done
	log "no cab0 in $ns after 15 s:"; cat "$work/$1.log" >&2
	exit 1
}
addr s 192.0.2.1
for i in $(seq "$CLIENTS"); do addr "c$i" "192.0.2.$((i + 1))"; done
log "waiting for every client to reach the server"
for i in $(seq "$CLIENTS"); do
	ok=0
	for _ in $(seq 30); do
		if ip netns exec "$(ns_of c$i)" ping -q -c 1 -W 1 192.0.2.1 >/dev/null 2>&1; then ok=1; break; fi
	done
	((ok)) || { log "client $i cannot reach the server"; tail -5 "$work/c$i.log" >&2; exit 1; }
done
srv=$pid_s
sleep 2

# phase NAME FLOOD: one phase; prints one table row.
phase() {
	local name=$1 flood=$2 c0 c1 w0 w1 d0 d1 o0 o1 t0 t1 i next rssmax=0 r downs0 downs1
	downs0=$(cat "$work"/c[0-9]*.log "$work"/s.log | grep -c 'peer down' || true)
	c0=$(cpu "$srv"); w0=$(waiting "$srv"); d0=$(rcvbuf); o0=$(discards); t0=$(date +%s.%N)
	local ppids=() tx0 txd0 tx1 txd1
	read -r tx0 txd0 < <(tapstats)
	if ((flood)); then
		ip netns exec "$(ns_of c1)" "${FLOOD_CMD[@]}" >"$work/flood.log" 2>&1 &
		ppids+=($!)
	fi
	for i in $(seq 2 "$CLIENTS"); do
		next=$((i % CLIENTS + 1)); ((next == 1)) && next=2
		ip netns exec "$(ns_of c$i)" ping -q -i 0.2 -W 1 -c $((PHASE * 5)) 192.0.2.1 >"$work/ps$i.log" 2>&1 &
		ppids+=($!)
		ip netns exec "$(ns_of c$i)" ping -q -i 0.2 -W 1 -c $((PHASE * 5)) "192.0.2.$((next + 1))" >"$work/pc$i.log" 2>&1 &
		ppids+=($!)
	done
	for _ in $(seq $((PHASE * 2))); do
		sleep 0.5
		r=$(rss "$srv"); ((r > rssmax)) && rssmax=$r
	done
	for i in "${ppids[@]}"; do wait "$i" 2>/dev/null || true; done
	c1=$(cpu "$srv"); w1=$(waiting "$srv"); d1=$(rcvbuf); o1=$(discards); t1=$(date +%s.%N)
	downs1=$(cat "$work"/c[0-9]*.log "$work"/s.log | grep -c 'peer down' || true)
	local flooded="" fdrops="" after=""
	if ((flood)); then
		read -r tx1 txd1 < <(tapstats)
		flooded="$(((tx1 + txd1 - tx0 - txd0) / PHASE)) ($(((tx1 - tx0) / PHASE)))"
		# The flooder's drops as the server and its own cab count them.
		fdrops=$(status "$(ns_of s)" | python3 -c '
import json, sys
st = json.load(sys.stdin)
drops = {}
for p in st["peers"]:
    if p["addr"].startswith("198.51.100.2:"):
        drops = p.get("drops") or {}
print(", ".join("%s %d" % kv for kv in sorted(drops.items())) or "none")')
		local own
		own=$(status "$(ns_of c1)" | python3 -c '
import json, sys
st = json.load(sys.stdin)
drops = dict(st.get("drops") or {})
for p in st["peers"]:
    for k, v in (p.get("drops") or {}).items():
        drops[k] = drops.get(k, 0) + v
print(", ".join("%s %d" % kv for kv in sorted(drops.items())) or "none")')
		fdrops="server: $fdrops; own cab: $own"
		# After the flood: how long until the server stops receiving the
		# flooder's frames, and a ping from the flooder right away.
		after=$(python3 - "$cab" "$(ns_of s)" "$(ns_of c1)" <<-'EOF'
			import json, subprocess, sys, time
			cab, srv, cli = sys.argv[1:]
			def rx():
			    st = json.loads(subprocess.check_output(["ip", "netns", "exec", srv, cab, "status", "--json", "--name", srv]))
			    return sum(p["rx_frames"] for p in st["peers"] if p["addr"].startswith("198.51.100.2:"))
			t0 = time.time(); last = rx(); quiet = None
			while time.time() - t0 < 60:
			    time.sleep(0.25)
			    n = rx()
			    if n - last <= 3:
			        quiet = time.time() - t0 - 0.25
			        break
			    last = n
			out = subprocess.run(["ip", "netns", "exec", cli, "ping", "-q", "-c", "10", "-i", "0.1", "-W", "1", "192.0.2.1"], capture_output=True, text=True).stdout
			lost = [l for l in out.splitlines() if "packet loss" in l]
			rtt = [l.split("=")[1].split("/")[1] for l in out.splitlines() if "min/avg" in l]
			print("drained in %s; then %s, avg %s ms" % ("%.1f s" % max(quiet, 0) if quiet is not None else "> 60 s", lost[0].split(", ")[2] if lost else "?", rtt[0] if rtt else "-"))
		EOF
		)
	fi
	read -r loss lossS lossC avg < <(python3 - "$work" "$CLIENTS" <<-'EOF'
		import re, sys, glob
		work, n = sys.argv[1], int(sys.argv[2])
		tot = {"s": [0, 0], "c": [0, 0]}; rtts = []
		for f in glob.glob(work + "/p[sc]*.log"):
		    s = open(f).read()
		    m = re.search(r"(\d+) packets transmitted, (\d+) received", s)
		    if m:
		        k = f.rsplit("/", 1)[1][1]
		        tot[k][0] += int(m.group(1)); tot[k][1] += int(m.group(2))
		    m = re.search(r"= [\d.]+/([\d.]+)/", s)
		    if m:
		        rtts.append(float(m.group(1)))
		pct = lambda sent, got: 100.0 * (sent - got) / max(sent, 1)
		print("%.2f %.2f %.2f %.2f" % (pct(tot["s"][0] + tot["c"][0], tot["s"][1] + tot["c"][1]), pct(*tot["s"]), pct(*tot["c"]), sum(rtts) / max(len(rtts), 1)))
	EOF
	)
	# The others' drops at the server, by reason.
	local odrops
	odrops=$(status "$(ns_of s)" | python3 -c '
import json, sys
st = json.load(sys.stdin)
drops = {}
for p in st["peers"]:
    if not p["addr"].startswith("198.51.100.2:"):
        for k, v in (p.get("drops") or {}).items():
            drops[k] = drops.get(k, 0) + v
print(", ".join("%s %d" % kv for kv in sorted(drops.items())) or "none")')
	local pct
	pct=$(python3 -c "print('%.0f' % (100 * ($c1 - $c0) / ($t1 - $t0)))")
	printf '| %s | %s | %s %% (%s s) | %s | %s | %s | %s %% (%s %% / %s %%) | %s | %s | %s | %s | %s |\n' "$name" "${flooded:--}" "$pct" "$(python3 -c "print('%.1f' % ($w1 - $w0))")" "$rssmax" \
		"$((d1 - d0))" "$((o1 - o0))" "$loss" "$lossS" "$lossC" "$avg" "$((downs1 - downs0))" "$odrops" "${fdrops:--}" "${after:--}"
}

log "quiet phase, ${PHASE} s"
quiet=$(phase quiet 0)
log "flood phase, ${PHASE} s: client 1 floods ($FLOOD)"
flood=$(phase flood 1)

echo "cab $("$cab" --version | awk '{print $2}') · $(date +%F) · $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1) · Linux $(uname -r)"
echo "$CLIENTS clients, PSK, one UDP port; flood: $FLOOD; ${PHASE} s per phase; the other clients each ping the server and one other client 5 times a second."
echo
echo "| phase | flood frames/s offered (read by the flooder's cab) | server CPU (s waiting for one) | server RSS MB | server socket drops (RcvbufErrors) | hosts' output discards (IpOutDiscards) | others' ping loss (to the server / to clients) | others' ping avg ms | peers down | others' drops at the server | flooder's drops | after the flood |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
echo "$quiet"
echo "$flood"
