package udp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cab/transport/transporttest"

	"cab/transport"
)

func mustListen(t testing.TB, addr string) *Conn {
	t.Helper()
	c, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// to is c's port at the address ip.
func to(ip string, c *Conn) Addr {
	return Addr{netip.AddrPortFrom(netip.MustParseAddr(ip), c.LocalAddr().Port())}
}

// buffers returns n packets with empty buffers of capacity size.
func buffers(n, size int) []transport.Packet {
	ps := make([]transport.Packet, n)
	for i := range ps {
		ps[i].B = make([]byte, 0, size)
	}
	return ps
}

// readN reads until n packets have arrived, in batches of up to batch
// packets, and fails the test if they take longer than a few seconds.
func readN(t *testing.T, c *Conn, n, batch int) []transport.Packet {
	t.Helper()
	var got []transport.Packet
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		ps := buffers(batch, 1<<16)
		for len(got) < n {
			var m int
			if m, err = c.ReadBatch(ps); err != nil {
				return
			}
			for _, p := range ps[:m] {
				got = append(got, transport.Packet{B: bytes.Clone(p.B), Addr: p.Addr})
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.Close()
		<-done
		t.Fatalf("got %d of %d packets", len(got), n)
	}
	if err != nil {
		t.Fatalf("read: %v (after %d of %d packets)", err, len(got), n)
	}
	return got
}

// batch returns n packets to dst of varying sizes and contents, tagged
// with seed.
func batch(n int, seed byte, dst Addr) []transport.Packet {
	ps := make([]transport.Packet, n)
	for i := range ps {
		b := make([]byte, 1+(i*397)%9000)
		for j := range b {
			b[j] = seed + byte(i) + byte(j*7)
		}
		ps[i] = transport.Packet{B: b, Addr: dst}
	}
	return ps
}

func samePackets(t *testing.T, got, want []transport.Packet, from Addr) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d packets, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].B, want[i].B) {
			t.Fatalf("packet %d: %d bytes, want %d, or different bytes", i, len(got[i].B), len(want[i].B))
		}
		if got[i].Addr != from {
			t.Fatalf("packet %d from %v, want %v", i, got[i].Addr, from)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	transporttest.CheckLeaks(t)
	cases := []struct {
		name             string
		listenA, listenB string
		aIP, bIP         string // a as b sends to it, b as a sees it
	}{
		{"v4", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1", "127.0.0.1"},
		{"v6", "[::1]:0", "[::1]:0", "::1", "::1"},
		{"dual-v4sender", ":0", "127.0.0.1:0", "127.0.0.1", "127.0.0.1"},
		{"dual-v6sender", "[::]:0", "[::1]:0", "::1", "::1"},
		{"dual-dual-v4", ":0", ":0", "127.0.0.1", "127.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := mustListen(t, tc.listenA), mustListen(t, tc.listenB)
			bAddr := to(tc.bIP, b)
			for _, n := range []int{1, 8, 64} {
				out := batch(n, byte(n), to(tc.aIP, a))
				if err := b.WriteBatch(out); err != nil {
					t.Fatal(err)
				}
				got := readN(t, a, n, 16)
				samePackets(t, got, out, bAddr)

				// And back, to the Addr the packets came from.
				back := batch(n, byte(n)+100, got[0].Addr.(Addr))
				if err := a.WriteBatch(back); err != nil {
					t.Fatal(err)
				}
				samePackets(t, readN(t, b, n, 64), back, to(tc.aIP, a))
			}
			if a.SendErrors() != 0 || b.SendErrors() != 0 {
				t.Fatalf("send errors %d and %d on loopback", a.SendErrors(), b.SendErrors())
			}
		})
	}
}

// TestAddrKey: the Addrs of one sender read in different batches are equal
// and find the same map entry, with another sender in between.
func TestAddrKey(t *testing.T) {
	for _, listenA := range []string{":0", "127.0.0.1:0"} {
		a := mustListen(t, listenA)
		b, c := mustListen(t, "127.0.0.1:0"), mustListen(t, "127.0.0.1:0")
		seen := map[transport.Addr]int{}
		for i, from := range []*Conn{b, c, b, b, c} {
			if err := from.WriteBatch([]transport.Packet{{B: []byte{byte(i)}, Addr: to("127.0.0.1", a)}}); err != nil {
				t.Fatal(err)
			}
			got := readN(t, a, 1, 1)
			if got[0].Addr != to("127.0.0.1", from) {
				t.Fatalf("%s: packet %d from %v, want %v", listenA, i, got[0].Addr, to("127.0.0.1", from))
			}
			seen[got[0].Addr]++
		}
		if len(seen) != 2 || seen[to("127.0.0.1", b)] != 3 || seen[to("127.0.0.1", c)] != 2 {
			t.Fatalf("%s: senders seen %v", listenA, seen)
		}
	}
}

func TestAddrFromUnmaps(t *testing.T) {
	a := AddrFrom(netip.MustParseAddrPort("[::ffff:192.0.2.1]:7667"))
	if a != (Addr{netip.MustParseAddrPort("192.0.2.1:7667")}) || a.String() != "192.0.2.1:7667" {
		t.Fatalf("AddrFrom gave %v", a)
	}
}

