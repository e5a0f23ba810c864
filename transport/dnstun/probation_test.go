package dnstun

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var (
	resolverA = netip.MustParseAddr("192.0.2.53")
	resolverB = netip.MustParseAddr("198.51.100.53")
)

// ask packs q and runs it through reply as a UDP query from addr; it
// returns the query's size and the answer (nil: none).
func ask(t *testing.T, s *serverCore, q *dns.Msg, addr netip.Addr, udp bool, now time.Time) (int, []byte) {
	t.Helper()
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return len(b), s.reply(q, len(b), addr, udp, now)
}

func rcodeOf(t *testing.T, b []byte) (*dns.Msg, int) {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	return m, m.Rcode
}

// TestProbationCannotPushOutTunnels: a flood of opens from many sources
// (64 sessions and far more) evicts only sessions on probation, least
// recently active first; a session the cable vouched for keeps working,
// and one on probation that keeps asking survives a slower flood.
func TestProbationCannotPushOutTunnels(t *testing.T) {
	s := newServerCore(testZone, discard)
	now := time.Unix(100, 0)
	s.handle(txtQuery(t, &up{open: true, sid: 1}, 1232), now)
	s.authenticate(1, now)
	s.handle(txtQuery(t, &up{open: true, sid: 2}, 1232), now) // on probation, busy
	for i := range 5000 {
		now = now.Add(time.Millisecond)
		src := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
		q := txtQuery(t, &up{open: true, sid: 1000 + uint32(i)}, 1232)
		ask(t, s, q, src, true, now)
		if i%5 == 0 {
			if r := s.handle(txtQuery(t, &up{sid: 2, seq: uint16(i)}, 1232), now); r.Rcode != dns.RcodeSuccess {
				t.Fatalf("the busy session on probation was evicted after %d opens", i)
			}
		}
		if i%100 == 0 {
			if r := s.handle(txtQuery(t, &up{sid: 1, seq: uint16(i)}, 1232), now); r.Rcode != dns.RcodeSuccess {
				t.Fatalf("the vouched-for session: %s after %d opens", dns.RcodeToString[r.Rcode], i)
			}
		}
	}
	probation := 0
	for _, ss := range s.sessions {
		if !ss.authed {
			probation++
		}
	}
	if probation > maxProbation || !s.sessions[1].authed {
		t.Fatalf("%d sessions on probation (limit %d); vouched-for session %+v", probation, maxProbation, s.sessions[1])
	}
	if s.stats.evicted == 0 {
		t.Error("no eviction counted")
	}
	// Graduation needs the cable: a session that merely asks stays on
	// probation.
	if s.sessions[2].authed {
		t.Fatal("a session graduated without the cable")
	}
	s.authenticate(2, now)
	if !s.sessions[2].authed {
		t.Fatal("a session the cable vouched for stayed on probation")
	}
}

// TestRepliesNoLargerThanQueries: over UDP, every answer that is not a
// tunnel answer to a vouched-for session is no larger than its query.
func TestRepliesNoLargerThanQueries(t *testing.T) {
	s := newServerCore(testZone, discard)
	now := time.Unix(100, 0)
	q := func(name string, qtype uint16, edns bool) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		if edns {
			m.SetEdns0(4096, false)
		}
		return m
	}
	open := txtQuery(t, &up{open: true, sid: 5}, 1232)
	s.handle(open, now)
	s.write(5, bytes.Repeat([]byte{7}, 1000), now)
	for name, m := range map[string]*dns.Msg{
		"apex SOA":      q(testZone, dns.TypeSOA, false),
		"apex SOA edns": q(testZone, dns.TypeSOA, true),
		"apex TXT":      q(testZone, dns.TypeTXT, true),
		"apex NS":       q(testZone, dns.TypeNS, false),
		"apex ANY":      q(testZone, dns.TypeANY, true),
		"nxdomain":      q("a."+testZone, dns.TypeTXT, true),
		"short nx":      q("a."+testZone, dns.TypeA, false),
		"probe":         q(open.Question[0].Name, dns.TypeA, false),
		"refused":       q("example.org.", dns.TypeTXT, false),
		"probation":     txtQuery(t, &up{sid: 5, seq: 1}, 1232),
		"open":          txtQuery(t, &up{open: true, sid: 6}, 1232),
		"open no edns":  txtQuery(t, &up{open: true, sid: 7}, 0),
	} {
		n, b := ask(t, s, m, resolverA, true, now)
		if len(b) > n {
			t.Errorf("%s: %d bytes for a query of %d", name, len(b), n)
		}
		if b == nil {
			t.Errorf("%s: no answer at all", name)
		}
		// Over TCP the full answer.
		if _, b := ask(t, s, m, resolverA, false, now); b == nil {
			t.Errorf("%s: no answer over TCP", name)
		}
	}
	// A vouched-for session gets its data, larger than the query.
	s.authenticate(5, now)
	s.write(5, bytes.Repeat([]byte{8}, 1000), now)
	n, b := ask(t, s, txtQuery(t, &up{sid: 5, seq: 2}, 1232), resolverA, true, now)
	if len(b) < n+500 {
		t.Fatalf("a vouched-for session got %d bytes for a query of %d, with 1000 bytes queued", len(b), n)
	}
}

