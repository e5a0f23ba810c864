//go:build linux

package cabtest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Overlay addresses of the server (a) and client (b) TAPs.
const (
	overlayA = "192.0.2.1"
	overlayB = "192.0.2.2"
	port     = "6666"
)

// upTimeout bounds the wait for a handshake on an idle loopback underlay.
const upTimeout = 10 * time.Second

// pskPair starts a PSK server in a and a client in b that dials addr, and
// waits until both TAPs have their overlay address and both sides are up.
func pskPair(t *testing.T, a, b *site, dial string) (srv, cli *proc) {
	return pskPairArgs(t, a, b, dial, nil, nil)
}

// pskPairArgs is pskPair with extra flags for the server and the client.
func pskPairArgs(t *testing.T, a, b *site, dial string, srvArgs, cliArgs []string) (srv, cli *proc) {
	t.Helper()
	psk := genkey(t, a.path("site.psk"))
	srv = a.cab(t, append([]string{"server", "-p", port, "-s", "tap:" + tapDev, "--psk", psk}, srvArgs...)...)
	cli = b.cab(t, append(append([]string{"client", "-s", "tap:" + tapDev, "--psk", psk}, cliArgs...), dial)...)
	setupTap(t, a, srv, overlayA)
	setupTap(t, b, cli, overlayB)
	waitPeerUp(t, upTimeout, srv, cli)
	return srv, cli
}

// checkPing pings across the cable both ways and wants every reply.
func checkPing(t *testing.T, a, b *site) {
	t.Helper()
	waitPing(t, upTimeout, b.ns, overlayA)
	if n := ping(t, b.ns, overlayA, 5); n != 5 {
		t.Errorf("ping from b to %s: %d of 5 replies", overlayA, n)
	}
	if n := ping(t, a.ns, overlayB, 5); n != 5 {
		t.Errorf("ping from a to %s: %d of 5 replies", overlayB, n)
	}
}

// checkTCP runs iperf3 for 3 s from b to a's overlay address and wants a
// successful run with a non-zero rate.
func checkTCP(t *testing.T, a, b *site) { checkTCPArgs(t, a, b, "-t", "3") }

// startIperf starts a one-shot iperf3 server on s's overlay address A and
// port, and waits up to 5 s until it listens.
func startIperf(t *testing.T, s *site, port string) {
	t.Helper()
	srv := start(t, s.ns, "iperf3", "-s", "-1", "-B", overlayA, "-p", port)
	listening := waitFor(5*time.Second, func() bool {
		out, err := run(5*time.Second, "ip", "netns", "exec", s.ns, "ss", "-Hltn", "sport", "=", ":"+port)
		return err == nil && strings.TrimSpace(out) != ""
	})
	if !listening {
		t.Fatalf("iperf3 server not listening on port %s in %s within 5 s (%s)", port, s.ns, srv.state())
	}
}

