package bridgeif

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"
)

// The TAPs of FreeBSD, macOS and Windows pass one frame per read and
// write, and cab drives them through rwPort (tap_rw.go); macOS's and
// Windows' are opened by songgao/water. No such system is at hand, but
// water opens TAPs on Linux too: these tests run rwPort over a real TAP
// that water opened, so that the adapter's frames in and out, its drops
// and its Close are proven on a kernel device, not only on a fake.

// openWaterIn opens the TAP name through water in namespace ns, brings it
// up and gives it 192.0.2.1/24.
func openWaterIn(t *testing.T, ns, name string) (*rwPort, net.HardwareAddr) {
	t.Helper()
	var ifce *water.Interface
	var err error
	inNetns(t, ns, func() {
		ifce, err = water.New(water.Config{DeviceType: water.TAP, PlatformSpecificParams: water.PlatformSpecificParams{Name: name}})
	})
	if err != nil {
		t.Fatalf("water: open tap %s: %v", name, err)
	}
	p := &rwPort{name: ifce.Name(), rw: ifce}
	t.Cleanup(func() { p.Close() })
	ipOut(t, "-n", ns, "link", "set", name, "up")
	ipOut(t, "-n", ns, "addr", "add", "192.0.2.1/24", "dev", name)
	l, ok := link(t, ns, name)
	if !ok {
		t.Fatalf("water opened %s, but ip does not see it", name)
	}
	mac, err := net.ParseMAC(l.Address)
	if err != nil {
		t.Fatal(err)
	}
	return p, mac
}

// readType reads, boundedly, until a frame of EtherType typ comes, and
// returns a copy of it.
func readType(t *testing.T, p *rwPort, typ uint16) []byte {
	t.Helper()
	const off = 16
	bufs, sizes := rwBufs(1, off+1600)
	for range 20 {
		n, err := p.ReadBatch(bufs, sizes, off)
		if err != nil {
			t.Fatalf("no frame of type %#04x read: %v", typ, err)
		}
		if n != 1 {
			continue
		}
		if f := bufs[0][off : off+sizes[0]]; binary.BigEndian.Uint16(f[12:]) == typ {
			return append([]byte(nil), f...)
		}
	}
	t.Fatalf("no frame of type %#04x among 20", typ)
	return nil
}

// Frames in and out: the kernel's ARP request comes out of ReadBatch, the
// reply written with WriteBatch reaches the kernel, which then sends the
// datagram it held to the MAC the reply named.
func TestWaterTAPFramesInAndOut(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	p, macA := openWaterIn(t, ns, "cabw1")
	wd := time.AfterFunc(10*time.Second, func() { p.Close() })
	defer wd.Stop()
	sock := udpTo(t, ns, ipB)
	if _, err := unix.Write(sock, []byte("held until ARP is answered")); err != nil {
		t.Fatal(err)
	}
	req := readType(t, p, 0x0806)
	if len(req) < 42 || !isBroadcast(req[0:6]) || !bytesEq(req[6:12], macA) || !bytesEq(req[38:42], ipB[:]) {
		t.Fatalf("not an ARP request from %v for 192.0.2.2: % x", macA, req)
	}

	const off = 8
	reply := make([]byte, off+42)
	f := reply[off:]
	copy(f[0:6], macA)
	copy(f[6:12], macB)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	copy(f[14:22], []byte{0, 1, 8, 0, 6, 4, 0, 2})
	copy(f[22:28], macB)
	copy(f[28:32], ipB[:])
	copy(f[32:38], macA)
	copy(f[38:42], ipA[:])
	if n, err := p.WriteBatch([][]byte{reply}, off); n != 1 || err != nil {
		t.Fatalf("WriteBatch: %d %v", n, err)
	}
	held := readType(t, p, 0x0800)
	if !bytesEq(held[0:6], macB) || !strings.HasSuffix(string(held), "held until ARP is answered") {
		t.Fatalf("the held datagram did not go to %v: % x", macB, held)
	}
}

// A frame longer than the caller's buffer is dropped and counted, not cut
// short; the next frame comes whole.
func TestWaterTAPDropsOversize(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	p, _ := openWaterIn(t, ns, "cabw2")
	wd := time.AfterFunc(10*time.Second, func() { p.Close() })
	defer wd.Stop()
	ipOut(t, "-n", ns, "neigh", "add", "192.0.2.2", "lladdr", macB.String(), "dev", "cabw2")
	sock := udpTo(t, ns, ipB)
	if _, err := unix.Write(sock, make([]byte, 600)); err != nil { // a 642-byte frame
		t.Fatal(err)
	}
	if _, err := unix.Write(sock, []byte("small")); err != nil { // a 47-byte frame
		t.Fatal(err)
	}
	bufs, sizes := rwBufs(1, 200)
	n, err := p.ReadBatch(bufs, sizes, 0)
	if err != nil || n != 1 || sizes[0] != 14+20+8+5 || string(bufs[0][sizes[0]-5:sizes[0]]) != "small" {
		t.Fatalf("ReadBatch = %d, %v, size %d: want the small frame whole", n, err, sizes[0])
	}
	if p.Dropped() != 1 {
		t.Fatalf("%d frames dropped, want the one too long", p.Dropped())
	}
}

// Close unblocks a ReadBatch waiting on the device.
func TestWaterTAPCloseUnblocksRead(t *testing.T) {
	needRoot(t)
	ns := quietNetns(t)
	p, _ := openWaterIn(t, ns, "cabw3")
	errc := make(chan error, 1)
	go func() {
		bufs, sizes := rwBufs(1, 1600)
		_, err := p.ReadBatch(bufs, sizes, 0)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadBatch after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadBatch still blocked 5 s after Close")
	}
}
