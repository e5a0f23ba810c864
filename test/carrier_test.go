//go:build linux

package cabtest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cabAs starts cab in s's namespace as instance name (its control socket
// /run/cab/NAME.sock), with env set in its environment, for sites that run
// more than one cab.
func cabAs(t *testing.T, s *site, name string, env []string, args ...string) *proc {
	t.Helper()
	args = append(args, "--name", name, "--state-dir", s.path("state-"+name))
	p := start(t, s.ns, "env", append(append(env, cabBin), args...)...)
	t.Cleanup(func() { os.Remove(filepath.Join("/run/cab", name+".sock")) }) // left behind only by SIGKILL
	return p
}

// carrierOf reports whether dev in s's namespace has carrier: ip shows
// LOWER_UP, not NO-CARRIER. ok is false when the device is not there.
func carrierOf(s *site, dev string) (carrier, ok bool) {
	out, err := run(5*time.Second, "ip", "-n", s.ns, "-o", "link", "show", "dev", dev)
	if err != nil {
		return false, false
	}
	return strings.Contains(out, "LOWER_UP") && !strings.Contains(out, "NO-CARRIER"), true
}

// waitCarrier polls dev's carrier every 20 ms for at most timeout and
// returns how long it took to become want.
func waitCarrier(t *testing.T, s *site, dev string, want bool, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		c, ok := carrierOf(s, dev)
		if ok && c == want {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			out, _ := run(5*time.Second, "ip", "-n", s.ns, "-o", "link", "show", "dev", dev)
			t.Fatalf("%s in %s: carrier not %v within %v: %s", dev, s.ns, want, timeout, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// carrierStatus is `cab status --json`'s carrier for instance name.
func carrierStatus(t *testing.T, s *site, name string) string {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--json", "--name", name)
	var st struct {
		Carrier   string `json:"carrier"`
		DeadAfter int64  `json:"dead_after_ns"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cab status --json: %v\n%s", err, out)
	}
	return st.Carrier
}

// TestCarrierFollowsCable: a client's TAP shows NO-CARRIER while its
// server is down and LOWER_UP while it is up (killed with -9 and back);
// a server's TAP has carrier with no client at all, unless it is told
// carrier=follow; cab status and the log say so.
func TestCarrierFollowsCable(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	psk := genkey(t, a.path("site.psk"))
	fast := []string{"--dead-after", "1s"}

	// The client first: no server, no carrier.
	cli := b.cab(t, append([]string{"client", "-s", "tap:" + tapDev, "--psk", psk, a.v4 + ":" + port}, fast...)...)
	waitCarrier(t, b, tapDev, false, 10*time.Second)
	time.Sleep(time.Second)
	if c, _ := carrierOf(b, tapDev); c {
		t.Fatal("the client's TAP has carrier with no server")
	}
	if got := carrierStatus(t, b, b.ns); got != "down" {
		t.Errorf("client status carrier %q, want down", got)
	}

	// A server by default: carrier always.
	srv := a.cab(t, append([]string{"server", "-p", port, "-s", "tap:" + tapDev, "--psk", psk}, fast...)...)
	waitPeerUp(t, upTimeout, srv, cli)
	waitCarrier(t, b, tapDev, true, 5*time.Second)
	waitCarrier(t, a, tapDev, true, 5*time.Second)
	if got := carrierStatus(t, b, b.ns); got != "up" {
		t.Errorf("client status carrier %q, want up", got)
	}
	if got := carrierStatus(t, a, a.ns); got != "" {
		t.Errorf("server status carrier %q, want none (a server leaves it on)", got)
	}
	mustRun(t, "ip", "-n", a.ns, "addr", "add", overlayA+"/24", "dev", tapDev)
	mustRun(t, "ip", "-n", b.ns, "addr", "add", overlayB+"/24", "dev", tapDev)
	waitPing(t, upTimeout, b.ns, overlayA)

	// The hub dies: the client's carrier drops about --dead-after later.
	srv.signal(syscall.SIGKILL)
	srv.wait(5 * time.Second)
	d := waitCarrier(t, b, tapDev, false, 5*time.Second)
	t.Logf("client TAP NO-CARRIER %v after kill -9 of the server (--dead-after 1s)", d.Round(10*time.Millisecond))
	if got := carrierStatus(t, b, b.ns); got != "down" {
		t.Errorf("client status carrier %q after the server died, want down", got)
	}

	// A server told carrier=follow: no carrier until the client is back,
	// and none once the client is gone.
	srv2 := a.cab(t, append([]string{"server", "-p", port, "-s", "tap:" + tapDev + ",carrier=follow", "--psk", psk}, fast...)...)
	waitFor(upTimeout, func() bool { return strings.Contains(srv2.stderr.String(), "carrier up") || srv2.exited() })
	waitCarrier(t, b, tapDev, true, 15*time.Second)
	waitCarrier(t, a, tapDev, true, 5*time.Second)
	log := srv2.stderr.String()
	if i, j := strings.Index(log, `msg="carrier down" reason="no peer up"`), strings.Index(log, `msg="carrier up" reason="first peer up"`); i < 0 || j < i {
		t.Errorf("server log: want carrier down (no peer up), then carrier up (first peer up):\n%s", log)
	}
	cli.signal(syscall.SIGTERM)
	if !cli.wait(5*time.Second) || cli.exitCode() != 0 {
		t.Fatalf("client exit: %s", cli.state())
	}
	d = waitCarrier(t, a, tapDev, false, 5*time.Second)
	t.Logf("server TAP (carrier=follow) NO-CARRIER %v after its only client stopped", d.Round(10*time.Millisecond))
	if got := carrierStatus(t, a, a.ns); got != "down" {
		t.Errorf("server status carrier %q, want down", got)
	}
	for _, want := range []string{`msg="carrier up" reason="first peer up"`, `msg="carrier down" reason="last peer down"`} {
		if !strings.Contains(cli.stderr.String(), want) {
			t.Errorf("client log lacks %s", want)
		}
	}

	// A server by default, with no client at all: carrier.
	srv2.signal(syscall.SIGTERM)
	if !srv2.wait(5 * time.Second) {
		t.Fatalf("server exit: %s", srv2.state())
	}
	srv3 := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
	setupTap(t, a, srv3, overlayA)
	time.Sleep(2 * time.Second)
	if c, _ := carrierOf(a, tapDev); !c {
		t.Error("a server's TAP without clients has no carrier; by default it should")
	}
	if strings.Contains(srv3.stderr.String(), "carrier") {
		t.Errorf("a server by default logged about its carrier:\n%s", srv3.stderr.String())
	}
}