// checkTCPArgs is checkTCP with iperf3 client arguments saying how much to
// send; it returns the MSS iperf3's socket reported.
func checkTCPArgs(t *testing.T, a, b *site, amount ...string) int {
	t.Helper()
	startIperf(t, a, "5201")
	args := append([]string{"netns", "exec", b.ns, "iperf3", "-c", overlayA, "-p", "5201", "-J", "--connect-timeout", "3000"}, amount...)
	out, err := run(60*time.Second, "ip", args...)
	var r struct {
		Error string `json:"error"`
		Start struct {
			MSS int `json:"tcp_mss_default"`
		} `json:"start"`
		End struct {
			SumReceived struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil || err != nil || r.Error != "" {
		t.Fatalf("iperf3 across the cable: %v %v %s\n%s", err, jerr, r.Error, out)
	}
	got := r.End.SumReceived
	if got.Bytes <= 0 || got.BitsPerSecond <= 0 {
		t.Fatalf("iperf3 across the cable: received %d bytes at %.0f bit/s, want both > 0", got.Bytes, got.BitsPerSecond)
	}
	t.Logf("TCP across the cable: %d bytes, %.1f Mbit/s, MSS %d", got.Bytes, got.BitsPerSecond/1e6, r.Start.MSS)
	return r.Start.MSS
}

func TestPSKIPv4(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	pskPair(t, a, b, a.v4+":"+port)
	checkPing(t, a, b)
	// The echo replies the kernels queued while cab wrote the requests to
	// the TAPs went back without waking the port loops.
	for _, s := range []*site{a, b} {
		if n := framesPolled(t, s); n == 0 {
			t.Errorf("%s: cab status counts no frames_polled after pings both ways", s.ns)
		}
	}
	checkTCP(t, a, b)
}

// framesPolled returns the frames_polled of s's cab status.
func framesPolled(t *testing.T, s *site) uint64 {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--json", "--name", s.ns)
	var st struct {
		Polled uint64 `json:"frames_polled"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cab status --json: %v\n%s", err, out)
	}
	return st.Polled
}

func TestPSKIPv6(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	pskPair(t, a, b, "["+a.v6+"]:"+port)
	checkPing(t, a, b)
	checkTCP(t, a, b)
}

// checkNothingThrough pings from b for about 4 s and wants no reply and no
// "peer up" in any of ps after the given offsets into their stderr.
func checkNothingThrough(t *testing.T, b *site, ps []*proc, offsets []int) {
	t.Helper()
	if n := ping(t, b.ns, overlayA, 12, "-i", "0.3"); n != 0 {
		t.Errorf("ping from b to %s: %d replies, want none", overlayA, n)
	}
	for i, p := range ps {
		if log := p.stderr.String()[offsets[i]:]; strings.Contains(log, peerUp) {
			t.Errorf("%s logged %s, want no session", p.name, peerUp)
		}
		if p.exited() {
			t.Errorf("%s exited (%s), want it running", p.name, p.state())
		}
	}
}

func TestPublicKeyAllow(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	serverKey := genkey(t, a.path("server.key"))
	allowedKey := genkey(t, b.path("client.key"))
	strangerKey := genkey(t, b.path("stranger.key"))
	allow := a.path("clients.txt")
	if err := os.WriteFile(allow, []byte("# clients of this test\n"+pubkey(t, allowedKey)+" site-b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	serverPub := pubkey(t, serverKey)

	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--key", serverKey, "--allow", allow)
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--key", allowedKey, "--server-key", serverPub, a.v4+":"+port)
	setupTap(t, a, srv, overlayA)
	setupTap(t, b, cli, overlayB)
	waitPeerUp(t, upTimeout, srv, cli)
	checkPing(t, a, b)

	// The allowed client leaves; one whose key is not listed takes its place.
	cli.signal(syscall.SIGTERM)
	if !cli.wait(5 * time.Second) {
		t.Fatalf("%s: no exit 5 s after SIGTERM", cli.name)
	}
	mark := len(srv.stderr.String())
	stranger := b.cab(t, "client", "-s", "tap:"+tapDev, "--key", strangerKey, "--server-key", serverPub, a.v4+":"+port)
	setupTap(t, b, stranger, overlayB)
	checkNothingThrough(t, b, []*proc{srv, stranger}, []int{mark, 0})
}

func TestWrongPSK(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	psk := genkey(t, a.path("site.psk"))
	wrong := genkey(t, b.path("other.psk"))
	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--psk", wrong, a.v4+":"+port)
	setupTap(t, a, srv, overlayA)
	setupTap(t, b, cli, overlayB)
	checkNothingThrough(t, b, []*proc{srv, cli}, []int{0, 0})

	// The same underlay and server work with the right PSK, so the silence
	// above was the key's doing.
	cli.signal(syscall.SIGTERM)
	if !cli.wait(5 * time.Second) {
		t.Fatalf("%s: no exit 5 s after SIGTERM", cli.name)
	}
	cli = b.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, a.v4+":"+port)
	setupTap(t, b, cli, overlayB)
	waitPeerUp(t, upTimeout, srv, cli)
	waitPing(t, upTimeout, b.ns, overlayA)
}

// startCapture runs tcpdump on dev in s's namespace, writing to file, and
// waits until it is capturing.
func startCapture(t *testing.T, s *site, dev, file string, filter ...string) *proc {
	t.Helper()
	p := start(t, s.ns, "tcpdump", append([]string{"-i", dev, "-n", "-U", "--immediate-mode", "-Z", "root", "-w", file}, filter...)...)
	if !waitFor(5*time.Second, func() bool { return strings.Contains(p.stderr.String(), "listening on") || p.exited() }) || p.exited() {
		t.Fatalf("tcpdump on %s in %s not capturing within 5 s (%s):\n%s", dev, s.ns, p.state(), p.stderr.String())
	}
	return p
}

// stopCapture stops tcpdump and returns the capture file.
func stopCapture(t *testing.T, p *proc, file string) []byte {
	t.Helper()
	p.signal(syscall.SIGTERM)
	if !p.wait(5 * time.Second) {
		t.Fatalf("tcpdump: no exit 5 s after SIGTERM")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countPackets returns how many packets in a capture file match a tcpdump
// filter.
func countPackets(t *testing.T, file, filter string) int {
	t.Helper()
	out, err := exec.Command("tcpdump", "-n", "-r", file, filter).Output()
	if err != nil {
		t.Fatalf("tcpdump -r %s %q: %v", file, filter, err)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) != "" {
			n++
		}
	}
	return n
}

// pingPatternHidden pings A from B with a byte pattern in 1000-byte
// pings while the TAP of B is captured, stops wireCap (a capture of the
// underlay into wire), and checks that the pattern is on the TAP (so the
// check can fail) and nowhere on the wire.
func pingPatternHidden(t *testing.T, a, b *site, wireCap *proc, wire string) {
	t.Helper()
	const pattern = "c0ffee11c0ffee22"
	inside := b.path("tap.pcap")
	tapCap := startCapture(t, b, tapDev, inside)
	if n := ping(t, b.ns, overlayA, 5, "-p", pattern, "-s", "1000"); n != 5 {
		t.Errorf("ping with pattern: %d of 5 replies", n)
	}
	wireBytes := stopCapture(t, wireCap, wire)
	tapBytes := stopCapture(t, tapCap, inside)
	raw := []byte{0xc0, 0xff, 0xee, 0x11, 0xc0, 0xff, 0xee, 0x22}
	if !bytes.Contains(tapBytes, raw) {
		t.Fatalf("the pattern %s is not in the capture on the TAP, so the check below would prove nothing", pattern)
	}
	if bytes.Contains(wireBytes, raw) {
		t.Errorf("the pattern %s crossed the underlay in plain text", pattern)
	}
}

func TestCaptureShowsNoPlaintext(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	pskPair(t, a, b, a.v4+":"+port)
	waitPing(t, upTimeout, b.ns, overlayA)

	wire := a.path("underlay.pcap")
	wireCap := startCapture(t, a, a.ulIf, wire)
	pingPatternHidden(t, a, b, wireCap, wire)
	for _, dir := range [][2]string{{b.v4, a.v4}, {a.v4, b.v4}} {
		filter := "udp and src host " + dir[0] + " and dst host " + dir[1] + " and greater 1000"
		if n := countPackets(t, wire, filter); n < 5 {
			t.Errorf("capture on the underlay: %d packets match %q, want >= 5 (the sealed pings)", n, filter)
		}
	}
}

func TestServerRestart(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	srv, _ := pskPair(t, a, b, a.v4+":"+port)
	waitPing(t, upTimeout, b.ns, overlayA)

	srv.signal(syscall.SIGKILL)
	if !srv.wait(5 * time.Second) {
		t.Fatalf("server: no exit 5 s after SIGKILL")
	}
	if n := ping(t, b.ns, overlayA, 3); n != 0 {
		t.Fatalf("ping from b with the server killed: %d replies, want none", n)
	}

	began := time.Now()
	srv = a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", a.path("site.psk"))
	setupTap(t, a, srv, overlayA)
	// The new TAP gets the same MAC as the old one (it is derived from the
	// server's key), so b's ARP cache stays right: no flush needed.
	waitPing(t, 15*time.Second, b.ns, overlayA)
	t.Logf("client back %v after the server restarted", time.Since(began).Round(100*time.Millisecond))
}

func TestCleanExit(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	srv, cli := pskPair(t, a, b, a.v4+":"+port)
	waitPing(t, upTimeout, b.ns, overlayA)
	for _, x := range []struct {
		s *site
		p *proc
	}{{a, srv}, {b, cli}} {
		x.p.signal(syscall.SIGTERM)
		if !x.p.wait(5 * time.Second) {
			t.Fatalf("%s: no exit 5 s after SIGTERM", x.p.name)
		}
		if code := x.p.exitCode(); code != 0 {
			t.Errorf("%s: exit code %d after SIGTERM, want 0", x.p.name, code)
		}
		if tapExists(x.s) {
			t.Errorf("%s: TAP %s still in %s after exit", x.p.name, tapDev, x.s.ns)
		}
	}
}
