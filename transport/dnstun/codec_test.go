package dnstun

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode"
)

const testZone = "t.example.com."

// randomCase flips letter case at random, as a resolver with 0x20 does.
func randomCase(r *rand.Rand, s string) string {
	b := []rune(s)
	for i, c := range b {
		if r.IntN(2) == 0 {
			b[i] = unicode.ToUpper(c)
		}
	}
	return string(b)
}

func TestNameRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	capacity := NameCapacity(testZone)
	if capacity < 140 || capacity > 160 {
		t.Fatalf("capacity under %s = %d, want about 147", testZone, capacity)
	}
	for n := 0; n <= capacity; n++ {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		name, err := EncodeName(p, testZone)
		if n == 0 {
			if err == nil {
				if _, err := DecodeName(name, testZone); err == nil {
					t.Fatalf("empty payload %q decodes", name)
				}
			}
			continue
		}
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if len(name)-1 > maxName {
			t.Fatalf("%d bytes: name of %d characters", n, len(name)-1)
		}
		for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
			if len(l) > maxLabel || l != strings.ToLower(l) {
				t.Fatalf("%d bytes: label %q", n, l)
			}
		}
		got, err := DecodeName(randomCase(r, name), testZone)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("%d bytes: decode %x, %v; want %x", n, got, err, p)
		}
	}
	if _, err := EncodeName(make([]byte, capacity+1), testZone); err == nil {
		t.Errorf("%d bytes fit a name", capacity+1)
	}
}

func TestDecodeNameRejects(t *testing.T) {
	for _, name := range []string{
		"t.example.com.", "example.com.", "xt.example.com.", "abc.example.org.",
		"a!b.t.example.com.", "0189.t.example.com.", "a.t.example.com.", // 1 char is no whole byte
		strings.Repeat("a", 64) + ".t.example.com.", "..t.example.com.",
	} {
		if p, err := DecodeName(name, testZone); err == nil {
			t.Errorf("%q decodes to %x", name, p)
		}
	}
}

func TestCanonicalZone(t *testing.T) {
	if z, err := CanonicalZone("T.Example.COM"); err != nil || z != testZone {
		t.Errorf("CanonicalZone = %q, %v", z, err)
	}
	for _, z := range []string{"", ".", "a..b", "a b.c", strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 120) + "com"} {
		if _, err := CanonicalZone(z); err == nil {
			t.Errorf("zone %q accepted", z)
		}
	}
}

