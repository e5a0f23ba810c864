package bridgeif

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTAPPoller: a TAP's reader split in two (Poller). TryReadBatch on an
// empty TAP returns at once, even while WaitRead waits in another
// goroutine; WaitRead returns when the kernel queues a frame; and the
// frame the kernel sends in answer to one written (the datagram it held
// until ARP was answered) is queued by the time WriteBatch returns, so
// that TryReadBatch takes it without waiting: what the cable's receive path
// relies on to send a reply without waking the port loop. WaitRead
// returns net.ErrClosed after Close. With and without offloads.
func TestTAPPoller(t *testing.T) {
	needRoot(t)
	for _, offload := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "offload"}[offload], func(t *testing.T) {
			ns := quietNetns(t)
			var tap *TAP
			var err error
			inNetns(t, ns, func() { tap, err = OpenTAPWith("cabp1", TAPOptions{Offload: offload}) })
			if err != nil {
				t.Fatal(err)
			}
			defer tap.Close()
			macA, err := tap.HardwareAddr()
			if err != nil {
				t.Fatal(err)
			}
			ipOut(t, "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "cabp1")
			const off = 16
			bufs, sizes := makeBufs(4, off+1600)
			wd := watchdog(tap, 10*time.Second)
			defer wd.Stop()

			// Drain what the kernel queued on bringing the link up.
			for range 100 {
				if n, err := tap.TryReadBatch(bufs, sizes, off); err != nil {
					t.Fatal(err)
				} else if n == 0 {
					break
				}
			}
			waited := make(chan error, 1)
			go func() { waited <- tap.WaitRead() }()
			time.Sleep(50 * time.Millisecond)
			select {
			case err := <-waited:
				t.Fatalf("WaitRead returned on an empty TAP: %v", err)
			default:
			}
			tried := make(chan int, 1)
			go func() {
				n, _ := tap.TryReadBatch(bufs, sizes, off)
				tried <- n
			}()
			select {
			case n := <-tried:
				if n != 0 {
					t.Fatalf("TryReadBatch on an empty TAP: %d frames", n)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("TryReadBatch waited while WaitRead did")
			}

			// A datagram to an unknown neighbour: the kernel ARPs through the
			// TAP, which wakes WaitRead.
			sock := udpTo(t, ns, ipB)
			if _, err := unix.Write(sock, []byte("held until ARP is answered")); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-waited:
				if err != nil {
					t.Fatalf("WaitRead: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("WaitRead did not return when the kernel queued a frame")
			}
			var req bool
			for i := 0; i < 20 && !req; i++ {
				n, err := tap.TryReadBatch(bufs, sizes, off)
				if err != nil {
					t.Fatal(err)
				}
				for j := range n {
					req = req || binary.BigEndian.Uint16(bufs[j][off+12:]) == 0x0806
				}
				if !req {
					time.Sleep(10 * time.Millisecond)
				}
			}
			if !req {
				t.Fatal("no ARP request read")
			}

			// The ARP reply written; the held datagram is already queued.
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
			if n, err := tap.WriteBatch([][]byte{reply}, off); n != 1 || err != nil {
				t.Fatalf("WriteBatch: %d %v", n, err)
			}
			n, err := tap.TryReadBatch(bufs, sizes, off)
			if err != nil || n != 1 {
				t.Fatalf("TryReadBatch right after the write: %d frames, %v; want the held datagram", n, err)
			}
			if held := bufs[0][off : off+sizes[0]]; !bytesEq(held[0:6], macB) || !strings.HasSuffix(string(held), "held until ARP is answered") {
				t.Fatalf("not the held datagram: % x", held)
			}

			go func() { waited <- tap.WaitRead() }()
			time.Sleep(20 * time.Millisecond)
			tap.Close()
			select {
			case err := <-waited:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("WaitRead after Close: %v, want net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("WaitRead did not return after Close")
			}
		})
	}
}
