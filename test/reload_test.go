//go:build linux

package cabtest

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReload: a hub configured by a file with clients c1 and c2. While c1
// pings the hub without pause, the file is changed to list c1 and c3, and
// cab gets SIGHUP: c2 is out, c3 comes up, and c1 loses no reply. A file
// that does not parse, or that changes what needs a restart, is refused and
// the running configuration stays.
func TestReload(t *testing.T) {
	srv, clients := hubSites(t, 3)
	skey := genkey(t, srv.path("server.key"))
	var pubs []string
	for _, c := range clients {
		pubs = append(pubs, pubkey(t, genkey(t, c.path("client.key"))))
	}
	conf := func(names ...int) string {
		var b strings.Builder
		fmt.Fprintf(&b, "local = %q\nlisten_port = %s\nkey = %q\n", "tap:"+tapDev, port, skey)
		for _, i := range names {
			fmt.Fprintf(&b, "\n[[peer]]\nname = \"c%d\"\npublic_key = %q\n", i+1, pubs[i])
		}
		return b.String()
	}
	file := srv.path("hub.toml")
	writeFile(t, file, conf(0, 1))
	sp := srv.cab(t, "server", "-f", file)
	setupTap(t, srv, sp, overlayA)
	var cps []*proc
	for i, c := range clients {
		p := c.cab(t, "client", "-s", "tap:"+tapDev, "--key", c.path("client.key"), "--server-key", pubkey(t, skey),
			"--keepalive", "2s", srv.v4+":"+port)
		setupTap(t, c, p, fmt.Sprintf("192.0.2.%d", i+2))
		cps = append(cps, p)
	}
	waitPeerUp(t, upTimeout, sp, cps[0], cps[1])
	waitPing(t, upTimeout, clients[0].ns, overlayA)
	names := func() map[string]bool {
		m := map[string]bool{}
		for _, p := range statusOf(t, srv) {
			m[p.Name] = p.Up
		}
		return m
	}

	// c1 pings through both reloads, 10 per second.
	pinger := start(t, clients[0].ns, "ping", "-n", "-i", "0.1", "-W", "1", overlayA)
	time.Sleep(time.Second)

	// A broken file: refused, nothing changes.
	writeFile(t, file, "isolatte = true\n"+conf(0, 1))
	sp.signal(syscall.SIGHUP)
	if !waitFor(5*time.Second, func() bool { return strings.Contains(sp.stderr.String(), "reload refused") }) {
		t.Fatalf("a broken file was not refused: %s", sp.output())
	}
	if !strings.Contains(sp.stderr.String(), "did you mean isolate") {
		t.Errorf("the refusal does not say why: %s", sp.stderr.String())
	}
	// A change that needs a restart: refused too.
	writeFile(t, file, strings.Replace(conf(0, 1), "listen_port = "+port, "listen_port = 7000", 1))
	sp.signal(syscall.SIGHUP)
	if !waitFor(5*time.Second, func() bool { return strings.Contains(sp.stderr.String(), "listen_port (-p) changed") }) {
		t.Fatalf("a new port was not refused: %s", sp.output())
	}
	if m := names(); !m["c1"] || !m["c2"] {
		t.Fatalf("after refused reloads: %v, want c1 and c2 up", m)
	}

	writeFile(t, file, conf(0, 2))
	sp.signal(syscall.SIGHUP)
	if !waitFor(5*time.Second, func() bool { return strings.Contains(sp.stderr.String(), `msg=reloaded`) }) {
		t.Fatalf("no reload: %s", sp.output())
	}
	if !waitFor(20*time.Second, func() bool { m := names(); return m["c3"] && m["c1"] }) {
		t.Fatalf("after the reload: %v, want c1 and c3 up", names())
	}
	if _, ok := names()["c2"]; ok {
		t.Errorf("c2 is still listed: %v", names())
	}
	if n := ping(t, clients[1].ns, overlayA, 3); n != 0 {
		t.Errorf("the removed client c2 still gets %d of 3 ping replies", n)
	}
	if n := ping(t, clients[2].ns, overlayA, 3); n != 3 {
		t.Errorf("the added client c3 gets %d of 3 ping replies", n)
	}
	pinger.signal(syscall.SIGINT)
	pinger.wait(5 * time.Second)
	var sent, got int
	out := pinger.stdout.String()
	if i := strings.LastIndex(out, "packets transmitted"); i >= 0 {
		fmt.Sscanf(out[strings.LastIndex(out[:i], "\n")+1:], "%d packets transmitted, %d received", &sent, &got)
	}
	t.Logf("c1 during the reloads: %d pings, %d lost", sent, sent-got)
	if sent < 20 || got < sent-1 { // the last may be cut off by SIGINT
		t.Errorf("c1 lost %d of %d pings across the reloads", sent-got, sent)
	}
}

// TestAllowedMACs: a server's [[peer]] with allowed_macs takes frames from
// that client's TAP MAC only; once the client's TAP changes its MAC, its
// frames are dropped and counted as not allowed.
func TestAllowedMACs(t *testing.T) {
	a, b := newPair(t)
	skey := genkey(t, a.path("server.key"))
	ckey := genkey(t, b.path("client.key"))
	cli := b.cab(t, "client", "-s", "tap:"+tapDev, "--key", ckey, "--server-key", pubkey(t, skey), a.v4+":"+port)
	setupTap(t, b, cli, overlayB)
	out := mustRun(t, "ip", "-n", b.ns, "-br", "link", "show", "dev", tapDev)
	mac := strings.Fields(out)[2]
	file := a.path("server.toml")
	writeFile(t, file, fmt.Sprintf("local = %q\nlisten_port = %s\nkey = %q\n\n[[peer]]\nname = \"c1\"\npublic_key = %q\nallowed_macs = [%q]\n",
		"tap:"+tapDev, port, skey, pubkey(t, ckey), mac))
	srv := a.cab(t, "server", "-f", file)
	setupTap(t, a, srv, overlayA)
	waitPeerUp(t, upTimeout, srv, cli)
	checkPing(t, a, b)

	mustRun(t, "ip", "-n", b.ns, "link", "set", "dev", tapDev, "address", "02:00:5e:99:99:99")
	if n := ping(t, b.ns, overlayA, 3); n != 0 {
		t.Errorf("%d of 3 pings from a MAC not allowed got through", n)
	}
	if ps := statusOf(t, a); len(ps) != 1 || ps[0].Drops["not allowed"] == 0 {
		t.Errorf("server status %+v, want drops counted as not allowed", ps)
	}
}
