//go:build linux

package cabtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The DNS tunnel (issue 10) through a real recursive resolver: the client
// namespace reaches only the resolver's (Unbound's) namespace, which
// reaches the server's; Unbound has a stub zone for the tunnel zone
// pointing at cab's name server, with 0x20 case randomisation on and QNAME
// minimisation at its default.

const (
	dnsZone     = "t.tun.test"
	resolverCli = "198.51.100.1" // the resolver, on the client's side
	clientAddr  = "198.51.100.2"
	resolverSrv = "203.0.113.1" // the resolver, on the server's side
	serverAddr  = "203.0.113.2"
)

// dnsSetup is the three namespaces and what runs in them.
type dnsSetup struct {
	cli, res, srv *site
	resToSrv      string // the resolver's veth toward the server
	unbound       *proc
	cab           [2]*proc // server, client
}

// link joins a and b with a veth pair and gives each end an address.
func link(t *testing.T, a, b *site, aAddr, bAddr string) (aIf, bIf string) {
	t.Helper()
	id := randomID(t)
	aIf, bIf = "dn"+id+"a", "dn"+id+"b"
	mustRun(t, "ip", "link", "add", aIf, "netns", a.ns, "type", "veth", "peer", "name", bIf, "netns", b.ns)
	for _, e := range []struct {
		s         *site
		dev, addr string
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		mustRun(t, "ip", "-n", e.s.ns, "addr", "add", e.addr+"/24", "dev", e.dev)
		mustRun(t, "ip", "-n", e.s.ns, "link", "set", e.dev, "up")
	}
	return aIf, bIf
}

// startUnbound runs unbound in the foreground in s's namespace with a
// config written for the test, and waits until it answers.
func startUnbound(t *testing.T, s *site, extra string) *proc {
	t.Helper()
	bin, err := exec.LookPath("unbound")
	if err != nil {
		bin = "/usr/sbin/unbound"
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("unbound not installed (apt-get install unbound)")
		}
		t.Skip("SKIPPED: unbound not installed (apt-get install unbound)")
	}
	conf := s.path("unbound.conf")
	text := fmt.Sprintf(`server:
	interface: %s
	port: 53
	access-control: 198.51.100.0/24 allow
	outgoing-interface: %s
	do-ip6: no
	module-config: "iterator"
	use-caps-for-id: yes
	local-zone: "test." nodefault
	username: ""
	chroot: ""
	directory: "%s"
	pidfile: "%s"
	logfile: ""
	use-syslog: no
	verbosity: 1
	do-daemonize: no
	num-threads: 1
%s
remote-control:
	control-enable: no

stub-zone:
	name: "%s."
	stub-addr: %s@53
`, resolverCli, resolverSrv, s.dir, s.path("unbound.pid"), extra, dnsZone, serverAddr)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, s.ns, bin, "-d", "-c", conf)
	up := waitFor(10*time.Second, func() bool {
		out, err := run(5*time.Second, "ip", "netns", "exec", s.ns, "ss", "-Hlun", "sport", "=", ":53")
		return p.exited() || err == nil && strings.Contains(out, resolverCli)
	})
	if !up || p.exited() {
		t.Fatalf("unbound not listening on %s:53 within 10 s (%s)\n%s", resolverCli, p.state(), p.output())
	}
	return p
}

