package stream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"cab/transport/transporttest"

	"cab/transport"
)

// splitReader returns the bytes of b in reads cut at the given boundary
// and every len later.
type splitReader struct {
	b   []byte
	cut int
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.cut, len(r.b))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

func testPackets() [][]byte {
	var ps [][]byte
	for i, n := range []int{1, 2, 3, 60, 255, 256, 257, 1400, 9000, 65535} {
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(i + j)
		}
		ps = append(ps, p)
	}
	return ps
}

// TestFramingEverySplit: a stream of packets read with reads cut at every
// byte boundary gives back the same packets.
func TestFramingEverySplit(t *testing.T) {
	ps := testPackets()
	var stream []byte
	for _, p := range ps {
		stream = AppendPacket(stream, p)
	}
	for cut := 1; cut <= 300; cut++ {
		r := bufio.NewReaderSize(&splitReader{b: stream, cut: cut}, 16)
		for i, want := range ps {
			got, err := ReadPacket(r, nil)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("cut %d: packet %d: %d bytes, %v", cut, i, len(got), err)
			}
		}
		if _, err := ReadPacket(r, nil); err != io.EOF {
			t.Fatalf("cut %d: after the last packet: %v, want EOF", cut, err)
		}
	}
	// One byte at a time, through iotest.
	r := bufio.NewReader(iotest.OneByteReader(bytes.NewReader(stream)))
	for i, want := range ps {
		if got, err := ReadPacket(r, make([]byte, 0, 10)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("one byte at a time: packet %d: %v", i, err)
		}
	}
}

// TestFramingBadInput: a zero length, and a stream cut inside a packet.
func TestFramingBadInput(t *testing.T) {
	if _, err := ReadPacket(bufio.NewReader(bytes.NewReader([]byte{0, 0, 1})), nil); !errors.Is(err, ErrBadLength) {
		t.Errorf("zero length: %v", err)
	}
	if _, err := ReadPacket(bufio.NewReader(bytes.NewReader([]byte{0, 5, 1, 2})), nil); err != io.ErrUnexpectedEOF {
		t.Errorf("cut inside a packet: %v", err)
	}
	if _, err := ReadPacket(bufio.NewReader(bytes.NewReader([]byte{0})), nil); err != io.ErrUnexpectedEOF {
		t.Errorf("cut inside a length: %v", err)
	}
}

// FuzzReadPacket: any bytes either frame packets that frame back to the
// same bytes, or stop with an error; never a panic.
func FuzzReadPacket(f *testing.F) {
	f.Add(AppendPacket(AppendPacket(nil, []byte("hello")), []byte{1}), 3)
	f.Add([]byte{0, 0}, 1)
	f.Add([]byte{0xff, 0xff, 1, 2, 3}, 2)
	f.Add([]byte{}, 1)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		if cut < 1 || cut > 1<<16 {
			cut = 1
		}
		r := bufio.NewReaderSize(&splitReader{b: b, cut: cut}, 16)
		var again []byte
		for {
			p, err := ReadPacket(r, nil)
			if err != nil {
				if err == io.EOF && !bytes.Equal(again, b) {
					t.Fatalf("clean end, yet %d of %d bytes framed", len(again), len(b))
				}
				return
			}
			if len(p) == 0 || len(p) > MaxPacket {
				t.Fatalf("packet of %d bytes", len(p))
			}
			again = AppendPacket(again, p)
			if !bytes.HasPrefix(b, again) {
				t.Fatal("packets do not frame back to the input")
			}
		}
	})
}

// readPackets reads n packets from c, or fails after d.
func readPackets(t *testing.T, c transport.Conn, n int, d time.Duration) []transport.Packet {
	t.Helper()
	return startReading(c, n)(t, d)
}

// startReading reads n packets from c in the background; the function it
// returns waits for them, at most d.
func startReading(c transport.Conn, n int) func(t *testing.T, d time.Duration) []transport.Packet {
	type res struct {
		ps  []transport.Packet
		err error
	}
	ch := make(chan res, 1)
	go func() {
		var got []transport.Packet
		buf := make([]transport.Packet, 16)
		for i := range buf {
			buf[i].B = make([]byte, 0, MaxPacket)
		}
		for len(got) < n {
			k, err := c.ReadBatch(buf)
			if err != nil {
				ch <- res{got, err}
				return
			}
			for _, p := range buf[:k] {
				got = append(got, transport.Packet{B: append([]byte(nil), p.B...), Addr: p.Addr})
			}
		}
		ch <- res{got, nil}
	}()
	return func(t *testing.T, d time.Duration) []transport.Packet {
		t.Helper()
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("read: %v after %d packets", r.err, len(r.ps))
			}
			return r.ps
		case <-time.After(d):
			t.Fatalf("fewer than %d packets within %v", n, d)
			return nil
		}
	}
}

