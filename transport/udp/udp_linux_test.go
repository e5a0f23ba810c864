package udp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"cab/transport"
)

// TestSendErrorsCounted: a packet the kernel refuses (to port 0) is lost
// and counted, and the packets after it still go.
func TestSendErrorsCounted(t *testing.T) {
	a, b := mustListen(t, "127.0.0.1:0"), mustListen(t, "127.0.0.1:0")
	dst := to("127.0.0.1", a)
	refused := Addr{netip.AddrPortFrom(dst.Addr(), 0)}
	err := b.WriteBatch([]transport.Packet{
		{B: []byte("one"), Addr: dst},
		{B: []byte("bcast"), Addr: refused},
		{B: []byte("two"), Addr: dst},
		{B: []byte("bcast"), Addr: refused},
		{B: []byte("bcast"), Addr: refused},
		{B: []byte("three"), Addr: dst},
	})
	if err != nil {
		t.Fatalf("a refused packet is not an error: %v", err)
	}
	got := readN(t, a, 3, 8)
	for i, want := range []string{"one", "two", "three"} {
		if string(got[i].B) != want {
			t.Fatalf("packet %d: %q, want %q", i, got[i].B, want)
		}
	}
	if b.SendErrors() != 3 {
		t.Fatalf("SendErrors = %d, want 3", b.SendErrors())
	}
}

func TestPathMTU(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	c := mustListen(t, ":0")
	// At most the loopback MTU less the headers (some kernels report the
	// largest datagram instead).
	if got, max := c.PathMTU(to("127.0.0.1", c)), lo.MTU-28; got < 1280 || got > max {
		t.Errorf("PathMTU(127.0.0.1) = %d, want 1280..%d", got, max)
	}
	if got, max := c.PathMTU(to("::1", c)), lo.MTU-48; got < 1280 || got > max {
		t.Errorf("PathMTU(::1) = %d, want 1280..%d", got, max)
	}
	if got := c.PathMTU(foreignAddr("x")); got != 0 {
		t.Errorf("PathMTU(foreign) = %d, want 0", got)
	}
}

// TestGSOAndGRO: with offloads on, runs of equal packets to one address go
// out as UDP_SEGMENT sends, and a GRO reader cuts glued datagrams back into
// the same packets, in order, into small caller batches, across calls.
func TestGSOAndGRO(t *testing.T) {
	for _, dst := range []string{"127.0.0.1", "::1"} {
		a, b := mustListen(t, ":0"), mustListen(t, ":0")
		if gso, _ := a.Offload(true, false); !gso {
			t.Skip("SKIPPED: this kernel has no UDP GSO")
		}
		if _, gro := b.Offload(false, true); !gro {
			t.Skip("SKIPPED: this kernel has no UDP GRO")
		}
		var ps []transport.Packet
		to := to(dst, b)
		sizes := []int{1400, 1400, 1400, 1400, 1400, 1400, 700, 1400, 1400, 9, 1200, 1200, 1300}
		for i, n := range sizes {
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(i + j)
			}
			ps = append(ps, transport.Packet{B: p, Addr: to})
		}
		if err := a.WriteBatch(ps); err != nil {
			t.Fatal(err)
		}
		got := readN(t, b, len(ps), 3)
		for i := range ps {
			if !bytes.Equal(got[i].B, ps[i].B) {
				t.Fatalf("%s: packet %d: %d bytes, want %d", dst, i, len(got[i].B), len(ps[i].B))
			}
		}
		segs, glued := a.OffloadStats()
		_, bglued := b.OffloadStats()
		t.Logf("%s: %d packets sent in GSO runs; %d glued datagrams received", dst, segs, bglued)
		if segs < 8 || glued != 0 || bglued == 0 {
			t.Errorf("%s: %d packets went in GSO runs (want ≥ 8), %d glued datagrams read (want some), %d by the sender (want none)", dst, segs, bglued, glued)
		}
		// Off again: nothing more goes in runs.
		if gso, _ := a.Offload(false, false); gso {
			t.Fatal("GSO still on")
		}
		if err := a.WriteBatch(ps[:4]); err != nil {
			t.Fatal(err)
		}
		readN(t, b, 4, 8)
		if s, _ := a.OffloadStats(); s != segs {
			t.Errorf("GSO off, yet %d more packets went in runs", s-segs)
		}
	}
}