// newDNSSetup builds client — resolver — server, starts unbound and both
// cabs, and waits for the cable to come up through the resolver.
func newDNSSetup(t *testing.T, unboundExtra string, serverArgs ...string) *dnsSetup {
	t.Helper()
	d := &dnsSetup{cli: newNetns(t, "c"), res: newNetns(t, "r"), srv: newNetns(t, "s")}
	link(t, d.cli, d.res, clientAddr, resolverCli)
	d.resToSrv, _ = link(t, d.res, d.srv, resolverSrv, serverAddr)
	// The resolver does not forward packets, and the client has no route
	// to the server: DNS through Unbound is the only way.
	mustRun(t, "ip", "netns", "exec", d.res.ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	if out, _ := run(5*time.Second, "ip", "netns", "exec", d.cli.ns, "ping", "-c", "1", "-W", "1", serverAddr); strings.Contains(out, " 1 received") {
		t.Fatal("the client reaches the server without the resolver")
	}
	d.unbound = startUnbound(t, d.res, unboundExtra)
	psk := genkey(t, d.srv.path("site.psk"))
	mustRun(t, "cp", d.srv.path("site.psk"), d.cli.path("site.psk"))
	d.cab[0] = d.srv.cab(t, append([]string{"server", "-s", "tap:" + tapDev, "--psk", psk, "--transport", "dns", "--dns-zone", dnsZone, "--dns-listen", serverAddr + ":53"}, serverArgs...)...)
	d.cab[1] = d.cli.cab(t, "client", "-s", "tap:"+tapDev, "--psk", d.cli.path("site.psk"), "--transport", "dns://"+dnsZone, "--resolver", resolverCli)
	setupTap(t, d.srv, d.cab[0], overlayA)
	setupTap(t, d.cli, d.cab[1], overlayB)
	waitPeerUp(t, 30*time.Second, d.cab[0], d.cab[1])
	return d
}

// queryLoss makes the server's namespace drop pct % of the queries that
// reach it from the resolver (0: none).
func (d *dnsSetup) queryLoss(t *testing.T, pct int) {
	t.Helper()
	run(5*time.Second, "ip", "netns", "exec", d.srv.ns, "nft", "delete", "table", "inet", "cabdns")
	if pct == 0 {
		return
	}
	nft(t, d.srv, "add", "table", "inet", "cabdns")
	nft(t, d.srv, "add", "chain", "inet", "cabdns", "in", "{ type filter hook input priority 0 ; }")
	nft(t, d.srv, "add", "rule", "inet", "cabdns", "in", "udp", "dport", "53", "numgen", "random", "mod", "100", "<", fmt.Sprint(pct), "counter", "drop")
}

// transfer5MB sends 5 MB of random bytes over TCP across the cable, from
// the client to the server (or the other way with reverse), checks that
// every byte arrived, and returns the rate in bit/s.
func transfer5MB(t *testing.T, d *dnsSetup, reverse bool, timeout time.Duration) float64 {
	t.Helper()
	return transferN(t, d, 5<<20, reverse, timeout)
}

// transferN is transfer5MB of size bytes.
func transferN(t *testing.T, d *dnsSetup, size int, reverse bool, timeout time.Duration) float64 {
	t.Helper()
	from, to, toAddr := d.cli, d.srv, overlayA
	if reverse {
		from, to, toAddr = d.srv, d.cli, overlayB
	}
	var l net.Listener
	var err error
	inNetns(t, to.ns, func() { l, err = net.Listen("tcp", net.JoinHostPort(toAddr, "5202")) })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	data := make([]byte, size)
	cryptorand.Read(data)
	want := sha256.Sum256(data)
	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	got := make(chan result, 1)
	deadline := time.Now().Add(timeout)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		h := sha256.New()
		n, err := io.Copy(h, c)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		got <- result{n, sum, err}
	}()
	var c net.Conn
	inNetns(t, from.ns, func() {
		dl := net.Dialer{Timeout: 10 * time.Second}
		c, err = dl.Dial("tcp", net.JoinHostPort(toAddr, "5202"))
	})
	if err != nil {
		t.Fatalf("dial across the dns tunnel: %v", err)
	}
	t0 := time.Now()
	c.SetDeadline(deadline)
	_, werr := c.Write(data)
	c.Close()
	r := <-got
	el := time.Since(t0)
	if werr != nil || r.err != nil || r.n != int64(size) || r.sum != want {
		t.Fatalf("%d bytes over the dns tunnel (reverse %v) after %v: write %v, read %v, %d bytes, intact %v", size, reverse, el.Round(time.Second), werr, r.err, r.n, r.sum == want)
	}
	return float64(size*8) / el.Seconds()
}

// clientQueries is how many queries the client's tunnel has sent.
func clientQueries(t *testing.T, d *dnsSetup) uint64 {
	t.Helper()
	ps := dnsStatus(t, d.cli)
	if len(ps) != 1 || ps[0].Path == nil {
		t.Fatalf("client status %+v", ps)
	}
	return ps[0].Path.Queries
}

// dnsPeer is a peer's status with the transport's path figures.
type dnsPeer struct {
	Up        bool   `json:"up"`
	Transport string `json:"transport"`
	Path      *struct {
		QPS     float64 `json:"queries_per_sec"`
		Loss    float64 `json:"loss"`
		RTT     int64   `json:"rtt_ns"`
		Queries uint64  `json:"queries"`
	} `json:"path"`
}

func dnsStatus(t *testing.T, s *site) []dnsPeer {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", s.ns, cabBin, "status", "--json", "--name", s.ns)
	var st struct{ Peers []dnsPeer }
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cab status --json: %v\n%s", err, out)
	}
	return st.Peers
}

