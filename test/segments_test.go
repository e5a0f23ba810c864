//go:build linux

package cabtest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// segHost is a host on one segment at a site: a namespace of its own,
// joined by a veth to a Linux bridge in the site's namespace, which the
// site's cab puts the segment's TAP into.
type segHost struct {
	ns, ip, mac string
}

// addSegHost makes the bridge of segment seg in s (named b-SEG) and a host
// on it with ip; it returns the -s argument for the segment.
func addSegHost(t *testing.T, s *site, seg, ip string) (*segHost, string) {
	t.Helper()
	br, tap := "b-"+seg, "t-"+seg
	if _, err := run(5*time.Second, "ip", "-n", s.ns, "link", "show", "dev", br); err != nil {
		mustRun(t, "ip", "-n", s.ns, "link", "add", br, "type", "bridge")
		mustRun(t, "ip", "-n", s.ns, "link", "set", br, "up")
	}
	h := newNetns(t, seg+ip[strings.LastIndex(ip, ".")+1:])
	mustRun(t, "ip", "-n", s.ns, "link", "add", "v-"+seg, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
	mustRun(t, "ip", "-n", s.ns, "link", "set", "v-"+seg, "master", br, "up")
	mustRun(t, "ip", "-n", h.ns, "addr", "add", ip+"/24", "dev", "eth0")
	mustRun(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
	out := mustRun(t, "ip", "-n", h.ns, "-o", "link", "show", "dev", "eth0")
	mac := regexp.MustCompile(`link/ether ([0-9a-f:]{17})`).FindStringSubmatch(out)
	if mac == nil {
		t.Fatalf("no MAC in %q", out)
	}
	return &segHost{ns: h.ns, ip: ip, mac: mac[1]}, seg + "=tap:" + tap + ",bridge=" + br
}

// neighMAC returns the MAC that h's ARP table has for ip, or "".
func neighMAC(t *testing.T, h *segHost, ip string) string {
	out, _ := run(5*time.Second, "ip", "-n", h.ns, "neigh", "show", ip)
	m := regexp.MustCompile(`lladdr ([0-9a-f:]{17})`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestSegments: one server with two segments, blue and red; two clients in
// each, one in both, and one allowed in blue only that asks for both. The
// same addresses are used in both segments. Every host reaches the hosts of
// its own segment, and they are its own segment's (by MAC), never the other
// one's; the client refused red is told why, on both sides, and keeps blue;
// an edit of the allow file moves it from blue to red without touching the
// other clients' sessions.
func TestSegments(t *testing.T) {
	srv, cl := hubSites(t, 6)
	skey := genkey(t, srv.path("server.key"))
	blue, red := map[string]*segHost{}, map[string]*segHost{}
	sb, sbArg := addSegHost(t, srv, "blue", "192.0.2.1")
	sr, srArg := addSegHost(t, srv, "red", "192.0.2.1")
	blue["server"], red["server"] = sb, sr
	// Clients: c1, c2 blue; c3, c4 red; c5 both; c6 asks for both and is
	// allowed blue.
	plan := []struct {
		name  string
		segs  []string
		ip    string
		allow string
	}{
		{"c1", []string{"blue"}, "192.0.2.11", "blue"},
		{"c2", []string{"blue"}, "192.0.2.12", "blue"},
		{"c3", []string{"red"}, "192.0.2.11", "red"},
		{"c4", []string{"red"}, "192.0.2.14", "red"},
		{"c5", []string{"blue", "red"}, "192.0.2.15", "blue,red"},
		{"c6", []string{"blue", "red"}, "192.0.2.16", "blue"},
	}
	keys := make([]string, len(cl))
	allowFile := func(c6 string) string {
		var b strings.Builder
		for i, p := range plan {
			a := p.allow
			if p.name == "c6" {
				a = c6
			}
			fmt.Fprintf(&b, "%s %s segments=%s\n", keys[i], p.name, a)
		}
		return b.String()
	}
	for i, c := range cl {
		keys[i] = pubkey(t, genkey(t, c.path("client.key")))
	}
	writeFile(t, srv.path("clients.txt"), allowFile("blue"))
	sp := srv.cab(t, "server", "-p", port, "-s", sbArg, "-s", srArg, "--key", skey, "--allow", srv.path("clients.txt"))
	var cps []*proc
	for i, p := range plan {
		args := []string{"client", "--key", cl[i].path("client.key"), "--server-key", pubkey(t, skey), "--keepalive", "2s"}
		for _, seg := range p.segs {
			h, arg := addSegHost(t, cl[i], seg, p.ip)
			args = append(args, "-s", arg)
			if seg == "blue" {
				blue[p.name] = h
			} else {
				red[p.name] = h
			}
		}
		cps = append(cps, cl[i].cab(t, append(args, srv.v4+":"+port)...))
	}
	waitPeerUp(t, upTimeout, append([]*proc{sp}, cps...)...)

	// The refusal, said on both sides.
	refusal := "segment red: not allowed for this key"
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(cps[5].output(), refusal) && strings.Contains(sp.output(), refusal)
	}) {
		t.Fatalf("no %q in the logs of c6 and the server", refusal)
	}
	c6blue, c6red := blue["c6"], red["c6"]
	delete(red, "c6")

	reach := func(seg map[string]*segHost, name string) {
		t.Helper()
		// A segment's hosts reach each other, through the server and
		// from client to client, and what answers is their own
		// segment's host.
		for from, h := range seg {
			for to, o := range seg {
				if from == to {
					continue
				}
				if !waitFor(15*time.Second, func() bool { return ping(t, h.ns, o.ip, 1) == 1 }) {
					t.Fatalf("%s: %s (%s) does not reach %s (%s)", name, from, h.ip, to, o.ip)
				}
				if got := neighMAC(t, h, o.ip); got != o.mac {
					t.Fatalf("%s: %s's %s is at %s, not at %s's MAC %s: a frame crossed segments", name, from, o.ip, got, to, o.mac)
				}
			}
		}
	}
	reach(blue, "blue")
	reach(red, "red")
	// Addresses of the other segment alone are not reachable: .14 lives
	// in red, .12 in blue.
	if n := ping(t, blue["c1"].ns, "192.0.2.14", 2); n != 0 {
		t.Errorf("blue c1 reached red's 192.0.2.14 (%d replies)", n)
	}
	if n := ping(t, red["c3"].ns, "192.0.2.12", 2); n != 0 {
		t.Errorf("red c3 reached blue's 192.0.2.12 (%d replies)", n)
	}

	// cab status --fdb: every entry says its segment; the server's own
	// hosts' MACs are in both, each in its own.
	out := mustRun(t, "ip", "netns", "exec", srv.ns, cabBin, "status", "--fdb", "--json", "--name", srv.ns)
	var fdb []struct {
		MAC, Peer, Segment string
	}
	if err := json.Unmarshal([]byte(out), &fdb); err != nil {
		t.Fatalf("cab status --fdb --json: %v\n%s", err, out)
	}
	where := map[string]string{}
	for _, e := range fdb {
		if e.Segment != "blue" && e.Segment != "red" {
			t.Errorf("fdb entry %+v: segment %q", e, e.Segment)
		}
		where[e.MAC] += e.Segment + " "
	}
	if where[sb.mac] != "blue " || where[sr.mac] != "red " {
		t.Errorf("the server hosts' MACs: blue %s in %q, red %s in %q", sb.mac, where[sb.mac], sr.mac, where[sr.mac])
	}

	// Move c6 from blue to red by its line in the allow file.
	before := strings.Count(cps[0].output(), "handshake complete")
	writeFile(t, srv.path("clients.txt"), allowFile("red"))
	if !waitFor(15*time.Second, func() bool { return ping(t, red["server"].ns, "192.0.2.16", 1) == 1 }) {
		t.Fatal("c6 did not come into red after the allow file moved it")
	}
	if got := neighMAC(t, red["server"], "192.0.2.16"); got != c6red.mac {
		t.Fatalf("red's server host sees 192.0.2.16 at %q, not at c6's red host %s (its blue host is %s)", got, c6red.mac, c6blue.mac)
	}
	if n := ping(t, c6blue.ns, "192.0.2.1", 2); n != 0 {
		t.Errorf("c6's blue host still reaches blue's server host after the move (%d replies)", n)
	}
	if !strings.Contains(cps[5].output(), "segment blue: not allowed for this key") {
		t.Errorf("c6 was not told that it left blue")
	}
	if after := strings.Count(cps[0].output(), "handshake complete"); after != before || strings.Contains(cps[0].output(), "peer down") {
		t.Errorf("c1's session was touched by the move: %d handshakes before, %d after", before, after)
	}
	delete(blue, "c6")
	red["c6"] = c6red
	reach(blue, "blue after the move")
	reach(red, "red after the move")
}

// TestSegmentsPSK: in PSK-only mode a segment with a PSK of its own takes
// only the clients that hold it (given as psk= in -s), and one without
// takes every holder of the cable's PSK.
func TestSegmentsPSK(t *testing.T) {
	srv, cl := hubSites(t, 2)
	door := genkey(t, srv.path("site.psk"))
	redKey := genkey(t, srv.path("red.psk"))
	sb, sbArg := addSegHost(t, srv, "blue", "192.0.2.1")
	sr, srArg := addSegHost(t, srv, "red", "192.0.2.1")
	sp := srv.cab(t, "server", "-p", port, "--psk", door, "-s", sbArg, "-s", srArg+",psk="+redKey)
	// c1 holds red's PSK; c2 has another key as red's, and asks for blue
	// too.
	mustRun(t, "cp", door, cl[0].path("site.psk"))
	mustRun(t, "cp", door, cl[1].path("site.psk"))
	mustRun(t, "cp", redKey, cl[0].path("red.psk"))
	wrong := genkey(t, cl[1].path("red.psk"))
	r1, r1Arg := addSegHost(t, cl[0], "red", "192.0.2.11")
	b2, b2Arg := addSegHost(t, cl[1], "blue", "192.0.2.12")
	r2, r2Arg := addSegHost(t, cl[1], "red", "192.0.2.12")
	c1 := cl[0].cab(t, "client", "--psk", cl[0].path("site.psk"), "-s", r1Arg+",psk="+cl[0].path("red.psk"), srv.v4+":"+port)
	c2 := cl[1].cab(t, "client", "--psk", cl[1].path("site.psk"), "-s", b2Arg, "-s", r2Arg+",psk="+wrong, srv.v4+":"+port)
	waitPeerUp(t, upTimeout, sp, c1, c2)
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(c2.output(), "segment red: wrong PSK for the segment") && strings.Contains(sp.output(), "segment red: wrong PSK for the segment")
	}) {
		t.Fatal("c2's wrong red PSK was not refused on both sides")
	}
	waitPing(t, 15*time.Second, r1.ns, sr.ip)
	waitPing(t, 15*time.Second, b2.ns, sb.ip)
	if got := neighMAC(t, r1, sr.ip); got != sr.mac {
		t.Fatalf("red c1 sees the server's 192.0.2.1 at %s, not red's %s", got, sr.mac)
	}
	if n := ping(t, r2.ns, sr.ip, 2); n != 0 {
		t.Errorf("c2's red host reached red without red's PSK (%d replies)", n)
	}
	if n := ping(t, r1.ns, "192.0.2.12", 2); n != 0 {
		t.Errorf("red c1 reached 192.0.2.12, which is c2's in blue, and in red without the PSK (%d replies)", n)
	}
}