// TestQueueDelay: QueueDelay tells how long the packets of the last read
// waited in the socket, with GRO and without.
func TestQueueDelay(t *testing.T) {
	for _, gro := range []bool{false, true} {
		a, b := mustListen(t, "127.0.0.1:0"), mustListen(t, "127.0.0.1:0")
		if _, on := b.Offload(false, gro); on != gro {
			t.Skipf("SKIPPED: this kernel has no UDP GRO")
		}
		dst := to("127.0.0.1", b)
		send := func() {
			t.Helper()
			if err := a.WriteBatch([]transport.Packet{{B: []byte("old"), Addr: dst}, {B: []byte("old"), Addr: dst}}); err != nil {
				t.Fatal(err)
			}
		}
		send()
		time.Sleep(120 * time.Millisecond)
		readN(t, b, 2, 8)
		if d := b.QueueDelay(); d < 100*time.Millisecond || d > 10*time.Second {
			t.Errorf("gro %v: packets that waited 120 ms: QueueDelay %v", gro, d)
		}
		send()
		readN(t, b, 2, 8)
		if d := b.QueueDelay(); d > 100*time.Millisecond {
			t.Errorf("gro %v: packets read at once: QueueDelay %v", gro, d)
		}
	}
}

// cmsg returns one control message of level and typ carrying data.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// TestScanCmsgs: the GRO segment size and the receive time are found in
// any order, and a truncated or malformed buffer gives what was read
// before the damage, never a panic.
func TestScanCmsgs(t *testing.T) {
	ts := unix.NsecToTimespec(1_700_000_000_123_456_789)
	stamp := cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, unsafe.Slice((*byte)(unsafe.Pointer(&ts)), unsafe.Sizeof(ts)))
	gro := cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, binary.NativeEndian.AppendUint32(nil, 1400))
	for _, c := range []struct {
		name      string
		oob       []byte
		gro       int
		stamp     int64
		truncated bool
	}{
		{"both", append(append([]byte{}, stamp...), gro...), 1400, ts.Nano(), false},
		{"gro first", append(append([]byte{}, gro...), stamp...), 1400, ts.Nano(), false},
		{"stamp", stamp, 0, ts.Nano(), false},
		{"none", nil, 0, 0, false},
		{"cut stamp", stamp[:len(stamp)-4], 0, 0, true},
		{"cut after gro", append(append([]byte{}, gro...), stamp[:10]...), 1400, 0, true},
	} {
		g, s := scanCmsgs(c.oob)
		if g != c.gro || s != c.stamp {
			t.Errorf("%s: gro %d, stamp %d; want %d, %d", c.name, g, s, c.gro, c.stamp)
		}
	}
	bad := append([]byte{}, stamp...)
	(*unix.Cmsghdr)(unsafe.Pointer(&bad[0])).SetLen(1 << 20)
	if g, s := scanCmsgs(bad); g != 0 || s != 0 {
		t.Errorf("a length past the buffer: gro %d, stamp %d", g, s)
	}
}

// FuzzScanCmsgs: no buffer makes scanCmsgs panic.
func FuzzScanCmsgs(f *testing.F) {
	ts := unix.NsecToTimespec(1)
	f.Add(cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, unsafe.Slice((*byte)(unsafe.Pointer(&ts)), unsafe.Sizeof(ts))))
	f.Add(cmsg(unix.IPPROTO_UDP, unix.UDP_GRO, []byte{1, 2, 3, 4}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		// The kernel aligns control messages; so does the buffer here.
		b := make([]byte, len(oob), len(oob)+8)
		copy(b, oob)
		scanCmsgs(b)
	})
}
