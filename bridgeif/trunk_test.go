package bridgeif_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"cab/bridgeif"
	"cab/bridgeif/bridgeiftest"
)

// frame returns an untagged frame from MAC ..:src with payload tag.
func frame(src byte, tag byte, size int) []byte {
	b := bytes.Repeat([]byte{tag}, size)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, src})
	b[12], b[13] = 0x08, 0x00
	return b
}

// tagged returns f with an 802.1Q tag of vid after its MACs.
func tagged(f []byte, vid uint16) []byte {
	t := append([]byte(nil), f[:12]...)
	t = binary.BigEndian.AppendUint16(t, 0x8100)
	t = binary.BigEndian.AppendUint16(t, vid|0x2000) // priority 1: ignored
	return append(t, f[12:]...)
}

func readOne(t *testing.T, p bridgeif.Port) []byte {
	t.Helper()
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		bufs, sizes := [][]byte{make([]byte, 2000)}, []int{0}
		n, err := p.ReadBatch(bufs, sizes, 16)
		if n == 0 {
			ch <- res{nil, err}
			return
		}
		ch <- res{bufs[0][16 : 16+sizes[0]], err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.b
	case <-time.After(5 * time.Second):
		t.Fatal("no frame")
	}
	return nil
}

// TestTrunk: two VLANs of one trunk: frames tagged with each reach its
// port untagged; untagged frames and other VLANs' are dropped and counted;
// what a VLAN port writes leaves tagged; the last port's Close closes the
// trunk's port, and only then.
func TestTrunk(t *testing.T) {
	tap := bridgeiftest.NewPort(64)
	empty := false
	tr := bridgeif.NewTrunk(tap, func() { empty = true })
	v100, err := tr.VLAN(100)
	if err != nil {
		t.Fatal(err)
	}
	v200, err := tr.VLAN(200)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.VLAN(100); err == nil {
		t.Fatal("VLAN 100 opened twice")
	}
	for _, bad := range []uint16{0, 4095} {
		if _, err := tr.VLAN(bad); err == nil {
			t.Fatalf("VLAN %d opened", bad)
		}
	}
	a, b := frame(1, 0xaa, 100), frame(2, 0xbb, 200)
	tap.Inject(a)                   // untagged: no port's
	tap.Inject(tagged(a, 300))      // no port's VLAN
	tap.Inject(tagged(a, 100))      // v100
	tap.Inject(tagged(b, 200))      // v200
	tap.Inject(tagged(a, 100)[:17]) // too short to carry a header
	if got := readOne(t, v100); !bytes.Equal(got, a) {
		t.Fatalf("v100 read % x", got[:20])
	}
	if got := readOne(t, v200); !bytes.Equal(got, b) {
		t.Fatalf("v200 read % x", got[:20])
	}
	deadline := time.Now().Add(5 * time.Second)
	for tr.Foreign() != 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if tr.Foreign() != 3 {
		t.Fatalf("%d frames counted as foreign, want 3", tr.Foreign())
	}
	// Writes are tagged, in the headroom.
	buf := make([]byte, 16+len(b))
	copy(buf[16:], b)
	if n, err := v200.WriteBatch([][]byte{buf, make([]byte, 16+10)}, 16); err != nil || n != 2 {
		t.Fatalf("WriteBatch: %d, %v", n, err)
	}
	select {
	case got := <-tap.Frames():
		if want := tagged(b, 200); !bytes.Equal(got[:14], want[:14]) || got[14] != 0 || got[15] != 200 || !bytes.Equal(got[16:], b[12:]) {
			t.Fatalf("written % x", got[:20])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written to the trunk")
	}
	select {
	case got := <-tap.Frames():
		t.Fatalf("a runt was written: % x", got)
	case <-time.After(50 * time.Millisecond):
	}
	v100.Close()
	if empty || tap.Inject(a) != nil {
		t.Fatal("the trunk closed with a VLAN port still open")
	}
	v200.Close()
	if !empty || !errors.Is(tap.Inject(a), net.ErrClosed) {
		t.Fatal("the trunk's port is open after its last VLAN port closed")
	}
	if _, err := v200.ReadBatch([][]byte{make([]byte, 100)}, []int{0}, 0); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch after Close: %v", err)
	}
}

