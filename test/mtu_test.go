//go:build linux

package cabtest

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMTU: with a TAP MTU of 1500 on both sites and an underlay of 1500,
// 1400 or 1280 bytes, full-size pings with DF set cross the cable, a TCP
// transfer completes with its MSS clamped to what fits the path, and the
// underlay carries no IP fragments: cab cuts big frames itself.
func TestMTU(t *testing.T) {
	t.Parallel()
	for _, mtu := range []int{1500, 1400, 1280} {
		t.Run(strconv.Itoa(mtu), func(t *testing.T) {
			t.Parallel()
			a, b := newPair(t)
			for _, s := range []*site{a, b} {
				mustRun(t, "ip", "-n", s.ns, "link", "set", s.ulIf, "mtu", strconv.Itoa(mtu))
			}
			srv, _ := pskPair(t, a, b, a.v4+":"+port)
			// Capture the underlay (fragments) and A's TAP (the SYN's MSS).
			ul := a.path("ul.pcap")
			tapCap := a.path("tap.pcap")
			cap1 := start(t, a.ns, "tcpdump", "-i", a.ulIf, "-n", "-U", "--immediate-mode", "-Z", "root", "-w", ul, "udp")
			cap2 := start(t, a.ns, "tcpdump", "-i", tapDev, "-n", "-U", "--immediate-mode", "-Z", "root", "-w", tapCap, "tcp[tcpflags] & tcp-syn != 0 and src host "+overlayB)
			time.Sleep(time.Second)
			waitPing(t, 10*time.Second, b.ns, overlayA)
			for _, size := range []int{1472, 1473 - 1, 1200, mtu - 28 - 32, mtu - 28 - 31} {
				if size > 1472 || size < 0 {
					continue
				}
				if n := ping(t, b.ns, overlayA, 3, "-M", "do", "-s", strconv.Itoa(size)); n != 3 {
					t.Errorf("underlay %d: ping -M do -s %d: %d of 3", mtu, size, n)
				}
			}
			sockMSS := checkTCPArgs(t, a, b, "-n", "200M")
			checkUDP1472(t, a, b)
			time.Sleep(500 * time.Millisecond)
			cap1.signal(syscall.SIGINT)
			cap2.signal(syscall.SIGINT)
			cap1.wait(5 * time.Second)
			cap2.wait(5 * time.Second)
			frags, _ := exec.Command("tcpdump", "-n", "-r", ul, "ip[6:2] & 0x3fff != 0 or ip6[6] == 44").Output()
			total, _ := exec.Command("tcpdump", "-n", "-r", ul).Output()
			if n := strings.Count(string(total), "\n"); n < 20 {
				t.Fatalf("underlay capture has %d packets; the check below would prove nothing", n)
			}
			if strings.TrimSpace(string(frags)) != "" {
				t.Errorf("underlay %d: IP fragments on the wire:\n%.600s", mtu, frags)
			}
			syns, _ := exec.Command("tcpdump", "-n", "-v", "-r", tapCap).Output()
			m := regexp.MustCompile(`mss (\d+)`).FindAllStringSubmatch(string(syns), -1)
			// The SYN from B as it leaves the cable at A. Over an IPv4
			// underlay: the path MTU less IPv4+UDP, less cab's 32 bytes,
			// Ethernet and TCP/IP.
			want := mtu - 28 - 32 - 14 - 40
			if len(m) == 0 {
				t.Fatalf("no SYN seen on A's TAP:\n%s", syns)
			}
			for _, mm := range m {
				if got, _ := strconv.Atoi(mm[1]); got > want {
					t.Errorf("underlay %d: a SYN crossed with MSS %d, want <= %d", mtu, got, want)
				}
			}
			// The sender's socket: the clamp, less 12 bytes of TCP
			// timestamps when they are on.
			if sockMSS != want && sockMSS != want-12 {
				t.Errorf("underlay %d: the sender's socket reports MSS %d, want %d (or %d with timestamps)", mtu, sockMSS, want, want-12)
			}
			t.Logf("underlay %d: MSS %s on the wire (at most %d), %d at the sender's socket, server's wire MTU %d", mtu, m[0][1], want, sockMSS, wireMTU(t, a))
			_ = srv
		})
	}
}

// TestMSSClampBothEnds: each end clamps the SYNs that leave the cable to
// its own setting, not only those that enter it: with the client's clamp
// off and the server's at 1000, the client's SYN reaches the server's TAP
// with MSS 1000 (before, with 1460), and the client's socket gets 1000
// from the server's SYN-ACK.
func TestMSSClampBothEnds(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	pskPairArgs(t, a, b, a.v4+":"+port, []string{"--mss-clamp", "1000"}, []string{"--mss-clamp", "off"})
	tapCap := a.path("tap.pcap")
	capture := startCapture(t, a, tapDev, tapCap, "tcp[tcpflags] & tcp-syn != 0 and src host "+overlayB)
	waitPing(t, upTimeout, b.ns, overlayA)
	sockMSS := checkTCPArgs(t, a, b, "-n", "10M")
	stopCapture(t, capture, tapCap)
	syns, _ := exec.Command("tcpdump", "-n", "-v", "-r", tapCap).Output()
	m := regexp.MustCompile(`mss (\d+)`).FindAllStringSubmatch(string(syns), -1)
	if len(m) == 0 {
		t.Fatalf("no SYN from B seen on A's TAP:\n%s", syns)
	}
	for _, mm := range m {
		if mm[1] != "1000" {
			t.Errorf("B's SYN left the cable at A with MSS %s, want 1000 (A's clamp)", mm[1])
		}
	}
	if sockMSS != 1000 && sockMSS != 1000-12 {
		t.Errorf("B's socket reports MSS %d, want 1000 (or 988 with timestamps)", sockMSS)
	}
}

