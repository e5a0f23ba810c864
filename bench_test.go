package cab

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"cab/bridgeif"
	"cab/crypto"
	"cab/transport"
)

// genPort is a Port that reads the same frame over and over, a batch at a
// time, as fast as it is asked, until stopped: a source that costs nothing.
type genPort struct {
	frame   []byte
	once    atomic.Pointer[[]byte] // a frame read once, even while stopped
	stop    atomic.Bool
	closed  chan struct{}
	written atomic.Uint64
}

func newGenPort(frame []byte) *genPort { return &genPort{frame: frame, closed: make(chan struct{})} }

func (g *genPort) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		if f := g.once.Swap(nil); f != nil {
			sizes[0] = copy(bufs[0][offset:], *f)
			return 1, nil
		}
		if !g.stop.Load() {
			break
		}
		select {
		case <-g.closed:
			return 0, net.ErrClosed
		case <-time.After(time.Millisecond):
		}
	}
	for i := range bufs {
		sizes[i] = copy(bufs[i][offset:], g.frame)
	}
	return len(bufs), nil
}

// WriteBatch counts the frames: the port is also the sink.
func (g *genPort) WriteBatch(bufs [][]byte, offset int) (int, error) {
	g.written.Add(uint64(len(bufs)))
	return len(bufs), nil
}

func (g *genPort) Close() error {
	select {
	case <-g.closed:
	default:
		close(g.closed)
	}
	return nil
}

var _ bridgeif.Port = (*genPort)(nil)

// BenchmarkCable measures frames per second through a whole client→server
// cable (MAC learning, flooding to the one peer, clamping, sealing, the
// conn, opening, replay window, delivery), on the in-memory network and on
// loopback UDP, at 64- and 1400-byte frames. One op is one frame delivered;
// allocs/op shows that the steady state allocates nothing per frame.
func BenchmarkCable(b *testing.B) {
	for _, real := range []bool{false, true} {
		for _, v := range []struct{ size, workers int }{{64, 0}, {1400, 0}, {1400, 1}} {
			size := v.size
			name := "fakes/"
			if real {
				name = "udp/"
			}
			name += itoa(size)
			if v.workers > 0 {
				name += "/workers=" + itoa(v.workers)
			}
			b.Run(name, func(b *testing.B) { benchCable(b, real, size, v.workers, 0) })
		}
	}
}

// BenchmarkSegments is BenchmarkCable through named segments instead of
// the default one: one, or two busy at once (one op: a frame delivered in
// any of them).
func BenchmarkSegments(b *testing.B) {
	for _, real := range []bool{false, true} {
		for _, n := range []int{1, 2} {
			name := "fakes/1400/segments="
			if real {
				name = "udp/1400/segments="
			}
			b.Run(name+itoa(n), func(b *testing.B) { benchCable(b, real, 1400, 0, n) })
		}
	}
}

// benchCable runs a client→server cable of size-byte frames with workers
// crypto workers: through the default segment (segs 0), or through segs
// named segments at once, each with its own source and sink.
func benchCable(b *testing.B, real bool, size, workers, segs int) {
	sconn, cconn, saddr := pairConns(b, real)
	skey, ckey := mustKey(b), mustKey(b)
	hello := testFrame(0xbb, 0xaa, 0, 60) // the client learns where 0xaa is
	var srcs, sinks []*genPort
	var sSegs, cSegs []SegmentConfig
	for i := 0; i < max(segs, 1); i++ {
		src := newGenPort(testFrame(0xaa, 0xbb, 1, size))
		src.stop.Store(true)
		sink := newGenPort(nil)
		sink.stop.Store(true)
		sink.once.Store(&hello)
		srcs, sinks = append(srcs, src), append(sinks, sink)
		if segs > 0 {
			name := "seg" + itoa(i+1)
			sSegs = append(sSegs, SegmentConfig{Name: name, Port: sink})
			cSegs = append(cSegs, SegmentConfig{Name: name, Port: src})
		}
	}
	run := func(cfg Config, port bridgeif.Port, conn transport.Conn) (*Cable, func()) {
		cfg.Logger = quiet
		cfg.CryptoWorkers = workers
		c, err := New(cfg, port, []transport.Conn{conn})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		return c, func() { cancel(); <-done }
	}
	var sport, cport bridgeif.Port
	if segs == 0 {
		sport, cport = sinks[0], srcs[0]
	}
	_, stopS := run(Config{PrivateKey: skey, PSK: psk(1), Responder: true, AllowAny: true, Segments: sSegs}, sport, sconn)
	defer stopS()
	client, stopC := run(Config{PrivateKey: ckey, PSK: psk(1), Segments: cSegs, Peers: []PeerConfig{{
		Name: "server", PublicKey: skey.Public(),
		Dial: &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return saddr, nil }},
	}}}, cport, cconn)
	defer stopC()
	deadline := time.Now().Add(10 * time.Second)
	for i := range srcs {
		for !client.Status().Peers[0].Up || srcs[i].written.Load() == 0 {
			if time.Now().After(deadline) {
				b.Fatal("the cable did not come up")
			}
			if sinks[i].once.Load() == nil {
				sinks[i].once.Store(&hello)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	written := func() (n uint64) {
		for _, s := range sinks {
			n += s.written.Load()
		}
		return n
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	start := written()
	for _, src := range srcs {
		src.stop.Store(false)
	}
	deadline = time.Now().Add(60 * time.Second)
	for written()-start < uint64(b.N) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	for _, src := range srcs {
		src.stop.Store(true)
	}
	b.StopTimer()
	got := written() - start
	b.ReportMetric(float64(got)/b.Elapsed().Seconds(), "frames/s")
}

// itoa avoids strconv for the few sizes the benchmarks name.
func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

var _ = crypto.HeaderLen
