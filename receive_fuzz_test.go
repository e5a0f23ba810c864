package cab

import (
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
		got := c.receiveBatch(rec, []transport.Packet{{B: b, Addr: evil.Addr()}}, &ob, &out, &sc, nil, time.Now().UnixNano())
		if len(got) != 0 {
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
