package cab

import (
	"bytes"
	"encoding/binary"
	"testing"
	"testing/synctest"
	"time"

	"cab/transport"
	"cab/transport/transporttest"
)

// TestCableFragments: frames too big for the path travel in fragments,
// each sealed on its own, and arrive whole.
func TestCableFragments(t *testing.T) {
	n := transporttest.NewNetwork(transporttest.Options{MaxPacket: 600, Reorder: 0.2, Duplicate: 0.1, Seed: 3})
	skey := mustKey(t)
	server := startSite(t, Config{PrivateKey: skey, PSK: psk(12), Responder: true, AllowAny: true}, n.Conn("server"))
	cconn := n.Conn("client")
	client := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(12), Peers: []PeerConfig{{
		PublicKey: skey.Public(),
		Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
	}}}, cconn)
	waitUp(t, client, 1)
	var want [][]byte
	for i, size := range []int{60, 567, 568, 1514, 4000, 9216} {
		f := testFrame(0xaa, 0xbb, uint32(i), size)
		want = append(want, f)
		client.port.Inject(f)
	}
	for range want {
		select {
		case got := <-server.port.Frames():
			i := int(binary.BigEndian.Uint32(got[14:]))
			if !bytes.Equal(got, want[i]) {
				t.Fatalf("frame %d (%d bytes) arrived as %d bytes, different", i, len(want[i]), len(got))
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a fragmented frame did not arrive")
		}
	}
	expectNoFrame(t, server.port, 100*time.Millisecond) // duplicates do not make frames twice
	st := client.cable.Status().Peers[0]
	if st.WireMTU != 600 || st.Fragmented != 3 {
		t.Errorf("client: wire MTU %d, %d frames fragmented; want 600 and 3", st.WireMTU, st.Fragmented)
	}
}

// fragPl builds the plaintext of a fragment.
func fragPl(id uint32, idx, count, off int, data []byte) []byte {
	b := make([]byte, fragHeaderLen, fragHeaderLen+len(data))
	binary.BigEndian.PutUint32(b, id)
	b[4], b[5] = byte(idx), byte(count)
	binary.BigEndian.PutUint16(b[6:], uint16(off))
	return append(b, data...)
}

// TestReassemblyBadInput: duplicate, inconsistent, out-of-range and
// never-completed fragments are dropped and counted, and cost bounded
// memory.
func TestReassemblyBadInput(t *testing.T) {
	c, p := reassemblyPeer(t)
	now := time.Now().UnixNano()
	if c.reassemble(p, fragPl(1, 0, 2, 0, []byte("hello ")), now) != nil {
		t.Fatal("half a frame delivered")
	}
	if c.reassemble(p, fragPl(1, 0, 2, 0, []byte("HELLO ")), now) != nil {
		t.Fatal("duplicate accepted")
	}
	if c.reassemble(p, fragPl(1, 1, 3, 6, []byte("x")), now) != nil {
		t.Fatal("inconsistent count accepted")
	}
	if got := c.reassemble(p, fragPl(1, 1, 2, 6, []byte("world")), now); string(got) != "hello world" {
		t.Fatalf("reassembled %q", got)
	}
	for _, bad := range [][]byte{
		fragPl(2, 0, 1, 0, []byte("x")),     // one fragment is no fragment
		fragPl(2, 5, 3, 0, []byte("x")),     // index beyond count
		fragPl(2, 0, 65, 0, []byte("x")),    // too many fragments
		fragPl(2, 0, 2, 9216, []byte("xy")), // beyond the largest frame
		{1, 2, 3},                           // runt
	} {
		if c.reassemble(p, bad, now) != nil {
			t.Fatalf("bad fragment % x delivered", bad)
		}
	}
	// A flood of never-completed frames stays within the per-peer bound.
	for id := uint32(100); id < 10100; id++ {
		c.reassemble(p, fragPl(id, 0, 2, 0, []byte("x")), now)
	}
	if len(p.route.reasm.m) > fragPerPeer || c.inReasm.Load() > fragPerPeer {
		t.Fatalf("%d frames in reassembly, bound %d", len(p.route.reasm.m), fragPerPeer)
	}
	// They expire.
	p.route.reasm.expire(now+int64(fragTimeout)+1, &c.dropper, p)
	if len(p.route.reasm.m) != 0 || c.inReasm.Load() != 0 {
		t.Fatalf("%d left after the timeout", len(p.route.reasm.m))
	}
	if p.stats.drops[dropFragment].Load() < 10000 {
		t.Fatalf("only %d fragment drops counted", p.stats.drops[dropFragment].Load())
	}
}

