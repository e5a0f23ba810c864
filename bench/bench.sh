#!/usr/bin/env bash
# bench.sh — cab side by side with kernel VXLAN, fastd and OpenVPN.
#
#   sudo bash bench/bench.sh [PATH_TO_CAB]      (make bench builds cab and runs this)
#
# Each system gets two fresh network namespaces joined by a veth underlay
# (MTU 1500, 198.51.100.1 and .2) and an overlay interface of MTU 1400
# (192.0.2.1 and .2); the rows ending in -9000 have a data-centre underlay
# of MTU 9000 and an overlay of 8950. iperf3 runs from B to A over the
# overlay. The UDP ceiling is the highest rate of full-size datagrams
# (packets of the overlay's MTU, which no offload can coalesce on the way
# in) that crosses with under 1 % loss, found by doubling and then halving
# the step, 3 s a try. Printed: Markdown tables on stdout; progress on
# stderr.
#
# Environment:
#   DURATION=8          seconds per iperf3 run
#   BENCH_ONLY="..."    a subset of rows: veth vxlan cab-udp cab-segment cab-workers
#                       cab-nooffload cab-tcp cab-ssh cab-quic fastd openvpn
#                       vxlan-9000 cab-udp-9000 fastd-9000
#   CEILING=0           skip the UDP ceiling search (about 25 s a row)
#   CAB_FLAGS="..."     extra flags for both cab sides
set -euo pipefail