// TestDNSTunnel: through Unbound, ping crosses both ways, ARP resolves on
// an idle tunnel, 5 MB cross over TCP each way, status shows dns with its
// figures; then 5 MB still cross with 1 % and 5 % of the resolver's
// queries to the server dropped.
func TestDNSTunnel(t *testing.T) {
	d := newDNSSetup(t, "")
	waitPing(t, 20*time.Second, d.cli.ns, overlayA)
	if n := ping(t, d.cli.ns, overlayA, 10); n < 10 {
		t.Errorf("ping client→server through unbound: %d of 10", n)
	}
	if n := ping(t, d.srv.ns, overlayB, 10); n < 10 {
		t.Errorf("ping server→client through unbound: %d of 10", n)
	}
	// A full 1500-byte IP packet (a 1514-byte frame) crosses unfragmented.
	if n := ping(t, d.cli.ns, overlayA, 3, "-s", "1472", "-M", "do"); n != 3 {
		t.Errorf("1500-byte pings: %d of 3", n)
	}
	// ARP on an idle tunnel: forget the neighbours, wait, ping once.
	for _, s := range []*site{d.cli, d.srv} {
		mustRun(t, "ip", "-n", s.ns, "neigh", "flush", "dev", tapDev)
	}
	time.Sleep(6 * time.Second)
	t0 := time.Now()
	if n := ping(t, d.cli.ns, overlayA, 1, "-W", "4"); n != 1 {
		t.Errorf("no ping reply after an idle ARP flush")
	}
	arp := time.Since(t0)
	neigh := mustRun(t, "ip", "-n", d.cli.ns, "neigh", "show", overlayA, "dev", tapDev)
	if !strings.Contains(neigh, "lladdr") {
		t.Errorf("ARP did not resolve %s through the tunnel: %q", overlayA, neigh)
	}
	t.Logf("ARP and a ping on an idle tunnel: %v", arp.Round(time.Millisecond))

	// Count what reaches the server: with NXDOMAIN for the minimised
	// probes, Unbound asks about twice per tunnel query (NODATA would make
	// it five).
	nft(t, d.srv, "add", "table", "inet", "cabcount")
	nft(t, d.srv, "add", "chain", "inet", "cabcount", "in", "{ type filter hook input priority 0 ; }")
	nft(t, d.srv, "add", "rule", "inet", "cabcount", "in", "udp", "dport", "53", "counter")
	q0 := clientQueries(t, d)

	up := transfer5MB(t, d, false, 240*time.Second)
	down := transfer5MB(t, d, true, 240*time.Second)
	t.Logf("5 MB through unbound: up %.0f kbit/s, down %.0f kbit/s", up/1000, down/1000)

	q1 := clientQueries(t, d)
	out := mustRun(t, "ip", "netns", "exec", d.srv.ns, "nft", "list", "table", "inet", "cabcount")
	var auth uint64
	if m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(out); m != nil {
		fmt.Sscan(m[1], &auth)
	}
	ratio := float64(auth) / float64(q1-q0)
	t.Logf("%d tunnel queries, %d queries at the server: %.2f per tunnel query", q1-q0, auth, ratio)
	if q1 <= q0 || ratio > 2.2 || ratio < 1 {
		t.Errorf("%d tunnel queries became %d at the server (%.2f each); want about 2", q1-q0, auth, ratio)
	}

	for _, s := range []*site{d.cli, d.srv} {
		ps := dnsStatus(t, s)
		if len(ps) != 1 || !ps[0].Up || ps[0].Transport != "dns" || ps[0].Path == nil || ps[0].Path.Queries == 0 || ps[0].Path.RTT <= 0 {
			t.Errorf("%s: status %+v, want one peer up over dns with queries and an rtt", s.ns, ps)
		} else {
			t.Logf("%s: %.1f queries/s, loss %.2f%%, rtt %v, %d queries", s.ns, ps[0].Path.QPS, 100*ps[0].Path.Loss, time.Duration(ps[0].Path.RTT), ps[0].Path.Queries)
		}
	}
	out = mustRun(t, "ip", "netns", "exec", d.cli.ns, cabBin, "status", "--name", d.cli.ns)
	if !strings.Contains(out, "queries/s") {
		t.Errorf("cab status shows no dns figures:\n%s", out)
	}

	for _, pct := range []int{1, 5} {
		d.queryLoss(t, pct)
		t0 := time.Now()
		r := transfer5MB(t, d, false, 240*time.Second)
		t.Logf("5 MB up with %d%% query loss: %v, %.0f kbit/s", pct, time.Since(t0).Round(time.Second), r/1000)
		r = transfer5MB(t, d, true, 240*time.Second)
		t.Logf("5 MB down with %d%% query loss: %.0f kbit/s", pct, r/1000)
		out, _ := run(5*time.Second, "ip", "netns", "exec", d.srv.ns, "nft", "list", "table", "inet", "cabdns")
		if !strings.Contains(out, "packets") || strings.Contains(out, "packets 0 ") {
			t.Errorf("the %d%% loss rule dropped nothing:\n%s", pct, out)
		}
	}
	d.queryLoss(t, 0)
	if n := ping(t, d.cli.ns, overlayA, 5); n < 4 {
		t.Errorf("after the lossy transfers: %d of 5 pings", n)
	}
}

