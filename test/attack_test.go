//go:build linux

package cabtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The attack suite: test/attack (a Go tool of its own, never part of cab)
// attacks a real cab server from a namespace of its own, and each test
// checks that a real client still comes up, an established one keeps
// working, and the server stays bounded. Figures go to the test log.

var (
	attackOnce sync.Once
	attackBin  string
	attackErr  error
)

// attackTool builds test/attack once per run.
func attackTool(t *testing.T) string {
	t.Helper()
	attackOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cabtest-attack-")
		if err != nil {
			attackErr = err
			return
		}
		attackBin = filepath.Join(dir, "attack")
		build := exec.Command("go", "build", "-o", attackBin, "cab/test/attack")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			attackErr = fmt.Errorf("go build cab/test/attack: %v\n%s", err, out)
		}
	})
	if attackErr != nil {
		t.Fatal(attackErr)
	}
	return attackBin
}

// startAttack runs the attack tool in s's namespace.
func startAttack(t *testing.T, s *site, args ...string) *proc {
	t.Helper()
	return start(t, s.ns, attackTool(t), args...)
}

// attackResult waits (at most d) for an attack to end and returns its
// figures.
func attackResult(t *testing.T, p *proc, d time.Duration) map[string]any {
	t.Helper()
	if !p.wait(d) {
		t.Fatalf("%s still running after %v", p.name, d)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(p.stdout.String()), &r); err != nil || p.exitCode() != 0 {
		t.Fatalf("%s: exit %d, %v\nstdout %s\nstderr %s", p.name, p.exitCode(), err, p.stdout.String(), p.stderr.String())
	}
	t.Logf("%s: %v", p.name, r)
	return r
}

func num(r map[string]any, k string) float64 {
	f, _ := r[k].(float64)
	return f
}

// serverStatus is the part of `cab status --json` the attack tests read.
type serverStatus struct {
	Peers []struct {
		Name      string `json:"name"`
		PublicKey string `json:"public_key"`
		Up        bool   `json:"up"`
	} `json:"peers"`
	Drops map[string]uint64 `json:"drops"`
}

func serverStatusOf(t *testing.T, s *site, name string) serverStatus {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--json", "--name", name)
	var st serverStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cab status --json: %v\n%s", err, out)
	}
	return st
}

// clientUpWithin starts a client in s's namespace (its own --name and
// TAP, so several run side by side) and returns how long it took to log
// peer up, failing t past limit.
func clientUpWithin(t *testing.T, s *site, name, tap string, limit time.Duration, args ...string) (*proc, time.Duration) {
	t.Helper()
	t0 := time.Now()
	p := start(t, s.ns, cabBin, append([]string{"client", "-s", "tap:" + tap, "--name", name, "--state-dir", s.path(name)}, args...)...)
	t.Cleanup(func() { os.Remove(filepath.Join("/run/cab", name+".sock")) })
	if !waitFor(limit, func() bool { return strings.Contains(p.stderr.String(), peerUp) || p.exited() }) || p.exited() {
		t.Fatalf("%s: not up within %v during the attack (%s)\n%s", name, limit, p.state(), p.stderr.String())
	}
	d := time.Since(t0)
	t.Logf("%s up after %v", name, d.Round(10*time.Millisecond))
	return p, d
}

