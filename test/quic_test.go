//go:build linux

package cabtest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// The QUIC carrier of issue 9 in network namespaces: the cable over QUIC
// datagrams, the fallback from UDP to QUIC on UDP/443, what the underlay
// sees, a client's NAT rebinding, and clients that complete TLS but not
// cab's handshake.

// needNft skips (or in CI fails) a test when nft is missing.
func needNft(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nft not installed (apt-get install nftables)")
		}
		t.Skip("SKIPPED: nft not installed (apt-get install nftables)")
	}
}

// quicStatus is the part of `cab status --json` the QUIC tests read.
type quicStatus struct {
	Name       string `json:"name"`
	Up         bool   `json:"up"`
	Addr       string `json:"addr"`
	Transport  string `json:"transport"`
	RTT        int64  `json:"rtt_ns"`
	WireMTU    int    `json:"wire_mtu"`
	Handshakes uint64 `json:"handshakes"`
}

func quicStatusOf(t *testing.T, s *site) []quicStatus {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--json", "--name", s.ns)
	var st struct {
		Peers []quicStatus `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cab status --json: %v\n%s", err, out)
	}
	return st.Peers
}

// quicPair starts a cab server on a listening on serverTransports and a
// client on b dialling quic to serverAddr, with PSK, TAPs and addresses,
// and waits until both see the peer up.
func quicPair(t *testing.T, a, b *site, serverTransports, serverAddr string) {
	t.Helper()
	pskPairArgs(t, a, b, serverAddr, []string{"--transport", serverTransports}, []string{"--transport", "quic"})
}

// TestQUICTransport: a server on udp and quic, a client on quic only:
// ping and a TCP transfer cross; both sides' status says quic, with an
// RTT and a wire MTU no larger than a QUIC datagram; the plain-text
// status shows the RTT too.
func TestQUICTransport(t *testing.T) {
	a, b := newPair(t)
	quicPair(t, a, b, "udp,quic", a.v4)
	checkPing(t, a, b)
	checkTCP(t, a, b)
	for _, s := range []*site{a, b} {
		ps := quicStatusOf(t, s)
		if len(ps) != 1 || ps[0].Transport != "quic" || ps[0].RTT <= 0 || ps[0].WireMTU < 1200 || ps[0].WireMTU > 1452 {
			t.Errorf("%s: status %+v, want one peer over quic with an RTT and a wire MTU of 1200-1452", s.ns, ps)
		}
	}
	if ps := quicStatusOf(t, b); len(ps) == 1 && ps[0].Addr != "quic://"+a.v4+":443" {
		t.Errorf("client's path %q, want quic://%s:443", ps[0].Addr, a.v4)
	}
	out := mustRun(t, "ip", "netns", "exec", b.ns, cabBin, "status", "--name", b.ns)
	if !strings.Contains(out, "quic rtt=") {
		t.Errorf("cab status does not show the quic RTT:\n%s", out)
	}
}

// TestQUICIPv6: the cable over QUIC on an IPv6 underlay.
func TestQUICIPv6(t *testing.T) {
	a, b := newPair(t)
	quicPair(t, a, b, "quic", "["+a.v6+"]")
	checkPing(t, a, b)
	if ps := quicStatusOf(t, a); len(ps) != 1 || !strings.HasPrefix(ps[0].Addr, "quic://["+b.v6+"]:") {
		t.Errorf("server status %+v, want the client at quic://[%s]:PORT", ps, b.v6)
	}
}

// TestQUICFallback: the server's network passes no UDP but UDP/443 (so
// not the cab port); a client with --transport udp,quic ends up on quic
// and the cable works.
func TestQUICFallback(t *testing.T) {
	needNft(t)
	a, b := newPair(t)
	nft(t, a, "add", "table", "inet", "cabtest")
	nft(t, a, "add", "chain", "inet", "cabtest", "in", "{ type filter hook input priority 0 ; }")
	nft(t, a, "add", "rule", "inet", "cabtest", "in", "udp", "dport", "!=", "443", "counter", "drop")
	psk := genkey(t, a.path("site.psk"))
	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk, "--transport", "udp,quic")
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, "--transport", "udp,quic", a.v4+":"+port)
	setupTap(t, a, srv, overlayA)
	setupTap(t, b, cli, overlayB)
	t0 := time.Now()
	ok := waitFor(60*time.Second, func() bool {
		ps := quicStatusOf(t, b)
		return len(ps) == 1 && ps[0].Up && ps[0].Transport == "quic"
	})
	if !ok {
		t.Fatalf("the client is not up over quic within 60 s: %+v", quicStatusOf(t, b))
	}
	t.Logf("up over quic %v after the start", time.Since(t0).Round(100*time.Millisecond))
	checkPing(t, a, b)
	if ps := quicStatusOf(t, a); len(ps) != 1 || !ps[0].Up || ps[0].Transport != "quic" {
		t.Errorf("server status %+v, want the client up over quic", ps)
	}
	// The rule did drop the client's UDP attempts.
	rules := mustRun(t, "ip", "netns", "exec", a.ns, "nft", "list", "table", "inet", "cabtest")
	if strings.Contains(rules, "packets 0 ") {
		t.Errorf("the drop rule never matched, so the test proves nothing:\n%s", rules)
	}
}

// TestQUICCapture: on the underlay, every packet between the sites is
// QUIC on UDP/443, long headers for the handshake, short headers after,
// every first byte with QUIC's fixed bit (0x40) set, which no cab header
// has (cab's packet types are 1 to 6), and the ping's pattern never in
// clear.
func TestQUICCapture(t *testing.T) {
	a, b := newPair(t)
	wire := a.path("underlay.pcap")
	wireCap := startCapture(t, a, a.ulIf, wire)
	quicPair(t, a, b, "udp,quic", a.v4)
	waitPing(t, upTimeout, b.ns, overlayA)

	pingPatternHidden(t, a, b, wireCap, wire)
	between := "host " + a.v4 + " and host " + b.v4
	for _, c := range []struct {
		filter string
		min    int
		max    int
	}{
		{"udp and " + between, 20, -1},
		{"udp and " + between + " and not port 443", 0, 0},                                   // nothing but QUIC
		{"udp port 443 and " + between + " and udp[8] & 0x40 == 0", 0, 0},                    // the fixed bit, always
		{"udp port 443 and " + between + " and udp[8] & 0x80 != 0", 2, -1},                   // long headers: the handshake
		{"udp port 443 and " + between + " and udp[8] & 0x80 == 0", 10, -1},                  // short headers: the data
		{"udp port 443 and " + between + " and udp[8] & 0x80 == 0 and greater 1000", 10, -1}, // the sealed pings
	} {
		n := countPackets(t, wire, c.filter)
		if n < c.min || c.max >= 0 && n > c.max {
			t.Errorf("capture on the underlay: %d packets match %q, want %d..%d", n, c.filter, c.min, c.max)
		}
	}
}

// TestQUICNATRebinding: the client's NAT changes its source port in the
// middle of a ping; the server's QUIC connection follows it (the same
// connection: the cable sees no path change), and the pings go on.
func TestQUICNATRebinding(t *testing.T) {
	cli, rtr, srv, nat := natSites(t, "443")
	nat("40000-40010")

	psk := genkey(t, srv.path("site.psk"))
	sp := srv.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk, "--transport", "quic")
	cp := cli.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, "--transport", "quic", srv.v4)
	setupTap(t, srv, sp, overlayA)
	setupTap(t, cli, cp, overlayB)
	waitPeerUp(t, upTimeout, sp, cp)
	waitPing(t, 10*time.Second, cli.ns, overlayA)

	addrPort := func() (string, int) {
		t.Helper()
		ps := quicStatusOf(t, srv)
		if len(ps) != 1 {
			t.Fatalf("server status lists %d peers, want 1: %+v", len(ps), ps)
		}
		h, p, err := net.SplitHostPort(strings.TrimPrefix(ps[0].Addr, "quic://"))
		n, _ := strconv.Atoi(p)
		if err != nil || !strings.HasPrefix(ps[0].Addr, "quic://") {
			t.Fatalf("server status: peer addr %q, want quic://HOST:PORT", ps[0].Addr)
		}
		return h, n
	}
	handshakes := quicStatusOf(t, srv)[0].Handshakes
	pathChanges := strings.Count(sp.stderr.String(), `msg="path changed"`)
	before, after, sent, got := roam(t, cli, rtr, nat, addrPort, 10*time.Second)
	if got < 55 {
		t.Errorf("pings across the port change: %d of %d answered, want at least 55 of 60", got, sent)
	}
	if n := strings.Count(sp.stderr.String(), `msg="path changed"`); n != pathChanges {
		t.Errorf("the server's cable saw %d path changes: a new QUIC connection, not the old one migrated", n-pathChanges)
	}
	if st := quicStatusOf(t, srv)[0]; !st.Up || st.Handshakes != handshakes {
		t.Errorf("server after the change: %+v, want up with the same %d handshakes", st, handshakes)
	}
	t.Logf("path moved from port %d to %d; %d of %d pings answered", before, after, got, sent)
}

// TestQUICIdleClients: 40 clients on the established peer's host try QUIC
// and TLS with the server and send garbage datagrams but never a cab
// handshake, keeping QUIC alive with pings; the server lets the host hold
// 8 connections (the peer's and 7 idle ones), refuses the others, and
// closes the idle ones within its 5 s timeout; an established peer's
// pings go on meanwhile.
func TestQUICIdleClients(t *testing.T) {
	a, b := newPair(t)
	quicPair(t, a, b, "quic", a.v4)
	waitPing(t, upTimeout, b.ns, overlayA)

	pinger := start(t, b.ns, "ping", "-n", "-i", "0.2", "-c", "75", "-W", "1", overlayA)
	const n = 40
	var socks []net.PacketConn
	inNetns(t, b.ns, func() {
		for i := 0; i < n; i++ {
			pc, err := net.ListenPacket("udp4", ":0")
			if err != nil {
				t.Errorf("socket: %v", err)
				return
			}
			socks = append(socks, pc)
		}
	})
	defer func() {
		for _, pc := range socks {
			pc.Close()
		}
	}()
	type result struct {
		dialErr error
		closed  time.Duration // after the handshake; 0: not closed within the wait
		byPeer  bool
	}
	results := make([]result, len(socks))
	var wg sync.WaitGroup
	for i, pc := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tr := &quic.Transport{Conn: pc}
			defer tr.Close()
			qc, err := tr.Dial(ctx, &net.UDPAddr{IP: net.ParseIP(a.v4), Port: 443},
				&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h3"}},
				&quic.Config{EnableDatagrams: true, KeepAlivePeriod: time.Second, MaxIdleTimeout: time.Minute})
			if err != nil {
				results[i].dialErr = err
				return
			}
			up := time.Now()
			for j := 0; j < 5; j++ {
				qc.SendDatagram([]byte(fmt.Sprintf("\x01garbage %d from %d, not a handshake", j, i)))
			}
			select {
			case <-qc.Context().Done():
				results[i].closed = time.Since(up)
				var ae *quic.ApplicationError
				results[i].byPeer = errors.As(context.Cause(qc.Context()), &ae) && ae.Remote
			case <-time.After(25 * time.Second):
				qc.CloseWithError(0, "")
			}
		}()
	}
	wg.Wait()
	if !pinger.wait(20 * time.Second) {
		t.Fatal("ping -c 75 -i 0.2 did not finish")
	}
	const perIP = 8 // quic.DefaultPerIP
	closed, refused := 0, 0
	var slowest time.Duration
	for _, r := range results {
		switch {
		case r.dialErr != nil:
			var te *quic.TransportError
			if errors.As(r.dialErr, &te) && te.ErrorCode == quic.ConnectionRefused && te.Remote {
				refused++
			} else {
				t.Logf("dial: %v", r.dialErr)
			}
		case r.closed > 0 && r.byPeer:
			closed++
			slowest = max(slowest, r.closed)
		}
	}
	if refused != n-(perIP-1) || closed != perIP-1 {
		t.Errorf("of %d idle clients: %d refused, %d completed TLS and were closed by the server; want %d and %d", n, refused, closed, n-(perIP-1), perIP-1)
	}
	if slowest > 10*time.Second || slowest < 3*time.Second {
		t.Errorf("the last idle client was closed %v after its handshake, want about 5 s", slowest)
	}
	sent, got := pingSummary(pinger.stdout.String())
	if sent != 75 || got < 72 {
		t.Errorf("the established peer's pings: %d of %d answered, want at least 72\n%s", got, sent, pinger.stdout.String())
	}
	if ps := quicStatusOf(t, a); len(ps) != 1 || !ps[0].Up {
		t.Errorf("server status %+v, want the one client, up", ps)
	}
	if st := statusJSON(t, a); st.Drops["quic_unused_conns"] != perIP-1 || st.Drops["quic_refused_per_ip"] < n-(perIP-1) {
		t.Errorf("server status drops %v, want quic_unused_conns %d and quic_refused_per_ip at least %d", st.Drops, perIP-1, n-(perIP-1))
	}
	t.Logf("%d idle clients closed, the last %v after its handshake; pings %d of %d", closed, slowest.Round(100*time.Millisecond), got, sent)
}

// TestQUICServerRestart: a server killed with SIGKILL and started again
// answers the client's old connection with a stateless reset (its reset
// key comes from its cab key, so it survives the restart); the client
// dials anew at once instead of waiting out QUIC's idle timeout.
func TestQUICServerRestart(t *testing.T) {
	a, b := newPair(t)
	psk := genkey(t, a.path("site.psk"))
	args := []string{"server", "-p", port, "-s", "tap:" + tapDev, "--psk", psk, "--transport", "quic"}
	srv := a.cab(t, args...)
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, "--transport", "quic", a.v4)
	setupTap(t, a, srv, overlayA)
	setupTap(t, b, cli, overlayB)
	waitPeerUp(t, upTimeout, srv, cli)
	waitPing(t, upTimeout, b.ns, overlayA)

	srv.signal(syscall.SIGKILL)
	if !srv.wait(5 * time.Second) {
		t.Fatal("server: no exit 5 s after SIGKILL")
	}
	began := time.Now()
	srv = a.cab(t, args...)
	setupTap(t, a, srv, overlayA)
	waitPing(t, 20*time.Second, b.ns, overlayA)
	t.Logf("client back %v after the server restarted", time.Since(began).Round(100*time.Millisecond))
}

// TestQUICFragmented: QUIC datagrams hold less than a full frame, so the
// cable cuts big frames into fragments. A TCP transfer begun as soon as
// the link is up has its MSS clamped to what fits (the cable's smallest
// wire MTU is set when the peer comes up, not on the next timer tick), so
// most of its segments are not cut (before, nearly all were, and the
// transfer crawled at 20 Mbit/s). UDP datagrams of 1372 bytes, which are all
// cut, offered at 500 Mbit/s, more than the carrier takes: the fragments
// that the carrier's queue loses cost the receiver at most the frames they
// belonged to. Before, a dozen lost fragments filled the peer's reassembly
// table and every fragmented frame after them was dropped whole for two
// seconds: tens of thousands of fragment drops, and TCP flows that stalled.
func TestQUICFragmented(t *testing.T) {
	a, b := newPair(t)
	quicPair(t, a, b, "udp,quic", a.v4)
	mss := checkTCPArgs(t, a, b, "-t", "2")
	st := quicDrops(t, b)
	if st.fragmented*2 > st.txFrames {
		t.Errorf("TCP begun as the link came up: %d of %d frames cut into fragments, MSS %d (wire MTU %d): the SYN was not clamped to the path", st.fragmented, st.txFrames, mss, wireMTU(t, b))
	}
	startIperf(t, a, "5203")
	out, err := run(30*time.Second, "ip", "netns", "exec", b.ns,
		"iperf3", "-c", overlayA, "-p", "5203", "-u", "-l", "1372", "-b", "500M", "-t", "3", "--connect-timeout", "3000")
	if err != nil {
		t.Fatalf("iperf3 UDP: %v\n%s", err, out)
	}
	sent, recv := quicDrops(t, b), quicDrops(t, a)
	lost := sent.carrier - st.carrier
	t.Logf("UDP of 1372 bytes at 500 Mbit/s over QUIC: %d frames cut into fragments, %d packets lost by the sender's carrier, %d fragment drops at the receiver\n%s",
		sent.fragmented-st.fragmented, lost, recv.fragment, out)
	if sent.fragmented-st.fragmented < 1000 {
		t.Fatalf("only %d frames were cut into fragments; the check below would prove nothing", sent.fragmented-st.fragmented)
	}
	// A lost fragment leaves at most one frame unfinished.
	if recv.fragment > lost+100 {
		t.Errorf("the receiver dropped %d fragments for %d packets the carrier lost: lost fragments hold up the frames after them", recv.fragment, lost)
	}
}

// fragCounts are the counters of `cab status --json` on fragments: frames
// cut and fragments dropped (the first peer's), and packets the carrier
// lost (drops named quic_*).
type fragCounts struct {
	fragmented, txFrames, fragment, carrier uint64
}

func quicDrops(t *testing.T, s *site) fragCounts {
	t.Helper()
	st := cableStatusOf(t, s)
	if len(st.Peers) == 0 {
		t.Fatalf("cab status in %s: no peer", s.ns)
	}
	c := fragCounts{fragmented: st.Peers[0].Fragmented, txFrames: st.Peers[0].TxFrames, fragment: st.Peers[0].Drops["fragment"]}
	for k, v := range st.Drops {
		if strings.HasPrefix(k, "quic_") {
			c.carrier += v
		}
	}
	return c
}