// TestDNSTunnelRateLimited: Unbound drops the client's queries beyond 200
// per second (ip-ratelimit, as public resolvers do); the window adapts,
// so pings still cross and a 256 KB transfer completes each way, and the
// client sees the loss.
func TestDNSTunnelRateLimited(t *testing.T) {
	d := newDNSSetup(t, "\tip-ratelimit: 200\n\tip-ratelimit-factor: 0\n")
	waitPing(t, 20*time.Second, d.cli.ns, overlayA)
	if n := ping(t, d.cli.ns, overlayA, 10); n < 9 {
		t.Errorf("ping through a rate-limited resolver: %d of 10", n)
	}
	t0 := time.Now()
	up := transferN(t, d, 256<<10, false, 120*time.Second)
	down := transferN(t, d, 256<<10, true, 120*time.Second)
	t.Logf("256 KB through a resolver limited to 200 queries/s: up %.0f kbit/s, down %.0f kbit/s, %v", up/1000, down/1000, time.Since(t0).Round(time.Second))
	ps := dnsStatus(t, d.cli)
	if len(ps) != 1 || ps[0].Path == nil {
		t.Fatalf("client status %+v", ps)
	}
	t.Logf("client: %.1f queries/s, loss %.1f%%", ps[0].Path.QPS, 100*ps[0].Path.Loss)
	// The resolver's rate limit may still hold queries of the transfers
	// back: the tunnel recovers within a few seconds.
	n := ping(t, d.cli.ns, overlayA, 5)
	if n < 4 {
		time.Sleep(3 * time.Second)
		n = ping(t, d.cli.ns, overlayA, 5)
	}
	if n < 4 {
		t.Errorf("after the transfers and 3 s more: %d of 5 pings", n)
	}
	// Unbound's statistics at exit count the queries it dropped.
	d.unbound.signal(syscall.SIGTERM)
	d.unbound.wait(5 * time.Second)
	m := regexp.MustCompile(`(\d+) rejected by ip ratelimiting`).FindStringSubmatch(d.unbound.output())
	if m == nil || m[1] == "0" {
		t.Errorf("unbound rejected no query by its rate limit (%v): the test did not test it\n%.3000s", m, d.unbound.output())
	} else {
		t.Logf("unbound dropped %s queries over its rate limit", m[1])
	}
}