func TestMaxPacket(t *testing.T) {
	for addr, want := range map[string]int{"127.0.0.1:0": 65507, "[::1]:0": 65527, ":0": 65507, "[::]:0": 65507} {
		if got := mustListen(t, addr).MaxPacket(); got != want {
			t.Errorf("%s: MaxPacket %d, want %d", addr, got, want)
		}
	}
	// The largest IPv4 packet goes through loopback whole.
	a, b := mustListen(t, "127.0.0.1:0"), mustListen(t, "127.0.0.1:0")
	out := []transport.Packet{{B: bytes.Repeat([]byte{0xa5}, b.MaxPacket()), Addr: to("127.0.0.1", a)}}
	if err := b.WriteBatch(out); err != nil {
		t.Fatal(err)
	}
	samePackets(t, readN(t, a, 1, 1), out, to("127.0.0.1", b))
}

func TestTooBig(t *testing.T) {
	a, b := mustListen(t, "127.0.0.1:0"), mustListen(t, "127.0.0.1:0")
	dst := to("127.0.0.1", a)
	err := b.WriteBatch([]transport.Packet{
		{B: []byte("first"), Addr: dst},
		{B: make([]byte, b.MaxPacket()+1), Addr: dst},
		{B: []byte("second"), Addr: dst},
		{B: make([]byte, 70000), Addr: dst},
	})
	var tb *transport.TooBigError
	if !errors.As(err, &tb) || tb.Max != b.MaxPacket() || tb.Len != b.MaxPacket()+1 {
		t.Fatalf("err = %v, want a TooBigError for the first oversize packet", err)
	}
	got := readN(t, a, 2, 4)
	if string(got[0].B) != "first" || string(got[1].B) != "second" {
		t.Fatalf("the rest of the batch: %q, %q", got[0].B, got[1].B)
	}
}

// TestShortBuffer: a packet longer than its buffer is dropped, and the
// packets around it arrive whole and in order.
func TestShortBuffer(t *testing.T) {
	a, b := mustListen(t, "127.0.0.1:0"), mustListen(t, "127.0.0.1:0")
	dst := to("127.0.0.1", a)
	want := []string{"one", "two", "three"}
	out := []transport.Packet{
		{B: []byte(want[0]), Addr: dst},
		{B: bytes.Repeat([]byte{1}, 3000), Addr: dst},
		{B: []byte(want[1]), Addr: dst},
		{B: bytes.Repeat([]byte{2}, 5000), Addr: dst},
		{B: bytes.Repeat([]byte{3}, 2049), Addr: dst},
		{B: []byte(want[2]), Addr: dst},
	}
	if err := b.WriteBatch(out); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let them all queue, so one read sees them
	var got []string
	for len(got) < len(want) {
		ps := buffers(8, 2048)
		n, err := a.ReadBatch(ps)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps[:n] {
			got = append(got, string(p.B))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestClose(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", ":0"} {
		c, err := Listen(addr)
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := c.ReadBatch(buffers(4, 100))
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("%s: blocked read after close: %v", addr, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Close did not unblock ReadBatch", addr)
		}
		if _, err := c.ReadBatch(buffers(4, 100)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("%s: read after close: %v", addr, err)
		}
		for _, ps := range [][]transport.Packet{
			{{B: []byte("x"), Addr: to("127.0.0.1", c)}},
			{{B: make([]byte, 70000), Addr: to("127.0.0.1", c)}},
			nil,
		} {
			if err := c.WriteBatch(ps); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("%s: write after close: %v", addr, err)
			}
		}
	}
}

func TestAddressInUse(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", ":0", "[::1]:0"} {
		a := mustListen(t, addr)
		again := net.JoinHostPort(strings.Trim(strings.TrimSuffix(addr, ":0"), "[]"), fmt.Sprint(a.LocalAddr().Port()))
		c, err := Listen(again)
		if err == nil {
			c.Close()
			t.Fatalf("%s: a second Listen succeeded", again)
		}
		if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), again) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("%s: err = %v", again, err)
		}
	}
}

func TestListenBadAddress(t *testing.T) {
	for _, addr := range []string{"no-port", "127.0.0.1:notaport", "[::1:0"} {
		if c, err := Listen(addr); err == nil {
			c.Close()
			t.Errorf("Listen(%q) succeeded", addr)
		} else if !strings.Contains(err.Error(), addr) {
			t.Errorf("Listen(%q): error does not name the address: %v", addr, err)
		}
	}
}

