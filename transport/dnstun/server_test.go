package dnstun

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func txtQuery(t *testing.T, u *up, edns int) *dns.Msg {
	t.Helper()
	name, err := EncodeName(appendUp(nil, u), testZone)
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeTXT)
	if edns > 0 {
		m.SetEdns0(uint16(edns), false)
	}
	return m
}

// TestAnswerSize: with plenty queued, every answer is as full as the
// query allows and never larger: 512 without EDNS0, the advertised size
// with it, at most EDNSSize.
func TestAnswerSize(t *testing.T) {
	s := newServerCore(testZone, discard)
	now := time.Unix(100, 0)
	if r := s.handle(txtQuery(t, &up{open: true, sid: 1}, 1232), now); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("open: %s", dns.RcodeToString[r.Rcode])
	}
	for i := 0; i < 50; i++ {
		s.write(1, bytes.Repeat([]byte{byte(i)}, 1500), now)
	}
	long := &upFrag{id: 1, idx: 0, count: 2, b: make([]byte, NameCapacity(testZone)-upHeaderLen-upFragHdrLen)}
	for i, edns := range []int{0, 512, 700, 1232, 4096} {
		for _, f := range []*upFrag{nil, long} {
			q := txtQuery(t, &up{sid: 1, seq: uint16(2*i + 1), frag: f}, edns)
			if f != nil {
				q.Question[0].Name = randomCase(rand.New(rand.NewPCG(1, 1)), q.Question[0].Name)
			}
			r := s.handle(q, now)
			b, err := r.Pack()
			if err != nil {
				t.Fatal(err)
			}
			limit := 512
			if edns > 0 {
				limit = min(max(edns, 512), EDNSSize)
			}
			if len(b) > limit || len(b) < limit-downFragSize-downFragHdr-4 {
				t.Errorf("edns %d, qname %d: answer of %d bytes, want at most %d and nearly full", edns, len(q.Question[0].Name), len(b), limit)
			}
			if r.Question[0].Name != q.Question[0].Name {
				t.Errorf("question not echoed as asked: %q", r.Question[0].Name)
			}
		}
	}
}

// TestServerBounded: floods of opens with random session ids, of queries
// for unknown sessions, and of fragments of packets that never complete
// leave the server with bounded state; a session the cable vouched for
// survives the open flood, which only evicts sessions on probation.
func TestServerBounded(t *testing.T) {
	s := newServerCore(testZone, discard)
	now := time.Unix(100, 0)
	s.handle(txtQuery(t, &up{open: true, sid: 42}, 1232), now)
	s.authenticate(42, now)
	r := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 10000; i++ {
		now = now.Add(time.Millisecond)
		if i%500 == 0 { // the live client polls
			if resp := s.handle(txtQuery(t, &up{sid: 42, seq: uint16(i)}, 1232), now); resp.Rcode != dns.RcodeSuccess {
				t.Fatalf("live session: %s after %d opens", dns.RcodeToString[resp.Rcode], i)
			}
		}
		s.handle(txtQuery(t, &up{open: true, sid: r.Uint32()}, 1232), now)
		if resp := s.handle(txtQuery(t, &up{sid: r.Uint32(), seq: 1}, 1232), now); resp.Rcode != dns.RcodeNameError {
			t.Fatalf("unknown session: %s, want NXDOMAIN", dns.RcodeToString[resp.Rcode])
		}
		f := &upFrag{id: uint16(r.Uint32()), idx: 0, count: 5, b: []byte("x")}
		s.handle(txtQuery(t, &up{sid: 42, seq: uint16(r.Uint32()), nonce: uint16(i), frag: f}, 1232), now)
	}
	if n := len(s.sessions); n > maxProbation+1 {
		t.Errorf("%d sessions, limit %d on probation and the vouched-for one", n, maxProbation)
	}
	if s.sessions[42] == nil {
		t.Fatal("the live session was evicted by the flood")
	}
	if n := len(s.sessions[42].reasm.m); n > reasmPerSession {
		t.Errorf("%d packets in reassembly, limit %d", n, reasmPerSession)
	}
	if s.stats.evicted < 10000-maxProbation {
		t.Errorf("%d sessions on probation evicted by 10000 opens", s.stats.evicted)
	}
	if resp := s.handle(txtQuery(t, &up{open: true, sid: 7}, 1232), now); resp.Rcode != dns.RcodeSuccess {
		t.Errorf("open after the flood: %s", dns.RcodeToString[resp.Rcode])
	}
}