// TestDNSTunnelHostile: random base32, names too long, unknown session
// ids, replays and a flood of thousands of queries, sent straight to cab's
// name server and through Unbound, get NXDOMAIN (or no answer), cost the
// server bounded state, and the live session keeps pinging.
func TestDNSTunnelHostile(t *testing.T) {
	d := newDNSSetup(t, "")
	waitPing(t, 20*time.Second, d.cli.ns, overlayA)
	pinger := start(t, d.cli.ns, "ping", "-n", "-i", "0.2", "-W", "2", overlayA)

	enc := base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	name := func(p []byte) string {
		s := enc.EncodeToString(p)
		var labels []string
		for len(s) > 0 {
			n := min(len(s), 63)
			labels = append(labels, s[:n])
			s = s[n:]
		}
		return strings.Join(labels, ".") + "." + dnsZone + "."
	}
	randomBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	// A tunnel query with an unknown session id, well formed otherwise.
	unknown := func() []byte {
		b := []byte{0x40}
		b = binary.BigEndian.AppendUint32(b, r.Uint32())
		return append(b, randomBytes(4)...)
	}
	counts := map[string]int{}
	ask := func(c *dns.Client, server, qname string, raw []byte) {
		var in *dns.Msg
		var err error
		if raw != nil {
			in, err = exchangeRaw(server, raw)
		} else {
			m := new(dns.Msg)
			m.SetQuestion(qname, dns.TypeTXT)
			m.SetEdns0(1232, false)
			in, _, err = c.Exchange(m, server)
		}
		switch {
		case err != nil:
			counts["no answer"]++
		case in.Rcode == dns.RcodeNameError:
			counts["NXDOMAIN"]++
		default:
			counts[dns.RcodeToString[in.Rcode]]++
		}
	}
	direct := serverAddr + ":53"
	c := &dns.Client{Timeout: 300 * time.Millisecond}
	// Straight at the server, from the resolver's namespace.
	inNetns(t, d.res.ns, func() {
		for i := 0; i < 200; i++ {
			ask(c, direct, name(randomBytes(1+r.IntN(140))), nil) // random base32
			ask(c, direct, name(unknown()), nil)                  // unknown session
		}
		// A name of 300 characters, beyond what DNS allows: packed by hand.
		long := strings.Repeat(strings.Repeat("a", 63)+".", 4) + strings.Repeat("b", 40) + "." + dnsZone + "."
		for i := 0; i < 20; i++ {
			ask(c, direct, "", rawQuery(long))
		}
		// Replays of one unknown-session query.
		q := name(unknown())
		for i := 0; i < 50; i++ {
			ask(c, direct, q, nil)
		}
	})
	t.Logf("hostile queries straight to the server: %v", counts)
	for k, n := range counts {
		if k != "NXDOMAIN" && k != "no answer" {
			t.Errorf("%d hostile queries answered %s, want NXDOMAIN or nothing", n, k)
		}
	}
	if counts["NXDOMAIN"] < 400 {
		t.Errorf("only %d NXDOMAIN answers to 470 hostile queries", counts["NXDOMAIN"])
	}
	// Replays of the live session's own queries, captured on the way from
	// Unbound to the server, three times each.
	pcap := d.res.path("queries.pcap")
	dump := start(t, d.res.ns, "tcpdump", "-i", d.resToSrv, "-n", "-U", "-c", "300", "-w", pcap, "udp", "dst", "port", "53")
	dump.wait(20 * time.Second)
	queries := pcapUDPPayloads(t, pcap)
	if len(queries) < 100 {
		t.Fatalf("captured %d queries of the live session, want 300", len(queries))
	}
	clear(counts)
	inNetns(t, d.res.ns, func() {
		for _, q := range queries {
			for i := 0; i < 3; i++ {
				ask(c, direct, "", q)
			}
		}
	})
	t.Logf("replayed queries: %v", counts)
	if counts["no answer"] > len(queries) {
		t.Errorf("replays went unanswered: %v", counts)
	}
	// A flood: 3000 queries for unknown sessions and 2000 that open
	// sessions with random ids, without waiting for answers, from the
	// resolver's namespace; and 300 through Unbound.
	rss0 := rssKB(t, d.cab[0])
	inNetns(t, d.res.ns, func() {
		conn, err := net.Dial("udp", direct)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for i := 0; i < 5000; i++ {
			q := unknown()
			if i%5 >= 3 {
				q[0] = 0x48                           // open
				q = append(q, 0xca, 0xb7, 0x0d, 0x5e) // and its fixed bytes
			}
			m := new(dns.Msg)
			m.SetQuestion(name(q), dns.TypeTXT)
			b, _ := m.Pack()
			conn.Write(b)
			if i%100 == 99 {
				time.Sleep(10 * time.Millisecond)
			}
		}
	})
	clear(counts)
	inNetns(t, d.cli.ns, func() {
		for i := 0; i < 300; i++ {
			ask(c, resolverCli+":53", name(unknown()), nil)
		}
	})
	t.Logf("hostile queries through unbound: %v", counts)
	if counts["NOERROR"] > 0 {
		t.Errorf("%d hostile queries through unbound got NOERROR", counts["NOERROR"])
	}
	time.Sleep(3 * time.Second)
	rss1 := rssKB(t, d.cab[0])
	t.Logf("server memory: %d kB before the flood, %d kB after", rss0, rss1)
	if rss1 > rss0+64<<10 {
		t.Errorf("the server grew by %d kB in the flood", rss1-rss0)
	}
	pinger.signal(2)
	pinger.wait(5 * time.Second)
	var sent, got int
	out := pinger.stdout.String()
	if i := strings.LastIndex(out, "packets transmitted"); i >= 0 {
		fmt.Sscanf(out[strings.LastIndex(out[:i], "\n")+1:], "%d packets transmitted, %d received", &sent, &got)
	}
	t.Logf("pings during the attack: %d sent, %d received", sent, got)
	if sent == 0 || got < sent*9/10 {
		t.Errorf("the live session lost pings during the attack: %d of %d", got, sent)
	}
	if n := ping(t, d.cli.ns, overlayA, 5); n != 5 {
		t.Errorf("after the attack: %d of 5 pings", n)
	}
	// The server's status counts what it refused.
	out = mustRun(t, "ip", "netns", "exec", d.srv.ns, cabBin, "status", "--json", "--name", d.srv.ns)
	var st struct{ Drops map[string]uint64 }
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cab status --json: %v\n%s", err, out)
	}
	t.Logf("server drops: %v", st.Drops)
	if st.Drops["dns_nxdomain"] < 1000 {
		t.Errorf("server status counts %d NXDOMAIN answers after thousands of hostile queries: %v", st.Drops["dns_nxdomain"], st.Drops)
	}
}

