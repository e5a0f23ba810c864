//go:build linux

package cabtest

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Fan-in tests: one server, several clients, the server's learning switch,
// --isolate, roaming through NAT, down detection, the control socket and
// the per-client MAC limit.

// fanStatus is `cab status --json` as the fan-in tests read it.
type fanStatus struct {
	Peers []fanPeer         `json:"peers"`
	Drops map[string]uint64 `json:"drops"`
	FDB   int               `json:"fdb_entries"`
}

type fanPeer struct {
	Name      string            `json:"name"`
	PublicKey string            `json:"public_key"`
	Up        bool              `json:"up"`
	Addr      string            `json:"addr"`
	Transport string            `json:"transport"`
	RxFrames  uint64            `json:"rx_frames"`
	TxFrames  uint64            `json:"tx_frames"`
	Drops     map[string]uint64 `json:"drops"`
	MACs      int               `json:"macs"`
}

// peer returns the peer called name, or nil.
func (st fanStatus) peer(name string) *fanPeer {
	for i := range st.Peers {
		if st.Peers[i].Name == name {
			return &st.Peers[i]
		}
	}
	return nil
}

// fanFDBEntry is one line of `cab status --fdb --json`.
type fanFDBEntry struct {
	MAC  string `json:"mac"`
	VLAN uint16 `json:"vlan"`
	Peer string `json:"peer"`
	Age  int64  `json:"age_ns"`
}

// statusJSON runs `cab status --json` for s's cab and decodes it strictly
// (the output must be one JSON document).
func statusJSON(t *testing.T, s *site) fanStatus {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--json", "--name", s.ns)
	var st fanStatus
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("cab status --json is not JSON: %v\n%s", err, out)
	}
	if dec.More() {
		t.Fatalf("cab status --json printed more than one JSON document:\n%s", out)
	}
	return st
}

// fdbJSON runs `cab status --fdb --json` for s's cab and decodes it.
func fdbJSON(t *testing.T, s *site) []fanFDBEntry {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--fdb", "--json", "--name", s.ns)
	var fdb []fanFDBEntry
	if err := json.Unmarshal([]byte(out), &fdb); err != nil {
		t.Fatalf("cab status --fdb --json is not a JSON list: %v\n%s", err, out)
	}
	return fdb
}

// fdbPeerOf returns the peer the MAC table puts mac behind ("" for the
// local side) and whether mac is there at all.
func fdbPeerOf(fdb []fanFDBEntry, mac string) (string, bool) {
	for _, e := range fdb {
		if strings.EqualFold(e.MAC, mac) {
			return e.Peer, true
		}
	}
	return "", false
}

// tapMAC returns the MAC address of the TAP in s's namespace.
func tapMAC(t *testing.T, s *site) string {
	t.Helper()
	out := mustRun(t, "ip", "-n", s.ns, "-j", "link", "show", "dev", tapDev)
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 || links[0].Address == "" {
		t.Fatalf("ip -j link show %s in %s: %v\n%s", tapDev, s.ns, err, out)
	}
	return links[0].Address
}