// TestDuplicateQuery: a resolver's retry of a query gets the same answer.
func TestDuplicateQuery(t *testing.T) {
	s := newServerCore(testZone, discard)
	now := time.Unix(100, 0)
	s.handle(txtQuery(t, &up{open: true, sid: 3}, 1232), now)
	s.write(3, bytes.Repeat([]byte{1}, 300), now)
	q := txtQuery(t, &up{sid: 3, seq: 5, nonce: 6}, 1232)
	a, _ := s.handle(q, now).Pack()
	s.write(3, bytes.Repeat([]byte{2}, 300), now)
	b, _ := s.handle(q, now.Add(time.Millisecond)).Pack()
	if !bytes.Equal(a, b) {
		t.Error("a repeated query got a different answer")
	}
	if len(a) < 300 {
		t.Errorf("answer of %d bytes does not carry the queued packet", len(a))
	}
}

// TestMinimisedNames: QNAME-minimised probes (type A, a part of the name)
// get NXDOMAIN, the apex answers SOA and NS, and names outside the zone
// are refused.
func TestMinimisedNames(t *testing.T) {
	s := newServerCore(testZone, discard)
	now := time.Unix(100, 0)
	q := txtQuery(t, &up{open: true, sid: 3}, 1232)
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{q.Question[0].Name, dns.TypeA, dns.RcodeNameError},
		{"abcdefgh." + testZone, dns.TypeA, dns.RcodeNameError},
		{"T.Example.Com.", dns.TypeSOA, dns.RcodeSuccess},
		{testZone, dns.TypeNS, dns.RcodeSuccess},
		{"example.org.", dns.TypeTXT, dns.RcodeRefused},
	} {
		m := new(dns.Msg)
		m.SetQuestion(c.name, c.qtype)
		if r := s.handle(m, now); r.Rcode != c.rcode {
			t.Errorf("%s %s: %s, want %s", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
		}
	}
	if len(s.sessions) != 0 {
		t.Error("a type A query opened a session")
	}
}

// TestSessionExpiry: a session idle for sessionIdle is forgotten; its
// client's next query gets NXDOMAIN (and the client opens it again).
func TestSessionExpiry(t *testing.T) {
	s := newServerCore(testZone, discard)
	now := time.Unix(100, 0)
	s.handle(txtQuery(t, &up{open: true, sid: 8}, 1232), now)
	s.handle(txtQuery(t, &up{open: true, sid: 9}, 1232), now)
	s.authenticate(8, now)
	s.expire(now.Add(probationIdle))
	if s.sessions[9] != nil {
		t.Fatal("a session on probation kept past probationIdle")
	}
	s.expire(now.Add(sessionIdle - time.Second))
	if s.sessions[8] == nil {
		t.Fatal("a session forgotten before it was idle long enough")
	}
	s.expire(now.Add(sessionIdle))
	if s.sessions[8] != nil {
		t.Fatal("an idle session kept")
	}
	if r := s.handle(txtQuery(t, &up{sid: 8, seq: 2}, 1232), now.Add(sessionIdle)); r.Rcode != dns.RcodeNameError {
		t.Errorf("query of a forgotten session: %s", dns.RcodeToString[r.Rcode])
	}
}

// TestNoData: with nodata, every non-TXT name under the zone gets NOERROR
// with no answer (even a part of a name that does not decode alone), and
// TXT queries work as before.
func TestNoData(t *testing.T) {
	s := newServerCore(testZone, discard)
	s.nodata = true
	now := time.Unix(100, 0)
	q := txtQuery(t, &up{open: true, sid: 3}, 1232)
	labels := dns.SplitDomainName(q.Question[0].Name)
	for _, name := range []string{labels[len(labels)-4] + "." + testZone, "abc." + testZone, q.Question[0].Name} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		if r := s.handle(m, now); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("%s A: %s with %d answers, want NODATA", name, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
	if r := s.handle(q, now); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("open: %s", dns.RcodeToString[r.Rcode])
	}
	m := new(dns.Msg)
	m.SetQuestion("abc."+testZone, dns.TypeTXT)
	if r := s.handle(m, now); r.Rcode != dns.RcodeNameError {
		t.Errorf("undecodable TXT: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}
