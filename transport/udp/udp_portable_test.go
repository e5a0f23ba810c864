package udp

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"cab/transport"
)

// The portable path (udp_portable.go), which FreeBSD, macOS and Windows
// use for every datagram, run here over loopback: round trips on IPv4,
// IPv6 and dual-stack sockets with the address unmapped, a datagram too
// long for its buffer dropped, one too big to send refused, one to the
// wrong family counted, and Close.

func TestPortableRoundTrip(t *testing.T) {
	for _, c := range []struct{ listen, dst string }{
		{"127.0.0.1:0", "127.0.0.1"}, {"[::1]:0", "::1"}, {":0", "127.0.0.1"}, {":0", "::1"},
	} {
		a, b := mustListen(t, c.listen), mustListen(t, c.listen)
		dst := to(c.dst, a)
		if err := b.writeEach([]transport.Packet{{B: []byte("one"), Addr: dst}, {B: []byte("two"), Addr: dst}}); err != nil {
			t.Fatalf("%s: writeEach: %v", c.listen, err)
		}
		rbuf := make([]byte, 1<<16)
		ps := buffers(4, 100)
		for _, want := range []string{"one", "two"} {
			n, err := a.readOne(ps, rbuf, &lastAddr{})
			if err != nil || n != 1 || string(ps[0].B) != want || ps[0].Addr != to(c.dst, b) {
				t.Fatalf("%s to %s: readOne = %d, %v, %q from %v; want %q from %v", c.listen, c.dst, n, err, ps[0].B, ps[0].Addr, want, to(c.dst, b))
			}
		}
	}
}

func TestPortableShortBufferAndTooBig(t *testing.T) {
	a, b := mustListen(t, "127.0.0.1:0"), mustListen(t, "127.0.0.1:0")
	dst := to("127.0.0.1", a)
	err := b.writeEach([]transport.Packet{
		{B: make([]byte, 3000), Addr: dst}, // longer than the reader's buffer
		{B: make([]byte, b.MaxPacket()+1), Addr: dst},
		{B: []byte("v6"), Addr: to("::1", a)},
		{B: []byte("after"), Addr: dst},
	})
	var tb *transport.TooBigError
	if !errors.As(err, &tb) || tb.Len != b.MaxPacket()+1 {
		t.Fatalf("writeEach: %v, want a TooBigError", err)
	}
	if b.SendErrors() != 1 {
		t.Fatalf("SendErrors = %d, want 1 (the IPv6 packet)", b.SendErrors())
	}
	ps := buffers(1, 2048)
	if n, err := a.readOne(ps, make([]byte, 1<<16), &lastAddr{}); n != 1 || err != nil || string(ps[0].B) != "after" {
		t.Fatalf("readOne = %d, %v, %q; want the packet after the long one", n, err, ps[0].B)
	}
}

func TestPortableClose(t *testing.T) {
	c, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.readOne(buffers(1, 100), make([]byte, 1<<16), &lastAddr{})
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked readOne after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock readOne")
	}
	if err := c.writeEach([]transport.Packet{{B: []byte("x"), Addr: to("127.0.0.1", c)}}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("writeEach after Close: %v", err)
	}
	if _, err := c.readOne(buffers(1, 100), make([]byte, 1<<16), &lastAddr{}); !errors.Is(err, net.ErrClosed) || !strings.Contains(err.Error(), "udp read") {
		t.Fatalf("readOne after Close: %v", err)
	}
}

// A packet written and read allocates nothing.
func TestPortableAllocatesNothing(t *testing.T) {
	a, b := mustListen(t, "127.0.0.1:0"), mustListen(t, "127.0.0.1:0")
	out := []transport.Packet{{B: []byte("x"), Addr: to("127.0.0.1", a)}}
	in := buffers(1, 100)
	rbuf := make([]byte, 1<<16)
	var last lastAddr
	allocs := testing.AllocsPerRun(100, func() {
		if err := b.writeEach(out); err != nil {
			t.Fatal(err)
		}
		if n, err := a.readOne(in, rbuf, &last); n != 1 || err != nil {
			t.Fatal(n, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per packet written and read", allocs)
	}
}
