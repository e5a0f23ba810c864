package cab

import (
	"bytes"
	"testing"
	"time"

	"cab/bridgeif/bridgeiftest"
	"cab/crypto"
	"cab/transport"
	"cab/transport/transporttest"
)

// FuzzReceive feeds arbitrary datagrams to a server cable's receive path:
// it never panics, never delivers a frame, and never answers with more
// bytes than it was sent.
func FuzzReceive(f *testing.F) {
	skey, ckey := mustKey(f), mustKey(f)
	init, _ := func() ([]byte, error) {
		_, m, err := crypto.NewInitiator(ckey, skey.Public(), psk(7), 1234, crypto.LocalCiphers(), time.Now())
		return m, err
	}()
	f.Add(init)
	f.Add([]byte{crypto.TypeData, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{crypto.TypeResponse, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{})

	n := transporttest.NewNetwork(transporttest.Options{})
	sconn := n.Conn("server")
	evil := n.Conn("evil")
	port := bridgeiftest.NewPort(16)
	c, err := New(Config{PrivateKey: skey, PSK: psk(7), Responder: true, AllowAny: true, Logger: quiet}, port, []transport.Conn{sconn})
	if err != nil {
		f.Fatal(err)
	}
	rec := &recordingConn{Conn: sconn}
	buf := make([]byte, bufSize)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) > bufSize {
			return
		}
		out := c.newOutBatch()
		var sc scratch
		var ob cryptoBatch
		rec.sizes = rec.sizes[:0]
		b := buf[:copy(buf, pkt)]
		var del deliveries
		c.receiveBatch(rec, []transport.Packet{{B: b, Addr: evil.Addr()}}, nil, &ob, &out, &sc, &del, time.Now().UnixNano())
		if got := del.all(); len(got) != 0 {
			t.Fatalf("delivered a frame from %d random bytes", len(pkt))
		}
		if len(out.cb.seals) != 0 || len(out.conns) != 0 {
			t.Fatal("relayed a frame from random bytes")
		}
		for _, n := range rec.sizes {
			if n > len(pkt) {
				t.Fatalf("answered %d bytes with %d", len(pkt), n)
			}
		}
	})
}

// recordingConn records the sizes of the packets written through it.
type recordingConn struct {
	transport.Conn
	sizes []int
}

func (r *recordingConn) WriteBatch(ps []transport.Packet) error {
	for _, p := range ps {
		r.sizes = append(r.sizes, len(p.B))
	}
	return r.Conn.WriteBatch(ps)
}

// recordingPackets keeps copies of the packets written through it.
type recordingPackets struct {
	transport.Conn
	pkts [][]byte
}

func (r *recordingPackets) WriteBatch(ps []transport.Packet) error {
	for _, p := range ps {
		r.pkts = append(r.pkts, append([]byte(nil), p.B...))
	}
	return nil
}

// FuzzReceiveLive feeds a server cable that has a live session with a
// client packets the real client sealed, changed by the fuzzer. The
// header's receiver index is kept (the fuzzer's changes are fixed up there)
// so every packet reaches Open with the live session's keys: the cable
// delivers a frame only when the packet is unchanged, and then exactly the
// frame the client sealed.
func FuzzReceiveLive(f *testing.F) {
	skey, ckey := mustKey(f), mustKey(f)
	n := transporttest.NewNetwork(transporttest.Options{})
	sconn := n.Conn("server")
	from := n.Conn("client").Addr()
	c, err := New(Config{PrivateKey: skey, PSK: psk(7), Responder: true, AllowAny: true, Logger: quiet}, bridgeiftest.NewPort(16), []transport.Conn{sconn})
	if err != nil {
		f.Fatal(err)
	}
	rec := &recordingPackets{Conn: sconn}
	receive := func(pkt []byte) [][]byte {
		out := c.newOutBatch()
		var sc scratch
		var ob cryptoBatch
		var del deliveries
		c.receiveBatch(rec, []transport.Packet{{B: pkt, Addr: from}}, nil, &ob, &out, &sc, &del, time.Now().UnixNano())
		return del.all()
	}
	// The handshake, and a keepalive that confirms the session.
	h, msg1, err := crypto.NewInitiator(ckey, skey.Public(), psk(7), 99, crypto.LocalCiphers(), time.Now())
	if err != nil {
		f.Fatal(err)
	}
	receive(msg1)
	if len(rec.pkts) != 1 {
		f.Fatalf("no handshake response (%d packets)", len(rec.pkts))
	}
	cs, err := h.Consume(rec.pkts[0])
	if err != nil {
		f.Fatal(err)
	}
	ka, err := cs.Seal(make([]byte, crypto.Overhead), 0)
	if err != nil {
		f.Fatal(err)
	}
	receive(ka)
	if p := c.peerList(); len(p) != 1 || p[0].hs.cur.Load() == nil {
		f.Fatal("the session is not live")
	}

	f.Add([]byte{}, uint16(0))
	f.Add([]byte{1}, uint16(20))
	f.Add([]byte{0x80}, uint16(40))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(0)) // the counter
	f.Add([]byte{crypto.TypeFragment ^ crypto.TypeData}, uint16(0))
	f.Add([]byte{crypto.TypeProbe ^ crypto.TypeData}, uint16(0))
	f.Add([]byte{0xff, 0xff}, uint16(1000))
	var seq uint32
	f.Fuzz(func(t *testing.T, xor []byte, at uint16) {
		seq++
		frame := testFrame(0xee, 0x10, seq, 60+int(at%1300))
		buf := make([]byte, crypto.HeaderLen+len(frame)+crypto.TagLen)
		copy(buf[crypto.HeaderLen:], frame)
		pkt, err := cs.Seal(buf, len(frame))
		if err != nil {
			t.Skip("session used up")
		}
		orig := append([]byte(nil), pkt...)
		start := int(at) % len(pkt)
		for i, x := range xor {
			if start+i < len(pkt) {
				pkt[start+i] ^= x
			}
		}
		copy(pkt[4:8], orig[4:8]) // the receiver index: reach the live session
		changed := !bytes.Equal(pkt, orig)
		got := receive(pkt)
		switch {
		case changed && len(got) != 0:
			t.Fatalf("delivered a frame from a forged packet (% x at %d)", xor, start)
		case !changed && len(got) != 1:
			t.Fatalf("the client's own packet delivered %d frames, want 1", len(got))
		case !changed && !bytes.Equal(got[0][crypto.HeaderLen:crypto.HeaderLen+len(frame)], frame):
			t.Fatal("delivered a frame other than the one sealed")
		}
	})
}

// all returns every buffer queued, whatever its segment.
func (d *deliveries) all() [][]byte {
	var all [][]byte
	for _, b := range d.bufs {
		all = append(all, b...)
	}
	return all
}