// writeCert writes a self-signed certificate for ip and its key as PEM
// files in dir, and returns their paths.
func writeCert(t *testing.T, dir, ip string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "resolver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(ip)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(cryptorand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "resolver.pem"), filepath.Join(dir, "resolver.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestDNSTunnelSecure: the client reaches Unbound over DNS over TLS, and
// over DNS over HTTPS, with the resolver's certificate checked (trusted
// through SSL_CERT_FILE); ping crosses, and the resolver saw the queries
// over TLS.
func TestDNSTunnelSecure(t *testing.T) {
	d := &dnsSetup{cli: newNetns(t, "c"), res: newNetns(t, "r"), srv: newNetns(t, "s")}
	link(t, d.cli, d.res, clientAddr, resolverCli)
	link(t, d.res, d.srv, resolverSrv, serverAddr)
	cert, key := writeCert(t, d.res.dir, resolverCli)
	d.unbound = startUnbound(t, d.res, fmt.Sprintf(`	interface: %s@853
	interface: %s@443
	tls-port: 853
	https-port: 443
	http-endpoint: "/dns-query"
	tls-service-pem: "%s"
	tls-service-key: "%s"
`, resolverCli, resolverCli, cert, key))
	t.Setenv("SSL_CERT_FILE", cert)
	nft(t, d.res, "add", "table", "inet", "cabdnsc")
	nft(t, d.res, "add", "chain", "inet", "cabdnsc", "in", "{ type filter hook input priority 0 ; }")
	for _, r := range []string{"udp dport 53", "tcp dport 853", "tcp dport 443"} {
		nft(t, d.res, append([]string{"add", "rule", "inet", "cabdnsc", "in", "ip", "saddr", clientAddr}, append(strings.Fields(r), "counter")...)...)
	}
	psk := genkey(t, d.srv.path("site.psk"))
	mustRun(t, "cp", psk, d.cli.path("site.psk"))
	srv := d.srv.cab(t, "server", "-s", "tap:"+tapDev, "--psk", psk, "--transport", "dns", "--dns-zone", dnsZone, "--dns-listen", serverAddr+":53")
	setupTap(t, d.srv, srv, overlayA)
	for i, resolver := range []string{"tls://" + resolverCli, "https://" + resolverCli + "/dns-query"} {
		t.Run(strings.SplitN(resolver, ":", 2)[0], func(t *testing.T) {
			args := []string{"client", "-s", "tap:" + tapDev, "--psk", d.cli.path("site.psk"), "--transport", "dns://" + dnsZone, "--resolver", resolver,
				"--name", d.cli.ns, "--state-dir", d.cli.path(fmt.Sprintf("state%d", i))}
			cli := start(t, d.cli.ns, cabBin, args...)
			setupTap(t, d.cli, cli, overlayB)
			waitPeerUp(t, 30*time.Second, cli)
			waitPing(t, 20*time.Second, d.cli.ns, overlayA)
			if n := ping(t, d.cli.ns, overlayA, 10); n < 10 {
				t.Errorf("ping over %s: %d of 10", resolver, n)
			}
			cli.signal(syscall.SIGTERM)
			cli.wait(5 * time.Second)
		})
	}
	// The plain port saw nothing from the client: every query came over
	// TLS, to 853 or 443.
	out := mustRun(t, "ip", "netns", "exec", d.res.ns, "nft", "list", "table", "inet", "cabdnsc")
	for _, c := range []struct {
		rule string
		zero bool
	}{{"udp dport 53", true}, {"tcp dport 853", false}, {"tcp dport 443", false}} {
		m := regexp.MustCompile(regexp.QuoteMeta(c.rule) + ` counter packets (\d+)`).FindStringSubmatch(out)
		if m == nil || (m[1] == "0") != c.zero {
			t.Errorf("resolver's counter for %s: %v, want zero %v\n%s", c.rule, m, c.zero, out)
		}
	}
}

// rssKB is the resident memory of p in kB.
func rssKB(t *testing.T, p *proc) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var n int
			fmt.Sscanf(strings.TrimPrefix(l, "VmRSS:"), "%d", &n)
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestDNSJumbo: with 9000-byte TAPs, a jumbo frame is cut by the cable
// into packets, which the tunnel cuts into queries and answers; it crosses
// both ways.
func TestDNSJumbo(t *testing.T) {
	d := &dnsSetup{cli: newNetns(t, "c"), res: newNetns(t, "r"), srv: newNetns(t, "s")}
	link(t, d.cli, d.res, clientAddr, resolverCli)
	link(t, d.res, d.srv, resolverSrv, serverAddr)
	d.unbound = startUnbound(t, d.res, "")
	psk := genkey(t, d.srv.path("site.psk"))
	mustRun(t, "cp", psk, d.cli.path("site.psk"))
	srv := d.srv.cab(t, "server", "-s", "tap:"+tapDev+",mtu=9000", "--psk", psk, "--transport", "dns", "--dns-zone", dnsZone, "--dns-listen", serverAddr+":53")
	cli := d.cli.cab(t, "client", "-s", "tap:"+tapDev+",mtu=9000", "--psk", d.cli.path("site.psk"), "--transport", "dns://"+dnsZone, "--resolver", resolverCli)
	setupTap(t, d.srv, srv, overlayA)
	setupTap(t, d.cli, cli, overlayB)
	waitPeerUp(t, 30*time.Second, srv, cli)
	waitPing(t, 20*time.Second, d.cli.ns, overlayA)
	if n := ping(t, d.cli.ns, overlayA, 5, "-s", "8972", "-M", "do"); n < 5 {
		t.Errorf("9000-byte pings client→server: %d of 5", n)
	}
	if n := ping(t, d.srv.ns, overlayB, 5, "-s", "8972", "-M", "do"); n < 5 {
		t.Errorf("9000-byte pings server→client: %d of 5", n)
	}
	var fragmented uint64
	out := mustRun(t, "ip", "netns", "exec", d.cli.ns, cabBin, "status", "--json", "--name", d.cli.ns)
	var st struct {
		Peers []struct {
			Fragmented uint64 `json:"fragmented_frames"`
		}
	}
	if json.Unmarshal([]byte(out), &st) == nil && len(st.Peers) == 1 {
		fragmented = st.Peers[0].Fragmented
	}
	if fragmented < 5 {
		t.Errorf("the cable fragmented %d frames, want the jumbo pings cut", fragmented)
	}
}

// TestDNSServerRestart: the server restarts and forgets every session;
// the client's next queries get NXDOMAIN, it opens a new session, the
// cable handshakes again, and pings cross again.
func TestDNSServerRestart(t *testing.T) {
	d := newDNSSetup(t, "")
	waitPing(t, 20*time.Second, d.cli.ns, overlayA)
	d.cab[0].signal(syscall.SIGTERM)
	if !d.cab[0].wait(10 * time.Second) {
		t.Fatal("the server did not stop")
	}
	t0 := time.Now()
	srv := d.srv.cab(t, "server", "-s", "tap:"+tapDev, "--psk", d.srv.path("site.psk"), "--transport", "dns", "--dns-zone", dnsZone, "--dns-listen", serverAddr+":53")
	setupTap(t, d.srv, srv, overlayA)
	waitPing(t, 90*time.Second, d.cli.ns, overlayA)
	t.Logf("pings cross again %v after the restart", time.Since(t0).Round(100*time.Millisecond))
	if !strings.Contains(d.cab[1].stderr.String(), "forgot the session") {
		t.Errorf("the client did not notice the lost session:\n%s", d.cab[1].stderr.String())
	}
	if n := ping(t, d.cli.ns, overlayA, 5); n != 5 {
		t.Errorf("after the restart: %d of 5 pings", n)
	}
}

// TestDNSStrictMinimisation: behind a resolver with strict QNAME
// minimisation, which takes the NXDOMAIN for a shortened name as final,
// the tunnel needs --dns-nodata; with it, pings and a transfer cross, at
// more queries per tunnel query.
func TestDNSStrictMinimisation(t *testing.T) {
	const strict = "\tqname-minimisation-strict: yes\n"
	t.Run("nxdomain", func(t *testing.T) {
		d := &dnsSetup{cli: newNetns(t, "c"), res: newNetns(t, "r"), srv: newNetns(t, "s")}
		link(t, d.cli, d.res, clientAddr, resolverCli)
		link(t, d.res, d.srv, resolverSrv, serverAddr)
		d.unbound = startUnbound(t, d.res, strict)
		psk := genkey(t, d.srv.path("site.psk"))
		mustRun(t, "cp", psk, d.cli.path("site.psk"))
		srv := d.srv.cab(t, "server", "-s", "tap:"+tapDev, "--psk", psk, "--transport", "dns", "--dns-zone", dnsZone, "--dns-listen", serverAddr+":53")
		cli := d.cli.cab(t, "client", "-s", "tap:"+tapDev, "--psk", d.cli.path("site.psk"), "--transport", "dns://"+dnsZone, "--resolver", resolverCli)
		time.Sleep(10 * time.Second)
		if strings.Contains(srv.stderr.String(), peerUp) || strings.Contains(cli.stderr.String(), peerUp) {
			t.Errorf("the tunnel came up behind a strict minimiser without --dns-nodata: the documented limit is wrong")
		}
	})
	t.Run("nodata", func(t *testing.T) {
		d := newDNSSetup(t, strict, "--dns-nodata")
		waitPing(t, 20*time.Second, d.cli.ns, overlayA)
		if n := ping(t, d.cli.ns, overlayA, 5); n != 5 {
			t.Errorf("ping behind a strict minimiser: %d of 5", n)
		}
		r := transferN(t, d, 1<<20, false, 120*time.Second)
		t.Logf("1 MB up behind a strict minimiser: %.0f kbit/s", r/1000)
	})
}

// TestDNSFallback: a client with --transport udp,dns://ZONE whose UDP
// cannot reach the server falls back to the DNS tunnel through the
// resolver, and the cable works over it.
func TestDNSFallback(t *testing.T) {
	d := &dnsSetup{cli: newNetns(t, "c"), res: newNetns(t, "r"), srv: newNetns(t, "s")}
	link(t, d.cli, d.res, clientAddr, resolverCli)
	link(t, d.res, d.srv, resolverSrv, serverAddr)
	d.unbound = startUnbound(t, d.res, "")
	psk := genkey(t, d.srv.path("site.psk"))
	mustRun(t, "cp", psk, d.cli.path("site.psk"))
	srv := d.srv.cab(t, "server", "-p", port, "-s", "tap:"+tapDev, "--psk", psk, "--transport", "udp,dns", "--dns-zone", dnsZone, "--dns-listen", serverAddr+":53")
	cli := d.cli.cab(t, "client", "-s", "tap:"+tapDev, "--psk", d.cli.path("site.psk"), "--transport", "udp,dns://"+dnsZone, "--resolver", resolverCli,
		"--metrics", "127.0.0.1:9667", serverAddr+":"+port)
	setupTap(t, d.srv, srv, overlayA)
	setupTap(t, d.cli, cli, overlayB)
	waitPeerUp(t, 60*time.Second, srv, cli)
	waitPing(t, 20*time.Second, d.cli.ns, overlayA)
	for _, s := range []*site{d.cli, d.srv} {
		if ps := dnsStatus(t, s); len(ps) != 1 || ps[0].Transport != "dns" {
			t.Errorf("%s: status %+v, want one peer over dns", s.ns, ps)
		}
	}
	if n := ping(t, d.cli.ns, overlayA, 5); n != 5 {
		t.Errorf("ping over the fallback: %d of 5", n)
	}
	// The path's figures are metrics too.
	var body []byte
	var err error
	var conn net.Conn
	inNetns(t, d.cli.ns, func() { conn, err = net.Dial("tcp", "127.0.0.1:9667") }) // in the namespace
	if err == nil {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
		body, err = io.ReadAll(conn)
		conn.Close()
	}
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	m := regexp.MustCompile(`(?m)^cab_peer_path_queries_total\{peer="[^"]*"\} (\S+)$`).FindSubmatch(body)
	if m == nil || string(m[1]) == "0" {
		t.Errorf("no dns query count in the metrics:\n%s", grepLines(string(body), "cab_peer"))
	}
	for _, name := range []string{"cab_peer_path_rtt_seconds", "cab_peer_path_loss_ratio", "cab_peer_path_queries_per_second"} {
		if !strings.Contains(string(body), name+"{") {
			t.Errorf("no %s in the metrics", name)
		}
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// pcapUDPPayloads reads a tcpdump capture (Ethernet, IPv4, UDP) and
// returns the UDP payloads.
func pcapUDPPayloads(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 {
		t.Fatalf("%s: not a little-endian pcap file", path)
	}
	var out [][]byte
	for b = b[24:]; len(b) >= 16; {
		n := int(binary.LittleEndian.Uint32(b[8:12]))
		if len(b) < 16+n {
			break
		}
		frame := b[16 : 16+n]
		b = b[16+n:]
		if len(frame) < 14+20+8 || binary.BigEndian.Uint16(frame[12:14]) != 0x0800 {
			continue
		}
		ihl := int(frame[14]&0x0f) * 4
		if frame[14+9] != 17 || len(frame) < 14+ihl+8 {
			continue
		}
		out = append(out, append([]byte(nil), frame[14+ihl+8:]...))
	}
	return out
}

// rawQuery packs a TXT query for qname by hand (miekg/dns refuses names
// over 255 octets).
func rawQuery(qname string) []byte {
	b := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range strings.Split(strings.TrimSuffix(qname, "."), ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0, 0, 16, 0, 1)
}

// exchangeRaw sends one raw query over UDP and reads one answer.
func exchangeRaw(server string, q []byte) (*dns.Msg, error) {
	conn, err := net.Dial("udp", server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := conn.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	n, err := conn.Read(buf)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	return m, m.Unpack(buf[:n])
}
