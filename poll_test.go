package cab

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"cab/bridgeif"
	"cab/crypto"
	"cab/transport"
)

// echoPort is a Poller port that answers every frame written to it at
// once, as a kernel answers a ping during the write, and never says it is
// readable: only a TryReadBatch right after a write finds the answers.
type echoPort struct {
	mu      sync.Mutex
	queued  [][]byte
	closed  chan struct{}
	once    sync.Once
	written chan struct{}
}

func newEchoPort() *echoPort {
	return &echoPort{closed: make(chan struct{}), written: make(chan struct{}, 100)}
}

func (e *echoPort) WriteBatch(bufs [][]byte, offset int) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range bufs {
		f := b[offset:]
		r := make([]byte, len(f))
		copy(r, f[6:12]) // to the sender, from the frame's destination
		copy(r[6:], f[0:6])
		copy(r[12:], f[12:])
		e.queued = append(e.queued, r)
	}
	select {
	case e.written <- struct{}{}:
	default:
	}
	return len(bufs), nil
}

func (e *echoPort) TryReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-e.closed:
		return 0, net.ErrClosed
	default:
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for n < len(bufs) && len(e.queued) > 0 {
		sizes[n] = copy(bufs[n][offset:], e.queued[0])
		e.queued = e.queued[1:]
		n++
	}
	return n, nil
}

// WaitRead and ReadBatch wait for Close: the port never wakes its reader.
func (e *echoPort) WaitRead() error { <-e.closed; return net.ErrClosed }
func (e *echoPort) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	<-e.closed
	return 0, net.ErrClosed
}
func (e *echoPort) Close() error { e.once.Do(func() { close(e.closed) }); return nil }

var _ bridgeif.Poller = (*echoPort)(nil)

// TestCablePollsPortAfterWrite: the reply a port queued while the receive
// path wrote a frame to it goes back at once, taken by the receive path
// itself (frames_polled), though the port never wakes its port loop.
func TestCablePollsPortAfterWrite(t *testing.T) {
	for _, real := range []bool{false, true} {
		sconn, cconn, saddr := pairConns(t, real)
		skey, ckey := mustKey(t), mustKey(t)
		echo := newEchoPort()
		scfg := Config{PrivateKey: skey, PSK: psk(1), Responder: true, AllowAny: true, Logger: quiet}
		c, err := New(scfg, echo, []transport.Conn{sconn})
		if err != nil {
			t.Fatal(err)
		}
		srv := &site{cable: c, done: make(chan error, 1)}
		ctx, cancel := context.WithCancel(context.Background())
		srv.stop = cancel
		go func() { srv.done <- c.Run(ctx) }()
		t.Cleanup(func() { srv.close(t) })
		client := startSite(t, Config{PrivateKey: ckey, PSK: psk(1), Logger: quiet, Peers: []PeerConfig{{
			Name: "server", PublicKey: skey.Public(),
			Dial: &Dialer{Conn: cconn, Resolve: func() (transport.Addr, error) { return saddr, nil }},
		}}}, cconn)
		waitUp(t, client, 1)
		for i := range 5 {
			req := testFrame(0xaa, 0xbb, uint32(i), 100)
			if err := client.port.Inject(req); err != nil {
				t.Fatal(err)
			}
			want := testFrame(0xbb, 0xaa, uint32(i), 100)
			expectFrames(t, client.port, [][]byte{want})
		}
		if st := c.Status(); st.Polled != 5 {
			t.Errorf("real=%v: frames_polled %d, want 5", real, st.Polled)
		}
		srv.close(t)
		client.close(t)
	}
}

// TestPollOnlyAfterSmallDeliveries: the conn loop polls a port after
// writing it a few frames (a request's answer leaves at once), not after a
// bulk delivery, whose ACKs the port loop, awake anyway, takes.
func TestPollOnlyAfterSmallDeliveries(t *testing.T) {
	for _, tc := range []struct {
		frames int
		poll   bool
	}{{1, true}, {pollMax, true}, {pollMax + 1, false}, {batch, false}} {
		echo := newEchoPort()
		seg := &segment{port: echo}
		seg.reader.Store(&portReader{})
		var d deliveries
		for i := range tc.frames {
			buf := make([]byte, crypto.HeaderLen+64)
			copy(buf[crypto.HeaderLen:], testFrame(0xaa, 0xbb, uint32(i), 50))
			d.add(seg, buf)
		}
		if err := d.flush(nil); err != nil {
			t.Fatal(err)
		}
		if got := len(d.polls) == 1; got != tc.poll {
			t.Errorf("%d frames delivered: polled %v, want %v", tc.frames, got, tc.poll)
		}
		if len(echo.queued) != tc.frames {
			t.Errorf("%d frames delivered: the port got %d", tc.frames, len(echo.queued))
		}
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if say := fmt.Sprintf("a few frames (at most %d)", pollMax); !strings.Contains(strings.Join(strings.Fields(string(readme)), " "), say) {
		t.Errorf("README.md does not say %q", say)
	}
}