// TestSegmentsReload: a server configured by a file; SIGHUP with a new
// [[segment]] red and c1's segments changed from blue to red moves c1 into
// red (whose TAP cab then creates) and out of blue, without a handshake for
// c2, which stays in blue; removing blue then takes c2 out of it.
func TestSegmentsReload(t *testing.T) {
	srv, cl := hubSites(t, 2)
	skey := genkey(t, srv.path("server.key"))
	var pubs []string
	for _, c := range cl {
		pubs = append(pubs, pubkey(t, genkey(t, c.path("client.key"))))
	}
	sb, _ := addSegHost(t, srv, "blue", "192.0.2.1")
	sr, _ := addSegHost(t, srv, "red", "192.0.2.1")
	conf := func(segs []string, c1, c2 string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "listen_port = %s\nkey = %q\n", port, skey)
		for _, s := range segs {
			fmt.Fprintf(&b, "\n[[segment]]\nname = %q\nlocal = \"tap:t-%s,bridge=b-%s\"\n", s, s, s)
		}
		fmt.Fprintf(&b, "\n[[peer]]\nname = \"c1\"\npublic_key = %q\nsegments = [%q]\n", pubs[0], c1)
		fmt.Fprintf(&b, "\n[[peer]]\nname = \"c2\"\npublic_key = %q\nsegments = [%q]\n", pubs[1], c2)
		return b.String()
	}
	file := srv.path("hub.toml")
	writeFile(t, file, conf([]string{"blue"}, "blue", "blue"))
	sp := srv.cab(t, "server", "-f", file)
	b1, b1Arg := addSegHost(t, cl[0], "blue", "192.0.2.11")
	r1, r1Arg := addSegHost(t, cl[0], "red", "192.0.2.11")
	b2, b2Arg := addSegHost(t, cl[1], "blue", "192.0.2.12")
	common := []string{"--server-key", pubkey(t, skey), "--keepalive", "2s"}
	c1 := cl[0].cab(t, append(append([]string{"client", "--key", cl[0].path("client.key"), "-s", b1Arg, "-s", r1Arg}, common...), srv.v4+":"+port)...)
	c2 := cl[1].cab(t, append(append([]string{"client", "--key", cl[1].path("client.key"), "-s", b2Arg}, common...), srv.v4+":"+port)...)
	waitPeerUp(t, upTimeout, sp, c1, c2)
	waitPing(t, 15*time.Second, b1.ns, sb.ip)
	waitPing(t, 15*time.Second, b2.ns, sb.ip)
	if tapExists(cl[0]) {
		t.Error("a client with named segments alone made the default TAP")
	}

	hs := strings.Count(c2.output(), "handshake complete")
	writeFile(t, file, conf([]string{"blue", "red"}, "red", "blue"))
	sp.signal(syscall.SIGHUP)
	if !waitFor(5*time.Second, func() bool { return strings.Contains(sp.stderr.String(), `msg=reloaded`) }) {
		t.Fatalf("no reload: %s", sp.output())
	}
	waitPing(t, 15*time.Second, r1.ns, sr.ip)
	if got := neighMAC(t, r1, sr.ip); got != sr.mac {
		t.Fatalf("c1's red host sees 192.0.2.1 at %s, not red's %s", got, sr.mac)
	}
	if n := ping(t, b1.ns, sb.ip, 2); n != 0 {
		t.Errorf("c1 still reaches blue after it was moved to red (%d replies)", n)
	}
	if n := ping(t, b2.ns, sb.ip, 3); n != 3 {
		t.Errorf("c2 gets %d of 3 replies in blue after the reload", n)
	}
	if n := strings.Count(c2.output(), "handshake complete"); n != hs {
		t.Errorf("c2 did %d handshakes across the reload, want none", n-hs)
	}

	writeFile(t, file, conf([]string{"red"}, "red", "red"))
	sp.signal(syscall.SIGHUP)
	if !waitFor(10*time.Second, func() bool { return strings.Contains(c2.output(), "segment blue: no such segment on the server") }) {
		t.Fatalf("c2 was not told that blue is gone: %s", c2.output())
	}
	if n := ping(t, b2.ns, sb.ip, 2); n != 0 {
		t.Errorf("c2 still reaches blue's server host after blue was removed (%d replies)", n)
	}
	if n := ping(t, r1.ns, sr.ip, 2); n != 2 {
		t.Errorf("c1 gets %d of 2 replies in red after blue was removed", n)
	}
}

