package dnstun

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"cab/transport/transporttest"

	"github.com/miekg/dns"

	"cab/transport"
)

func readOne(t *testing.T, c transport.Conn, timeout time.Duration) transport.Packet {
	t.Helper()
	got := make(chan transport.Packet, 1)
	go func() {
		ps := []transport.Packet{{B: make([]byte, 0, 2048)}}
		if n, err := c.ReadBatch(ps); err == nil && n == 1 {
			got <- ps[0]
		}
	}()
	select {
	case p := <-got:
		return p
	case <-time.After(timeout):
		t.Fatalf("no packet within %v", timeout)
		return transport.Packet{}
	}
}

// TestConnLoopback: a Server and a Client on loopback UDP (the client's
// "resolver" is the server itself) carry full-size packets both ways; the
// server answers over TCP too; oversized packets are refused; Close ends
// reads.
func TestConnLoopback(t *testing.T) {
	transporttest.CheckLeaks(t)
	s, err := Listen("127.0.0.1:0", "T.Example.Com", discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := Dial("t.example.com", s.LocalAddr().String(), discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Scheme() != "dns" || s.Scheme() != "dns" || c.MaxPacket() < 1546 || c.PathMTU(c.Remote()) != c.MaxPacket() {
		t.Fatalf("scheme %q %q, max %d", c.Scheme(), s.Scheme(), c.MaxPacket())
	}
	up := bytes.Repeat([]byte("u"), MaxPacket)
	if err := c.WriteBatch([]transport.Packet{{B: up, Addr: c.Remote()}}); err != nil {
		t.Fatal(err)
	}
	p := readOne(t, s, 5*time.Second)
	if !bytes.Equal(p.B, up) {
		t.Fatalf("server got %d bytes", len(p.B))
	}
	from := p.Addr
	if _, ok := from.(ClientAddr); !ok {
		t.Fatalf("server's addr %T", from)
	}
	down := bytes.Repeat([]byte("d"), 1546)
	if err := s.WriteBatch([]transport.Packet{{B: down, Addr: from}}); err != nil {
		t.Fatal(err)
	}
	if p := readOne(t, c, 5*time.Second); !bytes.Equal(p.B, down) || p.Addr != c.Remote() {
		t.Fatalf("client got %d bytes from %v", len(p.B), p.Addr)
	}
	// On probation (nothing vouched for the session) every answer came
	// truncated over UDP, and the client asked again over TCP.
	if s.DropCounts()["truncated"] == 0 {
		t.Error("answers to a session on probation were not truncated over UDP")
	}
	// Vouched for, the session gets its answers over UDP.
	s.Authenticated(from)
	time.Sleep(200 * time.Millisecond) // answers to queries before the vouching
	truncated := s.DropCounts()["truncated"]
	if err := s.WriteBatch([]transport.Packet{{B: down, Addr: from}}); err != nil {
		t.Fatal(err)
	}
	if p := readOne(t, c, 5*time.Second); !bytes.Equal(p.B, down) {
		t.Fatalf("client got %d bytes", len(p.B))
	}
	if got := s.DropCounts()["truncated"]; got != truncated {
		t.Errorf("%d answers truncated for a vouched-for session", got-truncated)
	}
	if st, ok := c.PathStats(c.Remote()); !ok || st.Queries == 0 || st.RTT <= 0 {
		t.Errorf("client stats %+v %v", st, ok)
	}
	if st, ok := s.PathStats(from); !ok || st.Queries == 0 {
		t.Errorf("server stats %+v %v", st, ok)
	}
	var tooBig *transport.TooBigError
	if err := c.WriteBatch([]transport.Packet{{B: make([]byte, MaxPacket+1), Addr: c.Remote()}}); !errors.As(err, &tooBig) {
		t.Errorf("oversized write: %v", err)
	}
	// TCP: the apex SOA.
	m := new(dns.Msg)
	m.SetQuestion("t.example.com.", dns.TypeSOA)
	tc := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	r, _, err := tc.Exchange(m, s.LocalAddr().String())
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || !r.Authoritative {
		t.Errorf("SOA over TCP: %v %v", r, err)
	}
	// A name under the zone that does not decode: NXDOMAIN, and counted
	// where cab status shows it.
	before := s.DropCounts()["nxdomain"]
	m = new(dns.Msg)
	m.SetQuestion("not-base32!.t.example.com.", dns.TypeTXT)
	uc := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	if r, _, err := uc.Exchange(m, s.LocalAddr().String()); err != nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("undecodable name: %v %v", r, err)
	}
	if got := s.DropCounts()["nxdomain"]; got != before+1 {
		t.Errorf("server counted %d NXDOMAIN answers, want %d", got, before+1)
	}
	if dc := c.DropCounts(); len(dc) != 3 || dc["bad_answers"] != 0 {
		t.Errorf("client drop counts %v", dc)
	}
	c.Close()
	if _, err := c.ReadBatch(make([]transport.Packet, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
	if err := c.WriteBatch([]transport.Packet{{B: up[:10], Addr: c.Remote()}}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
	s.Close()
	if _, err := s.ReadBatch(make([]transport.Packet, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("server read after close: %v", err)
	}
}

func TestResolverAddr(t *testing.T) {
	for in, want := range map[string]string{"192.0.2.1": "192.0.2.1:53", "192.0.2.1:5353": "192.0.2.1:5353", "2001:db8::1": "[2001:db8::1]:53", "[2001:db8::1]:54": "[2001:db8::1]:54",
		"tls://192.0.2.1": "tls://192.0.2.1:853", "tls://dns.example:8853": "tls://dns.example:8853", "https://dns.example": "https://dns.example/dns-query", "https://dns.example:8443/q": "https://dns.example:8443/q"} {
		if got, err := ResolverAddr(in); err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"quic://192.0.2.1", "tls://", "https://", ":53"} {
		if got, err := ResolverAddr(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}

func TestDialLongZone(t *testing.T) {
	zone := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + ".example"
	if _, err := Dial(zone, "127.0.0.1:53", discard); err == nil || !strings.Contains(err.Error(), "shorter zone") {
		t.Errorf("a %d-character zone: %v", len(zone), err)
	}
	c, err := Dial(strings.Repeat("a", 60)+"."+strings.Repeat("b", 60)+".example", "127.0.0.1:53", discard)
	if err != nil {
		t.Fatalf("a 128-character zone: %v", err)
	}
	if n := (MaxPacket + c.core.fragSize - 1) / c.core.fragSize; n > 64 {
		t.Errorf("%d fragments per packet", n)
	}
	c.Close()
}