func TestResolve(t *testing.T) {
	v4, v6, dual := mustListen(t, "127.0.0.1:0"), mustListen(t, "[::1]:0"), mustListen(t, ":0")
	named := mustListen(t, "localhost:0") // bound to 127.0.0.1: IPv4 only
	cases := []struct {
		c        *Conn
		hostport string
		want     string // "" for an error
	}{
		{v4, "localhost:7667", "127.0.0.1:7667"},
		{v4, "127.0.0.1:1", "127.0.0.1:1"},
		{v4, "[::ffff:127.0.0.1]:2", "127.0.0.1:2"},
		{v4, "[::1]:7667", ""},
		{named, "[::1]:7667", ""},
		{named, "127.0.0.1:7667", "127.0.0.1:7667"},
		{v6, "[::1]:7667", "[::1]:7667"},
		{v6, "127.0.0.1:7667", ""},
		{dual, "127.0.0.1:3", "127.0.0.1:3"},
		{dual, "[::ffff:127.0.0.1]:4", "127.0.0.1:4"},
		{dual, "[::1]:5", "[::1]:5"},
		{dual, "no-port", ""},
		{dual, "127.0.0.1:0", ""},
		{dual, "127.0.0.1:70000", ""},
		{dual, "127.0.0.1:notaport", ""},
	}
	for _, tc := range cases {
		a, err := tc.c.Resolve(t.Context(), tc.hostport)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%v: Resolve(%q) = %v, want an error", tc.c.LocalAddr(), tc.hostport, a)
		case tc.want == "" && !strings.Contains(err.Error(), tc.hostport):
			t.Errorf("Resolve(%q): error does not name it: %v", tc.hostport, err)
		case tc.want != "" && err != nil:
			t.Errorf("%v: Resolve(%q): %v", tc.c.LocalAddr(), tc.hostport, err)
		case tc.want != "" && a.String() != tc.want:
			t.Errorf("%v: Resolve(%q) = %v, want %s", tc.c.LocalAddr(), tc.hostport, a, tc.want)
		}
	}
}

// TestUnsendable: packets that cannot go (an IPv6 address on an IPv4
// socket, a foreign Addr) are lost or refused without stopping the batch.
func TestUnsendable(t *testing.T) {
	a, b := mustListen(t, "127.0.0.1:0"), mustListen(t, "127.0.0.1:0")
	dst := to("127.0.0.1", a)
	err := b.WriteBatch([]transport.Packet{
		{B: []byte("one"), Addr: dst},
		{B: []byte("v6"), Addr: to("::1", a)},
		{B: []byte("foreign"), Addr: foreignAddr("x")},
		{B: []byte("two"), Addr: dst},
	})
	if err == nil || !strings.Contains(err.Error(), "not a udp.Addr") {
		t.Fatalf("foreign Addr: err = %v", err)
	}
	got := readN(t, a, 2, 4)
	if string(got[0].B) != "one" || string(got[1].B) != "two" {
		t.Fatalf("got %q, %q", got[0].B, got[1].B)
	}
	if b.SendErrors() != 1 {
		t.Fatalf("SendErrors = %d, want 1 (the IPv6 packet)", b.SendErrors())
	}
}

type foreignAddr string

func (a foreignAddr) String() string { return string(a) }

// TestConcurrentWriters: WriteBatch from several goroutines at once, with
// a reader running; every packet arrives once.
func TestConcurrentWriters(t *testing.T) {
	a, b := mustListen(t, "127.0.0.1:0"), mustListen(t, ":0")
	const writers, batches, per = 4, 50, 8
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range batches {
				ps := make([]transport.Packet, per)
				for j := range ps {
					ps[j] = transport.Packet{B: []byte{byte(w), byte(i), byte(j)}, Addr: to("127.0.0.1", a)}
				}
				if err := b.WriteBatch(ps); err != nil {
					t.Error(err)
				}
			}
		})
	}
	got := readN(t, a, writers*batches*per, 32)
	wg.Wait()
	seen := map[string]bool{}
	for _, p := range got {
		if seen[string(p.B)] {
			t.Fatalf("packet %v twice", p.B)
		}
		seen[string(p.B)] = true
	}
}

func BenchmarkLoopback(b *testing.B) {
	for _, n := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch%d", n), func(b *testing.B) {
			rx, tx := mustListen(b, "127.0.0.1:0"), mustListen(b, "127.0.0.1:0")
			out := make([]transport.Packet, n)
			for i := range out {
				out[i] = transport.Packet{B: make([]byte, 1400), Addr: to("127.0.0.1", rx)}
			}
			var received int
			done := make(chan struct{})
			go func() {
				defer close(done)
				in := buffers(n, 2048)
				for {
					m, err := rx.ReadBatch(in)
					if err != nil {
						return
					}
					received += m
				}
			}()
			b.SetBytes(int64(1400 * n))
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				if err := tx.WriteBatch(out); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			sent := b.N * n
			time.Sleep(20 * time.Millisecond) // let the reader drain
			rx.Close()
			<-done
			b.ReportMetric(float64(sent)/elapsed.Seconds(), "pkts/s")
			b.ReportMetric(100*float64(received)/float64(sent), "%delivered")
		})
	}
}

// TestCheckReach: the kernel's ICMP port unreachable comes back as
// ECONNREFUSED for a port nothing listens on; a port with a socket gives
// no error.
func TestCheckReach(t *testing.T) {
	c, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	live := Addr{srv.LocalAddr()}
	if err := c.CheckReach(live); err != nil {
		t.Errorf("a port with a socket: %v", err)
	}
	srv.Close()
	if err := c.CheckReach(live); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a port with no socket: %v, want ECONNREFUSED", err)
	}
}
