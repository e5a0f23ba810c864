package transporttest

import (
	"errors"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"cab/transport"
)

func read(t *testing.T, c *Conn, n int) []transport.Packet {
	t.Helper()
	ps := make([]transport.Packet, n)
	for i := range ps {
		ps[i].B = make([]byte, 100)
	}
	m, err := c.ReadBatch(ps)
	if err != nil {
		t.Fatal(err)
	}
	return ps[:m]
}

func TestDeliveryAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(Options{MaxPacket: 50})
		if err := a.WriteBatch([]transport.Packet{{B: []byte("one"), Addr: Addr("b")}, {B: []byte("two"), Addr: Addr("b")}}); err != nil {
			t.Fatal(err)
		}
		got := read(t, b, 8)
		if len(got) != 2 || string(got[0].B) != "one" || string(got[1].B) != "two" || got[0].Addr != Addr("a") {
			t.Fatalf("got %v", got)
		}
		var tb *transport.TooBigError
		if err := a.WriteBatch([]transport.Packet{{B: make([]byte, 51), Addr: Addr("b")}}); !errors.As(err, &tb) {
			t.Fatalf("oversize: %v", err)
		}
		errc := make(chan error)
		go func() {
			_, err := b.ReadBatch(make([]transport.Packet, 1))
			errc <- err
		}()
		synctest.Wait()
		b.Close()
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked read after close: %v", err)
		}
		if err := b.WriteBatch(nil); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
		a.Close()
	})
}

func TestLossDuplicateReorder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewNetwork(Options{Loss: 0.2, Duplicate: 0.1, Reorder: 0.1, Seed: 1, Queue: 4096})
		a, b := n.Conn("a"), n.Conn("b")
		const total = 2000
		for i := 0; i < total; i++ {
			a.WriteBatch([]transport.Packet{{B: []byte{byte(i >> 8), byte(i)}, Addr: Addr("b")}})
		}
		seen := map[int]int{}
		reordered := false
		last := -1
		for {
			ps := make([]transport.Packet, 64)
			for i := range ps {
				ps[i].B = make([]byte, 8)
			}
			done := make(chan int)
			go func() {
				m, _ := b.ReadBatch(ps)
				done <- m
			}()
			var m int
			select {
			case m = <-done:
			case <-time.After(time.Second):
				b.Close()
				<-done
				m = 0
			}
			if m == 0 {
				break
			}
			for _, p := range ps[:m] {
				v := int(p.B[0])<<8 | int(p.B[1])
				seen[v]++
				if v < last {
					reordered = true
				}
				last = v
			}
		}
		dups := 0
		for _, c := range seen {
			if c > 1 {
				dups++
			}
		}
		lost := total - len(seen)
		if lost < total/10 || lost > total*3/10 {
			t.Errorf("lost %d of %d with Loss 0.2", lost, total)
		}
		if dups == 0 || !reordered {
			t.Errorf("dups %d reordered %v", dups, reordered)
		}
		a.Close()
	})
}

func TestSetDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := NewPair(Options{})
		a.SetDown(true)
		a.WriteBatch([]transport.Packet{{B: []byte("x"), Addr: Addr("b")}})
		a.SetDown(false)
		a.WriteBatch([]transport.Packet{{B: []byte("y"), Addr: Addr("b")}})
		if got := read(t, b, 4); len(got) != 1 || string(got[0].B) != "y" {
			t.Fatalf("got %v", got)
		}
		a.Close()
		b.Close()
	})
}
