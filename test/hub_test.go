package cabtest

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hubSites makes a server namespace and n client namespaces on one
// underlay segment: a Linux bridge in an underlay namespace, a veth to
// each site. The server has 198.51.100.1, client i 198.51.100.(i+2).
func hubSites(t *testing.T, n int) (srv *site, clients []*site) {
	t.Helper()
	ul := newNetns(t, "ul")
	mustRun(t, "ip", "-n", ul.ns, "link", "add", "br0", "type", "bridge")
	mustRun(t, "ip", "-n", ul.ns, "link", "set", "br0", "up")
	id := randomID(t)
	for i := 0; i <= n; i++ {
		s := newNetns(t, fmt.Sprintf("s%d", i))
		s.ulIf = "eth0"
		outer := fmt.Sprintf("h%s%d", id, i)
		mustRun(t, "ip", "-n", ul.ns, "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", s.ns)
		mustRun(t, "ip", "-n", ul.ns, "link", "set", outer, "master", "br0", "up")
		s.v4 = fmt.Sprintf("198.51.100.%d", i+1)
		mustRun(t, "ip", "-n", s.ns, "addr", "add", s.v4+"/24", "dev", "eth0")
		mustRun(t, "ip", "-n", s.ns, "link", "set", "eth0", "up")
		if i == 0 {
			srv = s
		} else {
			clients = append(clients, s)
		}
	}
	return srv, clients
}

// peerStatus is the part of `cab status --json` the tests read.
type peerStatus struct {
	Name      string            `json:"name"`
	Up        bool              `json:"up"`
	Addr      string            `json:"addr"`
	Transport string            `json:"transport"`
	RxFrames  uint64            `json:"rx_frames"`
	TxFrames  uint64            `json:"tx_frames"`
	Drops     map[string]uint64 `json:"drops"`
	MACs      int               `json:"macs"`
}