// goroutinesSettle fails t when more goroutines than before remain 5 s
// after a test's conns are closed.
func goroutinesSettle(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines left, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// exchange sends n packets from cl to the server and n back, in batches,
// and checks they arrive intact and in order.
func exchange(t *testing.T, srv *Server, cl *Client, n int) {
	t.Helper()
	var out []transport.Packet
	for i := range n {
		out = append(out, transport.Packet{B: []byte(fmt.Sprintf("up %d %s", i, bytes.Repeat([]byte("x"), i%1400))), Addr: cl.Remote()})
	}
	wait := startReading(srv, n)
	for i := 0; i < n; i += 50 {
		if err := cl.WriteBatch(out[i:min(i+50, n)]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // stay within the queue
	}
	got := wait(t, 10*time.Second)
	from := got[0].Addr
	var back []transport.Packet
	for i, p := range got {
		if !bytes.Equal(p.B, out[i].B) || p.Addr != from {
			t.Fatalf("packet %d differs, or from another stream", i)
		}
		back = append(back, transport.Packet{B: append([]byte("down"), p.B...), Addr: p.Addr})
	}
	wait = startReading(cl, n)
	for i := 0; i < n; i += 50 {
		if err := srv.WriteBatch(back[i:min(i+50, n)]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	for i, p := range wait(t, 10*time.Second) {
		if !bytes.Equal(p.B, back[i].B) || p.Addr != cl.Remote() {
			t.Fatalf("reply %d differs", i)
		}
	}
}

// TestTCPAndUnix: a client and a server exchange thousands of packets both
// ways over TCP loopback and over a unix socket, and leave no goroutine.
func TestTCPAndUnix(t *testing.T) {
	transporttest.CheckLeaks(t)
	before := runtime.NumGoroutine()
	for _, kind := range []string{"tcp", "unix"} {
		var srv *Server
		var cl *Client
		var err error
		if kind == "tcp" {
			srv, err = ListenTCP("127.0.0.1:0")
			if err == nil {
				cl = DialTCP(srv.Addr().String())
			}
		} else {
			path := filepath.Join(t.TempDir(), "s.sock")
			srv, err = ListenUnix(path)
			if err == nil {
				cl = DialUnix(path)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if cl.Scheme() != kind || srv.Scheme() != kind {
			t.Errorf("schemes %s and %s, want %s", cl.Scheme(), srv.Scheme(), kind)
		}
		exchange(t, srv, cl, 2000)
		if srv.Streams() != 1 || !cl.Connected() {
			t.Errorf("%s: %d streams, connected %v", kind, srv.Streams(), cl.Connected())
		}
		cl.Close()
		srv.Close()
		if err := cl.WriteBatch(nil); !errors.Is(err, net.ErrClosed) {
			t.Errorf("write after close: %v", err)
		}
		if _, err := srv.ReadBatch(make([]transport.Packet, 1)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("read after close: %v", err)
		}
	}
	goroutinesSettle(t, before)
}

// TestServerRoutesAndSurvivesGarbage: replies go to the stream they are
// addressed to; a stream that sends garbage is closed, and one that never
// reads does not hold up the others.
func TestServerRoutesAndSurvivesGarbage(t *testing.T) {
	srv, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	a, b := DialTCP(srv.Addr().String()), DialTCP(srv.Addr().String())
	defer a.Close()
	defer b.Close()
	a.WriteBatch([]transport.Packet{{B: []byte("from a"), Addr: a.Remote()}})
	pa := readPackets(t, srv, 1, 5*time.Second)[0]
	b.WriteBatch([]transport.Packet{{B: []byte("from b"), Addr: b.Remote()}})
	pb := readPackets(t, srv, 1, 5*time.Second)[0]
	if pa.Addr == pb.Addr {
		t.Fatal("two streams, one Addr")
	}

	// A stalled reader: a raw connection that sends one packet and then
	// never reads what it is sent.
	stalled, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.Write(AppendPacket(nil, []byte("stalled")))
	ps := readPackets(t, srv, 1, 5*time.Second)[0]
	big := make([]transport.Packet, 64)
	for i := range big {
		big[i] = transport.Packet{B: make([]byte, 60000), Addr: ps.Addr}
	}
	start := time.Now()
	for range 40 { // ~150 MB at a reader that reads nothing
		if err := srv.WriteBatch(big); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("WriteBatch to a stalled reader took %v", d)
	}
	if srv.Drops() == 0 {
		t.Error("nothing dropped for a reader that reads nothing")
	}

	// Garbage: a zero length closes that stream only.
	junk, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	junk.Write([]byte{0, 0, 0xde, 0xad})
	junk.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := junk.Read(make([]byte, 10)); err == nil {
		t.Error("a stream that sent a zero length is still open")
	}

	srv.WriteBatch([]transport.Packet{{B: []byte("to a"), Addr: pa.Addr}, {B: []byte("to b"), Addr: pb.Addr}})
	if got := readPackets(t, a, 1, 5*time.Second)[0]; string(got.B) != "to a" {
		t.Errorf("a got %q", got.B)
	}
	if got := readPackets(t, b, 1, 5*time.Second)[0]; string(got.B) != "to b" {
		t.Errorf("b got %q", got.B)
	}
}

// TestClientRedials: the client dials again after the server goes away and
// comes back on the same port.
func TestClientRedials(t *testing.T) {
	srv, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	cl := DialTCP(addr)
	defer cl.Close()
	exchange(t, srv, cl, 10)
	srv.Close()
	time.Sleep(200 * time.Millisecond)
	srv, err = ListenTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	got := make(chan struct{})
	go func() {
		readPackets(t, srv, 1, 20*time.Second)
		close(got)
	}()
	for i := 0; ; i++ {
		cl.WriteBatch([]transport.Packet{{B: []byte("again"), Addr: cl.Remote()}})
		select {
		case <-got:
			return
		case <-time.After(200 * time.Millisecond):
		}
		if i > 100 {
			t.Fatalf("no packet after the server came back: %v", cl.LastError())
		}
	}
}

// TestCommandStream: a child process as the stream. `cat` sends every
// packet straight back; a child that exits is started again.
func TestCommandStream(t *testing.T) {
	before := runtime.NumGoroutine()
	cl := DialCommand("ssh", "loopback", "cat")
	cl.WriteBatch([]transport.Packet{{B: []byte("echo 1"), Addr: cl.Remote()}, {B: []byte("echo 2"), Addr: cl.Remote()}})
	got := readPackets(t, cl, 2, 10*time.Second)
	if string(got[0].B) != "echo 1" || string(got[1].B) != "echo 2" || got[0].Addr != cl.Remote() {
		t.Fatalf("got %q %q", got[0].B, got[1].B)
	}
	cl.Close()

	// A child that says why it fails and exits: dialled again with backoff,
	// and LastError tells.
	cl = DialCommand("ssh", "nowhere", "sh", "-c", "echo 'Permission denied (publickey).' >&2; exit 255")
	for range 20 {
		cl.WriteBatch([]transport.Packet{{B: []byte("x"), Addr: cl.Remote()}})
		time.Sleep(50 * time.Millisecond)
	}
	if err := cl.LastError(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("Permission denied")) {
		t.Errorf("LastError = %v", err)
	}
	cl.Close()
	goroutinesSettle(t, before)
}

// TestQueueDeadline: packets that waited longer than MaxQueueDelay are
// dropped, not sent late.
func TestQueueDeadline(t *testing.T) {
	srv, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// The client's dial is held back 300 ms: what it queued meanwhile is
	// stale by then.
	cl := Dial("tcp", srv.Addr().String(), func(ctx context.Context) (io.ReadWriteCloser, error) {
		time.Sleep(300 * time.Millisecond)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", srv.Addr().String())
	})
	defer cl.Close()
	cl.WriteBatch([]transport.Packet{{B: []byte("stale"), Addr: cl.Remote()}})
	deadline := time.Now().Add(5 * time.Second)
	for !cl.Connected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	cl.WriteBatch([]transport.Packet{{B: []byte("fresh"), Addr: cl.Remote()}})
	if got := readPackets(t, srv, 1, 5*time.Second)[0]; string(got.B) != "fresh" {
		t.Fatalf("first packet %q, want the stale one dropped", got.B)
	}
	if cl.Drops() != 1 {
		t.Errorf("Drops = %d, want 1", cl.Drops())
	}
}

// BenchmarkTCP measures packets per second client→server over loopback,
// at 1400 bytes, paced so that the client's queue never overflows.
func BenchmarkTCP(b *testing.B) {
	srv, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	cl := DialTCP(srv.Addr().String())
	defer cl.Close()
	batch := make([]transport.Packet, 32)
	for i := range batch {
		batch[i] = transport.Packet{B: make([]byte, 1400), Addr: cl.Remote()}
	}
	var received atomic.Int64
	go func() {
		buf := make([]transport.Packet, 64)
		for i := range buf {
			buf[i].B = make([]byte, 0, 2048)
		}
		for {
			k, err := srv.ReadBatch(buf)
			if err != nil {
				return
			}
			received.Add(int64(k))
		}
	}()
	b.SetBytes(1400)
	b.ReportAllocs()
	for sent := 0; sent < b.N; sent += len(batch) {
		for len(cl.queue) > queuePackets/2 {
			time.Sleep(20 * time.Microsecond)
		}
		cl.WriteBatch(batch)
	}
	deadline := time.Now().Add(10 * time.Second)
	for received.Load() < int64(b.N)-int64(cl.Drops()) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	b.ReportMetric(float64(received.Load())/b.Elapsed().Seconds(), "pkts/s")
}

// TestServerLimitsStrangers: one IP holds at most PerIP streams, the
// server at most MaxStreams, and a stream the cable does not vouch for
// within AuthTimeout is closed; each is counted for cab status. A stream
// the cable vouched for stays.
func TestServerLimitsStrangers(t *testing.T) {
	srv, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const timeout = 400 * time.Millisecond
	srv.SetLimits(Limits{PerIP: 3, AuthTimeout: timeout})

	// A real client, vouched for.
	cl := DialTCP(srv.Addr().String())
	defer cl.Close()
	cl.WriteBatch([]transport.Packet{{B: []byte("hello"), Addr: cl.Remote()}})
	good := readPackets(t, srv, 1, 5*time.Second)[0].Addr
	srv.Authenticated(good)

	var idle []net.Conn
	for range 10 {
		c, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	// Two of the idle ones fit beside the client; the rest are closed at
	// once.
	closed := func(c net.Conn, within time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(within))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
	}
	open := 0
	for _, c := range idle {
		if !closed(c, 50*time.Millisecond) {
			open++
		}
	}
	if open != 2 {
		t.Fatalf("%d idle streams from one IP stay open beside the client, want 2 (PerIP 3)", open)
	}
	if got := srv.DropCounts()["refused_per_ip"]; got != 8 {
		t.Errorf("refused_per_ip = %d, want 8", got)
	}
	// After AuthTimeout the idle ones are gone, the client is not.
	time.Sleep(3 * timeout)
	for _, c := range idle {
		if !closed(c, time.Second) {
			t.Fatal("an idle stream is still open after AuthTimeout")
		}
	}
	if got := srv.DropCounts()["unauthenticated_closed"]; got != 2 {
		t.Errorf("unauthenticated_closed = %d, want 2", got)
	}
	srv.WriteBatch([]transport.Packet{{B: []byte("still here"), Addr: good}})
	if got := readPackets(t, cl, 1, 5*time.Second)[0]; string(got.B) != "still here" {
		t.Fatalf("the vouched-for client got %q", got.B)
	}
	if n := srv.Streams(); n != 1 {
		t.Errorf("%d streams, want the client's alone", n)
	}

	// The global cap.
	srv.SetLimits(Limits{MaxStreams: 2, PerIP: 100, AuthTimeout: time.Minute})
	a, _ := net.Dial("tcp", srv.Addr().String())
	defer a.Close()
	b, _ := net.Dial("tcp", srv.Addr().String())
	defer b.Close()
	if closed(a, 100*time.Millisecond) || !closed(b, 2*time.Second) {
		t.Fatal("MaxStreams 2: want the first stranger kept and the second refused")
	}
	if got := srv.DropCounts()["refused_streams"]; got != 1 {
		t.Errorf("refused_streams = %d, want 1", got)
	}
}

// TestPacketPathAllocs: reading a framed packet into a recycled buffer and
// giving the buffer back allocates nothing, so a stream carrier's steady
// state makes no garbage per packet.
func TestPacketPathAllocs(t *testing.T) {
	framed := AppendPacket(nil, make([]byte, 1400))
	src := bytes.NewReader(nil)
	r := bufio.NewReaderSize(src, 64<<10)
	putBuf(getBuf(2048)) // one buffer in circulation
	allocs := testing.AllocsPerRun(1000, func() {
		src.Reset(framed)
		r.Reset(src)
		buf, err := ReadPacket(r, getBuf(2048))
		if err != nil || len(buf) != 1400 {
			t.Fatalf("ReadPacket: %d bytes, %v", len(buf), err)
		}
		putBuf(buf)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per packet, want 0", allocs)
	}
}