// wireMTU returns the wire MTU of the first peer in cab status at s.
func wireMTU(t *testing.T, s *site) int {
	t.Helper()
	var st struct {
		Peers []struct {
			WireMTU int `json:"wire_mtu"`
		} `json:"peers"`
	}
	json.Unmarshal([]byte(mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--json", "--name", s.ns)), &st)
	if len(st.Peers) == 0 {
		return 0
	}
	return st.Peers[0].WireMTU
}

// TestTAPMTUAuto: with --mtu auto a standalone TAP follows the largest MTU
// that crosses the cable without fragments (underlay 1400: 1400 − 28 − 32 −
// 14 = 1326).
func TestTAPMTUAuto(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	for _, s := range []*site{a, b} {
		mustRun(t, "ip", "-n", s.ns, "link", "set", s.ulIf, "mtu", "1400")
	}
	psk := genkey(t, a.path("site.psk"))
	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, "--mtu", "auto", a.v4+":"+port)
	waitPeerUp(t, upTimeout, srv, cli)
	var out string
	if !waitFor(10*time.Second, func() bool {
		out, _ = run(5*time.Second, "ip", "-n", b.ns, "-o", "link", "show", "dev", tapDev)
		return strings.Contains(out, "mtu 1326 ")
	}) {
		t.Fatalf("TAP MTU did not follow the path: %s", out)
	}
}

// TestMTUBlackHole: a router between the sites has a 1300-byte link and
// drops the ICMP "fragmentation needed" that would tell the sender, so the
// kernel keeps believing 1500. cab's probes find the hole, and full-size
// DF pings cross the cable.
func TestMTUBlackHole(t *testing.T) {
	t.Parallel()
	a, r := newPair(t) // a: 198.51.100.1, r: router .2
	c := newNetns(t, "c")
	id := randomID(t)
	mustRun(t, "ip", "link", "add", "r"+id, "netns", r.ns, "type", "veth", "peer", "name", "eth0", "netns", c.ns)
	mustRun(t, "ip", "-n", r.ns, "addr", "add", "198.51.100.129/25", "dev", "r"+id)
	mustRun(t, "ip", "-n", r.ns, "link", "set", "r"+id, "mtu", "1300", "up")
	mustRun(t, "ip", "-n", c.ns, "addr", "add", "198.51.100.130/25", "dev", "eth0")
	mustRun(t, "ip", "-n", c.ns, "link", "set", "eth0", "up") // c's own link stays at 1500
	mustRun(t, "ip", "-n", c.ns, "route", "add", "default", "via", "198.51.100.129")
	mustRun(t, "ip", "-n", a.ns, "route", "add", "198.51.100.128/25", "via", r.v4)
	mustRun(t, "ip", "netns", "exec", r.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	mustRun(t, "ip", "netns", "exec", r.ns, "nft", "add table ip f; add chain ip f out { type filter hook output priority 0; }; add rule ip f out icmp type destination-unreachable drop")
	psk := genkey(t, a.path("site.psk"))
	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
	cli := c.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, a.v4+":"+port)
	setupTap(t, a, srv, overlayA)
	setupTap(t, c, cli, overlayB)
	waitPeerUp(t, upTimeout, srv, cli)
	start := time.Now()
	if !waitFor(40*time.Second, func() bool { return ping(t, c.ns, overlayA, 1, "-M", "do", "-s", "1472") == 1 }) {
		t.Fatalf("full-size DF pings never crossed the black hole; client's wire MTU %d", wireMTU(t, c))
	}
	if n := ping(t, c.ns, overlayA, 5, "-M", "do", "-s", "1472"); n != 5 {
		t.Errorf("after probing: %d of 5 full-size pings", n)
	}
	t.Logf("black hole found in %v: wire MTU %d (client) and %d (server)", time.Since(start).Round(time.Second), wireMTU(t, c), wireMTU(t, a))
}

// checkUDP1472 sends 1472-byte UDP datagrams (full 1500-byte IP packets)
// from b to a's overlay address at 20 Mbit/s for 2 s and wants them all.
func checkUDP1472(t *testing.T, a, b *site) {
	t.Helper()
	startIperf(t, a, "5202")
	out, err := run(30*time.Second, "ip", "netns", "exec", b.ns,
		"iperf3", "-c", overlayA, "-p", "5202", "-u", "-l", "1472", "-b", "20M", "-t", "2", "-J", "--connect-timeout", "3000")
	var r struct {
		End struct {
			Sum struct {
				Packets     int     `json:"packets"`
				LostPackets int     `json:"lost_packets"`
				LostPercent float64 `json:"lost_percent"`
			} `json:"sum"`
		} `json:"end"`
	}
	if i := strings.Index(out, "{"); i > 0 {
		out = out[i:] // iperf3 warns that 1472 exceeds the (clamped) TCP MSS
	}
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil || err != nil || r.End.Sum.Packets == 0 {
		t.Fatalf("iperf3 UDP: %v %v\n%s", err, jerr, out)
	}
	if r.End.Sum.LostPackets > r.End.Sum.Packets/100 {
		t.Errorf("1472-byte UDP datagrams: %d of %d lost", r.End.Sum.LostPackets, r.End.Sum.Packets)
	}
	t.Logf("1472-byte UDP datagrams: %d sent, %d lost", r.End.Sum.Packets, r.End.Sum.LostPackets)
}
