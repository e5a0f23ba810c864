package udp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"cab/transport"
)

func listen(t *testing.T, addr string) *Conn {
	t.Helper()
	c, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func bufs(n int) []transport.Packet {
	ps := make([]transport.Packet, n)
	for i := range ps {
		ps[i].B = make([]byte, 2048)
	}
	return ps
}

// readN reads until n packets arrived or a deadline passes.
func readN(t *testing.T, c *Conn, n int) []transport.Packet {
	t.Helper()
	var got []transport.Packet
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(got) < n {
			ps := bufs(16)
			m, err := c.ReadBatch(ps)
			if err != nil {
				return
			}
			for _, p := range ps[:m] {
				got = append(got, transport.Packet{B: append([]byte(nil), p.B...), Addr: p.Addr})
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		c.Close()
		<-done
		t.Fatalf("got %d of %d packets", len(got), n)
	}
	return got
}

func TestRoundTrip(t *testing.T) {
	cases := []struct{ listenA, listenB, to string }{
		{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"},
		{"[::1]:0", "[::1]:0", "::1"},
		{":0", "127.0.0.1:0", "127.0.0.1"}, // dual-stack receiver, IPv4 sender
	}
	for _, tc := range cases {
		t.Run(tc.listenA+"<-"+tc.listenB, func(t *testing.T) {
			a, b := listen(t, tc.listenA), listen(t, tc.listenB)
			dst := Addr{netip.AddrPortFrom(netip.MustParseAddr(tc.to), a.LocalAddr().Port())}
			for _, n := range []int{1, 8, 64} {
				var ps []transport.Packet
				for i := 0; i < n; i++ {
					ps = append(ps, transport.Packet{B: bytes.Repeat([]byte{byte(i)}, 1+i*20), Addr: dst})
				}
				if err := b.WriteBatch(ps); err != nil {
					t.Fatal(err)
				}
				got := readN(t, a, n)
				for i, p := range got {
					if !bytes.Equal(p.B, ps[i].B) {
						t.Fatalf("batch %d packet %d: %d bytes, want %d", n, i, len(p.B), len(ps[i].B))
					}
					if p.Addr != got[0].Addr {
						t.Fatal("the same sender gave different Addrs")
					}
					if ap := p.Addr.(Addr); ap.Addr().Is4In6() || ap.Port() != b.LocalAddr().Port() {
						t.Fatalf("sender addr %v", ap)
					}
				}
				// And back, to the Addr the packets came from.
				back := []transport.Packet{{B: []byte("pong"), Addr: got[0].Addr}}
				if err := a.WriteBatch(back); err != nil {
					t.Fatal(err)
				}
				if r := readN(t, b, 1); string(r[0].B) != "pong" {
					t.Fatalf("reply %q", r[0].B)
				}
			}
		})
	}
}

func TestShortBufferDropsOnlyThatPacket(t *testing.T) {
	a, b := listen(t, "127.0.0.1:0"), listen(t, "127.0.0.1:0")
	dst := Addr{a.LocalAddr()}
	b.WriteBatch([]transport.Packet{{B: make([]byte, 3000), Addr: dst}, {B: []byte("small"), Addr: dst}})
	got := readN(t, a, 1)
	if string(got[0].B) != "small" {
		t.Fatalf("got %d bytes %q", len(got[0].B), got[0].B[:min(len(got[0].B), 8)])
	}
}

func TestTooBig(t *testing.T) {
	a, b := listen(t, "127.0.0.1:0"), listen(t, "127.0.0.1:0")
	dst := Addr{a.LocalAddr()}
	err := b.WriteBatch([]transport.Packet{{B: make([]byte, 70000), Addr: dst}, {B: []byte("x"), Addr: dst}})
	var tb *transport.TooBigError
	if !errors.As(err, &tb) || tb.Max != b.MaxPacket() {
		t.Fatalf("err = %v, want TooBigError", err)
	}
	if got := readN(t, a, 1); string(got[0].B) != "x" {
		t.Fatal("the rest of the batch was not sent")
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	c, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.ReadBatch(bufs(4))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadBatch")
	}
	if err := c.WriteBatch([]transport.Packet{{B: []byte("x"), Addr: Addr{c.LocalAddr()}}}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

func TestAddressInUse(t *testing.T) {
	a := listen(t, "127.0.0.1:0")
	_, err := Listen(a.LocalAddr().String())
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("err = %v", err)
	}
}

func TestResolve(t *testing.T) {
	c := listen(t, "127.0.0.1:0")
	a, err := c.Resolve(t.Context(), "localhost:7667")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Addr().Is4() || a.Port() != 7667 {
		t.Fatalf("IPv4 socket resolved localhost to %v", a)
	}
	if _, err := c.Resolve(t.Context(), "no-port"); err == nil {
		t.Fatal("address without a port resolved")
	}
}

func BenchmarkLoopback(b *testing.B) {
	for _, n := range []int{1, 32} {
		b.Run(map[int]string{1: "batch1", 32: "batch32"}[n], func(b *testing.B) {
			rx, _ := Listen("127.0.0.1:0")
			tx, _ := Listen("127.0.0.1:0")
			defer rx.Close()
			defer tx.Close()
			ps := make([]transport.Packet, n)
			for i := range ps {
				ps[i] = transport.Packet{B: make([]byte, 1400), Addr: Addr{rx.LocalAddr()}}
			}
			in := make([]transport.Packet, n)
			for i := range in {
				in[i].B = make([]byte, 2048)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					if _, err := rx.ReadBatch(in); err != nil {
						return
					}
				}
			}()
			b.SetBytes(int64(1400 * n))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				tx.WriteBatch(ps)
			}
			rx.Close()
			<-done
		})
	}
}