// FuzzVLANOf: any frame gives a VLAN id of 1 to 4094, or none.
func FuzzVLANOf(f *testing.F) {
	f.Add(tagged(frame(1, 1, 60), 100))
	f.Add(frame(1, 1, 60))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x0f, 0xff, 0x08, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		vid, ok := bridgeif.VLANOf(b)
		if ok && (vid < 1 || vid > 4094 || len(b) < 18) {
			t.Fatalf("VLANOf(% x) = %d", b, vid)
		}
	})
}

// TestVLANPortShortHeadroom: a writer with less than 4 bytes of headroom
// (cab plug splices ports at offset 0) gets its frames tagged from a copy,
// its own bytes untouched; frames too short or too long are dropped.
func TestVLANPortShortHeadroom(t *testing.T) {
	tap := bridgeiftest.NewPort(64)
	tr := bridgeif.NewTrunk(tap, nil)
	v, err := tr.VLAN(4094)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	f := frame(3, 0xcc, 300)
	for _, off := range []int{0, 2} {
		buf := append(make([]byte, off), f...)
		keep := append([]byte(nil), buf...)
		n, err := v.WriteBatch([][]byte{buf, make([]byte, off+13), make([]byte, off+bridgeif.MaxFrame+1)}, off)
		if err != nil || n != 3 {
			t.Fatalf("offset %d: WriteBatch %d, %v", off, n, err)
		}
		if !bytes.Equal(buf, keep) {
			t.Fatalf("offset %d: the caller's frame changed", off)
		}
		select {
		case got := <-tap.Frames():
			if !bytes.Equal(got[:12], f[:12]) || got[12] != 0x81 || got[13] != 0 || got[14] != 0x0f || got[15] != 0xfe || !bytes.Equal(got[16:], f[12:]) {
				t.Fatalf("offset %d: written % x", off, got[:20])
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("offset %d: nothing written", off)
		}
	}
	select {
	case got := <-tap.Frames():
		t.Fatalf("a runt or giant was written: %d bytes", len(got))
	case <-time.After(50 * time.Millisecond):
	}
}

// chanPort is a Port whose reads come from a channel and whose writes are
// counted, neither allocating, so that the trunk's own allocations show.
type chanPort struct {
	in      chan []byte
	written int
	closed  chan struct{}
}

func (c *chanPort) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case b := <-c.in:
		sizes[0] = copy(bufs[0][offset:], b)
		return 1, nil
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *chanPort) WriteBatch(bufs [][]byte, offset int) (int, error) {
	c.written += len(bufs)
	return len(bufs), nil
}

func (c *chanPort) Close() error { close(c.closed); return nil }

// TestTrunkAllocationFree: a frame read through the trunk to its VLAN's
// port, and a batch written tagged, allocate nothing once warm.
func TestTrunkAllocationFree(t *testing.T) {
	cp := &chanPort{in: make(chan []byte), closed: make(chan struct{})}
	tr := bridgeif.NewTrunk(cp, nil)
	v, err := tr.VLAN(100)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	in := tagged(frame(1, 0xaa, 1000), 100)
	bufs, sizes := [][]byte{make([]byte, 2000)}, []int{0}
	out := [][]byte{make([]byte, 16+1000), make([]byte, 16+1000)}
	step := func() {
		cp.in <- in
		if n, err := v.ReadBatch(bufs, sizes, 16); n != 1 || err != nil || sizes[0] != 1000 {
			t.Fatalf("ReadBatch: %d %v, %d bytes", n, err, sizes[0])
		}
		if n, err := v.WriteBatch(out, 16); n != 2 || err != nil {
			t.Fatalf("WriteBatch: %d %v", n, err)
		}
	}
	step()
	if a := testing.AllocsPerRun(200, step); a != 0 {
		t.Errorf("%.1f allocations per frame read and batch written, want 0", a)
	}
	if cp.written != 2*202 {
		t.Errorf("%d frames reached the trunk's port, want %d", cp.written, 2*202)
	}
}