cab=${1:-./cab}
[[ $cab == */* ]] || cab=./$cab
[[ -x $cab ]] || { echo "bench: no cab binary at $cab (make bench builds it)" >&2; exit 1; }
cab=$(cd "$(dirname "$cab")" && pwd)/$(basename "$cab")
[[ $(id -u) == 0 ]] || { echo "bench: needs root (network namespaces)" >&2; exit 1; }
for tool in iperf3 ping python3 ip; do
	command -v "$tool" >/dev/null || { echo "bench: $tool missing (make bench installs it)" >&2; exit 1; }
done

DURATION=${DURATION:-8}
ONLY=${BENCH_ONLY:-veth vxlan cab-udp cab-segment cab-workers cab-nooffload cab-tcp cab-ssh cab-quic fastd openvpn vxlan-9000 cab-udp-9000 fastd-9000}
CEILING=${CEILING:-1}
ul_mtu=1500 ov_mtu=1400 # the underlay's and the overlay's MTU of the row being run
CAB_FLAGS=${CAB_FLAGS:-}
tag=cb$$
nsA=$tag-a nsB=$tag-b
work=$(mktemp -d /tmp/cab-bench.XXXXXX)
pids=()
log() { echo "bench: $*" >&2; }

stop_all() {
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do
		for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	pids=()
	ip netns del "$nsA" 2>/dev/null || true
	ip netns del "$nsB" 2>/dev/null || true
}
cleanup() { local rc=$?; set +e; stop_all; rm -rf "$work"; exit "$rc"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# underlay: fresh namespaces and the veth between them.
underlay() {
	stop_all
	ip netns add "$nsA"; ip netns add "$nsB"
	ip link add "${tag}a" netns "$nsA" type veth peer name "${tag}b" netns "$nsB"
	ip -n "$nsA" addr add 198.51.100.1/24 dev "${tag}a"
	ip -n "$nsB" addr add 198.51.100.2/24 dev "${tag}b"
	for ns in "$nsA" "$nsB"; do
		ip -n "$ns" link set lo up
		ip -n "$ns" link set "${tag}${ns: -1}" mtu "$ul_mtu" up
	done
}

# overlay NS DEV ADDR: the overlay's MTU, the address, up.
overlay() {
	ip -n "$1" link set "$2" mtu "$ov_mtu"
	ip -n "$1" addr add "$3/24" dev "$2" 2>/dev/null || true
	ip -n "$1" link set "$2" up
}

# wait_dev NS DEV: at most 15 s.
wait_dev() {
	for _ in $(seq 150); do ip -n "$1" link show dev "$2" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}

# wait_ping TARGET: from B, at most 20 s.
wait_ping() {
	for _ in $(seq 40); do
		ip netns exec "$nsB" ping -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	return 1
}

# bg NS CMD...: start CMD in NS in the background, remember its PID.
bg() {
	local ns=$1; shift
	ip netns exec "$ns" "$@" >>"$work/log" 2>&1 &
	pids+=($!)
}

# tree PID...: the PIDs and all their descendants (ssh under cab, sshd's
# session processes).
tree() {
	local pid
	for pid in "$@"; do
		echo "$pid"
		# shellcheck disable=SC2046
		[[ -n $(pgrep -P "$pid") ]] && tree $(pgrep -P "$pid")
	done
}

# cpu PID...: CPU seconds (user+system) so far of the processes and their
# descendants.
cpu() {
	local tck total=0 pid
	tck=$(getconf CLK_TCK)
	for pid in $(tree "$@"); do
		[[ -r /proc/$pid/stat ]] || continue
		total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
	done
	python3 -c "print($total / $tck)"
}

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# udp_try TARGET MBIT: "received-Mbit/s loss-%" of 3 s of full-size UDP
# datagrams offered at MBIT.
udp_try() {
	ip netns exec "$nsB" iperf3 -c "$1" -t 3 -u -w 4M -b "${2}M" -l $((ov_mtu - 28)) -J 2>/dev/null |
		json '"%f %f" % (d["end"]["sum"]["bits_per_second"]*(1-d["end"]["sum"]["lost_percent"]/100)/1e6, d["end"]["sum"]["lost_percent"])' ||
		echo "0 100"
}

# ceiling TARGET: the highest rate received with under 1 % loss, in Mbit/s,
# and the packets a second it is: "Mbit/s kpps". A try counts when under 1 %
# is lost and at least 90 % of the offered rate arrives (iperf3 itself may
# not send faster: the kernel rows show iperf3's limit). Doubling from 100
# Mbit/s, then four halvings of the step.
ceiling() {
	local lo=0 hi=100 step best=0
	ok() { # ok MBIT: try it; true when it counts, and best holds the most received
		local got loss
		read -r got loss < <(udp_try "$1" "$2")
		python3 -c "import sys; sys.exit(0 if $loss < 1 and $got >= 0.9 * $2 else 1)" || return 1
		best=$(python3 -c "print(max($best, $got))")
	}
	while ((hi <= 25600)) && ok "$1" "$hi"; do lo=$hi hi=$((hi * 2)); done
	step=$(((hi - lo) / 2))
	for _ in 1 2 3 4; do
		((step > 0)) || break
		if ok "$1" $((lo + step)); then lo=$((lo + step)); fi
		step=$((step / 2))
	done
	python3 -c "print('%.0f %.0f' % ($best, $best * 1e6 / 8 / $ov_mtu / 1000))"
}

# measure NAME TARGET PIDS...: the figures of one row into $row.
measure() {
	local name=$1 target=$2; shift 2
	local tun=("$@") rtt tcp1 tcp4 udp loss c0 c1 cpus gbps
	rtt=$(ip netns exec "$nsB" ping -q -c 20 -i 0.05 "$target" | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
	ip netns exec "$nsA" iperf3 -s -D -B "$target" --pidfile "$work/iperf.pid" >/dev/null
	sleep 0.3
	c0=$(cpu "${tun[@]}")
	tcp1=$(ip netns exec "$nsB" iperf3 -c "$target" -t "$DURATION" -J | json 'd["end"]["sum_received"]["bits_per_second"]/1e6')
	c1=$(cpu "${tun[@]}")
	tcp4=$(ip netns exec "$nsB" iperf3 -c "$target" -t "$DURATION" -P 4 -J | json 'd["end"]["sum_received"]["bits_per_second"]/1e6')
	read -r udp loss < <(ip netns exec "$nsB" iperf3 -c "$target" -t "$DURATION" -u -b 1G -l 1300 -J |
		json '"%f %f" % (d["end"]["sum"]["bits_per_second"]*(1-d["end"]["sum"]["lost_percent"]/100)/1e6, d["end"]["sum"]["lost_percent"])')
	local ceil="–" mbit=n/a kpps
	if ((CEILING)); then
		read -r mbit kpps < <(ceiling "$target")
		ceil="$mbit ($kpps k)"
	fi
	kill "$(cat "$work/iperf.pid")" 2>/dev/null || true
	if ((${#tun[@]})); then
		cpus=$(python3 -c "print('%.1f' % ($c1 - $c0))")
		gbps=$(python3 -c "c=$c1-$c0; print('%.2f' % ($tcp1*$DURATION/1000/c) if c > 0 else 'n/a')")
	else
		cpus=kernel gbps=kernel
	fi
	printf -v row '| %s | %.0f | %.0f | %.0f (%.1f %%) | %s | %s | %s | %s |' "$name" "$tcp1" "$tcp4" "$udp" "$loss" "$ceil" "$rtt" "$cpus" "$gbps"
	results[$name]="$tcp1 $gbps $mbit"
}

declare -A results
rows=()
run_row() {
	local name=$1
	[[ " $ONLY " == *" $name "* ]] || return 0
	log "$name"
	ul_mtu=1500 ov_mtu=1400
	if [[ $name == *-9000 ]]; then ul_mtu=9000 ov_mtu=8950; fi
	underlay
	row="| $name | n/a ($2) | | | | | | |"
	if "setup_${name%-9000}"; then
		measure "$name" 192.0.2.1 "${pids[@]}" || row="| $name | n/a (measurement failed) | | | | | | |"
	else
		log "$name did not come up; see $work/log"
		tail -5 "$work/log" >&2 || true
	fi
	rows+=("$row")
	stop_all
}

setup_veth() {
	ip -n "$nsA" addr add 192.0.2.1/24 dev "${tag}a"
	ip -n "$nsB" addr add 192.0.2.2/24 dev "${tag}b"
	wait_ping 192.0.2.1
}

setup_vxlan() {
	ip -n "$nsA" link add vx0 type vxlan id 42 remote 198.51.100.2 local 198.51.100.1 dstport 4789 dev "${tag}a"
	ip -n "$nsB" link add vx0 type vxlan id 42 remote 198.51.100.1 local 198.51.100.2 dstport 4789 dev "${tag}b"
	overlay "$nsA" vx0 192.0.2.1
	overlay "$nsB" vx0 192.0.2.2
	wait_ping 192.0.2.1
}

# cab_pair EXTRA_SERVER EXTRA_CLIENT
cab_pair() {
	rm -f "$work/psk"; "$cab" genkey -o "$work/psk"
	# shellcheck disable=SC2086
	bg "$nsA" "$cab" server -p 6666 -s "${CAB_SPEC:-tap:cab0}" --psk "$work/psk" --name "$nsA" --state-dir "$work/a" $CAB_FLAGS $1
	# shellcheck disable=SC2086
	bg "$nsB" "$cab" client -s "${CAB_SPEC:-tap:cab0}" --psk "$work/psk" --name "$nsB" --state-dir "$work/b" $CAB_FLAGS $2 198.51.100.1:6666
	wait_dev "$nsA" cab0 && wait_dev "$nsB" cab0 || return 1
	overlay "$nsA" cab0 192.0.2.1
	overlay "$nsB" cab0 192.0.2.2
	wait_ping 192.0.2.1
}
setup_cab-udp() { cab_pair "" ""; }
setup_cab-segment() { CAB_SPEC=seg=tap:cab0 cab_pair "" ""; } # a named segment, not the default one
setup_cab-workers() { cab_pair "--crypto-workers 1" "--crypto-workers 1"; }
setup_cab-nooffload() { cab_pair "--udp-gso off --udp-gro off" "--udp-gso off --udp-gro off"; }
setup_cab-tcp() { cab_pair "--transport udp,tcp" "--transport tcp"; }
setup_cab-quic() { cab_pair "--transport udp,quic" "--transport quic"; } # UDP/443

# cab over the SSH transport: sshd in A (a fresh host key, a key forced to
# `cab pipe`), the client's ssh in B.
setup_cab-ssh() {
	command -v sshd >/dev/null || [[ -x /usr/sbin/sshd ]] || return 1
	local d=$work/ssh
	mkdir -p "$d" /run/sshd && chmod 700 "$d"
	ssh-keygen -q -t ed25519 -N "" -f "$d/host"
	ssh-keygen -q -t ed25519 -N "" -f "$d/user"
	echo "restrict,command=\"$cab pipe --name $nsA\" $(cat "$d/user.pub")" >"$d/authorized_keys"
	echo "[198.51.100.1]:2222 $(cat "$d/host.pub")" >"$d/known_hosts"
	printf '%s\n' "Port 2222" "ListenAddress 198.51.100.1" "HostKey $d/host" "AuthorizedKeysFile $d/authorized_keys" \
		"PidFile $d/sshd.pid" "PermitRootLogin prohibit-password" "PasswordAuthentication no" \
		"KbdInteractiveAuthentication no" "UsePAM no" "StrictModes no" >"$d/sshd_config"
	bg "$nsA" "$(command -v sshd || echo /usr/sbin/sshd)" -D -e -f "$d/sshd_config"
	rm -f "$work/psk"; "$cab" genkey -o "$work/psk"
	# shellcheck disable=SC2086
	bg "$nsA" "$cab" server -p 6666 -s tap:cab0 --psk "$work/psk" --name "$nsA" --state-dir "$work/a" $CAB_FLAGS
	# shellcheck disable=SC2086
	bg "$nsB" "$cab" client -s tap:cab0 --psk "$work/psk" --name "$nsB" --state-dir "$work/b" $CAB_FLAGS \
		--transport ssh://root@198.51.100.1:2222 --ssh-remote "$cab pipe --name $nsA" \
		--ssh-command "ssh -T -o BatchMode=yes -i $d/user -o UserKnownHostsFile=$d/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
	wait_dev "$nsA" cab0 && wait_dev "$nsB" cab0 || return 1
	overlay "$nsA" cab0 192.0.2.1
	overlay "$nsB" cab0 192.0.2.2
	wait_ping 192.0.2.1
}

setup_fastd() {
	command -v fastd >/dev/null || return 1
	local s
	for s in a b; do
		fastd --generate-key --machine-readable >"$work/fastd-$s.secret"
	done
	for s in a b; do
		local o=b ip=198.51.100.2 me=198.51.100.1
		[[ $s == b ]] && o=a ip=198.51.100.1 me=198.51.100.2
		printf 'secret "%s";\n' "$(cat "$work/fastd-$s.secret")" >"$work/fastd-$s.conf"
		local opub
		opub=$(fastd --show-key --machine-readable -c "$work/fastd-$s.conf" 2>/dev/null || true)
		printf 'secret "%s";\n' "$(cat "$work/fastd-$o.secret")" >"$work/fastd-tmp.conf"
		opub=$(fastd --show-key --machine-readable -c "$work/fastd-tmp.conf")
		cat >"$work/fastd-$s.conf" <<-CONF
			log level warn;
			interface "fd0";
			mode tap;
			method "aes128-gcm";
			bind $me:10000;
			secret "$(cat "$work/fastd-$s.secret")";
			mtu $ov_mtu;
			peer "$o" { key "$opub"; remote $ip:10000; }
		CONF
	done
	bg "$nsA" fastd -c "$work/fastd-a.conf"
	bg "$nsB" fastd -c "$work/fastd-b.conf"
	wait_dev "$nsA" fd0 && wait_dev "$nsB" fd0 || return 1
	overlay "$nsA" fd0 192.0.2.1
	overlay "$nsB" fd0 192.0.2.2
	wait_ping 192.0.2.1
}

setup_openvpn() {
	command -v openvpn >/dev/null && command -v openssl >/dev/null || return 1
	# OpenVPN 2.6 peer-to-peer TLS with self-signed certificates pinned by
	# fingerprint (static keys cannot do AES-GCM).
	local s fp_a fp_b
	for s in a b; do
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
			-subj "/CN=$s" -keyout "$work/ovpn-$s.key" -out "$work/ovpn-$s.crt" 2>/dev/null
	done
	fp_a=$(openssl x509 -in "$work/ovpn-a.crt" -noout -fingerprint -sha256 | cut -d= -f2)
	fp_b=$(openssl x509 -in "$work/ovpn-b.crt" -noout -fingerprint -sha256 | cut -d= -f2)
	local common=(--dev tap0 --dev-type tap --proto udp --port 1194 --tun-mtu 1400 --data-ciphers AES-256-GCM
		--cipher AES-256-GCM --verb 1 --ping 10 --allow-compression no --mssfix 0)
	bg "$nsA" openvpn "${common[@]}" --tls-server --dh none --remote 198.51.100.2 --cert "$work/ovpn-a.crt" \
		--key "$work/ovpn-a.key" --peer-fingerprint "$fp_b" --ifconfig 192.0.2.1 255.255.255.0
	bg "$nsB" openvpn "${common[@]}" --tls-client --remote 198.51.100.1 --cert "$work/ovpn-b.crt" \
		--key "$work/ovpn-b.key" --peer-fingerprint "$fp_a" --ifconfig 192.0.2.2 255.255.255.0
	wait_dev "$nsA" tap0 && wait_dev "$nsB" tap0 || return 1
	wait_ping 192.0.2.1
}

start=$(date +%s)
log "cab $("$cab" --version | cut -d' ' -f2), $(nproc) cores, $DURATION s per run"
run_row veth "setup failed"
run_row vxlan "setup failed"
run_row cab-udp "cab did not come up"
run_row cab-segment "cab did not come up"
run_row cab-workers "cab did not come up"
run_row cab-nooffload "cab did not come up"
run_row cab-tcp "cab did not come up"
run_row cab-ssh "sshd missing or cab did not come up"
run_row cab-quic "cab did not come up"
run_row fastd "fastd missing or did not come up"
run_row openvpn "openvpn missing or did not come up"
run_row vxlan-9000 "setup failed"
run_row cab-udp-9000 "cab did not come up"
run_row fastd-9000 "fastd missing or did not come up"

ratio() { # ratio NAME BASE FIELD(1=tcp1,2=gbps,3=UDP ceiling) FORMAT
	local a b
	a=$(cut -d' ' -f"$3" <<<"${results[$1]:-}")
	b=$(cut -d' ' -f"$3" <<<"${results[$2]:-}")
	python3 -c "
try: print('$4' % (float('$a') / float('$b') * (100 if '$4'.endswith('%%') else 1)))
except Exception: print('n/a')"
}

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo
echo "cab $("$cab" --version | cut -d' ' -f2) · $(date -u +%Y-%m-%d) · $(nproc) cores, $cpu_model · Linux $(uname -r)"
echo "B → A over the overlay (MTU 1400 on a veth underlay of MTU 1500; the -9000 rows: 8950 on 9000); iperf3 $DURATION s per run; UDP ceiling: the highest rate of full-size datagrams received with under 1 % loss (the kernel rows: iperf3's own limit); CPU: user+system seconds of the tunnel processes and their children (ssh, sshd) on both sides during the TCP×1 run."
echo
echo "| system | TCP×1 Mbit/s | TCP×4 Mbit/s | UDP at 1 Gbit/s offered: received Mbit/s (loss) | UDP ceiling Mbit/s (packets/s) | ping ms | tunnel CPU s | Gbit per CPU s |"
echo "|---|---|---|---|---|---|---|---|"
for r in "${rows[@]}"; do echo "$r"; done
echo
echo "| cab row | TCP×1 × fastd | TCP×1 % of VXLAN | Gbit/CPU s × fastd | UDP ceiling × fastd |"
echo "|---|---|---|---|---|"
for name in cab-udp cab-segment cab-workers cab-nooffload cab-tcp cab-ssh cab-quic cab-udp-9000; do
	[[ -n ${results[$name]:-} ]] || continue
	base=fastd vx=vxlan
	[[ $name == *-9000 ]] && base=fastd-9000 vx=vxlan-9000
	echo "| $name | $(ratio "$name" $base 1 '%.1f×') | $(ratio "$name" $vx 1 '%.0f %%') | $(ratio "$name" $base 2 '%.1f×') | $(ratio "$name" $base 3 '%.1f×') |"
done
log "done in $(($(date +%s) - start)) s"