func TestUpRoundTrip(t *testing.T) {
	for _, u := range []up{
		{sid: 1, seq: 2, nonce: 3},
		{open: true, sid: 0xdeadbeef, seq: 65535},
		{sid: 7, acks: []ack{{1, 3}, {65535, 0xffff}}, frag: &upFrag{id: 9, idx: 2, count: 3, b: []byte("hello")}},
		{sid: 7, acks: make([]ack, maxAcks)},
	} {
		b := appendUp(nil, &u)
		var got up
		var fr upFrag
		if err := parseUp(b, &got, &fr); err != nil {
			t.Fatalf("%+v: %v", u, err)
		}
		if got.open != u.open || got.sid != u.sid || got.seq != u.seq || got.nonce != u.nonce || len(got.acks) != len(u.acks) || (got.frag == nil) != (u.frag == nil) {
			t.Fatalf("got %+v, want %+v", got, u)
		}
		if u.frag != nil && (got.frag.id != u.frag.id || got.frag.idx != u.frag.idx || got.frag.count != u.frag.count || !bytes.Equal(got.frag.b, u.frag.b)) {
			t.Fatalf("frag %+v, want %+v", got.frag, u.frag)
		}
	}
	var u up
	var fr upFrag
	for _, b := range [][]byte{nil, {0x40}, {0x80, 0, 0, 0, 0, 0, 0, 0, 0}, {0x41, 0, 0, 0, 0, 0, 0, 0, 0}, {0x40, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, {0x40, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 3, 9}} {
		if parseUp(b, &u, &fr) == nil {
			t.Errorf("%x parses", b)
		}
	}
}

func TestDownRoundTrip(t *testing.T) {
	frags := []downFrag{{id: 1, idx: 0, count: 2, b: []byte("ab")}, {id: 1, idx: 1, count: 2, b: bytes.Repeat([]byte{7}, 300)}, {id: 65535, idx: 15, count: 16, b: []byte{0}}}
	b := []byte{flagVersion | flagMore}
	for i := range frags {
		b = appendDownFrag(b, &frags[i])
	}
	txt := appendTXT(nil, b)
	if len(txt) != txtLen(len(b)) {
		t.Fatalf("txtLen %d, rdata %d", txtLen(len(b)), len(txt))
	}
	p, err := parseTXT(txt)
	if err != nil || !bytes.Equal(p, b) {
		t.Fatalf("parseTXT: %v", err)
	}
	var got []downFrag
	more, err := parseDown(p, func(f downFrag) { got = append(got, f) })
	if err != nil || !more || len(got) != len(frags) {
		t.Fatalf("parseDown: %v, more %v, %d frags", err, more, len(got))
	}
	for i := range got {
		if got[i].id != frags[i].id || got[i].idx != frags[i].idx || !bytes.Equal(got[i].b, frags[i].b) {
			t.Errorf("frag %d: %+v", i, got[i])
		}
	}
	// A truncated payload calls frag for nothing.
	n := 0
	if _, err := parseDown(p[:len(p)-1], func(downFrag) { n++ }); err == nil || n != 0 {
		t.Errorf("truncated payload: err %v, %d frags", err, n)
	}
}

func TestReassembly(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newReassembler(4, time.Second)
	pkt := bytes.Repeat([]byte("0123456789"), 30)
	parts := split(pkt, 37)
	order := rand.New(rand.NewPCG(3, 4)).Perm(len(parts))
	var got []byte
	for i, j := range order {
		out, dup := r.add(5, j, len(parts), parts[j], now)
		if dup {
			t.Fatalf("fragment %d a dup", j)
		}
		if i < len(order)-1 && out != nil {
			t.Fatalf("complete after %d of %d", i+1, len(parts))
		}
		got = out
		if i == 2 {
			if _, dup := r.add(5, j, len(parts), parts[j], now); !dup {
				t.Fatal("second copy not a dup")
			}
		}
	}
	if !bytes.Equal(got, pkt) {
		t.Fatalf("reassembled %q", got)
	}
	if out, dup := r.add(5, 0, len(parts), parts[0], now); out != nil || !dup {
		t.Fatal("a late copy of a completed packet made a new one")
	}
	// The table is bounded, and stale entries go.
	for id := uint16(100); id < 200; id++ {
		r.add(id, 0, 2, []byte{1}, now)
	}
	if len(r.m) > 4 {
		t.Fatalf("%d packets in reassembly, limit 4", len(r.m))
	}
	r.expire(now.Add(2 * time.Second))
	if len(r.m) != 0 || len(r.done) != 0 {
		t.Fatalf("after the timeout: %d in reassembly, %d done", len(r.m), len(r.done))
	}
	if r.dropped == 0 {
		t.Error("no drops counted")
	}
}

// TestOpenNeedsMagic: only the exact open payload opens a session, so
// random names do not.
func TestOpenNeedsMagic(t *testing.T) {
	b := appendUp(nil, &up{open: true, sid: 9})
	var u up
	var fr upFrag
	if err := parseUp(b, &u, &fr); err != nil || !u.open || u.sid != 9 {
		t.Fatalf("open: %+v, %v", u, err)
	}
	for _, bad := range [][]byte{b[:len(b)-1], append(append([]byte(nil), b...), 0), append(b[:len(b)-1:len(b)-1], b[len(b)-1]^1)} {
		if parseUp(bad, &u, &fr) == nil {
			t.Errorf("%x opens a session", bad)
		}
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 20000; i++ {
		p := make([]byte, 9+r.IntN(100))
		for j := range p {
			p[j] = byte(r.Uint32())
		}
		p[0] = 0x48 // version and open: the rest random
		if parseUp(p, &u, &fr) == nil {
			t.Fatalf("random %x opens a session", p)
		}
	}
}