// TestAttackTCPSlowloris: one host holds 1030 idle TCP connections to
// the server; they are refused past the per-IP cap or closed
// unauthenticated, a real TCP client comes up within 10 s, and the
// server's memory stays bounded.
func TestAttackTCPSlowloris(t *testing.T) {
	srv, cl := hubSites(t, 2)
	real, attacker := cl[0], cl[1]
	psk := genkey(t, srv.path("site.psk"))
	mustRun(t, "cp", psk, real.path("site.psk"))
	sp := srv.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk, "--transport", "udp,tcp")
	setupTap(t, srv, sp, overlayA)
	time.Sleep(500 * time.Millisecond)
	rss0 := rssKB(t, sp)
	a := startAttack(t, attacker, "tcp-slowloris", "-addr", srv.v4+":"+port, "-n", "1030", "-hold", "20s")
	time.Sleep(3 * time.Second) // the attacker's sockets are in
	cp, _ := clientUpWithin(t, real, real.ns, tapDev, 10*time.Second, "--psk", real.path("site.psk"), "--transport", "tcp", srv.v4+":"+port)
	setupTap(t, real, cp, overlayB)
	waitPing(t, upTimeout, real.ns, overlayA)
	rss := rssKB(t, sp)
	r := attackResult(t, a, 60*time.Second)
	st := serverStatusOf(t, srv, srv.ns)
	t.Logf("server RSS %d KiB before, %d KiB during; drops %v", rss0, rss, st.Drops)
	if open := num(r, "still_open_at_end"); open > 8 {
		t.Errorf("%v of the attacker's connections stayed open to the end, want at most the per-IP cap (8)", open)
	}
	if ms := num(r, "longest_closed_ms"); ms > 10000 {
		t.Errorf("an idle connection stayed open %v ms, want it closed about 5 s after it came", ms)
	}
	if st.Drops["tcp_refused_per_ip"] < 1000 {
		t.Errorf("tcp_refused_per_ip %d, want the attack's connections over the cap counted", st.Drops["tcp_refused_per_ip"])
	}
	if rss-rss0 > 32<<10 {
		t.Errorf("server RSS grew by %d KiB under the attack", rss-rss0)
	}
	if n := ping(t, real.ns, overlayA, 5); n != 5 {
		t.Errorf("ping after the attack: %d of 5", n)
	}
}

// TestAttackQUICFlood: one host makes 1100 QUIC connection attempts and
// holds what it gets; a real QUIC client comes up within 10 s.
func TestAttackQUICFlood(t *testing.T) {
	srv, cl := hubSites(t, 2)
	real, attacker := cl[0], cl[1]
	psk := genkey(t, srv.path("site.psk"))
	mustRun(t, "cp", psk, real.path("site.psk"))
	sp := srv.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk, "--transport", "udp,quic")
	setupTap(t, srv, sp, overlayA)
	time.Sleep(500 * time.Millisecond)
	rss0 := rssKB(t, sp)
	a := startAttack(t, attacker, "quic-flood", "-addr", srv.v4+":443", "-n", "1100", "-hold", "25s")
	time.Sleep(5 * time.Second)
	cp, _ := clientUpWithin(t, real, real.ns, tapDev, 10*time.Second, "--psk", real.path("site.psk"), "--transport", "quic", srv.v4)
	setupTap(t, real, cp, overlayB)
	waitPing(t, upTimeout, real.ns, overlayA)
	rss := rssKB(t, sp)
	r := attackResult(t, a, 90*time.Second)
	st := serverStatusOf(t, srv, srv.ns)
	t.Logf("server RSS %d KiB before, %d KiB during; drops %v", rss0, rss, st.Drops)
	if done := num(r, "completed"); done > 8 {
		t.Errorf("%v QUIC connections from one host completed, want at most the per-IP cap (8)", done)
	}
	if done, closed := num(r, "completed"), num(r, "closed_by_server"); closed < done {
		t.Errorf("%v of %v connections held without a cab handshake stayed open", done-closed, done)
	}
}

