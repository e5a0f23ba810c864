package dnstun

import (
	"bytes"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func FuzzDecodeName(f *testing.F) {
	n, _ := EncodeName([]byte("hello, world"), testZone)
	f.Add(n)
	f.Add("AbCdEfGh.T.Example.Com.")
	f.Add("t.example.com.")
	f.Add("\\000.t.example.com.")
	f.Fuzz(func(t *testing.T, name string) {
		p, err := DecodeName(name, testZone)
		if err != nil {
			return
		}
		n2, err := EncodeName(p, testZone)
		if err != nil {
			t.Fatalf("%q decodes to %x, which does not encode: %v", name, p, err)
		}
		if p2, err := DecodeName(n2, testZone); err != nil || !bytes.Equal(p, p2) {
			t.Fatalf("re-encoding %q: %x, %v", name, p2, err)
		}
	})
}

func FuzzParseUp(f *testing.F) {
	f.Add(appendUp(nil, &up{sid: 1, seq: 2, acks: []ack{{1, 2}}, frag: &upFrag{id: 3, idx: 0, count: 1, b: []byte{9}}}))
	f.Add(appendUp(nil, &up{open: true}))
	f.Add([]byte{0x47})
	f.Fuzz(func(t *testing.T, b []byte) {
		var u up
		var fr upFrag
		if parseUp(b, &u, &fr) != nil {
			return
		}
		if got := appendUp(nil, &u); !bytes.Equal(got, b) {
			t.Fatalf("%x parses and encodes as %x", b, got)
		}
	})
}

func FuzzParseTXT(f *testing.F) {
	f.Add(appendTXT(nil, appendDownFrag([]byte{flagVersion}, &downFrag{id: 1, idx: 0, count: 1, b: []byte("x")})))
	f.Add([]byte{0})
	f.Add([]byte{3, 1, 2})
	f.Fuzz(func(t *testing.T, rdata []byte) {
		p, err := parseTXT(rdata)
		if err != nil {
			return
		}
		total := 0
		parseDown(p, func(fr downFrag) {
			if fr.idx >= fr.count || len(fr.b) == 0 {
				t.Fatalf("bad fragment %+v", fr)
			}
			total += downFragHdr + len(fr.b)
		})
		if total > len(p) {
			t.Fatalf("fragments of %d bytes in %d", total, len(p))
		}
	})
}

func FuzzReassembly(f *testing.F) {
	f.Add([]byte{0, 0, 2, 'a', 1, 1, 2, 'b'})
	f.Add([]byte{5, 3, 4, 1, 5, 0, 4, 2, 5, 2, 4, 3, 5, 1, 4, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := newReassembler(4, time.Second)
		now := time.Unix(0, 0)
		for len(ops) >= 4 {
			id, idx, count := uint16(ops[0]%8), int(ops[1]), int(ops[2])
			pkt, _ := r.add(id, idx, count, ops[3:4], now)
			if pkt != nil && len(pkt) != count {
				t.Fatalf("packet of %d bytes from %d one-byte fragments", len(pkt), count)
			}
			if len(r.m) > 4 {
				t.Fatalf("%d packets held", len(r.m))
			}
			now = now.Add(time.Duration(ops[3]) * 10 * time.Millisecond)
			ops = ops[4:]
		}
	})
}

// FuzzServer feeds arbitrary messages to the server: it never panics, and
// its answer never exceeds the size the query allows.
func FuzzServer(f *testing.F) {
	q := new(dns.Msg)
	n, _ := EncodeName(appendUp(nil, &up{open: true, sid: 5}), testZone)
	q.SetQuestion(n, dns.TypeTXT)
	q.SetEdns0(600, false)
	b, _ := q.Pack()
	f.Add(b)
	q.SetQuestion("t.example.com.", dns.TypeSOA)
	b, _ = q.Pack()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		s := newServerCore(testZone, discard)
		now := time.Unix(0, 0)
		for i := 0; i < 2; i++ { // twice: the second sees the session the first opened
			req := new(dns.Msg)
			if req.Unpack(b) != nil {
				return
			}
			s.write(5, bytes.Repeat([]byte{1}, 1500), now)
			resp := s.handle(req, now)
			out, err := resp.Pack()
			if err == nil && len(out) > answerSize(req) && len(out) > 512 {
				t.Fatalf("answer of %d bytes to a query allowing %d", len(out), answerSize(req))
			}
		}
	})
}

// FuzzClientAnswer feeds arbitrary messages to the client as answers: it
// never panics, and a message that matches no query in flight changes
// nothing but a counter.
func FuzzClientAnswer(f *testing.F) {
	s := newServerCore(testZone, discard)
	q := txtQuery(&testing.T{}, &up{open: true, sid: 1}, 1232)
	b, _ := s.handle(q, time.Unix(0, 0)).Pack()
	f.Add(b)
	s.write(1, bytes.Repeat([]byte{3}, 900), time.Unix(0, 0))
	q = txtQuery(&testing.T{}, &up{sid: 1, seq: 2}, 1232)
	b, _ = s.handle(q, time.Unix(0, 0)).Pack()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var sent [][]byte
		c := newClientCore(testZone, discard, func(q []byte) error { sent = append(sent, q); return nil })
		now := time.Unix(0, 0)
		c.write([]byte("hello"), now)
		c.step(now)
		// Make the fuzzed message answer the first query in flight, so
		// that its payload is parsed.
		if len(b) >= 2 {
			for id := range c.inflight {
				b[0], b[1] = byte(id>>8), byte(id)
			}
		}
		c.answer(b, now)
		if len(c.rx) > 0 {
			p := <-c.rx
			if len(p.B) == 0 {
				t.Fatal("an empty packet delivered")
			}
		}
	})
}