// reassemblyPeer returns a cable with no carrier and a peer of it, to feed
// fragments to.
func reassemblyPeer(t *testing.T) (*Cable, *peer) {
	t.Helper()
	c, err := New(Config{PrivateKey: mustKey(t), Responder: true, AllowAny: true, PSK: psk(1), Logger: quiet}, nilPort{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, c.newPeer("p", mustKey(t).Public(), nil)
}

// nilPort is a port that never has a frame.
type nilPort struct{}

func (nilPort) ReadBatch([][]byte, []int, int) (int, error) { select {} }
func (nilPort) WriteBatch(b [][]byte, _ int) (int, error)   { return len(b), nil }
func (nilPort) Close() error                                { return nil }

func FuzzReassemble(f *testing.F) {
	f.Add(fragPl(1, 0, 2, 0, []byte("ab")), fragPl(1, 1, 2, 2, []byte("cd")))
	f.Add(fragPl(7, 1, 2, 100, []byte("z")), fragPl(7, 0, 2, 0, []byte("y")))
	f.Add([]byte{0}, []byte{})
	c, err := New(Config{PrivateKey: mustKey(f), Responder: true, AllowAny: true, PSK: psk(1), Logger: quiet}, nilPort{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		p := c.newPeer("p", mustKey(t).Public(), nil)
		now := time.Now().UnixNano()
		for _, pl := range [][]byte{a, b, a} {
			if got := c.reassemble(p, pl, now); len(got) > fragBufSize {
				t.Fatalf("frame of %d bytes", len(got))
			}
		}
		if len(p.route.reasm.m) > fragPerPeer {
			t.Fatal("over the bound")
		}
		p.route.reasm.expire(now+int64(fragTimeout)+1, &c.dropper, p)
	})
}

// TestPathMTUBlackHole: a path that silently loses packets above 1300
// bytes is found by probing; big frames then travel in fragments.
func TestPathMTUBlackHole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := transporttest.NewNetwork(transporttest.Options{BlackHole: 1300})
		skey := mustKey(t)
		server := startSite(t, Config{PrivateKey: skey, PSK: psk(13), Responder: true, AllowAny: true}, n.Conn("server"))
		cconn := n.Conn("client")
		client := startSite(t, Config{PrivateKey: mustKey(t), PSK: psk(13), Peers: []PeerConfig{{
			PublicKey: skey.Public(),
			Dial:      &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return transporttest.Addr("server"), nil }},
		}}}, cconn)
		waitUp(t, client, 1)
		time.Sleep(30 * time.Second) // three sizes, three probes each
		for _, s := range []*site{client, server} {
			if w := s.cable.Status().Peers[0].WireMTU; w != 1232 {
				t.Errorf("wire MTU %d after probing a 1300-byte black hole, want 1232", w)
			}
		}
		big := testFrame(0xaa, 0xbb, 1, 1400) // 1432 bytes sealed: into the hole whole
		client.port.Inject(big)
		expectFrames(t, server.port, [][]byte{big})
		if client.cable.Status().Peers[0].Fragmented == 0 {
			t.Error("no frame went in fragments")
		}
	})
}

// TestReassemblyLossDoesNotStall: frames that lost a fragment on the way
// do not hold up the frames after them until they time out: with the
// peer's reassembly table full of them, the next fragmented frame still
// arrives whole, and the oldest of them is dropped and counted.
func TestReassemblyLossDoesNotStall(t *testing.T) {
	c, p := reassemblyPeer(t)
	now := time.Now().UnixNano()
	for id := uint32(1); id <= fragPerPeer; id++ { // each lost its second half
		c.reassemble(p, fragPl(id, 0, 2, 0, []byte("lost ")), now)
	}
	for id := uint32(fragPerPeer + 1); id <= 3*fragPerPeer; id++ {
		if c.reassemble(p, fragPl(id, 0, 2, 0, []byte("hello ")), now+1) != nil {
			t.Fatal("half a frame delivered")
		}
		if got := c.reassemble(p, fragPl(id, 1, 2, 6, []byte("world")), now+1); string(got) != "hello world" {
			t.Fatalf("frame %d, after %d frames that lost a fragment: reassembled %q, want \"hello world\"", id, fragPerPeer, got)
		}
	}
	// One of them made room; the others wait for their timeout.
	if d := p.stats.drops[dropFragment].Load(); d != 1 {
		t.Errorf("%d fragment drops counted, want 1", d)
	}
	if len(p.route.reasm.m) != fragPerPeer-1 || c.inReasm.Load() != fragPerPeer-1 {
		t.Errorf("%d frames left in reassembly, %d in the cable; want %d", len(p.route.reasm.m), c.inReasm.Load(), fragPerPeer-1)
	}
	p.route.reasm.expire(now+int64(fragTimeout)+1, &c.dropper, p)
	if d := p.stats.drops[dropFragment].Load(); d != fragPerPeer || len(p.route.reasm.m) != 0 {
		t.Errorf("after the timeout: %d fragment drops, %d left; want %d and 0", d, len(p.route.reasm.m), fragPerPeer)
	}
	// Several began at once: the one sent first goes.
	for id := uint32(100); id < 100+fragPerPeer; id++ {
		c.reassemble(p, fragPl(id, 1, 2, 6, []byte("world")), now+2)
	}
	c.reassemble(p, fragPl(200, 0, 2, 0, []byte("hello ")), now+2)
	if _, ok := p.route.reasm.m[100]; ok {
		t.Error("frame 100, sent first, was kept")
	}
	if _, ok := p.route.reasm.m[101]; !ok {
		t.Error("frame 101 was dropped, not frame 100")
	}
	if got := c.reassemble(p, fragPl(101, 0, 2, 0, []byte("hello ")), now+2); string(got) != "hello world" {
		t.Errorf("frame 101: %q", got)
	}
}