// TestTrunkStacked: a frame tagged inside the cable keeps its tag behind
// the VLAN's, both ways.
func TestTrunkStacked(t *testing.T) {
	tap := bridgeiftest.NewPort(64)
	tr := bridgeif.NewTrunk(tap, nil)
	v, err := tr.VLAN(100)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	inner := tagged(frame(1, 0xaa, 100), 7)
	tap.Inject(tagged(inner, 100))
	if got := readOne(t, v); !bytes.Equal(got, inner) {
		t.Fatalf("VLAN 100 read % x, want the frame tagged 7", got[:20])
	}
	buf := append(make([]byte, 16), inner...)
	if _, err := v.WriteBatch([][]byte{buf}, 16); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-tap.Frames():
		if want := tagged(inner, 100); !bytes.Equal(got[:14], want[:14]) || got[15] != 100 || !bytes.Equal(got[16:], inner[12:]) {
			t.Fatalf("written % x, want VLAN 100's tag in front of VLAN 7's", got[:22])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written")
	}
}

// loopPort is a Port that keeps what is written to it on w and reads
// what the test puts on r, one frame per ReadBatch.
type loopPort struct{ r, w chan []byte }

func (l *loopPort) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	b, ok := <-l.r
	if !ok {
		return 0, net.ErrClosed
	}
	sizes[0] = copy(bufs[0][offset:], b)
	return 1, nil
}

func (l *loopPort) WriteBatch(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		l.w <- append([]byte(nil), b[offset:]...)
	}
	return len(bufs), nil
}

func (l *loopPort) Close() error { close(l.r); return nil }

// FuzzTrunkRoundTrip: any frame a VLAN port writes leaves tagged with its
// VLAN, which VLANOf reads back; read from the trunk, it comes back to that
// VLAN's port as it was written.
func FuzzTrunkRoundTrip(f *testing.F) {
	f.Add(uint16(100), 0, frame(1, 1, 60))
	f.Add(uint16(4094), 16, tagged(frame(1, 1, 60), 7))
	f.Add(uint16(1), 3, frame(2, 0, 14))
	f.Add(uint16(0), 16, frame(2, 0, 14))
	f.Fuzz(func(t *testing.T, vid uint16, off int, b []byte) {
		if off < 0 || off > 64 {
			return
		}
		lp := &loopPort{r: make(chan []byte, 1), w: make(chan []byte, 4)}
		tr := bridgeif.NewTrunk(lp, nil)
		v, err := tr.VLAN(vid)
		if vid < 1 || vid > 4094 {
			if err == nil {
				t.Fatalf("VLAN %d opened", vid)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		n, err := v.WriteBatch([][]byte{append(make([]byte, off), b...)}, off)
		if err != nil || n != 1 {
			t.Fatalf("WriteBatch: %d, %v", n, err)
		}
		if len(b) < 14 || len(b) > bridgeif.MaxFrame {
			if len(lp.w) != 0 {
				t.Fatalf("a frame of %d bytes was written", len(b))
			}
			return
		}
		if len(lp.w) != 1 {
			t.Fatalf("%d frames written", len(lp.w))
		}
		out := <-lp.w
		if got, ok := bridgeif.VLANOf(out); !ok || got != vid || len(out) != len(b)+4 {
			t.Fatalf("written as VLAN %d (%v), %d bytes", got, ok, len(out))
		}
		lp.r <- out
		bufs, sizes := [][]byte{make([]byte, 16+bridgeif.MaxFrame)}, []int{0}
		if n, err := v.ReadBatch(bufs, sizes, 16); n != 1 || err != nil || !bytes.Equal(bufs[0][16:16+sizes[0]], b) {
			t.Fatalf("read back %d, %v: differs", n, err)
		}
	})
}
