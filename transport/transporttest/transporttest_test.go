package transporttest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"cab/transport"
)

func buffers(n, size int) []transport.Packet {
	ps := make([]transport.Packet, n)
	for i := range ps {
		ps[i].B = make([]byte, 0, size)
	}
	return ps
}

// drain reads everything that reaches c until nothing more comes, then
// closes c. It must run inside a synctest bubble.
func drain(t *testing.T, c *Conn) []transport.Packet {
	t.Helper()
	var got []transport.Packet
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		ps := buffers(64, 100)
		for {
			var n int
			if n, err = c.ReadBatch(ps); err != nil {
				return
			}
			for _, p := range ps[:n] {
				got = append(got, transport.Packet{B: bytes.Clone(p.B), Addr: p.Addr})
			}
		}
	}()
	synctest.Wait()
	c.Close()
	<-done
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read: %v", err)
	}
	return got
}

// numbered returns packet i to dst: i as 4 bytes.
func numbered(i int, dst Addr) []transport.Packet {
	return []transport.Packet{{B: binary.BigEndian.AppendUint32(nil, uint32(i)), Addr: dst}}
}

func numbers(ps []transport.Packet) []int {
	var ns []int
	for _, p := range ps {
		ns = append(ns, int(binary.BigEndian.Uint32(p.B)))
	}
	return ns
}

func TestDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(Options{})
		defer a.Close()
		out := []transport.Packet{{B: []byte("one"), Addr: b.Addr()}, {B: []byte("two"), Addr: Addr("b")}}
		if err := a.WriteBatch(out); err != nil {
			t.Fatal(err)
		}
		copy(out[0].B, "XXX") // the sender keeps its buffers
		ps := buffers(8, 100)
		n, err := b.ReadBatch(ps)
		if err != nil {
			t.Fatal(err)
		}
		if n != 2 || string(ps[0].B) != "one" || string(ps[1].B) != "two" || ps[0].Addr != a.Addr() || ps[1].Addr != Addr("a") {
			t.Fatalf("got %d packets: %q from %v, %q from %v", n, ps[0].B, ps[0].Addr, ps[1].B, ps[1].Addr)
		}
		if err := b.WriteBatch([]transport.Packet{{B: []byte("back"), Addr: ps[0].Addr}}); err != nil {
			t.Fatal(err)
		}
		if got := drain(t, a); len(got) != 1 || string(got[0].B) != "back" || got[0].Addr != b.Addr() {
			t.Fatalf("reply: %v", got)
		}
		if a.Sent() != 2 || b.Received() != 2 || b.Sent() != 1 || a.Received() != 1 || a.Dropped()+b.Dropped() != 0 {
			t.Fatalf("counters: a %d/%d/%d b %d/%d/%d", a.Sent(), a.Received(), a.Dropped(), b.Sent(), b.Received(), b.Dropped())
		}
	})
}

// TestReadBatch: a read blocks until a packet comes, then takes what is
// queued up to len(ps), and drops a packet longer than its buffer.
func TestReadBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(Options{})
		defer a.Close()
		defer b.Close()
		got := make(chan int)
		ps := buffers(3, 8)
		go func() {
			n, _ := b.ReadBatch(ps)
			got <- n
		}()
		synctest.Wait()
		select {
		case n := <-got:
			t.Fatalf("ReadBatch returned %d before anything was sent", n)
		default:
		}
		a.WriteBatch(numbered(0, "b"))
		if n := <-got; n != 1 {
			t.Fatalf("first read: %d packets", n)
		}
		for i := 1; i <= 5; i++ {
			a.WriteBatch(numbered(i, "b"))
			if i == 2 {
				a.WriteBatch([]transport.Packet{{B: make([]byte, 9), Addr: Addr("b")}})
			}
		}
		var all []int
		for _, want := range []int{3, 2} {
			n, err := b.ReadBatch(ps)
			if err != nil || n != want {
				t.Fatalf("read %d packets (%v), want %d", n, err, want)
			}
			all = append(all, numbers(ps[:n])...)
		}
		if fmt.Sprint(all) != "[1 2 3 4 5]" || b.Dropped() != 1 {
			t.Fatalf("read %v, dropped %d", all, b.Dropped())
		}
		if n, err := b.ReadBatch(nil); n != 0 || err != nil {
			t.Fatalf("empty read: %d, %v", n, err)
		}
	})
}

// lossy sends total numbered packets from a to b on a Network with opts
// and returns what b received.
func lossy(t *testing.T, opts Options, total int) (got []int, a, b *Conn) {
	opts.Queue = 2 * total
	n := NewNetwork(opts)
	a, b = n.Conn("a"), n.Conn("b")
	for i := range total {
		if err := a.WriteBatch(numbered(i, "b")); err != nil {
			t.Fatal(err)
		}
	}
	got = numbers(drain(t, b))
	a.Close()
	return got, a, b
}

func TestLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const total = 5000
		got, a, b := lossy(t, Options{Loss: 0.2, Seed: 1}, total)
		lost := total - len(got)
		if lost < total*15/100 || lost > total*25/100 {
			t.Errorf("lost %d of %d with Loss 0.2", lost, total)
		}
		if b.Dropped() != uint64(lost) || a.Sent() != total {
			t.Errorf("Dropped %d, lost %d; Sent %d", b.Dropped(), lost, a.Sent())
		}
		for i := 1; i < len(got); i++ {
			if got[i] <= got[i-1] {
				t.Fatalf("out of order without Reorder: %d after %d", got[i], got[i-1])
			}
		}
		// The same seed loses the same packets; another seed others.
		again, _, _ := lossy(t, Options{Loss: 0.2, Seed: 1}, total)
		other, _, _ := lossy(t, Options{Loss: 0.2, Seed: 2}, total)
		if fmt.Sprint(again) != fmt.Sprint(got) {
			t.Error("the same seed gave another run")
		}
		if fmt.Sprint(other) == fmt.Sprint(got) {
			t.Error("another seed gave the same run")
		}
	})
}

func TestDuplicate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const total = 5000
		got, _, b := lossy(t, Options{Duplicate: 0.3, Seed: 7}, total)
		dups := len(got) - total
		if dups < total*25/100 || dups > total*35/100 {
			t.Errorf("%d duplicates of %d with Duplicate 0.3", dups, total)
		}
		if b.Received() != uint64(len(got)) {
			t.Errorf("Received %d, read %d", b.Received(), len(got))
		}
		next := 0
		for i, v := range got {
			switch {
			case v == next:
				next++
			case i > 0 && v == got[i-1]: // a duplicate comes right after its packet
			default:
				t.Fatalf("packet %d at %d, want %d or a duplicate", v, i, next)
			}
		}
	})
}

func TestReorder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const total = 5000
		got, _, _ := lossy(t, Options{Reorder: 0.2, Seed: 3}, total)
		swaps := 0
		seen := map[int]bool{}
		for i, v := range got {
			if seen[v] {
				t.Fatalf("packet %d twice", v)
			}
			seen[v] = true
			if i > 0 && v < got[i-1] {
				swaps++
				if got[i-1] != v+1 {
					t.Fatalf("packet %d came after %d, not right after the next one", v, got[i-1])
				}
			}
		}
		// Only the very last packet may still be held.
		if len(got) < total-1 || len(got) == total-1 && seen[total-1] {
			t.Fatalf("delivered %d of %d", len(got), total)
		}
		// A packet is held with probability 0.2 unless it is the one that
		// releases a held packet: about 0.2/1.2 of all packets.
		if swaps < total*12/100 || swaps > total*22/100 {
			t.Errorf("%d packets reordered of %d with Reorder 0.2", swaps, total)
		}
	})
}

func TestMaxPacket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(Options{})
		if a.MaxPacket() != 65535 {
			t.Fatalf("default MaxPacket %d", a.MaxPacket())
		}
		a.Close()
		b.Close()

		a, b = NewPair(Options{MaxPacket: 50})
		defer a.Close()
		err := a.WriteBatch([]transport.Packet{
			{B: make([]byte, 50), Addr: Addr("b")},
			{B: make([]byte, 51), Addr: Addr("b")},
			{B: []byte("after"), Addr: Addr("b")},
		})
		var tb *transport.TooBigError
		if !errors.As(err, &tb) || tb.Len != 51 || tb.Max != 50 {
			t.Fatalf("oversize: %v", err)
		}
		got := drain(t, b)
		if len(got) != 2 || len(got[0].B) != 50 || string(got[1].B) != "after" || a.Sent() != 2 {
			t.Fatalf("got %d packets, Sent %d", len(got), a.Sent())
		}
	})
}

func TestForeignAddr(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(Options{})
		defer a.Close()
		err := a.WriteBatch([]transport.Packet{{B: []byte("x"), Addr: otherAddr{}}, {B: []byte("y"), Addr: Addr("b")}})
		if err == nil || !strings.Contains(err.Error(), "not a transporttest.Addr") {
			t.Fatalf("err = %v", err)
		}
		if got := drain(t, b); len(got) != 1 || string(got[0].B) != "y" {
			t.Fatalf("the rest of the batch: %v", got)
		}
	})
}

type otherAddr struct{}

func (otherAddr) String() string { return "other" }

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewNetwork(Options{})
		a, b := n.Conn("a"), n.Conn("b")
		defer a.Close()
		errc := make(chan error)
		go func() {
			_, err := b.ReadBatch(buffers(1, 10))
			errc <- err
		}()
		synctest.Wait()
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked read after close: %v", err)
		}
		if _, err := b.ReadBatch(buffers(1, 10)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
		if err := b.WriteBatch(nil); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
		// A closed conn's name is gone: sending there is a silent loss.
		if err := a.WriteBatch(numbered(1, "b")); err != nil || a.Dropped() != 1 {
			t.Fatalf("send to a closed conn: %v, Dropped %d", err, a.Dropped())
		}
		// A new conn takes the name over.
		b2 := n.Conn("b")
		a.WriteBatch(numbered(2, "b"))
		if got := numbers(drain(t, b2)); fmt.Sprint(got) != "[2]" {
			t.Fatalf("new conn got %v", got)
		}
	})
}

func TestSetDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(Options{})
		a.SetDown(true)
		a.WriteBatch(numbered(1, "b")) // lost at the sender
		a.SetDown(false)
		b.SetDown(true)
		a.WriteBatch(numbered(2, "b")) // lost at the receiver
		b.SetDown(false)
		a.WriteBatch(numbered(3, "b")) // queued, then read while down
		b.SetDown(true)
		ps := buffers(4, 10)
		go func() {
			synctest.Wait()
			b.SetDown(false)
			a.WriteBatch(numbered(4, "b"))
		}()
		n, err := b.ReadBatch(ps)
		if err != nil {
			t.Fatal(err)
		}
		if got := numbers(ps[:n]); fmt.Sprint(got) != "[4]" || a.Dropped() != 1 || b.Dropped() != 2 {
			t.Fatalf("got %v; Dropped a %d b %d", got, a.Dropped(), b.Dropped())
		}
		a.Close()
		b.Close()
	})
}

func TestDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(Options{Delay: 100 * time.Millisecond})
		defer a.Close()
		start := time.Now()
		a.WriteBatch(numbered(1, "b"))
		time.Sleep(30 * time.Millisecond)
		a.WriteBatch(numbered(2, "b"))
		ps := buffers(4, 10)
		for i, want := range []time.Duration{100 * time.Millisecond, 130 * time.Millisecond} {
			n, err := b.ReadBatch(ps)
			if err != nil || n != 1 || numbers(ps[:1])[0] != i+1 {
				t.Fatalf("read %d: %d packets, %v", i, n, err)
			}
			if d := time.Since(start); d != want {
				t.Fatalf("packet %d read after %v, want %v", i+1, d, want)
			}
		}
		// Close ends a read that waits for a delayed packet.
		a.WriteBatch(numbered(3, "b"))
		go func() {
			time.Sleep(10 * time.Millisecond)
			b.Close()
		}()
		if _, err := b.ReadBatch(ps); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read at close: %v", err)
		}
	})
}

func TestBlackHole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(Options{BlackHole: 10})
		defer a.Close()
		a.WriteBatch([]transport.Packet{{B: make([]byte, 11), Addr: Addr("b")}, {B: make([]byte, 10), Addr: Addr("b")}})
		if got := drain(t, b); len(got) != 1 || len(got[0].B) != 10 || b.Dropped() != 1 {
			t.Fatalf("got %d packets, Dropped %d", len(got), b.Dropped())
		}
	})
}

// TestConcurrent: several writers and a reader at once; every packet
// arrives once.
func TestConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewNetwork(Options{Queue: 4096})
		b := n.Conn("b")
		const writers, per = 4, 500
		var wg sync.WaitGroup
		for w := range writers {
			a := n.Conn(fmt.Sprint("a", w))
			wg.Go(func() {
				defer a.Close()
				for i := range per {
					if err := a.WriteBatch(numbered(w*per+i, "b")); err != nil {
						t.Error(err)
					}
				}
			})
		}
		got := numbers(drain(t, b)) // reads while the writers write
		wg.Wait()
		seen := map[int]bool{}
		for _, v := range got {
			if seen[v] {
				t.Fatalf("packet %d twice", v)
			}
			seen[v] = true
		}
		if len(seen) != writers*per {
			t.Fatalf("%d of %d packets", len(seen), writers*per)
		}
	})
}

// TestQueueDelay: QueueDelay is how long the first packet of the last read
// waited, beyond the network's one-way delay; 0 unless asked for.
func TestQueueDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(Options{})
		a.WriteBatch(numbered(1, "b"))
		time.Sleep(time.Second)
		if n, err := b.ReadBatch(buffers(1, 10)); n != 1 || err != nil || b.QueueDelay() != 0 {
			t.Fatalf("without Options.QueueDelay: %d, %v, QueueDelay %v", n, err, b.QueueDelay())
		}
		for _, delay := range []time.Duration{0, 20 * time.Millisecond} {
			a, b := NewPair(Options{Delay: delay, QueueDelay: true})
			a.WriteBatch(numbered(1, "b"))
			time.Sleep(delay + 150*time.Millisecond)
			a.WriteBatch(numbered(2, "b"))
			ps := buffers(4, 10)
			if n, err := b.ReadBatch(ps[:1]); n != 1 || err != nil {
				t.Fatalf("read: %d, %v", n, err)
			}
			if d := b.QueueDelay(); d != 150*time.Millisecond {
				t.Errorf("delay %v: a packet read 150 ms late: QueueDelay %v", delay, d)
			}
			time.Sleep(delay)
			if n, err := b.ReadBatch(ps); n != 1 || err != nil {
				t.Fatalf("read: %d, %v", n, err)
			}
			if d := b.QueueDelay(); d != 0 {
				t.Errorf("delay %v: a packet read when due: QueueDelay %v", delay, d)
			}
			a.Close()
			b.Close()
		}
	})
}
