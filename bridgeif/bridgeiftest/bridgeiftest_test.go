package bridgeiftest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"cab/bridgeif"
)

func frame(tag byte, size int) []byte { return bytes.Repeat([]byte{tag}, size) }

func bufsOf(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = bytes.Repeat([]byte{0xee}, size)
	}
	return bufs, make([]int, n)
}

func TestReadBatchOffsetsBatchesAndDrops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const off = 16
		p := NewPort(8)
		defer p.Close()
		for _, f := range [][]byte{frame(1, 24), frame(2, 25), frame(3, 14), frame(4, 24), frame(5, 1)} {
			if err := p.Inject(f); err != nil {
				t.Fatal(err)
			}
		}
		bufs, sizes := bufsOf(2, off+24)
		var got []byte // tags in order
		for _, want := range []int{2, 2} {
			n, err := p.ReadBatch(bufs, sizes, off)
			if err != nil || n != want {
				t.Fatalf("ReadBatch: %d %v, want %d frames", n, err, want)
			}
			for i := range n {
				f := bufs[i][off : off+sizes[i]]
				if !bytes.Equal(f, frame(f[0], sizes[i])) || !bytes.Equal(bufs[i][:off], frame(0xee, off)) {
					t.Fatalf("frame %d misplaced: % x", i, bufs[i])
				}
				got = append(got, f[0])
			}
		}
		// Frame 2 had one byte more than the room: dropped, not truncated.
		if !bytes.Equal(got, []byte{1, 3, 4, 5}) || p.Dropped() != 1 {
			t.Fatalf("read tags %v, dropped %d; want [1 3 4 5], 1", got, p.Dropped())
		}
		// Nothing queued: ReadBatch waits.
		var returned atomic.Bool
		go func() {
			n, err := p.ReadBatch(bufs, sizes, off)
			if n != 1 || err != nil || sizes[0] != 20 {
				t.Errorf("ReadBatch after Inject: %d %v size %d", n, err, sizes[0])
			}
			returned.Store(true)
		}()
		synctest.Wait()
		if returned.Load() {
			t.Fatal("ReadBatch returned with nothing queued")
		}
		p.Inject(frame(6, 20))
		synctest.Wait()
		if !returned.Load() {
			t.Fatal("ReadBatch did not return the injected frame")
		}
		if n, err := p.ReadBatch(nil, nil, 0); n != 0 || err != nil {
			t.Fatalf("ReadBatch(nil): %d %v", n, err)
		}
	})
}

func TestInjectCopiesAndQueueFull(t *testing.T) {
	p := NewPort(2)
	f := frame(1, 20)
	if p.Inject(f) != nil || p.Inject(f) != nil {
		t.Fatal("Inject into a queue with room failed")
	}
	if err := p.Inject(f); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Inject into a full queue: %v", err)
	}
	f[0] = 9 // the queued copies stay as injected
	bufs, sizes := bufsOf(4, 64)
	if n, err := p.ReadBatch(bufs, sizes, 0); n != 2 || err != nil || bufs[0][0] != 1 || bufs[1][0] != 1 {
		t.Fatalf("ReadBatch: %d %v, first bytes %d %d", n, err, bufs[0][0], bufs[1][0])
	}
	if err := p.Inject(f); err != nil {
		t.Fatalf("Inject after the queue drained: %v", err)
	}
}

func TestWriteBatchCopiesAndDrops(t *testing.T) {
	const off = 16
	p := NewPort(2)
	defer p.Close()
	b := append(frame(0xee, off), frame(1, 30)...)
	jumbo := append(frame(0xee, off), frame(2, bridgeif.MaxFrame)...)
	tooBig := append(frame(0xee, off), frame(3, bridgeif.MaxFrame+1)...)
	short := frame(0xee, off-1) // no frame at the offset at all
	n, err := p.WriteBatch([][]byte{b, tooBig, short, jumbo, b}, off)
	if n != 5 || err != nil {
		t.Fatalf("WriteBatch: %d %v", n, err)
	}
	b[off] = 9 // the written copies stay as written
	for _, want := range [][]byte{frame(1, 30), frame(2, bridgeif.MaxFrame)} {
		if got := <-p.Frames(); !bytes.Equal(got, want) {
			t.Fatalf("Frames gave %d bytes % x..., want %d bytes % x...", len(got), got[:4], len(want), want[:4])
		}
	}
	// tooBig, short and the last b (the channel of 2 was full) are dropped.
	if p.Dropped() != 3 || len(p.Frames()) != 0 {
		t.Fatalf("dropped %d, %d left in Frames; want 3, 0", p.Dropped(), len(p.Frames()))
	}
}

func TestCloseEndsEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPort(4)
		bufs, sizes := bufsOf(2, 64)
		errc := make(chan error)
		go func() {
			_, err := p.ReadBatch(bufs, sizes, 0)
			errc <- err
		}()
		synctest.Wait()
		p.Inject(frame(1, 20)) // woken and returned...
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		go func() {
			_, err := p.ReadBatch(bufs, sizes, 0)
			errc <- err
		}()
		synctest.Wait() // ...blocked again
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked ReadBatch after Close: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := p.Inject(frame(2, 20)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Inject after Close: %v", err)
		}
		if _, err := p.WriteBatch([][]byte{frame(3, 20)}, 0); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("WriteBatch after Close: %v", err)
		}
		// Queued frames do not come out once the port is closed.
		q := NewPort(4)
		q.Inject(frame(4, 20))
		q.Close()
		if n, err := q.ReadBatch(bufs, sizes, 0); n != 0 || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadBatch of a closed port with frames queued: %d %v", n, err)
		}
	})
}

func TestPair(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(2)
		bufs, sizes := bufsOf(4, 64)
		for _, dir := range []struct {
			name     string
			from, to *Port
		}{{"a to b", a, b}, {"b to a", b, a}} {
			if n, err := dir.from.WriteBatch([][]byte{append([]byte("xx"), dir.name...)}, 2); n != 1 || err != nil {
				t.Fatalf("%s: WriteBatch: %d %v", dir.name, n, err)
			}
			n, err := dir.to.ReadBatch(bufs, sizes, 0)
			if n != 1 || err != nil || string(bufs[0][:sizes[0]]) != dir.name {
				t.Fatalf("%s: ReadBatch: %d %v %q", dir.name, n, err, bufs[0][:sizes[0]])
			}
		}
		if len(a.Frames()) != 0 || len(b.Frames()) != 0 {
			t.Fatal("a pair's end put frames in Frames")
		}
		// A full far queue drops on the writing end.
		a.WriteBatch([][]byte{frame(1, 20), frame(2, 20), frame(3, 20)}, 0)
		if a.Dropped() != 1 || b.Dropped() != 0 {
			t.Fatalf("dropped a=%d b=%d, want 1, 0", a.Dropped(), b.Dropped())
		}
		if n, _ := b.ReadBatch(bufs, sizes, 0); n != 2 || bufs[0][0] != 1 || bufs[1][0] != 2 {
			t.Fatalf("b read %d frames starting %d, %d", n, bufs[0][0], bufs[1][0])
		}
		// A closed far end loses frames without an error; the near end works.
		b.Close()
		if n, err := a.WriteBatch([][]byte{frame(4, 20)}, 0); n != 1 || err != nil || a.Dropped() != 2 {
			t.Fatalf("write to a closed far end: %d %v, dropped %d", n, err, a.Dropped())
		}
		a.Inject(frame(5, 20))
		if n, err := a.ReadBatch(bufs, sizes, 0); n != 1 || err != nil || bufs[0][0] != 5 {
			t.Fatalf("the near end after the far end closed: %d %v", n, err)
		}
		a.Close()
	})
}

// Writers on several goroutines and one reader, as the cable uses a port.
func TestPairConcurrentWriters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const writers, each = 4, 100
		a, b := NewPair(writers * each)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					a.WriteBatch([][]byte{[]byte(fmt.Sprintf("%d-%d", w, i))}, 0)
				}
			})
		}
		seen := map[string]bool{}
		bufs, sizes := bufsOf(16, 64)
		for len(seen) < writers*each {
			n, err := b.ReadBatch(bufs, sizes, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				seen[string(bufs[i][:sizes[i]])] = true
			}
		}
		wg.Wait()
		if a.Dropped() != 0 || len(seen) != writers*each {
			t.Fatalf("saw %d distinct frames, dropped %d", len(seen), a.Dropped())
		}
		a.Close()
		b.Close()
	})
}

// TestSetCarrierRecords: every SetCarrier is recorded in order, on Carrier
// and on CarrierChanges; after Close it is an error.
func TestSetCarrierRecords(t *testing.T) {
	p := NewPort(1)
	var c bridgeif.Carrier = p
	want := []bool{false, true, true, false}
	for _, up := range want {
		if err := c.SetCarrier(up); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Carrier(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Carrier() = %v, want %v", got, want)
	}
	for i, w := range want {
		if got := <-p.CarrierChanges(); got != w {
			t.Fatalf("change %d: %v, want %v", i, got, w)
		}
	}
	for i := 0; i < 100; i++ { // more than the channel holds: never blocks
		p.SetCarrier(i%2 == 0)
	}
	if n := len(p.Carrier()); n != 104 {
		t.Fatalf("Carrier() has %d calls, want 104", n)
	}
	p.Close()
	if err := p.SetCarrier(true); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("SetCarrier after Close: %v", err)
	}
}
