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