// TestSegmentsOVSTrunk: the server's segments blue and red, and its local
// port, are VLANs 100, 200 and 300 of one trunk TAP in an Open vSwitch
// bridge, with a host on an access port of each VLAN (blue's and red's
// with the same address). Each client reaches its own VLAN's host only.
func TestSegmentsOVSTrunk(t *testing.T) {
	srv, cl := hubSites(t, 3)
	db := startOVS(t, srv, "192.0.2.254")
	psk := genkey(t, srv.path("site.psk"))
	hosts := map[int]*segHost{}
	for _, v := range []struct {
		vid int
		ip  string
	}{{100, "192.0.2.1"}, {200, "192.0.2.1"}, {300, "192.0.2.3"}} {
		h := newNetns(t, fmt.Sprintf("v%d", v.vid))
		dev := fmt.Sprintf("vh%d", v.vid)
		mustRun(t, "ip", "-n", srv.ns, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		mustRun(t, "ip", "-n", srv.ns, "link", "set", dev, "up")
		mustRun(t, "ovs-vsctl", "--db=unix:"+db, "--timeout=10", "add-port", "brx", dev, fmt.Sprintf("tag=%d", v.vid))
		mustRun(t, "ip", "-n", h.ns, "addr", "add", v.ip+"/24", "dev", "eth0")
		mustRun(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
		out := mustRun(t, "ip", "-n", h.ns, "-o", "link", "show", "dev", "eth0")
		hosts[v.vid] = &segHost{ns: h.ns, ip: v.ip, mac: regexp.MustCompile(`link/ether ([0-9a-f:]{17})`).FindStringSubmatch(out)[1]}
	}
	sp := start(t, srv.ns, "env", "OVS_DB_SOCK="+db, cabBin, "server", "-p", port, "--psk", psk,
		"-s", "tap:trunk0,ovs=brx,vlan=300", "-s", "blue=tap:trunk0,ovs=brx,vlan=100", "-s", "red=tap:trunk0,ovs=brx,vlan=200",
		"--name", srv.ns, "--state-dir", srv.path("state"))
	for _, c := range cl {
		mustRun(t, "cp", psk, c.path("site.psk"))
	}
	b1, b1Arg := addSegHost(t, cl[0], "blue", "192.0.2.11")
	r2, r2Arg := addSegHost(t, cl[1], "red", "192.0.2.11")
	c1 := cl[0].cab(t, "client", "--psk", cl[0].path("site.psk"), "-s", b1Arg, srv.v4+":"+port)
	c2 := cl[1].cab(t, "client", "--psk", cl[1].path("site.psk"), "-s", r2Arg, srv.v4+":"+port)
	c3 := cl[2].cab(t, "client", "--psk", cl[2].path("site.psk"), "-s", "tap:"+tapDev, srv.v4+":"+port)
	setupTap(t, cl[2], c3, "192.0.2.33")
	waitPeerUp(t, upTimeout, sp, c1, c2, c3)
	if out := mustRun(t, "ovs-vsctl", "--db=unix:"+db, "list-ports", "brx"); strings.Count(out, "trunk0") != 1 {
		t.Fatalf("want one trunk0 port in brx: %s", out)
	}
	waitPing(t, 20*time.Second, b1.ns, "192.0.2.1")
	waitPing(t, 20*time.Second, r2.ns, "192.0.2.1")
	waitPing(t, 20*time.Second, cl[2].ns, "192.0.2.3")
	if got := neighMAC(t, b1, "192.0.2.1"); got != hosts[100].mac {
		t.Errorf("blue's 192.0.2.1 is at %s, not VLAN 100's host %s", got, hosts[100].mac)
	}
	if got := neighMAC(t, r2, "192.0.2.1"); got != hosts[200].mac {
		t.Errorf("red's 192.0.2.1 is at %s, not VLAN 200's host %s", got, hosts[200].mac)
	}
	if n := ping(t, b1.ns, "192.0.2.3", 2); n != 0 {
		t.Errorf("blue reached VLAN 300's host (%d replies)", n)
	}
	if n := ping(t, cl[2].ns, "192.0.2.11", 2); n != 0 {
		t.Errorf("the default segment reached a blue or red host (%d replies)", n)
	}
}