func statusOf(t *testing.T, s *site) []peerStatus {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--json", "--name", s.ns)
	var st struct {
		Peers []peerStatus `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cab status --json: %v\n%s", err, out)
	}
	return st.Peers
}

// startHub starts a public-key server with an allow file naming clients
// c1..cn, and the clients; it waits until every TAP has its overlay
// address (192.0.2.1 for the server, .(i+2) for client i).
func startHub(t *testing.T, srv *site, clients []*site, serverArgs ...string) (*proc, []*proc) {
	t.Helper()
	skey := genkey(t, srv.path("server.key"))
	var allow strings.Builder
	for i, c := range clients {
		k := genkey(t, c.path("client.key"))
		fmt.Fprintf(&allow, "%s c%d\n", pubkey(t, k), i+1)
	}
	writeFile(t, srv.path("clients.txt"), allow.String())
	args := append([]string{"server", "-p", port, "-s", "tap:" + tapDev, "--key", skey, "--allow", srv.path("clients.txt")}, serverArgs...)
	sp := srv.cab(t, args...)
	setupTap(t, srv, sp, overlayA)
	var cps []*proc
	for i, c := range clients {
		p := c.cab(t, "client", "-s", "tap:"+tapDev, "--key", c.path("client.key"), "--server-key", pubkey(t, skey), "--keepalive", "2s", srv.v4+":"+port)
		setupTap(t, c, p, fmt.Sprintf("192.0.2.%d", i+2))
		cps = append(cps, p)
	}
	waitPeerUp(t, upTimeout, append([]*proc{sp}, cps...)...)
	return sp, cps
}

// TestHub: a server and three clients: everyone pings everyone; cab status
// shows the clients by name with moving counters; with --isolate clients
// reach only the server; a client killed with SIGKILL shows down.
func TestHub(t *testing.T) {
	t.Parallel()
	srv, clients := hubSites(t, 3)
	_, cps := startHub(t, srv, clients, "--keepalive", "2s")
	hosts := append([]*site{srv}, clients...)
	for i, from := range hosts {
		for j := range hosts {
			if i == j {
				continue
			}
			to := fmt.Sprintf("192.0.2.%d", j+1)
			waitPing(t, 10*time.Second, from.ns, to)
			if n := ping(t, from.ns, to, 2); n != 2 {
				t.Errorf("ping %s → %s: %d of 2", from.ns, to, n)
			}
		}
	}
	st := statusOf(t, srv)
	if len(st) != 3 {
		t.Fatalf("status lists %d peers, want 3: %+v", len(st), st)
	}
	for _, p := range st {
		if !p.Up || p.Transport != "udp" || p.RxFrames == 0 || p.TxFrames == 0 || !strings.HasPrefix(p.Name, "c") || p.MACs < 1 {
			t.Errorf("peer in status: %+v", p)
		}
	}
	fdb := mustRun(t, "ip", "netns", "exec", srv.ns, cabBin, "status", "--fdb", "--name", srv.ns)
	for _, name := range []string{"c1", "c2", "c3", "(local)"} {
		if !strings.Contains(fdb, name) {
			t.Errorf("MAC table lacks %s:\n%s", name, fdb)
		}
	}

	// kill -9 of client 3: down within 3 × 2 s + 5 s (+ margin), MACs gone.
	cps[2].signal(syscall.SIGKILL)
	killed := time.Now()
	down := waitFor(20*time.Second, func() bool {
		for _, p := range statusOf(t, srv) {
			if p.Name == "c3" {
				return !p.Up && p.MACs == 0
			}
		}
		return false
	})
	if !down {
		t.Fatalf("c3 not shown down 20 s after SIGKILL: %+v", statusOf(t, srv))
	}
	t.Logf("c3 down %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
}

// TestHubIsolate: with --isolate, clients reach the server's side but not
// each other.
func TestHubIsolate(t *testing.T) {
	t.Parallel()
	srv, clients := hubSites(t, 2)
	startHub(t, srv, clients, "--isolate")
	for i, c := range clients {
		waitPing(t, 10*time.Second, c.ns, overlayA)
		if n := ping(t, srv.ns, fmt.Sprintf("192.0.2.%d", i+2), 2); n != 2 {
			t.Errorf("server → client %d: %d of 2", i+1, n)
		}
	}
	if n := ping(t, clients[0].ns, "192.0.2.3", 3); n != 0 {
		t.Errorf("client 1 → client 2 with --isolate: %d replies, want none", n)
	}

	// The control socket is root's alone.
	sock := "/run/cab/" + srv.ns + ".sock"
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %s: %v %v", sock, st, err)
	}
	p := start(t, srv.ns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", publicCopy(t), "status", "--name", srv.ns)
	if !p.wait(10*time.Second) || p.exitCode() != 1 || !strings.Contains(p.stderr.String(), "permission denied") {
		t.Errorf("cab status as nobody: %s, stderr %q; want exit 1 and permission denied", p.state(), p.stderr.String())
	}
}

// TestHubRoaming: the client's source port changes mid-ping (the SNAT
// rule of a router between client and server changes); the pings go on
// and the server follows the new address.
func TestHubRoaming(t *testing.T) {
	t.Parallel()
	a, b := newPair(t) // a: server 198.51.100.1; b: the router
	c := newNetns(t, "c")
	id := randomID(t)
	mustRun(t, "ip", "link", "add", "r"+id, "netns", b.ns, "type", "veth", "peer", "name", "eth0", "netns", c.ns)
	mustRun(t, "ip", "-n", b.ns, "addr", "add", "198.51.100.129/25", "dev", "r"+id)
	mustRun(t, "ip", "-n", b.ns, "link", "set", "r"+id, "up")
	mustRun(t, "ip", "-n", c.ns, "addr", "add", "198.51.100.130/25", "dev", "eth0")
	mustRun(t, "ip", "-n", c.ns, "link", "set", "eth0", "up")
	mustRun(t, "ip", "-n", c.ns, "route", "add", "default", "via", "198.51.100.129")
	mustRun(t, "ip", "netns", "exec", b.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	nat := func(ports string) {
		mustRun(t, "ip", "netns", "exec", b.ns, "nft", "flush ruleset; add table ip nat; add chain ip nat post { type nat hook postrouting priority 100; }; add rule ip nat post ip saddr 198.51.100.128/25 udp dport "+port+" snat to "+b.v4+":"+ports)
		run(5*time.Second, "ip", "netns", "exec", b.ns, "conntrack", "-F")
	}
	nat("40000-40009")
	psk := genkey(t, a.path("site.psk"))
	srv := a.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
	cli := c.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, a.v4+":"+port)
	setupTap(t, a, srv, overlayA)
	setupTap(t, c, cli, overlayB)
	waitPeerUp(t, upTimeout, srv, cli)
	waitPing(t, 10*time.Second, c.ns, overlayA)
	before := statusOf(t, a)[0].Addr

	pinger := start(t, c.ns, "ping", "-n", "-i", "0.1", "-c", "60", "-W", "1", overlayA)
	time.Sleep(2 * time.Second)
	nat("50000-50009")
	if !pinger.wait(20 * time.Second) {
		t.Fatal("ping did not finish")
	}
	after := statusOf(t, a)[0].Addr
	if !strings.Contains(before, ":4000") || !strings.Contains(after, ":5000") {
		t.Fatalf("server's path for the client: %s before, %s after; want ports 4000x then 5000x", before, after)
	}
	var sent, got int
	if m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(pinger.stdout.String()); m != nil {
		sent, _ = strconv.Atoi(m[1])
		got, _ = strconv.Atoi(m[2])
	}
	if sent != 60 || got < 55 {
		t.Errorf("pings across the port change: %d of %d\n%s", got, sent, pinger.stdout.String())
	}
	t.Logf("path moved from %s to %s; %d of %d pings answered", before, after, got, sent)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