// TestRRL: answers to strangers from one source network are limited to
// the burst, then every second one is truncated and the others dropped;
// another network, and one that carries a working tunnel, are not held
// back by it.
func TestRRL(t *testing.T) {
	s := newServerCore(testZone, discard)
	now := time.Unix(100, 0)
	full, tc, none := 0, 0, 0
	for i := range 200 {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn("x"+string(rune('a'+i%26))+"."+testZone), dns.TypeTXT)
		_, b := ask(t, s, m, resolverA, true, now)
		switch {
		case b == nil:
			none++
		default:
			if r, _ := rcodeOf(t, b); r.Truncated {
				tc++
			} else {
				full++
			}
		}
	}
	if full != rrlBurst || tc != (200-rrlBurst)/2 || none != (200-rrlBurst)/2 {
		t.Fatalf("200 NXDOMAIN at once: %d answered, %d truncated, %d dropped; want %d, %d, %d",
			full, tc, none, rrlBurst, (200-rrlBurst)/2, (200-rrlBurst)/2)
	}
	if s.stats.rrlDropped == 0 || s.stats.rrlSlipped == 0 {
		t.Errorf("stats %+v", s.stats)
	}
	m := new(dns.Msg)
	m.SetQuestion("y."+testZone, dns.TypeTXT)
	if _, b := ask(t, s, m, resolverB, true, now); b == nil {
		t.Fatal("another network was limited by the first")
	}
	// A network that carries a vouched-for session's queries.
	s.handle(txtQuery(t, &up{open: true, sid: 9}, 1232), now)
	s.authenticate(9, now)
	ask(t, s, txtQuery(t, &up{sid: 9, seq: 1}, 1232), resolverA, true, now)
	for i := range 100 {
		m := new(dns.Msg)
		m.SetQuestion("z."+testZone, dns.TypeA)
		if _, b := ask(t, s, m, resolverA, true, now); b == nil {
			t.Fatalf("probe %d of a resolver that carries a working tunnel dropped", i)
		}
	}
	// Later, the bucket refills.
	now = now.Add(2 * time.Second)
	s2 := newServerCore(testZone, discard)
	for range rrlBurst {
		ask(t, s2, m, resolverB, true, now)
	}
	if _, b := ask(t, s2, m, resolverB, true, now.Add(time.Second)); b == nil {
		t.Fatal("no answer a second after the burst")
	}
}

// TestCacheReplaysOnlyToTheAsker: a resolver's retry gets the cached
// tunnel answer again; the same name asked from elsewhere over UDP gets
// nothing larger than the query; over TCP (the asker's address proven)
// it gets the answer.
func TestCacheReplaysOnlyToTheAsker(t *testing.T) {
	s := newServerCore(testZone, discard)
	now := time.Unix(100, 0)
	s.handle(txtQuery(t, &up{open: true, sid: 3}, 1232), now)
	s.authenticate(3, now)
	s.write(3, bytes.Repeat([]byte{1}, 600), now)
	q := txtQuery(t, &up{sid: 3, seq: 5, nonce: 6}, 1232)
	n, first := ask(t, s, q, resolverA, true, now)
	if len(first) < 600 {
		t.Fatalf("answer of %d bytes does not carry the queued packet", len(first))
	}
	if _, again := ask(t, s, q, resolverA, true, now); !bytes.Equal(again, first) {
		t.Error("the resolver's retry got another answer")
	}
	if _, other := ask(t, s, q, resolverB, true, now); len(other) > n {
		t.Errorf("a replay from another network got %d bytes for a query of %d", len(other), n)
	}
	if _, tcp := ask(t, s, q, resolverB, false, now); len(tcp) < 600 {
		t.Errorf("a retry over TCP got %d bytes", len(tcp))
	}
}

// TestProbationKeepsAnsweredSessions: a session on probation that the
// cable answered (a client in the middle of its handshake) gives way
// only after every one it never answered, however idle.
func TestProbationKeepsAnsweredSessions(t *testing.T) {
	s := newServerCore(testZone, discard)
	now := time.Unix(100, 0)
	s.handle(txtQuery(t, &up{open: true, sid: 3}, 1232), now)
	s.write(3, []byte("a handshake response"), now)
	for i := range 1000 {
		now = now.Add(time.Millisecond)
		s.handle(txtQuery(t, &up{open: true, sid: 100 + uint32(i)}, 1232), now)
	}
	if s.sessions[3] == nil {
		t.Fatal("the answered session on probation gave way to sessions never answered")
	}
	if s.stats.evicted == 0 {
		t.Fatal("nothing evicted")
	}
}

// TestTCPLimits: the server's DNS-over-TCP listener keeps at most
// tcpPerIP connections from one address, refuses and counts the rest, and
// gives a place back when a connection closes.
func TestTCPLimits(t *testing.T) {
	s, err := Listen("127.0.0.1:0", testZone, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := s.LocalAddr().String()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range tcpPerIP + 5 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if !waitUntil(5*time.Second, func() bool { return s.DropCounts()["tcp_refused"] == 5 }) {
		t.Fatalf("tcp_refused = %d, want 5", s.DropCounts()["tcp_refused"])
	}
	// One closes; a new one gets its place and an answer.
	conns[0].Close()
	time.Sleep(100 * time.Millisecond)
	m := new(dns.Msg)
	m.SetQuestion(testZone, dns.TypeSOA)
	if !waitUntil(5*time.Second, func() bool {
		r, _, err := (&dns.Client{Net: "tcp", Timeout: time.Second}).Exchange(m, addr)
		return err == nil && r.Rcode == dns.RcodeSuccess
	}) {
		t.Fatal("no answer over TCP after a connection gave its place back")
	}
}

func waitUntil(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