// pingSummary parses ping's "N packets transmitted, M received".
func pingSummary(out string) (sent, got int) {
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) (packets )?received`).FindStringSubmatch(out)
	if m == nil {
		return 0, 0
	}
	sent, _ = strconv.Atoi(m[1])
	got, _ = strconv.Atoi(m[2])
	return sent, got
}

// TestFanIn: a server and three clients on one underlay segment: every host
// pings every other; cab status names the clients, shows them up over UDP
// with moving counters, and the MAC table puts each client's TAP MAC behind
// that client.
func TestFanIn(t *testing.T) {
	t.Parallel()
	srv, clients := hubSites(t, 3)
	sp, _ := startHub(t, srv, clients)
	hosts := append([]*site{srv}, clients...)
	overlay := func(i int) string { return fmt.Sprintf("192.0.2.%d", i+1) }

	// All 12 ordered pairs; each source pings its three destinations in
	// turn, the four sources at once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for i, from := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range hosts {
				if i == j {
					continue
				}
				to := overlay(j)
				// Warm up (ARP, learning) for at most 10 tries, then count.
				for try := 0; try < 10 && ping(t, from.ns, to, 1) != 1; try++ {
				}
				if n := ping(t, from.ns, to, 3); n != 3 {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s (%s) → %s: %d of 3 replies", overlay(i), from.ns, to, n))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for _, f := range failures {
		t.Errorf("ping %s", f)
	}

	st := statusJSON(t, srv)
	if len(st.Peers) != 3 {
		t.Fatalf("status lists %d peers, want 3: %+v", len(st.Peers), st.Peers)
	}
	for i := range clients {
		name := fmt.Sprintf("c%d", i+1)
		p := st.peer(name)
		if p == nil {
			t.Errorf("status has no peer %s: %+v", name, st.Peers)
			continue
		}
		if !p.Up || p.Transport != "udp" || p.RxFrames == 0 || p.TxFrames == 0 || p.PublicKey == "" {
			t.Errorf("peer %s: %+v; want up, transport udp, rx and tx frames > 0, a public key", name, *p)
		}
		if host, _, err := net.SplitHostPort(p.Addr); err != nil || host != clients[i].v4 {
			t.Errorf("peer %s: addr %q, want %s:PORT", name, p.Addr, clients[i].v4)
		}
	}

	fdb := fdbJSON(t, srv)
	for i, c := range clients {
		mac := tapMAC(t, c)
		name := fmt.Sprintf("c%d", i+1)
		if peer, ok := fdbPeerOf(fdb, mac); !ok || peer != name {
			t.Errorf("MAC table: %s's TAP MAC %s is behind %q (present %v), want %s\n%+v", c.ns, mac, peer, ok, name, fdb)
		}
	}
	if peer, ok := fdbPeerOf(fdb, tapMAC(t, srv)); !ok || peer != "" {
		t.Errorf("MAC table: the server's own TAP MAC is behind %q (present %v), want the local side (\"\")", peer, ok)
	}
	if st.FDB < 4 {
		t.Errorf("status: fdb_entries %d, want at least 4", st.FDB)
	}
	if sp.exited() {
		t.Fatalf("server exited: %s", sp.state())
	}
}

// TestIsolate: with --isolate clients reach the server's side and the
// server reaches them, but clients do not reach each other; a client that
// takes another client's MAC gets none of that client's frames.
func TestIsolate(t *testing.T) {
	t.Parallel()
	srv, clients := hubSites(t, 3)
	startHub(t, srv, clients, "--isolate")
	for i, c := range clients {
		addr := fmt.Sprintf("192.0.2.%d", i+2)
		waitPing(t, 10*time.Second, c.ns, overlayA)
		if n := ping(t, c.ns, overlayA, 3); n != 3 {
			t.Errorf("client %d → server: %d of 3", i+1, n)
		}
		if n := ping(t, srv.ns, addr, 3); n != 3 {
			t.Errorf("server → client %d: %d of 3", i+1, n)
		}
	}
	for _, pair := range [][2]int{{0, 1}, {1, 2}, {2, 0}} {
		from, to := clients[pair[0]], fmt.Sprintf("192.0.2.%d", pair[1]+2)
		if n := ping(t, from.ns, to, 3); n != 0 {
			t.Errorf("%s → %s with --isolate: %d replies, want none", from.ns, to, n)
		}
	}

	// Forgery: c3 takes c1's MAC and sends frames with it.
	c1, c3 := clients[0], clients[2]
	c1MAC, c3MAC := tapMAC(t, c1), tapMAC(t, c3)
	if peer, ok := fdbPeerOf(fdbJSON(t, srv), c1MAC); !ok || peer != "c1" {
		t.Fatalf("before the forgery c1's MAC %s is behind %q (present %v), want c1", c1MAC, peer, ok)
	}
	if _, err := run(5*time.Second, "ip", "-n", c3.ns, "link", "set", tapDev, "address", c1MAC); err != nil {
		t.Logf("live MAC change refused (%v); setting it with the link down", err)
		mustRun(t, "ip", "-n", c3.ns, "link", "set", tapDev, "down")
		mustRun(t, "ip", "-n", c3.ns, "link", "set", tapDev, "address", c1MAC)
		mustRun(t, "ip", "-n", c3.ns, "link", "set", tapDev, "up")
	}
	if got := tapMAC(t, c3); !strings.EqualFold(got, c1MAC) {
		t.Fatalf("c3's TAP MAC is %s after setting it to %s (was %s)", got, c1MAC, c3MAC)
	}
	// A MAC change flushes c3's ARP cache, and with the forged MAC ARP gets
	// no answer: pin the server's MAC so that c3's echo requests go out.
	mustRun(t, "ip", "-n", c3.ns, "neigh", "replace", overlayA, "lladdr", tapMAC(t, srv), "dev", tapDev, "nud", "permanent")
	capFile := c3.path("forger.pcap")
	capture := startCapture(t, c3, tapDev, capFile)
	// c3 keeps sending with the forged MAC: pings to the server (their ARP
	// and ICMP frames carry c1's MAC as source) and to c1's address.
	forger := start(t, c3.ns, "ping", "-n", "-i", "0.2", "-c", "25", "-W", "1", overlayA)
	forger2 := start(t, c3.ns, "ping", "-n", "-i", "0.5", "-c", "10", "-W", "1", "192.0.2.2")
	time.Sleep(time.Second)
	if n := ping(t, srv.ns, "192.0.2.2", 5); n != 5 {
		t.Errorf("server → c1 while c3 forges c1's MAC: %d of 5 replies", n)
	}
	forger.wait(10 * time.Second)
	forger2.wait(10 * time.Second)
	stopCapture(t, capture, capFile)
	if n := countPackets(t, capFile, "ether src "+c1MAC+" and icmp[icmptype] = icmp-echo and src host 192.0.2.4"); n == 0 {
		t.Errorf("the capture on c3's TAP shows none of c3's own forged echo requests: is it capturing?")
	}
	if n := countPackets(t, capFile, "icmp[icmptype] = icmp-echo and dst host 192.0.2.2"); n != 0 {
		t.Errorf("the forger c3 received %d ICMP echo requests for c1 (192.0.2.2), want none", n)
	}
	_, fgot := pingSummary(forger.stdout.String())
	t.Logf("c3's pings to the server with the forged MAC: %d answered", fgot)
	if peer, ok := fdbPeerOf(fdbJSON(t, srv), c1MAC); !ok || peer != "c1" {
		t.Errorf("after the forgery c1's MAC %s is behind %q (present %v), want c1", c1MAC, peer, ok)
	}
	if p := statusJSON(t, srv).peer("c3"); p == nil || p.Drops["mac conflict"] == 0 {
		t.Errorf("server status: c3 shows no \"mac conflict\" drops after sending with c1's MAC: %+v", p)
	} else {
		t.Logf("c3's drops: %v", p.Drops)
	}
}

// natSites makes a client, a NAT router and a server
// (client 198.51.100.2/25 — .1/25 router .129/25 — 198.51.100.130/25
// server), and a function that makes the router masquerade the
// client's UDP to dport behind the source ports ports ("40000-40010"),
// forgetting the mappings it had.
func natSites(t *testing.T, dport string) (cli, rtr, srv *site, nat func(ports string)) {
	t.Helper()
	cli, rtr, srv = newNetns(t, "c"), newNetns(t, "r"), newNetns(t, "s")
	id := randomID(t)
	// client 198.51.100.2/25 — .1/25 router .129/25 — 198.51.100.130/25 server
	mustRun(t, "ip", "link", "add", "rc"+id, "netns", rtr.ns, "type", "veth", "peer", "name", "eth0", "netns", cli.ns)
	mustRun(t, "ip", "link", "add", "rs"+id, "netns", rtr.ns, "type", "veth", "peer", "name", "eth0", "netns", srv.ns)
	cli.ulIf, srv.ulIf = "eth0", "eth0"
	cli.v4, rtr.v4, srv.v4 = "198.51.100.2", "198.51.100.129", "198.51.100.130"
	for _, l := range []struct{ ns, dev, addr string }{
		{cli.ns, "eth0", "198.51.100.2/25"},
		{rtr.ns, "rc" + id, "198.51.100.1/25"},
		{rtr.ns, "rs" + id, "198.51.100.129/25"},
		{srv.ns, "eth0", "198.51.100.130/25"},
	} {
		mustRun(t, "ip", "-n", l.ns, "addr", "add", l.addr, "dev", l.dev)
		mustRun(t, "ip", "-n", l.ns, "link", "set", l.dev, "up")
	}
	mustRun(t, "ip", "-n", cli.ns, "route", "add", "default", "via", "198.51.100.1")
	mustRun(t, "ip", "netns", "exec", rtr.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	nat = func(ports string) {
		t.Helper()
		mustRun(t, "ip", "netns", "exec", rtr.ns, "nft",
			"flush ruleset; add table ip nat; add chain ip nat post { type nat hook postrouting priority 100; }; "+
				"add rule ip nat post ip saddr 198.51.100.0/25 udp dport "+dport+" snat to 198.51.100.129:"+ports)
		if out, err := run(5*time.Second, "ip", "netns", "exec", rtr.ns, "conntrack", "-F"); err != nil {
			t.Logf("conntrack -F: %v %s", err, out)
		}
	}
	return cli, rtr, srv, nat
}

// roam pings the server's overlay address from cli 60 times, 5 a second,
// and has the NAT router move the client from source ports 40000-40010 to
// 50000-50010 four seconds in. addrPort says where the server sees the
// client now; the path must move within moveWithin. It returns the ports
// before and after and the pings sent and answered.
func roam(t *testing.T, cli, rtr *site, nat func(string), addrPort func() (string, int), moveWithin time.Duration) (before, after, sent, got int) {
	t.Helper()
	host, before := addrPort()
	if host != rtr.v4 || before < 40000 || before > 40010 {
		t.Fatalf("server's path before the change: %s:%d, want %s:40000-40010", host, before, rtr.v4)
	}
	pinger := start(t, cli.ns, "ping", "-n", "-i", "0.2", "-c", "60", "-W", "1", overlayA)
	time.Sleep(4 * time.Second)
	nat("50000-50010")
	moved := waitFor(moveWithin, func() bool {
		_, p := addrPort()
		return p >= 50000 && p <= 50010
	})
	if !pinger.wait(25 * time.Second) {
		t.Fatal("ping -c 60 -i 0.2 did not finish within 25 s")
	}
	host, after = addrPort()
	if !moved || host != rtr.v4 || after < 50000 || after > 50010 {
		t.Errorf("server's path after the change: %s:%d, want %s:50000-50010", host, after, rtr.v4)
	}
	sent, got = pingSummary(pinger.stdout.String())
	if sent != 60 {
		t.Errorf("ping sent %d, want 60\n%s", sent, pinger.stdout.String())
	}
	return before, after, sent, got
}

// TestRoaming: a NAT router between client and server changes the
// client's source port mid-ping; the pings go on and the server's path
// follows the new port.
func TestRoaming(t *testing.T) {
	t.Parallel()
	cli, rtr, srv, nat := natSites(t, port)
	nat("40000-40010")

	psk := genkey(t, srv.path("site.psk"))
	sp := srv.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk)
	cp := cli.cab(t, "client", "-s", "tap:"+tapDev, "--psk", psk, srv.v4+":"+port)
	setupTap(t, srv, sp, overlayA)
	setupTap(t, cli, cp, overlayB)
	waitPeerUp(t, upTimeout, sp, cp)
	waitPing(t, 10*time.Second, cli.ns, overlayA)

	addrPort := func() (string, int) {
		t.Helper()
		st := statusJSON(t, srv)
		if len(st.Peers) != 1 {
			t.Fatalf("server status lists %d peers, want 1: %+v", len(st.Peers), st.Peers)
		}
		host, p, err := net.SplitHostPort(st.Peers[0].Addr)
		if err != nil {
			t.Fatalf("server status: peer addr %q: %v", st.Peers[0].Addr, err)
		}
		n, _ := strconv.Atoi(p)
		return host, n
	}
	before, after, sent, got := roam(t, cli, rtr, nat, addrPort, 5*time.Second)
	if got < 57 {
		t.Errorf("pings across the port change: %d of %d answered, want at least 57 of 60", got, sent)
	}
	if st := statusJSON(t, srv); !st.Peers[0].Up {
		t.Errorf("peer down after roaming: %+v", st.Peers[0])
	}
	t.Logf("path moved from port %d to %d; %d of %d pings answered", before, after, got, sent)
}

// TestClientKilledShowsDown: a client killed with SIGKILL is shown down by
// the server within 3 keepalive intervals + 5 s, and its MACs are
// forgotten.
func TestClientKilledShowsDown(t *testing.T) {
	t.Parallel()
	srv, clients := hubSites(t, 1)
	_, cps := startHub(t, srv, clients, "--keepalive", "2s") // the clients get --keepalive 2s
	c1 := clients[0]
	waitPing(t, 10*time.Second, c1.ns, overlayA)
	mac := tapMAC(t, c1)
	if peer, ok := fdbPeerOf(fdbJSON(t, srv), mac); !ok || peer != "c1" {
		t.Fatalf("before the kill c1's MAC %s is behind %q (present %v), want c1", mac, peer, ok)
	}
	if p := statusJSON(t, srv).peer("c1"); p == nil || !p.Up || p.MACs < 1 {
		t.Fatalf("before the kill: %+v, want c1 up with MACs", p)
	}

	cps[0].signal(syscall.SIGKILL)
	if !cps[0].wait(5 * time.Second) {
		t.Fatal("client still running 5 s after SIGKILL")
	}
	killed := time.Now()
	const limit = 3*2*time.Second + 5*time.Second + 3*time.Second
	var last *fanPeer
	down := waitFor(limit, func() bool {
		last = statusJSON(t, srv).peer("c1")
		return last != nil && !last.Up
	})
	took := time.Since(killed).Round(100 * time.Millisecond)
	if !down {
		t.Fatalf("c1 not shown down %v after SIGKILL: %+v", limit, last)
	}
	if last.MACs != 0 {
		t.Errorf("c1 down but still has %d MACs in status", last.MACs)
	}
	fdb := fdbJSON(t, srv)
	if peer, ok := fdbPeerOf(fdb, mac); ok {
		t.Errorf("c1 down but its MAC %s is still in the MAC table behind %q", mac, peer)
	}
	for _, e := range fdb {
		if e.Peer == "c1" {
			t.Errorf("c1 down but the MAC table still has %+v", e)
		}
	}
	t.Logf("c1 shown down %v after SIGKILL", took)
}

// TestControlSocket: garbage, an over-long request and idle connections on
// the control socket get an error or a closed connection, never a crash;
// the socket is root's alone.
func TestControlSocket(t *testing.T) {
	t.Parallel()
	a, b := newPair(t)
	srv, _ := pskPair(t, a, b, a.v4+":"+port)
	checkPing(t, a, b)
	sock := filepath.Join("/run/cab", a.ns+".sock")

	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket %s: mode %v, want a socket of mode 0600", sock, fi.Mode())
	}

	// exchange writes req (then half-closes, if halfClose), and returns
	// what came back until the server closed the connection.
	exchange := func(req []byte, halfClose bool) (reply string, readErr error) {
		t.Helper()
		conn, err := net.DialTimeout("unix", sock, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", sock, err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		done := make(chan struct{})
		go func() {
			defer close(done)
			conn.Write(req) // may fail with EPIPE once the server has answered and closed
			if halfClose {
				conn.(*net.UnixConn).CloseWrite()
			}
		}()
		out, readErr := io.ReadAll(conn)
		conn.Close()
		<-done
		return string(out), readErr
	}
	// wantErrorOrClosed checks a reply: empty (closed), or one JSON object
	// with an error and no status.
	wantErrorOrClosed := func(what, reply string, readErr error) {
		t.Helper()
		if readErr != nil && !errors.Is(readErr, syscall.ECONNRESET) {
			t.Errorf("%s: reading the reply: %v", what, readErr)
		}
		if strings.TrimSpace(reply) == "" {
			t.Logf("%s: connection closed without a reply (%v)", what, readErr)
			return
		}
		var r struct {
			Error  string          `json:"error"`
			Status json.RawMessage `json:"status"`
		}
		if err := json.Unmarshal([]byte(reply), &r); err != nil || r.Error == "" || r.Status != nil {
			t.Errorf("%s: reply %q (%v), want a JSON error or a closed connection", what, truncateStr(reply, 200), err)
			return
		}
		t.Logf("%s: %s", what, r.Error)
	}

	reply, rerr := exchange([]byte("hello\n"), false)
	wantErrorOrClosed("unknown command", reply, rerr)
	junk := make([]byte, 200)
	for i := range junk {
		junk[i] = byte(i*131 + 7)
		if junk[i] == '\n' {
			junk[i] = 0
		}
	}
	reply, rerr = exchange(append(junk, '\n'), false)
	wantErrorOrClosed("binary garbage", reply, rerr)
	reply, rerr = exchange([]byte("status"), true)
	wantErrorOrClosed("no newline, then EOF", reply, rerr)
	huge := make([]byte, 1<<20)
	for i := range huge {
		huge[i] = 'A' + byte(i%26)
	}
	reply, rerr = exchange(huge, false)
	wantErrorOrClosed("1 MB without a newline", reply, rerr)
	reply, rerr = exchange(append([]byte("status\n"), huge...), false)
	if rerr != nil && !errors.Is(rerr, syscall.ECONNRESET) {
		t.Errorf("status followed by 1 MB: %v", rerr)
	}
	if strings.TrimSpace(reply) != "" && !strings.Contains(reply, `"status"`) {
		t.Errorf("status followed by 1 MB: reply %q, want a status or a closed connection", truncateStr(reply, 200))
	}
	t.Logf("status followed by 1 MB: %d bytes of reply", len(reply))
	if c, err := net.DialTimeout("unix", sock, 5*time.Second); err == nil {
		c.Close() // connect and hang up at once
	}

	// A few idle connections do not stop cab status.
	var idle []net.Conn
	for i := 0; i < 4; i++ {
		c, err := net.DialTimeout("unix", sock, 5*time.Second)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	if st := statusJSON(t, a); len(st.Peers) != 1 || !st.Peers[0].Up {
		t.Errorf("status with idle control connections open: %+v", st.Peers)
	}
	for _, c := range idle {
		c.Close()
	}

	if srv.exited() {
		t.Fatalf("server exited after the control-socket garbage: %s", srv.state())
	}
	if st := statusJSON(t, a); len(st.Peers) != 1 || !st.Peers[0].Up {
		t.Errorf("status after the garbage: %+v", st.Peers)
	}
	checkPing(t, a, b)

	// Not root: permission denied, exit 1.
	p := start(t, a.ns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", publicCopy(t), "status", "--name", a.ns)
	if !p.wait(10 * time.Second) {
		t.Fatal("cab status as nobody still running after 10 s")
	}
	if code := p.exitCode(); code != 1 || !strings.Contains(strings.ToLower(p.stderr.String()), "permission denied") {
		t.Errorf("cab status as nobody: exit %d, stderr %q; want exit 1 and permission denied", code, p.stderr.String())
	}
	t.Logf("cab status as nobody: %s", strings.TrimSpace(p.stderr.String()))
	if srv.exited() {
		t.Fatalf("server exited: %s", srv.state())
	}
}

func truncateStr(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// TestMACFlood: a client that sends frames from 10 000 source MACs gets at
// most 1024 of them learned and "mac limit" drops counted; another client
// keeps pinging the server meanwhile.
func TestMACFlood(t *testing.T) {
	t.Parallel()
	srv, clients := hubSites(t, 2)
	startHub(t, srv, clients)
	c1, c2 := clients[0], clients[1]
	waitPing(t, 10*time.Second, c1.ns, overlayA)
	waitPing(t, 10*time.Second, c2.ns, overlayA)
	dst, err := net.ParseMAC(tapMAC(t, srv))
	if err != nil {
		t.Fatal(err)
	}

	// c1 pings the server all along (8 s).
	pinger := start(t, c1.ns, "ping", "-n", "-i", "0.2", "-c", "40", "-W", "1", overlayA)
	time.Sleep(time.Second)

	// An AF_PACKET socket in c2's namespace, on its TAP: what it sends, cab
	// reads from the TAP.
	var fd, ifindex int
	inNetns(t, c2.ns, func() {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return
		}
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName(tapDev); err == nil {
			ifindex = ifi.Index
		}
	})
	if err != nil {
		t.Fatalf("AF_PACKET socket on %s in %s: %v", tapDev, c2.ns, err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: htons(unix.ETH_P_ALL)}
	const n = 10000
	frame := make([]byte, 60)
	copy(frame[0:6], dst)
	frame[6], frame[7] = 0x02, 0xcb                  // locally administered unicast sources
	binary.BigEndian.PutUint16(frame[12:14], 0x88b5) // local experimental EtherType
	sent, failed := 0, 0
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		binary.BigEndian.PutUint32(frame[8:12], uint32(i+1))
		for try := 0; try < 20; try++ {
			if err = unix.Sendto(fd, frame, 0, to); !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EAGAIN) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err != nil {
			failed++
		} else {
			sent++
		}
		if i%250 == 249 {
			time.Sleep(5 * time.Millisecond) // let cab keep up with the TAP queue
		}
	}
	t.Logf("sent %d frames with distinct source MACs from %s (%d sends failed, last error %v)", sent, c2.ns, failed, err)
	if sent < 2000 {
		t.Fatalf("only %d of %d frames could be sent", sent, n)
	}

	var p *fanPeer
	var st fanStatus
	limited := waitFor(10*time.Second, func() bool {
		st = statusJSON(t, srv)
		p = st.peer("c2")
		return p != nil && p.Drops["mac limit"] > 0
	})
	if p == nil {
		t.Fatalf("server status has no peer c2: %+v", st.Peers)
	}
	if !limited {
		t.Errorf("c2's drops show no \"mac limit\" after %d source MACs: %+v", sent, *p)
	}
	if p.MACs > 1024 {
		t.Errorf("c2 has %d MACs learned, want at most 1024", p.MACs)
	}
	if st.FDB > 1024+16 {
		t.Errorf("the server's MAC table has %d entries, want at most 1024 from c2 plus a few", st.FDB)
	}
	t.Logf("c2: %d MACs, drops %v; MAC table %d entries", p.MACs, p.Drops, st.FDB)

	if !pinger.wait(20 * time.Second) {
		t.Fatal("c1's ping did not finish")
	}
	psent, pgot := pingSummary(pinger.stdout.String())
	if psent != 40 || pgot < 39 {
		t.Errorf("c1 → server during the MAC flood: %d of %d answered, want at least 39 of 40\n%s", pgot, psent, pinger.stdout.String())
	}
	if n := ping(t, c2.ns, overlayA, 3); n != 3 {
		t.Errorf("c2 → server after its MAC flood: %d of 3", n)
	}
	if p1 := statusJSON(t, srv).peer("c1"); p1 == nil || !p1.Up || p1.Drops["mac limit"] != 0 {
		t.Errorf("c1 after c2's MAC flood: %+v", p1)
	}
}

// htons converts a 16-bit value to network byte order, for AF_PACKET.
func htons(v uint16) uint16 { return v<<8 | v>>8 }