// TestAttackDNSSessions: 80 tunnel sessions that never authenticate flood
// the DNS server through the resolver the real clients use; the
// established tunnel keeps working, and a new client gets through.
func TestAttackDNSSessions(t *testing.T) {
	d := newDNSSetup(t, "")
	waitPing(t, 30*time.Second, d.cli.ns, overlayA)
	a := startAttack(t, d.cli, "dns-sessions", "-resolver", resolverCli+":53", "-zone", dnsZone, "-n", "80", "-rate", "40", "-dur", "40s")
	time.Sleep(8 * time.Second) // the sessions are open and busy
	n := ping(t, d.cli.ns, overlayA, 20)
	// A new client (its own key, so a new session and a new peer)
	// through the same resolver, during the flood; DNS handshakes take a
	// few round trips through the resolver, hence 20 s.
	clientUpWithin(t, d.cli, "late", "cab1", 20*time.Second, "--psk", d.cli.path("site.psk"), "--transport", "dns://"+dnsZone, "--resolver", resolverCli)
	attackResult(t, a, 60*time.Second)
	st := serverStatusOf(t, d.srv, d.srv.ns)
	t.Logf("ping during the flood: %d of 20; server drops %v", n, st.Drops)
	if n < 16 {
		t.Errorf("ping through the tunnel during the flood: %d of 20", n)
	}
	if st.Drops["dns_probation_evicted"] == 0 {
		t.Errorf("no session on probation evicted: the flood did not fill probation (drops %v)", st.Drops)
	}
	if p := serverStatusOf(t, d.srv, d.srv.ns).Peers; len(p) != 2 || !p[0].Up || !p[1].Up {
		t.Errorf("server peers %+v, want both clients up", p)
	}
}

// TestAttackAmplification sends every unauthenticated shape to every
// carrier and wants no more bytes back than were sent.
func TestAttackAmplification(t *testing.T) {
	srv, cl := hubSites(t, 2)
	real, attacker := cl[0], cl[1]
	psk := genkey(t, srv.path("site.psk"))
	mustRun(t, "cp", psk, real.path("site.psk"))
	sp := srv.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk, "--transport", "udp,tcp,quic,dns",
		"--dns-zone", dnsZone, "--dns-listen", srv.v4+":53")
	setupTap(t, srv, sp, overlayA)
	cp, _ := clientUpWithin(t, real, real.ns, tapDev, upTimeout, "--psk", real.path("site.psk"), srv.v4+":"+port)
	setupTap(t, real, cp, overlayB)
	key := serverStatusOf(t, real, real.ns).Peers[0].PublicKey
	a := startAttack(t, attacker, "amplification", "-udp", srv.v4+":"+port, "-tcp", srv.v4+":"+port, "-quic", srv.v4+":443",
		"-dns", srv.v4+":53", "-zone", dnsZone, "-key", key)
	r := attackResult(t, a, 60*time.Second)
	shapes, _ := r["shapes"].(map[string]any)
	if len(shapes) < 12 {
		t.Fatalf("%d shapes measured, want every one: %v", len(shapes), shapes)
	}
	for name, v := range shapes {
		s, _ := v.(map[string]any)
		if num(s, "sent") == 0 {
			t.Errorf("%s: nothing sent", name)
		}
		if ratio := num(s, "ratio"); ratio > 1 {
			t.Errorf("%s: %.2f× back (%v of %v bytes), want at most 1×", name, ratio, num(s, "back"), num(s, "sent"))
		}
	}
}

// TestAttackNonCanonicalKey: a client of a server that takes any PSK
// holder sends its static key with bit 255 set (the same point, another
// map key); it gets no answer, and the server keeps one peer for it.
func TestAttackNonCanonicalKey(t *testing.T) {
	srv, cl := hubSites(t, 1)
	c := cl[0]
	psk := genkey(t, srv.path("site.psk"))
	mustRun(t, "cp", psk, c.path("site.psk"))
	sp := srv.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
	setupTap(t, srv, sp, overlayA)
	clientUpWithin(t, c, c.ns, tapDev, upTimeout, "--psk", c.path("site.psk"), srv.v4+":"+port)
	key := serverStatusOf(t, c, c.ns).Peers[0].PublicKey
	a := startAttack(t, c, "noncanonical", "-addr", srv.v4+":"+port, "-key", key,
		"-priv", filepath.Join(c.path(c.ns), "client.key"), "-psk", c.path("site.psk"))
	r := attackResult(t, a, 30*time.Second)
	if n := num(r, "answered"); n != 0 {
		t.Errorf("the server answered %v initiations with a non-canonical static key", n)
	}
	if p := serverStatusOf(t, srv, srv.ns).Peers; len(p) != 1 {
		t.Errorf("server has %d peers for one client: %+v", len(p), p)
	}
}

// TestAttackPeerExhaustion: 1100 initiations from random keys without the
// PSK, against a server that takes any PSK holder; then a real client
// comes up within 10 s.
func TestAttackPeerExhaustion(t *testing.T) {
	srv, cl := hubSites(t, 2)
	real, attacker := cl[0], cl[1]
	psk := genkey(t, srv.path("site.psk"))
	mustRun(t, "cp", psk, real.path("site.psk"))
	sp := srv.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
	setupTap(t, srv, sp, overlayA)
	first, _ := clientUpWithin(t, real, "first", "cab1", upTimeout, "--psk", real.path("site.psk"), srv.v4+":"+port)
	key := serverStatusOf(t, real, "first").Peers[0].PublicKey
	first.signal(15)
	a := startAttack(t, attacker, "peer-exhaust", "-addr", srv.v4+":"+port, "-key", key, "-n", "1100")
	r := attackResult(t, a, 60*time.Second)
	st := serverStatusOf(t, srv, srv.ns)
	t.Logf("server peers after the attack: %d", len(st.Peers))
	if len(st.Peers) > 10 {
		t.Errorf("%d peers after %v initiations without the PSK: state for strangers", len(st.Peers), num(r, "sent"))
	}
	clientUpWithin(t, real, real.ns, tapDev, 10*time.Second, "--psk", real.path("site.psk"), srv.v4+":"+port)
}

// TestAttackHandshakeFlood: initiations with good mac1 from random keys at
// 5000 per second, from the attacker's own address or spoofed from
// random addresses of the segment; a new client comes up within 10 s and
// the established one loses no ping.
func TestAttackHandshakeFlood(t *testing.T) {
	for _, spoof := range []bool{false, true} {
		t.Run(fmt.Sprintf("spoofed=%v", spoof), func(t *testing.T) {
			srv, cl := hubSites(t, 3)
			real, attacker, late := cl[0], cl[1], cl[2]
			psk := genkey(t, srv.path("site.psk"))
			for _, s := range []*site{real, late} {
				mustRun(t, "cp", psk, s.path("site.psk"))
			}
			// Spoofed sources on the segment pass reverse-path filtering.
			mustRun(t, "ip", "netns", "exec", srv.ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
			sp := srv.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
			setupTap(t, srv, sp, overlayA)
			cp, _ := clientUpWithin(t, real, real.ns, tapDev, upTimeout, "--psk", real.path("site.psk"), srv.v4+":"+port)
			setupTap(t, real, cp, overlayB)
			waitPing(t, upTimeout, real.ns, overlayA)
			key := serverStatusOf(t, real, real.ns).Peers[0].PublicKey
			args := []string{"handshake-flood", "-addr", srv.v4 + ":" + port, "-key", key, "-rate", "5000", "-dur", "20s"}
			if spoof {
				args = append(args, "-spoof", "198.51.100.128/25")
			}
			a := startAttack(t, attacker, args...)
			time.Sleep(3 * time.Second)
			n := ping(t, real.ns, overlayA, 20)
			clientUpWithin(t, late, late.ns, tapDev, 10*time.Second, "--psk", late.path("site.psk"), srv.v4+":"+port)
			attackResult(t, a, 60*time.Second)
			t.Logf("established client's ping during the flood: %d of 20; server drops %v", n, serverStatusOf(t, srv, srv.ns).Drops)
			if n < 20 {
				t.Errorf("the established client lost %d of 20 pings during the flood", 20-n)
			}
		})
	}
}
